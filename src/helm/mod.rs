//! Helm releases (DESIGN §2 `helmCharts`, §3 "Helm"): charts installed as real Helm releases by
//! the pinned `helm` CLI, so `helm list` shows them.
//!
//! Two halves, as for kustomize. This module is the pure half: where a chart comes from
//! ([`chart_location`]), values merging and hashing, what flotilla records per release in the
//! profile's inventory ([`ReleaseEntry`]), whether a release needs helm at all ([`decide`]),
//! helm's release records ([`ReleaseRecord`], decoded from the Secrets helm keeps them in), and
//! the note's diffs of values and rendered manifests. [`cli`] is the adapter: it runs the helm
//! binary (pull into an on-disk chart cache, upgrade --install, uninstall, template) with a
//! private environment and a time limit.
//!
//! The no-op rule: helm runs only when the chart (repository, name, version) or the merged values
//! differ from what the inventory records, or the release's live state (read from helm's own
//! storage Secrets through the kube API) is not the revision flotilla wrote, deployed. A pass
//! where nothing changed starts no helm process.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::diff::{object_diff, object_key};

/// Prefix of a release's key among object keys (claims, conflicts, notes, state note hashes):
/// `helm:<namespace>/<name>`.
pub const RELEASE_PREFIX: &str = "helm:";

/// Label helm puts on its release storage Secrets (`owner=helm`).
pub const OWNER_LABEL: &str = "owner";
/// Type of helm's release storage Secrets.
pub const RELEASE_SECRET_TYPE: &str = "helm.sh/release.v1";

/// The key of a release: `helm:<namespace>/<name>`.
pub fn release_key(namespace: &str, name: &str) -> String {
    format!("{RELEASE_PREFIX}{namespace}/{name}")
}

/// Name of the Secret holding revision `revision` of a release (helm's Secret storage driver).
pub fn record_secret_name(name: &str, revision: u64) -> String {
    format!("sh.helm.release.v1.{name}.v{revision}")
}

// ------------------------------------------------------------------------------ chart source

/// Where a chart is fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChartLocation {
    /// A classic chart repository (`index.yaml`) over http(s).
    Repository {
        /// The repository URL, without a trailing `/`.
        url: String,
        /// The chart's name in the repository's index.
        chart: String,
    },
    /// An OCI registry.
    Oci {
        /// `oci://host/path/chart`.
        reference: String,
        /// The registry speaks plain HTTP: only for loopback hosts.
        plain_http: bool,
    },
}

impl ChartLocation {
    /// The chart's own name (last path segment).
    pub fn chart_name(&self) -> &str {
        match self {
            ChartLocation::Repository { chart, .. } => chart,
            ChartLocation::Oci { reference, .. } => {
                reference.rsplit('/').next().unwrap_or(reference)
            }
        }
    }
}

/// Resolves a `helmCharts` entry's chart. `chartName` may be `<repositoryName>/<chart>` (Sveltos'
/// form), a bare chart name, or for OCI the full `oci://` reference. For an OCI repository whose
/// URL already ends with the chart's name (Sveltos' examples write it so), the URL is the
/// reference; otherwise the chart's name is appended to it.
pub fn chart_location(
    repository_url: &str,
    repository_name: &str,
    chart_name: &str,
) -> ChartLocation {
    let url = repository_url.trim_end_matches('/');
    if chart_name.starts_with("oci://") || url.starts_with("oci://") {
        let reference = if chart_name.starts_with("oci://") {
            chart_name.trim_end_matches('/').to_string()
        } else {
            let name = bare_chart_name(repository_name, chart_name);
            if url.rsplit('/').next() == Some(name) {
                url.to_string()
            } else {
                format!("{url}/{name}")
            }
        };
        let host = reference
            .trim_start_matches("oci://")
            .split('/')
            .next()
            .unwrap_or_default();
        return ChartLocation::Oci {
            plain_http: is_loopback_host(host),
            reference,
        };
    }
    ChartLocation::Repository {
        url: url.to_string(),
        chart: bare_chart_name(repository_name, chart_name).to_string(),
    }
}

