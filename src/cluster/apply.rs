//! Server-side apply of one profile's objects to one cluster (DESIGN §3): Namespaces and CRDs
//! first, custom resources once their CRD is Established, no write for an object whose rendered
//! hash equals the inventory's, the inventory written before new objects are created (so a crash
//! cannot orphan them) and after, prune of what left the render, and withdraw.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::discovery::Served;
use super::inventory::{self, Destination, Entry, FIELD_MANAGER, Inventory};
use super::{ClusterError, Target};
use crate::diff::{object_diff, object_key};
use crate::helm::ReleaseEntry;
use crate::plan::Deployed;
use crate::render::{MANAGED_BY_LABEL, PROFILE_ANNOTATION};
use crate::report::{Action, ObjectChange};

/// Objects written at once within one ordering phase.
const APPLY_CONCURRENCY: usize = 8;
/// How long a custom resource waits for its CRD to be Established and served.
const CRD_WAIT: Duration = Duration::from_secs(30);
/// From this many changed objects of one kind in one namespace, their live state (the "before"
/// of the diff) is read with one list instead of one GET each: 1000 apps of the MTTP workload
/// then cost 4 lists instead of 4000 GETs, each of which is a quorum read from etcd.
const LIST_FROM: usize = 8;

/// What applying (or withdrawing) one profile at one destination did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Per object, in apply order.
    pub changes: Vec<ObjectChange>,
    /// Errors; the pair is left as it was as far as possible (no prune after an error).
    pub errors: Vec<String>,
    /// Object hashes after the pass (for the state note).
    pub hashes: BTreeMap<String, String>,
    /// Whether any write request was made.
    pub wrote: bool,
    /// The objects now applied as rendered (key → stamped object, namespace defaulted): what
    /// drift detection watches and re-applies. Empty for a dry-run.
    pub applied: BTreeMap<String, Value>,
}

/// One profile's objects for one destination of one managed cluster.
pub struct ApplyRequest<'a> {
    /// Where the objects go (the managed cluster, or the management cluster for Local).
    pub target: &'a Target,
    /// The managed cluster they are for.
    pub cluster: &'a str,
    /// Remote or Local.
    pub destination: Destination,
    /// Profile name.
    pub profile: &'a str,
    /// Commit, syncMode and stopMatchingBehavior recorded in the inventory.
    pub deployed: Deployed,
    /// Rendered, stamped objects.
    pub objects: Vec<Value>,
    /// The inventory as read at the start of the pass.
    pub previous: Option<&'a Inventory>,
    /// DryRun: compute the diff with a server-side dry-run, write nothing.
    pub dry_run: bool,
    /// Keys another profile won (key → winner): dropped from this inventory, never deleted.
    pub released: BTreeMap<String, String>,
    /// The Helm releases the inventory records after this pass (the release phase ran first).
    pub releases: BTreeMap<String, ReleaseEntry>,
}

/// An object ready to send: namespace defaulted, key and hash computed.
struct Prepared {
    key: String,
    hash: String,
    object: Value,
    phase: u8,
}

