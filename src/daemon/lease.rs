//! Leader election of `run --leader-elect`: a `coordination.k8s.io/v1` Lease in the management
//! cluster, with client-go's leaderelection semantics, so of several replicas (of one shard) only
//! the holder syncs, writes notes, watches drift and plans refs.
//!
//! The decision is pure ([`decide`], [`next_spec`]): given the Lease as read, how long this
//! replica has seen that same record (its resourceVersion) unchanged, and who we are, it says
//! create / renew / take over / wait. Expiry is measured on this replica's own monotonic clock
//! from when it first saw the record — never from the holder's `renewTime`, so clock skew between
//! nodes does not matter (client-go does the same). The adapter ([`Elector`]) does GET, CREATE and
//! REPLACE with the resourceVersion read (optimistic concurrency: a 409 means another replica
//! wrote first, and we read again).
//!
//! Safety: the holder renews every `retry_period`; when it has not renewed for `renew_deadline`
//! (< `lease_duration`) it exits the process with status 1 (as client-go's `OnStoppedLeading`
//! does; the Deployment restarts it as a candidate). A candidate takes over only after seeing the
//! same record for `lease_duration`, which began after the holder's last successful renew, so the
//! old holder has stopped writing before anyone else can start. On SIGTERM the holder finishes its
//! pass and notes, then releases the Lease (empty holder, duration 1 s) so another replica takes
//! over at once.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Errors of the leader election adapter.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A Lease request failed (other than a lost race).
    #[error("lease {namespace}/{name} in the management cluster: {action}: {source}")]
    Api {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// What was tried.
        action: &'static str,
        /// The API error (boxed: kube's error is large).
        source: Box<kube::Error>,
    },
    /// The durations cannot give the safety guarantee.
    #[error(
        "--lease-renew-deadline ({renew:?}) must be shorter than --lease-duration ({duration:?}), and --lease-retry-period ({retry:?}) shorter than the renew deadline"
    )]
    Durations {
        /// Lease duration.
        duration: Duration,
        /// Renew deadline.
        renew: Duration,
        /// Retry period.
        retry: Duration,
    },
}

/// Settings of `--leader-elect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// The Lease's name (with shards already `<name>-shard-<i>`).
    pub name: String,
    /// Its namespace in the management cluster.
    pub namespace: String,
    /// Who we are (POD_NAME, else hostname + pid): the Lease's holderIdentity.
    pub identity: String,
    /// How long a candidate waits on an unchanged Lease before taking it over.
    pub duration: Duration,
    /// How long the holder keeps trying to renew before it gives up and exits.
    pub renew_deadline: Duration,
    /// How often the holder renews and a candidate looks again.
    pub retry_period: Duration,
}

