//! What a sync pass did, as values, and the two notes written from it on the synced commit
//! (DESIGN §4): a human note (`note`) and a JSON state note (`state`). Pure: the daemon fills
//! a [`PassReport`] from the adapters' outcomes; this module only formats and compares.

mod note;
mod state;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::classify::{LabelConflict, LabelOwner};
use crate::config::SyncMode;
use crate::plan::Conflict;

pub use crate::drift::DriftRepair;
pub use note::{NOTE_CAP, human_note};
pub use state::{ClusterState, ProfileState, STATE_VERSION, StateNote, state_note};

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Did not exist; now does (or would, in DryRun).
    Created,
    /// Existed and changed (or would).
    Updated,
    /// Nothing to write.
    Unchanged,
    /// Deleted because it left the render or the profile was withdrawn (or would be).
    Pruned,
    /// LeavePolicies: kept, flotilla's label and annotation removed.
    Released,
    /// Left alone: another profile owns it now, or it was already gone.
    Skipped,
    /// Its write failed (see the profile's errors).
    Failed,
}

/// One object's outcome, with its diff (Secret values redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChange {
    /// `diff::object_key`, prefixed `management:` for Local objects.
    pub key: String,
    /// What happened.
    pub action: Action,
    /// Unified diff live → result; `None` when nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Why it was skipped, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where a profile stands on a cluster after the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProfileStatus {
    /// Written this pass and in sync.
    Applied,
    /// Already in sync: nothing written.
    InSync,
    /// OneTime, applied before: held.
    Held,
    /// DryRun: the changes were computed, not applied.
    DryRun,
    /// Waiting for a templateResourceRef.
    Pending,
    /// Lost a conflict and was not applied (no continueOnConflict).
    Conflict,
    /// A profile it depends on did not succeed here.
    WaitingForDependency,
    /// Render or apply failed.
    Failed,
    /// Withdrawn: its objects were deleted.
    Withdrawn,
    /// Withdrawn with LeavePolicies: objects kept, released.
    Released,
}

impl ProfileStatus {
    /// Whether dependents may proceed.
    pub fn succeeded(self) -> bool {
        matches!(
            self,
            ProfileStatus::Applied | ProfileStatus::InSync | ProfileStatus::Held
        )
    }
}

/// One profile on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileReport {
    /// Profile name.
    pub profile: String,
    /// Its syncMode (`None` when the profile was removed from Git).
    pub sync_mode: Option<SyncMode>,
    /// Where it stands.
    pub status: ProfileStatus,
    /// Commit whose render is applied there (`None` when nothing is).
    pub applied_commit: Option<String>,
    /// Per object, in apply order (unchanged objects included).
    pub changes: Vec<ObjectChange>,
    /// Objects it lost to other profiles.
    pub conflicts: Vec<Conflict>,
    /// Errors (render, apply, prune) and pending reasons.
    pub errors: Vec<String>,
    /// Remarks worth reading (e.g. a mode that is not fully supported yet).
    pub remarks: Vec<String>,
    /// Object hashes after the pass.
    pub hashes: BTreeMap<String, String>,
    /// Which step failed, when the profile failed (the error kind of `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The step where a profile failed on a cluster: lets metrics count errors by kind without
/// reading the error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// Rendering (templates, templateResourceRef reads, kustomize).
    Render,
    /// A Helm release (chart fetch, install, upgrade, uninstall).
    Helm,
    /// Applying, pruning or withdrawing objects, or their inventory.
    Apply,
}

/// How a cluster fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterStatus {
    /// Reached; every profile in sync (or held, dry-run, pending).
    Synced,
    /// Reached; at least one profile failed or lost a conflict.
    Degraded,
    /// `paused: true`: left alone.
    Paused,
    /// Not reached this pass (or in backoff).
    Unreachable,
}

/// One cluster in a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Cluster name.
    pub name: String,
    /// Effective labels used this pass.
    pub labels: BTreeMap<String, String>,
    /// Who set each effective label (the inventory or a classifier), so a note can say why a
    /// profile selected this cluster.
    #[serde(default)]
    pub label_sources: BTreeMap<String, LabelOwner>,
    /// Classifier labels not applied because another source owns the key.
    #[serde(default)]
    pub label_conflicts: Vec<LabelConflict>,
    /// How it fared.
    pub status: ClusterStatus,
    /// Why it was unreachable.
    pub error: Option<String>,
    /// Its profiles, in the order they were handled.
    pub profiles: Vec<ProfileReport>,
}

/// One pass over one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassReport {
    /// The synced commit (the one the notes go on).
    pub commit: String,
    /// Its subject line.
    pub subject: String,
    /// For an invalid commit: every validation error, `FILE:LINE: message`.
    pub validation_errors: Vec<String>,
    /// For an invalid commit: the last valid commit, which stays the desired state.
    pub desired_commit: Option<String>,
    /// Per cluster, by name.
    pub clusters: Vec<ClusterReport>,
    /// Drift repaired by the running daemon while this commit was applied, oldest first
    /// (at most [`DRIFT_KEPT`]; the notes ref's history keeps older versions).
    #[serde(default)]
    pub drift: Vec<DriftRepair>,
}

/// Drift repairs a commit's note lists at most (the newest are kept).
pub const DRIFT_KEPT: usize = 100;

impl ClusterReport {
    /// The labels set by classifiers (not the inventory), with the classifier that set each.
    pub fn classifier_labels(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.labels
            .iter()
            .filter_map(|(key, value)| match self.label_sources.get(key) {
                Some(LabelOwner::Classifier(name)) => {
                    Some((key.as_str(), value.as_str(), name.as_str()))
                }
                _ => None,
            })
    }
}

impl PassReport {
    /// Whether the commit was valid (an invalid one applies nothing).
    pub fn valid(&self) -> bool {
        self.validation_errors.is_empty()
    }

    /// Counts of object actions over the whole pass.
    pub fn counts(&self) -> BTreeMap<Action, usize> {
        let mut counts = BTreeMap::new();
        for cluster in &self.clusters {
            for profile in &cluster.profiles {
                for change in &profile.changes {
                    *counts.entry(change.action).or_insert(0) += 1;
                }
            }
        }
        counts
    }
}