fn bare_chart_name<'a>(repository_name: &str, chart_name: &'a str) -> &'a str {
    let chart_name = chart_name.trim_matches('/');
    if let Some(rest) = chart_name.strip_prefix(repository_name)
        && let Some(rest) = rest.strip_prefix('/')
    {
        return rest;
    }
    chart_name.rsplit('/').next().unwrap_or(chart_name)
}

/// Whether `host` (`name`, `name:port`, `[::1]:port`) is this machine: an OCI registry there may
/// speak plain HTTP (a registry elsewhere must use TLS).
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The digest (sha256, hex) a chart repository's `index.yaml` publishes for one chart version:
/// `Ok(None)` when the entry has none, `Err` when the index has no such version.
pub fn index_digest(index: &str, chart: &str, version: &str) -> Result<Option<String>, String> {
    let value: Value = serde_saphyr::from_str(index)
        .map_err(|e| format!("the repository's index.yaml is not valid YAML: {e}"))?;
    let entries = value
        .get("entries")
        .and_then(|e| e.get(chart))
        .and_then(Value::as_array)
        .ok_or_else(|| format!("chart {chart:?} is not in the repository's index"))?;
    let wanted = version.trim_start_matches('v');
    let entry = entries
        .iter()
        .find(|e| {
            e.get("version")
                .and_then(Value::as_str)
                .is_some_and(|v| v.trim_start_matches('v') == wanted)
        })
        .ok_or_else(|| format!("chart {chart:?} has no version {version} in the repository"))?;
    Ok(entry
        .get("digest")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_start_matches("sha256:").to_ascii_lowercase()))
}

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ----------------------------------------------------------------------------------- values

/// Merges `overlay` into `base` as Helm merges values files: maps merge key by key, recursively;
/// anything else in `overlay` replaces what `base` has.
pub fn merge_values(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_values(existing, value);
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// JSON pointers (`/a/b/0`) of every leaf of a value (what a Secret contributed, to redact).
pub fn leaf_paths(value: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, path: &mut String, out: &mut BTreeSet<String>) {
        let len = path.len();
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(v, path, out);
                    path.truncate(len);
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut String::new(), &mut out);
    out
}

/// The values with every leaf at or under one of `paths` (JSON pointers) replaced by a
/// `<redacted fnv1a:...>` marker, as Secret values are in object diffs.
pub fn redact_values(values: &Value, paths: &BTreeSet<String>) -> Value {
    let mut out = values.clone();
    for path in paths {
        if let Some(target) = out.pointer_mut(path) {
            redact_leaves(target);
        }
    }
    out
}

fn redact_leaves(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(redact_leaves),
        Value::Array(items) => items.iter_mut().for_each(redact_leaves),
        other => {
            let bytes = match &*other {
                Value::String(s) => s.as_bytes().to_vec(),
                v => v.to_string().into_bytes(),
            };
            *other = Value::String(crate::diff::redaction_marker(&bytes));
        }
    }
}

/// Stable short hash of merged values (what the inventory compares).
pub fn values_hash(values: &Value) -> String {
    let mut sorted = values.clone();
    sorted.sort_all_objects();
    let bytes = serde_json::to_vec(&sorted).unwrap_or_default();
    sha256_hex(&bytes)[..24].to_string()
}

// -------------------------------------------------------------------------------- inventory

/// What flotilla installed for one release, recorded in the profile's inventory ConfigMap
/// (`data.releases`, a JSON list). `values_hash` is empty while an install is in flight, so a
/// crash right after it is repaired by the next pass (and withdraw still finds the release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseEntry {
    /// Release namespace.
    pub namespace: String,
    /// Release name.
    pub name: String,
    /// Repository URL as written in the profile.
    pub repository: String,
    /// Chart name as written in the profile.
    pub chart: String,
    /// Chart version.
    pub version: String,
    /// [`values_hash`] of the merged values installed; empty while in flight.
    #[serde(default)]
    pub values_hash: String,
    /// The release revision helm recorded for flotilla's last install or upgrade.
    #[serde(default)]
    pub revision: u64,
    /// JSON pointers of values that came from Secrets (redacted in diffs; never the values).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub secret_paths: BTreeSet<String>,
}