/// Stable short hash of a rendered object (what the inventory compares).
pub fn object_hash(object: &Value) -> String {
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Applies (or dry-runs) one profile's objects at one destination.
pub async fn apply(request: ApplyRequest<'_>) -> Outcome {
    let mut out = Outcome::default();
    let target = request.target;
    let prepared = match prepare(target, &request.objects).await {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    let empty = BTreeMap::new();
    let previous = request.previous.map_or(&empty, |inv| &inv.objects);
    let new_keys: BTreeSet<&str> = prepared.iter().map(|p| p.key.as_str()).collect();
    let removed: Vec<&String> = inventory::removed_keys(previous, &new_keys);
    let changed: Vec<&Prepared> = prepared
        .iter()
        .filter(|p| previous.get(&p.key).is_none_or(|e| e.hash != p.hash) || request.dry_run)
        .collect();
    let metadata_changed = request.previous.is_none_or(|inv| {
        inv.deployed.sync_mode != request.deployed.sync_mode
            || inv.deployed.stop_matching != request.deployed.stop_matching
            || inv.releases != request.releases
    });

    for p in &prepared {
        out.hashes.insert(p.key.clone(), p.hash.clone());
    }
    if changed.is_empty() && removed.is_empty() && !metadata_changed {
        out.changes = prepared.iter().map(|p| unchanged(&p.key)).collect();
        out.applied = prepared.into_iter().map(|p| (p.key, p.object)).collect();
        return out;
    }

    // Record new keys before creating them, so a crash right after cannot orphan them.
    let mut entries: BTreeMap<String, Entry> = previous.clone();
    let adds_keys = prepared.iter().any(|p| !previous.contains_key(&p.key));
    if !request.dry_run && adds_keys {
        for p in &prepared {
            entries
                .entry(p.key.clone())
                .or_insert_with(|| entry(&p.object, String::new()));
        }
        let intent = inventory_of(&request, entries.clone());
        out.wrote = true;
        if let Err(e) = inventory::write(&target.client, &target.name, &intent).await {
            out.errors.push(e.to_string());
            return out;
        }
    }

    // Apply, phase by phase.
    let crds = CrdNames::of(&prepared);
    let before = Before::new(&changed);
    let mut results: BTreeMap<String, ObjectChange> = BTreeMap::new();
    for phase in 0..=1u8 {
        let batch: Vec<&Prepared> = changed
            .iter()
            .copied()
            .filter(|p| p.phase == phase)
            .collect();
        let done: Vec<(String, Result<ObjectChange, String>)> =
            futures::stream::iter(batch.into_iter().map(|p| async {
                (
                    p.key.clone(),
                    write_one(target, p, &crds, &before, request.dry_run).await,
                )
            }))
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .await;
        for (key, result) in done {
            match result {
                Ok(change) => {
                    if !request.dry_run {
                        out.wrote = true;
                    }
                    results.insert(key, change);
                }
                Err(message) => {
                    out.wrote |= !request.dry_run;
                    out.errors.push(message);
                    results.insert(
                        key.clone(),
                        ObjectChange {
                            key,
                            action: Action::Failed,
                            diff: None,
                            detail: None,
                        },
                    );
                }
            }
        }
        if !out.errors.is_empty() {
            break;
        }
    }
    for p in &prepared {
        let change = results.remove(&p.key).unwrap_or_else(|| {
            if out.errors.is_empty() || previous.get(&p.key).is_some_and(|e| e.hash == p.hash) {
                unchanged(&p.key)
            } else {
                ObjectChange {
                    key: p.key.clone(),
                    action: Action::Skipped,
                    diff: None,
                    detail: Some("not applied: an earlier write of this profile failed".into()),
                }
            }
        });
        out.changes.push(change);
    }

    // Prune (or report what would be pruned) only when everything applied.
    let mut kept_removed: Vec<&String> = Vec::new();
    if out.errors.is_empty() {
        let mut order: Vec<&String> = Vec::new();
        for key in &removed {
            match request.released.get(*key) {
                Some(winner) => out.changes.push(ObjectChange {
                    key: (*key).clone(),
                    action: Action::Skipped,
                    diff: None,
                    detail: Some(format!("now applied by profile {winner}")),
                }),
                None => order.push(key),
            }
        }
        let entries = order.into_iter().map(|k| (k, &previous[k])).collect();
        let removed = remove_all(target, request.profile, entries, false, request.dry_run).await;
        for (key, result) in removed {
            match result {
                Ok(change) => {
                    out.wrote |= !request.dry_run && change.action == Action::Pruned;
                    out.changes.push(change);
                }
                Err(message) => {
                    out.errors.push(message);
                    kept_removed.push(key);
                }
            }
        }
    } else {
        kept_removed = removed
            .iter()
            .copied()
            .filter(|k| !request.released.contains_key(*k))
            .collect();
    }

    if request.dry_run {
        return out;
    }
    // The final inventory: what is applied now, failed writes with an empty hash (retried next
    // pass), and what could not be pruned yet.
    let mut entries = BTreeMap::new();
    let actions: HashMap<&str, Action> = out
        .changes
        .iter()
        .map(|c| (c.key.as_str(), c.action))
        .collect();
    for p in &prepared {
        let ok = !matches!(
            actions.get(p.key.as_str()),
            Some(Action::Failed) | Some(Action::Skipped)
        );
        let hash = if ok { p.hash.clone() } else { String::new() };
        if ok {
            out.applied.insert(p.key.clone(), p.object.clone());
        }
        entries.insert(p.key.clone(), entry(&p.object, hash));
    }
    for key in kept_removed {
        entries.insert(key.clone(), previous[key].clone());
    }
    let finished = inventory_of(&request, entries);
    if request.previous != Some(&finished) {
        out.wrote = true;
        if let Err(e) = inventory::write(&target.client, &target.name, &finished).await {
            out.errors.push(e.to_string());
        }
    }
    out
}

/// The live object for an applied one (same kind, namespace and name), `None` when it does not
/// exist. For drift checks.
pub async fn read_live(target: &Target, object: &Value) -> Result<Option<Value>, String> {
    let (api, name, key) = api_of(target, object).await?;
    let live = api
        .get_opt(&name)
        .await
        .map_err(|e| describe(target, &key, "read", &e))?;
    Ok(live.map(|l| serde_json::to_value(l).unwrap_or(Value::Null)))
}

/// Server-side applies one object (forced, manager `flotilla`), or dry-runs it; the server's
/// result. For drift repairs, which re-apply exactly what the pass applied.
pub async fn apply_object(target: &Target, object: &Value, dry_run: bool) -> Result<Value, String> {
    let (api, name, key) = api_of(target, object).await?;
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let result = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|e| {
            describe(
                target,
                &key,
                if dry_run { "dry-run apply" } else { "apply" },
                &e,
            )
        })?;
    Ok(serde_json::to_value(result).unwrap_or(Value::Null))
}

/// One rendered object as the cluster would take it (`flotilla plan --live`).
#[derive(Debug, Clone)]
pub struct Preview {
    /// Object key (namespace defaulted as apply does).
    pub key: String,
    /// The object as rendered, namespace defaulted.
    pub object: Value,
    /// The live object, `None` when it does not exist.
    pub live: Option<Value>,
    /// The server-side dry-run result of applying it, or the server's refusal.
    pub result: Result<Value, String>,
}

/// What applying `objects` would do to the cluster, without writing: each object's live state
/// and the server-side dry-run of its apply (forced, manager `flotilla`), so admission errors
/// and drift show up. Reads and dry-runs only.
pub async fn preview(target: &Target, objects: &[Value]) -> Result<Vec<Preview>, String> {
    let prepared = prepare(target, objects).await?;
    let previews = futures::stream::iter(prepared.into_iter().map(|p| async move {
        let live = read_live(target, &p.object).await;
        let result = apply_object(target, &p.object, true).await;
        match live {
            Ok(live) => Preview {
                key: p.key,
                object: p.object,
                live,
                result,
            },
            Err(e) => Preview {
                key: p.key,
                object: p.object,
                live: None,
                result: Err(e),
            },
        }
    }))
    .buffered(APPLY_CONCURRENCY)
    .collect()
    .await;
    Ok(previews)
}

/// The API handle, name and key of an applied object (its kind resolved by discovery).
async fn api_of(
    target: &Target,
    object: &Value,
) -> Result<(Api<DynamicObject>, String, String), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let served = target
        .discovery
        .resolve(&target.name, &target.client, api_version, kind)
        .await
        .map_err(|e| e.to_string())?;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    Ok((
        api_for(target, &served, namespace),
        name,
        object_key(object),
    ))
}

