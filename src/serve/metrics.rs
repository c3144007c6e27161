//! The Prometheus metrics of `flotilla run`. What a pass adds is computed from its
//! [`PassReport`] alone ([`pass_metrics`], pure); [`Metrics`] holds the registry and applies
//! those updates, and encodes the text exposition `/metrics` serves.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::drift::RepairResult;
use crate::helm::RELEASE_PREFIX;
use crate::report::{Action, ClusterStatus, DriftRepair, Failure, PassReport, ProfileStatus};

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The object actions that are counted (unchanged, skipped and failed objects are not writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectAction {
    /// Created.
    Created,
    /// Updated.
    Updated,
    /// Pruned or withdrawn (deleted).
    Pruned,
}

impl ObjectAction {
    fn label(self) -> &'static str {
        match self {
            ObjectAction::Created => "created",
            ObjectAction::Updated => "updated",
            ObjectAction::Pruned => "pruned",
        }
    }
}

/// Why a (cluster, profile) or a cluster did not sync, one count per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The cluster was not reached (or is in backoff after not being reached).
    Unreachable,
    /// A profile failed to render.
    Render,
    /// A profile's Helm release failed.
    Helm,
    /// Applying, pruning or withdrawing a profile's objects failed.
    Apply,
    /// A profile lost a conflict and was not applied.
    Conflict,
    /// A profile waited for a dependency that did not succeed.
    Dependency,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Render => "render",
            ErrorKind::Helm => "helm",
            ErrorKind::Apply => "apply",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Dependency => "dependency",
        }
    }
}

/// A helm operation as flotilla runs it: `upgrade --install` or `uninstall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HelmOperation {
    /// `helm upgrade --install` (a new release, an upgrade, a downgrade, new values).
    Upgrade,
    /// `helm uninstall`.
    Uninstall,
}

impl HelmOperation {
    fn label(self) -> &'static str {
        match self {
            HelmOperation::Upgrade => "upgrade",
            HelmOperation::Uninstall => "uninstall",
        }
    }
}

/// What a git poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    /// The branch is where it was.
    Unchanged,
    /// The branch moved (or the first poll).
    NewCommit,
    /// The remote could not be read.
    Error,
}

impl PollResult {
    fn label(self) -> &'static str {
        match self {
            PollResult::Unchanged => "unchanged",
            PollResult::NewCommit => "new_commit",
            PollResult::Error => "error",
        }
    }
}

/// What one pass adds to the metrics, read from its report alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassMetrics {
    /// Objects written, by (cluster, profile, action); DryRun profiles write nothing.
    pub objects: BTreeMap<(String, String, ObjectAction), u64>,
    /// Errors by (cluster, kind): one per failed (cluster, profile), one per unreachable cluster.
    pub errors: BTreeMap<(String, ErrorKind), u64>,
    /// helm operations by (operation, succeeded).
    pub helm: BTreeMap<(HelmOperation, bool), u64>,
    /// Clusters the pass left in sync (status `synced`): their last successful sync is now and
    /// their applied commit the pass's.
    pub synced: Vec<String>,
}

/// The updates of one pass: objects written (helm releases apart), errors by kind, helm
/// operations, and the clusters it synced.
pub fn pass_metrics(report: &PassReport) -> PassMetrics {
    let mut out = PassMetrics::default();
    for cluster in &report.clusters {
        match cluster.status {
            ClusterStatus::Unreachable => {
                *out.errors
                    .entry((cluster.name.clone(), ErrorKind::Unreachable))
                    .or_insert(0) += 1;
            }
            ClusterStatus::Synced => out.synced.push(cluster.name.clone()),
            ClusterStatus::Degraded | ClusterStatus::Paused => {}
        }
        for profile in &cluster.profiles {
            let kind = match (profile.status, profile.failure) {
                (ProfileStatus::Conflict, _) => Some(ErrorKind::Conflict),
                (ProfileStatus::WaitingForDependency, _) => Some(ErrorKind::Dependency),
                (_, Some(Failure::Render)) => Some(ErrorKind::Render),
                (_, Some(Failure::Helm)) => Some(ErrorKind::Helm),
                (_, Some(Failure::Apply)) => Some(ErrorKind::Apply),
                // A failure without a recorded step (none today) still counts.
                (ProfileStatus::Failed, None) => Some(ErrorKind::Apply),
                _ => None,
            };
            if let Some(kind) = kind {
                *out.errors.entry((cluster.name.clone(), kind)).or_insert(0) += 1;
            }
            if profile.status == ProfileStatus::DryRun {
                continue;
            }
            for change in &profile.changes {
                if change.key.starts_with(RELEASE_PREFIX) {
                    if let Some(op) = helm_operation(change.action, change.detail.as_deref()) {
                        *out.helm.entry(op).or_insert(0) += 1;
                    }
                    continue;
                }
                let action = match change.action {
                    Action::Created => ObjectAction::Created,
                    Action::Updated => ObjectAction::Updated,
                    Action::Pruned => ObjectAction::Pruned,
                    _ => continue,
                };
                *out.objects
                    .entry((cluster.name.clone(), profile.profile.clone(), action))
                    .or_insert(0) += 1;
            }
        }
    }
    out
}

