//! The JSON state note (`refs/notes/flotilla-state`): per cluster its effective labels and, per
//! profile, status, applied commit and object hashes. Machines read this one: `flotilla status`,
//! `plan` (labels of the last pass) and the daemon (was anything different from the last note?).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterStatus, DriftRepair, PassReport, ProfileStatus};
use crate::classify::{LabelConflict, LabelOwner};
use crate::config::SyncMode;
use crate::plan::Conflict;

/// Schema version of [`StateNote`].
pub const STATE_VERSION: u32 = 1;

/// The state note of one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateNote {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The commit the note is on.
    pub commit: String,
    /// Whether its config was valid.
    pub valid: bool,
    /// Validation errors of an invalid commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// For an invalid commit, the last valid one (still the desired state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_commit: Option<String>,
    /// Per cluster.
    pub clusters: BTreeMap<String, ClusterState>,
    /// Drift repaired while this commit was applied (the running daemon only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftRepair>,
}

/// One cluster in the state note.
///
/// Label ownership is written next to the labels: `labelSources` maps every effective label key
/// to `"inventory"` or `"classifier:<name>"`, and `labelConflicts` lists the classifier labels
/// that were not applied, e.g.
/// `{"classifier": "b-gpu", "key": "gpu", "value": "h100", "owner": "classifier:a-gpu"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// Effective labels.
    pub labels: BTreeMap<String, String>,
    /// Label key → who set it (absent in notes written before label ownership was recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_sources: BTreeMap<String, LabelOwner>,
    /// Classifier labels that lost to another owner of their key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_conflicts: Vec<LabelConflict>,
    /// How it fared.
    pub status: ClusterStatus,
    /// Why it was unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per profile.
    pub profiles: BTreeMap<String, ProfileState>,
}

/// One profile on one cluster in the state note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileState {
    /// Where it stands.
    pub status: ProfileStatus,
    /// Its syncMode (absent when removed from Git).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_mode: Option<SyncMode>,
    /// Commit whose render is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_commit: Option<String>,
    /// Object key → hash of the rendered object.
    pub objects: BTreeMap<String, String>,
    /// Objects lost to other profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// Errors and pending reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The state note for a pass.
pub fn state_note(report: &PassReport) -> StateNote {
    StateNote {
        version: STATE_VERSION,
        commit: report.commit.clone(),
        valid: report.valid(),
        errors: report.validation_errors.clone(),
        desired_commit: report.desired_commit.clone(),
        clusters: report
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ClusterState {
                        labels: c.labels.clone(),
                        label_sources: c.label_sources.clone(),
                        label_conflicts: c.label_conflicts.clone(),
                        status: c.status,
                        error: c.error.clone(),
                        profiles: c
                            .profiles
                            .iter()
                            .map(|p| {
                                (
                                    p.profile.clone(),
                                    ProfileState {
                                        status: p.status,
                                        sync_mode: p.sync_mode,
                                        applied_commit: p.applied_commit.clone(),
                                        objects: p.hashes.clone(),
                                        conflicts: p.conflicts.clone(),
                                        errors: p.errors.clone(),
                                    },
                                )
                            })
                            .collect(),
                    },
                )
            })
            .collect(),
        drift: report.drift.clone(),
    }
}

impl StateNote {
    /// Parses a state note read from Git.
    pub fn parse(text: &str) -> Result<StateNote, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// One state note of a commit from the notes of several shards (and an unsharded one):
    /// every cluster of each (a later note wins a cluster both list), valid only when all are,
    /// errors and drift of all. `None` when there is no note.
    pub fn merge(notes: Vec<StateNote>) -> Option<StateNote> {
        let mut notes = notes.into_iter();
        let mut merged = notes.next()?;
        for note in notes {
            merged.valid &= note.valid;
            for error in note.errors {
                if !merged.errors.contains(&error) {
                    merged.errors.push(error);
                }
            }
            if merged.desired_commit.is_none() {
                merged.desired_commit = note.desired_commit;
            }
            merged.clusters.extend(note.clusters);
            merged.drift.extend(note.drift);
        }
        Some(merged)
    }

