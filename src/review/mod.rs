//! What merging a change would do to the fleet (DESIGN §5 `flotilla plan`): per cluster and
//! profile, objects added / removed / changed with unified diffs, Helm releases installed /
//! upgraded / downgraded / uninstalled with their values diffs, profiles that start or stop
//! matching, pending profiles and render errors of either side.
//!
//! Pure: [`compare_cluster`] takes what the two sides of one cluster render to (or, in live mode,
//! what is there now as the old side) and returns a [`ClusterReview`]; [`markdown()`] and the
//! serde form of [`Review`] are the two outputs. The git and kustomize I/O that produces the two
//! sides is in [`commits`] (an adapter), so the daemon can call the same code on its own commits.

pub mod commits;
pub mod live;
mod markdown;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{DeploymentType, HelmChartAction};
use crate::helm::{self, Decision};
use crate::render::RenderedProfile;

pub use markdown::{MARKDOWN_LIMIT, markdown};

/// Schema version of the JSON form of [`Review`] (docs/plan.md).
pub const REVIEW_VERSION: u32 = 1;

/// Why a review could not be made at all (the adapter's errors; the comparison cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Reading the repository, a revision, a tree or a note failed.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// The async runtime for kustomize could not start.
    #[error("starting the runtime for kustomize: {0}")]
    Runtime(std::io::Error),
}

/// The whole plan of `base..head`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// [`REVIEW_VERSION`].
    pub version: u32,
    /// `render` (both sides rendered from Git); live mode will add another value.
    pub mode: String,
    /// The old side.
    pub base: CommitInfo,
    /// The new side.
    pub head: CommitInfo,
    /// Validation errors of either side; when there are any, `clusters` is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SideError>,
    /// Per cluster of either inventory, by name.
    pub clusters: Vec<ClusterReview>,
}

/// One side's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    /// Full commit id.
    pub commit: String,
    /// First line of its message.
    pub subject: String,
}

/// Which side something belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// The old side (`--base`).
    Base,
    /// The new side (`--head`).
    Head,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Side::Base => "base",
            Side::Head => "head",
        })
    }
}

/// A message of one side (a validation error `FILE:LINE: message`, a render error, a pending
/// reason, a note).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SideError {
    /// Which side.
    pub side: Side,
    /// The message.
    pub message: String,
}

/// Where a cluster's labels came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "source"
)]
pub enum LabelSource {
    /// Each side's inventory labels (no state note reachable from base has the cluster).
    Inventory,
    /// Each side's inventory labels plus the classifier labels the state note on `commit`
    /// recorded (classifiers cannot be evaluated offline).
    StateNote {
        /// The commit whose `<notes-ref>-state` note was read.
        commit: String,
        /// Classifier labels taken from it (key → value).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        classifier_labels: BTreeMap<String, String>,
    },
    /// Live mode: head's inventory labels plus the classifiers evaluated against the cluster now.
    Live {
        /// Classifier labels it earned (key → value).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        classifier_labels: BTreeMap<String, String>,
    },
}

/// The cluster's place in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Membership {
    /// In both inventories.
    Stays,
    /// Only in head: flotilla starts managing it.
    Joins,
    /// Only in base: flotilla stops managing it and deletes nothing there (DESIGN §2).
    Leaves,
}

/// Counts of one cluster's (or the whole review's) changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Objects created and releases installed.
    pub added: usize,
    /// Objects and releases changed.
    pub changed: usize,
    /// Objects deleted and releases uninstalled.
    pub removed: usize,
    /// Head render errors that base does not have too.
    pub errors: usize,
}

impl Counts {
    /// Whether anything would change.
    pub fn any_change(&self) -> bool {
        self.added + self.changed + self.removed > 0
    }

    fn add(&mut self, other: Counts) {
        self.added += other.added;
        self.changed += other.changed;
        self.removed += other.removed;
        self.errors += other.errors;
    }
}