impl ReleaseEntry {
    /// `helm:<namespace>/<name>`.
    pub fn key(&self) -> String {
        release_key(&self.namespace, &self.name)
    }

    /// Whether the last write completed.
    pub fn complete(&self) -> bool {
        !self.values_hash.is_empty()
    }

    /// The hash shown in the state note: repository, chart, version and values together
    /// (empty while in flight).
    pub fn hash(&self) -> String {
        if !self.complete() {
            return String::new();
        }
        let text = format!(
            "{}\n{}\n{}\n{}",
            self.repository, self.chart, self.version, self.values_hash
        );
        sha256_hex(text.as_bytes())[..24].to_string()
    }

    /// Same chart and values as `other` (revision and in-flight state aside).
    pub fn same_content(&self, other: &ReleaseEntry) -> bool {
        self.repository == other.repository
            && self.chart == other.chart
            && self.version == other.version
            && self.values_hash == other.values_hash
    }
}

// ------------------------------------------------------------------------- release records

/// The live state of a release from the labels of helm's newest storage Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRelease {
    /// Newest revision.
    pub revision: u64,
    /// Its status (`deployed`, `failed`, `pending-install`, `pending-upgrade`, ...).
    pub status: String,
}

/// The newest revision of a release among helm storage Secrets' labels (`name`, `version`,
/// `status`); `None` when there is none.
pub fn newest_revision<'a>(
    labels: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    name: &str,
) -> Option<LiveRelease> {
    labels
        .into_iter()
        .filter(|l| l.get("name").map(String::as_str) == Some(name))
        .filter(|l| l.get(OWNER_LABEL).map(String::as_str) == Some("helm"))
        .filter_map(|l| {
            Some(LiveRelease {
                revision: l.get("version")?.parse().ok()?,
                status: l.get("status").cloned().unwrap_or_default(),
            })
        })
        .max_by_key(|r| r.revision)
}

/// One revision of a release as helm records it (the fields flotilla reads).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReleaseRecord {
    /// Release name.
    pub name: String,
    /// Release namespace.
    pub namespace: String,
    /// Revision.
    pub revision: u64,
    /// `deployed`, `failed`, ...
    pub status: String,
    /// Chart name (from Chart.yaml).
    pub chart: String,
    /// Chart version (from Chart.yaml).
    pub chart_version: String,
    /// The values given at install (`config`), not the chart's defaults.
    pub config: Value,
    /// The rendered manifest.
    pub manifest: String,
}

impl ReleaseRecord {
    /// From helm's JSON form of a release (`helm upgrade -o json`, and the storage Secrets).
    pub fn from_json(value: &Value) -> Result<ReleaseRecord, String> {
        let text = |path: &str| {
            value
                .pointer(path)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if !value.is_object() {
            return Err("a release record is not a JSON object".into());
        }
        Ok(ReleaseRecord {
            name: text("/name"),
            namespace: text("/namespace"),
            revision: value.get("version").and_then(Value::as_u64).unwrap_or(0),
            status: text("/info/status"),
            chart: text("/chart/metadata/name"),
            chart_version: text("/chart/metadata/version"),
            config: match value.get("config") {
                Some(Value::Null) | None => Value::Object(Default::default()),
                Some(config) => config.clone(),
            },
            manifest: text("/manifest"),
        })
    }

    /// From the `release` value of a storage Secret (after Kubernetes' own base64): helm's
    /// base64 of the gzipped JSON release.
    pub fn decode(data: &[u8]) -> Result<ReleaseRecord, String> {
        let text: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|e| format!("release record is not base64: {e}"))?;
        let json = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .take(256 * 1024 * 1024)
                .read_to_end(&mut out)
                .map_err(|e| format!("release record is not gzip: {e}"))?;
            out
        } else {
            bytes
        };
        let value: Value = serde_json::from_slice(&json)
            .map_err(|e| format!("release record is not JSON: {e}"))?;
        ReleaseRecord::from_json(&value)
    }
}

// ---------------------------------------------------------------------------------- decide

