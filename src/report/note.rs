//! The human note: a summary line, then one section per group of clusters whose changes are
//! identical, with the profiles, object actions, diffs, conflicts and errors. Capped at
//! [`NOTE_CAP`] with a visible marker.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Action, ClusterReport, ClusterStatus, PassReport, ProfileReport, ProfileStatus};

/// Largest note written (1 MiB, DESIGN §4).
pub const NOTE_CAP: usize = 1024 * 1024;

/// The human note for a pass, at most [`NOTE_CAP`] bytes.
pub fn human_note(report: &PassReport) -> String {
    let mut out = String::new();
    let short = short(&report.commit);
    if !report.valid() {
        let _ = writeln!(
            out,
            "flotilla: commit {short} is INVALID: nothing applied, nothing pruned ({} errors)",
            report.validation_errors.len()
        );
        match &report.desired_commit {
            Some(desired) => {
                let _ = writeln!(
                    out,
                    "The desired state stays at the last valid commit {}.",
                    self::short(desired)
                );
            }
            None => {
                let _ = writeln!(out, "No valid commit has been synced yet.");
            }
        }
        out.push('\n');
        for error in &report.validation_errors {
            let _ = writeln!(out, "{error}");
        }
        return cap(out);
    }
    let _ = writeln!(out, "flotilla: {}", summary(report));
    let _ = writeln!(out, "commit {short} {}", report.subject);

    // Group clusters whose sections read the same.
    let mut groups: BTreeMap<String, Vec<&ClusterReport>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for cluster in &report.clusters {
        let body = cluster_body(cluster);
        if !groups.contains_key(&body) {
            order.push(body.clone());
        }
        groups.entry(body).or_default().push(cluster);
    }
    for body in order {
        let names: Vec<&str> = groups[&body].iter().map(|c| c.name.as_str()).collect();
        let _ = write!(out, "\n## {}\n{body}", names.join(", "));
    }
    drift_section(&mut out, &report.drift);
    cap(out)
}

/// The drift repaired while the commit was applied: per object what changed, who changed it,
/// and how the repair went, with the diff (drifted → repaired).
fn drift_section(out: &mut String, drift: &[super::DriftRepair]) {
    use crate::drift::{DriftKind, RepairResult};
    if drift.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## drift ({} repair{})",
        drift.len(),
        if drift.len() == 1 { "" } else { "s" }
    );
    for d in drift {
        let what = match d.kind {
            DriftKind::Deleted => "deleted".to_string(),
            DriftKind::Modified if d.paths.is_empty() => "changed".to_string(),
            DriftKind::Modified => format!("changed {}", d.paths.join(", ")),
        };
        let who = if d.managers.is_empty() {
            String::new()
        } else {
            format!(" by {}", d.managers.join(", "))
        };
        let result = match &d.result {
            RepairResult::Repaired => match d.kind {
                DriftKind::Deleted => "recreated".to_string(),
                DriftKind::Modified => "re-applied".to_string(),
            },
            RepairResult::DryRunFailed(e) => {
                format!("NOT repaired: the dry-run of the repair failed: {e}")
            }
            RepairResult::Failed(e) => format!("NOT repaired: {e}"),
        };
        let _ = writeln!(
            out,
            "- {} {} (profile {}): {what}{who} at {}; {result}",
            d.cluster, d.key, d.profile, d.at
        );
        if let Some(diff) = &d.diff {
            let _ = writeln!(out, "```diff\n{}```", ensure_newline(diff));
        }
    }
}

