//! End-to-end sync policies against real control planes and real git repositories: conflicts
//! between profiles (tier, name, owner, continueOnConflict), dependsOn, maxUpdate, OneTime,
//! DryRun, a CRD with its custom resource in one profile, and Secret redaction. Every test
//! asserts the end state in the clusters and in the notes.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use support::fleet::{
    ConfigRepo, Run, clusters_yaml, configmap, configmap_meta, configmap_yaml, flotilla_bin,
    profile_yaml, sync_once,
};
use support::{AuditEvent, ControlPlanes};

/// `flotilla sync --once` with the log filter `log` (e.g. `debug`).
fn sync_once_logging(repo: &ConfigRepo, fleet: &ControlPlanes, log: &str) -> Run {
    Command::new(flotilla_bin())
        .args(["sync", "--once", "--repo", &repo.url(), "--kubeconfig-dir"])
        .arg(fleet.dir())
        .arg("--cache-dir")
        .arg(repo.cache_dir())
        .env_remove("FLOTILLA_GIT_TOKEN")
        .env("FLOTILLA_LOG", log)
        .output()
        .expect("run flotilla sync")
        .into()
}

/// Write requests to cluster `name` about objects of `resource` named in `names`.
fn writes_to(
    fleet: &ControlPlanes,
    cluster: &str,
    resource: &str,
    names: &[&str],
) -> Vec<AuditEvent> {
    fleet
        .write_requests(cluster)
        .into_iter()
        .filter(|e| e.resource.as_deref() == Some(resource))
        .filter(|e| e.name.as_deref().is_some_and(|n| names.contains(&n)))
        .collect()
}

fn profile_annotation(annotations: &BTreeMap<String, String>) -> Option<&str> {
    annotations.get("flotilla.dev/profile").map(String::as_str)
}