/// Withdraws what an inventory holds: deletes it (WithdrawPolicies) or releases it
/// (LeavePolicies: flotilla's label and annotation removed), then deletes the inventory.
/// Objects another profile owns by now are left alone. `kept_releases` are Helm releases that
/// could not be uninstalled: the inventory then stays, holding only them, for the next pass.
pub async fn withdraw(
    target: &Target,
    inventory: &Inventory,
    leave: bool,
    kept_releases: BTreeMap<String, ReleaseEntry>,
) -> Outcome {
    let mut out = Outcome::default();
    let entries = inventory.objects.iter().collect();
    for (_, result) in remove_all(target, &inventory.profile, entries, leave, false).await {
        match result {
            Ok(change) => {
                out.wrote |= matches!(change.action, Action::Pruned | Action::Released);
                out.changes.push(change);
            }
            Err(message) => out.errors.push(message),
        }
    }
    if !kept_releases.is_empty() {
        let kept = Inventory {
            objects: if out.errors.is_empty() {
                BTreeMap::new()
            } else {
                inventory.objects.clone()
            },
            releases: kept_releases,
            ..inventory.clone()
        };
        if &kept != inventory {
            out.wrote = true;
            if let Err(e) = inventory::write(&target.client, &target.name, &kept).await {
                out.errors.push(e.to_string());
            }
        }
    } else if out.errors.is_empty() {
        out.wrote = true;
        if let Err(e) = inventory::delete(&target.client, &target.name, inventory).await {
            out.errors.push(e.to_string());
        }
    }
    out
}

