//! Object diffs for git notes and PR plans (DESIGN §3 "Diffs", §6).
//!
//! Pure: values in, strings out. A diff compares the live object with the desired one (the
//! server-side dry-run result), both normalized so only intent shows, and with Secret values
//! replaced by a short hash so a change is visible but the value never is.

use base64::Engine as _;
use serde_json::Value;
use similar::TextDiff;
use std::fmt::Write as _;

/// Fields under `metadata` that the API server owns; they change on every write and say
/// nothing about intent, so they would only add noise to a diff.
const SERVER_METADATA_FIELDS: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
];

/// Annotation written by client-side `kubectl apply`; it duplicates the whole object (Secret
/// values included), so it is both noise and a leak.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Lines of unchanged context around each hunk, as in `diff -u`.
const CONTEXT_LINES: usize = 3;

/// Drops what the server owns so diffs show only intent: `metadata.managedFields`,
/// `resourceVersion`, `uid`, `generation`, `creationTimestamp`, `selfLink`, the annotation
/// `kubectl.kubernetes.io/last-applied-configuration`, and top-level `status`. Empty
/// `metadata.annotations`/`labels` maps left behind are removed, so an object that never had
/// them compares equal to one whose only entry was server-owned.
pub fn normalize(object: &Value) -> Value {
    let mut out = object.clone();
    normalize_in_place(&mut out);
    out
}

/// [`normalize`] without the copy.
fn normalize_in_place(out: &mut Value) {
    let Some(root) = out.as_object_mut() else {
        return;
    };
    root.remove("status");
    if let Some(metadata) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA_FIELDS {
            metadata.remove(*field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove(LAST_APPLIED_ANNOTATION);
        }
        for map in ["annotations", "labels"] {
            let empty = metadata
                .get(map)
                .and_then(Value::as_object)
                .is_some_and(serde_json::Map::is_empty);
            if empty {
                metadata.remove(map);
            }
        }
    }
}

/// Replaces every value under `data` and `stringData` of a v1 Secret by
/// `<redacted fnv1a:XXXXXXXXXXXXXXXX>` (FNV-1a 64 of the decoded bytes for `data`, of the
/// string for `stringData`), so diffs written to Git show that a value changed without ever
/// showing the value. Other kinds are returned unchanged.
///
/// FNV-1a is not cryptographic: it is a stable change marker, not a secrecy guarantee against
/// guessing low-entropy values. A `data` value that is not valid base64 is hashed as written.
pub fn redact(object: &Value) -> Value {
    let mut out = object.clone();
    redact_in_place(&mut out);
    out
}

/// [`redact`] without the copy.
fn redact_in_place(out: &mut Value) {
    let is_secret = out.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && out.get("kind").and_then(Value::as_str) == Some("Secret");
    if !is_secret {
        return;
    }
    if let Some(data) = out.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            let bytes = match &*value {
                Value::String(text) => base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .unwrap_or_else(|_| text.as_bytes().to_vec()),
                other => other.to_string().into_bytes(),
            };
            *value = Value::String(marker(&bytes));
        }
    }
    if let Some(string_data) = out.get_mut("stringData").and_then(Value::as_object_mut) {
        for value in string_data.values_mut() {
            let bytes = match &*value {
                Value::String(text) => text.as_bytes().to_vec(),
                other => other.to_string().into_bytes(),
            };
            *value = Value::String(marker(&bytes));
        }
    }
}

/// Unified diff (3 lines of context, headers `--- live/<kind>/<namespace>/<name>` and
/// `+++ desired/<kind>/<namespace>/<name>`, namespace empty when cluster-scoped) of the
/// normalized, redacted objects rendered as YAML with sorted keys, so reviewers read the same
/// form they write. `None` when the two are identical after normalization, which is how
/// callers know not to write. `live: None` is a creation (diff from empty), `desired: None` a
/// deletion (diff to empty); both `None` is no change.
pub fn object_diff(live: Option<&Value>, desired: Option<&Value>) -> Option<String> {
    let identity = desired.or(live)?;
    let live_text = live.map(render).unwrap_or_default();
    let desired_text = desired.map(render).unwrap_or_default();
    if live_text == desired_text {
        return None;
    }
    let path = header_path(identity);
    let (old_label, new_label) = (format!("live/{path}"), format!("desired/{path}"));
    if let Some(text) = one_sided_diff(&live_text, &desired_text, &old_label, &new_label) {
        return Some(text);
    }
    let diff = TextDiff::from_lines(&live_text, &desired_text);
    let text = diff
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .header(&old_label, &new_label)
        .to_string();
    Some(text)
}

