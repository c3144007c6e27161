//! Table-driven tests of the comparison.

use super::*;
use serde_json::json;

fn cm(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "ns"}, "data": {"v": value}})
}

fn secret(value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "s", "namespace": "ns"}, "stringData": {"password": value}})
}

fn rel(version: &str, values: Value) -> Release {
    Release {
        chart: "platform/greeter".into(),
        version: version.into(),
        repository: "http://charts".into(),
        uninstall: false,
        values,
        secret_paths: BTreeSet::new(),
    }
}

fn rendered(objects: &[Value], releases: &[Release]) -> ProfileSide {
    let mut contents = Contents::default();
    for o in objects {
        contents
            .objects
            .insert((false, crate::diff::object_key(o)), o.clone());
    }
    for (i, r) in releases.iter().enumerate() {
        contents.releases.insert(format!("helm:ns/r{i}"), r.clone());
    }
    ProfileSide {
        state: ProfileState::Rendered(contents),
        leave_policies: false,
    }
}

fn input(
    base: Option<Vec<(&str, ProfileSide)>>,
    head: Option<Vec<(&str, ProfileSide)>>,
) -> ClusterInput {
    let map = |v: Vec<(&str, ProfileSide)>| {
        v.into_iter()
            .map(|(k, s)| (k.to_string(), s))
            .collect::<BTreeMap<_, _>>()
    };
    ClusterInput {
        name: "c1".into(),
        labels: LabelSource::Inventory,
        paused: false,
        base: base.map(map),
        head: head.map(map),
    }
}