/// Drops the keys another profile won (key → winner) from an inventory, touching no object: for
/// a profile that lost a conflict and is not applied, so it no longer claims them.
pub async fn release(
    target: &Target,
    inventory: &Inventory,
    released: &BTreeMap<String, String>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut kept = inventory.clone();
    kept.objects.retain(|key, _| !released.contains_key(key));
    kept.releases.retain(|key, _| !released.contains_key(key));
    if kept.objects.len() == inventory.objects.len()
        && kept.releases.len() == inventory.releases.len()
    {
        return out;
    }
    kept.deployed.complete = kept.complete();
    for (key, winner) in released {
        if inventory.objects.contains_key(key) || inventory.releases.contains_key(key) {
            out.changes.push(ObjectChange {
                key: key.clone(),
                action: Action::Skipped,
                diff: None,
                detail: Some(format!("now applied by profile {winner}")),
            });
        }
    }
    out.wrote = true;
    if let Err(e) = inventory::write(&target.client, &target.name, &kept).await {
        out.errors.push(e.to_string());
    }
    out
}

fn unchanged(key: &str) -> ObjectChange {
    ObjectChange {
        key: key.to_string(),
        action: Action::Unchanged,
        diff: None,
        detail: None,
    }
}

fn inventory_of(request: &ApplyRequest<'_>, objects: BTreeMap<String, Entry>) -> Inventory {
    Inventory {
        profile: request.profile.to_string(),
        cluster: request.cluster.to_string(),
        destination: request.destination,
        deployed: Deployed {
            complete: objects.values().all(|e| !e.hash.is_empty())
                && request.releases.values().all(ReleaseEntry::complete),
            ..request.deployed.clone()
        },
        objects,
        releases: request.releases.clone(),
    }
}