/// Stable identity `<kind>[.<group>]/<namespace>/<name>` (namespace empty when
/// cluster-scoped), e.g. `Deployment.apps/apps/web`, `ConfigMap/apps/cfg`, `Namespace//apps`.
/// Without the version on purpose: the same object served at another version must keep its
/// identity, or moving it to a newer apiVersion would prune what was just applied.
pub fn object_key(object: &Value) -> String {
    let api_version = str_at(object, &["apiVersion"]);
    let kind = str_at(object, &["kind"]);
    let kind = match api_version.rsplit_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind.to_string(),
    };
    format!(
        "{kind}/{}/{}",
        str_at(object, &["metadata", "namespace"]),
        str_at(object, &["metadata", "name"]),
    )
}

/// `<kind>/<namespace>/<name>` for the diff headers.
fn header_path(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        str_at(object, &["kind"]),
        str_at(object, &["metadata", "namespace"]),
        str_at(object, &["metadata", "name"]),
    )
}

/// The string at `path`, or `""` when absent or not a string.
fn str_at<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(object, |value, key| value.get(*key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Normalized, redacted YAML with keys sorted at every level. Falls back to pretty JSON if
/// YAML serialization ever fails, so a diff is still produced (and still redacted).
fn render(object: &Value) -> String {
    let yaml = |clean: &Value| {
        // The plainest objects are written without serde-saphyr, exactly as it would.
        if let Some(text) = crate::config::yaml_fast::to_string(clean) {
            return text;
        }
        serde_saphyr::to_string(clean)
            .or_else(|_| serde_json::to_string_pretty(clean).map(|text| text + "\n"))
            .unwrap_or_default()
    };
    // Most rendered objects have nothing to normalize or redact: no copy for them. Keys are
    // already sorted (serde_json's map is a BTreeMap; `sort_all_objects` only acts with
    // `preserve_order`, which a unit test rules out).
    if !needs_cleaning(object) {
        return yaml(object);
    }
    // One copy, normalized then redacted in place (as `redact(&normalize(object))`).
    let mut clean = object.clone();
    normalize_in_place(&mut clean);
    redact_in_place(&mut clean);
    clean.sort_all_objects();
    yaml(&clean)
}

/// Whether [`normalize`] or [`redact`] could change the object (conservatively: any Secret,
/// any field either of them looks at).
fn needs_cleaning(object: &Value) -> bool {
    let Some(root) = object.as_object() else {
        return false;
    };
    if root.contains_key("status") || root.get("kind").and_then(Value::as_str) == Some("Secret") {
        return true;
    }
    let Some(metadata) = root.get("metadata").and_then(Value::as_object) else {
        return false;
    };
    SERVER_METADATA_FIELDS
        .iter()
        .any(|field| metadata.contains_key(*field))
        || ["annotations", "labels"].iter().any(|map| {
            metadata
                .get(*map)
                .and_then(Value::as_object)
                .is_some_and(|m| m.is_empty() || m.contains_key(LAST_APPLIED_ANNOTATION))
        })
}

/// The unified diff of a creation (`old` empty) or a deletion (`new` empty) as
/// [`similar`] writes it — one hunk of every line — without running the diff; `None` for any
/// other pair, or a text that does not end in a newline or holds a carriage return (those go
/// to [`similar`]).
fn one_sided_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> Option<String> {
    let (text, sign) = match (old.is_empty(), new.is_empty()) {
        (true, false) => (new, '+'),
        (false, true) => (old, '-'),
        _ => return None,
    };
    if !text.ends_with('\n') || text.contains('\r') {
        return None;
    }
    let lines = text.bytes().filter(|b| *b == b'\n').count();
    let range = if lines == 1 {
        "1".to_string()
    } else {
        format!("1,{lines}")
    };
    let mut out = String::with_capacity(text.len() + lines + old_label.len() * 2 + 40);
    let _ = writeln!(out, "--- {old_label}\n+++ {new_label}");
    match sign {
        '+' => {
            let _ = writeln!(out, "@@ -0,0 +{range} @@");
        }
        _ => {
            let _ = writeln!(out, "@@ -{range} +0,0 @@");
        }
    }
    for line in text.split_inclusive('\n') {
        out.push(sign);
        out.push_str(line);
    }
    Some(out)
}

/// The redaction marker for a value's bytes (`<redacted fnv1a:XXXXXXXXXXXXXXXX>`), also used
/// for Helm values that came from Secrets.
pub fn redaction_marker(bytes: &[u8]) -> String {
    marker(bytes)
}

/// The redaction marker for a value's bytes.
fn marker(bytes: &[u8]) -> String {
    format!("<redacted fnv1a:{:016x}>", fnv1a64(bytes))
}

/// FNV-1a 64-bit: tiny, stable across platforms and releases, and needs no extra crate.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configmap(value: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "apps"},
            "data": {"a": "1", "b": "2", "c": "3", "d": "4", "e": value},
        })
    }

    fn secret(data_plain: &str, string_data: &str) -> Value {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data_plain);
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "apps"},
            "type": "Opaque",
            "data": {"password": encoded},
            "stringData": {"token": string_data},
        })
    }

    /// Lines of a diff that start with a single `-` or `+` (not the headers).
    fn changed_lines(diff: &str) -> Vec<&str> {
        diff.lines()
            .filter(|line| {
                (line.starts_with('-') && !line.starts_with("---"))
                    || (line.starts_with('+') && !line.starts_with("+++"))
            })
            .collect()
    }

    #[test]
    fn one_sided_diffs_are_what_similar_writes() {
        let similar = |old: &str, new: &str| {
            TextDiff::from_lines(old, new)
                .unified_diff()
                .context_radius(CONTEXT_LINES)
                .header("live/a", "desired/a")
                .to_string()
        };
        let texts = [
            "a\n",
            "a: 1\nb: 2\n",
            "\n",
            "\n\n",
            "a\n\nb\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: y\ndata:\n  a: b\n",
            &"x\n".repeat(40),
        ];
        for text in texts {
            for (old, new) in [("", text), (text, "")] {
                let fast = one_sided_diff(old, new, "live/a", "desired/a");
                assert_eq!(
                    fast.as_deref(),
                    Some(similar(old, new).as_str()),
                    "{old:?} → {new:?}"
                );
            }
        }
        // Left to similar: no final newline, a carriage return, both or neither side empty.
        for (old, new) in [("", "a"), ("", "a\r\nb\n"), ("a\n", "b\n"), ("", "")] {
            assert_eq!(
                one_sided_diff(old, new, "l", "d"),
                None,
                "{old:?} → {new:?}"
            );
        }
    }

    #[test]
    fn render_without_a_copy_is_render_with_one() {
        // Keys iterate sorted (no `preserve_order`), so skipping `sort_all_objects` is exact.
        let mut map = serde_json::Map::new();
        for key in ["b", "a", "c"] {
            map.insert(key.into(), json!(1));
        }
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        let clean = |object: &Value| {
            let mut out = redact(&normalize(object));
            out.sort_all_objects();
            serde_saphyr::to_string(&out).unwrap_or_default()
        };
        let mut with_status = configmap("x");
        with_status["status"] = json!({"a": 1});
        let mut empty_labels = configmap("x");
        empty_labels["metadata"]["labels"] = json!({});
        let cases = [
            (configmap("x"), false),
            (secret("a", "b"), true),
            (with_status, true),
            (empty_labels, true),
            (json!("scalar"), false),
        ];
        for (object, needs) in cases {
            assert_eq!(needs_cleaning(&object), needs, "{object}");
            assert_eq!(render(&object), clean(&object), "{object}");
        }
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        for (input, expected) in [
            ("", 0xcbf2_9ce4_8422_2325_u64),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            assert_eq!(fnv1a64(input.as_bytes()), expected, "input {input:?}");
        }
    }

    #[test]
    fn normalize_removes_each_server_field() {
        let cases: &[(&str, Value, &[&str])] = &[
            (
                "managedFields",
                json!({"managedFields": [{"manager": "x"}]}),
                &["managedFields"],
            ),
            (
                "resourceVersion",
                json!({"resourceVersion": "42"}),
                &["resourceVersion"],
            ),
            ("uid", json!({"uid": "0000-1111"}), &["uid"]),
            ("generation", json!({"generation": 3}), &["generation"]),
            (
                "creationTimestamp",
                json!({"creationTimestamp": "2024-01-01T00:00:00Z"}),
                &["creationTimestamp"],
            ),
            ("selfLink", json!({"selfLink": "/api/v1/x"}), &["selfLink"]),
            (
                "last-applied only → empty annotations dropped",
                json!({"annotations": {LAST_APPLIED_ANNOTATION: "{}"}}),
                &["annotations"],
            ),
            ("empty labels dropped", json!({"labels": {}}), &["labels"]),
        ];
        for (name, extra, removed) in cases {
            let mut metadata = json!({"name": "n", "namespace": "ns"});
            if let (Some(target), Some(source)) = (metadata.as_object_mut(), extra.as_object()) {
                target.extend(source.clone());
            }
            let object = json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata,
                "spec": {"replicas": 2},
                "status": {"readyReplicas": 2},
            });
            let out = normalize(&object);
            for field in *removed {
                assert!(
                    out["metadata"].get(*field).is_none(),
                    "{name}: {field} kept"
                );
            }
            assert!(out.get("status").is_none(), "{name}: status kept");
            assert_eq!(out["spec"], json!({"replicas": 2}), "{name}: spec changed");
            assert_eq!(out["metadata"]["name"], "n", "{name}");
            assert_eq!(out["metadata"]["namespace"], "ns", "{name}");
        }
    }

    #[test]
    fn normalize_keeps_intent_annotations_labels_and_data() {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "n",
                "labels": {"app.kubernetes.io/managed-by": "flotilla"},
                "annotations": {
                    "flotilla.dev/profile": "p",
                    LAST_APPLIED_ANNOTATION: "{\"x\":1}",
                },
            },
            "data": {"k": "v"},
        });
        let out = normalize(&object);
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"flotilla.dev/profile": "p"})
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app.kubernetes.io/managed-by": "flotilla"})
        );
        assert_eq!(out["data"], json!({"k": "v"}));
    }

    #[test]
    fn identical_after_normalization_is_none() {
        let desired = configmap("5");
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = json!("99");
        live["metadata"]["uid"] = json!("abc");
        live["metadata"]["managedFields"] = json!([{"manager": "flotilla"}]);
        live["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: "{}"});
        live["status"] = json!({"phase": "Active"});
        assert_eq!(object_diff(Some(&live), Some(&desired)), None);
        assert_eq!(object_diff(None, None), None);
    }

    #[test]
    fn changed_field_gives_exact_lines_and_headers() {
        let live = configmap("old");
        let desired = configmap("new");
        let diff = object_diff(Some(&live), Some(&desired)).unwrap_or_default();
        let mut lines = diff.lines();
        assert_eq!(lines.next(), Some("--- live/ConfigMap/apps/cfg"));
        assert_eq!(lines.next(), Some("+++ desired/ConfigMap/apps/cfg"));
        assert!(diff.contains("\n@@ "), "hunk header missing:\n{diff}");
        assert_eq!(
            changed_lines(&diff),
            vec!["-  e: old", "+  e: new"],
            "{diff}"
        );
        // Exactly 3 lines of context on each side: `a` is 4 lines away, so it is left out.
        let expected = "--- live/ConfigMap/apps/cfg\n\
                        +++ desired/ConfigMap/apps/cfg\n\
                        @@ -4,7 +4,7 @@\n   b: \"2\"\n   c: \"3\"\n   d: \"4\"\n\
                        -  e: old\n+  e: new\n kind: ConfigMap\n metadata:\n   name: cfg\n";
        assert_eq!(diff, expected);
    }

    #[test]
    fn creation_and_deletion() {
        let object = configmap("5");
        let cases = [
            (
                "creation",
                object_diff(None, Some(&object)),
                '+',
                "+++ desired/",
            ),
            (
                "deletion",
                object_diff(Some(&object), None),
                '-',
                "--- live/",
            ),
        ];
        for (name, diff, sign, header) in cases {
            let diff = diff.unwrap_or_default();
            assert!(
                diff.starts_with("--- live/ConfigMap/apps/cfg\n"),
                "{name}:\n{diff}"
            );
            assert!(diff.contains(header), "{name}:\n{diff}");
            let changed = changed_lines(&diff);
            assert!(!changed.is_empty(), "{name}:\n{diff}");
            assert!(
                changed.iter().all(|line| line.starts_with(sign)),
                "{name}:\n{diff}"
            );
            assert!(
                changed.iter().any(|line| line.contains("kind: ConfigMap")),
                "{name}:\n{diff}"
            );
        }
    }

    #[test]
    fn cluster_scoped_header_has_empty_namespace() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}});
        let diff = object_diff(None, Some(&ns)).unwrap_or_default();
        assert!(diff.starts_with("--- live/Namespace//apps\n+++ desired/Namespace//apps\n"));
    }

    #[test]
    fn secret_values_never_appear_in_diffs() {
        let cases = [
            (
                "update",
                Some(secret("hunter2-old", "tok-old")),
                Some(secret("hunter2-new", "tok-new")),
            ),
            ("creation", None, Some(secret("hunter2-new", "tok-new"))),
            ("deletion", Some(secret("hunter2-old", "tok-old")), None),
        ];
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (name, live, desired) in cases {
            let mut live = live;
            if let Some(live) = live.as_mut() {
                // A leak path: last-applied holds the plaintext too.
                live["metadata"]["annotations"] =
                    json!({LAST_APPLIED_ANNOTATION: "{\"stringData\":{\"token\":\"tok-old\"}}"});
            }
            let diff = object_diff(live.as_ref(), desired.as_ref()).unwrap_or_default();
            assert!(diff.contains("<redacted fnv1a:"), "{name}:\n{diff}");
            for secret_text in ["hunter2-old", "hunter2-new", "tok-old", "tok-new"] {
                assert!(
                    !diff.contains(secret_text),
                    "{name}: {secret_text} leaked:\n{diff}"
                );
                assert!(
                    !diff.contains(&b64(secret_text)),
                    "{name}: base64 of {secret_text} leaked:\n{diff}"
                );
            }
        }
    }

    #[test]
    fn secret_hash_changes_with_value_and_is_stable_otherwise() {
        let before = redact(&secret("same", "tok-1"));
        let after = redact(&secret("same", "tok-2"));
        assert_eq!(before["data"]["password"], after["data"]["password"]);
        assert_ne!(before["stringData"]["token"], after["stringData"]["token"]);
        // Hash of the decoded value, not of the base64.
        assert_eq!(before["data"]["password"], json!(marker(b"same")));
        assert_eq!(before["stringData"]["token"], json!(marker(b"tok-1")));
        // Only the changed value shows in the diff.
        let diff = object_diff(
            Some(&secret("same", "tok-1")),
            Some(&secret("same", "tok-2")),
        )
        .unwrap_or_default();
        let changed = changed_lines(&diff);
        assert_eq!(changed.len(), 2, "{diff}");
        assert!(changed.iter().all(|line| line.contains("token:")), "{diff}");
        // Unchanged secret → no diff at all.
        assert_eq!(
            object_diff(Some(&secret("s", "t")), Some(&secret("s", "t"))),
            None
        );
    }

    #[test]
    fn invalid_base64_is_hashed_raw() {
        let mut object = secret("x", "y");
        object["data"]["password"] = json!("not base64!");
        let out = redact(&object);
        assert_eq!(out["data"]["password"], json!(marker(b"not base64!")));
    }

    #[test]
    fn non_secrets_are_not_redacted() {
        let cases = [
            configmap("plain"),
            // Same shape but another group: not a core Secret.
            json!({"apiVersion": "example.com/v1", "kind": "Secret", "data": {"k": "djE="}}),
        ];
        for object in cases {
            assert_eq!(redact(&object), object);
        }
    }

    #[test]
    fn object_key_forms() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apps"}}),
                "ConfigMap/apps/c",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "apps"}}),
                "Deployment.apps/apps/d",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
                "Namespace//apps",
            ),
            (
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}),
                "ClusterRole.rbac.authorization.k8s.io//r",
            ),
        ];
        for (object, expected) in cases {
            assert_eq!(object_key(&object), expected);
        }
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h", "namespace": "a"}});
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h", "namespace": "a"}});
        assert_eq!(
            object_key(&v1),
            object_key(&v2),
            "the version is not part of the identity"
        );
    }
}
