//! Reading the fixed folders of a snapshot into typed documents.

use std::collections::BTreeMap;

use base64::Engine;

use super::types::*;
use super::yaml::{RawDocument, parse, split_documents};
use super::{
    CLASSIFIERS_DIR, CLUSTERS_DIR, ConfigRepo, Diagnostics, DocPos, Origin, PROFILES_DIR,
    SOURCES_DIR, SourceEntry, SourceKey, TEMPLATE_ANNOTATION, validate,
};
use crate::source::{Entry, FileTree};

/// Documents as parsed, before cross-document validation.
#[derive(Default)]
pub(super) struct Parsed {
    pub clusters: Vec<(ClusterDoc, DocPos, serde_json::Value)>,
    pub profiles: Vec<(ProfileDoc, DocPos)>,
    pub classifiers: Vec<(ClassifierDoc, DocPos)>,
    pub config_maps: Vec<(ConfigMapDoc, DocPos)>,
    pub secrets: Vec<(SecretDoc, DocPos)>,
}

/// Loads and validates a snapshot. Returns every problem at once, or the valid repo.
pub fn load(tree: FileTree) -> Result<ConfigRepo, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut parsed = Parsed::default();
    for dir in [CLUSTERS_DIR, PROFILES_DIR, CLASSIFIERS_DIR, SOURCES_DIR] {
        for (path, entry) in tree.entries_under(dir) {
            if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
                continue;
            }
            let bytes = match entry {
                Entry::File(bytes) => bytes.as_slice(),
                Entry::Symlink(_) => match tree.resolve(path) {
                    Ok(target) => match tree.file(&target) {
                        Some(bytes) => bytes,
                        None => continue,
                    },
                    Err(e) => {
                        diags.error(path, 1, e.to_string());
                        continue;
                    }
                },
            };
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    let line = bytes[..e.valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    diags.error(path, line, "file is not valid UTF-8 text");
                    continue;
                }
            };
            for doc in split_documents(text) {
                read_document(dir, path, &doc, &mut parsed, &mut diags);
            }
        }
    }
    let repo = validate::build(tree, parsed, &mut diags);
    let diags = diags.finish();
    if diags.is_empty() {
        Ok(repo)
    } else {
        Err(diags)
    }
}

/// What each config folder may contain.
fn expected(dir: &str) -> &'static str {
    match dir {
        CLUSTERS_DIR => "flotilla.dev/v1alpha1 Cluster",
        PROFILES_DIR => "flotilla.dev/v1alpha1 ClusterProfile",
        CLASSIFIERS_DIR => "flotilla.dev/v1alpha1 Classifier",
        _ => "v1 ConfigMap or v1 Secret",
    }
}

fn read_document(
    dir: &str,
    path: &str,
    doc: &RawDocument,
    parsed: &mut Parsed,
    diags: &mut Diagnostics,
) {
    let value: serde_json::Value = match parse(path, doc) {
        Ok(value) => value,
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    let object = match &value {
        serde_json::Value::Null => return,
        serde_json::Value::Object(object) => object,
        _ => {
            diags.error(
                path,
                doc.first_line(),
                format!(
                    "expected a {} document (a mapping with apiVersion and kind)",
                    expected(dir)
                ),
            );
            return;
        }
    };
    let field = |name: &str| object.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let pos = DocPos {
        file: path.to_string(),
        offset: doc.offset,
    };
    let kind_line = key_line(doc, "kind").unwrap_or_else(|| doc.first_line());
    let mut push = |result: Result<(), super::Diagnostic>| {
        if let Err(d) = result {
            diags.push(d);
        }
    };
    match (dir, api_version, kind) {
        (CLUSTERS_DIR, API_VERSION, "Cluster") => {
            push(parse(path, doc).map(|d| parsed.clusters.push((d, pos, value.clone()))))
        }
        (PROFILES_DIR, API_VERSION, "ClusterProfile") => {
            push(parse(path, doc).map(|d| parsed.profiles.push((d, pos))))
        }
        (CLASSIFIERS_DIR, API_VERSION, "Classifier") => {
            push(parse(path, doc).map(|d| parsed.classifiers.push((d, pos))))
        }
        (SOURCES_DIR, "v1", "ConfigMap") => {
            push(parse(path, doc).map(|d| parsed.config_maps.push((d, pos))))
        }
        (SOURCES_DIR, "v1", "Secret") => {
            push(parse(path, doc).map(|d| parsed.secrets.push((d, pos))))
        }
        _ => {
            let found = match (api_version, kind) {
                ("", "") => "a document without apiVersion and kind".to_string(),
                ("", kind) => format!("kind {kind:?} without apiVersion"),
                (api, "") => format!("apiVersion {api:?} without kind"),
                (api, kind) => format!("{api} {kind}"),
            };
            let hint = if api_version.ends_with("projectsveltos.io/v1beta1")
                || api_version.contains("projectsveltos.io")
            {
                " (Sveltos documents are not accepted yet; use apiVersion flotilla.dev/v1alpha1)"
            } else {
                ""
            };
            diags.error(
                path,
                kind_line,
                format!(
                    "unexpected {found} in {dir}/: this folder holds {}{hint}",
                    expected(dir)
                ),
            );
        }
    }
}

/// The file line of a top-level key of a document, for messages about the whole document.
fn key_line(doc: &RawDocument, key: &str) -> Option<usize> {
    let prefix = format!("{key}:");
    doc.text
        .lines()
        .position(|l| l.starts_with(&prefix))
        .map(|i| doc.offset + i + 1)
}

/// Decodes the values of a Secret or ConfigMap into source entries; bad base64 is reported
/// without echoing the value.
pub(super) fn source_entries(
    pos: &DocPos,
    data: &BTreeMap<String, serde_saphyr::Spanned<String>>,
    base64: bool,
    diags: &mut Diagnostics,
) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    for (key, value) in data {
        let Origin { line, .. } = pos.at(&value.referenced);
        let text = if base64 {
            let compact: String = value.value.split_whitespace().collect();
            match base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(text) => text,
                None => {
                    diags.error(
                        &pos.file,
                        line,
                        format!("Secret data key {key:?} is not base64 of UTF-8 text"),
                    );
                    continue;
                }
            }
        } else {
            value.value.clone()
        };
        entries.push(SourceEntry {
            key: key.clone(),
            text,
            line,
        });
    }
    entries
}

/// Whether a source carries the template annotation (`"true"`, case-insensitive).
pub(super) fn is_template(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(TEMPLATE_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The key of a source document.
pub(super) fn source_key(kind: SourceKind, metadata: &SourceMetadata) -> SourceKey {
    SourceKey {
        kind,
        namespace: metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: metadata.name.value.clone(),
    }
}
