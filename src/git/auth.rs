//! Credentials and host-key checks for one network operation. libgit2 asks the credentials
//! callback again after every rejected attempt, forever; the state here counts the attempts and
//! gives up after the first rejection so that a wrong token fails fast instead of hammering the
//! server.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::PathBuf;

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::known_hosts::{self, Verdict};

/// How flotilla authenticates to a remote and which ssh host keys it trusts. Debug output hides
/// the token so the struct can be logged as part of a config dump.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Password for https remotes (`FLOTILLA_GIT_TOKEN`); the user name is taken from the URL, or
    /// `x-access-token` (what GitHub and Gitea expect; GitLab accepts any name with a token).
    pub token: Option<String>,
    /// Private key for ssh remotes (`--ssh-key`); without it the ssh agent is asked.
    pub ssh_key: Option<PathBuf>,
    /// Where trusted ssh host keys are listed; `None` means `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Trust an ssh host that `known_hosts` does not list (never one whose key changed).
    pub allow_unknown_hosts: bool,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .field("allow_unknown_hosts", &self.allow_unknown_hosts)
            .finish()
    }
}

/// Why an operation's authentication failed, recorded by the callbacks because the git2 error
/// they cause does not say it reliably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server refused the credentials we gave (or asked again after we gave them).
    Rejected,
    /// The server wants credentials of a kind we do not have.
    Missing(String),
    /// The ssh host key was refused.
    HostKey { host: String, reason: String },
}

/// Where `known_hosts` is when none is configured.
fn default_known_hosts() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
}

/// Per-operation callback state: one per connect, fetch or push.
pub(crate) struct Auth<'a> {
    credentials: &'a Credentials,
    /// Port of an `ssh://` URL, for `[host]:port` lookups.
    port: Option<u16>,
    /// Calls that handed out a secret (token or key). The second one means the first was refused.
    secret_attempts: Cell<u32>,
    /// Calls that only asked for an ssh user name.
    username_requests: Cell<u32>,
    failure: RefCell<Option<Failure>>,
}

impl<'a> Auth<'a> {
    pub(crate) fn new(credentials: &'a Credentials, port: Option<u16>) -> Self {
        Auth {
            credentials,
            port,
            secret_attempts: Cell::new(0),
            username_requests: Cell::new(0),
            failure: RefCell::new(None),
        }
    }

    /// What went wrong with authentication during the operation, if anything.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failure.borrow().clone()
    }

    fn fail(&self, failure: Failure, message: &str) -> git2::Error {
        *self.failure.borrow_mut() = Some(failure);
        git2::Error::from_str(message)
    }

    /// Callbacks for one libgit2 operation, borrowing this state.
    pub(crate) fn callbacks<'s>(&'s self) -> RemoteCallbacks<'s> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, user_from_url, allowed| {
            self.credential(user_from_url, allowed)
        });
        callbacks.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2's own verification against the system roots decides.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Some(key) = hostkey.hostkey() else {
                return Err(self.fail(
                    Failure::HostKey {
                        host: host.to_string(),
                        reason: "the server's raw host key is not available".to_string(),
                    },
                    "ssh host key refused",
                ));
            };
            self.check_host_key(host, key)
        });
        callbacks
    }

    fn credential(
        &self,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        if allowed.is_username() && !allowed.is_ssh_key() && !allowed.is_user_pass_plaintext() {
            // ssh without a user in the URL: libgit2 first asks for the name alone.
            let n = self.username_requests.get() + 1;
            self.username_requests.set(n);
            if n > 2 {
                return Err(self.fail(Failure::Rejected, "authentication failed"));
            }
            return Cred::username(user_from_url.unwrap_or("git"));
        }
        let attempt = self.secret_attempts.get() + 1;
        self.secret_attempts.set(attempt);
        if attempt > 1 {
            tracing::debug!("the remote refused our credentials; not retrying");
            return Err(self.fail(Failure::Rejected, "authentication failed"));
        }
        if allowed.is_user_pass_plaintext() {
            let Some(token) = &self.credentials.token else {
                return Err(self.fail(
                    Failure::Missing("the remote asks for a password and no token is set".into()),
                    "no credentials",
                ));
            };
            let user = user_from_url
                .filter(|u| !u.is_empty())
                .unwrap_or("x-access-token");
            tracing::debug!(user, "offering the token");
            return Cred::userpass_plaintext(user, token);
        }
        if allowed.is_ssh_key() {
            let user = user_from_url.filter(|u| !u.is_empty()).unwrap_or("git");
            return match &self.credentials.ssh_key {
                Some(key) => {
                    tracing::debug!(user, key = %key.display(), "offering the ssh key");
                    Cred::ssh_key(user, None, key, None)
                }
                None => {
                    tracing::debug!(user, "no --ssh-key; asking the ssh agent");
                    Cred::ssh_key_from_agent(user)
                }
            };
        }
        Err(self.fail(
            Failure::Missing(format!(
                "the remote asks for credentials of a kind flotilla does not support ({allowed:?})"
            )),
            "no credentials",
        ))
    }

    fn check_host_key(
        &self,
        host: &str,
        key: &[u8],
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let configured = self.credentials.known_hosts.clone();
        let using_default = configured.is_none();
        let refuse = |reason: String| {
            tracing::warn!(host, %reason, "ssh host key refused");
            Err(self.fail(
                Failure::HostKey {
                    host: host.to_string(),
                    reason,
                },
                "ssh host key refused",
            ))
        };
        let Some(path) = configured.or_else(default_known_hosts) else {
            return refuse("HOME is not set and no known_hosts file is configured".into());
        };
        let contents = match std::fs::read_to_string(&path) {
            Ok(contents) => contents,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return refuse(format!("cannot read {}: {e}", path.display())),
        };
        let name = known_hosts::lookup_name(host, self.port);
        match known_hosts::check(&contents, &name, key) {
            Verdict::Known => {
                tracing::debug!(host = %name, "ssh host key found in known_hosts");
                Ok(CertificateCheckStatus::CertificateOk)
            }
            Verdict::Revoked => refuse(format!("the key of {name} is marked @revoked")),
            Verdict::Mismatch => refuse(format!(
                "{} lists {name} with a different key (possible man-in-the-middle)",
                path.display()
            )),
            Verdict::Unknown { hashed } => {
                if self.credentials.allow_unknown_hosts {
                    tracing::warn!(host = %name, "ssh host not in known_hosts; trusted anyway (allow_unknown_hosts)");
                    Ok(CertificateCheckStatus::CertificateOk)
                } else if hashed > 0 && using_default {
                    // libgit2 has already checked ~/.ssh/known_hosts with libssh2, which
                    // understands hashed entries: let that verdict stand.
                    tracing::debug!(host = %name, "no plain entry; deferring to libssh2's check of hashed entries");
                    Ok(CertificateCheckStatus::CertificatePassthrough)
                } else {
                    refuse(format!(
                        "{name} is not in {} (hashed entries are not checked when a \
                         known_hosts file is configured)",
                        path.display()
                    ))
                }
            }
        }
    }
}
