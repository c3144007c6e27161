//! What counts as drift of an applied object, and what its repair sends (DESIGN §3,
//! `ContinuousWithDriftDetection`). Pure: the daemon's watchers hand in the live object, the
//! server-side dry-run result and the managed fields; everything here is a table-driven test.
//!
//! The cheap test runs on every watch event and needs only metadata: server-side apply moves
//! ownership of a field to whoever changes it, so a change by anyone else leaves a managedFields
//! entry of another manager at least as new as flotilla's. Only then is the object read and
//! dry-run applied, and only fields the dry-run would change (outside `driftExclusions`) are drift.

use std::collections::BTreeSet;
use std::hash::{Hash as _, Hasher as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::DriftExclusion;
use crate::diff::normalize;

/// The field manager whose entries are flotilla's own.
pub const OWN_MANAGER: &str = "flotilla";

/// One object under drift detection: what flotilla applied and the paths it leaves alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The profile that applied it.
    pub profile: String,
    /// The managed cluster it belongs to (for a Local object: the cluster it was rendered for).
    pub cluster: String,
    /// The applied object (stamped, namespace defaulted): what a repair applies again.
    pub object: Value,
    /// JSON pointers of `driftExclusions` that apply to this object.
    pub exclusions: Vec<String>,
}

/// The `driftExclusions` paths that apply to `object` (an exclusion without a target applies to
/// every object of the profile).
pub fn exclusions_for(exclusions: &[DriftExclusion], object: &Value) -> Vec<String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let mut out = Vec::new();
    for exclusion in exclusions {
        let applies = exclusion.target.as_ref().is_none_or(|t| {
            let same = |wanted: &Option<String>, actual: Option<&str>| {
                wanted
                    .as_deref()
                    .is_none_or(|w| w.is_empty() || Some(w) == actual)
            };
            same(&t.group, Some(group))
                && same(&t.version, Some(version))
                && same(&t.kind, field("/kind"))
                && same(&t.name, field("/metadata/name"))
                && same(&t.namespace, field("/metadata/namespace"))
        });
        if applies {
            out.extend(exclusion.paths.iter().map(|p| p.value.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The managedFields entries that describe the object's content: status is another
/// subresource, written by controllers all the time, and never drift.
fn content_entries(managed_fields: &[Value]) -> impl Iterator<Item = &Value> {
    managed_fields
        .iter()
        .filter(|e| e.get("subresource").and_then(Value::as_str) != Some("status"))
}

/// A fingerprint of who owns what (status entries left out): an event with the same
/// fingerprint as the last check changed nothing anyone manages (a status update, a relist).
pub fn signature(managed_fields: &[Value]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    for entry in content_entries(managed_fields) {
        entry.to_string().hash(&mut hasher);
    }
    hasher.finish()
}

/// The other managers that wrote the object's content at or after flotilla's last apply
/// (all of them when flotilla owns nothing any more): who may have changed a field flotilla
/// owns. Empty: flotilla's own write is the newest, so there is nothing to check.
pub fn newer_managers(managed_fields: &[Value]) -> Vec<String> {
    fn time(e: &Value) -> &str {
        e.get("time").and_then(Value::as_str).unwrap_or_default()
    }
    let own = content_entries(managed_fields)
        .filter(|e| {
            e.get("manager").and_then(Value::as_str) == Some(OWN_MANAGER)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
        })
        .map(|e| time(e).to_string())
        .max();
    let mut out: Vec<String> = content_entries(managed_fields)
        .filter(|e| e.get("manager").and_then(Value::as_str) != Some(OWN_MANAGER))
        // RFC 3339 UTC timestamps of one format order as strings; a tie counts as newer (one
        // second is their resolution).
        .filter(|e| own.as_deref().is_none_or(|own| time(e) >= own))
        .map(|e| {
            let manager = e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            match e.get("subresource").and_then(Value::as_str) {
                Some(sub) if !sub.is_empty() => format!("{manager} ({sub})"),
                _ => manager.to_string(),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The other managers whose managed fields include one of `paths` (JSON pointers of drifted
/// fields): who changed them. Map fields are followed exactly (`/data/k` → `f:data` → `f:k`);
/// at a list item, where fieldsV1 names items by key rather than index, owning the list counts.
/// Falls back to [`newer_managers`] when no entry names a path (a field that was removed).
pub fn managers_of(managed_fields: &[Value], paths: &[String]) -> Vec<String> {
    fn owns(fields: &Value, path: &str) -> bool {
        let mut node = fields;
        for segment in path.split('/').skip(1) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            match node.get(format!("f:{segment}")) {
                Some(next) => node = next,
                // A list item (`k:{..}`/`v:..`/`i:..` children) or an atomic value: owning
                // the parent is owning the item.
                None => {
                    return segment.parse::<usize>().is_ok()
                        || node.as_object().is_some_and(|m| m.is_empty());
                }
            }
        }
        true
    }
    let mut out: Vec<String> = content_entries(managed_fields)
        .filter(|e| e.get("manager").and_then(Value::as_str) != Some(OWN_MANAGER))
        .filter(|e| {
            e.get("fieldsV1")
                .is_some_and(|f| paths.iter().any(|p| owns(f, p)))
        })
        .filter_map(|e| e.get("manager").and_then(Value::as_str).map(String::from))
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return newer_managers(managed_fields);
    }
    out
}

/// Removes the value at each JSON pointer (a missing path is fine).
fn remove_paths(value: &mut Value, paths: &[String]) {
    for path in paths {
        let Some((parent, last)) = path.rsplit_once('/') else {
            continue;
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        match value.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&last);
            }
            Some(Value::Array(items)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < items.len()
                {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }
}

/// The fields (JSON pointers) where the live object differs from the dry-run result of
/// applying flotilla's object, both normalized, excluded paths ignored. Empty: no drift.
pub fn drifted_paths(live: &Value, dry_run: &Value, exclusions: &[String]) -> Vec<String> {
    let mut live = normalize(live);
    let mut wanted = normalize(dry_run);
    remove_paths(&mut live, exclusions);
    remove_paths(&mut wanted, exclusions);
    let mut out = BTreeSet::new();
    walk("", &live, &wanted, &mut out);
    out.into_iter().collect()
}

fn walk(path: &str, live: &Value, wanted: &Value, out: &mut BTreeSet<String>) {
    match (live, wanted) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(&child, x, y, out),
                    (x, y) if x != y => {
                        out.insert(child);
                    }
                    _ => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}/{i}"), x, y, out);
            }
        }
        (a, b) if a != b => {
            out.insert(if path.is_empty() {
                "/".into()
            } else {
                path.into()
            });
        }
        _ => {}
    }
}

/// The object a repair applies: flotilla's object, except that at excluded paths it carries the
/// live values (so re-applying never resets what another controller legitimately owns, such as
/// an HPA's replicas).
pub fn repair_object(desired: &Desired, live: Option<&Value>) -> Value {
    let mut object = desired.object.clone();
    let Some(live) = live else {
        return object;
    };
    for path in &desired.exclusions {
        match live.pointer(path) {
            Some(value) => {
                if let Some(slot) = object.pointer_mut(path) {
                    *slot = value.clone();
                }
            }
            None => remove_paths(&mut object, std::slice::from_ref(path)),
        }
    }
    object
}

/// What happened to an object under drift detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DriftKind {
    /// A field flotilla owns was changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

/// How the repair went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result", content = "error")]
pub enum RepairResult {
    /// Re-applied: the object is as flotilla applied it again.
    Repaired,
    /// The dry-run of the repair failed (the drift made the object unappliable, e.g. an
    /// immutable field or an admission rule): not repaired, reported apart from "drifted".
    DryRunFailed(String),
    /// The server refused the re-apply: the drift stays, the reason is here.
    Failed(String),
}

/// One drift and its repair, as the notes of the applied commit show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftRepair {
    /// Managed cluster.
    pub cluster: String,
    /// Profile that owns the object.
    pub profile: String,
    /// Object key (`management:` prefix for Local objects).
    pub key: String,
    /// Changed or deleted.
    pub kind: DriftKind,
    /// Changed fields (JSON pointers); empty for a deletion.
    pub paths: Vec<String>,
    /// Field managers that wrote the object after flotilla (who changed it); a deletion does
    /// not record its author.
    pub managers: Vec<String>,
    /// The repair.
    pub result: RepairResult,
    /// Live (drifted) → repaired, Secret values redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// When the drift was seen (RFC 3339).
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, time: &str, subresource: Option<&str>) -> Value {
        let mut e = json!({"manager": manager, "operation": operation, "time": time,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}});
        if let Some(s) = subresource {
            e["subresource"] = json!(s);
        }
        e
    }

    #[test]
    fn newer_managers_names_who_wrote_after_flotilla() {
        let own = entry("flotilla", "Apply", "2026-01-01T00:00:10Z", None);
        let cases: Vec<(Vec<Value>, Vec<&str>)> = vec![
            // Only flotilla: nothing to check.
            (vec![own.clone()], vec![]),
            // An older writer (it was there before flotilla's last apply).
            (
                vec![
                    own.clone(),
                    entry("kubectl-edit", "Update", "2026-01-01T00:00:09Z", None),
                ],
                vec![],
            ),
            // A newer writer, and one in the same second.
            (
                vec![
                    own.clone(),
                    entry("kubectl-edit", "Update", "2026-01-01T00:00:11Z", None),
                    entry("kubectl", "Apply", "2026-01-01T00:00:10Z", None),
                ],
                vec!["kubectl", "kubectl-edit"],
            ),
            // Status writers never count.
            (
                vec![
                    own.clone(),
                    entry(
                        "controller",
                        "Update",
                        "2026-01-01T00:00:20Z",
                        Some("status"),
                    ),
                ],
                vec![],
            ),
            // A scale subresource write does, with its subresource named.
            (
                vec![
                    own.clone(),
                    entry("hpa", "Update", "2026-01-01T00:00:20Z", Some("scale")),
                ],
                vec!["hpa (scale)"],
            ),
            // flotilla owns nothing any more: every other writer is a suspect.
            (
                vec![entry(
                    "kubectl-edit",
                    "Update",
                    "2026-01-01T00:00:01Z",
                    None,
                )],
                vec!["kubectl-edit"],
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(newer_managers(&fields), want, "{fields:?}");
        }
    }

    #[test]
    fn managers_of_names_the_owners_of_the_drifted_paths() {
        let with = |manager: &str, fields: Value| {
            json!({"manager": manager, "operation": "Update", "time": "2026-01-01T00:00:20Z",
                "fieldsType": "FieldsV1", "fieldsV1": fields})
        };
        let fields = vec![
            json!({"manager": "flotilla", "operation": "Apply", "time": "2026-01-01T00:00:10Z",
                "fieldsV1": {"f:data": {"f:other": {}}}}),
            with("hpa", json!({"f:spec": {"f:replicas": {}}})),
            with(
                "kubectl-edit",
                json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a~b/c": {}}}}),
            ),
            with(
                "lister",
                json!({"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {"f:image": {}}}}}),
            ),
        ];
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec!["/data/k"], vec!["kubectl-edit"]),
            (vec!["/metadata/labels/a~0b~1c"], vec!["kubectl-edit"]),
            (vec!["/spec/replicas"], vec!["hpa"]),
            (vec!["/spec/containers/0/image"], vec!["lister"]),
            (
                vec!["/data/k", "/spec/replicas"],
                vec!["hpa", "kubectl-edit"],
            ),
            // Nobody owns a removed field: everyone newer than flotilla is named.
            (vec!["/data/gone"], vec!["hpa", "kubectl-edit", "lister"]),
        ];
        for (paths, want) in cases {
            let paths: Vec<String> = paths.into_iter().map(String::from).collect();
            assert_eq!(managers_of(&fields, &paths), want, "{paths:?}");
        }
    }

    #[test]
    fn signature_ignores_status_entries_only() {
        let own = entry("flotilla", "Apply", "2026-01-01T00:00:10Z", None);
        let status = entry("c", "Update", "2026-01-01T00:00:20Z", Some("status"));
        let later_status = entry("c", "Update", "2026-01-01T00:00:30Z", Some("status"));
        let edit = entry("kubectl-edit", "Update", "2026-01-01T00:00:30Z", None);
        assert_eq!(
            signature(&[own.clone(), status]),
            signature(&[own.clone(), later_status])
        );
        assert_ne!(
            signature(std::slice::from_ref(&own)),
            signature(&[own, edit])
        );
    }

    #[test]
    fn drifted_paths_compare_normalized_objects_without_exclusions() {
        let base = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "1",
                "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}},
            "status": {"replicas": 2}});
        let with = |pointer: &str, value: Value| {
            let mut v = base.clone();
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = value;
            }
            v
        };
        let cases: Vec<(Value, Vec<&str>, Vec<&str>)> = vec![
            // Only server bookkeeping and status differ: no drift.
            (
                with("/metadata/resourceVersion", json!("9")),
                vec![],
                vec![],
            ),
            (with("/status/replicas", json!(5)), vec![], vec![]),
            (
                with("/spec/replicas", json!(5)),
                vec![],
                vec!["/spec/replicas"],
            ),
            // Excluded: no drift.
            (
                with("/spec/replicas", json!(5)),
                vec!["/spec/replicas"],
                vec![],
            ),
            (
                with("/spec/template/spec/containers/0/image", json!("x:2")),
                vec!["/spec/replicas"],
                vec!["/spec/template/spec/containers/0/image"],
            ),
            // A label changed, and the only label removed (normalize drops the empty map).
            (
                with("/metadata/labels/a", json!("2")),
                vec![],
                vec!["/metadata/labels/a"],
            ),
            (
                with("/metadata/labels", json!({})),
                vec![],
                vec!["/metadata/labels"],
            ),
        ];
        for (live, exclusions, want) in cases {
            let exclusions: Vec<String> = exclusions.into_iter().map(String::from).collect();
            assert_eq!(
                drifted_paths(&live, &base, &exclusions),
                want,
                "{exclusions:?}"
            );
        }
    }

    #[test]
    fn exclusions_apply_to_their_targets_only() {
        let exclusion = |target: &str| -> DriftExclusion {
            serde_saphyr::from_str(&format!("paths: [/spec/replicas]\n{target}"))
                .expect("exclusion")
        };
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps"}});
        let cases = [
            (exclusion("target: {kind: Deployment}"), 1),
            (
                exclusion("target: {kind: Deployment, name: web, group: apps}"),
                1,
            ),
            (exclusion("target: {kind: Deployment, name: api}"), 0),
            (exclusion("target: {kind: Deployment, namespace: other}"), 0),
            (exclusion("target: {kind: StatefulSet}"), 0),
            (exclusion("target: {group: batch}"), 0),
            (exclusion(""), 1),
        ];
        for (e, n) in cases {
            assert_eq!(
                exclusions_for(std::slice::from_ref(&e), &deployment).len(),
                n,
                "{:?}",
                e.target
            );
        }
        let untargeted: DriftExclusion =
            serde_saphyr::from_str("paths: [/data/k, /spec/replicas]").expect("exclusion");
        assert_eq!(
            exclusions_for(&[untargeted], &deployment),
            vec!["/data/k", "/spec/replicas"]
        );
    }

    #[test]
    fn a_repair_keeps_the_live_values_at_excluded_paths() {
        let desired = Desired {
            profile: "p".into(),
            cluster: "c".into(),
            object: json!({"spec": {"replicas": 2, "paused": false}, "data": {"k": "v"}}),
            exclusions: vec!["/spec/replicas".into(), "/spec/paused".into()],
        };
        let live = json!({"spec": {"replicas": 7}, "data": {"k": "edited"}});
        assert_eq!(
            repair_object(&desired, Some(&live)),
            json!({"spec": {"replicas": 7}, "data": {"k": "v"}})
        );
        assert_eq!(repair_object(&desired, None), desired.object);
    }
}