/// One cluster in the review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReview {
    /// Cluster name.
    pub name: String,
    /// In both inventories, joining or leaving.
    pub membership: Membership,
    /// `spec.paused` in head: nothing is applied there until it is unpaused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Where its labels came from.
    pub labels: LabelSource,
    /// What changes.
    pub counts: Counts,
    /// Per profile of either side that says something (changes, errors, pending, notes).
    pub profiles: Vec<ProfileReview>,
    /// Live mode: why the cluster could not be asked (reported, not fatal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

impl ClusterReview {
    /// Whether the cluster has anything to show beyond its table row.
    pub fn has_details(&self) -> bool {
        !self.profiles.is_empty()
            || self.membership != Membership::Stays
            || self.unreachable.is_some()
    }
}

/// Whether a profile targets the cluster on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Targeting {
    /// On both sides.
    Stays,
    /// Only in head: everything it renders is added.
    StartsMatching,
    /// Only in base: what it deployed is deleted (withdrawn).
    StopsMatching,
    /// Only in base, with `stopMatchingBehavior: LeavePolicies`: its objects stay, unmanaged.
    StopsMatchingLeaves,
}

/// One profile on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileReview {
    /// Profile name.
    pub profile: String,
    /// Whether it starts or stops targeting the cluster.
    pub targeting: Targeting,
    /// Objects added, removed or changed, by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectChange>,
    /// Helm releases installed, upgraded, downgraded, changed or uninstalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<ReleaseChange>,
    /// Render errors of either side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SideError>,
    /// Why a side is pending: it needs live data (templateResourceRefs) render mode cannot read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<SideError>,
    /// Other remarks (kustomizationRefs left unexpanded without a kustomize binary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<SideError>,
}

/// What happens to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectAction {
    /// Created.
    Added,
    /// Updated.
    Changed,
    /// Deleted (pruned or withdrawn).
    Removed,
    /// Left in place but no longer managed (withdrawn with LeavePolicies).
    Released,
}

/// One object's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectChange {
    /// `diff::object_key`: `Kind[.group]/namespace/name`.
    pub key: String,
    /// `deploymentType: Local`: the object goes to the management cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub management: bool,
    /// What happens.
    pub action: ObjectAction,
    /// Unified diff `--- base/…` → `+++ head/…`, normalized, Secret values as hashes.
    pub diff: String,
}

/// What happens to a Helm release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReleaseAction {
    /// Installed.
    Installed,
    /// A higher chart version.
    Upgraded,
    /// A lower chart version.
    Downgraded,
    /// Another repository or chart name.
    ChartChanged,
    /// Same chart and version, other values.
    ValuesChanged,
    /// Uninstalled (dropped, withdrawn, or `helmChartAction: Uninstall`).
    Uninstalled,
    /// Withdrawn with LeavePolicies: left installed, forgotten.
    Released,
}

/// One release's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseChange {
    /// `helm:<namespace>/<name>`.
    pub key: String,
    /// What happens.
    pub action: ReleaseAction,
    /// The note's phrase, e.g. `upgraded greeter 1.0.0 → 1.1.0`.
    pub summary: String,
    /// Chart version in base, if installed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Chart version in head, if installed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// Unified diff of the merged values, leaves from Secrets redacted; absent when equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_diff: Option<String>,
}

/// What one side of one (profile, cluster) is, as the comparison needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileState {
    /// Rendered (objects may come from a render or, in live mode, from the cluster).
    Rendered(Contents),
    /// Needs live data: the reasons.
    Pending(Vec<String>),
    /// A render error.
    Error(String),
}

/// The objects and releases of one side of a (profile, cluster).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contents {
    /// (management destination, object key) → object.
    pub objects: BTreeMap<(bool, String), Value>,
    /// Release key → release.
    pub releases: BTreeMap<String, Release>,
    /// Remarks such as an unexpanded kustomizationRef.
    pub notes: Vec<String>,
}

/// A Helm release as compared: chart, version and merged values.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// Chart reference as written.
    pub chart: String,
    /// Chart version.
    pub version: String,
    /// Repository URL.
    pub repository: String,
    /// `helmChartAction: Uninstall`.
    pub uninstall: bool,
    /// Merged values.
    pub values: Value,
    /// JSON pointers of values from Secrets (redacted in diffs).
    pub secret_paths: BTreeSet<String>,
}

