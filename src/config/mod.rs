//! The config repo as validated values: the inventory, profiles, classifiers and sources of one
//! snapshot. Pure: it reads a [`FileTree`] and returns either a [`ConfigRepo`] or every problem
//! found, each as `FILE:LINE: message`. An invalid snapshot yields no `ConfigRepo` at all, which
//! is what keeps a bad commit from applying or pruning anything.

mod diagnostic;
mod load;
pub mod types;
mod validate;
pub mod yaml;
pub(crate) mod yaml_fast;

use std::collections::BTreeMap;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::load;
pub use types::*;
pub use validate::{is_manifest_file, parse_version, validate_name};

use crate::select::Selector;
use crate::source::FileTree;

/// The fixed folders of the config root and what each holds.
pub const CLUSTERS_DIR: &str = "clusters";
/// Folder of ClusterProfiles.
pub const PROFILES_DIR: &str = "profiles";
/// Folder of Classifiers.
pub const CLASSIFIERS_DIR: &str = "classifiers";
/// Folder of ConfigMap/Secret sources.
pub const SOURCES_DIR: &str = "sources";

/// Annotation that makes a ConfigMap/Secret source a template.
pub const TEMPLATE_ANNOTATION: &str = "flotilla.dev/template";

/// Where something was written: a config file and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    /// Path relative to the config root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Position of a document inside its file, to turn document-relative spans into file lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocPos {
    /// Path relative to the config root.
    pub file: String,
    /// Lines of the file before the document.
    pub offset: usize,
}

impl DocPos {
    /// The file position of a span inside this document.
    pub fn at(&self, location: &serde_saphyr::Location) -> Origin {
        Origin {
            file: self.file.clone(),
            line: self.offset + usize::try_from(location.line()).unwrap_or(1).max(1),
        }
    }
}

/// One managed cluster of the inventory.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Where its document starts.
    pub origin: Origin,
    /// Inventory labels (classifier labels are added per pass, see `classify`).
    pub labels: BTreeMap<String, String>,
    /// Where its credentials are.
    pub kubeconfig: KubeconfigRef,
    /// Left alone while true.
    pub paused: bool,
    /// The whole document as JSON, the `cluster` variable of templates.
    pub document: serde_json::Value,
}

/// One ClusterProfile with its compiled selector.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Unique name.
    pub name: String,
    /// Where its document starts.
    pub origin: Origin,
    /// Its document position, for the spans inside `spec`.
    pub pos: DocPos,
    /// The spec as written.
    pub spec: ProfileSpec,
    /// `clusterSelector`, compiled; `None` when absent (only clusterRefs match).
    pub selector: Option<Selector>,
}

impl Profile {
    /// Whether this profile targets a cluster with these effective labels.
    pub fn matches(&self, cluster: &str, labels: &BTreeMap<String, String>) -> bool {
        self.spec.cluster_refs.iter().any(|r| r.value == cluster)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// One Classifier with its versions parsed.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Unique name; ordering by name decides label ownership.
    pub name: String,
    /// Where its document starts.
    pub origin: Origin,
    /// Its document position, for the spans inside `spec`.
    pub pos: DocPos,
    /// The spec as written.
    pub spec: ClassifierSpec,
    /// kubernetesVersionConstraints, parsed.
    pub version_constraints: Vec<(Comparison, semver::Version)>,
}

/// Identifies a source document: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Namespace (default `default`).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A ConfigMap or Secret of `sources/`, its values decoded.
#[derive(Debug, Clone)]
pub struct Source {
    /// Kind, namespace, name.
    pub key: SourceKey,
    /// Where its document starts.
    pub origin: Origin,
    /// Annotated as a template.
    pub template: bool,
    /// Its values in key order.
    pub entries: Vec<SourceEntry>,
}

impl Source {
    /// Secret values must never be echoed in messages or notes.
    pub fn is_secret(&self) -> bool {
        self.key.kind == SourceKind::Secret
    }
}

/// One value of a source: manifests (or a template of them).
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// The data key.
    pub key: String,
    /// Decoded text.
    pub text: String,
    /// File line where the text starts (for a Secret's base64 value, the value's line).
    pub line: usize,
}

/// A validated snapshot of the config repo. Only [`load`] makes one, so holding one means the
/// snapshot is valid.
#[derive(Debug, Clone)]
pub struct ConfigRepo {
    /// The inventory by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// Classifiers by name (the order of label ownership).
    pub classifiers: BTreeMap<String, Classifier>,
    /// Sources by kind, namespace and name.
    pub sources: BTreeMap<SourceKey, Source>,
    /// The snapshot itself, for path references.
    pub tree: FileTree,
}

impl ConfigRepo {
    /// The one-line summary `validate` prints.
    pub fn summary(&self) -> String {
        format!(
            "valid: {} clusters, {} profiles, {} classifiers, {} sources",
            self.clusters.len(),
            self.profiles.len(),
            self.classifiers.len(),
            self.sources.len()
        )
    }
}
