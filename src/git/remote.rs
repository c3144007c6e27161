//! Network operations on a remote's mirror: list the remote's refs, fetch, push. Each operation
//! gets fresh callbacks (credentials, host key, push status) and maps a failure to an
//! authentication, host-key or plain remote error.

use std::cell::RefCell;

use git2::{AutotagOption, Direction, FetchOptions, ProxyOptions, PushOptions, Remote};

use super::auth::{Auth, Failure};
use super::{GitError, GitSource, Kind, PollResult};

/// What the remote said about one pushed ref.
pub(super) enum PushOutcome {
    Accepted,
    /// Not a fast-forward (client-side check) or refused by the server (hook, race).
    Rejected(String),
}

impl GitSource {
    /// Connects to the remote, lists the refs it advertises (name, commit), and hands them with
    /// the open connection (for a fetch) to `then`: one ls-remote for every caller.
    pub(super) fn with_advertised<T>(
        &self,
        what: &str,
        then: impl FnOnce(
            &[(String, git2::Oid)],
            &mut git2::RemoteConnection<'_, '_, '_>,
            &Auth<'_>,
        ) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        let (mut remote, port) = self.anonymous_remote()?;
        let auth = Auth::new(&self.credentials, port);
        let mut proxy = ProxyOptions::new();
        proxy.auto();
        let mut connection = remote
            .connect_auth(Direction::Fetch, Some(auth.callbacks()), Some(proxy))
            .map_err(|e| self.network_err(&auth, format!("connect to list {what}"), &e))?;
        let advertised: Vec<(String, git2::Oid)> = connection
            .list()
            .map_err(|e| self.network_err(&auth, format!("list {what}"), &e))?
            .iter()
            .map(|head| (head.name().to_string(), head.oid()))
            .collect();
        then(&advertised, &mut connection, &auth)
    }

    /// `poll` for a remote: list, compare, fetch only when the branch moved.
    pub(super) fn poll_remote(&mut self) -> Result<PollResult, GitError> {
        let refname = format!("refs/heads/{}", self.branch);
        let mirrored = self.branch_commit()?;
        let polled = self.with_advertised(&refname, |advertised, connection, auth| {
            let Some((_, remote_oid)) = advertised.iter().find(|(name, _)| *name == refname)
            else {
                return Err(GitError::BranchNotFound {
                    repo: self.display.clone(),
                    branch: self.branch.clone(),
                });
            };
            if mirrored.as_deref() == Some(remote_oid.to_string().as_str()) {
                tracing::debug!(repo = %self.display, branch = %self.branch, commit = %remote_oid, "branch unchanged; nothing fetched");
                return Ok(Some(PollResult {
                    commit: remote_oid.to_string(),
                    fetched: false,
                }));
            }
            let refspecs = [
                format!("+{refname}:{refname}"),
                "+refs/notes/*:refs/notes/*".to_string(),
            ];
            let mut options = fetch_options(auth);
            connection
                .remote()
                .fetch(&refspecs, Some(&mut options), Some("flotilla: fetch"))
                .map_err(|e| self.network_err(auth, format!("fetch {refname}"), &e))?;
            Ok(None)
        })?;
        if let Some(unchanged) = polled {
            return Ok(unchanged);
        }
        let commit = self
            .branch_commit()?
            .ok_or_else(|| GitError::BranchNotFound {
                repo: self.display.clone(),
                branch: self.branch.clone(),
            })?;
        tracing::info!(
            repo = %self.display,
            branch = %self.branch,
            from = mirrored.as_deref().unwrap_or("(none)"),
            to = %commit,
            "fetched a new commit"
        );
        Ok(PollResult {
            commit,
            fetched: true,
        })
    }

    /// Fetches one ref of the remote into the same ref of the mirror, replacing it.
    pub(super) fn fetch_force(&self, refname: &str) -> Result<(), GitError> {
        let (mut remote, port) = self.anonymous_remote()?;
        let auth = Auth::new(&self.credentials, port);
        let mut options = fetch_options(&auth);
        remote
            .fetch(
                &[format!("+{refname}:{refname}")],
                Some(&mut options),
                Some("flotilla: fetch notes"),
            )
            .map_err(|e| self.network_err(&auth, format!("fetch {refname}"), &e))
    }

    /// Pushes one ref to the same name on the remote, without force. A rejection is an outcome,
    /// not an error: libgit2 reports a server-side refusal through `push_update_reference` (the
    /// call itself succeeds) and a non-fast-forward it can see locally as `NotFastForward`.
    pub(super) fn push_ref(&self, refname: &str) -> Result<PushOutcome, GitError> {
        let (mut remote, port) = self.anonymous_remote()?;
        let auth = Auth::new(&self.credentials, port);
        let rejected: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let mut callbacks = auth.callbacks();
        callbacks.push_update_reference(|name, status| {
            if let Some(status) = status {
                rejected.borrow_mut().push(format!("{name}: {status}"));
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let mut proxy = ProxyOptions::new();
        proxy.auto();
        options.proxy_options(proxy);
        let result = remote.push(&[format!("{refname}:{refname}")], Some(&mut options));
        drop(options);
        match result {
            Ok(()) => {
                let rejected = rejected.into_inner();
                if rejected.is_empty() {
                    Ok(PushOutcome::Accepted)
                } else {
                    Ok(PushOutcome::Rejected(self.scrub(&rejected.join("; "))))
                }
            }
            Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
                Ok(PushOutcome::Rejected(self.scrub(e.message())))
            }
            Err(e) => Err(self.network_err(&auth, format!("push {refname}"), &e)),
        }
    }

    /// An in-memory remote for the URL: nothing is written to the mirror's config, so the URL
    /// (which may hold a token) never lands on disk.
    fn anonymous_remote(&self) -> Result<(Remote<'_>, Option<u16>), GitError> {
        let Kind::Remote { url, port } = &self.kind else {
            return Err(GitError::Repo {
                repo: self.display.clone(),
                action: "network operation".into(),
                message: "a local repository has no remote".into(),
            });
        };
        let remote = self
            .repo
            .remote_anonymous(url)
            .map_err(|e| self.repo_err("create the remote", &e))?;
        Ok((remote, *port))
    }

    /// Maps a failed network operation: what the callbacks recorded wins over libgit2's message.
    pub(super) fn network_err(&self, auth: &Auth<'_>, op: String, e: &git2::Error) -> GitError {
        match auth.failure() {
            Some(Failure::Rejected) => GitError::Auth {
                repo: self.display.clone(),
                detail: "the remote refused the credentials".into(),
            },
            Some(Failure::Missing(detail)) => GitError::Auth {
                repo: self.display.clone(),
                detail,
            },
            Some(Failure::HostKey { host, reason }) => GitError::HostKey {
                repo: self.display.clone(),
                host,
                reason,
            },
            None if e.code() == git2::ErrorCode::Auth => GitError::Auth {
                repo: self.display.clone(),
                detail: self.scrub(e.message()),
            },
            None => GitError::Remote {
                repo: self.display.clone(),
                op,
                message: self.scrub(e.message()),
            },
        }
    }
}

pub(super) fn fetch_options<'a>(auth: &'a Auth<'_>) -> FetchOptions<'a> {
    let mut options = FetchOptions::new();
    options.remote_callbacks(auth.callbacks());
    options.download_tags(AutotagOption::None);
    options.update_fetchhead(false);
    let mut proxy = ProxyOptions::new();
    proxy.auto();
    options.proxy_options(proxy);
    options
}
