//! Rendering: what a profile puts on one cluster, as objects and Helm releases. Pure: it takes
//! the validated repo and the cluster's template context and returns values. kustomizationRefs
//! come back as a list; the kustomize subprocess adapter (`kustomize.rs`) expands them into
//! objects afterwards, and helm plugs in beside it in a later stage.

pub mod kustomize;
pub mod sandbox;
mod text;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::classify::VersionInfo;
use crate::config::yaml::{check_manifests, check_values};
use crate::config::{
    Cluster, ConfigRepo, DeploymentType, HelmChart, HelmChartAction, Origin, PolicyRef, Profile,
    SourceKey, is_manifest_file,
};
use sandbox::{Sandbox, TemplateError};
pub use text::to_text;

/// Label every applied object carries, so flotilla's objects can be found and watched.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "flotilla";
/// Annotation naming the profile that owns an object.
pub const PROFILE_ANNOTATION: &str = "flotilla.dev/profile";

/// A render failure of one (profile, cluster), located in the config repo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct RenderError {
    /// Where the failing template or manifest is written.
    pub origin: Origin,
    /// What failed (Secret content is never echoed).
    pub message: String,
}

/// One object to apply, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedObject {
    /// Human-readable origin, e.g. `ConfigMap default/contour [gateway.yaml]` or `path manifests/a.yaml`.
    pub source: String,
    /// Remote (the cluster) or Local (the management cluster).
    pub deployment_type: DeploymentType,
    /// The object, stamped with flotilla's label and annotation.
    pub object: Value,
}

/// One Helm release to install or uninstall, with its values rendered and merged.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRelease {
    /// Release namespace.
    pub namespace: String,
    /// Release name.
    pub name: String,
    /// Chart reference as written.
    pub chart: String,
    /// Exact chart version.
    pub version: String,
    /// Repository URL.
    pub repository: String,
    /// Repository alias as written (`repositoryName`).
    pub repository_name: String,
    /// Install or Uninstall.
    pub action: HelmChartAction,
    /// The merged values: the rendered `values` template, then each `valuesFrom` in order
    /// (maps merged key by key, as helm merges values files). An empty map when none.
    pub values: Value,
    /// JSON pointers of the values that came from Secrets: redacted wherever values are shown.
    pub secret_paths: std::collections::BTreeSet<String>,
    /// Credentials for the repository (`registryCredentialsConfig`), from a Secret of sources/.
    pub credentials: Option<crate::helm::cli::Credentials>,
    /// `registryCredentialsConfig` naming a Secret that is not in sources/: its (namespace,
    /// name) in the management cluster, read at sync time (rendering stays pure).
    pub credentials_ref: Option<(String, String)>,
    /// Where the entry is written, for errors.
    pub origin: Origin,
}

/// A kustomizationRef of a profile, left for the kustomize adapter to build.
#[derive(Debug, Clone, PartialEq)]
pub struct KustomizationTarget {
    /// The kustomization directory as written in the profile.
    pub path: String,
    /// Namespace forced on every namespaced object of the output.
    pub target_namespace: Option<String>,
    /// Remote (the cluster) or Local (the management cluster).
    pub deployment_type: DeploymentType,
    /// Where the ref is written, for errors.
    pub origin: Origin,
}

/// What a profile renders to for one cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RenderedProfile {
    /// Profile name.
    pub profile: String,
    /// Objects in source order.
    pub objects: Vec<RenderedObject>,
    /// Releases in declaration order.
    pub releases: Vec<RenderedRelease>,
    /// kustomizationRefs to build: [`kustomize::expand`] turns them into objects (this pure
    /// module cannot run kustomize).
    pub kustomizations: Vec<KustomizationTarget>,
    /// Why the profile cannot be rendered yet (a templateResourceRef that is not available);
    /// a pending profile renders nothing and is retried when the object appears.
    pub pending: Vec<String>,
}

