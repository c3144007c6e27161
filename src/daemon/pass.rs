//! One sync pass of a valid commit over the fleet: reach every cluster (classify, read its
//! inventories), plan, then per cluster render, resolve conflicts and apply profile by profile.
//! Clusters run concurrently (bounded); a failure in one cluster or profile never stops another.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{Instrument as _, info, info_span, warn};

use crate::classify::{ClusterFacts, LabelConflict, LabelOwner};
use crate::cluster::apply::{self, ApplyRequest, Outcome};
use crate::cluster::inventory::{self, Destination, Inventory};
use crate::cluster::objects::{self, ReadCache};
use crate::cluster::{self, Target};
use crate::config::{Cluster, ConfigRepo, DeploymentType, HelmChartAction, SyncMode};
use crate::diff::object_key;
use crate::helm::cli::{Charts, KubeAccess};
use crate::helm::{self, ReleaseEntry};
use crate::plan::{self, Claim, Conflict, Deployed, Step};
use crate::render::{self, kustomize::Workspace, sandbox::Sandbox};
use crate::report::{
    Action, ClusterReport, ClusterStatus, Failure, ObjectChange, PassReport, ProfileReport,
    ProfileStatus,
};

use super::Fleet;
use super::drift::DriftSet;
use super::releases::{self, HelmTarget, ManagementSecrets};
use crate::drift::{self, Desired};

/// Prefix of the keys of Local objects (in the management cluster) in notes and claims.
const LOCAL_PREFIX: &str = "management:";

/// What was learned about a reachable cluster before planning.
struct Reached {
    target: Arc<Target>,
    labels: BTreeMap<String, String>,
    /// Who set each of `labels`.
    label_sources: BTreeMap<String, LabelOwner>,
    /// Classifier labels that lost to another owner of their key.
    label_conflicts: Vec<LabelConflict>,
    facts: ClusterFacts,
    remote: BTreeMap<String, Inventory>,
    local: BTreeMap<String, Inventory>,
    /// Why the management cluster's inventories for this cluster could not be read: Local
    /// objects are then left alone this pass (applying without the inventory could orphan).
    local_error: Option<String>,
}

