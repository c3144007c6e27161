//! The in-memory snapshot of a config root and the rules for paths inside it.

use std::collections::BTreeMap;

/// How many symlinks one lookup may follow before we call it a loop (Linux uses 40 too).
const MAX_SYMLINK_HOPS: usize = 40;

/// One entry of the snapshot. Directories are implied by the paths of their entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A symbolic link and its target as written (not followed when the tree was read).
    Symlink(String),
}

/// A config root as a map of `/`-separated relative paths to entries. Symlinks are kept as links
/// so that a link pointing outside the root is reported instead of silently followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    entries: BTreeMap<String, Entry>,
}

/// A path from the config repo that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Absolute paths would read the host's filesystem.
    #[error("path {0:?} is absolute; paths are relative to the config root")]
    Absolute(String),
    /// `..` above the root would read outside the repository.
    #[error("path {0:?} leaves the config root")]
    Escapes(String),
    /// A symlink whose target is outside the root.
    #[error(
        "path {path:?} goes through symlink {link:?} -> {target:?}, which points outside the config root"
    )]
    SymlinkEscapes {
        /// The path being resolved.
        path: String,
        /// The link that escapes.
        link: String,
        /// Its target.
        target: String,
    },
    /// A chain of symlinks that never ends.
    #[error("path {0:?} has too many levels of symlinks")]
    SymlinkLoop(String),
    /// Nothing at that path.
    #[error("path {0:?} does not exist")]
    NotFound(String),
    /// Empty paths refer to nothing useful.
    #[error("path is empty")]
    Empty,
}

impl FileTree {
    /// An empty tree, to be filled by an adapter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a regular file at a normalized relative path.
    pub fn insert_file(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.entries.insert(path.into(), Entry::File(bytes));
    }

    /// Adds a symlink at a normalized relative path.
    pub fn insert_symlink(&mut self, path: impl Into<String>, target: impl Into<String>) {
        self.entries
            .insert(path.into(), Entry::Symlink(target.into()));
    }