impl LeaseOptions {
    /// Checks retry < renew deadline < duration (the order the safety argument needs).
    pub fn check(&self) -> Result<(), LeaseError> {
        if self.renew_deadline >= self.duration || self.retry_period >= self.renew_deadline {
            return Err(LeaseError::Durations {
                duration: self.duration,
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(())
    }
}

/// The identity of this replica: `POD_NAME` when set, else `<hostname>_<pid>`.
pub fn identity(pod_name: Option<&str>, hostname: Option<&str>, pid: u32) -> String {
    match pod_name.map(str::trim).filter(|p| !p.is_empty()) {
        Some(pod) => pod.to_string(),
        None => format!("{}_{pid}", hostname.unwrap_or("unknown")),
    }
}

/// The parts of a Lease the decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
}

impl Record {
    /// The decision's view of a Lease's spec (a missing duration counts as 0: expired).
    pub fn of(spec: Option<&LeaseSpec>) -> Record {
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            duration: Duration::from_secs(
                spec.and_then(|s| s.lease_duration_seconds)
                    .and_then(|d| u64::try_from(d).ok())
                    .unwrap_or(0),
            ),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Released or expired: take it over (a new leader: transitions + 1).
    TakeOver,
    /// Someone else holds it and it has not expired by our clock.
    Wait {
        /// The holder.
        holder: String,
        /// How long until we may take it over if it stays unchanged.
        remaining: Duration,
    },
}

/// The decision of client-go's `tryAcquireOrRenew`: `current` is the Lease read (`None`: not
/// found), `unchanged_for` how long this replica has seen that same record.
pub fn decide(current: Option<&Record>, identity: &str, unchanged_for: Duration) -> Decision {
    let Some(record) = current else {
        return Decision::Create;
    };
    match record.holder.as_deref() {
        None => Decision::TakeOver,
        Some(holder) if holder == identity => Decision::Renew,
        Some(_) if unchanged_for >= record.duration => Decision::TakeOver,
        Some(holder) => Decision::Wait {
            holder: holder.to_string(),
            remaining: record.duration.saturating_sub(unchanged_for),
        },
    }
}

/// The spec to write for `decision` (not for `Wait`): holder, duration, renewTime now;
/// acquireTime and leaseTransitions kept on a renew, acquireTime now and transitions + 1 on a
/// takeover, 0 on creation.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    identity: &str,
    duration: Duration,
    now: MicroTime,
) -> LeaseSpec {
    let seconds = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    let (acquire, transitions) = match decision {
        Decision::Renew => (
            current
                .and_then(|s| s.acquire_time.clone())
                .unwrap_or_else(|| now.clone()),
            transitions,
        ),
        Decision::TakeOver => (now.clone(), transitions.saturating_add(1)),
        Decision::Create | Decision::Wait { .. } => (now.clone(), 0),
    };
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(acquire),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// The spec that releases a Lease we hold: no holder, 1 s, renewTime now (client-go's release),
/// transitions kept.
pub fn released_spec(current: Option<&LeaseSpec>, now: MicroTime) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        lease_transitions: current.and_then(|s| s.lease_transitions),
        ..LeaseSpec::default()
    }
}

/// Whether a holder whose last successful renew was `since_renew` ago has lost the Lease.
pub fn lost(since_renew: Duration, renew_deadline: Duration) -> bool {
    since_renew >= renew_deadline
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// What one attempt found.
enum Attempt {
    /// We hold the Lease (created, renewed or taken over).
    Held,
    /// Someone else does: its identity, and how long until it may expire.
    HeldBy(String, Duration),
    /// Our write lost a race (409: the Lease was created or written since we read it).
    Conflict,
}

/// Leader election over one Lease.
pub struct Elector {
    api: Api<Lease>,
    options: LeaseOptions,
    /// The record last seen (resourceVersion) and since when, on our monotonic clock.
    observed: Mutex<Option<(String, Instant)>>,
}

impl Elector {
    /// An elector for `options.name` in `options.namespace` through `client` (the management
    /// cluster's).
    pub fn new(client: kube::Client, options: LeaseOptions) -> Result<Self, LeaseError> {
        options.check()?;
        Ok(Elector {
            api: Api::namespaced(client, &options.namespace),
            options,
            observed: Mutex::new(None),
        })
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.options.namespace.clone(),
            name: self.options.name.clone(),
            action,
            source: Box::new(source),
        }
    }

    /// One try of client-go's `tryAcquireOrRenew`.
    async fn attempt(&self) -> Result<Attempt, LeaseError> {
        let current = self
            .api
            .get_opt(&self.options.name)
            .await
            .map_err(|e| self.api_error("read", e))?;
        let unchanged_for = {
            let mut observed = self.observed.lock().await;
            let version = current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone())
                .unwrap_or_default();
            match &*observed {
                Some((v, since)) if *v == version => since.elapsed(),
                _ => {
                    *observed = Some((version, Instant::now()));
                    Duration::ZERO
                }
            }
        };
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let record = current.as_ref().map(|l| Record::of(l.spec.as_ref()));
        let decision = decide(record.as_ref(), &self.options.identity, unchanged_for);
        if let Decision::Wait { holder, remaining } = decision {
            return Ok(Attempt::HeldBy(holder, remaining));
        }
        let new_spec = next_spec(
            spec,
            &decision,
            &self.options.identity,
            self.options.duration,
            now(),
        );
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.options.name.clone()),
                        namespace: Some(self.options.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion read stays in the metadata: a write by anyone since
                // makes this replace a 409.
                lease.spec = Some(new_spec);
                self.api
                    .replace(&self.options.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(written) => {
                *self.observed.lock().await = written
                    .metadata
                    .resource_version
                    .map(|v| (v, Instant::now()));
                if decision != Decision::Renew {
                    info!(lease = %self.options.name, identity = %self.options.identity, ?decision, "acquired the lease");
                }
                Ok(Attempt::Held)
            }
            // Created or written by another replica first: it won this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(self.api_error("write", e)),
        }
    }