/// Why helm must run for a release to be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Recorded, same chart and values, live at the recorded revision and deployed: no helm.
    Unchanged,
    /// Nothing recorded and no release there.
    Install,
    /// A release of that name exists that flotilla did not record (installed by hand, or an
    /// install interrupted before its record): `helm upgrade --install` takes it over.
    Adopt,
    /// The chart version changed.
    Version {
        /// Recorded version.
        from: String,
    },
    /// Another repository or chart name.
    Chart,
    /// Only the values changed.
    Values,
    /// Same chart and values, but the live release is not what flotilla left: reinstalled or
    /// upgraded again.
    Repair(String),
}

/// Whether a release must be (re)installed. `recorded`: the inventory's entry; `live`: helm's
/// newest storage Secret; `desired`: what this render wants (its `revision` is ignored).
pub fn decide(
    recorded: Option<&ReleaseEntry>,
    live: Option<&LiveRelease>,
    desired: &ReleaseEntry,
) -> Decision {
    let Some(recorded) = recorded else {
        return if live.is_some() {
            Decision::Adopt
        } else {
            Decision::Install
        };
    };
    if recorded.repository != desired.repository || recorded.chart != desired.chart {
        return Decision::Chart;
    }
    if recorded.version != desired.version {
        return Decision::Version {
            from: recorded.version.clone(),
        };
    }
    if recorded.values_hash != desired.values_hash {
        return if recorded.complete() {
            Decision::Values
        } else {
            Decision::Repair("its last install or upgrade did not complete".into())
        };
    }
    match live {
        None => Decision::Repair("the release is missing".into()),
        Some(l) if l.revision != recorded.revision => Decision::Repair(format!(
            "the release is at revision {} ({}), flotilla wrote revision {}",
            l.revision, l.status, recorded.revision
        )),
        Some(l) if l.status != "deployed" => {
            Decision::Repair(format!("the release is {}", l.status))
        }
        Some(_) => Decision::Unchanged,
    }
}

/// Whether going `from` → `to` is a downgrade (semver, a leading `v` ignored; versions that do not
/// parse compare as text).
pub fn is_downgrade(from: &str, to: &str) -> bool {
    let parse = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    match (parse(from), parse(to)) {
        (Some(from), Some(to)) => to < from,
        _ => to < from,
    }
}

/// The note's phrase for an install or upgrade that ran (or would run, when `dry`): `installed
/// web 1.0.0`, `upgraded web 1.0.0 → 1.1.0`, `downgraded web 1.1.0 → 1.0.0`, `values changed
/// (web 1.0.0)`, `reinstalled web 1.0.0 (the release is missing)`. `live_version` is the chart
/// version of the release that was there, when known.
pub fn describe(
    decision: &Decision,
    chart: &str,
    version: &str,
    live_version: Option<&str>,
    dry: bool,
) -> String {
    let (verb, rest) = match decision {
        Decision::Unchanged => ("unchanged", format!("({chart} {version})")),
        Decision::Install => ("installed", format!("{chart} {version}")),
        Decision::Adopt => match live_version {
            Some(from) if from != version => (
                if is_downgrade(from, version) {
                    "downgraded"
                } else {
                    "upgraded"
                },
                format!("{chart} {from} → {version} (release taken over)"),
            ),
            _ => (
                "upgraded",
                format!("{chart} {version} (release taken over)"),
            ),
        },
        Decision::Version { from } => {
            let from = live_version.unwrap_or(from);
            (
                if is_downgrade(from, version) {
                    "downgraded"
                } else {
                    "upgraded"
                },
                format!("{chart} {from} → {version}"),
            )
        }
        Decision::Chart => (
            "upgraded",
            format!("to chart {chart} {version} (chart source changed)"),
        ),
        Decision::Values => ("values changed", format!("({chart} {version})")),
        Decision::Repair(why) => ("reinstalled", format!("{chart} {version} ({why})")),
    };
    if dry {
        let verb = match verb {
            "installed" => "would install",
            "upgraded" => "would upgrade",
            "downgraded" => "would downgrade",
            "values changed" => "values would change",
            "reinstalled" => "would reinstall",
            other => other,
        };
        format!("{verb} {rest}")
    } else {
        format!("{verb} {rest}")
    }
}

// ------------------------------------------------------------------------------------ diffs

