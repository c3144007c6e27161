//! What each cluster should get this pass, decided from values only: which profiles target it
//! (selectors, clusterRefs and the dependsOn closure), in which order, which deployed profiles
//! must be withdrawn, which OneTime profiles hold, how many clusters may update a profile at
//! once, and who wins when two profiles render the same object. Pure: no I/O, no clock.

mod conflict;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigRepo, MaxUpdate, Profile, StopMatchingBehavior, SyncMode};

pub use conflict::{Claim, Conflict, resolve_conflicts};

/// What the inventory of a cluster says a profile deployed there (read live, so it survives
/// restarts of the daemon and removals of the profile from Git).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    /// Commit whose render was last written.
    pub commit: String,
    /// The profile's syncMode when it was written (OneTime holds on it).
    pub sync_mode: SyncMode,
    /// Honoured when the profile is removed from Git, since its document is gone then.
    pub stop_matching: StopMatchingBehavior,
    /// Every object of that write was applied (none failed or is still in flight): only then
    /// has a OneTime profile applied once, and holds.
    pub complete: bool,
}

/// Why a profile leaves a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawReason {
    /// The profile no longer selects the cluster.
    StoppedMatching,
    /// The profile was removed from the config repo.
    Removed,
}

/// One thing to do for one profile on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Render and apply (or dry-run) the profile.
    Deploy {
        /// Profile name.
        profile: String,
        /// Profiles that must have succeeded on this cluster first (those targeting it).
        after: Vec<String>,
    },
    /// OneTime profile already applied on this cluster: nothing to do.
    Hold {
        /// Profile name.
        profile: String,
        /// Commit it was applied at.
        commit: String,
    },
    /// Remove (or, with LeavePolicies, release) what the profile deployed.
    Withdraw {
        /// Profile name.
        profile: String,
        /// LeavePolicies: keep the objects, drop flotilla's label and inventory.
        leave: bool,
        /// Why.
        reason: WithdrawReason,
    },
}

impl Step {
    /// The profile this step is about.
    pub fn profile(&self) -> &str {
        match self {
            Step::Deploy { profile, .. }
            | Step::Hold { profile, .. }
            | Step::Withdraw { profile, .. } => profile,
        }
    }
}

/// Profiles that go to a cluster with these effective labels: those whose selector or
/// clusterRefs match, plus everything they depend on (Sveltos semantics: a dependency is
/// deployed to the same clusters). Ordered dependencies first, then by name.
pub fn profiles_for_cluster<'a>(
    repo: &'a ConfigRepo,
    cluster: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Profile> {
    let mut wanted: BTreeSet<&str> = repo
        .profiles
        .values()
        .filter(|p| p.matches(cluster, labels))
        .map(|p| p.name.as_str())
        .collect();
    let mut queue: Vec<&str> = wanted.iter().copied().collect();
    while let Some(name) = queue.pop() {
        let Some(profile) = repo.profiles.get(name) else {
            continue;
        };
        for dependency in &profile.spec.depends_on {
            let dependency = dependency.value.as_str();
            if repo.profiles.contains_key(dependency) && wanted.insert(dependency) {
                queue.push(dependency);
            }
        }
    }
    let mut ordered: Vec<&Profile> = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    // Validation rejects cycles, so each round places at least one profile; the bound guards
    // against looping anyway.
    for _ in 0..=wanted.len() {
        for name in &wanted {
            if placed.contains(name) {
                continue;
            }
            let Some(profile) = repo.profiles.get(*name) else {
                continue;
            };
            let ready = profile
                .spec
                .depends_on
                .iter()
                .all(|d| placed.contains(d.value.as_str()));
            if ready {
                placed.insert(name);
                ordered.push(profile);
            }
        }
    }
    ordered
}

