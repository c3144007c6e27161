//! The documents of the config repo as serde types. Field names are Sveltos' where the concept is
//! the same, so that Sveltos users read them without a glossary. Every struct rejects unknown
//! fields: a typo must never pass silently. `Spanned` fields carry the line that errors name.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, de};
use serde_saphyr::Spanned;

use crate::select::SelectorSpec;

/// The apiVersion of flotilla's own documents.
pub const API_VERSION: &str = "flotilla.dev/v1alpha1";

/// Metadata of flotilla's own documents: a name and optional labels and annotations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind.
    pub name: Spanned<String>,
    /// For a Cluster, its inventory labels; informational elsewhere. Values keep their line so
    /// that an invalid label is reported where it is written.
    #[serde(default)]
    pub labels: BTreeMap<String, Spanned<String>>,
    /// Free-form.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `kind: Cluster`: one managed cluster of the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterDoc {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `Cluster`.
    pub kind: String,
    /// Name and inventory labels.
    pub metadata: Metadata,
    /// Credentials reference, pause switch and free-form template data.
    #[serde(default)]
    pub spec: ClusterSpec,
}

/// A cluster's spec: `kubeconfig` and `paused` are flotilla's; every other key is free-form data
/// for templates (`cluster.spec.<key>`), which is why unknown keys are allowed here only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Where the credentials live (never in Git).
    #[serde(default)]
    pub kubeconfig: Option<Spanned<KubeconfigRef>>,
    /// True: flotilla leaves this cluster alone.
    #[serde(default)]
    pub paused: bool,
    /// Everything else, for templates.
    #[serde(flatten)]
    pub data: BTreeMap<String, serde_json::Value>,
}

/// Where a cluster's kubeconfig is: a file under `--kubeconfig-dir`, or in-cluster credentials.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeconfigRef {
    /// Relative to `--kubeconfig-dir`; default `<name>.kubeconfig`.
    #[serde(default)]
    pub file: Option<String>,
    /// Context inside that file; default its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// The cluster the daemon runs in.
    #[serde(default)]
    pub in_cluster: bool,
}

/// `kind: ClusterProfile`: which add-ons go to which clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileDoc {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `ClusterProfile`.
    pub kind: String,
    /// The profile's name.
    pub metadata: Metadata,
    /// What goes where, and how.
    pub spec: ProfileSpec,
}

/// The spec of a ClusterProfile (DESIGN §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileSpec {
    /// Clusters whose effective labels match. Absent: only `clusterRefs`; `{}`/`""`: every cluster.
    #[serde(default)]
    pub cluster_selector: Option<Spanned<SelectorSpec>>,
    /// Explicit cluster names, OR-ed with the selector.
    #[serde(default)]
    pub cluster_refs: Vec<Spanned<String>>,
    /// How and when changes are applied.
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// Lower wins a conflict over the same object.
    #[serde(default = "default_tier")]
    pub tier: u32,
    /// Apply the rest of the profile even when it loses a conflict.
    #[serde(default)]
    pub continue_on_conflict: bool,
    /// What happens to deployed objects when the profile stops matching a cluster.
    #[serde(default)]
    pub stop_matching_behavior: StopMatchingBehavior,
    /// Profiles deployed first, to the same clusters.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// At most this many clusters updating this profile at once.
    #[serde(default)]
    pub max_update: Option<MaxUpdate>,
    /// Paths that drift repair leaves alone.
    #[serde(default)]
    pub drift_exclusions: Vec<DriftExclusion>,
    /// Manifests from sources/ documents or repo paths.
    #[serde(default)]
    pub policy_refs: Vec<Spanned<PolicyRef>>,
    /// Kustomize directories in the repo.
    #[serde(default)]
    pub kustomization_refs: Vec<Spanned<KustomizationRef>>,
    /// Helm releases.
    #[serde(default)]
    pub helm_charts: Vec<Spanned<HelmChart>>,
    /// Live objects visible to templates.
    #[serde(default)]
    pub template_resource_refs: Vec<Spanned<TemplateResourceRef>>,
}

fn default_tier() -> u32 {
    100
}

/// Sveltos' syncModes.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum SyncMode {
    /// Applied once per cluster, then held.
    OneTime,
    /// Every new commit is applied.
    #[default]
    Continuous,
    /// Continuous, and drift is repaired.
    ContinuousWithDriftDetection,
    /// Never applied; the diff is reported.
    DryRun,
}

/// Sveltos' stopMatchingBehavior.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum StopMatchingBehavior {
    /// Delete what the profile deployed.
    #[default]
    WithdrawPolicies,
    /// Leave the objects, drop flotilla's ownership.
    LeavePolicies,
}

/// `maxUpdate`: a count of clusters or a percentage of the matching clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUpdate {
    /// At most this many clusters.
    Count(u32),
    /// At most this percentage (1–100) of the matching clusters, rounded up.
    Percent(u32),
}