/// Unified diff of a release's values (`--- live/values/<ns>/<name>`), leaves under
/// `secret_paths` redacted on both sides; `None` when equal.
pub fn values_diff(
    namespace: &str,
    name: &str,
    old: &Value,
    new: &Value,
    secret_paths: &BTreeSet<String>,
) -> Option<String> {
    let render = |v: &Value| {
        let mut clean = redact_values(v, secret_paths);
        clean.sort_all_objects();
        match &clean {
            Value::Object(m) if m.is_empty() => String::new(),
            _ => serde_saphyr::to_string(&clean).unwrap_or_else(|_| clean.to_string() + "\n"),
        }
    };
    let (old_text, new_text) = (render(old), render(new));
    if old_text == new_text {
        return None;
    }
    let path = format!("values/{namespace}/{name}");
    Some(
        similar::TextDiff::from_lines(&old_text, &new_text)
            .unified_diff()
            .context_radius(3)
            .header(&format!("live/{path}"), &format!("desired/{path}"))
            .to_string(),
    )
}

/// The objects of a rendered manifest by key (documents that are not objects are skipped).
fn manifest_objects(manifest: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for document in split_documents(manifest) {
        if let Ok(value) = serde_saphyr::from_str::<Value>(document)
            && value.get("kind").is_some()
        {
            out.insert(object_key(&value), value);
        }
    }
    out
}

