//! Cross-document validation: names, labels, references, cycles, paths and template syntax.
//! Every check reports into the same [`Diagnostics`], so one run lists every problem.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::Spanned;

use super::load::{Parsed, is_template, source_entries, source_key};
use super::types::*;
use super::yaml::{check_manifests, check_values, check_yaml};
use super::{
    Classifier, Cluster, ConfigRepo, Diagnostics, DocPos, Origin, Profile, Source, SourceKey,
};
use crate::render::sandbox::Sandbox;
use crate::select::{validate_label_key, validate_label_value};
use crate::source::FileTree;

/// Profile names become part of a ConfigMap name (`flotilla-inventory-<profile>`, ≤ 253).
const MAX_PROFILE_NAME: usize = 253 - "flotilla-inventory-".len();

/// Builds the repo from parsed documents, reporting every problem into `diags`. The returned
/// value is only meaningful when `diags` stays empty.
pub(super) fn build(tree: FileTree, parsed: Parsed, diags: &mut Diagnostics) -> ConfigRepo {
    let sandbox = Sandbox::new();
    let clusters = build_clusters(parsed.clusters, diags);
    let sources = build_sources(parsed.config_maps, parsed.secrets, &sandbox, diags);
    let classifiers = build_classifiers(parsed.classifiers, diags);
    let profiles = build_profiles(parsed.profiles, &clusters, &sources, &tree, &sandbox, diags);
    ConfigRepo {
        clusters,
        profiles,
        classifiers,
        sources,
        tree,
    }
}

/// Records a duplicate, naming where the first one is.
fn duplicate<T>(
    seen: &BTreeMap<String, T>,
    origin_of: impl Fn(&T) -> &Origin,
    what: &str,
    name: &str,
    at: &Origin,
    diags: &mut Diagnostics,
) -> bool {
    if let Some(first) = seen.get(name) {
        diags.error(
            &at.file,
            at.line,
            format!(
                "duplicate {what} name {name:?} (first defined at {})",
                origin_of(first)
            ),
        );
        true
    } else {
        false
    }
}

/// Kubernetes object names (DNS-1123 subdomain): what clusters, profiles and classifiers are
/// named, since the names end up in object names and file names.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!("name {name:?} is longer than 253 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok_chars || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(format!(
            "name {name:?} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// DNS-1123 label: namespaces and Helm release names.
