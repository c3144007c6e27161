//! The loop: poll Git, load the commit, run a pass over the fleet, write the notes; with bounded
//! per-cluster concurrency, per-cluster backoff, and a graceful stop on SIGTERM. This is the only
//! place that wires adapters (git, cluster) to the pure modules.

mod drift;
mod labels;
pub mod lease;
mod pass;
mod refs;
mod releases;
mod review;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::cluster::{self, ClusterError, Target};
use crate::config::{self, Cluster, ConfigRepo, KubeconfigRef};
use crate::git::{self, GitError, GitSource, Note};
use crate::helm::cli::{Charts, Helm, HelmError};
use crate::render::kustomize::{Kustomize, KustomizeError, Workspace};
use crate::report::{self, ClusterStatus, DriftRepair, PassReport, ProfileStatus, StateNote};
use crate::serve::{self, metrics::PollResult};

use drift::DriftWatch;
use tokio::sync::mpsc;

pub use pass::run_pass;

/// Errors that stop a command (not a pass: cluster and profile errors go into the notes).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config repository could not be read or the notes not written.
    #[error(transparent)]
    Git(#[from] GitError),
    /// `--kustomize-bin` names no executable.
    #[error(transparent)]
    Kustomize(#[from] KustomizeError),
    /// `--helm-bin` names no executable.
    #[error(transparent)]
    Helm(#[from] HelmError),
    /// Leader election cannot start (`--leader-elect` settings).
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// A sharded daemon cannot write `<ref>/shard-<i>` because the unsharded `<ref>` exists.
    #[error(
        "writing the shard's notes failed: {notes_ref} exists (written unsharded), and Git cannot hold {notes_ref}/shard-N next to it; rename or delete it (e.g. git update-ref -d {notes_ref} after keeping a copy), or pass another --notes-ref: {source}"
    )]
    ShardRefConflict {
        /// The unsharded notes ref in the way.
        notes_ref: String,
        /// The failed write.
        source: GitError,
    },
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Everything the daemon is told on the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// URL or local directory of the config repository.
    pub repo: String,
    /// Branch to follow.
    pub branch: String,
    /// Config root inside the repository (`None`: its root).
    pub path: Option<String>,
    /// Where kubeconfig files named by the inventory live.
    pub kubeconfig_dir: PathBuf,
    /// Cluster of the inventory that receives `deploymentType: Local` objects.
    pub management_cluster: Option<String>,
    /// Notes ref of the human note; the state note goes to `<ref>-state` (with shards, these
    /// are the base of the shard's refs: see [`Options::human_ref`]).
    pub notes_ref: String,
    /// Push the notes refs (default: when the repo is a remote).
    pub push_notes: Option<bool>,
    /// Poll interval of `run`.
    pub interval: Duration,
    /// How often `run` re-reads the classifiers' facts (`/version`, their resource queries)
    /// between passes: a cluster whose labels moved gets a pass at once, not at the next poll.
    pub classify_interval: Duration,
    /// Clusters handled at once.
    pub concurrency: usize,
    /// Where bare mirrors of remotes are kept.
    pub cache_dir: PathBuf,
    /// Git credentials.
    pub credentials: git::Credentials,
    /// kustomize binary for kustomizationRefs (`None`: `kustomize` on PATH, then the testbin
    /// cache; see [`Kustomize::locate`]).
    pub kustomize_bin: Option<PathBuf>,
    /// helm binary for helmCharts (`None`: `helm` on PATH, then the testbin cache; see
    /// [`Helm::locate`]).
    pub helm_bin: Option<PathBuf>,
    /// Time limit of one helm operation (also helm's own `--timeout` for hooks).
    pub helm_timeout: Duration,
    /// Where fetched charts are kept, by (repository, chart, version).
    pub chart_cache_dir: PathBuf,
    /// Watch what `ContinuousWithDriftDetection` profiles applied and repair drift (`run`;
    /// a single `sync --once` has nobody left to watch).
    pub watch_drift: bool,
    /// Glob of refs whose head commits get a plan note (`run --plan-refs 'refs/pull/*/head'`).
    pub plan_refs: Option<String>,
    /// The clusters this replica owns (`--shards`, `--shard-index`); its notes refs.
    pub shard: crate::shard::Shard,
    /// `--leader-elect`: hold this Lease in the management cluster before doing anything.
    pub lease: Option<lease::LeaseOptions>,
    /// User-Agent of this replica's Kubernetes requests (names the replica in audit logs).
    pub user_agent: Option<String>,
}