    /// Waits until this replica holds the Lease (`true`), or `shutdown` turns true first
    /// (`false`). Errors (the management cluster unreachable, no permission, no
    /// namespace) are logged and retried every retry period.
    pub async fn acquire(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut last_holder = String::new();
        loop {
            if *shutdown.borrow() {
                return false;
            }
            let wait = match self.attempt().await {
                Ok(Attempt::Held) => return true,
                Ok(Attempt::HeldBy(holder, remaining)) => {
                    if holder != last_holder {
                        info!(lease = %self.options.name, %holder, "waiting for the lease");
                        last_holder = holder;
                    }
                    remaining.min(self.options.retry_period)
                }
                Ok(Attempt::Conflict) => self.options.retry_period,
                Err(e) => {
                    warn!(error = %e, "leader election: trying again");
                    self.options.retry_period
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Renews every retry period until aborted; exits the process with status 1 when no renew
    /// succeeded for the renew deadline, or the Lease shows another holder (so it stops writing
    /// before another replica can take over).
    async fn renew_forever(self: Arc<Self>) {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.options.retry_period).await;
            let left = self
                .options
                .renew_deadline
                .saturating_sub(last_renew.elapsed());
            // A hung request must not outlive the deadline.
            match tokio::time::timeout(left, self.attempt()).await {
                Ok(Ok(Attempt::Held)) => last_renew = Instant::now(),
                Ok(Ok(Attempt::HeldBy(holder, _))) => {
                    error!(lease = %self.options.name, %holder, "lost the lease to another holder: exiting");
                    std::process::exit(1);
                }
                // Written by someone since we read it: read again (another holder → exit above).
                Ok(Ok(Attempt::Conflict)) => {
                    warn!(lease = %self.options.name, "renewing the lease conflicted; trying again")
                }
                Ok(Err(e)) => warn!(error = %e, "renewing the lease failed; trying again"),
                Err(_) => warn!(lease = %self.options.name, "renewing the lease timed out"),
            }
            if lost(last_renew.elapsed(), self.options.renew_deadline) {
                error!(
                    lease = %self.options.name,
                    deadline = ?self.options.renew_deadline,
                    "could not renew the lease within the renew deadline: exiting so that no two replicas write"
                );
                std::process::exit(1);
            }
        }
    }

    /// Gives the Lease up if we still hold it (after the last pass and its notes), so another
    /// replica takes over at once rather than after the lease duration.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.options.name)
            .await
            .map_err(|e| self.api_error("read", e))?
        else {
            return Ok(());
        };
        if Record::of(lease.spec.as_ref()).holder.as_deref() != Some(&self.options.identity) {
            return Ok(());
        }
        lease.spec = Some(released_spec(lease.spec.as_ref(), now()));
        self.api
            .replace(&self.options.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_error("release", e))?;
        info!(lease = %self.options.name, "released the lease");
        Ok(())
    }
}

/// The Lease while we hold it: a renewing task (which exits the process when the Lease is lost).
pub struct Leadership {
    elector: Arc<Elector>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Starts renewing a Lease `elector` just acquired.
    pub fn start(elector: Elector) -> Leadership {
        let elector = Arc::new(elector);
        let renewer = tokio::spawn(Arc::clone(&elector).renew_forever());
        Leadership { elector, renewer }
    }