/// `3 clusters (2 changed, 1 unreachable): 4 created, 1 updated, 2 pruned, 1 error`.
fn summary(report: &PassReport) -> String {
    let counts = report.counts();
    let changed = report
        .clusters
        .iter()
        .filter(|c| c.profiles.iter().any(profile_changed))
        .count();
    let mut parts = vec![format!("{changed} changed")];
    for (status, word) in [
        (ClusterStatus::Degraded, "degraded"),
        (ClusterStatus::Unreachable, "unreachable"),
        (ClusterStatus::Paused, "paused"),
    ] {
        let n = report
            .clusters
            .iter()
            .filter(|c| c.status == status)
            .count();
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    let mut actions = Vec::new();
    let releases = release_counts(report.clusters.iter().flat_map(|c| &c.profiles));
    for (action, word) in [
        (Action::Created, "created"),
        (Action::Updated, "updated"),
        (Action::Pruned, "pruned"),
        (Action::Released, "released"),
        (Action::Failed, "failed"),
    ] {
        let n =
            counts.get(&action).copied().unwrap_or(0) - releases.get(&action).copied().unwrap_or(0);
        if n > 0 {
            actions.push(format!("{n} {word}"));
        }
    }
    actions.extend(release_tally(&releases, ProfileStatus::Applied));
    let errors: usize = report
        .clusters
        .iter()
        .map(|c| {
            usize::from(c.error.is_some())
                + c.profiles
                    .iter()
                    .filter(|p| p.status != ProfileStatus::Pending)
                    .map(|p| p.errors.len())
                    .sum::<usize>()
        })
        .sum();
    if errors > 0 {
        actions.push(format!("{errors} errors"));
    }
    let pending = report
        .clusters
        .iter()
        .flat_map(|c| &c.profiles)
        .filter(|p| p.status == ProfileStatus::Pending)
        .count();
    if pending > 0 {
        actions.push(format!("{pending} pending"));
    }
    let mut what = if actions.is_empty() {
        "nothing changed".to_string()
    } else {
        actions.join(", ")
    };
    let label_conflicts: usize = report
        .clusters
        .iter()
        .map(|c| c.label_conflicts.len())
        .sum();
    if label_conflicts > 0 {
        let _ = write!(what, ", {label_conflicts} label conflicts");
    }
    format!(
        "{} clusters ({}): {what}",
        report.clusters.len(),
        parts.join(", ")
    )
}

/// Whether a change is a Helm release's (`helm:<namespace>/<name>`).
fn is_release(key: &str) -> bool {
    key.starts_with(crate::helm::RELEASE_PREFIX)
}

/// Counts of release actions.
fn release_counts<'a>(
    profiles: impl Iterator<Item = &'a ProfileReport>,
) -> BTreeMap<Action, usize> {
    let mut counts = BTreeMap::new();
    for change in profiles.flat_map(|p| &p.changes) {
        if is_release(&change.key) {
            *counts.entry(change.action).or_insert(0) += 1;
        }
    }
    counts
}

/// `1 release installed, 2 releases upgraded` (unchanged and skipped ones are not counted).
fn release_tally(counts: &BTreeMap<Action, usize>, status: ProfileStatus) -> Vec<String> {
    let dry = status == ProfileStatus::DryRun;
    counts
        .iter()
        .filter_map(|(action, n)| {
            let word = match action {
                Action::Created if dry => "to install",
                Action::Updated if dry => "to upgrade",
                Action::Pruned if dry => "to uninstall",
                Action::Created => "installed",
                Action::Updated => "updated",
                Action::Pruned => "uninstalled",
                Action::Released => "left installed",
                Action::Failed => "failed",
                Action::Unchanged | Action::Skipped => return None,
            };
            Some(format!(
                "{n} {} {word}",
                if *n == 1 { "release" } else { "releases" }
            ))
        })
        .collect()
}

fn profile_changed(p: &ProfileReport) -> bool {
    p.changes
        .iter()
        .any(|c| !matches!(c.action, Action::Unchanged | Action::Skipped))
}

/// Everything about one cluster except its name, so identical clusters can share a section.
fn cluster_body(cluster: &ClusterReport) -> String {
    let mut out = String::new();
    match cluster.status {
        ClusterStatus::Paused => {
            let _ = writeln!(out, "paused: left alone");
            return out;
        }
        ClusterStatus::Unreachable => {
            let _ = writeln!(
                out,
                "unreachable: {}",
                cluster.error.as_deref().unwrap_or("no answer")
            );
            return out;
        }
        ClusterStatus::Synced | ClusterStatus::Degraded => {}
    }
    // Part of the body, so clusters only share a section when their classifier labels and
    // label conflicts are the same too.
    let classified: Vec<String> = cluster
        .classifier_labels()
        .map(|(key, value, classifier)| format!("{key}={value} ({classifier})"))
        .collect();
    if !classified.is_empty() {
        let _ = writeln!(out, "labels from classifiers: {}", classified.join(", "));
    }
    for conflict in &cluster.label_conflicts {
        let _ = writeln!(out, "label conflict: {conflict}");
    }
    if cluster.profiles.is_empty() {
        let _ = writeln!(out, "no profile targets this cluster");
        return out;
    }
    let quiet: Vec<&ProfileReport> = cluster
        .profiles
        .iter()
        .filter(|p| {
            matches!(p.status, ProfileStatus::InSync | ProfileStatus::Held)
                && !profile_changed(p)
                && p.errors.is_empty()
                && p.remarks.is_empty()
        })
        .collect();
    for profile in &cluster.profiles {
        if quiet.iter().any(|q| q.profile == profile.profile) {
            continue;
        }
        profile_section(&mut out, profile);
    }
    if !quiet.is_empty() {
        let names: Vec<String> = quiet
            .iter()
            .map(|p| match p.status {
                ProfileStatus::Held => format!("{} (OneTime, held)", p.profile),
                _ => p.profile.clone(),
            })
            .collect();
        let _ = writeln!(out, "in sync: {}", names.join(", "));
    }
    out
}

