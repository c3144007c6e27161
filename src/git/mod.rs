//! Git adapter (git2): poll a remote or watch a local repository, snapshot a commit's tree as a
//! [`FileTree`](crate::source::FileTree), read and write notes, push the notes refs.
//!
//! A remote (`file://`, `https://`, `ssh://`, `git@host:path`) is mirrored into a bare repository
//! under a cache directory and fetched only when its branch moved; a local directory is read in
//! place and never fetched from or pushed to. Everything here is synchronous: the daemon calls it
//! from `spawn_blocking`. Credentials never leave this module: URLs are shown redacted and
//! libgit2's messages are scrubbed before they go into a [`GitError`].
//!
//! Known limits: a fetch replaces the mirror's `refs/notes/*` with the remote's, so a note whose
//! push failed is only kept until the branch next moves (the daemon writes a fresh note for the
//! new commit); hashed `known_hosts` entries are only understood through libgit2's own check of
//! `~/.ssh/known_hosts` (see `known_hosts.rs`); the mirror is never garbage-collected (each fetch
//! adds a pack; `git gc` on it is safe while the daemon is stopped); libgit2's network timeouts
//! are process-wide and left at their defaults here.

mod auth;
mod history;
mod known_hosts;
mod notes;
mod refs;
mod remote;
mod snapshot;
mod url;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};

use git2::Repository;
use sha2::{Digest, Sha256};

pub use auth::Credentials;
pub use notes::{Note, PublishReport, PushedRef};
pub use refs::{MatchedRef, glob_matches};
pub use url::redact_url;
pub use watch::RefWatcher;

/// Files larger than this are refused in a snapshot, the same cap `source::read_dir` applies to a
/// directory: a config repo holds manifests, not data.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Everything that can go wrong in the git adapter. Every variant names the repository (redacted)
/// and, where there is one, the ref, commit or path involved, so that a log line is actionable.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `--repo` is neither a supported URL nor an existing directory.
    #[error("repository {repo}: {reason}")]
    InvalidRepo {
        /// The address as given (redacted).
        repo: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The mirror cache directory could not be created.
    #[error("repository {repo}: cannot create the mirror cache {}: {source}", path.display())]
    Cache {
        /// The remote (redacted).
        repo: String,
        /// The cache directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The remote refused our credentials, or wants credentials we do not have.
    #[error("authentication to {repo} failed ({detail}): check FLOTILLA_GIT_TOKEN / --ssh-key")]
    Auth {
        /// The remote (redacted).
        repo: String,
        /// What happened, without any secret.
        detail: String,
    },
    /// The ssh server's host key is not trusted.
    #[error("repository {repo}: ssh host key of {host} refused: {reason}")]
    HostKey {
        /// The remote (redacted).
        repo: String,
        /// The ssh host.
        host: String,
        /// Why (unknown host, changed key, ...).
        reason: String,
    },
    /// A network operation (list, fetch, push) failed for another reason.
    #[error("repository {repo}: {op} failed: {message}")]
    Remote {
        /// The remote (redacted).
        repo: String,
        /// What we were doing, with the ref involved.
        op: String,
        /// libgit2's message, scrubbed of credentials.
        message: String,
    },
    /// The branch to follow does not exist.
    #[error("repository {repo}: branch {branch:?} not found")]
    BranchNotFound {
        /// The repository (redacted).
        repo: String,
        /// The branch name.
        branch: String,
    },
    /// A revision (commit id, branch, tag, `HEAD~1`) does not name a commit.
    #[error("repository {repo}: revision {rev:?} is not a commit: {message}")]
    RevNotFound {
        /// The repository (redacted).
        repo: String,
        /// The revision as given.
        rev: String,
        /// libgit2's message.
        message: String,
    },
    /// The config root inside the repository does not exist in that commit, or is a file.
    #[error("repository {repo}: commit {commit}: config directory {subdir:?} {reason}")]
    Subdir {
        /// The repository (redacted).
        repo: String,
        /// The commit id.
        commit: String,
        /// The directory asked for.
        subdir: String,
        /// "does not exist" or "is not a directory".
        reason: String,
    },
    /// A file over [`MAX_FILE_BYTES`].
    #[error(
        "repository {repo}: commit {commit}: {path}: file is {size} bytes, larger than the {MAX_FILE_BYTES} bytes a config file may have"
    )]
    TooLarge {
        /// The repository (redacted).
        repo: String,
        /// The commit id.
        commit: String,
        /// The file, relative to the config root.
        path: String,
        /// Its size.
        size: u64,
    },
    /// Reading or writing the object database or refs failed.
    #[error("repository {repo}: {action}: {message}")]
    Repo {
        /// The repository (redacted).
        repo: String,
        /// What we were doing, with the ref, commit or path involved.
        action: String,
        /// libgit2's message, scrubbed of credentials.
        message: String,
    },
    /// The remote kept rejecting a notes ref after fetching and rewriting our notes on top.
    #[error(
        "repository {repo}: push of {notes_ref} rejected {attempts} times (last: {reason}); the notes are kept locally"
    )]
    NotesRejected {
        /// The remote (redacted).
        repo: String,
        /// The notes ref.
        notes_ref: String,
        /// How many pushes were tried.
        attempts: u32,
        /// The last rejection reason.
        reason: String,
    },
    /// The filesystem watch on a local repository's refs could not be set up.
    #[error("repository {repo}: cannot watch {}: {message}", path.display())]
    Watch {
        /// The repository.
        repo: String,
        /// The path that could not be watched.
        path: PathBuf,
        /// What notify said.
        message: String,
    },
}