// ---------------------------------------------------------------------------------------------
// 1. Conflicts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_lower_tier_wins_ties_go_by_owner_then_name_and_continue_on_conflict() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        // alpha (tier 200) and zulu (tier 100) both render default/shared; alpha comes first by
        // name but loses on tier.
        .write(
            "manifests/alpha.yaml",
            &[
                configmap_yaml("default", "shared", &[("by", "alpha")]),
                configmap_yaml("default", "alpha-extra", &[("k", "v")]),
            ]
            .concat(),
        )
        .write(
            "manifests/zulu.yaml",
            &configmap_yaml("default", "shared", &[("by", "zulu")]),
        )
        // tie-a and tie-b, same (default) tier, nobody owns default/tie yet: first by name.
        .write(
            "manifests/tie-a.yaml",
            &configmap_yaml("default", "tie", &[("by", "tie-a")]),
        )
        .write(
            "manifests/tie-b.yaml",
            &configmap_yaml("default", "tie", &[("by", "tie-b")]),
        )
        // keeper-b owns default/owned from the first commit; keeper-a (same tier, first by
        // name) arrives in the second one and must not take it.
        .write(
            "manifests/keeper-b.yaml",
            &configmap_yaml("default", "owned", &[("by", "keeper-b")]),
        )
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml(
                    "alpha",
                    "  clusterSelector: {}\n  tier: 200\n  policyRefs:\n  - {path: manifests/alpha.yaml}\n",
                ),
                profile_yaml(
                    "zulu",
                    "  clusterSelector: {}\n  tier: 100\n  policyRefs:\n  - {path: manifests/zulu.yaml}\n",
                ),
                profile_yaml(
                    "tie-a",
                    "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/tie-a.yaml}\n",
                ),
                profile_yaml(
                    "tie-b",
                    "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/tie-b.yaml}\n",
                ),
                profile_yaml(
                    "keeper-b",
                    "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/keeper-b.yaml}\n",
                ),
            ]
            .concat(),
        );
    let commit = repo.commit("two profiles want the same objects");
    let run = sync_once(&repo, &fleet, &[]);
    // A lost conflict degrades the cluster, and `sync --once` says so with exit code 1.
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );

    // Lower tier wins: the object is zulu's, data and annotation.
    let shared = configmap(&client, "default", "shared")
        .await
        .expect("shared exists");
    assert_eq!(
        shared.get("by").map(String::as_str),
        Some("zulu"),
        "{}",
        run.stdout
    );
    let (_, annotations) = configmap_meta(&client, "default", "shared").await.unwrap();
    assert_eq!(profile_annotation(&annotations), Some("zulu"));
    // Without continueOnConflict the rest of the losing profile is not applied.
    assert!(
        configmap(&client, "default", "alpha-extra").await.is_none(),
        "alpha lost a conflict and must not apply anything:\n{}",
        run.stdout
    );
    let inventories: Api<ConfigMap> = Api::namespaced(client.clone(), "flotilla-system");
    assert!(
        inventories
            .get_opt("flotilla-inventory-alpha")
            .await
            .unwrap()
            .is_none(),
        "a profile that applied nothing has no inventory"
    );
    // Equal tiers, nobody owns it: first by name.
    let tie = configmap(&client, "default", "tie").await.expect("tie");
    assert_eq!(tie.get("by").map(String::as_str), Some("tie-a"));
    let (_, annotations) = configmap_meta(&client, "default", "tie").await.unwrap();
    assert_eq!(profile_annotation(&annotations), Some("tie-a"));

    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains(
            "conflict: ConfigMap/default/shared is applied by profile zulu (tier 100 beats tier 200)"
        ),
        "{note}"
    );
    assert!(
        note.contains(
            "conflict: ConfigMap/default/tie is applied by profile tie-a (same tier 100; first by name)"
        ),
        "{note}"
    );
    assert!(
        note.contains("### alpha (Continuous): not applied: conflict"),
        "{note}"
    );
    assert!(!note.contains("alpha-extra"), "{note}");
    assert_eq!(note, run.stdout, "sync --once prints the note it wrote");
    let state = repo.state(&commit);
    let alpha = &state["clusters"]["one"]["profiles"]["alpha"];
    assert_eq!(alpha["status"], "conflict", "{state:#}");
    assert_eq!(
        alpha["conflicts"][0]["key"], "ConfigMap/default/shared",
        "{state:#}"
    );
    assert_eq!(alpha["conflicts"][0]["winner"], "zulu", "{state:#}");
    assert_eq!(alpha["objects"], serde_json::json!({}), "{state:#}");
    let tie_b = &state["clusters"]["one"]["profiles"]["tie-b"];
    assert_eq!(tie_b["status"], "conflict", "{state:#}");
    assert_eq!(tie_b["conflicts"][0]["winner"], "tie-a", "{state:#}");
    assert_eq!(
        state["clusters"]["one"]["profiles"]["zulu"]["status"],
        "applied"
    );
    assert_eq!(state["clusters"]["one"]["status"], "degraded");

    // Second commit: alpha continues on conflict; keeper-a (same tier, first by name) wants
    // what keeper-b owns.
    repo.write(
        "manifests/keeper-a.yaml",
        &configmap_yaml("default", "owned", &[("by", "keeper-a")]),
    )
    .write(
        "profiles/p.yaml",
        &[
            profile_yaml(
                "alpha",
                "  clusterSelector: {}\n  tier: 200\n  continueOnConflict: true\n  policyRefs:\n  - {path: manifests/alpha.yaml}\n",
            ),
            profile_yaml(
                "zulu",
                "  clusterSelector: {}\n  tier: 100\n  policyRefs:\n  - {path: manifests/zulu.yaml}\n",
            ),
            profile_yaml(
                "tie-a",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/tie-a.yaml}\n",
            ),
            profile_yaml(
                "tie-b",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/tie-b.yaml}\n",
            ),
            profile_yaml(
                "keeper-a",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/keeper-a.yaml}\n",
            ),
            profile_yaml(
                "keeper-b",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/keeper-b.yaml}\n",
            ),
        ]
        .concat(),
    );
    let commit = repo.commit("alpha continues on conflict; keeper-a arrives");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert_eq!(
        configmap(&client, "default", "alpha-extra")
            .await
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("v"),
        "continueOnConflict applies the rest:\n{}",
        run.stdout
    );
    let (_, annotations) = configmap_meta(&client, "default", "alpha-extra")
        .await
        .unwrap();
    assert_eq!(profile_annotation(&annotations), Some("alpha"));
    let shared = configmap(&client, "default", "shared").await.unwrap();
    assert_eq!(shared.get("by").map(String::as_str), Some("zulu"));
    let (_, annotations) = configmap_meta(&client, "default", "shared").await.unwrap();
    assert_eq!(profile_annotation(&annotations), Some("zulu"));
    // Same tier: the current owner keeps it.
    let owned = configmap(&client, "default", "owned").await.unwrap();
    assert_eq!(owned.get("by").map(String::as_str), Some("keeper-b"));
    let (_, annotations) = configmap_meta(&client, "default", "owned").await.unwrap();
    assert_eq!(profile_annotation(&annotations), Some("keeper-b"));

    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("created ConfigMap/default/alpha-extra"),
        "{note}"
    );
    assert!(
        note.contains(
            "conflict: ConfigMap/default/shared is applied by profile zulu (tier 100 beats tier 200)"
        ),
        "{note}"
    );
    assert!(
        note.contains(
            "conflict: ConfigMap/default/owned is applied by profile keeper-b (same tier 100; keeper-b owns it already)"
        ),
        "{note}"
    );
    let state = repo.state(&commit);
    let alpha = &state["clusters"]["one"]["profiles"]["alpha"];
    assert_eq!(alpha["status"], "applied", "{state:#}");
    assert_eq!(
        alpha["conflicts"][0]["key"], "ConfigMap/default/shared",
        "{state:#}"
    );
    assert!(
        alpha["objects"]
            .as_object()
            .is_some_and(|o| o.contains_key("ConfigMap/default/alpha-extra")
                && !o.contains_key("ConfigMap/default/shared")),
        "{state:#}"
    );
    assert_eq!(
        state["clusters"]["one"]["profiles"]["keeper-a"]["status"], "conflict",
        "{state:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. dependsOn
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn depends_on_waits_for_a_failed_dependency_and_deploys_dependencies_where_dependents_go() {
    let fleet = ControlPlanes::builder().names(&["one", "two"]).start();
    let one = fleet.client("one").await;
    let two = fleet.client("two").await;
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[("one", "env: prod"), ("two", "env: staging")]),
    )
    // a-dep's only object goes to a namespace that does not exist: its apply fails.
    .write(
        "manifests/a-dep.yaml",
        &configmap_yaml("missing", "a-dep", &[("k", "v")]),
    )
    .write(
        "manifests/b-app.yaml",
        &configmap_yaml("default", "b-app", &[("k", "v")]),
    )
    .write(
        "manifests/c-base.yaml",
        &configmap_yaml("default", "c-base", &[("k", "v")]),
    )
    .write(
        "manifests/d-user.yaml",
        &configmap_yaml("default", "d-user", &[("k", "v")]),
    )
    .write(
        "profiles/p.yaml",
        &[
            profile_yaml(
                "a-dep",
                "  clusterSelector: env=prod\n  policyRefs:\n  - {path: manifests/a-dep.yaml}\n",
            ),
            profile_yaml(
                "b-app",
                "  clusterSelector: env=prod\n  dependsOn: [a-dep]\n  policyRefs:\n  - {path: manifests/b-app.yaml}\n",
            ),
            // c-base selects no cluster of the fleet, but d-user (on `one`) depends on it.
            profile_yaml(
                "c-base",
                "  clusterSelector: env=dev\n  policyRefs:\n  - {path: manifests/c-base.yaml}\n",
            ),
            profile_yaml(
                "d-user",
                "  clusterSelector: env=prod\n  dependsOn: [c-base]\n  policyRefs:\n  - {path: manifests/d-user.yaml}\n",
            ),
        ]
        .concat(),
    );
    let commit = repo.commit("a-dep is broken");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(
        run.code, 1,
        "a failed profile: exit 1\n{}\n{}",
        run.stdout, run.stderr
    );

    assert!(configmap(&one, "missing", "a-dep").await.is_none());
    assert!(
        configmap(&one, "default", "b-app").await.is_none(),
        "b-app must wait for a-dep:\n{}",
        run.stdout
    );
    // Sveltos semantics: the dependency follows its dependent.
    assert!(
        configmap(&one, "default", "c-base").await.is_some(),
        "c-base is deployed where d-user goes:\n{}",
        run.stdout
    );
    assert!(configmap(&one, "default", "d-user").await.is_some());
    // Nothing targets `two`.
    for name in ["b-app", "c-base", "d-user"] {
        assert!(
            configmap(&two, "default", name).await.is_none(),
            "{name} on two"
        );
    }

    let state = repo.state(&commit);
    let profiles = &state["clusters"]["one"]["profiles"];
    assert_eq!(profiles["a-dep"]["status"], "failed", "{state:#}");
    assert_eq!(
        profiles["b-app"]["status"], "waitingForDependency",
        "{state:#}"
    );
    assert!(
        profiles["b-app"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("a-dep")),
        "{state:#}"
    );
    assert_eq!(profiles["c-base"]["status"], "applied", "{state:#}");
    assert_eq!(profiles["d-user"]["status"], "applied", "{state:#}");
    assert_eq!(
        state["clusters"]["two"]["profiles"],
        serde_json::json!({}),
        "{state:#}"
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("### b-app (Continuous): waiting for a dependency"),
        "{note}"
    );
    assert!(note.contains("### a-dep (Continuous): FAILED"), "{note}");

    // Fix a-dep: it brings its namespace. Both are applied in the next pass.
    repo.write(
        "manifests/a-dep.yaml",
        &[
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: missing\n".to_string(),
            configmap_yaml("missing", "a-dep", &[("k", "v")]),
        ]
        .concat(),
    );
    let commit = repo.commit("a-dep brings its namespace");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        configmap(&one, "missing", "a-dep").await.is_some(),
        "{}",
        run.stdout
    );
    assert!(
        configmap(&one, "default", "b-app").await.is_some(),
        "{}",
        run.stdout
    );
    let state = repo.state(&commit);
    let profiles = &state["clusters"]["one"]["profiles"];
    assert_eq!(profiles["a-dep"]["status"], "applied", "{state:#}");
    assert_eq!(profiles["b-app"]["status"], "applied", "{state:#}");
    assert_eq!(profiles["c-base"]["status"], "inSync", "{state:#}");
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(note.contains("created ConfigMap/default/b-app"), "{note}");
    assert!(note.contains("created ConfigMap/missing/a-dep"), "{note}");
}