/// The helm operation behind a release's change, and whether it succeeded; `None` when helm
/// did nothing (unchanged, released, left alone).
fn helm_operation(action: Action, detail: Option<&str>) -> Option<(HelmOperation, bool)> {
    match action {
        Action::Created | Action::Updated => Some((HelmOperation::Upgrade, true)),
        Action::Pruned => Some((HelmOperation::Uninstall, true)),
        // releases.rs words a failed uninstall "uninstall failed (...)", anything else
        // "failed (...)" (a chart fetch or an upgrade --install).
        Action::Failed if detail.is_some_and(|d| d.starts_with("uninstall")) => {
            Some((HelmOperation::Uninstall, false))
        }
        Action::Failed => Some((HelmOperation::Upgrade, false)),
        Action::Unchanged | Action::Released | Action::Skipped => None,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    cluster: String,
    profile: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    cluster: String,
    profile: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    cluster: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommitLabels {
    cluster: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HelmLabels {
    operation: &'static str,
    result: &'static str,
}

/// The registry and its metrics, shared by the daemon loop (writer) and `/metrics` (reader).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pass_duration: Histogram,
    objects: Family<ObjectLabels, Counter>,
    drift: Family<DriftLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    last_sync: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    applied: Family<CommitLabels, Gauge>,
    /// The commit each cluster's `applied_commit_info` series carries now (to remove it when
    /// the commit changes).
    applied_now: Mutex<BTreeMap<String, String>>,
    polls: Family<ResultLabels, Counter>,
    helm: Family<HelmLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered under its `flotilla_` name.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 50 ms … ~27 min: a no-op pass over a few clusters up to a large first install.
        let pass_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let objects = Family::<ObjectLabels, Counter>::default();
        let drift = Family::<DriftLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let last_sync = Family::<ClusterLabels, Gauge<f64, AtomicU64>>::default();
        let applied = Family::<CommitLabels, Gauge>::default();
        let polls = Family::<ResultLabels, Counter>::default();
        let helm = Family::<HelmLabels, Counter>::default();
        registry.register_with_unit(
            "flotilla_pass_duration",
            "Duration of a sync pass over the fleet",
            Unit::Seconds,
            pass_duration.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "flotilla_objects",
            "Objects written by passes, by cluster, profile and action (created, updated, pruned)",
            objects.clone(),
        );
        registry.register(
            "flotilla_drift_repairs",
            "Drift seen and repaired, by cluster, profile and result (repaired, dry_run_failed, failed)",
            drift.clone(),
        );
        registry.register(
            "flotilla_errors",
            "Failures per pass, by cluster and kind (unreachable, render, helm, apply, conflict, dependency)",
            errors.clone(),
        );
        registry.register(
            "flotilla_last_successful_sync_timestamp_seconds",
            "Unix time of the end of the last pass that left the cluster in sync",
            last_sync.clone(),
        );
        registry.register(
            "flotilla_applied_commit_info",
            "The commit last applied in full to the cluster (value 1)",
            applied.clone(),
        );
        registry.register(
            "flotilla_git_polls",
            "Polls of the config repository, by result (unchanged, new_commit, error)",
            polls.clone(),
        );
        registry.register(
            "flotilla_helm_operations",
            "helm upgrade --install and uninstall runs, by operation and result (success, failure)",
            helm.clone(),
        );
        Metrics {
            registry,
            pass_duration,
            objects,
            drift,
            errors,
            last_sync,
            applied,
            applied_now: Mutex::new(BTreeMap::new()),
            polls,
            helm,
        }
    }

    /// Records a finished pass: its duration, and [`pass_metrics`] of its report at `now`
    /// (unix seconds).
    pub fn record_pass(&self, report: &PassReport, duration: Duration, now: f64) {
        self.pass_duration.observe(duration.as_secs_f64());
        let updates = pass_metrics(report);
        for ((cluster, profile, action), n) in updates.objects {
            self.objects
                .get_or_create(&ObjectLabels {
                    cluster,
                    profile,
                    action: action.label(),
                })
                .inc_by(n);
        }
        for ((cluster, kind), n) in updates.errors {
            self.errors
                .get_or_create(&ErrorLabels {
                    cluster,
                    kind: kind.label(),
                })
                .inc_by(n);
        }
        for ((operation, ok), n) in updates.helm {
            self.helm
                .get_or_create(&HelmLabels {
                    operation: operation.label(),
                    result: if ok { "success" } else { "failure" },
                })
                .inc_by(n);
        }
        let mut applied_now = match self.applied_now.lock() {
            Ok(guard) => guard,
            // A panic elsewhere while holding it left a map that is still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        for cluster in updates.synced {
            self.last_sync
                .get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(now);
            if let Some(old) = applied_now.insert(cluster.clone(), report.commit.clone())
                && old != report.commit
            {
                self.applied.remove(&CommitLabels {
                    cluster: cluster.clone(),
                    commit: old,
                });
            }
            self.applied
                .get_or_create(&CommitLabels {
                    cluster,
                    commit: report.commit.clone(),
                })
                .set(1);
        }
    }

    /// Records drift repairs as they arrive (not from the pass report, which repeats them).
    pub fn record_repairs(&self, repairs: &[DriftRepair]) {
        for repair in repairs {
            let result = match repair.result {
                RepairResult::Repaired => "repaired",
                RepairResult::DryRunFailed(_) => "dry_run_failed",
                RepairResult::Failed(_) => "failed",
            };
            self.drift
                .get_or_create(&DriftLabels {
                    cluster: repair.cluster.clone(),
                    profile: repair.profile.clone(),
                    result,
                })
                .inc();
        }
    }

    /// Records a poll of the config repository.
    pub fn record_poll(&self, result: PollResult) {
        self.polls
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics, ending in `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an error would leave a partial text, still served.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftKind;
    use crate::report::{ClusterReport, ObjectChange, ProfileReport};

    fn change(key: &str, action: Action, detail: Option<&str>) -> ObjectChange {
        ObjectChange {
            key: key.into(),
            action,
            diff: None,
            detail: detail.map(str::to_string),
        }
    }

    fn profile(
        name: &str,
        status: ProfileStatus,
        failure: Option<Failure>,
        changes: Vec<ObjectChange>,
    ) -> ProfileReport {
        ProfileReport {
            profile: name.into(),
            sync_mode: None,
            status,
            applied_commit: None,
            changes,
            conflicts: vec![],
            errors: vec![],
            remarks: vec![],
            hashes: BTreeMap::new(),
            failure,
        }
    }

    fn cluster(name: &str, status: ClusterStatus, profiles: Vec<ProfileReport>) -> ClusterReport {
        ClusterReport {
            name: name.into(),
            labels: BTreeMap::new(),
            label_sources: BTreeMap::new(),
            label_conflicts: vec![],
            status,
            error: None,
            profiles,
        }
    }

    fn report(commit: &str, clusters: Vec<ClusterReport>) -> PassReport {
        PassReport {
            commit: commit.into(),
            subject: "s".into(),
            validation_errors: vec![],
            desired_commit: None,
            clusters,
            drift: vec![],
        }
    }

    fn key(c: &str, p: &str, a: ObjectAction) -> (String, String, ObjectAction) {
        (c.into(), p.into(), a)
    }

    #[test]
    fn pass_metrics_from_reports() {
        use Action::*;
        use ObjectAction as O;
        let cases: Vec<(&str, PassReport, PassMetrics)> = vec![
            ("empty pass", report("c1", vec![]), PassMetrics::default()),
            (
                "writes counted per cluster and profile; unchanged, skipped, failed are not",
                report(
                    "c1",
                    vec![cluster(
                        "one",
                        ClusterStatus::Synced,
                        vec![profile(
                            "web",
                            ProfileStatus::Applied,
                            None,
                            vec![
                                change("ConfigMap/a/x", Created, None),
                                change("ConfigMap/a/y", Created, None),
                                change("management:ConfigMap/a/z", Updated, None),
                                change("ConfigMap/a/old", Pruned, None),
                                change("ConfigMap/a/same", Unchanged, None),
                                change("ConfigMap/a/theirs", Skipped, None),
                            ],
                        )],
                    )],
                ),
                PassMetrics {
                    objects: [
                        (key("one", "web", O::Created), 2),
                        (key("one", "web", O::Updated), 1),
                        (key("one", "web", O::Pruned), 1),
                    ]
                    .into(),
                    synced: vec!["one".into()],
                    ..PassMetrics::default()
                },
            ),
            (
                "dry run writes nothing",
                report(
                    "c1",
                    vec![cluster(
                        "one",
                        ClusterStatus::Synced,
                        vec![profile(
                            "web",
                            ProfileStatus::DryRun,
                            None,
                            vec![change("ConfigMap/a/x", Created, None)],
                        )],
                    )],
                ),
                PassMetrics {
                    synced: vec!["one".into()],
                    ..PassMetrics::default()
                },
            ),
            (
                "errors by kind; a degraded cluster is not synced",
                report(
                    "c1",
                    vec![
                        cluster(
                            "one",
                            ClusterStatus::Degraded,
                            vec![
                                profile("a", ProfileStatus::Failed, Some(Failure::Render), vec![]),
                                profile(
                                    "b",
                                    ProfileStatus::Failed,
                                    Some(Failure::Apply),
                                    vec![change("ConfigMap/a/x", Failed, None)],
                                ),
                                profile("c", ProfileStatus::Failed, Some(Failure::Apply), vec![]),
                                profile("d", ProfileStatus::Conflict, None, vec![]),
                                profile("e", ProfileStatus::WaitingForDependency, None, vec![]),
                                profile("f", ProfileStatus::Pending, None, vec![]),
                                profile(
                                    "g",
                                    ProfileStatus::Failed,
                                    Some(Failure::Helm),
                                    vec![change(
                                        "helm:apps/demo",
                                        Failed,
                                        Some("failed (demo 1.0.0)"),
                                    )],
                                ),
                            ],
                        ),
                        cluster("two", ClusterStatus::Unreachable, vec![]),
                        cluster("three", ClusterStatus::Paused, vec![]),
                    ],
                ),
                PassMetrics {
                    errors: [
                        (("one".into(), ErrorKind::Render), 1),
                        (("one".into(), ErrorKind::Apply), 2),
                        (("one".into(), ErrorKind::Conflict), 1),
                        (("one".into(), ErrorKind::Dependency), 1),
                        (("one".into(), ErrorKind::Helm), 1),
                        (("two".into(), ErrorKind::Unreachable), 1),
                    ]
                    .into(),
                    helm: [((HelmOperation::Upgrade, false), 1)].into(),
                    ..PassMetrics::default()
                },
            ),
            (
                "helm releases are helm operations, not objects",
                report(
                    "c1",
                    vec![cluster(
                        "one",
                        ClusterStatus::Synced,
                        vec![
                            profile(
                                "a",
                                ProfileStatus::Applied,
                                None,
                                vec![
                                    change("helm:apps/x", Created, Some("installed demo 1.0.0")),
                                    change(
                                        "helm:apps/y",
                                        Updated,
                                        Some("upgraded demo 1.0.0 → 1.1.0"),
                                    ),
                                    change(
                                        "helm:apps/z",
                                        Unchanged,
                                        Some("unchanged (demo 1.0.0)"),
                                    ),
                                    change("ConfigMap/apps/cm", Created, None),
                                ],
                            ),
                            profile(
                                "b",
                                ProfileStatus::Withdrawn,
                                None,
                                vec![
                                    change(
                                        "helm:apps/old",
                                        Pruned,
                                        Some("uninstalled (demo 1.0.0)"),
                                    ),
                                    change(
                                        "helm:apps/bad",
                                        Failed,
                                        Some("uninstall failed (demo 1.0.0)"),
                                    ),
                                    change("helm:apps/kept", Released, None),
                                ],
                            ),
                        ],
                    )],
                ),
                PassMetrics {
                    objects: [(key("one", "a", O::Created), 1)].into(),
                    helm: [
                        ((HelmOperation::Upgrade, true), 2),
                        ((HelmOperation::Uninstall, true), 1),
                        ((HelmOperation::Uninstall, false), 1),
                    ]
                    .into(),
                    synced: vec!["one".into()],
                    ..PassMetrics::default()
                },
            ),
        ];
        for (name, report, want) in cases {
            assert_eq!(pass_metrics(&report), want, "{name}");
        }
    }

    /// The exposition lines of `text` that start with `prefix`.
    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn record_pass_moves_counters_and_replaces_the_commit_series() {
        let metrics = Metrics::new();
        let first = report(
            "c1",
            vec![cluster(
                "one",
                ClusterStatus::Synced,
                vec![profile(
                    "web",
                    ProfileStatus::Applied,
                    None,
                    vec![change("ConfigMap/a/x", Action::Created, None)],
                )],
            )],
        );
        metrics.record_pass(&first, Duration::from_millis(300), 1000.0);
        metrics.record_pass(&first, Duration::from_millis(100), 1010.0);
        let text = metrics.encode();
        assert_eq!(
            lines(&text, "flotilla_objects_total"),
            ["flotilla_objects_total{cluster=\"one\",profile=\"web\",action=\"created\"} 2"],
            "{text}"
        );
        assert_eq!(
            lines(&text, "flotilla_pass_duration_seconds_count"),
            ["flotilla_pass_duration_seconds_count 2"]
        );
        assert_eq!(
            lines(&text, "flotilla_last_successful_sync_timestamp_seconds{"),
            ["flotilla_last_successful_sync_timestamp_seconds{cluster=\"one\"} 1010.0"]
        );
        assert_eq!(
            lines(&text, "flotilla_applied_commit_info{"),
            ["flotilla_applied_commit_info{cluster=\"one\",commit=\"c1\"} 1"]
        );
        // A new commit replaces the series; a degraded pass leaves the last one.
        metrics.record_pass(
            &report("c2", vec![cluster("one", ClusterStatus::Synced, vec![])]),
            Duration::ZERO,
            1020.0,
        );
        metrics.record_pass(
            &report("c3", vec![cluster("one", ClusterStatus::Degraded, vec![])]),
            Duration::ZERO,
            1030.0,
        );
        let text = metrics.encode();
        assert_eq!(
            lines(&text, "flotilla_applied_commit_info{"),
            ["flotilla_applied_commit_info{cluster=\"one\",commit=\"c2\"} 1"]
        );
        assert_eq!(
            lines(&text, "flotilla_last_successful_sync_timestamp_seconds{"),
            ["flotilla_last_successful_sync_timestamp_seconds{cluster=\"one\"} 1020.0"]
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn polls_and_repairs() {
        let metrics = Metrics::new();
        metrics.record_poll(PollResult::NewCommit);
        metrics.record_poll(PollResult::Unchanged);
        metrics.record_poll(PollResult::Unchanged);
        let repair = |result| DriftRepair {
            cluster: "one".into(),
            profile: "web".into(),
            key: "ConfigMap/a/x".into(),
            kind: DriftKind::Modified,
            paths: vec![],
            managers: vec![],
            result,
            diff: None,
            at: String::new(),
        };
        metrics.record_repairs(&[
            repair(RepairResult::Repaired),
            repair(RepairResult::Repaired),
            repair(RepairResult::Failed("no".into())),
        ]);
        let text = metrics.encode();
        let mut polls = lines(&text, "flotilla_git_polls_total");
        polls.sort();
        assert_eq!(
            polls,
            [
                "flotilla_git_polls_total{result=\"new_commit\"} 1",
                "flotilla_git_polls_total{result=\"unchanged\"} 2"
            ]
        );
        let mut repairs = lines(&text, "flotilla_drift_repairs_total");
        repairs.sort();
        assert_eq!(
            repairs,
            [
                "flotilla_drift_repairs_total{cluster=\"one\",profile=\"web\",result=\"failed\"} 1",
                "flotilla_drift_repairs_total{cluster=\"one\",profile=\"web\",result=\"repaired\"} 2"
            ]
        );
    }
}