impl<'de> Deserialize<'de> for MaxUpdate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = MaxUpdate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive number of clusters or a percentage like \"25%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxUpdate, E> {
                match u32::try_from(v) {
                    Ok(n) if n > 0 => Ok(MaxUpdate::Count(n)),
                    _ => Err(E::custom(format!(
                        "maxUpdate {v} must be between 1 and {}",
                        u32::MAX
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxUpdate, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("maxUpdate {v} must be positive"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxUpdate, E> {
                let text = v.trim();
                if let Some(number) = text.strip_suffix('%') {
                    match number.trim().parse::<u32>() {
                        Ok(p) if (1..=100).contains(&p) => Ok(MaxUpdate::Percent(p)),
                        _ => Err(E::custom(format!(
                            "maxUpdate {v:?} must be a percentage between 1% and 100%"
                        ))),
                    }
                } else {
                    match text.parse::<u64>() {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format!(
                            "maxUpdate {v:?} is neither a number nor a percentage like \"25%\""
                        ))),
                    }
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Paths that drift detection never repairs, optionally only on some objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftExclusion {
    /// JSON pointers such as `/spec/replicas`.
    pub paths: Vec<Spanned<String>>,
    /// Which objects; absent: all.
    #[serde(default)]
    pub target: Option<ObjectTarget>,
}

/// Selects objects by group/version/kind/name/namespace; empty fields match anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectTarget {
    /// API group.
    #[serde(default)]
    pub group: Option<String>,
    /// API version.
    #[serde(default)]
    pub version: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Object name.
    #[serde(default)]
    pub name: Option<String>,
    /// Object namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Where the objects of a reference are applied.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum DeploymentType {
    /// The matching (managed) cluster.
    #[default]
    Remote,
    /// The management cluster.
    Local,
}

/// The kinds a `sources/` document may have.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// v1 ConfigMap.
    ConfigMap,
    /// v1 Secret (values base64 in `data`).
    Secret,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        })
    }
}

/// A `policyRefs` entry: a ConfigMap/Secret of `sources/` (Sveltos style) or a repo path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRef {
    /// ConfigMap or Secret, with `name`.
    #[serde(default)]
    pub kind: Option<SourceKind>,
    /// Name of the source document.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace of the source document; default `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A file or folder of the repo, instead of kind/name.
    #[serde(default)]
    pub path: Option<String>,
    /// Render path files as templates (sources use an annotation instead).
    #[serde(default)]
    pub template: bool,
    /// Remote (the matching cluster) or Local (the management cluster).
    #[serde(default)]
    pub deployment_type: DeploymentType,
}

/// A `kustomizationRefs` entry: a kustomize directory of the repo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizationRef {
    /// The directory holding kustomization.yaml.
    pub path: String,
    /// Namespace forced on the output.
    #[serde(default)]
    pub target_namespace: Option<String>,
    /// Remote or Local.
    #[serde(default)]
    pub deployment_type: DeploymentType,
}

/// Install or remove a release.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum HelmChartAction {
    /// `helm upgrade --install`.
    #[default]
    Install,
    /// `helm uninstall`.
    Uninstall,
}

/// A `helmCharts` entry: one Helm release (Sveltos field names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HelmChart {
    /// http(s) chart repository or `oci://` registry.
    #[serde(rename = "repositoryURL")]
    pub repository_url: String,
    /// Local alias of the repository.
    pub repository_name: String,
    /// `<repositoryName>/<chart>` or the chart name.
    pub chart_name: String,
    /// Exact chart version.
    pub chart_version: String,
    /// Release name.
    pub release_name: String,
    /// Release namespace.
    pub release_namespace: String,
    /// Install (default) or Uninstall.
    #[serde(default)]
    pub helm_chart_action: HelmChartAction,
    /// Values, always rendered as a template.
    #[serde(default)]
    pub values: Option<Spanned<String>>,
    /// More values from sources or repo paths, merged in order after `values`.
    #[serde(default)]
    pub values_from: Vec<Spanned<ValuesFrom>>,
    /// Credentials for the chart repository or registry (Sveltos' field).
    #[serde(default, rename = "registryCredentialsConfig")]
    pub registry_credentials_config: Option<Spanned<RegistryCredentialsConfig>>,
}

/// `registryCredentialsConfig` of a `helmCharts` entry: where the chart repository's
/// credentials are, as in Sveltos.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryCredentialsConfig {
    /// A Secret with the keys `username` and `password`: the one in `sources/` when there is
    /// one (validation checks its keys), else the Secret of that name and namespace in the
    /// management cluster, read at sync time (not a validation error: a missing Secret or key
    /// fails the profile then, naming the Secret).
    pub credentials: CredentialsRef,
}