/// One side of a profile on a cluster: its state and what withdrawing it would do.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSide {
    /// The render (or error, or pending).
    pub state: ProfileState,
    /// `stopMatchingBehavior: LeavePolicies`.
    pub leave_policies: bool,
}

impl ProfileSide {
    /// A side from a render result (kustomizationRefs already expanded, or noted when not).
    pub fn from_render(result: Result<RenderedProfile, String>, leave_policies: bool) -> Self {
        let state = match result {
            Err(e) => ProfileState::Error(e),
            Ok(r) if !r.pending.is_empty() => ProfileState::Pending(r.pending),
            Ok(r) => {
                let mut contents = Contents::default();
                for o in r.objects {
                    let local = o.deployment_type == DeploymentType::Local;
                    contents
                        .objects
                        .insert((local, crate::diff::object_key(&o.object)), o.object);
                }
                for rel in r.releases {
                    contents.releases.insert(
                        helm::release_key(&rel.namespace, &rel.name),
                        Release {
                            chart: rel.chart,
                            version: rel.version,
                            repository: rel.repository,
                            uninstall: rel.action == HelmChartAction::Uninstall,
                            values: rel.values,
                            secret_paths: rel.secret_paths,
                        },
                    );
                }
                for k in r.kustomizations {
                    contents.notes.push(format!(
                        "kustomizationRef {} not expanded: no kustomize binary (see --kustomize-bin)",
                        k.path
                    ));
                }
                ProfileState::Rendered(contents)
            }
        };
        ProfileSide {
            state,
            leave_policies,
        }
    }
}

/// Both sides of one cluster: profile name → side, `None` when the cluster is not in that
/// side's inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInput {
    /// Cluster name.
    pub name: String,
    /// Where its labels came from.
    pub labels: LabelSource,
    /// `spec.paused` in head.
    pub paused: bool,
    /// The profiles targeting it in base.
    pub base: Option<BTreeMap<String, ProfileSide>>,
    /// The profiles targeting it in head.
    pub head: Option<BTreeMap<String, ProfileSide>>,
}

/// Compares the two sides of one cluster.
pub fn compare_cluster(input: ClusterInput) -> ClusterReview {
    let membership = match (&input.base, &input.head) {
        (Some(_), None) => Membership::Leaves,
        (None, Some(_)) => Membership::Joins,
        _ => Membership::Stays,
    };
    let empty = BTreeMap::new();
    let base = input.base.as_ref().unwrap_or(&empty);
    let head = input.head.as_ref().unwrap_or(&empty);
    let mut counts = Counts::default();
    let mut profiles = Vec::new();
    // A cluster that leaves the fleet is left alone: nothing is deleted there (DESIGN §2).
    if membership != Membership::Leaves {
        let names: BTreeSet<&String> = base.keys().chain(head.keys()).collect();
        for name in names {
            let (review, c) = compare_profile(name, base.get(name), head.get(name));
            counts.add(c);
            if let Some(review) = review {
                profiles.push(review);
            }
        }
    }
    ClusterReview {
        name: input.name,
        membership,
        paused: input.paused,
        labels: input.labels,
        counts,
        profiles,
        unreachable: None,
    }
}

/// Builds the review from its clusters (in any order; sorted by name here).
pub fn review(
    base: CommitInfo,
    head: CommitInfo,
    errors: Vec<SideError>,
    mut clusters: Vec<ClusterReview>,
) -> Review {
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    Review {
        version: REVIEW_VERSION,
        mode: "render".into(),
        base,
        head,
        errors,
        clusters,
    }
}

impl Review {
    /// Totals over every cluster.
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for c in &self.clusters {
            total.add(c.counts);
        }
        total
    }

    /// The exit code of `flotilla plan`: 2 when a side is invalid or head has a render error
    /// base does not share, else 1 when anything would change (including clusters joining or
    /// leaving the fleet) or might (a profile pending in head whose inputs changed: only live
    /// data can tell), else 0.
    pub fn exit_code(&self) -> u8 {
        let counts = self.counts();
        if !self.errors.is_empty() || counts.errors > 0 {
            2
        } else if counts.any_change()
            || self.clusters.iter().any(|c| {
                c.membership != Membership::Stays
                    || c.profiles
                        .iter()
                        .any(|p| p.pending.iter().any(|e| e.side == Side::Head))
            })
        {
            1
        } else {
            0
        }
    }

    /// The JSON form (docs/plan.md), pretty and stable.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// [`Review::to_json`] written to `out` as it is made: the JSON of a big fleet's plan need
    /// not be held in memory whole.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

