//! Filesystem watch on a local repository's refs, so that a commit in a local repository is seen
//! within a second instead of at the next poll interval.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::{GitError, GitSource, Kind};

/// Keeps a watch on `refs/heads` (recursively), `packed-refs` and `HEAD` alive and signals a
/// [`Notify`] whenever one of them changes. Dropping it stops the watch. A change only says
/// "poll now": the signal carries no commit, and several changes in a row may coalesce into
/// one wake-up (the stored permit of `Notify::notify_one`), so none is lost.
pub struct RefWatcher {
    _watcher: notify::RecommendedWatcher,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for RefWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefWatcher").finish_non_exhaustive()
    }
}

impl RefWatcher {
    /// The signal, for a `select!` next to the poll timer and the shutdown signal.
    pub fn notify(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Waits until a ref changed since the last wake-up (or since the watch started).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// True for the paths whose change can move the branch: loose refs under `refs/heads`,
/// `packed-refs`, `HEAD` (the caller ignores mere reads of them). Lock files (`main.lock`) are the first half of an update; the rename
/// to the final name is the event that counts.
fn relevant(path: &Path, heads: &Path) -> bool {
    if path.extension().is_some_and(|ext| ext == "lock") {
        return false;
    }
    path.starts_with(heads)
        || path
            .file_name()
            .is_some_and(|name| name == "packed-refs" || name == "HEAD")
}

impl GitSource {
    /// For a local repository, a watcher on its refs (bare and non-bare layouts, and linked work
    /// trees whose refs live in the common directory); `None` for a remote, which is polled.
    pub fn watch(&self) -> Result<Option<RefWatcher>, GitError> {
        if !matches!(self.kind, Kind::Local) {
            return Ok(None);
        }
        let common = self.repo.commondir().to_path_buf();
        let git_dir = self.repo.path().to_path_buf();
        let heads = common.join("refs/heads");
        let notify = Arc::new(Notify::new());
        let signal = Arc::clone(&notify);
        let heads_in_handler = heads.clone();
        let repo = self.display.clone();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                // Reads (our own polls included) raise Access events: waking on them would loop.
                if !matches!(event.kind, notify::EventKind::Access(_))
                    && event
                        .paths
                        .iter()
                        .any(|path| relevant(path, &heads_in_handler))
                {
                    tracing::debug!(repo = %repo, paths = ?event.paths, "refs changed");
                    signal.notify_one();
                }
            }
            Err(e) => {
                // A lost event must not hide a commit: poll anyway.
                tracing::warn!(repo = %repo, error = %e, "ref watch error; polling");
                signal.notify_one();
            }
        };
        let watch_err = |path: &Path, e: notify::Error| GitError::Watch {
            repo: self.display.clone(),
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut watcher =
            notify::recommended_watcher(handler).map_err(|e| watch_err(&common, e))?;
        let mut targets: Vec<(PathBuf, RecursiveMode)> = vec![
            (heads, RecursiveMode::Recursive),
            (common.clone(), RecursiveMode::NonRecursive),
        ];
        if git_dir != common {
            targets.push((git_dir, RecursiveMode::NonRecursive));
        }
        for (path, mode) in &targets {
            watcher.watch(path, *mode).map_err(|e| watch_err(path, e))?;
        }
        tracing::info!(repo = %self.display, git_dir = %common.display(), "watching refs");
        Ok(Some(RefWatcher {
            _watcher: watcher,
            notify,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevant_paths() {
        let heads = Path::new("/r/.git/refs/heads");
        for (path, want) in [
            ("/r/.git/refs/heads/main", true),
            ("/r/.git/refs/heads/feature/x", true),
            ("/r/.git/refs/heads/main.lock", false),
            ("/r/.git/packed-refs", true),
            ("/r/.git/packed-refs.lock", false),
            ("/r/.git/HEAD", true),
            ("/r/.git/index", false),
            ("/r/.git/ORIG_HEAD", false),
            ("/r/.git/refs/tags/v1", false),
        ] {
            assert_eq!(relevant(Path::new(path), heads), want, "{path}");
        }
    }
}