/// The `cluster` template variable: the Cluster document with effective labels and, when the
/// cluster was reached, `status.version`.
pub fn cluster_context(
    cluster: &Cluster,
    labels: &BTreeMap<String, String>,
    version: Option<&VersionInfo>,
) -> Value {
    let mut document = cluster.document.clone();
    if let Value::Object(doc) = &mut document {
        let metadata = doc.entry("metadata").or_insert_with(|| json!({}));
        if let Value::Object(metadata) = metadata {
            metadata.insert("labels".into(), json!(labels));
        }
        doc.entry("spec").or_insert_with(|| json!({}));
        if let Some(version) = version {
            doc.insert("status".into(), json!({ "version": version }));
        }
    }
    document
}

/// Renders one profile for one cluster. `variables` are the top-level template variables
/// (`cluster` and any templateResourceRefs identifiers that were read); a non-optional
/// templateResourceRef missing from them makes the profile pending.
pub fn render_profile(
    repo: &ConfigRepo,
    profile: &Profile,
    variables: &serde_json::Map<String, Value>,
    sandbox: &Sandbox,
) -> Result<RenderedProfile, RenderError> {
    let mut out = RenderedProfile {
        profile: profile.name.clone(),
        ..RenderedProfile::default()
    };
    let context = Value::Object(variables.clone());
    for r in &profile.spec.template_resource_refs {
        let id = &r.value.identifier.value;
        if !r.value.optional && !variables.contains_key(id) {
            let at = profile.pos.at(&r.referenced);
            let (name, namespace) = resource_ref_target(&r.value.resource, &at, &context, sandbox)?;
            let resource = &r.value.resource;
            let place = place(r.value.cluster);
            out.pending.push(format!(
                "templateResourceRef {id}: {} {} {}{name} not available in the {place}",
                resource.api_version,
                resource.kind,
                namespace.map(|ns| format!("{ns}/")).unwrap_or_default(),
            ));
        }
    }
    if !out.pending.is_empty() {
        return Ok(out);
    }
    match render_contents(repo, profile, &context, sandbox, &mut out) {
        Ok(()) => Ok(out),
        Err(Stop::Error(e)) => Err(e),
        Err(Stop::Undefined {
            error,
            path,
            variable,
        }) => {
            // An undefined field of an object a templateResourceRef read: the object is there but
            // not filled in yet (a claim without status), so the pair waits for it.
            let variable = variable.as_str();
            let reference =
                profile.spec.template_resource_refs.iter().find(|r| {
                    r.value.identifier.value == variable && variables.contains_key(variable)
                });
            let Some(r) = reference else {
                return Err(error);
            };
            let at = profile.pos.at(&r.referenced);
            let (name, namespace) = resource_ref_target(&r.value.resource, &at, &context, sandbox)?;
            let resource = &r.value.resource;
            let shown = if error.message.contains("details withheld") {
                variable.to_string()
            } else {
                path
            };
            Ok(RenderedProfile {
                profile: out.profile,
                pending: vec![format!(
                    "templateResourceRef {variable}: {shown} is not set yet in {} {} {}{name} ({})",
                    resource.api_version,
                    resource.kind,
                    namespace.map(|ns| format!("{ns}/")).unwrap_or_default(),
                    place(r.value.cluster),
                )],
                ..RenderedProfile::default()
            })
        }
    }
}

/// Where a templateResourceRef is read, in words.
fn place(cluster: crate::config::ResourceCluster) -> &'static str {
    match cluster {
        crate::config::ResourceCluster::Management => "management cluster",
        crate::config::ResourceCluster::Target => "this cluster",
    }
}

/// Why rendering a profile's contents stopped: an error, or an undefined variable or field
/// (which [`render_profile`] turns into *pending* when a templateResourceRef's object lacks it).
enum Stop {
    Error(RenderError),
    Undefined {
        error: RenderError,
        path: String,
        variable: String,
    },
}

impl From<RenderError> for Stop {
    fn from(e: RenderError) -> Self {
        Stop::Error(e)
    }
}