    /// Pretty JSON, stable (maps are sorted).
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// `flotilla status`: one row per (cluster, profile), and one per classifier label conflict
    /// (profile `-`, status `label-conflict`, the sentence as detail).
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "CLUSTER".to_string(),
            "PROFILE".to_string(),
            "STATUS".to_string(),
            "APPLIED".to_string(),
            "OBJECTS".to_string(),
            "DETAIL".to_string(),
        ]];
        for (name, cluster) in &self.clusters {
            if cluster.profiles.is_empty() || cluster.status == ClusterStatus::Unreachable {
                rows.push([
                    name.clone(),
                    "-".into(),
                    format!("{:?}", cluster.status).to_lowercase(),
                    "-".into(),
                    "-".into(),
                    cluster.error.clone().unwrap_or_default(),
                ]);
            }
            for conflict in &cluster.label_conflicts {
                rows.push([
                    name.clone(),
                    "-".into(),
                    "label-conflict".into(),
                    "-".into(),
                    "-".into(),
                    conflict.to_string(),
                ]);
            }
            for (profile, state) in &cluster.profiles {
                let detail = state
                    .errors
                    .first()
                    .cloned()
                    .or_else(|| {
                        state
                            .conflicts
                            .first()
                            .map(|c| format!("conflict: {} owned by {}", c.key, c.winner))
                    })
                    .unwrap_or_default();
                rows.push([
                    name.clone(),
                    profile.clone(),
                    serde_json::to_value(state.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    state
                        .applied_commit
                        .as_deref()
                        .map(|c| c.get(..12).unwrap_or(c).to_string())
                        .unwrap_or_else(|| "-".into()),
                    state.objects.len().to_string(),
                    detail.lines().next().unwrap_or_default().to_string(),
                ]);
            }
        }
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ClusterReport;

    fn pass(conflicts: Vec<LabelConflict>) -> PassReport {
        PassReport {
            commit: "0123456789abcdef".into(),
            subject: "s".into(),
            validation_errors: vec![],
            desired_commit: None,
            clusters: vec![ClusterReport {
                name: "one".into(),
                labels: [("env", "prod"), ("gpu", "a100")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                label_sources: [
                    ("env".to_string(), LabelOwner::Inventory),
                    ("gpu".to_string(), LabelOwner::Classifier("a-gpu".into())),
                ]
                .into(),
                label_conflicts: conflicts,
                status: ClusterStatus::Synced,
                error: None,
                profiles: vec![],
            }],
            drift: vec![],
        }
    }

    #[test]
    fn merge_of_shard_notes() {
        assert_eq!(StateNote::merge(vec![]), None);
        let a = state_note(&pass(vec![]));
        let mut b = a.clone();
        let one = b.clusters.remove("one").expect("cluster one");
        b.clusters.insert("two".into(), one);
        b.valid = false;
        b.errors = vec!["x.yaml:1: bad".into()];
        let merged = StateNote::merge(vec![a.clone(), b]).expect("merged");
        assert_eq!(
            merged.clusters.keys().collect::<Vec<_>>(),
            ["one", "two"],
            "every shard's clusters"
        );
        assert!(!merged.valid, "invalid when one shard says so");
        assert_eq!(merged.errors, ["x.yaml:1: bad"]);
        assert_eq!(StateNote::merge(vec![a.clone()]), Some(a));
    }

    fn gpu_conflict() -> LabelConflict {
        LabelConflict {
            classifier: "b-gpu".into(),
            key: "gpu".into(),
            value: "h100".into(),
            owner: LabelOwner::Classifier("a-gpu".into()),
        }
    }

    #[test]
    fn label_sources_and_conflicts_in_json() {
        let state = state_note(&pass(vec![gpu_conflict()]));
        let json: serde_json::Value = match serde_json::from_str(&state.to_text()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let one = &json["clusters"]["one"];
        assert_eq!(
            one["labelSources"],
            serde_json::json!({"env": "inventory", "gpu": "classifier:a-gpu"})
        );
        assert_eq!(
            one["labelConflicts"],
            serde_json::json!([{"classifier": "b-gpu", "key": "gpu", "value": "h100", "owner": "classifier:a-gpu"}])
        );
        assert_eq!(StateNote::parse(&state.to_text()).ok(), Some(state.clone()));
        // A different conflict is a different state (the daemon rewrites the note).
        assert_ne!(state, state_note(&pass(vec![])));
        assert_eq!(state, state_note(&pass(vec![gpu_conflict()])));
    }

    #[test]
    fn notes_without_label_ownership_still_parse() {
        let text = r#"{"version": 1, "commit": "c", "valid": true, "clusters": {"one": {"labels": {"env": "prod"}, "status": "synced", "profiles": {}}}}"#;
        let state = StateNote::parse(text).ok();
        let one = state.as_ref().map(|s| &s.clusters["one"]);
        assert!(one.is_some_and(|c| c.label_sources.is_empty() && c.label_conflicts.is_empty()));
    }

    #[test]
    fn status_table_lists_label_conflicts() {
        let table = state_note(&pass(vec![gpu_conflict()])).table();
        let row = table
            .lines()
            .find(|l| l.contains("label-conflict"))
            .unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().take(3).collect();
        assert_eq!(cells, ["one", "-", "label-conflict"], "{table}");
        assert!(
            row.ends_with("classifier b-gpu wants gpu=h100, but classifier a-gpu owns gpu"),
            "{table}"
        );
        let quiet = state_note(&pass(vec![])).table();
        assert!(!quiet.contains("label-conflict"), "{quiet}");
    }
}