fn entry(object: &Value, hash: String) -> Entry {
    let text = |path: &[&str]| {
        path.iter()
            .try_fold(object, |v, k| v.get(*k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Entry {
        api_version: text(&["apiVersion"]),
        kind: text(&["kind"]),
        namespace: text(&["metadata", "namespace"]),
        name: text(&["metadata", "name"]),
        hash,
    }
}

fn is_crd(api_version: &str, kind: &str) -> bool {
    kind == "CustomResourceDefinition" && api_version.starts_with("apiextensions.k8s.io/")
}

/// 0: Namespaces and CRDs, applied first and pruned last; 1: everything else.
fn phase(api_version: &str, kind: &str) -> u8 {
    if (api_version == "v1" && kind == "Namespace") || is_crd(api_version, kind) {
        0
    } else {
        1
    }
}

fn phase_of_entry(entry: &Entry) -> u8 {
    phase(&entry.api_version, &entry.kind)
}

/// Scope of kinds defined by CRDs in the same set, so their objects can be keyed before the CRD
/// exists: (group, kind) → namespaced.
fn crd_scopes(objects: &[Value]) -> BTreeMap<(String, String), bool> {
    objects
        .iter()
        .filter(|o| {
            is_crd(
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
            )
        })
        .filter_map(|crd| {
            let spec = crd.get("spec")?;
            Some((
                (
                    spec.get("group")?.as_str()?.to_string(),
                    spec.pointer("/names/kind")?.as_str()?.to_string(),
                ),
                spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            ))
        })
        .collect()
}

/// Defaults namespaces (namespaced kinds without one go to `default`, cluster-scoped kinds lose
/// theirs), computes keys and hashes. Discovery requests are reads; kinds defined by a CRD of
/// the same set are resolved from that CRD.
async fn prepare(target: &Target, objects: &[Value]) -> Result<Vec<Prepared>, String> {
    let crds = crd_scopes(objects);
    let mut out = Vec::with_capacity(objects.len());
    let mut seen = BTreeSet::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let namespaced = match crds.get(&(group.to_string(), kind.to_string())) {
            Some(namespaced) => *namespaced,
            None => {
                target
                    .discovery
                    .resolve(&target.name, &target.client, api_version, kind)
                    .await
                    .map_err(|e| e.to_string())?
                    .namespaced
            }
        };
        let mut object = object.clone();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let has_namespace = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .is_some_and(|ns| !ns.is_empty());
            if namespaced && !has_namespace {
                metadata.insert("namespace".into(), json!("default"));
            } else if !namespaced {
                metadata.remove("namespace");
            }
        }
        let key = object_key(&object);
        if !seen.insert(key.clone()) {
            return Err(format!(
                "{key} is rendered twice by this profile; each object must appear once"
            ));
        }
        out.push(Prepared {
            hash: object_hash(&object),
            phase: phase(api_version, kind),
            key,
            object,
        });
    }
    Ok(out)
}

/// A dynamic API handle for an object's kind and namespace.
fn api_for(target: &Target, served: &Served, namespace: &str) -> Api<DynamicObject> {
    if served.namespaced {
        Api::namespaced_with(target.client.clone(), namespace, &served.resource)
    } else {
        Api::all_with(target.client.clone(), &served.resource)
    }
}

/// The CRDs of one apply set: (group, kind) → CRD name, so that each custom resource finds its
/// CRD without scanning the whole set.
struct CrdNames(HashMap<(String, String), String>);

impl CrdNames {
    fn of(set: &[Prepared]) -> Self {
        CrdNames(
            set.iter()
                .filter(|p| {
                    is_crd(
                        p.object["apiVersion"].as_str().unwrap_or_default(),
                        p.object["kind"].as_str().unwrap_or_default(),
                    )
                })
                .filter_map(|p| {
                    let group = p.object.pointer("/spec/group")?.as_str()?;
                    let kind = p.object.pointer("/spec/names/kind")?.as_str()?;
                    let name = p.object.pointer("/metadata/name")?.as_str()?;
                    Some(((group.to_string(), kind.to_string()), name.to_string()))
                })
                .collect(),
        )
    }
}

/// Resolves a kind; when it is defined by a CRD in this set, waits for the CRD to be
/// Established and served.
async fn served_for(target: &Target, object: &Value, crds: &CrdNames) -> Result<Served, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(crd_name) = crds.0.get(&(group.to_string(), kind.to_string())) else {
        return target
            .discovery
            .resolve(&target.name, &target.client, api_version, kind)
            .await
            .map_err(|e| e.to_string());
    };
    wait_served(target, crd_name, api_version, kind).await
}

/// A group of objects whose live state is listed at once: apiVersion, kind, namespace.
type GroupKey = (String, String, String);

/// Live objects of one group by name, listed once (or why the list failed).
type Listed = tokio::sync::OnceCell<Result<HashMap<String, Value>, String>>;

/// The live state of the objects an apply is about to write (the old side of each diff): one GET
/// per object for small groups, one list per kind and namespace from [`LIST_FROM`] objects on.
/// Every write of a listed group waits for its list, so the list is always taken before the
/// group's first write.
struct Before {
    listed: HashMap<GroupKey, Listed>,
}

impl Before {
    fn new(changed: &[&Prepared]) -> Self {
        let mut counts: HashMap<GroupKey, usize> = HashMap::new();
        for p in changed {
            *counts.entry(group_key(&p.object)).or_default() += 1;
        }
        Before {
            listed: counts
                .into_iter()
                .filter(|(_, n)| *n >= LIST_FROM)
                .map(|(group, _)| (group, Listed::default()))
                .collect(),
        }
    }