#[test]
fn comparison_table() {
    struct Case {
        name: &'static str,
        input: ClusterInput,
        counts: Counts,
        membership: Membership,
        /// (profile, targeting, object actions, release actions)
        profiles: Vec<(
            &'static str,
            Targeting,
            Vec<ObjectAction>,
            Vec<ReleaseAction>,
        )>,
    }
    let c = |added, changed, removed, errors| Counts {
        added,
        changed,
        removed,
        errors,
    };
    let leave = |mut s: ProfileSide| {
        s.leave_policies = true;
        s
    };
    let cases = vec![
        Case {
            name: "identical",
            input: input(
                Some(vec![("p", rendered(&[cm("a", "1")], &[]))]),
                Some(vec![("p", rendered(&[cm("a", "1")], &[]))]),
            ),
            counts: c(0, 0, 0, 0),
            membership: Membership::Stays,
            profiles: vec![],
        },
        Case {
            name: "changed, added, removed objects",
            input: input(
                Some(vec![("p", rendered(&[cm("a", "1"), cm("b", "1")], &[]))]),
                Some(vec![("p", rendered(&[cm("a", "2"), cm("c", "1")], &[]))]),
            ),
            counts: c(1, 1, 1, 0),
            membership: Membership::Stays,
            profiles: vec![(
                "p",
                Targeting::Stays,
                vec![
                    ObjectAction::Changed,
                    ObjectAction::Removed,
                    ObjectAction::Added,
                ],
                vec![],
            )],
        },
        Case {
            name: "profile starts matching",
            input: input(
                Some(vec![]),
                Some(vec![(
                    "p",
                    rendered(&[cm("a", "1")], &[rel("1.0.0", json!({}))]),
                )]),
            ),
            counts: c(2, 0, 0, 0),
            membership: Membership::Stays,
            profiles: vec![(
                "p",
                Targeting::StartsMatching,
                vec![ObjectAction::Added],
                vec![ReleaseAction::Installed],
            )],
        },
        Case {
            name: "profile stops matching",
            input: input(
                Some(vec![(
                    "p",
                    rendered(&[cm("a", "1")], &[rel("1.0.0", json!({}))]),
                )]),
                Some(vec![]),
            ),
            counts: c(0, 0, 2, 0),
            membership: Membership::Stays,
            profiles: vec![(
                "p",
                Targeting::StopsMatching,
                vec![ObjectAction::Removed],
                vec![ReleaseAction::Uninstalled],
            )],
        },
        Case {
            name: "LeavePolicies releases instead of deleting",
            input: input(
                Some(vec![(
                    "p",
                    leave(rendered(&[cm("a", "1")], &[rel("1.0.0", json!({}))])),
                )]),
                Some(vec![]),
            ),
            counts: c(0, 0, 0, 0),
            membership: Membership::Stays,
            profiles: vec![(
                "p",
                Targeting::StopsMatchingLeaves,
                vec![ObjectAction::Released],
                vec![ReleaseAction::Released],
            )],
        },
        Case {
            name: "release upgrade, downgrade, values",
            input: input(
                Some(vec![
                    ("a", rendered(&[], &[rel("1.0.0", json!({"x": 1}))])),
                    ("b", rendered(&[], &[rel("1.2.0", json!({}))])),
                    ("c", rendered(&[], &[rel("1.0.0", json!({"x": 1}))])),
                ]),
                Some(vec![
                    ("a", rendered(&[], &[rel("1.1.0", json!({"x": 1}))])),
                    ("b", rendered(&[], &[rel("1.1.0", json!({}))])),
                    ("c", rendered(&[], &[rel("1.0.0", json!({"x": 2}))])),
                ]),
            ),
            counts: c(0, 3, 0, 0),
            membership: Membership::Stays,
            profiles: vec![
                ("a", Targeting::Stays, vec![], vec![ReleaseAction::Upgraded]),
                (
                    "b",
                    Targeting::Stays,
                    vec![],
                    vec![ReleaseAction::Downgraded],
                ),
                (
                    "c",
                    Targeting::Stays,
                    vec![],
                    vec![ReleaseAction::ValuesChanged],
                ),
            ],
        },
        Case {
            name: "new head error counts, shared error does not",
            input: input(
                Some(vec![
                    ("a", rendered(&[cm("a", "1")], &[])),
                    (
                        "b",
                        ProfileSide {
                            state: ProfileState::Error("e".into()),
                            leave_policies: false,
                        },
                    ),
                ]),
                Some(vec![
                    (
                        "a",
                        ProfileSide {
                            state: ProfileState::Error("boom".into()),
                            leave_policies: false,
                        },
                    ),
                    (
                        "b",
                        ProfileSide {
                            state: ProfileState::Error("e".into()),
                            leave_policies: false,
                        },
                    ),
                ]),
            ),
            counts: c(0, 0, 0, 1),
            membership: Membership::Stays,
            profiles: vec![
                ("a", Targeting::Stays, vec![], vec![]),
                ("b", Targeting::Stays, vec![], vec![]),
            ],
        },
        Case {
            name: "pending on both sides is no change",
            input: input(
                Some(vec![(
                    "p",
                    ProfileSide {
                        state: ProfileState::Pending(vec!["ref".into()]),
                        leave_policies: false,
                    },
                )]),
                Some(vec![(
                    "p",
                    ProfileSide {
                        state: ProfileState::Pending(vec!["ref".into()]),
                        leave_policies: false,
                    },
                )]),
            ),
            counts: c(0, 0, 0, 0),
            membership: Membership::Stays,
            profiles: vec![("p", Targeting::Stays, vec![], vec![])],
        },
        Case {
            name: "leaving the fleet deletes nothing",
            input: input(Some(vec![]), None),
            counts: c(0, 0, 0, 0),
            membership: Membership::Leaves,
            profiles: vec![],
        },
        Case {
            name: "joining the fleet adds everything",
            input: input(None, Some(vec![("p", rendered(&[cm("a", "1")], &[]))])),
            counts: c(1, 0, 0, 0),
            membership: Membership::Joins,
            profiles: vec![(
                "p",
                Targeting::StartsMatching,
                vec![ObjectAction::Added],
                vec![],
            )],
        },
    ];
    for case in cases {
        let got = compare_cluster(case.input);
        assert_eq!(got.counts, case.counts, "{}", case.name);
        assert_eq!(got.membership, case.membership, "{}", case.name);
        let profiles: Vec<_> = got
            .profiles
            .iter()
            .map(|p| {
                (
                    p.profile.as_str(),
                    p.targeting,
                    p.objects.iter().map(|o| o.action).collect::<Vec<_>>(),
                    p.releases.iter().map(|r| r.action).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(profiles, case.profiles, "{}", case.name);
    }
}

#[test]
fn diffs_are_relabelled_and_secrets_hashed() {
    let got = compare_cluster(input(
        Some(vec![("p", rendered(&[secret("hunter2")], &[]))]),
        Some(vec![("p", rendered(&[secret("correct-horse")], &[]))]),
    ));
    let diff = &got.profiles[0].objects[0].diff;
    assert!(
        diff.starts_with("--- base/Secret/ns/s\n+++ head/Secret/ns/s\n"),
        "{diff}"
    );
    assert!(diff.contains("<redacted fnv1a:"), "{diff}");
    assert!(
        !diff.contains("hunter2") && !diff.contains("correct-horse"),
        "{diff}"
    );
}

#[test]
fn release_values_from_secrets_are_redacted() {
    let mut old = rel("1.0.0", json!({"db": {"password": "old-pw"}}));
    let mut new = rel("1.0.0", json!({"db": {"password": "new-pw"}}));
    old.secret_paths.insert("/db/password".into());
    new.secret_paths.insert("/db/password".into());
    let got = compare_cluster(input(
        Some(vec![("p", rendered(&[], &[old]))]),
        Some(vec![("p", rendered(&[], &[new]))]),
    ));
    let change = &got.profiles[0].releases[0];
    assert_eq!(change.action, ReleaseAction::ValuesChanged);
    let diff = change.values_diff.as_deref().unwrap_or_default();
    assert!(
        !diff.contains("old-pw") && !diff.contains("new-pw"),
        "{diff}"
    );
    assert!(diff.contains("--- base/values/ns/r0"), "{diff}");
}

#[test]
fn exit_codes() {
    let info = CommitInfo {
        commit: "b".into(),
        subject: String::new(),
    };
    let cluster = |input: ClusterInput| compare_cluster(input);
    let same = cluster(input(
        Some(vec![("p", rendered(&[cm("a", "1")], &[]))]),
        Some(vec![("p", rendered(&[cm("a", "1")], &[]))]),
    ));
    let changed = cluster(input(
        Some(vec![("p", rendered(&[cm("a", "1")], &[]))]),
        Some(vec![("p", rendered(&[cm("a", "2")], &[]))]),
    ));
    let invalid = vec![SideError {
        side: Side::Head,
        message: "profiles/x.yaml:1: bad".into(),
    }];
    for (clusters, errors, want) in [
        (vec![same.clone()], vec![], 0),
        (vec![same.clone(), changed.clone()], vec![], 1),
        (vec![], invalid, 2),
    ] {
        let r = review(info.clone(), info.clone(), errors, clusters);
        assert_eq!(r.exit_code(), want);
        let json = r.to_json();
        let back: Review = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, r);
    }
}
