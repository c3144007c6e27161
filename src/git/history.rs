//! A commit's first-parent history, for `flotilla plan`: the labels of the last pass come from the
//! newest state note on base or one of its first-parent ancestors.

use super::{GitError, GitSource};

impl GitSource {
    /// `commit` and its first-parent ancestors, newest first, at most `limit` of them.
    pub fn first_parents(&self, commit: &str, limit: usize) -> Result<Vec<String>, GitError> {
        let mut out = Vec::new();
        let mut current = Some(self.find_commit(commit)?);
        while let Some(c) = current {
            if out.len() >= limit {
                break;
            }
            out.push(c.id().to_string());
            current = if c.parent_count() > 0 {
                Some(
                    c.parent(0)
                        .map_err(|e| self.repo_err(format!("read the parent of {}", c.id()), &e))?,
                )
            } else {
                None
            };
        }
        Ok(out)
    }
}