/// A template failure as a [`Stop`]: remembers the undefined path, if that is what failed.
fn template_stop(file: &str, first_line: usize, e: &TemplateError, secret: bool) -> Stop {
    let error = template_error(file, first_line, e, secret);
    match (e.undefined_path(), e.undefined_variable()) {
        (Some(path), Some(variable)) => Stop::Undefined {
            error,
            path: path.to_string(),
            variable: variable.to_string(),
        },
        _ => Stop::Error(error),
    }
}

/// The policyRefs, kustomizationRefs and helmCharts of a profile, into `out`.
fn render_contents(
    repo: &ConfigRepo,
    profile: &Profile,
    context: &Value,
    sandbox: &Sandbox,
    out: &mut RenderedProfile,
) -> Result<(), Stop> {
    for r in &profile.spec.policy_refs {
        let at = profile.pos.at(&r.referenced);
        render_policy_ref(repo, profile, &r.value, &at, context, sandbox, out)?;
    }
    for k in &profile.spec.kustomization_refs {
        out.kustomizations.push(KustomizationTarget {
            path: k.value.path.clone(),
            target_namespace: k.value.target_namespace.clone(),
            deployment_type: k.value.deployment_type,
            origin: profile.pos.at(&k.referenced),
        });
    }
    for h in &profile.spec.helm_charts {
        let at = profile.pos.at(&h.referenced);
        out.releases.push(render_release(
            repo, profile, &h.value, &at, context, sandbox,
        )?);
    }
    Ok(())
}

/// The name and namespace of a templateResourceRef for this cluster (both may be templates).
pub fn resource_ref_target(
    resource: &crate::config::ResourceRef,
    at: &Origin,
    context: &Value,
    sandbox: &Sandbox,
) -> Result<(String, Option<String>), RenderError> {
    let name = sandbox
        .render("templateResourceRef name", &resource.name, context)
        .map_err(|e| template_error(&at.file, at.line, &e, false))?;
    let namespace = match &resource.namespace {
        Some(ns) => Some(
            sandbox
                .render("templateResourceRef namespace", ns, context)
                .map_err(|e| template_error(&at.file, at.line, &e, false))?,
        ),
        None => None,
    };
    Ok((name, namespace))
}

fn template_error(file: &str, first_line: usize, e: &TemplateError, secret: bool) -> RenderError {
    RenderError {
        origin: Origin {
            file: file.to_string(),
            line: first_line + e.line.unwrap_or(1).saturating_sub(1),
        },
        message: if secret {
            "template error in a Secret value (details withheld)".into()
        } else {
            format!("template error: {}", e.message)
        },
    }
}

/// One text a policyRef contributes: a source value or a repo file, and how to treat it.
struct Piece {
    /// Names it in comments and errors, e.g. `ConfigMap default/x [a.yaml]` or `path m.yaml`.
    label: String,
    /// The repo file it is written in.
    file: String,
    /// File line where the text starts.
    first_line: usize,
    text: String,
    template: bool,
    /// Secret content is never echoed in errors.
    secret: bool,
}

impl Piece {
    /// The piece's text for this cluster: rendered when it is a template (an error is located
    /// at the piece and withholds Secret content), else as written.
    fn into_text(mut self, sandbox: &Sandbox, context: &Value) -> Result<(Piece, String), Stop> {
        let text = std::mem::take(&mut self.text);
        if !self.template {
            return Ok((self, text));
        }
        let rendered = sandbox
            .render(&self.label, &text, context)
            .map_err(|e| template_stop(&self.file, self.first_line, &e, self.secret))?;
        Ok((self, rendered))
    }
}