    /// Stops renewing and releases the Lease (SIGTERM, after the last pass and its notes).
    pub async fn release(self) {
        self.renewer.abort();
        let _ = self.renewer.await;
        if let Err(e) = self.elector.release().await {
            warn!(error = %e, "releasing the lease failed; another replica takes over when it expires");
        }
    }
}

impl super::Daemon {
    /// `run --leader-elect`: finds the management cluster (`--management-cluster` in the branch
    /// head's inventory, else the cluster we run in) and waits until this replica holds the
    /// Lease; `None` when stopped while waiting.
    pub(super) async fn lead(
        &self,
        options: LeaseOptions,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Leadership>, super::DaemonError> {
        options.check()?;
        info!(lease = %options.name, namespace = %options.namespace, identity = %options.identity, "leader election: candidate");
        let client = loop {
            if *shutdown.borrow() {
                return Ok(None);
            }
            match self.management_client().await {
                Ok(client) => break client,
                Err(why) => {
                    warn!(%why, "leader election needs the management cluster; trying again")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(options.retry_period) => {}
                _ = shutdown.changed() => {}
            }
        };
        let elector = Elector::new(client, options)?;
        if !elector.acquire(shutdown).await {
            return Ok(None);
        }
        Ok(Some(Leadership::start(elector)))
    }

    /// The management cluster's client, for the Lease.
    async fn management_client(&self) -> Result<kube::Client, String> {
        let subdir = self.options().path.clone();
        let tree = self
            .with_git(move |g| {
                let poll = g.poll()?;
                g.snapshot(&poll.commit, subdir.as_deref())
            })
            .await
            .map_err(|e| e.to_string())?;
        let repo = crate::config::load(tree).map_err(|d| {
            format!(
                "the branch head is invalid ({} errors): cannot find the management cluster",
                d.0.len()
            )
        })?;
        self.fleet
            .management(&repo)
            .await
            .map(|target| target.client.clone())
            .ok_or_else(|| {
                "no management cluster: give --management-cluster or run in a pod".to_string()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, secs: u64) -> Record {
        Record {
            holder: Some(by.into()),
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn decision_table() {
        let released = Record {
            holder: None,
            duration: Duration::from_secs(1),
        };
        let s = Duration::from_secs;
        let cases: Vec<(&str, Option<Record>, Duration, Decision)> = vec![
            ("no lease", None, s(0), Decision::Create),
            ("ours, fresh", Some(held("me", 15)), s(0), Decision::Renew),
            (
                "ours, old by our clock",
                Some(held("me", 15)),
                s(60),
                Decision::Renew,
            ),
            ("released", Some(released.clone()), s(0), Decision::TakeOver),
            (
                "empty holder",
                Some(Record {
                    holder: None,
                    duration: s(15),
                }),
                s(0),
                Decision::TakeOver,
            ),
            (
                "other, just seen",
                Some(held("other", 15)),
                s(0),
                Decision::Wait {
                    holder: "other".into(),
                    remaining: s(15),
                },
            ),
            (
                "other, seen unchanged 10s",
                Some(held("other", 15)),
                s(10),
                Decision::Wait {
                    holder: "other".into(),
                    remaining: s(5),
                },
            ),
            (
                "other, expired by our clock",
                Some(held("other", 15)),
                s(15),
                Decision::TakeOver,
            ),
            (
                "other, zero duration",
                Some(held("other", 0)),
                s(0),
                Decision::TakeOver,
            ),
        ];
        for (name, record, unchanged, expected) in cases {
            assert_eq!(decide(record.as_ref(), "me", unchanged), expected, "{name}");
        }
    }

    #[test]
    fn record_of_spec() {
        assert_eq!(
            Record::of(None),
            Record {
                holder: None,
                duration: Duration::ZERO
            }
        );
        let spec = LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(-3),
            ..LeaseSpec::default()
        };
        assert_eq!(
            Record::of(Some(&spec)),
            Record {
                holder: None,
                duration: Duration::ZERO
            }
        );
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert_eq!(Record::of(Some(&spec)), held("a", 15));
    }

    fn at(second: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid time"))
    }

    #[test]
    fn specs_follow_client_go() {
        let d = Duration::from_secs(15);
        let created = next_spec(None, &Decision::Create, "me", d, at(100));
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(at(100)));
        assert_eq!(created.renew_time, Some(at(100)));
        assert_eq!(created.lease_transitions, Some(0));

        let renewed = next_spec(Some(&created), &Decision::Renew, "me", d, at(102));
        assert_eq!(renewed.acquire_time, Some(at(100)), "acquireTime kept");
        assert_eq!(renewed.renew_time, Some(at(102)));
        assert_eq!(renewed.lease_transitions, Some(0));

        let taken = next_spec(Some(&renewed), &Decision::TakeOver, "you", d, at(120));
        assert_eq!(taken.holder_identity.as_deref(), Some("you"));
        assert_eq!(taken.acquire_time, Some(at(120)));
        assert_eq!(taken.lease_transitions, Some(1));

        let released = released_spec(Some(&taken), at(130));
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.renew_time, Some(at(130)));
        assert_eq!(released.lease_transitions, Some(1));

        let sub_second = next_spec(
            None,
            &Decision::Create,
            "me",
            Duration::from_millis(10),
            at(1),
        );
        assert_eq!(sub_second.lease_duration_seconds, Some(1));
    }

    #[test]
    fn lost_and_checks() {
        let s = Duration::from_secs;
        assert!(!lost(s(9), s(10)));
        assert!(lost(s(10), s(10)));
        assert!(lost(s(11), s(10)));
        let options = |duration, renew, retry| LeaseOptions {
            name: "flotilla".into(),
            namespace: "flotilla-system".into(),
            identity: "me".into(),
            duration: s(duration),
            renew_deadline: s(renew),
            retry_period: s(retry),
        };
        assert!(options(15, 10, 2).check().is_ok());
        assert!(options(4, 3, 1).check().is_ok());
        assert!(options(10, 10, 2).check().is_err());
        assert!(options(10, 12, 2).check().is_err());
        assert!(options(15, 10, 10).check().is_err());
    }

    #[test]
    fn identities() {
        assert_eq!(identity(Some("flotilla-0"), Some("h"), 7), "flotilla-0");
        assert_eq!(identity(Some(" "), Some("h"), 7), "h_7");
        assert_eq!(identity(None, None, 7), "unknown_7");
    }
}