/// Splits multi-document YAML at `---` lines.
fn split_documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            out.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    out.push(&text[start..]);
    out.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Per-object unified diffs of two rendered manifests (normalized, Secret values redacted, as
/// for applied objects); `None` when they hold the same objects.
pub fn manifest_diff(old: &str, new: &str) -> Option<String> {
    let (old, new) = (manifest_objects(old), manifest_objects(new));
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let text: String = keys
        .into_iter()
        .filter_map(|k| object_diff(old.get(k), new.get(k)))
        .collect();
    (!text.is_empty()).then_some(text)
}

/// helm's stderr as a message: `Error: ` prefixes gone, private paths hidden, capped.
pub fn clean_stderr(stderr: &str, hide: &[(&str, &str)]) -> String {
    const MAX: usize = 4096;
    let mut text = stderr.trim().to_string();
    for (path, replacement) in hide {
        if !path.is_empty() {
            text = text.replace(path, replacement);
        }
    }
    let text = text
        .lines()
        .map(|l| l.strip_prefix("Error: ").unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    crate::binary::capped_message(text, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chart_locations_follow_sveltos_forms() {
        let cases = [
            (
                "https://charts.jetstack.io/",
                "jetstack",
                "jetstack/cert-manager",
                ChartLocation::Repository {
                    url: "https://charts.jetstack.io".into(),
                    chart: "cert-manager".into(),
                },
            ),
            (
                "http://127.0.0.1:8080/charts",
                "local",
                "web",
                ChartLocation::Repository {
                    url: "http://127.0.0.1:8080/charts".into(),
                    chart: "web".into(),
                },
            ),
            (
                "oci://registry-1.docker.io/bitnamicharts/vault",
                "oci-vault",
                "oci://registry-1.docker.io/bitnamicharts/vault",
                ChartLocation::Oci {
                    reference: "oci://registry-1.docker.io/bitnamicharts/vault".into(),
                    plain_http: false,
                },
            ),
            (
                "oci://127.0.0.1:5000/charts",
                "charts",
                "charts/web",
                ChartLocation::Oci {
                    reference: "oci://127.0.0.1:5000/charts/web".into(),
                    plain_http: true,
                },
            ),
            (
                "oci://localhost:5000/charts/web",
                "x",
                "web",
                ChartLocation::Oci {
                    reference: "oci://localhost:5000/charts/web".into(),
                    plain_http: true,
                },
            ),
        ];
        for (url, repo, chart, want) in cases {
            assert_eq!(chart_location(url, repo, chart), want, "{url} {chart}");
        }
        assert_eq!(
            chart_location("oci://r.example/a", "a", "a/web").chart_name(),
            "web"
        );
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1:5000",
            "registry.example",
            "example.com:443",
            "[fe80::1]:5",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn values_merge_like_helm_and_hash_ignores_key_order() {
        let mut base = json!({"a": {"x": 1, "y": [1, 2]}, "b": "keep"});
        merge_values(&mut base, json!({"a": {"y": [3], "z": true}, "c": null}));
        assert_eq!(
            base,
            json!({"a": {"x": 1, "y": [3], "z": true}, "b": "keep", "c": null})
        );
        let one: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).expect("json");
        let two: Value = serde_json::from_str(r#"{"a":{"c":3,"d":2},"b":1}"#).expect("json");
        assert_eq!(values_hash(&one), values_hash(&two));
        assert_ne!(values_hash(&one), values_hash(&json!({"b": 2})));
    }

    #[test]
    fn secret_leaves_are_redacted_in_values_diffs() {
        let secret = json!({"auth": {"password": "hunter2"}});
        let paths = leaf_paths(&secret);
        assert_eq!(paths, BTreeSet::from(["/auth/password".to_string()]));
        let old = json!({"replicas": 1, "auth": {"password": "hunter2", "user": "u"}});
        let new = json!({"replicas": 2, "auth": {"password": "swordfish", "user": "u"}});
        let diff = values_diff("apps", "web", &old, &new, &paths).expect("differs");
        assert!(diff.starts_with("--- live/values/apps/web\n+++ desired/values/apps/web\n"));
        assert!(
            !diff.contains("hunter2") && !diff.contains("swordfish"),
            "{diff}"
        );
        assert!(diff.contains("-  password: <redacted fnv1a:"), "{diff}");
        assert!(diff.contains("+replicas: 2"), "{diff}");
        assert!(values_diff("a", "b", &old, &old, &paths).is_none());
    }

    #[test]
    fn manifest_diffs_are_per_object_and_redact_secrets() {
        let old = "---\n# Source: web/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: \"1\"\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: \"old-pass\"\n";
        let new = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: \"2\"\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: \"new-pass\"\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: added\n";
        let diff = manifest_diff(old, new).expect("differs");
        assert!(diff.contains("--- live/ConfigMap//web"), "{diff}");
        assert!(
            diff.contains("+  a: '2'") || diff.contains("+  a: \"2\""),
            "{diff}"
        );
        assert!(diff.contains("+++ desired/Service//added"), "{diff}");
        assert!(
            !diff.contains("old-pass") && !diff.contains("new-pass"),
            "{diff}"
        );
        assert!(manifest_diff(old, old).is_none());
    }

    fn entry(version: &str, values_hash: &str, revision: u64) -> ReleaseEntry {
        ReleaseEntry {
            namespace: "apps".into(),
            name: "web".into(),
            repository: "http://127.0.0.1:1/charts".into(),
            chart: "web".into(),
            version: version.into(),
            values_hash: values_hash.into(),
            revision,
            secret_paths: BTreeSet::new(),
        }
    }

    #[test]
    fn decisions() {
        let deployed = |revision| LiveRelease {
            revision,
            status: "deployed".into(),
        };
        let desired = entry("1.1.0", "h1", 0);
        let cases: Vec<(Option<ReleaseEntry>, Option<LiveRelease>, Decision)> = vec![
            (None, None, Decision::Install),
            (None, Some(deployed(1)), Decision::Adopt),
            (
                Some(entry("1.0.0", "h1", 1)),
                Some(deployed(1)),
                Decision::Version {
                    from: "1.0.0".into(),
                },
            ),
            (
                Some(entry("1.1.0", "h0", 1)),
                Some(deployed(1)),
                Decision::Values,
            ),
            (
                Some(entry("1.1.0", "h1", 3)),
                Some(deployed(3)),
                Decision::Unchanged,
            ),
            (
                Some(entry("1.1.0", "h1", 3)),
                None,
                Decision::Repair("the release is missing".into()),
            ),
            (
                Some(entry("1.1.0", "h1", 3)),
                Some(deployed(4)),
                Decision::Repair(
                    "the release is at revision 4 (deployed), flotilla wrote revision 3".into(),
                ),
            ),
            (
                Some(entry("1.1.0", "h1", 3)),
                Some(LiveRelease {
                    revision: 3,
                    status: "failed".into(),
                }),
                Decision::Repair("the release is failed".into()),
            ),
            (
                Some(entry("1.1.0", "", 0)),
                Some(deployed(1)),
                Decision::Repair("its last install or upgrade did not complete".into()),
            ),
        ];
        for (recorded, live, want) in cases {
            assert_eq!(
                decide(recorded.as_ref(), live.as_ref(), &desired),
                want,
                "{recorded:?} {live:?}"
            );
        }
    }

    #[test]
    fn phrases_say_upgrade_or_downgrade() {
        let v = |from: &str| Decision::Version { from: from.into() };
        assert_eq!(
            describe(&v("1.0.0"), "web", "1.1.0", None, false),
            "upgraded web 1.0.0 → 1.1.0"
        );
        assert_eq!(
            describe(&v("1.10.0"), "web", "1.9.0", None, false),
            "downgraded web 1.10.0 → 1.9.0"
        );
        assert_eq!(
            describe(&Decision::Install, "web", "1.0.0", None, true),
            "would install web 1.0.0"
        );
        assert_eq!(
            describe(&Decision::Values, "web", "1.0.0", None, false),
            "values changed (web 1.0.0)"
        );
        assert!(is_downgrade("v2.0.0", "v1.9.9"));
        assert!(!is_downgrade("1.0.0", "1.0.1"));
    }

    #[test]
    fn newest_revision_from_storage_labels() {
        let labels = |name: &str, version: &str, status: &str| {
            BTreeMap::from([
                ("owner".to_string(), "helm".to_string()),
                ("name".to_string(), name.to_string()),
                ("version".to_string(), version.to_string()),
                ("status".to_string(), status.to_string()),
            ])
        };
        let all = [
            labels("web", "2", "superseded"),
            labels("web", "10", "deployed"),
            labels("other", "11", "deployed"),
            labels("web", "9", "superseded"),
        ];
        assert_eq!(
            newest_revision(&all, "web"),
            Some(LiveRelease {
                revision: 10,
                status: "deployed".into()
            })
        );
        assert_eq!(newest_revision(&all, "none"), None);
    }

    #[test]
    fn records_decode_from_storage_and_json() {
        use std::io::Write as _;
        let release = json!({
            "name": "web", "namespace": "apps", "version": 3,
            "info": {"status": "deployed"},
            "chart": {"metadata": {"name": "web", "version": "1.1.0"}},
            "config": {"greeting": "hi"},
            "manifest": "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(release.to_string().as_bytes()).expect("gzip");
        let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
        let record = ReleaseRecord::decode(data.as_bytes()).expect("decodes");
        assert_eq!(record.revision, 3);
        assert_eq!(record.chart_version, "1.1.0");
        assert_eq!(record.status, "deployed");
        assert_eq!(record.config, json!({"greeting": "hi"}));
        assert!(record.manifest.contains("kind: ConfigMap"));
        assert!(ReleaseRecord::decode(b"not base64!").is_err());
        let no_config = ReleaseRecord::from_json(&json!({"config": null})).expect("object");
        assert_eq!(no_config.config, json!({}));
    }

    #[test]
    fn digests_come_from_the_index() {
        let index = "apiVersion: v1\nentries:\n  web:\n  - version: 1.1.0\n    digest: ABC\n  - version: 1.0.0\n";
        assert_eq!(
            index_digest(index, "web", "1.1.0").expect("found"),
            Some("abc".into())
        );
        assert_eq!(index_digest(index, "web", "v1.0.0").expect("found"), None);
        let err = index_digest(index, "web", "9.9.9").expect_err("missing");
        assert!(err.contains("no version 9.9.9"), "{err}");
        assert!(index_digest(index, "db", "1.0.0").is_err());
    }

    #[test]
    fn stderr_is_cleaned() {
        let msg = clean_stderr(
            "Error: INSTALLATION FAILED: open /tmp/flotilla-helm-x/values.yaml: denied\n\n",
            &[("/tmp/flotilla-helm-x/", "")],
        );
        assert_eq!(msg, "INSTALLATION FAILED: open values.yaml: denied");
        assert_eq!(clean_stderr("", &[]), "(no message)");
    }
}