fn validate_dns_label(what: &str, value: &str, max: usize) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if value.is_empty()
        || value.len() > max
        || !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !alnum(value.chars().next())
        || !alnum(value.chars().last())
    {
        return Err(format!(
            "{what} {value:?} is not a valid DNS label (at most {max} lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

fn check_labels(
    pos: &DocPos,
    labels: &BTreeMap<String, Spanned<String>>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut plain = BTreeMap::new();
    for (key, value) in labels {
        let at = pos.at(&value.referenced);
        if let Err(e) = validate_label_key(key) {
            diags.error(&at.file, at.line, e.to_string());
        }
        if let Err(e) = validate_label_value(&value.value) {
            diags.error(&at.file, at.line, e.to_string());
        }
        plain.insert(key.clone(), value.value.clone());
    }
    plain
}

fn build_clusters(
    docs: Vec<(ClusterDoc, DocPos, serde_json::Value)>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Cluster> {
    let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
    for (doc, pos, document) in docs {
        let origin = pos.at(&doc.metadata.name.referenced);
        let name = doc.metadata.name.value.clone();
        if let Err(e) = validate_name(&name) {
            diags.error(&origin.file, origin.line, e);
        }
        let labels = check_labels(&pos, &doc.metadata.labels, diags);
        let kubeconfig = match &doc.spec.kubeconfig {
            Some(k) => {
                let at = pos.at(&k.referenced);
                if let Some(file) = &k.value.file {
                    if k.value.in_cluster {
                        diags.error(
                            &at.file,
                            at.line,
                            "kubeconfig: set either file or inCluster, not both",
                        );
                    }
                    if file.is_empty()
                        || file.starts_with('/')
                        || file.split(['/', '\\']).any(|c| c == "..")
                    {
                        diags.error(
                            &at.file,
                            at.line,
                            format!(
                                "kubeconfig.file {file:?} must be a relative path inside --kubeconfig-dir (no '..', not absolute)"
                            ),
                        );
                    }
                }
                k.value.clone()
            }
            None => KubeconfigRef::default(),
        };
        if duplicate(&clusters, |c| &c.origin, "Cluster", &name, &origin, diags) {
            continue;
        }
        clusters.insert(
            name.clone(),
            Cluster {
                name,
                origin,
                labels,
                kubeconfig,
                paused: doc.spec.paused,
                document,
            },
        );
    }
    clusters
}

fn check_template(
    sandbox: &Sandbox,
    file: &str,
    first_line: usize,
    name: &str,
    source: &str,
    secret: bool,
    diags: &mut Diagnostics,
) {
    if let Err(e) = sandbox.check(name, source) {
        let line = first_line + e.line.unwrap_or(1).saturating_sub(1);
        let message = if secret {
            "template syntax error in a Secret value (details withheld)".to_string()
        } else {
            format!("template syntax error: {}", e.message)
        };
        diags.error(file, line, message);
    }
}

fn build_sources(
    config_maps: Vec<(ConfigMapDoc, DocPos)>,
    secrets: Vec<(SecretDoc, DocPos)>,
    sandbox: &Sandbox,
    diags: &mut Diagnostics,
) -> BTreeMap<SourceKey, Source> {
    let mut sources: BTreeMap<SourceKey, Source> = BTreeMap::new();
    let mut all = Vec::new();
    for (doc, pos) in config_maps {
        let entries = source_entries(&pos, &doc.data, false, diags);
        all.push((SourceKind::ConfigMap, doc.metadata, pos, entries));
    }
    for (doc, pos) in secrets {
        let mut entries = source_entries(&pos, &doc.data, true, diags);
        entries.extend(source_entries(&pos, &doc.string_data, false, diags));
        all.push((SourceKind::Secret, doc.metadata, pos, entries));
    }
    for (kind, metadata, pos, entries) in all {
        let origin = pos.at(&metadata.name.referenced);
        if let Err(e) = validate_name(&metadata.name.value) {
            diags.error(&origin.file, origin.line, e);
        }
        if let Some(ns) = &metadata.namespace
            && let Err(e) = validate_dns_label("namespace", ns, 63)
        {
            diags.error(&origin.file, origin.line, e);
        }
        let key = source_key(kind, &metadata);
        let template = is_template(&metadata.annotations);
        let secret = kind == SourceKind::Secret;
        for entry in &entries {
            if template {
                let name = format!("{key} [{}]", entry.key);
                check_template(
                    sandbox,
                    &pos.file,
                    entry.line,
                    &name,
                    &entry.text,
                    secret,
                    diags,
                );
            } else if let Err((line, message)) = check_yaml(&entry.text) {
                // Syntax is checked here for every source; whether the documents are manifests
                // or Helm values depends on who references the source (see `reference`).
                let (line, message) = if secret {
                    (
                        entry.line,
                        format!(
                            "{key} data key {:?}: invalid YAML (details withheld)",
                            entry.key
                        ),
                    )
                } else {
                    (
                        entry.line + line - 1,
                        format!("{key} data key {:?}: {message}", entry.key),
                    )
                };
                diags.error(&pos.file, line, message);
            }
        }
        if let Some(first) = sources.get(&key) {
            diags.error(
                &origin.file,
                origin.line,
                format!("duplicate source {key} (first defined at {})", first.origin),
            );
            continue;
        }
        sources.insert(
            key.clone(),
            Source {
                key,
                origin,
                template,
                entries,
            },
        );
    }
    sources
}

/// Parses a Kubernetes-style version (`1.24.0`, `v1.24.0`, `v1.34.2-eks-1a2b`) by its numbers.
pub fn parse_version(text: &str) -> Result<semver::Version, String> {
    let trimmed = text.trim().trim_start_matches('v');
    semver::Version::parse(trimmed).map_err(|e| format!("invalid semantic version {text:?}: {e}"))
}

fn build_classifiers(
    docs: Vec<(ClassifierDoc, DocPos)>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Classifier> {
    let mut classifiers: BTreeMap<String, Classifier> = BTreeMap::new();
    for (doc, pos) in docs {
        let origin = pos.at(&doc.metadata.name.referenced);
        let name = doc.metadata.name.value.clone();
        if let Err(e) = validate_name(&name) {
            diags.error(&origin.file, origin.line, e);
        }
        if doc.spec.classifier_labels.is_empty() {
            diags.error(
                &origin.file,
                origin.line,
                format!("Classifier {name:?}: classifierLabels must not be empty"),
            );
        }
        let mut keys = BTreeSet::new();
        for label in &doc.spec.classifier_labels {
            let at = pos.at(&label.key.referenced);
            if let Err(e) = validate_label_key(&label.key.value) {
                diags.error(&at.file, at.line, e.to_string());
            }
            let at_value = pos.at(&label.value.referenced);
            if let Err(e) = validate_label_value(&label.value.value) {
                diags.error(&at_value.file, at_value.line, e.to_string());
            }
            if !keys.insert(label.key.value.clone()) {
                diags.error(
                    &at.file,
                    at.line,
                    format!("duplicate classifier label key {:?}", label.key.value),
                );
            }
        }
        let mut version_constraints = Vec::new();
        for constraint in &doc.spec.kubernetes_version_constraints {
            let version = &constraint.value.version;
            match parse_version(&version.value) {
                Ok(v) => version_constraints.push((constraint.value.comparison, v)),
                Err(e) => {
                    let at = pos.at(&version.referenced);
                    diags.error(&at.file, at.line, e);
                }
            }
        }
        if let Some(drc) = &doc.spec.deployed_resource_constraint {
            for selector in &drc.resource_selectors {
                let at = pos.at(&selector.referenced);
                let s = &selector.value;
                if s.version.is_empty() || s.kind.is_empty() {
                    diags.error(
                        &at.file,
                        at.line,
                        "resourceSelector needs a version and a kind",
                    );
                }
                for filter in &s.label_filters {
                    if let Err(e) = validate_label_key(&filter.key) {
                        diags.error(&at.file, at.line, e.to_string());
                    }
                    match (filter.operation, &filter.value) {
                        (LabelOperation::Equal | LabelOperation::Different, None) => diags.error(
                            &at.file,
                            at.line,
                            format!(
                                "labelFilter on {:?}: operation {:?} needs a value",
                                filter.key, filter.operation
                            ),
                        ),
                        (LabelOperation::Has | LabelOperation::DoesNotHave, Some(_)) => diags
                            .error(
                                &at.file,
                                at.line,
                                format!(
                                    "labelFilter on {:?}: operation {:?} takes no value",
                                    filter.key, filter.operation
                                ),
                            ),
                        _ => {}
                    }
                }
            }
        }
        if duplicate(
            &classifiers,
            |c| &c.origin,
            "Classifier",
            &name,
            &origin,
            diags,
        ) {
            continue;
        }
        classifiers.insert(
            name.clone(),
            Classifier {
                name,
                origin,
                pos,
                spec: doc.spec,
                version_constraints,
            },
        );
    }
    classifiers
}

/// What a referenced text must be: Kubernetes manifests (policyRefs) or Helm values (valuesFrom).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Manifests,
    Values,
}

impl Purpose {
    fn noun(self) -> &'static str {
        match self {
            Purpose::Manifests => "manifests",
            Purpose::Values => "Helm values",
        }
    }
}

/// Checks untemplated text for its purpose, returning the line inside it and the problem.
fn check_text(purpose: Purpose, text: &str) -> Result<(), (usize, String)> {
    match purpose {
        Purpose::Manifests => check_manifests(text).map(|_| ()),
        Purpose::Values => check_values(text).map(|_| ()),
    }
}

/// The fields policyRefs and valuesFrom share: a source by kind and name, or a repo path.
struct Reference<'a> {
    purpose: Purpose,
    kind: Option<SourceKind>,
    name: Option<&'a str>,
    namespace: Option<&'a str>,
    path: Option<&'a str>,
    template: bool,
}

impl<'a> From<&'a PolicyRef> for Reference<'a> {
    fn from(p: &'a PolicyRef) -> Self {
        Reference {
            purpose: Purpose::Manifests,
            kind: p.kind,
            name: p.name.as_deref(),
            namespace: p.namespace.as_deref(),
            path: p.path.as_deref(),
            template: p.template,
        }
    }
}

impl<'a> From<&'a ValuesFrom> for Reference<'a> {
    fn from(v: &'a ValuesFrom) -> Self {
        Reference {
            purpose: Purpose::Values,
            kind: v.kind,
            name: v.name.as_deref(),
            namespace: v.namespace.as_deref(),
            path: v.path.as_deref(),
            template: false,
        }
    }
}