/// Outcome of [`GitSource::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollResult {
    /// The branch's commit id (hex).
    pub commit: String,
    /// Whether objects were fetched (false when the remote's branch matched the mirror, and
    /// always false for a local repository).
    pub fetched: bool,
}

/// Remote or local, and what a remote needs for the network.
enum Kind {
    Remote {
        /// The URL as given, possibly with userinfo: never logged.
        url: String,
        /// Port of an ssh:// URL, for known_hosts lookups.
        port: Option<u16>,
    },
    Local,
}

/// One repository flotilla follows: a branch of a remote (through a bare mirror) or of a local
/// directory. Owns a `git2::Repository`, so it is `Send` but not `Sync`: keep it in one task and
/// move it into `spawn_blocking`.
pub struct GitSource {
    repo: Repository,
    kind: Kind,
    display: String,
    branch: String,
    credentials: Credentials,
    /// Strings that must never appear in an error or a log line.
    secrets: Vec<String>,
}

impl fmt::Debug for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSource")
            .field("repo", &self.display)
            .field("branch", &self.branch)
            .field("remote", &self.is_remote())
            .field("git_dir", &self.repo.path())
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl GitSource {
    /// Opens the repository flotilla follows. `repo` is a URL (file://, https://, ssh://, or
    /// scp-like `git@host:path`), mirrored as a bare repository under `cache_dir` (one directory
    /// per URL, named by the sha256 of the redacted URL, so a rotated token keeps its mirror); or
    /// an existing local directory (bare or with a work tree), used in place: no fetch, no push.
    /// Opening does not touch the network; the first [`poll`](Self::poll) does.
    pub fn open(
        repo: &str,
        branch: &str,
        credentials: Credentials,
        cache_dir: &Path,
    ) -> Result<GitSource, GitError> {
        let shown = redact_url(repo);
        let mut secrets = url::url_secrets(repo);
        if let Some(token) = credentials.token.as_ref().filter(|t| !t.is_empty()) {
            secrets.push(token.clone());
        }
        let location = url::classify(repo).map_err(|reason| GitError::InvalidRepo {
            repo: shown.clone(),
            reason,
        })?;
        let clean = |message: &str| scrub(message, repo, &shown, &secrets);
        let (git_repo, kind) = match location {
            url::Location::Local(path) => {
                let git_repo = Repository::open(&path).map_err(|e| GitError::Repo {
                    repo: shown.clone(),
                    action: "open the local repository".into(),
                    message: clean(e.message()),
                })?;
                tracing::info!(repo = %shown, branch, git_dir = %git_repo.path().display(), "using a local repository in place");
                (git_repo, Kind::Local)
            }
            url::Location::Remote(url) => {
                let name = hex(&Sha256::digest(shown.as_bytes()));
                let path = cache_dir.join(format!("{name}.git"));
                let git_repo = open_mirror(&path, &shown, branch, &clean)?;
                tracing::info!(repo = %shown, branch, mirror = %path.display(), "using a bare mirror");
                let port = url::port(&url);
                (git_repo, Kind::Remote { url, port })
            }
        };
        Ok(GitSource {
            repo: git_repo,
            kind,
            display: shown,
            branch: branch.to_string(),
            credentials,
            secrets,
        })
    }

    /// True when the repository is a remote (mirrored, fetched, notes pushed).
    pub fn is_remote(&self) -> bool {
        matches!(self.kind, Kind::Remote { .. })
    }

    /// Display name with any userinfo (user:token@) redacted: the only form ever logged or put in
    /// errors.
    pub fn display_url(&self) -> &str {
        &self.display
    }

    /// The branch being followed.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The git directory read from: the mirror for a remote, the repository's own for a local
    /// directory. For logs and for operators who want to inspect the mirror.
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// Returns the branch's current commit. Remote: lists the remote's refs (one connection, no
    /// objects) and fetches only if `refs/heads/<branch>` differs from the mirror's, then fetches
    /// that branch plus `refs/notes/*` so that the notes do not diverge. Local: reads the ref.
    pub fn poll(&mut self) -> Result<PollResult, GitError> {
        match &self.kind {
            Kind::Remote { .. } => self.poll_remote(),
            Kind::Local => {
                let commit = self
                    .branch_commit()?
                    .ok_or_else(|| GitError::BranchNotFound {
                        repo: self.display.clone(),
                        branch: self.branch.clone(),
                    })?;
                tracing::debug!(repo = %self.display, branch = %self.branch, %commit, "read the local branch");
                Ok(PollResult {
                    commit,
                    fetched: false,
                })
            }
        }
    }

    /// The commit a revision names (full id, short id, branch, tag, `HEAD~1`): what
    /// `flotilla status --rev` and `plan --base/--head` accept.
    pub fn resolve(&self, rev: &str) -> Result<String, GitError> {
        Ok(self.find_commit(rev)?.id().to_string())
    }

    /// The first line of a commit's message, for logs and the note's summary line.
    pub fn commit_summary(&self, commit: &str) -> Result<String, GitError> {
        let found = self.find_commit(commit)?;
        let summary = match found.summary_bytes() {
            Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            None => String::new(),
        };
        Ok(summary)
    }

    /// The commit `refs/heads/<branch>` points to in our repository (mirror or local), if any.
    fn branch_commit(&self) -> Result<Option<String>, GitError> {
        let refname = format!("refs/heads/{}", self.branch);
        match self.repo.find_reference(&refname) {
            Ok(reference) => {
                let commit = reference
                    .peel_to_commit()
                    .map_err(|e| self.repo_err(format!("read {refname}"), &e))?;
                Ok(Some(commit.id().to_string()))
            }
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.repo_err(format!("read {refname}"), &e)),
        }
    }

    fn find_commit(&self, rev: &str) -> Result<git2::Commit<'_>, GitError> {
        self.repo
            .revparse_single(rev)
            .and_then(|object| object.peel_to_commit())
            .map_err(|e| GitError::RevNotFound {
                repo: self.display.clone(),
                rev: rev.to_string(),
                message: self.scrub(e.message()),
            })
    }

    /// A libgit2 message with the raw URL and every secret replaced.
    fn scrub(&self, message: &str) -> String {
        let raw = match &self.kind {
            Kind::Remote { url, .. } => url.as_str(),
            Kind::Local => "",
        };
        scrub(message, raw, &self.display, &self.secrets)
    }

    fn repo_err(&self, action: impl Into<String>, e: &git2::Error) -> GitError {
        GitError::Repo {
            repo: self.display.clone(),
            action: action.into(),
            message: self.scrub(e.message()),
        }
    }
}