    /// The live object (`None`: it does not exist).
    async fn live(
        &self,
        target: &Target,
        api: &Api<DynamicObject>,
        p: &Prepared,
    ) -> Result<Option<Value>, String> {
        let name = p.object["metadata"]["name"].as_str().unwrap_or_default();
        let Some(cell) = self.listed.get(&group_key(&p.object)) else {
            let live = api
                .get_opt(name)
                .await
                .map_err(|e| describe(target, &p.key, "read", &e))?;
            return Ok(live.map(|l| serde_json::to_value(l).unwrap_or(Value::Null)));
        };
        let listed = cell
            .get_or_init(|| async {
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| describe(target, &p.key, "list the live objects for", &e))?;
                Ok(list
                    .items
                    .into_iter()
                    .filter_map(|o| {
                        let name = o.metadata.name.clone()?;
                        Some((name, serde_json::to_value(o).ok()?))
                    })
                    .collect())
            })
            .await;
        match listed {
            Ok(objects) => Ok(objects.get(name).cloned()),
            Err(e) => Err(e.clone()),
        }
    }
}

fn group_key(object: &Value) -> GroupKey {
    let field = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        field("/apiVersion"),
        field("/kind"),
        field("/metadata/namespace"),
    )
}

/// Waits (at most [`CRD_WAIT`]) until CRD `crd_name` is Established and `api_version`/`kind`
/// is served.
async fn wait_served(
    target: &Target,
    crd_name: &str,
    api_version: &str,
    kind: &str,
) -> Result<Served, String> {
    let deadline = tokio::time::Instant::now() + CRD_WAIT;
    loop {
        let established = crd_established(target, crd_name).await.unwrap_or(false);
        if established
            && let Ok(served) = target
                .discovery
                .resolve(&target.name, &target.client, api_version, kind)
                .await
        {
            return Ok(served);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "cluster {}: {api_version} {kind} not served {}s after its CRD {crd_name} was applied",
                target.name,
                CRD_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crd_established(target: &Target, name: &str) -> Result<bool, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(target.client.clone());
    let crd = api.get_opt(name).await?;
    Ok(crd
        .and_then(|c| c.status)
        .and_then(|s| s.conditions)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        }))
}

/// `cluster X: apply ConfigMap/ns/name: <the API server's message> (Reason, HTTP code)`: the
/// server's own words, without kube's debug dump of the whole Status.
fn describe(target: &Target, key: &str, what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "cluster {}: {what} {key}: {} ({}, HTTP {})",
            target.name,
            status.message,
            if status.reason.is_empty() {
                "no reason"
            } else {
                status.reason.as_str()
            },
            status.code
        ),
        other => format!("cluster {}: {what} {key}: {other}", target.name),
    }
}

/// Server-side apply (forced, manager `flotilla`) or its dry-run; the diff is live → result.
async fn write_one(
    target: &Target,
    p: &Prepared,
    crds: &CrdNames,
    before: &Before,
    dry_run: bool,
) -> Result<ObjectChange, String> {
    let served = served_for(target, &p.object, crds).await?;
    let name = p.object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = p.object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let api = api_for(target, &served, namespace);
    let live_value = before.live(target, &api, p).await?;
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let result = api
        .patch(name, &params, &Patch::Apply(&p.object))
        .await
        .map_err(|e| describe(target, &p.key, "apply", &e))?;
    if is_crd(
        p.object["apiVersion"].as_str().unwrap_or_default(),
        p.object["kind"].as_str().unwrap_or_default(),
    ) && !dry_run
    {
        // The CRD's kind may have changed (new version, scope); ask again when it is used.
        // The profile is done only once its kinds are served, so that a profile depending on
        // it can create their objects right away.
        if let Some(kind) = p.object.pointer("/spec/names/kind").and_then(Value::as_str)
            && let Some(group) = p.object.pointer("/spec/group").and_then(Value::as_str)
            && let Some(versions) = p.object.pointer("/spec/versions").and_then(Value::as_array)
        {
            for version in versions.iter().filter_map(|v| v.get("name")?.as_str()) {
                target.discovery.forget(&format!("{group}/{version}"), kind);
            }
            let served = versions
                .iter()
                .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
                .filter_map(|v| v.get("name")?.as_str());
            for version in served {
                wait_served(target, name, &format!("{group}/{version}"), kind).await?;
            }
        }
    }
    let result_value = serde_json::to_value(result).unwrap_or(Value::Null);
    let diff = object_diff(live_value.as_ref(), Some(&result_value));
    let action = match (&live_value, &diff) {
        (None, _) => Action::Created,
        (Some(_), Some(_)) => Action::Updated,
        (Some(_), None) => Action::Unchanged,
    };
    Ok(ObjectChange {
        key: p.key.clone(),
        action,
        diff,
        detail: None,
    })
}