/// Context shared by the checks of one profile.
struct ProfileCheck<'a> {
    pos: &'a DocPos,
    tree: &'a FileTree,
    sources: &'a BTreeMap<SourceKey, Source>,
    sandbox: &'a Sandbox,
}

impl ProfileCheck<'_> {
    /// Checks a `kind`+`name` or `path` reference, reporting into `diags`.
    fn reference(&self, what: &str, at: &Origin, r: Reference, diags: &mut Diagnostics) {
        match (r.kind, r.name, r.path) {
            (Some(kind), Some(name), None) => {
                let key = SourceKey {
                    kind,
                    namespace: r.namespace.unwrap_or("default").to_string(),
                    name: name.to_string(),
                };
                match self.sources.get(&key) {
                    None => diags.error(
                        &at.file,
                        at.line,
                        format!("{what}: {key} not found in sources/"),
                    ),
                    Some(source) if !source.template => {
                        for entry in &source.entries {
                            let Err((line, message)) = check_text(r.purpose, &entry.text) else {
                                continue;
                            };
                            let (line, message) = if source.is_secret() {
                                (
                                    entry.line,
                                    format!(
                                        "{key} data key {:?}: invalid {} (details withheld)",
                                        entry.key,
                                        r.purpose.noun()
                                    ),
                                )
                            } else {
                                (
                                    entry.line + line - 1,
                                    format!("{key} data key {:?}: {message}", entry.key),
                                )
                            };
                            diags.error(&source.origin.file, line, message);
                        }
                    }
                    Some(_) => {}
                }
                if r.template {
                    diags.error(
                        &at.file,
                        at.line,
                        format!(
                            "{what}: `template` applies to path references; annotate {key} with flotilla.dev/template: \"true\" instead"
                        ),
                    );
                }
            }
            (None, None, Some(path)) => self.path(what, at, path, r.template, r.purpose, diags),
            (Some(_), None, None) => {
                diags.error(&at.file, at.line, format!("{what}: kind needs a name"))
            }
            (None, Some(_), None) => diags.error(
                &at.file,
                at.line,
                format!("{what}: name needs a kind (ConfigMap or Secret)"),
            ),
            (None, None, None) => diags.error(
                &at.file,
                at.line,
                format!("{what}: set kind and name (a source) or path (a file or folder)"),
            ),
            _ => diags.error(
                &at.file,
                at.line,
                format!("{what}: set either kind and name, or path, not both"),
            ),
        }
    }

    /// A repo path: it must stay in the repo and hold manifests (or templates of them).
    fn path(
        &self,
        what: &str,
        at: &Origin,
        path: &str,
        template: bool,
        purpose: Purpose,
        diags: &mut Diagnostics,
    ) {
        let resolved = match self.tree.resolve(path) {
            Ok(resolved) => resolved,
            Err(e) => {
                diags.error(&at.file, at.line, format!("{what}: {e}"));
                return;
            }
        };
        let files = match self.tree.files_at(&resolved) {
            Ok(files) => files,
            Err(e) => {
                diags.error(&at.file, at.line, format!("{what}: {e}"));
                return;
            }
        };
        let manifests: Vec<_> = files
            .into_iter()
            .filter(|(p, _)| is_manifest_file(p) || p == &resolved)
            .collect();
        if manifests.is_empty() {
            diags.error(
                &at.file,
                at.line,
                format!("{what}: {path:?} holds no .yaml, .yml or .json files"),
            );
        }
        for (file, bytes) in manifests {
            let Ok(text) = std::str::from_utf8(bytes) else {
                diags.error(&file, 1, "file is not valid UTF-8 text");
                continue;
            };
            if template {
                check_template(self.sandbox, &file, 1, &file, text, false, diags);
            } else if let Err((line, message)) = check_text(purpose, text) {
                diags.error(&file, line, message);
            }
        }
    }

    fn template(&self, at: &Origin, name: &str, source: &str, diags: &mut Diagnostics) {
        check_template(self.sandbox, &at.file, at.line, name, source, false, diags);
    }
}

