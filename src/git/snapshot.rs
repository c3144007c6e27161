//! A commit's tree as a [`FileTree`], read from the object database without a work tree, with the
//! same rules as `source::read_dir`: every file and symlink (symlinks kept as links, not
//! followed), `.git` skipped, files over [`MAX_FILE_BYTES`] refused by name.

use git2::{ObjectType, Tree};

use super::{GitError, GitSource, MAX_FILE_BYTES};
use crate::source::FileTree;

/// Git's mode for a symbolic link; the blob holds the link's target.
const MODE_SYMLINK: i32 = 0o120000;

impl GitSource {
    /// The tree of `commit` as a `FileTree`, without checking anything out. `subdir` is the config
    /// root inside the repository (e.g. `"config"`); paths in the result are relative to it. A
    /// subdir that does not exist in that commit is an error, not an empty tree, so that a typo
    /// cannot make the daemon prune everything.
    pub fn snapshot(&self, commit: &str, subdir: Option<&str>) -> Result<FileTree, GitError> {
        let found = self.find_commit(commit)?;
        let id = found.id().to_string();
        let read_err = |action: String, e: &git2::Error| GitError::Repo {
            repo: self.display.clone(),
            action: format!("commit {id}: {action}"),
            message: self.scrub(e.message()),
        };
        let mut root = found
            .tree()
            .map_err(|e| read_err("read the tree".into(), &e))?;
        let subdir = subdir.map(normalize).unwrap_or_default();
        if !subdir.is_empty() {
            let subdir_err = |reason: &str| GitError::Subdir {
                repo: self.display.clone(),
                commit: id.clone(),
                subdir: subdir.clone(),
                reason: reason.to_string(),
            };
            let entry = match root.get_path(std::path::Path::new(&subdir)) {
                Ok(entry) => entry,
                Err(e) if e.code() == git2::ErrorCode::NotFound => {
                    return Err(subdir_err("does not exist"));
                }
                Err(e) => return Err(read_err(format!("look up {subdir}"), &e)),
            };
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(subdir_err("is not a directory"));
            }
            root = self
                .repo
                .find_tree(entry.id())
                .map_err(|e| read_err(format!("read {subdir}"), &e))?;
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| read_err("open the object database".into(), &e))?;
        let mut tree = FileTree::new();
        let mut stack: Vec<(Tree<'_>, String)> = vec![(root, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for entry in dir.iter() {
                let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
                if name == ".git" {
                    continue;
                }
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        let sub = self
                            .repo
                            .find_tree(entry.id())
                            .map_err(|e| read_err(format!("read {path}"), &e))?;
                        stack.push((sub, path));
                    }
                    Some(ObjectType::Blob) => {
                        let (size, _) = odb
                            .read_header(entry.id())
                            .map_err(|e| read_err(format!("read {path}"), &e))?;
                        let size = size as u64;
                        if size > MAX_FILE_BYTES {
                            return Err(GitError::TooLarge {
                                repo: self.display.clone(),
                                commit: id,
                                path,
                                size,
                            });
                        }
                        let blob = self
                            .repo
                            .find_blob(entry.id())
                            .map_err(|e| read_err(format!("read {path}"), &e))?;
                        if entry.filemode() == MODE_SYMLINK {
                            let target = String::from_utf8_lossy(blob.content()).into_owned();
                            tree.insert_symlink(path, target);
                        } else {
                            tree.insert_file(path, blob.content().to_vec());
                        }
                    }
                    // A submodule (gitlink) has no content in this repository.
                    _ => {
                        tracing::debug!(repo = %self.display, commit = %id, %path, "skipping a submodule entry")
                    }
                }
            }
        }
        tracing::debug!(repo = %self.display, commit = %id, subdir = %subdir, entries = tree.len(), "snapshot read");
        Ok(tree)
    }
}

/// `./config/` → `config`; `""`, `.` and `/` → the root.
fn normalize(subdir: &str) -> String {
    subdir
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalizes_subdirs() {
        for (input, want) in [
            ("config", "config"),
            ("./config/", "config"),
            ("a//b/", "a/b"),
            ("", ""),
            (".", ""),
            ("/", ""),
        ] {
            assert_eq!(super::normalize(input), want, "{input}");
        }
    }
}