/// Removes (or releases) inventory entries: custom resources before their CRDs and Namespaces
/// (phase by phase, in reverse apply order), up to [`APPLY_CONCURRENCY`] at once within a phase.
/// Results come in phase order, then in the order given; a failure does not stop the others.
async fn remove_all<'k>(
    target: &Target,
    profile: &str,
    entries: Vec<(&'k String, &Entry)>,
    leave: bool,
    dry_run: bool,
) -> Vec<(&'k String, Result<ObjectChange, String>)> {
    let mut out = Vec::with_capacity(entries.len());
    for phase in (0..=1u8).rev() {
        let batch = entries.iter().filter(|(_, e)| phase_of_entry(e) == phase);
        let done: Vec<_> = futures::stream::iter(batch.map(|(key, entry)| async move {
            (
                *key,
                remove_one(target, profile, key, entry, leave, dry_run).await,
            )
        }))
        .buffered(APPLY_CONCURRENCY)
        .collect()
        .await;
        out.extend(done);
    }
    out
}

/// Deletes (or releases) one inventory entry, unless another profile owns the object now.
async fn remove_one(
    target: &Target,
    profile: &str,
    key: &str,
    entry: &Entry,
    leave: bool,
    dry_run: bool,
) -> Result<ObjectChange, String> {
    let skipped = |detail: String| ObjectChange {
        key: key.to_string(),
        action: Action::Skipped,
        diff: None,
        detail: Some(detail),
    };
    let served = match target
        .discovery
        .resolve(
            &target.name,
            &target.client,
            &entry.api_version,
            &entry.kind,
        )
        .await
    {
        Ok(served) => served,
        // The kind is gone (its CRD was pruned first): so are its objects.
        Err(ClusterError::UnknownKind { .. }) => {
            return Ok(skipped("already gone: its kind is no longer served".into()));
        }
        Err(e) => return Err(e.to_string()),
    };
    let api = api_for(target, &served, &entry.namespace);
    let live = api
        .get_opt(&entry.name)
        .await
        .map_err(|e| describe(target, key, "read", &e))?;
    let Some(live) = live else {
        return Ok(skipped("already gone".into()));
    };
    let owner = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROFILE_ANNOTATION))
        .cloned();
    if owner.as_deref() != Some(profile) {
        return Ok(skipped(match owner {
            Some(other) => format!("left alone: profile {other} owns it now"),
            None => "left alone: flotilla's annotation was removed".into(),
        }));
    }
    let live_value = serde_json::to_value(&live).unwrap_or(Value::Null);
    if leave {
        if !dry_run {
            let patch = json!({"metadata": {
                "labels": {MANAGED_BY_LABEL: null},
                "annotations": {PROFILE_ANNOTATION: null},
            }});
            api.patch(&entry.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| describe(target, key, "release", &e))?;
        }
        return Ok(ObjectChange {
            key: key.to_string(),
            action: Action::Released,
            diff: None,
            detail: None,
        });
    }
    if !dry_run {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&entry.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(describe(target, key, "delete", &e)),
        }
    }
    Ok(ObjectChange {
        key: key.to_string(),
        action: Action::Pruned,
        diff: object_diff(Some(&live_value), None),
        detail: None,
    })
}
