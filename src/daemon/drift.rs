//! Drift detection of the running daemon (`ContinuousWithDriftDetection`): one metadata-only
//! watch per kind per cluster, selected by flotilla's label, over the objects the last pass
//! applied; a change to a field flotilla owns, or a deletion, is re-applied at once and reported
//! to the daemon loop, which adds it to the note of the applied commit.
//!
//! What counts as drift is decided by the pure [`crate::drift`]; this module only watches, reads
//! and writes. A pass holds [`DriftWatch::gate`] for writing while it runs, so a repair never
//! races a pass (an object the pass prunes is not "repaired" back).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::cluster::Target;
use crate::cluster::apply;
use crate::diff::{object_diff, object_key};
use crate::drift::{self, Desired, DriftKind, DriftRepair, RepairResult};
use crate::render::MANAGED_BY_LABEL;

/// Objects under drift detection after a pass, by the cluster they were applied to (a Local
/// object lives in the management cluster): its client and key → desired object.
pub type DriftSet = BTreeMap<String, (Arc<Target>, BTreeMap<String, Desired>)>;

/// Key → desired object of one cluster, shared by its watchers and replaced after each pass.
type Shared = Arc<RwLock<HashMap<String, Desired>>>;

/// The watches of the running daemon.
pub struct DriftWatch {
    clusters: HashMap<String, ClusterWatch>,
    repairs: mpsc::Sender<DriftRepair>,
    /// Held for writing by a pass, for reading by a check or repair.
    pub gate: Arc<tokio::sync::RwLock<()>>,
}

struct ClusterWatch {
    target: Arc<Target>,
    desired: Shared,
    /// One task per (apiVersion, kind).
    kinds: HashMap<(String, String), JoinHandle<()>>,
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for task in self.kinds.values() {
            task.abort();
        }
    }
}