/// The steps for one cluster: deploy (or hold) what targets it, withdraw what its inventory
/// holds but no longer targets it. Withdrawals come first, so an object moving from one profile
/// to another is released before it is claimed again.
pub fn plan_cluster(
    repo: &ConfigRepo,
    cluster: &str,
    labels: &BTreeMap<String, String>,
    deployed: &BTreeMap<String, Deployed>,
) -> Vec<Step> {
    let targeted = profiles_for_cluster(repo, cluster, labels);
    let targeted_names: BTreeSet<&str> = targeted.iter().map(|p| p.name.as_str()).collect();
    let mut steps = Vec::new();
    for (name, was) in deployed {
        if targeted_names.contains(name.as_str()) {
            continue;
        }
        let (reason, behaviour) = match repo.profiles.get(name) {
            Some(profile) => (
                WithdrawReason::StoppedMatching,
                profile.spec.stop_matching_behavior,
            ),
            None => (WithdrawReason::Removed, was.stop_matching),
        };
        steps.push(Step::Withdraw {
            profile: name.clone(),
            leave: behaviour == StopMatchingBehavior::LeavePolicies,
            reason,
        });
    }
    for profile in targeted {
        if profile.spec.sync_mode == SyncMode::OneTime
            && let Some(was) = deployed.get(&profile.name)
            && was.complete
        {
            steps.push(Step::Hold {
                profile: profile.name.clone(),
                commit: was.commit.clone(),
            });
            continue;
        }
        let after = profile
            .spec
            .depends_on
            .iter()
            .map(|d| d.value.clone())
            .filter(|d| targeted_names.contains(d.as_str()))
            .collect();
        steps.push(Step::Deploy {
            profile: profile.name.clone(),
            after,
        });
    }
    steps
}

/// How many clusters may update a profile at once, given how many it targets this pass.
/// Without `maxUpdate`: all of them. A percentage rounds up and is at least one cluster.
pub fn max_update_permits(max: Option<MaxUpdate>, targets: usize) -> usize {
    let targets = targets.max(1);
    match max {
        None => targets,
        Some(MaxUpdate::Count(n)) => usize::try_from(n).unwrap_or(usize::MAX).min(targets),
        Some(MaxUpdate::Percent(p)) => {
            let p = usize::try_from(p).unwrap_or(100);
            targets.saturating_mul(p).div_ceil(100).clamp(1, targets)
        }
    }
}

