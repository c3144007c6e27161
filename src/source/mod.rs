//! Where a config snapshot comes from. Everything downstream reads a [`FileTree`], an in-memory
//! copy of the config root, so the same pure code validates a working directory today and a
//! commit's tree (read by the git adapter, without a work tree) tomorrow.

mod fs;
mod tree;

pub use fs::{ReadError, read_dir};
pub use tree::{Entry, FileTree, PathError};
