//! Who owns an object two profiles render for the same cluster (DESIGN §3): the lower tier; on a
//! tie the profile that owns it now; else the first by name. A DryRun profile never takes an
//! object from a profile that applies; it only learns whether it would.

use std::collections::BTreeMap;

/// One profile wanting one object on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The object (see `diff::object_key`), prefixed with its destination when it is Local.
    pub key: String,
    /// Claiming profile.
    pub profile: String,
    /// Its tier.
    pub tier: u32,
    /// The claiming profile is DryRun: it applies nothing, so it wins nothing from others.
    pub dry_run: bool,
}

/// An object a profile lost to another.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// The object.
    pub key: String,
    /// The profile that applies it.
    pub winner: String,
    /// Why the winner won, for the note.
    pub reason: String,
}

/// The lost objects per losing profile. `owners` maps objects to the profile whose inventory
/// holds them now.
pub fn resolve_conflicts(
    claims: &[Claim],
    owners: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<Conflict>> {
    let mut by_key: BTreeMap<&str, Vec<&Claim>> = BTreeMap::new();
    for claim in claims {
        by_key.entry(&claim.key).or_default().push(claim);
    }
    let mut lost: BTreeMap<String, Vec<Conflict>> = BTreeMap::new();
    for (key, mut contenders) in by_key {
        contenders.sort_by(|a, b| a.profile.cmp(&b.profile));
        contenders.dedup_by(|a, b| a.profile == b.profile);
        if contenders.len() < 2 {
            continue;
        }
        let owner = owners.get(key).map(String::as_str);
        let mut lose = |loser: &Claim, winner: &Claim| {
            let reason = if winner.tier < loser.tier {
                format!("tier {} beats tier {}", winner.tier, loser.tier)
            } else if owner == Some(winner.profile.as_str()) {
                format!(
                    "same tier {}; {} owns it already",
                    winner.tier, winner.profile
                )
            } else {
                format!("same tier {}; first by name", winner.tier)
            };
            lost.entry(loser.profile.clone())
                .or_default()
                .push(Conflict {
                    key: key.to_string(),
                    winner: winner.profile.clone(),
                    reason,
                });
        };
        // Among the profiles that apply.
        let applying: Vec<&Claim> = contenders.iter().copied().filter(|c| !c.dry_run).collect();
        if let Some(winner) = winner_of(&applying, owner) {
            for loser in applying.iter().filter(|c| c.profile != winner.profile) {
                lose(loser, winner);
            }
        }
        // Each DryRun profile against those, as if it applied too.
        for dry in contenders.iter().copied().filter(|c| c.dry_run) {
            let mut set = applying.clone();
            set.push(dry);
            if let Some(winner) = winner_of(&set, owner)
                && winner.profile != dry.profile
            {
                lose(dry, winner);
            }
        }
    }
    lost
}

/// The claim that wins among `set`: lowest tier, then the current owner, then first by name.
fn winner_of<'c>(set: &[&'c Claim], owner: Option<&str>) -> Option<&'c Claim> {
    set.iter().copied().min_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then_with(|| {
                // The current owner sorts first on a tie.
                (owner != Some(a.profile.as_str())).cmp(&(owner != Some(b.profile.as_str())))
            })
            .then_with(|| a.profile.cmp(&b.profile))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: &str, profile: &str, tier: u32) -> Claim {
        Claim {
            key: key.into(),
            profile: profile.into(),
            tier,
            dry_run: false,
        }
    }

    fn dry(key: &str, profile: &str, tier: u32) -> Claim {
        Claim {
            dry_run: true,
            ..claim(key, profile, tier)
        }
    }

    #[test]
    fn table() {
        // (what, claims, current owners key → profile, expected losers (loser, winner))
        type Case = (
            &'static str,
            Vec<Claim>,
            Vec<(&'static str, &'static str)>,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no overlap",
                vec![claim("k1", "a", 1), claim("k2", "b", 1)],
                vec![],
                vec![],
            ),
            (
                "lower tier wins",
                vec![claim("k", "a", 200), claim("k", "b", 100)],
                vec![],
                vec![("a", "b")],
            ),
            (
                "lower tier wins against the owner",
                vec![claim("k", "a", 200), claim("k", "b", 100)],
                vec![("k", "a")],
                vec![("a", "b")],
            ),
            (
                "tie: owner keeps it",
                vec![claim("k", "a", 100), claim("k", "b", 100)],
                vec![("k", "b")],
                vec![("a", "b")],
            ),
            (
                "tie, no owner: first by name",
                vec![claim("k", "b", 100), claim("k", "a", 100)],
                vec![],
                vec![("b", "a")],
            ),
            (
                "three-way",
                vec![claim("k", "c", 5), claim("k", "a", 9), claim("k", "b", 5)],
                vec![("k", "c")],
                vec![("a", "c"), ("b", "c")],
            ),
            (
                "a DryRun that would win takes nothing; one that would lose learns it",
                vec![
                    claim("k", "real", 100),
                    dry("k", "dry-wins", 10),
                    dry("k", "dry-loses", 200),
                ],
                vec![],
                vec![("dry-loses", "real")],
            ),
            (
                "DryRun profiles do not conflict with each other",
                vec![dry("k", "a", 100), dry("k", "b", 100)],
                vec![],
                vec![],
            ),
            (
                "a DryRun owner (once applied) keeps nothing from an applying profile",
                vec![claim("k", "b", 100), dry("k", "a", 100)],
                vec![("k", "a")],
                vec![],
            ),
            (
                "same profile twice is not a conflict",
                vec![claim("k", "a", 1), claim("k", "a", 1)],
                vec![],
                vec![],
            ),
        ];
        for (what, claims, owners, want) in cases {
            let owners = owners
                .into_iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect();
            let got: Vec<(String, String)> = resolve_conflicts(&claims, &owners)
                .into_iter()
                .flat_map(|(loser, lost)| lost.into_iter().map(move |c| (loser.clone(), c.winner)))
                .collect();
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }
}