/// Compares one profile on one cluster; `None` when it has nothing to say.
fn compare_profile(
    name: &str,
    base: Option<&ProfileSide>,
    head: Option<&ProfileSide>,
) -> (Option<ProfileReview>, Counts) {
    let targeting = match (base, head) {
        (None, Some(_)) => Targeting::StartsMatching,
        (Some(b), None) if b.leave_policies => Targeting::StopsMatchingLeaves,
        (Some(_), None) => Targeting::StopsMatching,
        _ => Targeting::Stays,
    };
    let mut review = ProfileReview {
        profile: name.to_string(),
        targeting,
        objects: Vec::new(),
        releases: Vec::new(),
        errors: Vec::new(),
        pending: Vec::new(),
        notes: Vec::new(),
    };
    let mut counts = Counts::default();
    fn state(s: Option<&ProfileSide>) -> Option<&ProfileState> {
        s.map(|s| &s.state)
    }
    for (side, s) in [(Side::Base, state(base)), (Side::Head, state(head))] {
        match s {
            Some(ProfileState::Error(e)) => review.errors.push(SideError {
                side,
                message: e.clone(),
            }),
            Some(ProfileState::Pending(reasons)) => {
                for r in reasons {
                    review.pending.push(SideError {
                        side,
                        message: r.clone(),
                    });
                }
            }
            Some(ProfileState::Rendered(c)) => {
                for n in &c.notes {
                    review.notes.push(SideError {
                        side,
                        message: n.clone(),
                    });
                }
            }
            None => {}
        }
    }
    // A head error counts unless base fails the same way (a pre-existing failure is not this
    // change's fault, and must not fail every unrelated plan).
    if let Some(ProfileState::Error(h)) = state(head)
        && !matches!(state(base), Some(ProfileState::Error(b)) if b == h)
    {
        counts.errors += 1;
    }
    let empty = Contents::default();
    fn contents<'a>(s: Option<&'a ProfileState>, empty: &'a Contents) -> Option<&'a Contents> {
        match s {
            Some(ProfileState::Rendered(c)) => Some(c),
            None => Some(empty),
            _ => None,
        }
    }
    // Objects are compared only when both sides are known: an error or a pending side says
    // nothing about what would be there.
    if let (Some(b), Some(h)) = (contents(state(base), &empty), contents(state(head), &empty)) {
        let leave = targeting == Targeting::StopsMatchingLeaves;
        let keys: BTreeSet<&(bool, String)> = b.objects.keys().chain(h.objects.keys()).collect();
        for key in keys {
            let (old, new) = (b.objects.get(key), h.objects.get(key));
            // Equal objects stay equal after normalization: skip the YAML of both (most pairs).
            if old == new {
                continue;
            }
            let Some(diff) = crate::diff::object_diff(old, new) else {
                continue;
            };
            let action = match (old, new) {
                (None, _) => ObjectAction::Added,
                (_, None) if leave => ObjectAction::Released,
                (_, None) => ObjectAction::Removed,
                _ => ObjectAction::Changed,
            };
            match action {
                ObjectAction::Added => counts.added += 1,
                ObjectAction::Changed => counts.changed += 1,
                ObjectAction::Removed => counts.removed += 1,
                ObjectAction::Released => {}
            }
            review.objects.push(ObjectChange {
                key: key.1.clone(),
                management: key.0,
                action,
                diff: relabel(&diff),
            });
        }
        let keys: BTreeSet<&String> = b.releases.keys().chain(h.releases.keys()).collect();
        for key in keys {
            if let Some(change) =
                compare_release(key, b.releases.get(key), h.releases.get(key), leave)
            {
                match change.action {
                    ReleaseAction::Installed => counts.added += 1,
                    ReleaseAction::Uninstalled => counts.removed += 1,
                    ReleaseAction::Released => {}
                    _ => counts.changed += 1,
                }
                review.releases.push(change);
            }
        }
    }
    let says_something = !review.objects.is_empty()
        || !review.releases.is_empty()
        || !review.errors.is_empty()
        || !review.pending.is_empty()
        || !review.notes.is_empty()
        || targeting != Targeting::Stays;
    (says_something.then_some(review), counts)
}

