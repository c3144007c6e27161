//! The refs a review follows (`flotilla run --plan-refs 'refs/pull/*/head'`): list those that
//! match a glob — for a remote with one connection, fetching only the ones that moved — and the
//! merge base a head is reviewed against.

use super::{GitError, GitSource, Kind};

/// A ref that matched the glob, and its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRef {
    /// Full name, e.g. `refs/pull/12/head`.
    pub name: String,
    /// Commit id (hex).
    pub commit: String,
}

/// Whether `name` matches `glob`, where `*` stands for any run of characters (slashes
/// included, as in git's refspecs: `refs/pull/*/head`).
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let mut parts = glob.split('*');
    let Some(first) = parts.next() else {
        return glob == name;
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole name must be the glob.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl GitSource {
    /// The refs matching `glob` and their commits, sorted by name. A remote is listed with one
    /// connection and only refs whose commit the mirror lacks under that name are fetched (all
    /// in one fetch); a local repository is read in place.
    pub fn matching_refs(&mut self, glob: &str) -> Result<Vec<MatchedRef>, GitError> {
        let mut found = match &self.kind {
            Kind::Local => self.local_refs(glob)?,
            Kind::Remote { .. } => self.remote_refs(glob)?,
        };
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn local_refs(&self, glob: &str) -> Result<Vec<MatchedRef>, GitError> {
        let references = self
            .repo
            .references()
            .map_err(|e| self.repo_err("list refs", &e))?;
        let mut out = Vec::new();
        for reference in references.flatten() {
            let Ok(name) = reference.name() else {
                continue;
            };
            if !glob_matches(glob, name) {
                continue;
            }
            if let Ok(commit) = reference.peel_to_commit() {
                out.push(MatchedRef {
                    name: name.to_string(),
                    commit: commit.id().to_string(),
                });
            }
        }
        Ok(out)
    }

    fn remote_refs(&self, glob: &str) -> Result<Vec<MatchedRef>, GitError> {
        if !matches!(self.kind, Kind::Remote { .. }) {
            return Ok(vec![]);
        }
        self.with_advertised(glob, |advertised, connection, auth| {
            let advertised: Vec<MatchedRef> = advertised
                .iter()
                .filter(|(name, _)| glob_matches(glob, name))
                .map(|(name, oid)| MatchedRef {
                    name: name.clone(),
                    commit: oid.to_string(),
                })
                .collect();
            let moved: Vec<String> = advertised
                .iter()
                .filter(|r| {
                    self.repo
                        .refname_to_id(&r.name)
                        .map_or(true, |id| id.to_string() != r.commit)
                })
                .map(|r| format!("+{0}:{0}", r.name))
                .collect();
            if !moved.is_empty() {
                let mut options = super::remote::fetch_options(auth);
                connection
                    .remote()
                    .fetch(
                        &moved,
                        Some(&mut options),
                        Some("flotilla: fetch review refs"),
                    )
                    .map_err(|e| self.network_err(auth, format!("fetch {glob}"), &e))?;
                tracing::info!(repo = %self.display, refs = moved.len(), "fetched review refs");
            }
            Ok(advertised)
        })
    }

    /// Whether the remote advertises `name` (one ls-remote, nothing fetched); false for a
    /// local repository.
    pub(super) fn remote_has_ref(&self, name: &str) -> Result<bool, GitError> {
        if !matches!(self.kind, Kind::Remote { .. }) {
            return Ok(false);
        }
        self.with_advertised(name, |advertised, _, _| {
            Ok(advertised.iter().any(|(advertised, _)| advertised == name))
        })
    }

    /// The commit a head is reviewed against: the merge base of `head` and `base`, or `base`
    /// itself when they share no history.
    pub fn merge_base(&self, base: &str, head: &str) -> Result<String, GitError> {
        let parse = |rev: &str| {
            git2::Oid::from_str(rev).map_err(|e| GitError::RevNotFound {
                repo: self.display.clone(),
                rev: rev.to_string(),
                message: e.message().to_string(),
            })
        };
        match self.repo.merge_base(parse(base)?, parse(head)?) {
            Ok(oid) => Ok(oid.to_string()),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(base.to_string()),
            Err(e) => Err(self.repo_err("find the merge base", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_as_refspecs_do() {
        let cases = [
            ("refs/pull/*/head", "refs/pull/12/head", true),
            ("refs/pull/*/head", "refs/pull/12/merge", false),
            ("refs/pull/*/head", "refs/pull/a/b/head", true),
            ("refs/heads/*", "refs/heads/feature/x", true),
            ("refs/heads/*", "refs/tags/v1", false),
            ("refs/heads/main", "refs/heads/main", true),
            ("refs/heads/main", "refs/heads/main2", false),
            ("refs/*/x*y", "refs/a/xzzy", true),
            ("refs/*/x*y", "refs/a/xy", true),
            ("refs/*/x*y", "refs/a/yx", false),
            ("*", "anything", true),
            ("refs/pull/*/head", "refs/pull//head", true),
        ];
        for (glob, name, want) in cases {
            assert_eq!(glob_matches(glob, name), want, "{glob} ~ {name}");
        }
    }
}