/// Files a path reference picks up from a folder.
pub fn is_manifest_file(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json")
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn build_profiles(
    docs: Vec<(ProfileDoc, DocPos)>,
    clusters: &BTreeMap<String, Cluster>,
    sources: &BTreeMap<SourceKey, Source>,
    tree: &FileTree,
    sandbox: &Sandbox,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Profile> {
    let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
    let names: BTreeSet<String> = docs
        .iter()
        .map(|(d, _)| d.metadata.name.value.clone())
        .collect();
    for (doc, pos) in docs {
        let origin = pos.at(&doc.metadata.name.referenced);
        let name = doc.metadata.name.value.clone();
        if let Err(e) = validate_name(&name) {
            diags.error(&origin.file, origin.line, e);
        } else if name.len() > MAX_PROFILE_NAME {
            diags.error(
                &origin.file,
                origin.line,
                format!("profile name {name:?} is longer than {MAX_PROFILE_NAME} characters"),
            );
        }
        let spec = &doc.spec;
        let selector = match &spec.cluster_selector {
            Some(s) => match s.value.compile() {
                Ok(selector) => Some(selector),
                Err(e) => {
                    let at = pos.at(&s.referenced);
                    diags.error(&at.file, at.line, format!("clusterSelector: {e}"));
                    None
                }
            },
            None => None,
        };
        for r in &spec.cluster_refs {
            if !clusters.contains_key(&r.value) {
                let at = pos.at(&r.referenced);
                diags.error(
                    &at.file,
                    at.line,
                    format!("clusterRefs: cluster {:?} is not in clusters/", r.value),
                );
            }
        }
        for d in &spec.depends_on {
            let at = pos.at(&d.referenced);
            if d.value == name {
                diags.error(
                    &at.file,
                    at.line,
                    "dependsOn: a profile cannot depend on itself",
                );
            } else if !names.contains(&d.value) {
                diags.error(
                    &at.file,
                    at.line,
                    format!("dependsOn: profile {:?} is not in profiles/", d.value),
                );
            }
        }
        for exclusion in &spec.drift_exclusions {
            for path in &exclusion.paths {
                if !path.value.starts_with('/') {
                    let at = pos.at(&path.referenced);
                    diags.error(
                        &at.file,
                        at.line,
                        format!(
                            "driftExclusions: path {:?} must be a JSON pointer starting with '/'",
                            path.value
                        ),
                    );
                }
            }
        }
        let check = ProfileCheck {
            pos: &pos,
            tree,
            sources,
            sandbox,
        };
        for r in &spec.policy_refs {
            let at = check.pos.at(&r.referenced);
            check.reference("policyRefs", &at, (&r.value).into(), diags);
        }
        for k in &spec.kustomization_refs {
            let at = check.pos.at(&k.referenced);
            match tree.resolve(&k.value.path) {
                Ok(dir) => {
                    let has_kustomization =
                        ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                            .iter()
                            .any(|f| tree.resolve(&format!("{dir}/{f}")).is_ok());
                    if !has_kustomization {
                        diags.error(
                            &at.file,
                            at.line,
                            format!(
                                "kustomizationRefs: {:?} has no kustomization.yaml",
                                k.value.path
                            ),
                        );
                    }
                }
                Err(e) => diags.error(&at.file, at.line, format!("kustomizationRefs: {e}")),
            }
            if let Some(ns) = &k.value.target_namespace
                && let Err(e) = validate_dns_label("targetNamespace", ns, 63)
            {
                diags.error(&at.file, at.line, e);
            }
        }
        let mut releases = BTreeMap::new();
        for h in &spec.helm_charts {
            let at = check.pos.at(&h.referenced);
            let c = &h.value;
            if !["http://", "https://", "oci://"]
                .iter()
                .any(|s| c.repository_url.starts_with(s))
            {
                diags.error(
                    &at.file,
                    at.line,
                    format!(
                        "helmCharts: repositoryURL {:?} must start with http://, https:// or oci://",
                        c.repository_url
                    ),
                );
            }
            if let Err(e) = parse_version(&c.chart_version) {
                diags.error(&at.file, at.line, format!("helmCharts: chartVersion: {e}"));
            }
            if let Err(e) = validate_dns_label("releaseName", &c.release_name, 53) {
                diags.error(&at.file, at.line, format!("helmCharts: {e}"));
            }
            if let Err(e) = validate_dns_label("releaseNamespace", &c.release_namespace, 63) {
                diags.error(&at.file, at.line, format!("helmCharts: {e}"));
            }
            let release = format!("{}/{}", c.release_namespace, c.release_name);
            if let Some(first) = releases.insert(release.clone(), at.line) {
                diags.error(
                    &at.file,
                    at.line,
                    format!("helmCharts: release {release} is declared twice in this profile (first at line {first})"),
                );
            }
            if let Some(values) = &c.values {
                let at = check.pos.at(&values.referenced);
                check.template(&at, &format!("{release} values"), &values.value, diags);
            }
            for v in &c.values_from {
                let at = check.pos.at(&v.referenced);
                check.reference("helmCharts.valuesFrom", &at, (&v.value).into(), diags);
            }
            if let Some(config) = &c.registry_credentials_config {
                let at = check.pos.at(&config.referenced);
                let credentials = &config.value.credentials;
                let key = SourceKey {
                    kind: SourceKind::Secret,
                    namespace: credentials
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    name: credentials.name.clone(),
                };
                // A Secret not in sources/ is read from the management cluster at sync time.
                if let Some(source) = check.sources.get(&key) {
                    for wanted in ["username", "password"] {
                        if !source.entries.iter().any(|e| e.key == wanted) {
                            diags.error(
                                &at.file,
                                at.line,
                                format!(
                                    "helmCharts.registryCredentialsConfig: {key} has no data key {wanted:?}"
                                ),
                            );
                        }
                    }
                }
            }
        }
        let mut identifiers = BTreeMap::new();
        for r in &spec.template_resource_refs {
            let at = check.pos.at(&r.referenced);
            let id = &r.value.identifier;
            let id_at = check.pos.at(&id.referenced);
            if !is_identifier(&id.value) || id.value == "cluster" {
                diags.error(
                    &id_at.file,
                    id_at.line,
                    format!(
                        "templateResourceRefs: identifier {:?} must be a template variable name (letters, digits, '_') other than \"cluster\"",
                        id.value
                    ),
                );
            }
            if let Some(first) = identifiers.insert(id.value.clone(), id_at.line) {
                diags.error(
                    &id_at.file,
                    id_at.line,
                    format!(
                        "templateResourceRefs: duplicate identifier {:?} (first at line {first})",
                        id.value
                    ),
                );
            }
            let resource = &r.value.resource;
            if resource.api_version.is_empty() || resource.kind.is_empty() {
                diags.error(
                    &at.file,
                    at.line,
                    "templateResourceRefs: resource needs apiVersion and kind",
                );
            }
            check.template(&at, &format!("{} name", id.value), &resource.name, diags);
            if let Some(ns) = &resource.namespace {
                check.template(&at, &format!("{} namespace", id.value), ns, diags);
            }
        }
        if duplicate(
            &profiles,
            |p| &p.origin,
            "ClusterProfile",
            &name,
            &origin,
            diags,
        ) {
            continue;
        }
        profiles.insert(
            name.clone(),
            Profile {
                name,
                origin,
                pos,
                spec: doc.spec,
                selector,
            },
        );
    }
    report_cycles(&profiles, diags);
    profiles
}

/// Reports each dependsOn cycle once, at its first profile by name, naming the whole cycle.
fn report_cycles(profiles: &BTreeMap<String, Profile>, diags: &mut Diagnostics) {
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in profiles.keys() {
        // Depth-first search over dependsOn edges, keeping the current path.
        let mut path: Vec<(String, usize)> = vec![(start.clone(), 0)];
        let mut on_path: BTreeSet<String> = BTreeSet::from([start.clone()]);
        let mut done: BTreeSet<String> = BTreeSet::new();
        while let Some((node, next)) = path.last().cloned() {
            let deps: Vec<&String> = profiles
                .get(&node)
                .map(|p| p.spec.depends_on.iter().map(|d| &d.value).collect())
                .unwrap_or_default();
            if let Some(dep) = deps.get(next) {
                if let Some(last) = path.last_mut() {
                    last.1 += 1;
                }
                if on_path.contains(*dep) {
                    if let Some(i) = path.iter().position(|(n, _)| n == *dep) {
                        let mut cycle: Vec<String> =
                            path[i..].iter().map(|(n, _)| n.clone()).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by(|a, b| a.1.cmp(b.1))
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cycle.rotate_left(min);
                        if reported.insert(cycle.clone())
                            && let Some(first) = profiles.get(&cycle[0])
                        {
                            let mut names = cycle.clone();
                            names.push(cycle[0].clone());
                            diags.error(
                                &first.origin.file,
                                first.origin.line,
                                format!("dependsOn cycle: {}", names.join(" -> ")),
                            );
                        }
                    }
                } else if !done.contains(*dep) && profiles.contains_key(*dep) {
                    on_path.insert((*dep).clone());
                    path.push(((*dep).clone(), 0));
                }
            } else {
                on_path.remove(&node);
                done.insert(node);
                path.pop();
            }
        }
    }
}