/// The texts a reference names: the entries of a `sources/` document (`kind` + `name`), or the
/// manifest files at a repo `path` (a file, or the YAML files of a folder). Shared by policyRefs
/// and valuesFrom, which read sources the same way and differ only in what the text must be.
/// Errors are prefixed with `what` and located at `at`.
#[allow(clippy::too_many_arguments)]
fn pieces_of(
    repo: &ConfigRepo,
    kind: Option<crate::config::SourceKind>,
    name: Option<&String>,
    namespace: Option<&String>,
    path: Option<&String>,
    path_template: bool,
    at: &Origin,
    what: &str,
) -> Result<Vec<Piece>, RenderError> {
    let at_ref = |message: String| RenderError {
        origin: at.clone(),
        message: format!("{what}{message}"),
    };
    let mut pieces: Vec<Piece> = Vec::new();
    if let (Some(kind), Some(name)) = (kind, name) {
        let key = SourceKey {
            kind,
            namespace: namespace.cloned().unwrap_or_else(|| "default".into()),
            name: name.clone(),
        };
        let source = repo
            .sources
            .get(&key)
            .ok_or_else(|| at_ref(format!("{key} not found in sources/")))?;
        for entry in &source.entries {
            pieces.push(Piece {
                label: format!("{key} [{}]", entry.key),
                file: source.origin.file.clone(),
                first_line: entry.line,
                text: entry.text.clone(),
                template: source.template,
                secret: source.is_secret(),
            });
        }
    } else if let Some(path) = path {
        let resolved = repo.tree.resolve(path).map_err(|e| at_ref(e.to_string()))?;
        let files = repo
            .tree
            .files_at(&resolved)
            .map_err(|e| at_ref(e.to_string()))?;
        for (file, bytes) in files {
            if !(is_manifest_file(&file) || file == resolved) {
                continue;
            }
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| at_ref(format!("{file} is not valid UTF-8 text")))?;
            pieces.push(Piece {
                label: format!("path {file}"),
                file,
                first_line: 1,
                text,
                template: path_template,
                secret: false,
            });
        }
    }
    Ok(pieces)
}

#[allow(clippy::too_many_arguments)]
fn render_policy_ref(
    repo: &ConfigRepo,
    profile: &Profile,
    reference: &PolicyRef,
    at: &Origin,
    context: &Value,
    sandbox: &Sandbox,
    out: &mut RenderedProfile,
) -> Result<(), Stop> {
    let pieces = pieces_of(
        repo,
        reference.kind,
        reference.name.as_ref(),
        reference.namespace.as_ref(),
        reference.path.as_ref(),
        reference.template,
        at,
        "",
    )?;
    for piece in pieces {
        let (piece, rendered) = piece.into_text(sandbox, context)?;
        let Piece {
            label,
            file,
            first_line,
            template,
            secret,
            ..
        } = piece;
        let parsed = if template {
            check_manifests(&rendered)
        } else {
            sandbox.manifests(&rendered)
        };
        let documents = parsed.map_err(|(line, message)| RenderError {
            origin: Origin {
                file: file.clone(),
                line: if template {
                    first_line
                } else {
                    first_line + line - 1
                },
            },
            message: if secret {
                format!("{label}: rendered output is not valid YAML (details withheld)")
            } else if template {
                format!("{label}: rendered output line {line}: {message}")
            } else {
                format!("{label}: {message}")
            },
        })?;
        for mut object in documents {
            stamp(&mut object, &profile.name);
            out.objects.push(RenderedObject {
                source: label.clone(),
                deployment_type: reference.deployment_type,
                object,
            });
        }
    }
    Ok(())
}