fn profile_section(out: &mut String, profile: &ProfileReport) {
    let mode = profile
        .sync_mode
        .map(|m| format!("{m:?}"))
        .unwrap_or_else(|| "removed from Git".into());
    let mut counts: BTreeMap<Action, usize> = BTreeMap::new();
    for change in profile.changes.iter().filter(|c| !is_release(&c.key)) {
        *counts.entry(change.action).or_insert(0) += 1;
    }
    let mut tally: Vec<String> = counts
        .iter()
        .filter(|(a, _)| **a != Action::Unchanged)
        .map(|(a, n)| format!("{n} {}", word(*a, profile.status)))
        .collect();
    tally.extend(release_tally(
        &release_counts(std::iter::once(profile)),
        profile.status,
    ));
    let _ = writeln!(
        out,
        "### {} ({mode}): {}{}",
        profile.profile,
        status_word(profile.status),
        if tally.is_empty() {
            String::new()
        } else {
            format!(" — {}", tally.join(", "))
        }
    );
    for remark in &profile.remarks {
        let _ = writeln!(out, "note: {remark}");
    }
    let label = if profile.status == ProfileStatus::Pending {
        "pending"
    } else {
        "error"
    };
    for error in &profile.errors {
        let _ = writeln!(out, "{label}: {error}");
    }
    for conflict in &profile.conflicts {
        let _ = writeln!(
            out,
            "conflict: {} is applied by profile {} ({})",
            conflict.key, conflict.winner, conflict.reason
        );
    }
    for change in &profile.changes {
        if let Some(release) = change.key.strip_prefix(crate::helm::RELEASE_PREFIX) {
            // Every release is listed, unchanged ones too: there are few, and the phrase says
            // which chart version is installed.
            let _ = writeln!(
                out,
                "helm release {release}: {}",
                change
                    .detail
                    .as_deref()
                    .unwrap_or(word(change.action, profile.status))
            );
            if let Some(diff) = &change.diff {
                let _ = writeln!(out, "```diff\n{}```", ensure_newline(diff));
            }
            continue;
        }
        if change.action == Action::Unchanged {
            continue;
        }
        let _ = writeln!(
            out,
            "{} {}{}",
            word(change.action, profile.status),
            change.key,
            change
                .detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        if let Some(diff) = &change.diff {
            let _ = writeln!(out, "```diff\n{}```", ensure_newline(diff));
        }
    }
}

fn ensure_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

fn status_word(status: ProfileStatus) -> &'static str {
    match status {
        ProfileStatus::Applied => "applied",
        ProfileStatus::InSync => "in sync",
        ProfileStatus::Held => "held (OneTime)",
        ProfileStatus::DryRun => "dry run, nothing applied",
        ProfileStatus::Pending => "pending",
        ProfileStatus::Conflict => "not applied: conflict",
        ProfileStatus::WaitingForDependency => "waiting for a dependency",
        ProfileStatus::Failed => "FAILED",
        ProfileStatus::Withdrawn => "withdrawn",
        ProfileStatus::Released => "withdrawn, objects left in place (LeavePolicies)",
    }
}