/// `--- live/…`/`+++ desired/…` headers of [`crate::diff::object_diff`] as `base/`/`head/`.
fn relabel(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len());
    for (i, line) in diff.split_inclusive('\n').enumerate() {
        if i == 0
            && let Some(rest) = line.strip_prefix("--- live/")
        {
            out.push_str("--- base/");
            out.push_str(rest);
        } else if i == 1
            && let Some(rest) = line.strip_prefix("+++ desired/")
        {
            out.push_str("+++ head/");
            out.push_str(rest);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Compares one release; `None` when nothing changes.
fn compare_release(
    key: &str,
    base: Option<&Release>,
    head: Option<&Release>,
    leave: bool,
) -> Option<ReleaseChange> {
    // An Uninstall entry means "not installed" for the comparison.
    fn installed(r: Option<&Release>) -> Option<&Release> {
        r.filter(|r| !r.uninstall)
    }
    let (old, new) = (installed(base), installed(head));
    let (namespace, name) = key
        .strip_prefix(helm::RELEASE_PREFIX)
        .and_then(|k| k.split_once('/'))
        .unwrap_or(("", key));
    let empty = Value::Object(serde_json::Map::new());
    let mut secret_paths = BTreeSet::new();
    for r in [old, new].into_iter().flatten() {
        secret_paths.extend(r.secret_paths.iter().cloned());
    }
    let values_diff = |o: Option<&Release>, n: Option<&Release>| {
        helm::values_diff(
            namespace,
            name,
            o.map_or(&empty, |r| &r.values),
            n.map_or(&empty, |r| &r.values),
            &secret_paths,
        )
        .map(|d| relabel(&d))
    };
    let (action, summary) = match (old, new) {
        (None, None) => {
            // Uninstall requested in head for a release base did not install: helm uninstall
            // runs anyway (a hand-installed release goes).
            let h = head.filter(|h| h.uninstall && base.is_none_or(|b| !b.uninstall))?;
            (
                ReleaseAction::Uninstalled,
                format!(
                    "uninstalled ({} {}; helmChartAction: Uninstall)",
                    h.chart, h.version
                ),
            )
        }
        (None, Some(n)) => (
            ReleaseAction::Installed,
            helm::describe(&Decision::Install, &n.chart, &n.version, None, false),
        ),
        (Some(o), None) if leave => (
            ReleaseAction::Released,
            format!(
                "left installed, no longer managed ({} {})",
                o.chart, o.version
            ),
        ),
        (Some(o), None) => (
            ReleaseAction::Uninstalled,
            format!("uninstalled ({} {})", o.chart, o.version),
        ),
        (Some(o), Some(n)) => {
            let decision = if o.repository != n.repository || o.chart != n.chart {
                Decision::Chart
            } else if o.version != n.version {
                Decision::Version {
                    from: o.version.clone(),
                }
            } else if values_diff(Some(o), Some(n)).is_some() {
                Decision::Values
            } else {
                return None;
            };
            let action = match &decision {
                Decision::Chart => ReleaseAction::ChartChanged,
                Decision::Version { from } if helm::is_downgrade(from, &n.version) => {
                    ReleaseAction::Downgraded
                }
                Decision::Version { .. } => ReleaseAction::Upgraded,
                _ => ReleaseAction::ValuesChanged,
            };
            (
                action,
                helm::describe(&decision, &n.chart, &n.version, None, false),
            )
        }
    };
    Some(ReleaseChange {
        key: key.to_string(),
        action,
        summary,
        from_version: old.map(|r| r.version.clone()),
        to_version: new.map(|r| r.version.clone()),
        values_diff: values_diff(old, new),
    })
}

#[cfg(test)]
mod tests;