/// Runs one pass of `repo` (valid, at `commit`) over every cluster not in `skip`;
/// kustomizationRefs are built in `kustomize`, the workspace of this commit; Helm charts come
/// from `charts`; templateResourceRefs are read through `reads` (one GET per object per pass).
#[allow(clippy::too_many_arguments)]
pub async fn run_pass(
    fleet: &Fleet,
    commit: &str,
    subject: &str,
    repo: &ConfigRepo,
    skip: &BTreeMap<String, String>,
    kustomize: &Workspace,
    charts: &Charts,
    reads: &ReadCache,
) -> (PassReport, DriftSet) {
    let management = fleet.management(repo).await;
    // Chart credentials kept in the management cluster, read once this pass.
    let secrets =
        ManagementSecrets::new(management.clone(), fleet.options.management_cluster.clone());
    let concurrency = fleet.options.concurrency.max(1);

    // Reach every cluster: classify it and read what is deployed there.
    // With shards, only this shard's clusters: the others are never reached, planned, pruned
    // or withdrawn here.
    let shard = fleet.options.shard;
    let owned = repo.clusters.values().filter(|c| shard.owns(&c.name));
    let reach = futures::stream::iter(owned.map(|cluster| {
        let management = management.as_ref();
        async move {
            if cluster.paused {
                return (cluster.name.clone(), Err(ClusterStatus::Paused), None);
            }
            if let Some(why) = skip.get(&cluster.name) {
                return (
                    cluster.name.clone(),
                    Err(ClusterStatus::Unreachable),
                    Some(why.clone()),
                );
            }
            let span = info_span!("reach", cluster = %cluster.name, commit = %short(commit));
            match reach(fleet, repo, cluster, management)
                .instrument(span)
                .await
            {
                Ok(reached) => (cluster.name.clone(), Ok(reached), None),
                Err(e) => {
                    warn!(cluster = %cluster.name, error = %e, "cluster unreachable");
                    (
                        cluster.name.clone(),
                        Err(ClusterStatus::Unreachable),
                        Some(e),
                    )
                }
            }
        }
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;

    // Plan the fleet (pure).
    let mut reached: BTreeMap<String, Reached> = BTreeMap::new();
    let mut clusters: BTreeMap<String, ClusterReport> = BTreeMap::new();
    for (name, result, error) in reach {
        match result {
            Ok(r) => {
                reached.insert(name, r);
            }
            Err(status) => {
                let labels = repo
                    .clusters
                    .get(&name)
                    .map(|c| c.labels.clone())
                    .unwrap_or_default();
                let label_sources = labels
                    .keys()
                    .map(|k| (k.clone(), LabelOwner::Inventory))
                    .collect();
                clusters.insert(
                    name.clone(),
                    ClusterReport {
                        name,
                        labels,
                        label_sources,
                        label_conflicts: vec![],
                        status,
                        error,
                        profiles: vec![],
                    },
                );
            }
        }
    }
    let plans: BTreeMap<String, Vec<Step>> = reached
        .iter()
        .map(|(name, r)| {
            let deployed = deployed_profiles(&r.remote, &r.local);
            (
                name.clone(),
                plan::plan_cluster(repo, name, &r.labels, &deployed),
            )
        })
        .collect();
    let permits: BTreeMap<String, Arc<Semaphore>> = plan::fleet_permits(repo, plans.values())
        .into_iter()
        .map(|(profile, n)| (profile, Arc::new(Semaphore::new(n))))
        .collect();

    // Execute per cluster.
    let sandbox = Sandbox::new();
    let done = futures::stream::iter(reached.into_iter().map(|(name, r)| {
        let steps = plans.get(&name).cloned().unwrap_or_default();
        let management = management.clone();
        let permits = &permits;
        let sandbox = &sandbox;
        let secrets = &secrets;
        async move {
            let span = info_span!("sync", cluster = %name, commit = %short(commit));
            let report = sync_cluster(
                fleet, repo, commit, &name, r, steps, management, permits, sandbox, kustomize,
                charts, secrets, reads,
            )
            .instrument(span)
            .await;
            (name, report)
        }
    }))
    .buffer_unordered(concurrency)
    .collect::<Vec<_>>()
    .await;
    let mut drift = DriftSet::new();
    for (name, (report, watched)) in done {
        clusters.insert(name, report);
        for w in watched {
            drift
                .entry(w.target.name.clone())
                .or_insert_with(|| (Arc::clone(&w.target), BTreeMap::new()))
                .1
                .insert(w.key, w.desired);
        }
    }
    let report = PassReport {
        commit: commit.to_string(),
        subject: subject.to_string(),
        validation_errors: vec![],
        desired_commit: None,
        clusters: clusters.into_values().collect(),
        drift: vec![],
    };
    (report, drift)
}

/// An object a pass left under drift detection.
struct Watched {
    /// Where it is applied.
    target: Arc<Target>,
    key: String,
    desired: Desired,
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Connects, reads `/version`, classifies, and lists the inventories for this cluster.
async fn reach(
    fleet: &Fleet,
    repo: &ConfigRepo,
    cluster: &Cluster,
    management: Option<&Arc<Target>>,
) -> Result<Reached, String> {
    let target = fleet.target(cluster).await.map_err(|e| e.to_string())?;
    let (facts, classification) = super::labels::classify_cluster(&target, repo, cluster).await?;
    let remote = inventory::list(
        &target.client,
        &target.name,
        &cluster.name,
        Destination::Remote,
    )
    .await
    .map_err(|e| e.to_string())?;
    let (local, local_error) = match management {
        Some(m) => {
            match inventory::list(&m.client, &m.name, &cluster.name, Destination::Local).await {
                Ok(local) => (local, None),
                Err(e) => (BTreeMap::new(), Some(format!("management cluster: {e}"))),
            }
        }
        None => (BTreeMap::new(), None),
    };
    Ok(Reached {
        target,
        labels: classification.labels,
        label_sources: classification.owners,
        label_conflicts: classification.conflicts,
        facts,
        remote,
        local,
        local_error,
    })
}

/// Profiles deployed on a cluster according to its inventories (either destination).
fn deployed_profiles(
    remote: &BTreeMap<String, Inventory>,
    local: &BTreeMap<String, Inventory>,
) -> BTreeMap<String, Deployed> {
    let mut out: BTreeMap<String, Deployed> = BTreeMap::new();
    for inv in local.values().chain(remote.values()) {
        let complete = inv.deployed.complete && out.get(&inv.profile).is_none_or(|d| d.complete);
        out.insert(
            inv.profile.clone(),
            Deployed {
                complete,
                ..inv.deployed.clone()
            },
        );
    }
    out
}

/// A profile rendered for this cluster, split by destination.
struct Rendered {
    remote: Vec<Value>,
    local: Vec<Value>,
    /// Helm releases, installed in the managed cluster before the objects.
    releases: Vec<render::RenderedRelease>,
}

/// How helm reaches a cluster of the inventory: its kubeconfig (absolute) and context, or the
/// pod's own credentials for `inCluster`.
fn kube_access(cluster: &Cluster, kubeconfig_dir: &std::path::Path) -> KubeAccess {
    if cluster.kubeconfig.in_cluster {
        return KubeAccess::default();
    }
    let path = cluster::kubeconfig_path(cluster, kubeconfig_dir);
    KubeAccess {
        kubeconfig: Some(std::path::absolute(&path).unwrap_or(path)),
        context: cluster.kubeconfig.context.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn sync_cluster(
    fleet: &Fleet,
    repo: &ConfigRepo,
    commit: &str,
    name: &str,
    reached: Reached,
    steps: Vec<Step>,
    management: Option<Arc<Target>>,
    permits: &BTreeMap<String, Arc<Semaphore>>,
    sandbox: &Sandbox,
    kustomize: &Workspace,
    charts: &Charts,
    secrets: &ManagementSecrets,
    reads: &ReadCache,
) -> (ClusterReport, Vec<Watched>) {
    let mut profiles: Vec<ProfileReport> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();
    let Some(cluster) = repo.clusters.get(name) else {
        let report = ClusterReport {
            name: name.to_string(),
            labels: reached.labels,
            label_sources: reached.label_sources,
            label_conflicts: reached.label_conflicts,
            status: ClusterStatus::Unreachable,
            error: Some("cluster left the inventory".into()),
            profiles,
        };
        return (report, watched);
    };

    // Render every profile to deploy (pure), build its kustomizations (adapter, cached per
    // commit), then settle conflicts between them.
    let mut variables = serde_json::Map::new();
    variables.insert(
        "cluster".into(),
        render::cluster_context(cluster, &reached.labels, reached.facts.version.as_ref()),
    );
    let mut rendered: BTreeMap<String, Result<Rendered, ProfileReport>> = BTreeMap::new();
    for step in &steps {
        let Step::Deploy { profile, .. } = step else {
            continue;
        };
        let Some(p) = repo.profiles.get(profile) else {
            continue;
        };
        // templateResourceRefs: the live objects, read once per pass (adapter).
        let mut result = match objects::variables(
            p,
            &variables,
            &reached.target,
            match &management {
                Some(m) => objects::Management::Read(m),
                None => objects::Management::Unavailable,
            },
            reads,
            sandbox,
        )
        .await
        {
            Ok(variables) => render::render_profile(repo, p, &variables, sandbox),
            Err(e) => Err(e),
        };
        if let Ok(r) = &mut result
            && r.pending.is_empty()
        {
            let span = info_span!("kustomize", profile = %p.name);
            if let Err(e) = render::kustomize::expand(kustomize, &repo.tree, r)
                .instrument(span)
                .await
            {
                result = Err(e);
            }
        }
        let result = match result {
            Err(e) => {
                let mut report = report_for(
                    p.name.clone(),
                    Some(p.spec.sync_mode),
                    ProfileStatus::Failed,
                )
                .with_error(e.to_string());
                report.failure = Some(Failure::Render);
                Err(report)
            }
            Ok(r) if !r.pending.is_empty() => {
                let mut report = report_for(
                    p.name.clone(),
                    Some(p.spec.sync_mode),
                    ProfileStatus::Pending,
                );
                report.errors = r.pending.clone();
                Err(report)
            }
            Ok(r) => {
                let mut out = Rendered {
                    remote: vec![],
                    local: vec![],
                    releases: r.releases,
                };
                for object in r.objects {
                    match object.deployment_type {
                        DeploymentType::Remote => out.remote.push(object.object),
                        DeploymentType::Local => out.local.push(object.object),
                    }
                }
                Ok(out)
            }
        };
        rendered.insert(profile.clone(), result);
    }
    let mut claims = Vec::new();
    for (profile, result) in &rendered {
        let (Ok(r), Some(p)) = (result, repo.profiles.get(profile)) else {
            continue;
        };
        for (prefix, objects) in [("", &r.remote), (LOCAL_PREFIX, &r.local)] {
            for object in objects.iter() {
                claims.push(Claim {
                    key: format!("{prefix}{}", object_key(object)),
                    profile: profile.clone(),
                    tier: p.spec.tier,
                    dry_run: p.spec.sync_mode == SyncMode::DryRun,
                });
            }
        }
        // A release is claimed like an object, by `helm:<namespace>/<name>`.
        for release in r
            .releases
            .iter()
            .filter(|r| r.action == HelmChartAction::Install)
        {
            claims.push(Claim {
                key: helm::release_key(&release.namespace, &release.name),
                profile: profile.clone(),
                tier: p.spec.tier,
                dry_run: p.spec.sync_mode == SyncMode::DryRun,
            });
        }
    }
    let mut owners = BTreeMap::new();
    for (prefix, inventories) in [("", &reached.remote), (LOCAL_PREFIX, &reached.local)] {
        for inv in inventories.values() {
            for key in inv.objects.keys().chain(inv.releases.keys()) {
                owners.insert(format!("{prefix}{key}"), inv.profile.clone());
            }
        }
    }
    let helm_target = HelmTarget {
        target: &reached.target,
        charts,
        access: kube_access(cluster, &fleet.options.kubeconfig_dir),
        kube_version: reached
            .facts
            .version
            .as_ref()
            .map(|v| v.git_version.clone()),
        secrets,
    };
    let lost = plan::resolve_conflicts(&claims, &owners);
    // Releases that a profile applying this pass installs (it won them): a profile withdrawn in
    // the same pass hands them over instead of uninstalling them.
    let claimants: BTreeMap<String, String> = claims
        .iter()
        .filter(|c| c.key.starts_with(helm::RELEASE_PREFIX) && !c.dry_run)
        .filter(|c| {
            !lost
                .get(&c.profile)
                .is_some_and(|l| l.iter().any(|x| x.key == c.key))
        })
        .map(|c| (c.key.clone(), c.profile.clone()))
        .collect();

    let mut status_of: BTreeMap<String, ProfileStatus> = BTreeMap::new();
    for step in steps {
        let report = match step {
            Step::Withdraw { profile, leave, .. } => {
                let span = info_span!("withdraw", profile = %profile);
                let mut holders = owners.clone();
                holders.extend(claimants.iter().map(|(k, p)| (k.clone(), p.clone())));
                withdraw(
                    &reached,
                    management.as_ref(),
                    &profile,
                    leave,
                    repo,
                    &helm_target,
                    &holders,
                )
                .instrument(span)
                .await
            }
            Step::Hold { profile, commit } => {
                let mut report = report_for(
                    profile.clone(),
                    Some(SyncMode::OneTime),
                    ProfileStatus::Held,
                );
                report.applied_commit = Some(commit);
                report.hashes = hashes_of(&reached, &profile);
                report
            }
            Step::Deploy { profile, after } => {
                let Some(p) = repo.profiles.get(&profile) else {
                    continue;
                };
                let waiting: Vec<&String> = after
                    .iter()
                    .filter(|d| !status_of.get(*d).is_some_and(|s| s.succeeded()))
                    .collect();
                if !waiting.is_empty() {
                    let names: Vec<&str> = waiting.iter().map(|s| s.as_str()).collect();
                    let mut report = report_for(
                        profile.clone(),
                        Some(p.spec.sync_mode),
                        ProfileStatus::WaitingForDependency,
                    );
                    report.errors.push(format!(
                        "not applied: dependency {} has not succeeded on this cluster",
                        names.join(", ")
                    ));
                    report.hashes = hashes_of(&reached, &profile);
                    report.applied_commit = applied_commit_of(&reached, &profile);
                    status_of.insert(profile, report.status);
                    profiles.push(report);
                    continue;
                }
                let r = match rendered.remove(&profile) {
                    Some(Ok(r)) => r,
                    Some(Err(mut report)) => {
                        report.hashes = hashes_of(&reached, &profile);
                        report.applied_commit = applied_commit_of(&reached, &profile);
                        status_of.insert(profile, report.status);
                        profiles.push(report);
                        continue;
                    }
                    None => continue,
                };
                let conflicts = lost.get(&profile).cloned().unwrap_or_default();
                let span = info_span!("apply", profile = %profile);
                let permit = permits.get(&profile).cloned();
                async {
                    let _permit = match &permit {
                        Some(s) => s.clone().acquire_owned().await.ok(),
                        None => None,
                    };
                    deploy(
                        &reached,
                        management.as_ref(),
                        p,
                        commit,
                        name,
                        r,
                        conflicts,
                        &helm_target,
                        &owners,
                        fleet.options.watch_drift,
                        &mut watched,
                    )
                    .await
                }
                .instrument(span)
                .await
            }
        };
        status_of.insert(report.profile.clone(), report.status);
        profiles.push(report);
    }
    let degraded = profiles.iter().any(|p| {
        matches!(p.status, ProfileStatus::Failed | ProfileStatus::Conflict)
            || !p.conflicts.is_empty()
    });
    let report = ClusterReport {
        name: name.to_string(),
        labels: reached.labels,
        label_sources: reached.label_sources,
        label_conflicts: reached.label_conflicts,
        status: if degraded {
            ClusterStatus::Degraded
        } else {
            ClusterStatus::Synced
        },
        error: None,
        profiles,
    };
    (report, watched)
}

fn report_for(
    profile: String,
    sync_mode: Option<SyncMode>,
    status: ProfileStatus,
) -> ProfileReport {
    ProfileReport {
        profile,
        sync_mode,
        status,
        applied_commit: None,
        changes: vec![],
        conflicts: vec![],
        errors: vec![],
        remarks: vec![],
        hashes: BTreeMap::new(),
        failure: None,
    }
}

trait WithError {
    fn with_error(self, e: String) -> Self;
}

impl WithError for ProfileReport {
    fn with_error(mut self, e: String) -> Self {
        self.errors.push(e);
        self
    }
}

/// Hashes the inventories hold for a profile (what stays applied when nothing is written).
fn hashes_of(reached: &Reached, profile: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(inv) = reached.remote.get(profile) {
        out.extend(inv.objects.iter().map(|(k, e)| (k.clone(), e.hash.clone())));
        out.extend(inv.releases.iter().map(|(k, r)| (k.clone(), r.hash())));
    }
    if let Some(inv) = reached.local.get(profile) {
        out.extend(
            inv.objects
                .iter()
                .map(|(k, e)| (format!("{LOCAL_PREFIX}{k}"), e.hash.clone())),
        );
    }
    out
}

fn applied_commit_of(reached: &Reached, profile: &str) -> Option<String> {
    reached
        .remote
        .get(profile)
        .or_else(|| reached.local.get(profile))
        .map(|inv| inv.deployed.commit.clone())
}

/// The release keys other profiles' inventories on this cluster hold → that profile.
fn other_owners(owners: &BTreeMap<String, String>, profile: &str) -> BTreeMap<String, String> {
    owners
        .iter()
        .filter(|(k, p)| k.starts_with(helm::RELEASE_PREFIX) && p.as_str() != profile)
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect()
}

/// Installs one profile's Helm releases, then applies its objects at both destinations.
#[allow(clippy::too_many_arguments)]
async fn deploy(
    reached: &Reached,
    management: Option<&Arc<Target>>,
    profile: &crate::config::Profile,
    commit: &str,
    cluster: &str,
    rendered: Rendered,
    conflicts: Vec<Conflict>,
    helm_target: &HelmTarget<'_>,
    owners: &BTreeMap<String, String>,
    watch_drift: bool,
    watched: &mut Vec<Watched>,
) -> ProfileReport {
    let mode = profile.spec.sync_mode;
    let mut report = report_for(profile.name.clone(), Some(mode), ProfileStatus::InSync);
    let drift_detection = mode == SyncMode::ContinuousWithDriftDetection;
    if drift_detection && !watch_drift {
        report.remarks.push(
            "drift is detected and repaired by the running daemon (flotilla run), not by a single sync"
                .into(),
        );
    }
    report.conflicts = conflicts;
    if !report.conflicts.is_empty() && !profile.spec.continue_on_conflict {
        report.status = ProfileStatus::Conflict;
        // Nothing is applied, but what another profile won leaves this inventory, as with
        // continueOnConflict: a stale claim would win later ties and skip writes it must make.
        for (destination, previous, target, prefix) in [
            (
                Destination::Remote,
                reached.remote.get(&profile.name),
                Some(&reached.target),
                "",
            ),
            (
                Destination::Local,
                reached.local.get(&profile.name),
                management,
                LOCAL_PREFIX,
            ),
        ] {
            // DryRun writes nothing, not even its inventory.
            if mode != SyncMode::DryRun
                && let (Some(previous), Some(target)) = (previous, target)
            {
                let released = released_at(&report.conflicts, destination);
                let outcome = apply::release(target, previous, &released).await;
                merge(&mut report, outcome, prefix);
            }
        }
        report.hashes = hashes_of(reached, &profile.name);
        for conflict in &report.conflicts {
            report.hashes.remove(&conflict.key);
        }
        report.applied_commit = applied_commit_of(reached, &profile.name);
        return report;
    }
    let lost: BTreeSet<String> = report.conflicts.iter().map(|c| c.key.clone()).collect();
    let deployed = Deployed {
        commit: commit.to_string(),
        sync_mode: mode,
        stop_matching: profile.spec.stop_matching_behavior,
        complete: true,
    };
    let dry_run = mode == SyncMode::DryRun;
    let mut wrote = false;

    // Helm releases first: the objects may need a chart's CRDs.
    let previous_remote = reached.remote.get(&profile.name);
    let mut release_entries: BTreeMap<String, ReleaseEntry> = previous_remote
        .map(|inv| inv.releases.clone())
        .unwrap_or_default();
    if !rendered.releases.is_empty() || !release_entries.is_empty() {
        let base = previous_remote.cloned().unwrap_or_else(|| Inventory {
            profile: profile.name.clone(),
            cluster: cluster.to_string(),
            destination: Destination::Remote,
            deployed: deployed.clone(),
            objects: BTreeMap::new(),
            releases: BTreeMap::new(),
        });
        let lost_releases: BTreeMap<String, String> = report
            .conflicts
            .iter()
            .filter(|c| c.key.starts_with(helm::RELEASE_PREFIX))
            .map(|c| (c.key.clone(), c.winner.clone()))
            .collect();
        let span = info_span!("helm", profile = %profile.name);
        let outcome = releases::sync(
            helm_target,
            &rendered.releases,
            &base,
            &lost_releases,
            &other_owners(owners, &profile.name),
            dry_run,
        )
        .instrument(span)
        .await;
        wrote |= outcome.wrote;
        report.changes.extend(outcome.changes);
        report.errors.extend(outcome.errors);
        if !dry_run {
            release_entries = outcome.entries;
        }
        for (key, entry) in &release_entries {
            report.hashes.insert(key.clone(), entry.hash());
        }
        if !report.errors.is_empty() {
            // The objects wait for the releases; what the release phase changed is recorded.
            let recorded = Inventory {
                releases: release_entries.clone(),
                ..base.clone()
            };
            if !dry_run
                && previous_remote.map_or(!release_entries.is_empty(), |p| p != &recorded)
                && let Err(e) =
                    inventory::write(&reached.target.client, &reached.target.name, &recorded).await
            {
                report.errors.push(e.to_string());
            }
            if !rendered.remote.is_empty() || !rendered.local.is_empty() {
                report.remarks.push(
                    "objects not applied: a Helm release of this profile failed (retried next pass)"
                        .into(),
                );
            }
            for (key, hash) in hashes_of(reached, &profile.name) {
                if !key.starts_with(helm::RELEASE_PREFIX) {
                    report.hashes.insert(key, hash);
                }
            }
            report.status = ProfileStatus::Failed;
            report.failure = Some(Failure::Helm);
            report.applied_commit = applied_commit_of(reached, &profile.name);
            return report;
        }
    }

    for (destination, objects, prefix) in [
        (Destination::Remote, rendered.remote, ""),
        (Destination::Local, rendered.local, LOCAL_PREFIX),
    ] {
        let previous = match destination {
            Destination::Remote => reached.remote.get(&profile.name),
            Destination::Local => reached.local.get(&profile.name),
        };
        let releases = match destination {
            Destination::Remote => release_entries.clone(),
            Destination::Local => BTreeMap::new(),
        };
        if objects.is_empty() && previous.is_none() && releases.is_empty() {
            continue;
        }
        let target = match destination {
            Destination::Remote => &reached.target,
            Destination::Local => match management {
                Some(_) if reached.local_error.is_some() => {
                    report.errors.push(format!(
                        "Local objects not applied: {}",
                        reached.local_error.as_deref().unwrap_or_default()
                    ));
                    continue;
                }
                Some(m) => m,
                None => {
                    report.errors.push(
                        "deploymentType: Local needs a management cluster: set --management-cluster NAME or run in a cluster".into(),
                    );
                    continue;
                }
            },
        };
        let objects: Vec<Value> = objects
            .into_iter()
            .filter(|o| !lost.contains(&format!("{prefix}{}", object_key(o))))
            .collect();
        // Objects this profile lost to another one leave its inventory without being deleted.
        let released = released_at(&report.conflicts, destination);
        let outcome: Outcome = apply::apply(ApplyRequest {
            target,
            cluster,
            destination,
            profile: &profile.name,
            deployed: deployed.clone(),
            objects,
            previous,
            dry_run,
            released,
            releases,
        })
        .await;
        wrote |= outcome.wrote;
        if drift_detection && watch_drift {
            for (key, object) in &outcome.applied {
                watched.push(Watched {
                    target: Arc::clone(target),
                    key: key.clone(),
                    desired: Desired {
                        profile: profile.name.clone(),
                        cluster: cluster.to_string(),
                        exclusions: drift::exclusions_for(&profile.spec.drift_exclusions, object),
                        object: object.clone(),
                    },
                });
            }
        }
        merge(&mut report, outcome, prefix);
    }
    if !report.errors.is_empty() {
        report.failure = Some(Failure::Apply);
    }
    report.status = if !report.errors.is_empty() {
        ProfileStatus::Failed
    } else if dry_run {
        ProfileStatus::DryRun
    } else if wrote {
        ProfileStatus::Applied
    } else {
        ProfileStatus::InSync
    };
    report.applied_commit = if dry_run {
        applied_commit_of(reached, &profile.name)
    } else if wrote && report.errors.is_empty() {
        Some(commit.to_string())
    } else {
        applied_commit_of(reached, &profile.name).or(Some(commit.to_string()))
    };
    if report.status == ProfileStatus::Applied {
        let changed = report
            .changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
            .count();
        info!(profile = %profile.name, changed, "applied");
    }
    report
}

/// The lost objects at one destination (keys without the destination prefix) → their winner.
fn released_at(conflicts: &[Conflict], destination: Destination) -> BTreeMap<String, String> {
    conflicts
        .iter()
        .filter_map(|c| {
            let key = match destination {
                Destination::Local => c.key.strip_prefix(LOCAL_PREFIX)?,
                Destination::Remote if c.key.starts_with(LOCAL_PREFIX) => return None,
                Destination::Remote => c.key.as_str(),
            };
            Some((key.to_string(), c.winner.clone()))
        })
        .collect()
}

fn merge(report: &mut ProfileReport, outcome: Outcome, prefix: &str) {
    report
        .changes
        .extend(outcome.changes.into_iter().map(|c| ObjectChange {
            key: format!("{prefix}{}", c.key),
            ..c
        }));
    report.errors.extend(outcome.errors);
    report.hashes.extend(
        outcome
            .hashes
            .into_iter()
            .map(|(k, h)| (format!("{prefix}{k}"), h)),
    );
}

/// Withdraws a profile from a cluster at both destinations: its Helm releases first, then its
/// objects.
async fn withdraw(
    reached: &Reached,
    management: Option<&Arc<Target>>,
    profile: &str,
    leave: bool,
    repo: &ConfigRepo,
    helm_target: &HelmTarget<'_>,
    owners: &BTreeMap<String, String>,
) -> ProfileReport {
    let mode = repo.profiles.get(profile).map(|p| p.spec.sync_mode);
    let mut report = report_for(
        profile.to_string(),
        mode,
        if leave {
            ProfileStatus::Released
        } else {
            ProfileStatus::Withdrawn
        },
    );
    if let Some(inv) = reached.remote.get(profile) {
        let kept = if inv.releases.is_empty() {
            BTreeMap::new()
        } else {
            let span = info_span!("helm", profile = %profile);
            let outcome = releases::withdraw(
                helm_target,
                &inv.releases,
                &other_owners(owners, profile),
                leave,
            )
            .instrument(span)
            .await;
            if !outcome.errors.is_empty() {
                report.failure = Some(Failure::Helm);
            }
            report.changes.extend(outcome.changes);
            report.errors.extend(outcome.errors);
            for (key, entry) in &outcome.entries {
                report.hashes.insert(key.clone(), entry.hash());
            }
            outcome.entries
        };
        let outcome = apply::withdraw(&reached.target, inv, leave, kept).await;
        merge(&mut report, outcome, "");
    }
    if let Some(inv) = reached.local.get(profile) {
        match management {
            Some(m) => {
                let outcome = apply::withdraw(m, inv, leave, BTreeMap::new()).await;
                merge(&mut report, outcome, LOCAL_PREFIX);
            }
            None => report
                .errors
                .push("Local objects to withdraw, but no management cluster is configured".into()),
        }
    }
    if !report.errors.is_empty() {
        report.status = ProfileStatus::Failed;
        report.failure.get_or_insert(Failure::Apply);
    }
    info!(profile, leave, "withdrawn");
    report
}
