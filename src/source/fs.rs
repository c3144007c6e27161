//! Adapter: reads a directory on disk into a [`FileTree`].

use std::path::{Path, PathBuf};

use super::FileTree;

/// Files larger than this are refused: a config repo holds manifests, not data.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An I/O error on one path.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file over [`MAX_FILE_BYTES`].
    #[error(
        "{path}: file is {size} bytes, larger than the {MAX_FILE_BYTES} bytes a config file may have"
    )]
    TooLarge {
        /// The oversized file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The config root is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
}

/// Reads every file and symlink under `root` (skipping `.git`), without following symlinks, so
/// that validation can see and refuse links that leave the repository.
pub fn read_dir(root: &Path) -> Result<FileTree, ReadError> {
    let meta = std::fs::metadata(root).map_err(|source| ReadError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ReadError::NotADirectory(root.to_path_buf()));
    }
    let mut tree = FileTree::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let io = |source| ReadError::Io {
            path: dir.clone(),
            source,
        };
        for item in std::fs::read_dir(&dir).map_err(io)? {
            let item = item.map_err(io)?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let path = item.path();
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let io = |source| ReadError::Io {
                path: path.clone(),
                source,
            };
            let kind = item.file_type().map_err(io)?;
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io)?;
                tree.insert_symlink(rel_path, target.to_string_lossy().into_owned());
            } else if kind.is_dir() {
                stack.push((path, rel_path));
            } else if kind.is_file() {
                let size = item.metadata().map_err(io)?.len();
                if size > MAX_FILE_BYTES {
                    return Err(ReadError::TooLarge { path, size });
                }
                let bytes = std::fs::read(&path).map_err(io)?;
                tree.insert_file(rel_path, bytes);
            }
        }
    }
    Ok(tree)
}