/// Who needs what to check and repair one kind on one cluster.
#[derive(Clone)]
struct KindContext {
    target: Arc<Target>,
    api_version: String,
    kind: String,
    desired: Shared,
    repairs: mpsc::Sender<DriftRepair>,
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl DriftWatch {
    /// No watches yet; repairs are sent to `repairs`.
    pub fn new(repairs: mpsc::Sender<DriftRepair>) -> Self {
        DriftWatch {
            clusters: HashMap::new(),
            repairs,
            gate: Arc::new(tokio::sync::RwLock::new(())),
        }
    }

    /// Watches exactly what `set` holds: new kinds get a watch, kinds no longer applied lose
    /// theirs, and every watch sees the new desired objects from now on.
    pub fn update(&mut self, set: DriftSet) {
        self.clusters.retain(|name, _| set.contains_key(name));
        for (name, (target, objects)) in set {
            let kinds: BTreeSet<(String, String)> = objects
                .values()
                .map(|d| {
                    (
                        d.object["apiVersion"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        d.object["kind"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let replace = self
                .clusters
                .get(&name)
                .is_none_or(|c| !Arc::ptr_eq(&c.target, &target));
            if replace {
                // A new client (the kubeconfig changed, or it was reconnected): start afresh.
                self.clusters.insert(
                    name.clone(),
                    ClusterWatch {
                        target: Arc::clone(&target),
                        desired: Arc::new(RwLock::new(HashMap::new())),
                        kinds: HashMap::new(),
                    },
                );
            }
            let Some(cluster) = self.clusters.get_mut(&name) else {
                continue;
            };
            if let Ok(mut desired) = cluster.desired.write() {
                *desired = objects.into_iter().collect();
            }
            cluster.kinds.retain(|kind, task| {
                let keep = kinds.contains(kind);
                if !keep {
                    task.abort();
                }
                keep
            });
            for (api_version, kind) in kinds {
                if cluster
                    .kinds
                    .get(&(api_version.clone(), kind.clone()))
                    .is_some_and(|t| !t.is_finished())
                {
                    continue;
                }
                let context = KindContext {
                    target: Arc::clone(&cluster.target),
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                    desired: Arc::clone(&cluster.desired),
                    repairs: self.repairs.clone(),
                    gate: Arc::clone(&self.gate),
                };
                let span = info_span!("drift", cluster = %name, kind = %kind);
                let task = tokio::spawn(watch_kind(context).instrument(span));
                cluster.kinds.insert((api_version, kind), task);
            }
        }
    }

    /// Watches running (kinds × clusters), for logs and tests of boundedness.
    pub fn watches(&self) -> usize {
        self.clusters.values().map(|c| c.kinds.len()).sum()
    }
}

/// The key of a watched object (as the pass computes it).
fn key_of(api_version: &str, kind: &str, meta: &kube::api::ObjectMeta) -> String {
    object_key(&json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": meta.name.clone().unwrap_or_default(),
            "namespace": meta.namespace.clone().unwrap_or_default(),
        },
    }))
}

/// Watches one kind on one cluster until aborted; the stream restarts with backoff on errors
/// (an apiserver restart), relisting and checking what changed meanwhile.
async fn watch_kind(context: KindContext) {
    let served = loop {
        match context
            .target
            .discovery
            .resolve(
                &context.target.name,
                &context.target.client,
                &context.api_version,
                &context.kind,
            )
            .await
        {
            Ok(served) => break served,
            Err(e) => {
                debug!(error = %e, "kind not resolvable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    };
    // Metadata only: managedFields are all a first look needs.
    let api: Api<PartialObjectMeta<DynamicObject>> =
        Api::all_with(context.target.client.clone(), &served.resource);
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}=flotilla"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    // The managed-fields signature at the last look, per key: an event that does not change it
    // changed nothing anyone manages.
    let mut looked: HashMap<String, u64> = HashMap::new();
    let mut listing: Option<BTreeSet<String>> = None;
    let mut failing = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => {
                if failing {
                    info!("watch resumed");
                    failing = false;
                }
                event
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "watch failed; retrying with backoff");
                    failing = true;
                }
                continue;
            }
        };
        match event {
            Event::Init => listing = Some(BTreeSet::new()),
            Event::InitApply(meta) | Event::Apply(meta) => {
                let key = key_of(&context.api_version, &context.kind, &meta.metadata);
                // Objects of other profiles (not under drift detection) cost nothing here.
                if !is_desired(&context, &key) {
                    looked.remove(&key);
                    continue;
                }
                if let Some(seen) = listing.as_mut() {
                    seen.insert(key.clone());
                }
                if meta.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let fields: Vec<Value> = meta
                    .metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter_map(|f| serde_json::to_value(f).ok())
                    .collect();
                let signature = drift::signature(&fields);
                if looked.get(&key) == Some(&signature) {
                    continue;
                }
                if drift::newer_managers(&fields).is_empty() {
                    // flotilla's own write is the newest: nothing to check.
                    looked.insert(key, signature);
                    continue;
                }
                let after = check(&context, &key).await.unwrap_or(signature);
                looked.insert(key, after);
            }
            Event::Delete(meta) => {
                let key = key_of(&context.api_version, &context.kind, &meta.metadata);
                looked.remove(&key);
                if let Some(after) = recreate(&context, &key).await {
                    looked.insert(key, after);
                }
            }
            Event::InitDone => {
                // Objects deleted while nobody watched.
                let seen = listing.take().unwrap_or_default();
                let missing: Vec<String> = context
                    .desired
                    .read()
                    .map(|d| {
                        d.iter()
                            .filter(|(k, o)| {
                                !seen.contains(*k)
                                    && o.object["kind"].as_str() == Some(context.kind.as_str())
                                    && o.object["apiVersion"].as_str()
                                        == Some(context.api_version.as_str())
                            })
                            .map(|(k, _)| k.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for key in missing {
                    if let Some(after) = recreate(&context, &key).await {
                        looked.insert(key, after);
                    }
                }
            }
        }
    }
}

/// Whether `key` is under drift detection now.
fn is_desired(context: &KindContext, key: &str) -> bool {
    context
        .desired
        .read()
        .is_ok_and(|desired| desired.contains_key(key))
}

/// The desired object for `key` now (a pass may have replaced or dropped it).
fn desired(context: &KindContext, key: &str) -> Option<Desired> {
    context.desired.read().ok()?.get(key).cloned()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The managed-fields signature of an object the server returned.
fn signature_of(object: &Value) -> Option<u64> {
    let fields = object.pointer("/metadata/managedFields")?.as_array()?;
    Some(drift::signature(fields))
}

fn report_key(context: &KindContext, desired: &Desired, key: &str) -> String {
    if desired.cluster == context.target.name {
        key.to_string()
    } else {
        format!("management:{key}")
    }
}

/// Reads the object and dry-runs flotilla's version of it; re-applies it when a field flotilla
/// owns differs (outside the exclusions). The signature to remember, `None` when unknown.
async fn check(context: &KindContext, key: &str) -> Option<u64> {
    let _gate = context.gate.read().await;
    let wanted = desired(context, key)?;
    check_locked(context, key, wanted).await
}

async fn check_locked(context: &KindContext, key: &str, wanted: Desired) -> Option<u64> {
    let live = match apply::read_live(&context.target, &wanted.object).await {
        Ok(Some(live)) => live,
        Ok(None) => return recreate_gone(context, key, wanted).await,
        Err(e) => {
            warn!(key, error = %e, "drift check: cannot read the object");
            return None;
        }
    };
    let fields: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let managers = drift::newer_managers(&fields);
    let live_signature = Some(drift::signature(&fields));
    let repair = drift::repair_object(&wanted, Some(&live));
    let at = now();
    let dry_run = match apply::apply_object(&context.target, &repair, true).await {
        Ok(result) => result,
        Err(e) => {
            warn!(key, error = %e, "drift: the dry-run of the repair failed");
            send(
                context,
                &wanted,
                key,
                Found {
                    kind: DriftKind::Modified,
                    paths: vec![],
                    managers,
                    at,
                },
                RepairResult::DryRunFailed(e),
                None,
            );
            return live_signature;
        }
    };
    let paths = drift::drifted_paths(&live, &dry_run, &wanted.exclusions);
    if paths.is_empty() {
        debug!(
            key,
            "changed by another manager, but nothing flotilla owns drifted"
        );
        return live_signature;
    }
    let managers = drift::managers_of(&fields, &paths);
    let (result, after, diff) = match apply::apply_object(&context.target, &repair, false).await {
        Ok(result) => {
            let diff = object_diff(Some(&live), Some(&result));
            (RepairResult::Repaired, signature_of(&result), diff)
        }
        Err(e) => (RepairResult::Failed(e), live_signature, None),
    };
    info!(key, profile = %wanted.profile, ?paths, ?managers, repaired = matches!(result, RepairResult::Repaired), "drift");
    send(
        context,
        &wanted,
        key,
        Found {
            kind: DriftKind::Modified,
            paths,
            managers,
            at,
        },
        result,
        diff,
    );
    after
}

/// An object left the watch (deleted, or relabelled out of flotilla's selection): recreated
/// when gone, checked like a change when it is still there.
async fn recreate(context: &KindContext, key: &str) -> Option<u64> {
    let _gate = context.gate.read().await;
    let wanted = desired(context, key)?;
    check_locked(context, key, wanted).await
}

/// Re-creates a desired object that is gone.
async fn recreate_gone(context: &KindContext, key: &str, wanted: Desired) -> Option<u64> {
    let at = now();
    let (result, after, diff) =
        match apply::apply_object(&context.target, &wanted.object, false).await {
            // No diff: it is the whole object again.
            Ok(result) => (RepairResult::Repaired, signature_of(&result), None),
            Err(e) => (RepairResult::Failed(e), None, None),
        };
    info!(key, profile = %wanted.profile, repaired = matches!(result, RepairResult::Repaired), "drift: deleted object");
    send(
        context,
        &wanted,
        key,
        Found {
            kind: DriftKind::Deleted,
            paths: vec![],
            managers: vec![],
            at,
        },
        result,
        diff,
    );
    after
}

/// What a check found, before the repair.
struct Found {
    kind: DriftKind,
    paths: Vec<String>,
    managers: Vec<String>,
    at: String,
}

/// Reports a drift and its repair to the daemon loop (dropped, with a warning, when the loop
/// is that far behind: the object itself is repaired either way).
fn send(
    context: &KindContext,
    wanted: &Desired,
    key: &str,
    found: Found,
    result: RepairResult,
    diff: Option<String>,
) {
    let repair = DriftRepair {
        cluster: wanted.cluster.clone(),
        profile: wanted.profile.clone(),
        key: report_key(context, wanted, key),
        kind: found.kind,
        paths: found.paths,
        managers: found.managers,
        result,
        diff,
        at: found.at,
    };
    if let Err(e) = context.repairs.try_send(repair) {
        warn!(error = %e, "drift repair not reported: the daemon is not keeping up");
    }
}