/// Opens or creates the bare mirror of a remote.
fn open_mirror(
    path: &Path,
    display: &str,
    branch: &str,
    scrub: &dyn Fn(&str) -> String,
) -> Result<Repository, GitError> {
    let repo_err = |action: &str, e: git2::Error| GitError::Repo {
        repo: display.to_string(),
        action: format!("{action} {}", path.display()),
        message: scrub(e.message()),
    };
    if path.exists() {
        return Repository::open_bare(path).map_err(|e| repo_err("open the mirror", e));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| GitError::Cache {
            repo: display.to_string(),
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let repo = Repository::init_bare(path).map_err(|e| repo_err("create the mirror", e))?;
    // For humans inspecting the cache: which remote this is, and HEAD on the followed branch.
    repo.config()
        .and_then(|mut config| config.set_str("flotilla.url", display))
        .map_err(|e| repo_err("configure the mirror", e))?;
    repo.set_head(&format!("refs/heads/{branch}"))
        .map_err(|e| repo_err("set HEAD of the mirror", e))?;
    Ok(repo)
}

/// Replaces the raw URL by its redacted form and every secret by `***`.
fn scrub(message: &str, raw_url: &str, display: &str, secrets: &[String]) -> String {
    let mut out = if raw_url.is_empty() {
        message.to_string()
    } else {
        message.replace(raw_url, display)
    };
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_url_and_secrets() {
        let secrets = vec!["tok3n".to_string()];
        let got = scrub(
            "failed for https://x:tok3n@h/r and tok3n again",
            "https://x:tok3n@h/r",
            "https://***@h/r",
            &secrets,
        );
        assert_eq!(got, "failed for https://***@h/r and *** again");
    }

    #[test]
    fn source_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<GitSource>();
        assert_send::<RefWatcher>();
    }

    #[test]
    fn credentials_debug_hides_the_token() {
        let credentials = Credentials {
            token: Some("very-secret-token".into()),
            ..Credentials::default()
        };
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("very-secret-token"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