fn word(action: Action, status: ProfileStatus) -> &'static str {
    let dry = status == ProfileStatus::DryRun;
    match action {
        Action::Created if dry => "would create",
        Action::Updated if dry => "would update",
        Action::Pruned if dry => "would prune",
        Action::Created => "created",
        Action::Updated => "updated",
        Action::Unchanged => "unchanged",
        Action::Pruned => "pruned",
        Action::Released => "released",
        Action::Skipped => "skipped",
        Action::Failed => "failed",
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Cuts at a line boundary below the cap and says so.
fn cap(text: String) -> String {
    if text.len() <= NOTE_CAP {
        return text;
    }
    let marker = "\n[... note truncated at 1 MiB by flotilla; the state note (refs/notes/flotilla-state) has every object ...]\n";
    let mut end = NOTE_CAP - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind('\n').map_or(end, |i| i + 1);
    format!("{}{marker}", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;
    use crate::report::ObjectChange;

    fn profile(name: &str, status: ProfileStatus, changes: &[(&str, Action)]) -> ProfileReport {
        ProfileReport {
            profile: name.into(),
            sync_mode: Some(SyncMode::Continuous),
            status,
            applied_commit: Some("c0ffee".into()),
            changes: changes
                .iter()
                .map(|(k, a)| ObjectChange {
                    key: k.to_string(),
                    action: *a,
                    diff: (*a != Action::Unchanged)
                        .then(|| format!("--- live/{k}\n+++ desired/{k}\n")),
                    detail: None,
                })
                .collect(),
            conflicts: vec![],
            errors: vec![],
            remarks: vec![],
            hashes: BTreeMap::new(),
            failure: None,
        }
    }

    fn cluster(name: &str, status: ClusterStatus, profiles: Vec<ProfileReport>) -> ClusterReport {
        ClusterReport {
            name: name.into(),
            labels: BTreeMap::new(),
            label_sources: BTreeMap::new(),
            label_conflicts: vec![],
            status,
            error: (status == ClusterStatus::Unreachable).then(|| "connection refused".into()),
            profiles,
        }
    }

    fn report(clusters: Vec<ClusterReport>) -> PassReport {
        PassReport {
            commit: "0123456789abcdef0123".into(),
            subject: "add monitoring".into(),
            validation_errors: vec![],
            desired_commit: None,
            clusters,
            drift: vec![],
        }
    }

    #[test]
    fn identical_clusters_share_a_section() {
        let applied = || {
            profile(
                "mon",
                ProfileStatus::Applied,
                &[
                    ("ConfigMap/mon/a", Action::Created),
                    ("ConfigMap/mon/b", Action::Unchanged),
                ],
            )
        };
        let note = human_note(&report(vec![
            cluster("a", ClusterStatus::Synced, vec![applied()]),
            cluster("b", ClusterStatus::Synced, vec![applied()]),
            cluster("c", ClusterStatus::Unreachable, vec![]),
            cluster("d", ClusterStatus::Paused, vec![]),
        ]));
        assert!(
            note.starts_with(
                "flotilla: 4 clusters (2 changed, 1 unreachable, 1 paused): 2 created, 1 errors\n"
            ),
            "{note}"
        );
        assert!(
            note.contains("\n## a, b\n### mon (Continuous): applied — 1 created\n"),
            "{note}"
        );
        assert!(
            note.contains("created ConfigMap/mon/a\n```diff\n--- live/ConfigMap/mon/a\n"),
            "{note}"
        );
        assert!(
            !note.contains("ConfigMap/mon/b"),
            "unchanged objects are counted, not listed:\n{note}"
        );
        assert!(
            note.contains("\n## c\nunreachable: connection refused\n"),
            "{note}"
        );
        assert!(note.contains("\n## d\npaused: left alone\n"), "{note}");
    }

    /// A cluster whose `gpu` label comes from classifier a-gpu (b-gpu lost it), plus the
    /// given inventory-owned conflicts.
    fn classified(name: &str, env_conflict: bool) -> ClusterReport {
        use crate::classify::{LabelConflict, LabelOwner};
        let mut c = cluster(
            name,
            ClusterStatus::Synced,
            vec![profile(
                "mon",
                ProfileStatus::InSync,
                &[("ConfigMap/mon/a", Action::Unchanged)],
            )],
        );
        c.labels = [("env", "prod"), ("gpu", "a100")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.label_sources = [
            ("env".to_string(), LabelOwner::Inventory),
            ("gpu".to_string(), LabelOwner::Classifier("a-gpu".into())),
        ]
        .into();
        c.label_conflicts.push(LabelConflict {
            classifier: "b-gpu".into(),
            key: "gpu".into(),
            value: "h100".into(),
            owner: LabelOwner::Classifier("a-gpu".into()),
        });
        if env_conflict {
            c.label_conflicts.push(LabelConflict {
                classifier: "c-env".into(),
                key: "env".into(),
                value: "dev".into(),
                owner: LabelOwner::Inventory,
            });
        }
        c
    }

    #[test]
    fn classifier_labels_and_conflicts_per_cluster() {
        let note = human_note(&report(vec![
            classified("a", false),
            classified("b", true),
            classified("c", false),
        ]));
        assert!(
            note.starts_with(
                "flotilla: 3 clusters (0 changed): nothing changed, 4 label conflicts\n"
            ),
            "{note}"
        );
        let gpu =
            "label conflict: classifier b-gpu wants gpu=h100, but classifier a-gpu owns gpu\n";
        let env = "label conflict: classifier c-env wants env=dev, but the inventory sets it\n";
        // a and c read the same and share a section; b has one more conflict and gets its own.
        assert!(
            note.contains(&format!(
                "\n## a, c\nlabels from classifiers: gpu=a100 (a-gpu)\n{gpu}in sync: mon\n"
            )),
            "{note}"
        );
        assert!(
            note.contains(&format!(
                "\n## b\nlabels from classifiers: gpu=a100 (a-gpu)\n{gpu}{env}in sync: mon\n"
            )),
            "{note}"
        );
        assert_eq!(note.matches(env).count(), 1, "{note}");
        // Inventory labels are not listed as classifier labels.
        assert!(!note.contains("env=prod"), "{note}");
    }

    #[test]
    fn clusters_with_different_classifier_labels_do_not_share_a_section() {
        let a = classified("a", false);
        let mut b = classified("b", false);
        b.labels.insert("gpu".into(), "h100".into());
        let note = human_note(&report(vec![a, b]));
        assert!(note.contains("\n## a\n"), "{note}");
        assert!(
            note.contains("\n## b\nlabels from classifiers: gpu=h100 (a-gpu)\n"),
            "{note}"
        );
    }

    #[test]
    fn nothing_changed_says_so() {
        let note = human_note(&report(vec![cluster(
            "a",
            ClusterStatus::Synced,
            vec![profile(
                "mon",
                ProfileStatus::InSync,
                &[("ConfigMap/mon/a", Action::Unchanged)],
            )],
        )]));
        assert!(
            note.starts_with("flotilla: 1 clusters (0 changed): nothing changed\n"),
            "{note}"
        );
        assert!(note.contains("in sync: mon\n"), "{note}");
    }

    #[test]
    fn invalid_commit_lists_every_error() {
        let mut r = report(vec![]);
        r.validation_errors = vec![
            "profiles/a.yaml:3: bad".into(),
            "clusters/c.yaml:9: worse".into(),
        ];
        r.desired_commit = Some("fedcba9876543210".into());
        let note = human_note(&r);
        assert!(
            note.contains("INVALID: nothing applied, nothing pruned (2 errors)"),
            "{note}"
        );
        assert!(note.contains("last valid commit fedcba987654"), "{note}");
        assert!(
            note.contains("profiles/a.yaml:3: bad\nclusters/c.yaml:9: worse\n"),
            "{note}"
        );
    }

    #[test]
    fn dry_run_words_and_conflicts() {
        let mut p = profile(
            "dry",
            ProfileStatus::DryRun,
            &[("ConfigMap/x/y", Action::Updated)],
        );
        p.sync_mode = Some(SyncMode::DryRun);
        p.conflicts.push(crate::plan::Conflict {
            key: "ConfigMap/x/z".into(),
            winner: "other".into(),
            reason: "tier 1 beats tier 100".into(),
        });
        let note = human_note(&report(vec![cluster("a", ClusterStatus::Synced, vec![p])]));
        assert!(
            note.contains("### dry (DryRun): dry run, nothing applied — 1 would update\n"),
            "{note}"
        );
        assert!(note.contains("would update ConfigMap/x/y\n"), "{note}");
        assert!(
            note.contains(
                "conflict: ConfigMap/x/z is applied by profile other (tier 1 beats tier 100)"
            ),
            "{note}"
        );
    }

    #[test]
    fn capped_with_a_marker() {
        let big: Vec<(String, Action)> = (0..20_000)
            .map(|i| {
                (
                    format!("ConfigMap/ns/object-with-a-long-name-{i:05}"),
                    Action::Created,
                )
            })
            .collect();
        let refs: Vec<(&str, Action)> = big.iter().map(|(k, a)| (k.as_str(), *a)).collect();
        let note = human_note(&report(vec![cluster(
            "a",
            ClusterStatus::Synced,
            vec![profile("big", ProfileStatus::Applied, &refs)],
        )]));
        assert!(note.len() <= NOTE_CAP, "{}", note.len());
        assert!(note.ends_with("...]\n"));
        assert!(note.contains("note truncated at 1 MiB"));
    }
}