    /// The entry stored at exactly this path (no symlink resolution).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Number of entries, for summaries and limits.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the tree holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries directly or indirectly below `dir` (`""` for the root), in path order, without
    /// following symlinks. Used to enumerate the fixed config folders.
    pub fn entries_under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Entry)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .map(|(path, entry)| (path.as_str(), entry))
    }

    /// True if some entry lives below `dir`.
    pub fn is_dir(&self, dir: &str) -> bool {
        dir.is_empty() || self.entries_under(dir).next().is_some()
    }

    /// Resolves a path written in the config repo to a path of the tree, following symlinks and
    /// refusing anything that leaves the root. The result is a file or a directory that exists.
    pub fn resolve(&self, path: &str) -> Result<String, PathError> {
        if path.trim().is_empty() {
            return Err(PathError::Empty);
        }
        if path.starts_with('/') || path.starts_with('\\') || has_drive_prefix(path) {
            return Err(PathError::Absolute(path.to_string()));
        }
        let mut pending: Vec<String> = components(path).rev().map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." | "" => continue,
                ".." => {
                    if resolved.pop().is_none() {
                        return Err(PathError::Escapes(path.to_string()));
                    }
                    continue;
                }
                _ => {}
            }
            resolved.push(component);
            let current = resolved.join("/");
            if let Some(Entry::Symlink(target)) = self.entries.get(&current) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(PathError::SymlinkLoop(path.to_string()));
                }
                let escapes = || PathError::SymlinkEscapes {
                    path: path.to_string(),
                    link: current.clone(),
                    target: target.clone(),
                };
                if target.starts_with('/') || has_drive_prefix(target) {
                    return Err(escapes());
                }
                resolved.pop();
                // The target is relative to the link's directory: check it stays in the root
                // on its own, before the rest of the path is appended.
                let mut depth = resolved.len();
                for part in components(target) {
                    match part {
                        "." | "" => {}
                        ".." if depth == 0 => return Err(escapes()),
                        ".." => depth -= 1,
                        _ => depth += 1,
                    }
                }
                pending.extend(components(target).rev().map(str::to_string));
            }
        }
        let result = resolved.join("/");
        match self.entries.get(&result) {
            Some(_) => Ok(result),
            None if !result.is_empty() && self.is_dir(&result) => Ok(result),
            None => Err(PathError::NotFound(path.to_string())),
        }
    }

    /// The bytes of the regular file at a resolved path.
    pub fn file(&self, resolved: &str) -> Option<&[u8]> {
        match self.entries.get(resolved) {
            Some(Entry::File(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// Regular files at or below a resolved path (the file itself, or every file of the
    /// directory, recursively, in path order). Symlinks inside the directory are resolved and
    /// must stay in the root.
    pub fn files_at(&self, resolved: &str) -> Result<Vec<(String, &[u8])>, PathError> {
        if let Some(bytes) = self.file(resolved) {
            return Ok(vec![(resolved.to_string(), bytes)]);
        }
        let mut files = Vec::new();
        for (path, entry) in self.entries_under(resolved) {
            match entry {
                Entry::File(bytes) => files.push((path.to_string(), bytes.as_slice())),
                Entry::Symlink(_) => {
                    let target = self.resolve(path)?;
                    if let Some(bytes) = self.file(&target) {
                        files.push((path.to_string(), bytes));
                    }
                }
            }
        }
        Ok(files)
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split(['/', '\\'])
}

fn has_drive_prefix(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> FileTree {
        let mut t = FileTree::new();
        t.insert_file("manifests/a.yaml", b"a".to_vec());
        t.insert_file("manifests/sub/b.yaml", b"b".to_vec());
        t.insert_symlink("link-in", "manifests/a.yaml");
        t.insert_symlink("manifests/up", "../manifests/sub");
        t.insert_symlink("link-out", "../../etc/passwd");
        t.insert_symlink("link-abs", "/etc/passwd");
        t.insert_symlink("loop-a", "loop-b");
        t.insert_symlink("loop-b", "loop-a");
        t.insert_symlink("manifests/sub/out", "../../..");
        t
    }

    #[test]
    fn resolves_paths_and_refuses_escapes() {
        let t = tree();
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("manifests/a.yaml", Ok("manifests/a.yaml")),
            ("./manifests//a.yaml", Ok("manifests/a.yaml")),
            ("manifests", Ok("manifests")),
            ("manifests/sub/../a.yaml", Ok("manifests/a.yaml")),
            ("link-in", Ok("manifests/a.yaml")),
            ("manifests/up/b.yaml", Ok("manifests/sub/b.yaml")),
            ("../etc/passwd", Err("leaves the config root")),
            ("manifests/../../x", Err("leaves the config root")),
            ("/etc/passwd", Err("absolute")),
            ("C:/x", Err("absolute")),
            ("link-out", Err("points outside")),
            ("link-abs", Err("points outside")),
            ("manifests/sub/out/x", Err("points outside")),
            ("loop-a", Err("too many levels")),
            ("nope", Err("does not exist")),
            ("", Err("empty")),
        ];
        for (input, want) in cases {
            let got = t.resolve(input);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{input}"),
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{input}: {e}"),
                _ => panic!("{input}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn files_at_lists_a_directory_recursively_in_order() {
        let mut t = FileTree::new();
        t.insert_file("m/b.yaml", b"b".to_vec());
        t.insert_file("m/a/z.yaml", b"z".to_vec());
        t.insert_file("other.yaml", b"o".to_vec());
        t.insert_symlink("m/link.yaml", "../other.yaml");
        let files = t.files_at("m").expect("inside");
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, vec!["m/a/z.yaml", "m/b.yaml", "m/link.yaml"]);
        assert_eq!(files[2].1, b"o");
        assert_eq!(t.files_at("other.yaml").expect("file").len(), 1);
        // A directory containing a link out of the root is refused as a whole.
        assert!(tree().files_at("manifests/sub").is_err());
        assert!(tree().files_at("manifests").is_err());
    }
}