/// Permits per profile across the fleet for this pass, from the clusters each profile deploys to.
pub fn fleet_permits<'a>(
    repo: &ConfigRepo,
    plans: impl IntoIterator<Item = &'a Vec<Step>>,
) -> BTreeMap<String, usize> {
    let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
    for steps in plans {
        for step in steps {
            if let Step::Deploy { profile, .. } = step {
                *targets.entry(profile.as_str()).or_default() += 1;
            }
        }
    }
    targets
        .into_iter()
        .filter_map(|(name, count)| {
            let profile = repo.profiles.get(name)?;
            Some((
                name.to_string(),
                max_update_permits(profile.spec.max_update, count),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileTree;

    fn repo(profiles: &str) -> ConfigRepo {
        let mut tree = FileTree::new();
        tree.insert_file(
            "clusters/c.yaml",
            b"apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels: {env: prod}\n"
                .to_vec(),
        );
        tree.insert_file("profiles/p.yaml", profiles.as_bytes().to_vec());
        match crate::config::load(tree) {
            Ok(repo) => repo,
            Err(d) => panic!("test repo invalid: {d}"),
        }
    }

    fn profile(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    }

    fn labels(repo: &ConfigRepo) -> BTreeMap<String, String> {
        repo.clusters["c1"].labels.clone()
    }

    fn deployed(mode: SyncMode, stop: StopMatchingBehavior) -> Deployed {
        Deployed {
            commit: "abc".into(),
            sync_mode: mode,
            stop_matching: stop,
            complete: true,
        }
    }

    #[test]
    fn targets_selector_refs_and_dependency_closure_in_order() {
        let text = [
            profile(
                "a-dependent",
                "  clusterSelector: env=prod\n  dependsOn: [z-base]\n",
            ),
            profile("b-other-env", "  clusterSelector: env=dev\n"),
            profile("c-by-ref", "  clusterRefs: [c1]\n"),
            profile("d-no-selector", "  tier: 1\n"),
            profile("e-everything", "  clusterSelector: {}\n"),
            // Does not select c1 itself, but a-dependent needs it there.
            profile(
                "z-base",
                "  clusterSelector: env=dev\n  dependsOn: [y-root]\n",
            ),
            profile("y-root", "  clusterSelector: env=staging\n"),
        ]
        .concat();
        let repo = repo(&text);
        let names: Vec<&str> = profiles_for_cluster(&repo, "c1", &labels(&repo))
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            names,
            vec![
                "c-by-ref",
                "e-everything",
                "y-root",
                "z-base",
                "a-dependent"
            ]
        );
    }

    #[test]
    fn steps_for_each_situation() {
        let text = [
            profile("cont", "  clusterSelector: env=prod\n"),
            profile("once", "  clusterSelector: env=prod\n  syncMode: OneTime\n"),
            profile(
                "leaves",
                "  clusterSelector: env=dev\n  stopMatchingBehavior: LeavePolicies\n",
            ),
            profile("gone-here", "  clusterSelector: env=dev\n"),
            profile(
                "needs",
                "  clusterSelector: env=prod\n  dependsOn: [cont]\n",
            ),
        ]
        .concat();
        let repo = repo(&text);
        let cases: Vec<(&str, BTreeMap<String, Deployed>, Vec<Step>)> = vec![
            (
                "nothing deployed yet",
                BTreeMap::new(),
                vec![
                    Step::Deploy {
                        profile: "cont".into(),
                        after: vec![],
                    },
                    Step::Deploy {
                        profile: "needs".into(),
                        after: vec!["cont".into()],
                    },
                    Step::Deploy {
                        profile: "once".into(),
                        after: vec![],
                    },
                ],
            ),
            (
                "OneTime already applied holds; Continuous redeploys",
                BTreeMap::from([
                    (
                        "once".to_string(),
                        deployed(SyncMode::OneTime, StopMatchingBehavior::WithdrawPolicies),
                    ),
                    (
                        "cont".to_string(),
                        deployed(SyncMode::Continuous, StopMatchingBehavior::WithdrawPolicies),
                    ),
                ]),
                vec![
                    Step::Deploy {
                        profile: "cont".into(),
                        after: vec![],
                    },
                    Step::Deploy {
                        profile: "needs".into(),
                        after: vec!["cont".into()],
                    },
                    Step::Hold {
                        profile: "once".into(),
                        commit: "abc".into(),
                    },
                ],
            ),
            (
                "OneTime whose first write did not complete deploys again",
                BTreeMap::from([(
                    "once".to_string(),
                    Deployed {
                        complete: false,
                        ..deployed(SyncMode::OneTime, StopMatchingBehavior::WithdrawPolicies)
                    },
                )]),
                vec![
                    Step::Deploy {
                        profile: "cont".into(),
                        after: vec![],
                    },
                    Step::Deploy {
                        profile: "needs".into(),
                        after: vec!["cont".into()],
                    },
                    Step::Deploy {
                        profile: "once".into(),
                        after: vec![],
                    },
                ],
            ),
            (
                "stopped matching: behaviour from the profile; removed: from the inventory",
                BTreeMap::from([
                    (
                        "leaves".to_string(),
                        deployed(SyncMode::Continuous, StopMatchingBehavior::WithdrawPolicies),
                    ),
                    (
                        "gone-here".to_string(),
                        deployed(SyncMode::Continuous, StopMatchingBehavior::LeavePolicies),
                    ),
                    (
                        "deleted".to_string(),
                        deployed(SyncMode::Continuous, StopMatchingBehavior::LeavePolicies),
                    ),
                    (
                        "deleted-2".to_string(),
                        deployed(SyncMode::Continuous, StopMatchingBehavior::WithdrawPolicies),
                    ),
                ]),
                vec![
                    Step::Withdraw {
                        profile: "deleted".into(),
                        leave: true,
                        reason: WithdrawReason::Removed,
                    },
                    Step::Withdraw {
                        profile: "deleted-2".into(),
                        leave: false,
                        reason: WithdrawReason::Removed,
                    },
                    Step::Withdraw {
                        profile: "gone-here".into(),
                        leave: false,
                        reason: WithdrawReason::StoppedMatching,
                    },
                    Step::Withdraw {
                        profile: "leaves".into(),
                        leave: true,
                        reason: WithdrawReason::StoppedMatching,
                    },
                    Step::Deploy {
                        profile: "cont".into(),
                        after: vec![],
                    },
                    Step::Deploy {
                        profile: "needs".into(),
                        after: vec!["cont".into()],
                    },
                    Step::Deploy {
                        profile: "once".into(),
                        after: vec![],
                    },
                ],
            ),
        ];
        for (what, deployed, want) in cases {
            assert_eq!(
                plan_cluster(&repo, "c1", &labels(&repo), &deployed),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn max_update_permits_table() {
        let cases = [
            (None, 3, 3),
            (None, 0, 1),
            (Some(MaxUpdate::Count(1)), 3, 1),
            (Some(MaxUpdate::Count(10)), 3, 3),
            (Some(MaxUpdate::Percent(25)), 10, 3),
            (Some(MaxUpdate::Percent(25)), 4, 1),
            (Some(MaxUpdate::Percent(1)), 3, 1),
            (Some(MaxUpdate::Percent(100)), 7, 7),
            (Some(MaxUpdate::Percent(50)), 3, 2),
        ];
        for (max, targets, want) in cases {
            assert_eq!(
                max_update_permits(max, targets),
                want,
                "{max:?} of {targets}"
            );
        }
    }
}