impl Options {
    /// The human notes ref this replica writes (`<notes-ref>/shard-<i>` with shards).
    pub fn human_ref(&self) -> String {
        self.shard.notes_ref(&self.notes_ref)
    }

    /// The state notes ref this replica writes (`<human_ref>-state`).
    pub fn state_ref(&self) -> String {
        self.shard.state_ref(&self.notes_ref)
    }

    /// The notes ref of pull-request plans (`--plan-refs`).
    pub fn plan_ref(&self) -> String {
        format!("{}-plan", self.notes_ref)
    }
}

/// The clusters the daemon talks to: clients and discovery caches, kept across passes.
pub struct Fleet {
    /// Options.
    pub options: Options,
    targets: tokio::sync::Mutex<HashMap<String, (KubeconfigRef, Arc<Target>)>>,
    /// Rung by watchers (live objects that templates read, ...) when the desired state may have
    /// changed without a commit: the running daemon then passes again at once.
    wake: tokio::sync::Notify,
}

impl Fleet {
    /// A fleet with no client yet (they are made on first use).
    pub fn new(options: Options) -> Self {
        Fleet {
            options,
            targets: tokio::sync::Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Asks the running daemon for a pass now (several calls before it starts make one pass).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The client of a cluster, made once and remade when its kubeconfig reference changes.
    pub async fn target(&self, cluster: &Cluster) -> Result<Arc<Target>, ClusterError> {
        let mut targets = self.targets.lock().await;
        if let Some((reference, target)) = targets.get(&cluster.name)
            && reference == &cluster.kubeconfig
        {
            return Ok(Arc::clone(target));
        }
        let client = cluster::client_as(
            cluster,
            &self.options.kubeconfig_dir,
            self.options.user_agent.as_deref(),
        )
        .await?;
        let target = Arc::new(Target::new(cluster.name.clone(), client));
        targets.insert(
            cluster.name.clone(),
            (cluster.kubeconfig.clone(), Arc::clone(&target)),
        );
        Ok(target)
    }

    /// Drops a cluster's client, so the next pass connects afresh (after errors).
    pub async fn forget(&self, cluster: &str) {
        self.targets.lock().await.remove(cluster);
    }

    /// The management cluster: `--management-cluster NAME` from the inventory, else the
    /// cluster the daemon runs in, else none.
    pub async fn management(&self, repo: &ConfigRepo) -> Option<Arc<Target>> {
        if let Some(name) = &self.options.management_cluster {
            let Some(cluster) = repo.clusters.get(name) else {
                warn!(cluster = %name, "--management-cluster is not in clusters/");
                return None;
            };
            return match self.target(cluster).await {
                Ok(t) => Some(t),
                Err(e) => {
                    warn!(error = %e, "management cluster unreachable");
                    None
                }
            };
        }
        // Only inside a pod: elsewhere there is no management cluster by default.
        std::env::var_os("KUBERNETES_SERVICE_HOST")?;
        let in_cluster = Cluster {
            name: "in-cluster".into(),
            origin: config::Origin {
                file: String::new(),
                line: 0,
            },
            labels: BTreeMap::new(),
            kubeconfig: KubeconfigRef {
                in_cluster: true,
                ..KubeconfigRef::default()
            },
            paused: false,
            document: serde_json::Value::Null,
        };
        self.target(&in_cluster).await.ok()
    }
}

/// Whether two state notes of a commit say the same: a profile the earlier pass wrote
/// (`applied`) and a later pass found untouched (`inSync`) is one state, so a quiet retry pass
/// does not overwrite the note that says what the commit changed with "nothing changed".
fn same_state(last: &StateNote, new: &StateNote) -> bool {
    fn settled(state: &StateNote) -> StateNote {
        let mut state = state.clone();
        for cluster in state.clusters.values_mut() {
            for profile in cluster.profiles.values_mut() {
                if profile.status == ProfileStatus::Applied {
                    profile.status = ProfileStatus::InSync;
                }
            }
        }
        state
    }
    last == new || settled(last) == settled(new)
}

/// What one commit turned into.
pub struct Synced {
    /// The pass (or the invalid-commit report).
    pub report: PassReport,
    /// The human note that was written.
    pub note: String,
}

/// Per-cluster exponential backoff after a cluster was unreachable.
#[derive(Debug, Default)]
struct Backoff {
    /// Failures in a row, when to try again, and the last error (shown while skipped).
    failures: BTreeMap<String, (u32, tokio::time::Instant, String)>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(300);

    /// Clusters to skip now, with the reason shown in the note.
    fn skipped(&self, now: tokio::time::Instant) -> BTreeMap<String, String> {
        self.failures
            .iter()
            .filter(|(_, (_, until, _))| *until > now)
            .map(|(name, (n, _, error))| {
                // No countdown in the text: the note is rewritten only when the state changes.
                (
                    name.clone(),
                    format!("unreachable {n} times in a row; retrying with backoff: {error}"),
                )
            })
            .collect()
    }

    fn record(
        &mut self,
        report: &PassReport,
        skipped: &BTreeMap<String, String>,
        now: tokio::time::Instant,
    ) {
        for cluster in &report.clusters {
            if skipped.contains_key(&cluster.name) {
                continue;
            }
            if cluster.status == ClusterStatus::Unreachable {
                let n = self.failures.get(&cluster.name).map_or(0, |(n, _, _)| *n) + 1;
                let delay = Self::FIRST
                    .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
                    .min(Self::MAX);
                let error = cluster.error.clone().unwrap_or_else(|| "no answer".into());
                self.failures
                    .insert(cluster.name.clone(), (n, now + delay, error));
            } else {
                self.failures.remove(&cluster.name);
            }
        }
    }
}

/// The daemon: the git source, the fleet, and what it remembers between passes.
pub struct Daemon {
    fleet: Arc<Fleet>,
    git: Arc<Mutex<GitSource>>,
    /// The last valid commit and its config: the desired state.
    last_valid: Option<(String, String, Arc<ConfigRepo>)>,
    /// The last commit seen on the branch.
    last_seen: Option<String>,
    /// The state note written last (to skip rewriting an identical one).
    last_state: Option<StateNote>,
    /// Effective labels the last pass used, per cluster it reached (the classify timer
    /// compares against these).
    pass_labels: BTreeMap<String, BTreeMap<String, String>>,
    backoff: Backoff,
    /// The kustomize binary, or why there is none (reported by each kustomizationRef).
    kustomize_tool: Result<Kustomize, KustomizeError>,
    /// The commit whose snapshot kustomize builds from, written to disk once and reused by
    /// retry passes of that commit.
    kustomize: Option<(String, Arc<Workspace>)>,
    /// The helm binary and the chart cache, kept across commits.
    charts: Arc<Charts>,
    /// Drift watches (`run` only) and where their repairs arrive.
    drift: Option<(DriftWatch, mpsc::Receiver<DriftRepair>)>,
    /// Drift repaired while the last valid commit was applied (for its notes).
    repairs: Vec<DriftRepair>,
    /// The last pass's report, to rewrite its note when a drift repair arrives.
    last_report: Option<PassReport>,
    /// Heads of `--plan-refs` refs that have a plan note (those still matching).
    planned: std::collections::BTreeSet<String>,
    /// Watchers of the objects templateResourceRefs read (only under `run`).
    refs: Option<refs::RefWatchers>,
    /// Metrics, readiness and the webhook's poll requests of the HTTP listener (`run` with
    /// `--http-addr`).
    http: Option<Arc<serve::Shared>>,
}

impl Daemon {
    /// Opens the repository (no network yet).
    pub fn new(options: Options) -> Result<Self, DaemonError> {
        // A wrong --kustomize-bin stops the daemon; no binary by default is reported per ref.
        let kustomize_tool = match Kustomize::locate(options.kustomize_bin.as_deref()) {
            Ok(tool) => {
                info!(bin = %tool.bin().display(), "kustomize binary");
                Ok(tool)
            }
            Err(e) if options.kustomize_bin.is_some() => return Err(e.into()),
            Err(e) => Err(e),
        };
        // The same for helm.
        let helm_tool = match Helm::locate(options.helm_bin.as_deref(), options.helm_timeout) {
            Ok(tool) => {
                info!(bin = %tool.bin().display(), "helm binary");
                Ok(tool)
            }
            Err(e) if options.helm_bin.is_some() => return Err(e.into()),
            Err(e) => Err(e),
        };
        let charts = Arc::new(Charts::new(options.chart_cache_dir.clone(), helm_tool));
        let source = GitSource::open(
            &options.repo,
            &options.branch,
            options.credentials.clone(),
            &options.cache_dir,
        )?;
        Ok(Daemon {
            fleet: Arc::new(Fleet::new(options)),
            git: Arc::new(Mutex::new(source)),
            last_valid: None,
            last_seen: None,
            last_state: None,
            pass_labels: BTreeMap::new(),
            backoff: Backoff::default(),
            kustomize_tool,
            kustomize: None,
            charts,
            drift: None,
            repairs: Vec::new(),
            last_report: None,
            planned: Default::default(),
            refs: None,
            http: None,
        })
    }

    /// Reports passes, polls and drift repairs to the HTTP listener, and polls when it asks.
    pub fn with_http(mut self, shared: Arc<serve::Shared>) -> Self {
        self.http = Some(shared);
        self
    }

    fn options(&self) -> &Options {
        &self.fleet.options
    }

    /// Runs `f` on the git source in a blocking thread.
    async fn with_git<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut GitSource) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, DaemonError> {
        let git = Arc::clone(&self.git);
        tokio::task::spawn_blocking(move || {
            let mut source = git
                .lock()
                .map_err(|_| DaemonError::Task("git source lock poisoned".into()))?;
            f(&mut source).map_err(DaemonError::from)
        })
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?
    }

    /// `flotilla sync --once`: poll, sync the branch's commit, write the notes.
    pub async fn sync_once(&mut self) -> Result<Synced, DaemonError> {
        let poll = self.with_git(|g| g.poll()).await?;
        self.sync_commit(&poll.commit, true).await
    }

    /// Loads `commit` and, when valid, runs a pass; writes the notes (always when `force`, else
    /// only when the state differs from the last note written).
    async fn sync_commit(&mut self, commit: &str, force: bool) -> Result<Synced, DaemonError> {
        let subdir = self.options().path.clone();
        let c = commit.to_string();
        let (tree, subject) = self
            .with_git(move |g| Ok((g.snapshot(&c, subdir.as_deref())?, g.commit_summary(&c)?)))
            .await?;
        self.last_seen = Some(commit.to_string());
        let report = match config::load(tree) {
            Ok(repo) => {
                let repo = Arc::new(repo);
                self.last_valid = Some((commit.to_string(), subject.clone(), Arc::clone(&repo)));
                let span = info_span!("pass", commit = %commit.get(..12).unwrap_or(commit));
                self.pass(commit, &subject, &repo).instrument(span).await
            }
            Err(diagnostics) => {
                let desired = match &self.last_valid {
                    Some((c, _, _)) => Some(c.clone()),
                    None => self.last_valid_in_history(commit).await,
                };
                warn!(
                    commit,
                    errors = diagnostics.0.len(),
                    "invalid commit: nothing applied, nothing pruned"
                );
                PassReport {
                    commit: commit.to_string(),
                    subject,
                    validation_errors: diagnostics
                        .0
                        .iter()
                        .map(|d| format!("{}:{}: {}", d.file, d.line, d.message))
                        .collect(),
                    desired_commit: desired,
                    clusters: vec![],
                    drift: vec![],
                }
            }
        };
        let note = self.write_notes(&report, force).await?;
        Ok(Synced { report, note })
    }

    async fn pass(&mut self, commit: &str, subject: &str, repo: &ConfigRepo) -> PassReport {
        let now = tokio::time::Instant::now();
        let report = self.pass_inner(commit, subject, repo, now).await;
        if let Some(http) = &self.http {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            http.passed(&report, now.elapsed(), unix);
        }
        report
    }

    /// The pass itself (`pass` times it and reports it to the HTTP listener).
    async fn pass_inner(
        &mut self,
        commit: &str,
        subject: &str,
        repo: &ConfigRepo,
        now: tokio::time::Instant,
    ) -> PassReport {
        let skipped = self.backoff.skipped(now);
        let workspace = match &self.kustomize {
            Some((c, w)) if c == commit => Arc::clone(w),
            _ => {
                // The previous commit's directory is removed when its workspace drops.
                let w = Arc::new(Workspace::new(self.kustomize_tool.clone()));
                self.kustomize = Some((commit.to_string(), Arc::clone(&w)));
                w
            }
        };
        workspace.retry_failed();
        self.charts.retry_failed();
        // No drift repair while a pass changes what is desired.
        let gate = self.drift.as_ref().map(|(d, _)| Arc::clone(&d.gate));
        let _pass = match &gate {
            Some(gate) => Some(gate.write().await),
            None => None,
        };
        let reads = crate::cluster::objects::ReadCache::new();
        let (mut report, watched) = run_pass(
            &self.fleet,
            commit,
            subject,
            repo,
            &skipped,
            &workspace,
            &self.charts,
            &reads,
        )
        .await;
        if let Some((drift, _)) = &mut self.drift {
            drift.update(watched);
            info!(watches = drift.watches(), "drift watches");
        }
        if self.last_report.as_ref().is_none_or(|r| r.commit != commit) {
            self.repairs.clear();
        }
        report.drift = self.repairs.clone();
        self.last_report = Some(report.clone());
        if let Some(watchers) = &mut self.refs {
            watchers.update(reads.observed(), &self.fleet);
        }
        for cluster in &report.clusters {
            if cluster.status == ClusterStatus::Unreachable && !skipped.contains_key(&cluster.name)
            {
                // Reconnect next time: the address or credentials may have changed.
                self.fleet.forget(&cluster.name).await;
            }
        }
        self.backoff.record(&report, &skipped, now);
        self.pass_labels = report
            .clusters
            .iter()
            .filter(|c| matches!(c.status, ClusterStatus::Synced | ClusterStatus::Degraded))
            .map(|c| (c.name.clone(), c.labels.clone()))
            .collect();
        report
    }

    /// Walks first parents back from `commit` to the nearest commit whose state note says it
    /// was valid (for `sync --once` after an invalid commit, when memory has none).
    async fn last_valid_in_history(&self, commit: &str) -> Option<String> {
        let state_ref = self.options().state_ref();
        let start = commit.to_string();
        self.with_git(move |g| {
            let mut current = start;
            for _ in 0..200 {
                let Ok(parent) = g.resolve(&format!("{current}^")) else {
                    return Ok(None);
                };
                if let Some(text) = g.read_note(&state_ref, &parent)?
                    && StateNote::parse(&text).is_ok_and(|s| s.valid)
                {
                    return Ok(Some(parent));
                }
                current = parent;
            }
            Ok(None)
        })
        .await
        .ok()
        .flatten()
    }

    async fn write_notes(
        &mut self,
        report: &PassReport,
        force: bool,
    ) -> Result<String, DaemonError> {
        let state = report::state_note(report);
        let note = report::human_note(report);
        // A failed write changed nothing: the same failure again is no news (the state
        // comparison below still catches a different error).
        let wrote_anything = report.counts().iter().any(|(a, n)| {
            *n > 0
                && !matches!(
                    a,
                    report::Action::Unchanged | report::Action::Skipped | report::Action::Failed
                )
        });
        if !force
            && !wrote_anything
            && self
                .last_state
                .as_ref()
                .is_some_and(|last| same_state(last, &state))
        {
            return Ok(note);
        }
        let notes = vec![
            Note {
                notes_ref: self.options().human_ref(),
                commit: report.commit.clone(),
                text: note.clone(),
            },
            Note {
                notes_ref: self.options().state_ref(),
                commit: report.commit.clone(),
                text: state.to_text(),
            },
        ];
        let push = self.options().push_notes;
        let result = self
            .with_git(move |g| {
                let push = push.unwrap_or_else(|| g.is_remote());
                g.publish_notes(&notes, push)
            })
            .await;
        match result {
            Ok(_) => {
                info!(commit = %report.commit, "notes written");
                self.last_state = Some(state);
                Ok(note)
            }
            Err(DaemonError::Git(e)) if self.options().shard.sharded() => {
                let base = self.options().notes_ref.clone();
                let check = base.clone();
                let exists = self
                    .with_git(move |g| g.has_notes_ref(&check))
                    .await
                    .unwrap_or(false);
                let e = if exists {
                    DaemonError::ShardRefConflict {
                        notes_ref: base,
                        source: e,
                    }
                } else {
                    DaemonError::Git(e)
                };
                error!(error = %e, "writing notes failed");
                Err(e)
            }
            Err(e) => {
                error!(error = %e, "writing notes failed");
                Err(e)
            }
        }
    }

    /// `flotilla run`: poll every interval (or when a local repository's refs change), sync
    /// new commits, re-run the last valid commit for retries; stop cleanly when `shutdown`
    /// turns true (the pass in flight and its notes finish first).
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
        // --leader-elect: wait as a candidate; nothing below runs before we hold the Lease.
        let leadership = match self.options().lease.clone() {
            Some(options) => {
                if let Some(http) = &self.http {
                    http.set_standby(true);
                }
                let lead = self.lead(options, &mut shutdown).await;
                if let Some(http) = &self.http {
                    http.set_standby(false);
                }
                match lead? {
                    Some(leadership) => Some(leadership),
                    None => return Ok(()),
                }
            }
            None => None,
        };
        let watcher = self.with_git(|g| g.watch()).await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot watch the repository's refs; polling only");
            None
        });
        let interval = self.options().interval;
        if self.options().watch_drift {
            let (tx, rx) = mpsc::channel(256);
            self.drift = Some((DriftWatch::new(tx), rx));
        }
        let classify_every = self.options().classify_interval;
        let mut classify_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + classify_every, classify_every);
        classify_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A changed templateResourceRef object wakes the loop below (see refs.rs).
        self.refs.get_or_insert_with(refs::RefWatchers::default);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let polled = self.with_git(|g| g.poll()).await;
            if let Some(http) = &self.http {
                http.metrics.record_poll(match &polled {
                    Ok(poll) if self.last_seen.as_deref() == Some(poll.commit.as_str()) => {
                        PollResult::Unchanged
                    }
                    Ok(_) => PollResult::NewCommit,
                    Err(_) => PollResult::Error,
                });
            }
            match polled {
                Ok(poll) => {
                    let new = self.last_seen.as_deref() != Some(poll.commit.as_str());
                    let result = if new {
                        self.sync_commit(&poll.commit, true).await.map(|_| ())
                    } else {
                        self.resync().await
                    };
                    if let Err(e) = result {
                        error!(error = %e, "sync failed; retrying next interval");
                    }
                }
                Err(e) => error!(error = %e, "poll failed; retrying next interval"),
            }
            if let Err(e) = self.review_refs().await {
                error!(error = %e, "planning review refs failed; retrying next interval");
            }
            if *shutdown.borrow() {
                break;
            }
            // Wait for the next poll: the deadline holds across classify ticks, and drift
            // repairs arriving meanwhile are noted without a poll.
            let next_poll = tokio::time::Instant::now() + interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next_poll) => break,
                    _ = async {
                        match &watcher {
                            Some(w) => w.changed().await,
                            None => std::future::pending().await,
                        }
                    } => break,
                    _ = self.fleet.wake.notified() => break,
                    // A verified webhook: poll now (the loop polls first thing).
                    _ = async {
                        match &self.http {
                            Some(http) => http.poll_requested().await,
                            None => std::future::pending().await,
                        }
                    } => break,
                    _ = shutdown.changed() => break,
                    _ = classify_timer.tick() => {
                        if let Err(e) = self.reclassify().await {
                            error!(error = %e, "sync failed; retrying next interval");
                        }
                    }
                    repair = async {
                        match &mut self.drift {
                            Some((_, rx)) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if let Some(repair) = repair {
                            self.noted_repairs(repair).await;
                        }
                    }
                }
            }
        }
        if let Some(leadership) = leadership {
            leadership.release().await;
        }
        info!("stopped");
        Ok(())
    }

    /// Adds drift repairs (this one and any already waiting) to the note of the commit the last
    /// pass applied, and rewrites that note.
    async fn noted_repairs(&mut self, first: DriftRepair) {
        let mut arrived = vec![first];
        if let Some((_, rx)) = &mut self.drift {
            while let Ok(more) = rx.try_recv() {
                arrived.push(more);
            }
        }
        if let Some(http) = &self.http {
            http.metrics.record_repairs(&arrived);
        }
        let Some(mut report) = self.last_report.take() else {
            return;
        };
        self.repairs.extend(arrived);
        let excess = self.repairs.len().saturating_sub(report::DRIFT_KEPT);
        self.repairs.drain(..excess);
        report.drift = self.repairs.clone();
        if let Err(e) = self.write_notes(&report, false).await {
            error!(error = %e, "writing the drift repair to the notes failed");
        }
        self.last_report = Some(report);
    }

    /// The classify timer: re-evaluates the classifiers of every cluster the last pass reached
    /// (reads only) and passes at once when a cluster's effective labels moved; else does
    /// nothing, writes nothing.
    async fn reclassify(&mut self) -> Result<(), DaemonError> {
        let Some((_, _, repo)) = &self.last_valid else {
            return Ok(());
        };
        let changed = labels::changed(&self.fleet, repo, &self.pass_labels).await;
        if changed.is_empty() {
            return Ok(());
        }
        info!(clusters = ?changed, "classifier labels changed: passing now");
        self.resync().await
    }

    /// A pass of the desired state without a new commit: retries failed clusters and pairs,
    /// writes notes only when something changed.
    async fn resync(&mut self) -> Result<(), DaemonError> {
        let Some((commit, subject, repo)) = self.last_valid.clone() else {
            return Ok(());
        };
        let report = self.pass(&commit, &subject, &repo).await;
        self.write_notes(&report, false).await?;
        Ok(())
    }
}