// ---------------------------------------------------------------------------------------------
// 3. maxUpdate
// ---------------------------------------------------------------------------------------------

/// Per cluster, [first write received, last write completed] of the named configmaps.
fn write_windows(fleet: &ControlPlanes, names: &[&str]) -> Vec<(String, u64, u64, usize)> {
    fleet
        .names()
        .iter()
        .map(|cluster| {
            let writes = writes_to(fleet, cluster, "configmaps", names);
            assert!(!writes.is_empty(), "{cluster}: no writes of {names:?}");
            let start = writes
                .iter()
                .map(AuditEvent::received_micros)
                .min()
                .unwrap();
            let end = writes
                .iter()
                .map(AuditEvent::completed_micros)
                .max()
                .unwrap();
            (cluster.to_string(), start, end, writes.len())
        })
        .collect()
}

fn overlaps(windows: &[(String, u64, u64, usize)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if a.1 <= b.2 && b.1 <= a.2 {
                out.push((a.0.clone(), b.0.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn max_update_one_updates_one_cluster_at_a_time() {
    let fleet = ControlPlanes::builder().names(&["c1", "c2", "c3"]).start();
    let repo = ConfigRepo::new();
    let serial: Vec<String> = (0..6).map(|i| format!("serial-{i}")).collect();
    let free: Vec<String> = (0..6).map(|i| format!("free-{i}")).collect();
    let manifest = |names: &[String]| -> String {
        names
            .iter()
            .map(|n| configmap_yaml("default", n, &[("k", "v")]))
            .collect()
    };
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[("c1", "env: prod"), ("c2", "env: prod"), ("c3", "env: prod")]),
    )
    .write("manifests/serial.yaml", &manifest(&serial))
    .write("manifests/free.yaml", &manifest(&free))
    .write(
        "profiles/p.yaml",
        &[
            profile_yaml(
                "serial",
                "  clusterSelector: env=prod\n  maxUpdate: 1\n  policyRefs:\n  - {path: manifests/serial.yaml}\n",
            ),
            profile_yaml(
                "free",
                "  clusterSelector: env=prod\n  policyRefs:\n  - {path: manifests/free.yaml}\n",
            ),
        ]
        .concat(),
    );
    let commit = repo.commit("roll out");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let serial_names: Vec<&str> = serial.iter().map(String::as_str).collect();
    let windows = write_windows(&fleet, &serial_names);
    for (cluster, start, end, n) in &windows {
        assert_eq!(*n, 6, "{cluster}: one write per object");
        eprintln!(
            "maxUpdate 1: {cluster} [{start}, {end}] ({} µs)",
            end - start
        );
    }
    let overlapping = overlaps(&windows);
    assert!(
        overlapping.is_empty(),
        "maxUpdate: 1 but these clusters updated at the same time: {overlapping:?} {windows:?}"
    );

    // The same without maxUpdate: reported, not asserted (it may or may not overlap).
    let free_names: Vec<&str> = free.iter().map(String::as_str).collect();
    let windows = write_windows(&fleet, &free_names);
    eprintln!(
        "no maxUpdate: overlapping clusters {:?} in {windows:?}",
        overlaps(&windows)
    );

    let client = fleet.client("c3").await;
    for name in serial.iter().chain(&free) {
        assert!(
            configmap(&client, "default", name).await.is_some(),
            "{name}"
        );
    }
    // Identical changes on the three clusters: one section.
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(note.contains("\n## c1, c2, c3\n"), "{note}");
    let state = repo.state(&commit);
    for cluster in ["c1", "c2", "c3"] {
        assert_eq!(
            state["clusters"][cluster]["profiles"]["serial"]["status"], "applied",
            "{state:#}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. OneTime and DryRun
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn one_time_holds_where_applied_and_a_newly_matching_cluster_gets_the_new_version() {
    let fleet = ControlPlanes::builder().names(&["early", "late"]).start();
    let early = fleet.client("early").await;
    let late = fleet.client("late").await;
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[("early", "env: prod"), ("late", "env: staging")]),
    )
    .write(
        "manifests/once.yaml",
        &configmap_yaml("default", "once", &[("version", "1")]),
    )
    .write(
        "profiles/p.yaml",
        &profile_yaml(
            "once",
            "  clusterSelector: env=prod\n  syncMode: OneTime\n  policyRefs:\n  - {path: manifests/once.yaml}\n",
        ),
    );
    let first = repo.commit("version 1");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        configmap(&early, "default", "once")
            .await
            .and_then(|d| d.get("version").cloned())
            .as_deref(),
        Some("1")
    );
    assert!(configmap(&late, "default", "once").await.is_none());

    let before = writes_to(
        &fleet,
        "early",
        "configmaps",
        &["once", "flotilla-inventory-once"],
    )
    .len();
    repo.write(
        "manifests/once.yaml",
        &configmap_yaml("default", "once", &[("version", "2")]),
    )
    .write(
        "clusters/c.yaml",
        &clusters_yaml(&[("early", "env: prod"), ("late", "env: prod")]),
    );
    let second = repo.commit("version 2; late joins prod");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // The already-synced cluster holds: data unchanged, not a single write for the object or
    // its inventory.
    assert_eq!(
        configmap(&early, "default", "once")
            .await
            .and_then(|d| d.get("version").cloned())
            .as_deref(),
        Some("1"),
        "{}",
        run.stdout
    );
    let after = writes_to(
        &fleet,
        "early",
        "configmaps",
        &["once", "flotilla-inventory-once"],
    );
    assert_eq!(
        after.len(),
        before,
        "OneTime wrote on the held cluster: {:?}",
        &after[before..]
    );
    // The cluster that starts matching gets the new version.
    assert_eq!(
        configmap(&late, "default", "once")
            .await
            .and_then(|d| d.get("version").cloned())
            .as_deref(),
        Some("2"),
        "{}",
        run.stdout
    );

    let state = repo.state(&second);
    assert_eq!(
        state["clusters"]["early"]["profiles"]["once"]["status"], "held",
        "{state:#}"
    );
    assert_eq!(
        state["clusters"]["early"]["profiles"]["once"]["appliedCommit"],
        first.as_str(),
        "{state:#}"
    );
    assert_eq!(
        state["clusters"]["late"]["profiles"]["once"]["status"], "applied",
        "{state:#}"
    );
    assert_eq!(
        state["clusters"]["late"]["profiles"]["once"]["appliedCommit"],
        second.as_str(),
        "{state:#}"
    );
    let note = repo.note("refs/notes/flotilla", &second).expect("note");
    assert!(note.contains("in sync: once (OneTime, held)"), "{note}");
    assert!(note.contains("created ConfigMap/default/once"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing_and_the_note_holds_the_would_be_diff() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    // An object someone else made, that the dry-run profile would change.
    let existing = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dry-existing", "namespace": "default"},
        "data": {"k": "old"},
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.patch(
        "dry-existing",
        &PatchParams::apply("someone-else"),
        &Patch::Apply(&existing),
    )
    .await
    .expect("create dry-existing");

    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write(
            "manifests/dry.yaml",
            &[
                configmap_yaml("default", "dry-new", &[("k", "new")]),
                configmap_yaml("default", "dry-existing", &[("k", "new")]),
            ]
            .concat(),
        )
        .write(
            "profiles/p.yaml",
            &profile_yaml(
                "dry",
                "  clusterSelector: {}\n  syncMode: DryRun\n  policyRefs:\n  - {path: manifests/dry.yaml}\n",
            ),
        );
    let commit = repo.commit("dry run");
    let before = fleet.write_requests("one").len();
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let writes = fleet.write_requests("one");
    assert_eq!(
        writes.len(),
        before,
        "DryRun wrote: {:?}",
        &writes[before..]
    );
    assert!(
        fleet
            .requests("one")
            .iter()
            .any(|e| e.is_dry_run() && e.name.as_deref() == Some("dry-new")),
        "the diff comes from a server-side dry-run"
    );
    assert!(configmap(&client, "default", "dry-new").await.is_none());
    let existing = configmap(&client, "default", "dry-existing").await.unwrap();
    assert_eq!(existing.get("k").map(String::as_str), Some("old"));
    let (labels, annotations) = configmap_meta(&client, "default", "dry-existing")
        .await
        .unwrap();
    assert!(!labels.contains_key("app.kubernetes.io/managed-by"));
    assert!(profile_annotation(&annotations).is_none());
    let inventories: Api<ConfigMap> = Api::namespaced(client.clone(), "flotilla-system");
    assert!(
        inventories
            .get_opt("flotilla-inventory-dry")
            .await
            .unwrap()
            .is_none()
    );

    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("### dry (DryRun): dry run, nothing applied"),
        "{note}"
    );
    assert!(
        note.contains("would create ConfigMap/default/dry-new\n```diff\n"),
        "{note}"
    );
    assert!(
        note.contains("would update ConfigMap/default/dry-existing\n```diff\n"),
        "{note}"
    );
    assert!(note.contains("+  k: new"), "{note}");
    assert!(note.contains("-  k: old"), "{note}");
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["dry"]["status"], "dryRun",
        "{state:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A CRD and its custom resource in one profile
// ---------------------------------------------------------------------------------------------

const CRD_AND_CR: &str = r#"---
apiVersion: policies.flotilla.example/v1
kind: Widget
metadata:
  name: w1
  namespace: default
spec:
  size: 3
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.policies.flotilla.example
spec:
  group: policies.flotilla.example
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_crd_and_its_custom_resource_apply_in_one_pass_and_prune_together() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    // The custom resource comes first in the file: ordering is flotilla's job.
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/app/widgets.yaml", CRD_AND_CR)
        .write(
            "profiles/p.yaml",
            &profile_yaml(
                "widgets",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/app}\n",
            ),
        );
    let commit = repo.commit("a CRD and a widget");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let gvk = GroupVersionKind::gvk("policies.flotilla.example", "v1", "Widget");
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let w1 = widgets
        .get_opt("w1")
        .await
        .expect("get widget")
        .unwrap_or_else(|| panic!("the widget exists after one pass:\n{}", run.stdout));
    assert_eq!(w1.data["spec"]["size"], 3);
    assert_eq!(
        w1.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("flotilla.dev/profile"))
            .map(String::as_str),
        Some("widgets")
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains(
            "created CustomResourceDefinition.apiextensions.k8s.io//widgets.policies.flotilla.example"
        ),
        "{note}"
    );
    assert!(
        note.contains("created Widget.policies.flotilla.example/default/w1"),
        "{note}"
    );

    // Both leave the render (the profile stays, with another object): both are pruned.
    repo.remove("manifests/app/widgets.yaml").write(
        "manifests/app/other.yaml",
        &configmap_yaml("default", "other", &[("k", "v")]),
    );
    let commit = repo.commit("no more widgets");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(configmap(&client, "default", "other").await.is_some());
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("pruned Widget.policies.flotilla.example/default/w1"),
        "{note}"
    );
    assert!(
        note.contains(
            "pruned CustomResourceDefinition.apiextensions.k8s.io//widgets.policies.flotilla.example"
        ),
        "{note}"
    );
    // The CRD's deletion finishes once the apiserver has cleaned up its instances.
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let crd = crds
            .get_opt("widgets.policies.flotilla.example")
            .await
            .expect("get crd");
        match crd {
            None => break,
            Some(c) => assert!(
                std::time::Instant::now() < deadline,
                "CRD still there 30 s after the prune: {:?}",
                c.metadata.deletion_timestamp
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        fleet
            .write_requests("one")
            .iter()
            .any(|e| e.verb == "delete" && e.name.as_deref() == Some("w1")),
        "the widget was deleted by flotilla itself, before its CRD"
    );
    let state = repo.state(&commit);
    let objects = state["clusters"]["one"]["profiles"]["widgets"]["objects"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        vec!["ConfigMap/default/other"],
        "{state:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Secrets never leak
// ---------------------------------------------------------------------------------------------

fn secret_yaml(password: &str, token: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(token);
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: default\ntype: Opaque\nstringData:\n  password: {password}\ndata:\n  token: {encoded}\n"
    )
}

/// Every form a value could leak in: as written, and base64 (standard, URL-safe, unpadded).
fn leak_forms(values: &[&str]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = Vec::new();
    for v in values {
        out.push(v.to_string());
        out.push(STANDARD.encode(v));
        out.push(STANDARD_NO_PAD.encode(v));
        out.push(URL_SAFE_NO_PAD.encode(v));
    }
    out
}

fn assert_no_leak(what: &str, text: &str, forms: &[String]) {
    for form in forms {
        assert!(
            !text.contains(form.as_str()),
            "{what} contains a secret value ({form:?}):\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_values_appear_in_no_note_and_no_log() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let (password, token) = ("pw-Zq8vX3mKf7", "tok-Lr5nB2wYc9");
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/secret.yaml", &secret_yaml(password, token))
        .write(
            "profiles/p.yaml",
            &profile_yaml(
                "creds",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/secret.yaml}\n",
            ),
        );
    let commit = repo.commit("a secret");
    let run = sync_once_logging(&repo, &fleet, "debug");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("DEBUG"),
        "debug logging is on:\n{}",
        run.stderr
    );

    // The secret was really applied, with both values.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let live = secrets.get("creds").await.expect("secret applied");
    let data = live.data.unwrap_or_default();
    assert_eq!(
        data.get("password").map(|b| b.0.as_slice()),
        Some(password.as_bytes())
    );
    assert_eq!(
        data.get("token").map(|b| b.0.as_slice()),
        Some(token.as_bytes())
    );

    let forms = leak_forms(&[password, token]);
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    let state = repo
        .note("refs/notes/flotilla-state", &commit)
        .expect("state note");
    assert_no_leak("human note", &note, &forms);
    assert_no_leak("state note", &state, &forms);
    assert_no_leak("stdout", &run.stdout, &forms);
    assert_no_leak("stderr", &run.stderr, &forms);
    let inventory: Api<ConfigMap> = Api::namespaced(client.clone(), "flotilla-system");
    let inventory = inventory
        .get("flotilla-inventory-creds")
        .await
        .expect("inventory");
    assert_no_leak(
        "inventory",
        &serde_json::to_string(&inventory.data).unwrap(),
        &forms,
    );
    assert!(note.contains("created Secret/default/creds"), "{note}");
    assert!(note.contains("<redacted fnv1a:"), "{note}");

    // A new value: "updated", with the changed redacted hash and still no value.
    let new_password = "pw-Hd4tQ1sVa6";
    repo.write("manifests/secret.yaml", &secret_yaml(new_password, token));
    let commit = repo.commit("rotate the password");
    let run = sync_once_logging(&repo, &fleet, "debug");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let live = secrets.get("creds").await.expect("secret");
    assert_eq!(
        live.data
            .unwrap_or_default()
            .get("password")
            .map(|b| b.0.clone()),
        Some(new_password.as_bytes().to_vec())
    );
    let forms = leak_forms(&[password, new_password, token]);
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    let state = repo
        .note("refs/notes/flotilla-state", &commit)
        .expect("state note");
    assert_no_leak("human note", &note, &forms);
    assert_no_leak("state note", &state, &forms);
    assert_no_leak("stdout", &run.stdout, &forms);
    assert_no_leak("stderr", &run.stderr, &forms);
    assert!(note.contains("updated Secret/default/creds"), "{note}");
    let changed: Vec<&str> = note
        .lines()
        .filter(|l| l.contains("password: <redacted fnv1a:"))
        .collect();
    assert!(
        changed.iter().any(|l| l.starts_with('-')) && changed.iter().any(|l| l.starts_with('+')),
        "the password line changes, redacted:\n{note}"
    );
    assert!(
        !note.lines().any(|l| l.starts_with(['-', '+'])
            && l.contains("token:")
            && !l.starts_with("---")
            && !l.starts_with("+++")),
        "the token did not change, so it is context, not a change:\n{note}"
    );
}

// ---------------------------------------------------------------------------------------------
// Probes beyond the basics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_crd_in_a_dependency_and_its_custom_resource_in_the_dependent_apply_in_one_pass() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    let (cr, crd) = CRD_AND_CR
        .trim_start_matches("---\n")
        .split_once("---\n")
        .expect("two documents");
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/crd.yaml", crd)
        .write("manifests/cr.yaml", cr)
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml(
                    "widget-crds",
                    "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/crd.yaml}\n",
                ),
                profile_yaml(
                    "widgets",
                    "  clusterSelector: {}\n  dependsOn: [widget-crds]\n  policyRefs:\n  - {path: manifests/cr.yaml}\n",
                ),
            ]
            .concat(),
        );
    let commit = repo.commit("CRDs first, then a widget");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let gvk = GroupVersionKind::gvk("policies.flotilla.example", "v1", "Widget");
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    assert!(
        widgets.get_opt("w1").await.expect("get widget").is_some(),
        "{}",
        run.stdout
    );
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["widgets"]["status"], "applied",
        "{state:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_time_retries_until_it_has_applied_once() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write(
            "manifests/once.yaml",
            &configmap_yaml("missing", "once", &[("version", "1")]),
        )
        .write(
            "profiles/p.yaml",
            &profile_yaml(
                "once",
                "  clusterSelector: {}\n  syncMode: OneTime\n  policyRefs:\n  - {path: manifests/once.yaml}\n",
            ),
        );
    let first = repo.commit("OneTime into a namespace that does not exist");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        repo.state(&first)["clusters"]["one"]["profiles"]["once"]["status"],
        "failed"
    );

    repo.write(
        "manifests/once.yaml",
        &[
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: missing\n".to_string(),
            configmap_yaml("missing", "once", &[("version", "2")]),
        ]
        .concat(),
    );
    let second = repo.commit("fixed");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        configmap(&client, "missing", "once")
            .await
            .and_then(|d| d.get("version").cloned())
            .as_deref(),
        Some("2"),
        "a OneTime profile that never applied must not hold:\n{}",
        run.stdout
    );
    let state = repo.state(&second);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["once"]["status"], "applied",
        "{state:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_taken_over_by_a_lower_tier_stays_with_its_owner_on_a_tie_and_returns_when_it_goes()
 {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    let by = |client: kube::Client| async move {
        let data = configmap(&client, "default", "moved").await;
        let meta = configmap_meta(&client, "default", "moved").await;
        (
            data.and_then(|d| d.get("by").cloned()),
            meta.and_then(|(_, a)| a.get("flotilla.dev/profile").cloned()),
        )
    };
    let profiles = |new_tier: Option<u32>| -> String {
        let mut text = profile_yaml(
            "z-old",
            "  clusterSelector: {}\n  tier: 100\n  policyRefs:\n  - {path: manifests/z-old.yaml}\n",
        );
        if let Some(tier) = new_tier {
            text.push_str(&profile_yaml(
                "b-new",
                &format!(
                    "  clusterSelector: {{}}\n  tier: {tier}\n  policyRefs:\n  - {{path: manifests/b-new.yaml}}\n"
                ),
            ));
        }
        text
    };
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write(
            "manifests/z-old.yaml",
            &[
                configmap_yaml("default", "moved", &[("by", "z-old")]),
                configmap_yaml("default", "z-extra", &[("k", "v")]),
            ]
            .concat(),
        )
        .write(
            "manifests/b-new.yaml",
            &configmap_yaml("default", "moved", &[("by", "b-new")]),
        )
        .write("profiles/p.yaml", &profiles(None));
    repo.commit("z-old deploys");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        by(client.clone()).await,
        (Some("z-old".into()), Some("z-old".into()))
    );

    // A lower tier takes the object over.
    repo.write("profiles/p.yaml", &profiles(Some(50)));
    let commit = repo.commit("b-new, tier 50");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        by(client.clone()).await,
        (Some("b-new".into()), Some("b-new".into())),
        "{}",
        run.stdout
    );
    assert!(configmap(&client, "default", "z-extra").await.is_some());
    let state = repo.state(&commit);
    let z_old = &state["clusters"]["one"]["profiles"]["z-old"];
    assert_eq!(z_old["status"], "conflict", "{state:#}");
    // The loser keeps what it applied but no longer claims what it lost.
    assert_eq!(
        z_old["objects"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["ConfigMap/default/z-extra".to_string()]),
        "{state:#}"
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("skipped ConfigMap/default/moved (now applied by profile b-new)"),
        "{note}"
    );
    // Losing again writes nothing: a pass without a new commit makes no write request.
    let before = fleet.write_requests("one").len();
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let writes = fleet.write_requests("one");
    assert_eq!(writes.len(), before, "{:?}", &writes[before..]);

    // Same tier now: the current owner (b-new) keeps it.
    repo.write("profiles/p.yaml", &profiles(Some(100)));
    let commit = repo.commit("b-new, tier 100");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        by(client.clone()).await,
        (Some("b-new".into()), Some("b-new".into())),
        "on a tie the current owner keeps the object:\n{}",
        run.stdout
    );
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["z-old"]["conflicts"][0]["reason"],
        "same tier 100; b-new owns it already",
        "{state:#}"
    );

    // b-new goes: its withdraw deletes the object, and z-old, the only claimant left, applies
    // it again in the same pass.
    repo.write("profiles/p.yaml", &profiles(None));
    let commit = repo.commit("b-new removed");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        by(client.clone()).await,
        (Some("z-old".into()), Some("z-old".into())),
        "the object returns to z-old:\n{}",
        run.stdout
    );
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["z-old"]["status"], "applied",
        "{state:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_profile_never_takes_an_object_from_an_applied_one() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    let real = |version: &str| configmap_yaml("default", "previewed", &[("v", version)]);
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/real.yaml", &real("1"))
        .write(
            "manifests/preview.yaml",
            &configmap_yaml("default", "previewed", &[("v", "preview")]),
        )
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml(
                    "real",
                    "  clusterSelector: {}\n  tier: 100\n  policyRefs:\n  - {path: manifests/real.yaml}\n",
                ),
                // Would win on tier, and would lose on tier: neither may change what real does.
                profile_yaml(
                    "preview-wins",
                    "  clusterSelector: {}\n  tier: 10\n  syncMode: DryRun\n  policyRefs:\n  - {path: manifests/preview.yaml}\n",
                ),
                profile_yaml(
                    "preview-loses",
                    "  clusterSelector: {}\n  tier: 200\n  syncMode: DryRun\n  policyRefs:\n  - {path: manifests/preview.yaml}\n",
                ),
            ]
            .concat(),
        );
    let commit = repo.commit("real and two previews");
    let run = sync_once(&repo, &fleet, &[]);
    let previewed = || async {
        let data = configmap(&client, "default", "previewed").await;
        let meta = configmap_meta(&client, "default", "previewed").await;
        (
            data.and_then(|d| d.get("v").cloned()),
            meta.and_then(|(_, a)| a.get("flotilla.dev/profile").cloned()),
        )
    };
    assert_eq!(
        previewed().await,
        (Some("1".into()), Some("real".into())),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let state = repo.state(&commit);
    let profiles = &state["clusters"]["one"]["profiles"];
    assert_eq!(profiles["real"]["status"], "applied", "{state:#}");
    assert!(profiles["real"].get("conflicts").is_none(), "{state:#}");
    assert_eq!(profiles["preview-wins"]["status"], "dryRun", "{state:#}");
    assert_eq!(
        profiles["preview-loses"]["conflicts"][0]["winner"], "real",
        "{state:#}"
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    // Against the live state when it runs: before or after real's write in the same pass.
    assert!(
        note.contains("would create ConfigMap/default/previewed")
            || note.contains("would update ConfigMap/default/previewed"),
        "{note}"
    );
    assert!(
        note.contains("conflict: ConfigMap/default/previewed is applied by profile real"),
        "{note}"
    );

    // The applied profile keeps applying new commits.
    repo.write("manifests/real.yaml", &real("2"));
    let commit = repo.commit("real v2");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(
        previewed().await,
        (Some("2".into()), Some("real".into())),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("would update ConfigMap/default/previewed\n```diff\n"),
        "{note}"
    );
    assert!(
        note.contains("+    flotilla.dev/profile: preview-wins"),
        "{note}"
    );
    assert!(
        note.contains("updated ConfigMap/default/previewed"),
        "{note}"
    );
}