/// Adds flotilla's label and profile annotation, which apply, prune and drift detection rely on.
pub fn stamp(object: &mut Value, profile: &str) {
    let Value::Object(map) = object else {
        return;
    };
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    let Value::Object(metadata) = metadata else {
        return;
    };
    for (field, key, value) in [
        ("labels", MANAGED_BY_LABEL, MANAGED_BY_VALUE),
        ("annotations", PROFILE_ANNOTATION, profile),
    ] {
        let entry = metadata.entry(field).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        if let Value::Object(entries) = entry {
            entries.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

fn render_release(
    repo: &ConfigRepo,
    profile: &Profile,
    chart: &HelmChart,
    at: &Origin,
    context: &Value,
    sandbox: &Sandbox,
) -> Result<RenderedRelease, Stop> {
    let release = format!("{}/{}", chart.release_namespace, chart.release_name);
    let at_ref = |origin: &Origin, message: String| RenderError {
        origin: origin.clone(),
        message,
    };
    let mut values = Value::Object(serde_json::Map::new());
    let mut secret_paths = std::collections::BTreeSet::new();
    if let Some(text) = &chart.values {
        let first_line = profile.pos.at(&text.referenced).line;
        let rendered = sandbox
            .render(&format!("{release} values"), &text.value, context)
            .map_err(|e| template_stop(&at.file, first_line, &e, false))?;
        let parsed = check_values(&rendered).map_err(|(line, message)| RenderError {
            origin: Origin {
                file: at.file.clone(),
                line: first_line,
            },
            message: format!(
                "helm release {release}: rendered values line {line} are not valid YAML: {message}"
            ),
        })?;
        crate::helm::merge_values(&mut values, parsed);
    }
    for v in &chart.values_from {
        let origin = profile.pos.at(&v.referenced);
        let reference = &v.value;
        let pieces = pieces_of(
            repo,
            reference.kind,
            reference.name.as_ref(),
            reference.namespace.as_ref(),
            reference.path.as_ref(),
            false,
            &origin,
            "valuesFrom: ",
        )?;
        for piece in pieces {
            let (piece, text) = piece.into_text(sandbox, context)?;
            let Piece {
                label,
                file,
                first_line,
                template,
                secret,
                ..
            } = piece;
            let parsed = check_values(&text).map_err(|(line, message)| RenderError {
                origin: Origin {
                    file: file.clone(),
                    line: if secret || template {
                        first_line
                    } else {
                        first_line + line - 1
                    },
                },
                message: if secret {
                    format!("helm release {release}: {label} is not valid values YAML (details withheld)")
                } else {
                    format!("helm release {release}: {label}: values line {line}: {message}")
                },
            })?;
            if secret {
                secret_paths.extend(crate::helm::leaf_paths(&parsed));
            }
            crate::helm::merge_values(&mut values, parsed);
        }
    }
    let mut credentials_ref = None;
    let credentials = match &chart.registry_credentials_config {
        Some(config) => {
            let origin = profile.pos.at(&config.referenced);
            let reference = &config.value.credentials;
            let key = SourceKey {
                kind: crate::config::SourceKind::Secret,
                namespace: reference
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: reference.name.clone(),
            };
            match repo.sources.get(&key) {
                None => {
                    credentials_ref = Some((key.namespace, key.name));
                    None
                }
                Some(source) => {
                    let field =
                        |name: &str| {
                            source
                    .entries
                    .iter()
                    .find(|e| e.key == name)
                    .map(|e| e.text.trim_end_matches(['\n', '\r']).to_string())
                    .ok_or_else(|| {
                        at_ref(
                            &origin,
                            format!("registryCredentialsConfig: {key} has no data key {name:?}"),
                        )
                    })
                        };
                    Some(crate::helm::cli::Credentials {
                        username: field("username")?,
                        password: field("password")?,
                    })
                }
            }
        }
        None => None,
    };
    Ok(RenderedRelease {
        namespace: chart.release_namespace.clone(),
        name: chart.release_name.clone(),
        chart: chart.chart_name.clone(),
        version: chart.chart_version.clone(),
        repository: chart.repository_url.clone(),
        repository_name: chart.repository_name.clone(),
        action: chart.helm_chart_action,
        values,
        secret_paths,
        credentials,
        credentials_ref,
        origin: at.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::source::FileTree;

    fn repo(files: &[(&str, &str)]) -> ConfigRepo {
        let mut tree = FileTree::new();
        tree.insert_file(
            "clusters/c.yaml",
            b"apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels: {env: prod}\nspec:\n  cidrs: [10.0.0.0/8]\n".to_vec(),
        );
        for (path, text) in files {
            tree.insert_file(*path, text.as_bytes().to_vec());
        }
        match load(tree) {
            Ok(repo) => repo,
            Err(e) => panic!("test repo invalid: {e}"),
        }
    }

    fn profile(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    }

    fn variables(repo: &ConfigRepo) -> serde_json::Map<String, Value> {
        let cluster = &repo.clusters["c1"];
        let mut vars = serde_json::Map::new();
        vars.insert(
            "cluster".into(),
            cluster_context(cluster, &cluster.labels, None),
        );
        vars
    }

    #[test]
    fn stamps_label_and_annotation_and_keeps_existing_ones() {
        let cases = [
            (json!({"metadata": {"name": "x"}}), json!({}), json!({})),
            (
                json!({"metadata": {"name": "x", "labels": {"a": "b"}, "annotations": {"c": "d"}}}),
                json!({"a": "b"}),
                json!({"c": "d"}),
            ),
            (
                json!({"metadata": {"name": "x", "labels": null}}),
                json!({}),
                json!({}),
            ),
        ];
        for (mut object, labels, annotations) in cases {
            stamp(&mut object, "p");
            let mut want_labels = labels.as_object().cloned().unwrap_or_default();
            want_labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY_VALUE));
            let mut want_annotations = annotations.as_object().cloned().unwrap_or_default();
            want_annotations.insert(PROFILE_ANNOTATION.into(), json!("p"));
            assert_eq!(object["metadata"]["labels"], Value::Object(want_labels));
            assert_eq!(
                object["metadata"]["annotations"],
                Value::Object(want_annotations)
            );
        }
    }

    #[test]
    fn cluster_context_has_effective_labels_and_live_version() {
        let repo = repo(&[]);
        let cluster = &repo.clusters["c1"];
        let mut labels = cluster.labels.clone();
        labels.insert("k8s".into(), "new".into());
        let version = VersionInfo {
            git_version: "v1.37.2".into(),
            major: "1".into(),
            minor: "37".into(),
        };
        let context = cluster_context(cluster, &labels, Some(&version));
        assert_eq!(context["metadata"]["labels"]["k8s"], "new");
        assert_eq!(context["status"]["version"]["gitVersion"], "v1.37.2");
        assert_eq!(context["spec"]["cidrs"][0], "10.0.0.0/8");
        let offline = cluster_context(cluster, &labels, None);
        assert!(offline.get("status").is_none());
    }

    #[test]
    fn sources_render_only_when_annotated_and_secrets_are_decoded() {
        let sources = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: plain}
data:
  a.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: plain}
    data: {rule: '{{ not_a_variable }}'}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: templated
  annotations: {flotilla.dev/template: \"true\"}
data:
  a.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: 'cm-{{ cluster.metadata.name }}'}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
data:
  a.yaml: YXBpVmVyc2lvbjogdjEKa2luZDogTmFtZXNwYWNlCm1ldGFkYXRhOiB7bmFtZTogZnJvbS1zZWNyZXR9Cg==
";
        let text = profile(
            "p",
            "  clusterRefs: [c1]\n  policyRefs:\n  - {kind: ConfigMap, name: plain}\n  - {kind: ConfigMap, name: templated}\n  - {kind: Secret, name: creds}\n",
        );
        let repo = repo(&[("sources/s.yaml", sources), ("profiles/p.yaml", &text)]);
        let rendered = render_profile(
            &repo,
            &repo.profiles["p"],
            &variables(&repo),
            &Sandbox::new(),
        )
        .expect("renders");
        let names: Vec<&str> = rendered
            .objects
            .iter()
            .filter_map(|o| o.object["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, vec!["plain", "cm-c1", "from-secret"]);
        assert_eq!(
            rendered.objects[0].object["data"]["rule"],
            "{{ not_a_variable }}"
        );
    }

    #[test]
    fn missing_resource_refs_make_the_profile_pending_unless_optional() {
        let spec = |optional: bool| {
            format!(
                "  clusterRefs: [c1]\n  templateResourceRefs:\n  - resource: {{apiVersion: v1, kind: ConfigMap, name: 'x-{{{{ cluster.metadata.name }}}}', namespace: ns}}\n    identifier: Thing\n    optional: {optional}\n  policyRefs:\n  - {{path: m.yaml, template: true}}\n"
            )
        };
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata: {has: '{{ Thing is defined }}'}\n";
        for (optional, pending, objects) in [(false, 1, 0), (true, 0, 1)] {
            let text = profile("p", &spec(optional));
            let repo = repo(&[("profiles/p.yaml", &text), ("m.yaml", manifest)]);
            let rendered = render_profile(
                &repo,
                &repo.profiles["p"],
                &variables(&repo),
                &Sandbox::new(),
            )
            .expect("renders");
            assert_eq!(rendered.pending.len(), pending, "optional={optional}");
            assert_eq!(rendered.objects.len(), objects, "optional={optional}");
            if pending > 0 {
                assert!(
                    rendered.pending[0].contains("ns/x-c1"),
                    "{:?}",
                    rendered.pending
                );
            }
        }
    }

    #[test]
    fn an_undefined_field_of_a_resource_ref_object_is_pending_other_undefined_values_fail() {
        let spec = "  clusterRefs: [c1]\n  templateResourceRefs:\n  - resource: {apiVersion: example.com/v1, kind: Bucket, name: 'b-{{ cluster.metadata.name }}', namespace: ns}\n    identifier: StorageBucket\n  - resource: {apiVersion: v1, kind: ConfigMap, name: opt}\n    identifier: Maybe\n    optional: true\n  policyRefs:\n  - {path: m.yaml, template: true}\n";
        let bucket = json!({"metadata": {"name": "b-c1"}, "spec": {}});
        let ready = json!({"metadata": {"name": "b-c1"}, "status": {"url": "s3://x"}});
        // (template value, the object read, Ok(pending?) or Err(message part))
        let cases: [(&str, &Value, Result<bool, &str>); 8] = [
            ("'{{ StorageBucket.status.url }}'", &bucket, Ok(true)),
            (
                "'{{ StorageBucket.status.url | upper }}'",
                &bucket,
                Ok(true),
            ),
            (
                "'{{ StorageBucket[\"status\"][\"url\"] }}'",
                &bucket,
                Ok(true),
            ),
            ("'{{ StorageBucket.status.url }}'", &ready, Ok(false)),
            (
                "'{{ cluster.spec.nope }}'",
                &bucket,
                Err("cluster.spec.nope"),
            ),
            ("'{{ nope }}'", &ready, Err("nope")),
            // An optional ref that is absent must be guarded by the template: no waiting.
            ("'{{ Maybe.data.x }}'", &ready, Err("Maybe")),
            (
                "'{% if Maybe is defined %}{{ Maybe.data.x }}{% endif %}'",
                &ready,
                Ok(false),
            ),
        ];
        for (value, object, want) in cases {
            let manifest = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: m}}\ndata: {{url: {value}}}\n"
            );
            let text = profile("p", spec);
            let repo = repo(&[("profiles/p.yaml", &text), ("m.yaml", &manifest)]);
            let mut vars = variables(&repo);
            vars.insert("StorageBucket".into(), object.clone());
            let result = render_profile(&repo, &repo.profiles["p"], &vars, &Sandbox::new());
            match (want, result) {
                (Ok(true), Ok(r)) => {
                    assert!(r.objects.is_empty(), "{value}: {r:?}");
                    assert_eq!(r.pending.len(), 1, "{value}: {r:?}");
                    assert!(
                        r.pending[0]
                            .starts_with("templateResourceRef StorageBucket: StorageBucket")
                            && r.pending[0]
                                .contains("is not set yet in example.com/v1 Bucket ns/b-c1"),
                        "{value}: {:?}",
                        r.pending
                    );
                }
                (Ok(false), Ok(r)) => {
                    assert!(r.pending.is_empty(), "{value}: {:?}", r.pending);
                    assert_eq!(r.objects.len(), 1, "{value}");
                }
                (Err(part), Err(e)) => assert!(e.message.contains(part), "{value}: {e}"),
                (want, got) => panic!("{value}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rendered_output_that_is_not_an_object_is_an_error_at_the_file() {
        let text = profile(
            "p",
            "  clusterRefs: [c1]\n  policyRefs:\n  - {path: m.yaml, template: true}\n",
        );
        let manifest = "apiVersion: v1\nkind: '{{ cluster.spec.cidrs | length }}'\nmetadata: {}\n";
        let repo = repo(&[("profiles/p.yaml", &text), ("m.yaml", manifest)]);
        let err = render_profile(
            &repo,
            &repo.profiles["p"],
            &variables(&repo),
            &Sandbox::new(),
        )
        .expect_err("no metadata.name");
        assert_eq!(err.origin.file, "m.yaml");
        assert!(err.message.contains("has no metadata.name"), "{err}");
    }

    #[test]
    fn release_values_merge_values_from_in_order_and_remember_secret_paths() {
        let sources = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: base-values}
data:
  values.yaml: |
    replicas: 2
    image: {repository: web, tag: '1.0'}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secrets}
stringData:
  values.yaml: |
    auth: {password: hunter2}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData:
  username: reader
  password: pass
";
        let text = profile(
            "p",
            "  clusterRefs: [c1]\n  helmCharts:\n  - repositoryURL: oci://127.0.0.1:5000/charts\n    repositoryName: charts\n    chartName: charts/web\n    chartVersion: 1.0.0\n    releaseName: web\n    releaseNamespace: apps\n    values: |\n      replicas: 1\n      name: '{{ cluster.metadata.name }}'\n    valuesFrom:\n    - {kind: ConfigMap, name: base-values}\n    - {kind: Secret, name: web-secrets}\n    - {path: values/override.yaml}\n    registryCredentialsConfig:\n      credentials: {name: creds}\n",
        );
        let repo = repo(&[
            ("sources/s.yaml", sources),
            ("profiles/p.yaml", &text),
            ("values/override.yaml", "image: {tag: '1.1'}\n"),
        ]);
        let rendered = render_profile(
            &repo,
            &repo.profiles["p"],
            &variables(&repo),
            &Sandbox::new(),
        )
        .expect("renders");
        let release = &rendered.releases[0];
        assert_eq!(
            release.values,
            json!({
                "replicas": 2,
                "name": "c1",
                "image": {"repository": "web", "tag": "1.1"},
                "auth": {"password": "hunter2"},
            })
        );
        assert_eq!(
            release.secret_paths,
            std::collections::BTreeSet::from(["/auth/password".to_string()])
        );
        let credentials = release.credentials.as_ref().expect("credentials");
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("reader", "pass")
        );
        let printed = to_text("c1", std::slice::from_ref(&rendered));
        assert!(
            !printed.contains("hunter2") && !printed.contains("pass\n"),
            "{printed}"
        );
        assert!(printed.contains("password: <redacted fnv1a:"), "{printed}");
        assert_eq!(release.credentials_ref, None);
    }

    #[test]
    fn credentials_not_in_sources_are_left_for_the_management_cluster() {
        let text = profile(
            "p",
            "  clusterRefs: [c1]\n  helmCharts:\n  - repositoryURL: oci://127.0.0.1:5000/charts\n    repositoryName: charts\n    chartName: charts/web\n    chartVersion: 1.0.0\n    releaseName: web\n    releaseNamespace: apps\n    registryCredentialsConfig:\n      credentials: {name: mgmt-creds, namespace: flotilla}\n",
        );
        let repo = repo(&[("profiles/p.yaml", &text)]);
        let rendered = render_profile(
            &repo,
            &repo.profiles["p"],
            &variables(&repo),
            &Sandbox::new(),
        )
        .expect("renders");
        let release = &rendered.releases[0];
        assert_eq!(release.credentials, None);
        assert_eq!(
            release.credentials_ref,
            Some(("flotilla".to_string(), "mgmt-creds".to_string()))
        );
        let printed = to_text("c1", std::slice::from_ref(&rendered));
        assert!(
            printed
                .contains("#   credentials: Secret flotilla/mgmt-creds of the management cluster"),
            "{printed}"
        );
    }
}