/// A Secret by name and namespace: in `sources/`, else in the management cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Name of the Secret.
    pub name: String,
    /// Its namespace; default `default`.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A `valuesFrom` entry: values from a source document or a repo file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValuesFrom {
    /// ConfigMap or Secret, with `name`.
    #[serde(default)]
    pub kind: Option<SourceKind>,
    /// Name of the source document.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace of the source document; default `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A repo file, instead of kind/name.
    #[serde(default)]
    pub path: Option<String>,
}

/// A `templateResourceRefs` entry: a live object made visible to templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateResourceRef {
    /// Which object; name and namespace may be templates.
    pub resource: ResourceRef,
    /// The top-level template variable it becomes.
    pub identifier: Spanned<String>,
    /// Where it is read.
    #[serde(default)]
    pub cluster: ResourceCluster,
    /// Render without it when it does not exist, instead of waiting.
    #[serde(default)]
    pub optional: bool,
}

/// Identifies one object by apiVersion, kind, name and namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceRef {
    /// `group/version` or `v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Name (a template).
    pub name: String,
    /// Namespace (a template); absent for cluster-scoped objects.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Where a templateResourceRef is read.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResourceCluster {
    /// The management cluster.
    #[default]
    Management,
    /// The cluster being rendered for.
    Target,
}

/// `kind: Classifier`: labels a cluster earns from its live state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClassifierDoc {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `Classifier`.
    pub kind: String,
    /// The classifier's name (also decides label ownership: first by name wins).
    pub metadata: Metadata,
    /// Labels and the constraints that earn them.
    pub spec: ClassifierSpec,
}

/// The spec of a Classifier (Sveltos field names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClassifierSpec {
    /// Labels added to a matching cluster.
    pub classifier_labels: Vec<ClassifierLabel>,
    /// All must hold.
    #[serde(default)]
    pub kubernetes_version_constraints: Vec<Spanned<VersionConstraint>>,
    /// Every selector must find at least one object.
    #[serde(default)]
    pub deployed_resource_constraint: Option<DeployedResourceConstraint>,
}

/// One label a classifier sets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierLabel {
    /// Label key.
    pub key: Spanned<String>,
    /// Label value.
    pub value: Spanned<String>,
}

/// A semver constraint on the cluster's Kubernetes version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConstraint {
    /// A semantic version such as `1.24.0`.
    pub version: Spanned<String>,
    /// How the cluster's version compares to it.
    pub comparison: Comparison,
}

/// The six comparisons of Sveltos' kubernetesVersionConstraints.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Comparison {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    GreaterThan,
    /// `<`
    LessThan,
    /// `>=`
    GreaterThanOrEqualTo,
    /// `<=`
    LessThanOrEqualTo,
}

/// Objects that must exist in the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeployedResourceConstraint {
    /// Each must find at least one object.
    pub resource_selectors: Vec<Spanned<ResourceSelector>>,
}

/// Finds objects of one kind, optionally by namespace, name and labels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceSelector {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Only in this namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only this name.
    #[serde(default)]
    pub name: Option<String>,
    /// All must hold.
    #[serde(default)]
    pub label_filters: Vec<LabelFilter>,
}

/// A condition on one label of an object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelFilter {
    /// Label key.
    pub key: String,
    /// How it is tested.
    pub operation: LabelOperation,
    /// For Equal and Different.
    #[serde(default)]
    pub value: Option<String>,
}

/// Sveltos' label filter operations.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum LabelOperation {
    /// Present with this value.
    Equal,
    /// Absent or another value.
    Different,
    /// Present.
    Has,
    /// Absent.
    DoesNotHave,
}

/// Metadata of a `sources/` document (ConfigMap or Secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceMetadata {
    /// Name, unique per kind and namespace.
    pub name: Spanned<String>,
    /// Default `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Free-form.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `flotilla.dev/template: "true"` renders the values as templates.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A v1 ConfigMap of `sources/`: each `data` value is multi-document YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMapDoc {
    /// `v1`.
    pub api_version: String,
    /// `ConfigMap`.
    pub kind: String,
    /// Name, namespace, template annotation.
    pub metadata: SourceMetadata,
    /// Manifests by key.
    #[serde(default)]
    pub data: BTreeMap<String, Spanned<String>>,
    /// Accepted for compatibility; flotilla does not use it.
    #[serde(default)]
    pub immutable: Option<bool>,
}

/// A v1 Secret of `sources/`: each `data` value is base64 of multi-document YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretDoc {
    /// `v1`.
    pub api_version: String,
    /// `Secret`.
    pub kind: String,
    /// Name, namespace, template annotation.
    pub metadata: SourceMetadata,
    /// Base64 manifests by key.
    #[serde(default)]
    pub data: BTreeMap<String, Spanned<String>>,
    /// Plain manifests by key.
    #[serde(default)]
    pub string_data: BTreeMap<String, Spanned<String>>,
    /// Secret type; informational.
    #[serde(default, rename = "type")]
    pub secret_type: Option<String>,
    /// Accepted for compatibility; flotilla does not use it.
    #[serde(default)]
    pub immutable: Option<bool>,
}
