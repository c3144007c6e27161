//! End-to-end failure handling of the sync engine against real control planes and real git
//! repositories: invalid commits apply and prune nothing, a render error leaves its pair alone,
//! an unreachable cluster is retried by the running daemon, a daemon killed in the middle of a
//! pass leaves nothing orphaned, concurrent notes writers are merged, an authenticated remote
//! (and a wrong token), and a local repository watched for commits. Every test asserts the end
//! state: the objects in the clusters, the apiservers' audit logs and the notes in Git.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use support::ControlPlanes;
use support::daemon::{Daemon, flotilla, wait_until};
use support::fleet::{
    ConfigRepo, Run, clusters_yaml, configmap, configmap_yaml, git, profile_yaml, sync_once,
};
use support::git_server::GitHttpServer;

const NS: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n";

// ------------------------------------------------------------------------------------ helpers

/// Runs a command to completion, timing it.
fn run_timed(cmd: &mut Command) -> (Run, Duration) {
    let started = Instant::now();
    let out = cmd.output().expect("run flotilla");
    (out.into(), started.elapsed())
}

/// 1-based number of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
        + 1
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

fn assert_ok(run: &Run, what: &str) {
    assert_eq!(
        run.code, 0,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    );
}

/// Every ConfigMap in `namespace`, by name.
async fn configmaps_in(client: &kube::Client, namespace: &str) -> BTreeMap<String, ConfigMap> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    api.list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("list configmaps in {namespace}: {e}"))
        .into_iter()
        .map(|cm| (cm.metadata.name.clone().unwrap_or_default(), cm))
        .collect()
}

/// The keys (`Kind/namespace/name`) of an inventory ConfigMap's `data.objects`, in order,
/// duplicates kept, and whether every entry has a hash; `None` when the inventory is absent.
async fn inventory_keys(client: &kube::Client, profile: &str) -> Option<(Vec<String>, bool)> {
    let data = configmap(
        client,
        "flotilla-system",
        &format!("flotilla-inventory-{profile}"),
    )
    .await?;
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(data.get("objects").expect("inventory has data.objects"))
            .expect("data.objects is a JSON list");
    let hashed = objects
        .iter()
        .all(|o| o["hash"].as_str().is_some_and(|h| !h.is_empty()));
    let keys = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["namespace"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    Some((keys, hashed))
}

/// `clusters/`, the `apps` namespace and a `base` profile deploying it to every cluster.
fn fleet_config(repo: &ConfigRepo, clusters: &[&str]) {
    let inventory: Vec<(&str, &str)> = clusters.iter().map(|c| (*c, "env: prod")).collect();
    repo.write("clusters/fleet.yaml", &clusters_yaml(&inventory))
        .write("manifests/ns.yaml", NS);
}

fn base_profile() -> String {
    profile_yaml(
        "base",
        "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/ns.yaml}\n",
    )
}

// ------------------------------------------------------------------------ invalid commits

/// How the invalid commit is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breakage {
    MalformedYaml,
    UnknownField,
    TemplateSyntax,
    DanglingReference,
}

/// The profiles file: `base`, and `app` (templated path `manifests/app`, after base), with an
/// extra line in `app`'s spec and extra policyRefs.
fn profiles_file(app_extra: &str, extra_refs: &str) -> String {
    [
        base_profile(),
        profile_yaml(
            "app",
            &format!(
                "  clusterSelector: {{matchLabels: {{env: prod}}}}\n  dependsOn: [base]\n{app_extra}  policyRefs:\n  - {{path: manifests/app, template: true}}\n{extra_refs}"
            ),
        ),
    ]
    .concat()
}

const TEMPLATE_OK: &str = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: templated\n  namespace: apps\ndata:\n  cluster: \"{{ cluster.metadata.name }}\"\n";

/// The valid first commit: `keep` and `drop` (k=v1) and `templated`, on cluster `one`.
fn valid_app(repo: &ConfigRepo) {
    fleet_config(repo, &["one"]);
    repo.write(
        "manifests/app/objects.yaml",
        &[
            configmap_yaml("apps", "keep", &[("k", "v1")]),
            configmap_yaml("apps", "drop", &[("k", "v1")]),
        ]
        .concat(),
    )
    .write("manifests/app/templated.yaml", TEMPLATE_OK)
    .write("profiles/p.yaml", &profiles_file("", ""));
}

/// The change every later commit carries, visible if anything were applied or pruned: `drop`
/// leaves the render and `keep` becomes k=v2.
fn visible_change(repo: &ConfigRepo) {
    repo.write(
        "manifests/app/objects.yaml",
        &configmap_yaml("apps", "keep", &[("k", "v2")]),
    );
}

/// Breaks the work tree; returns the `FILE:LINE: message` start the note must list.
fn break_config(repo: &ConfigRepo, breakage: Breakage) -> String {
    match breakage {
        Breakage::MalformedYaml => {
            // A key indented under a flow mapping: a YAML syntax error on that very line.
            let text = "---\napiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: extra\nspec:\n  clusterSelector: {}\n    policyRefs: []\n";
            repo.write("profiles/extra.yaml", text);
            format!("profiles/extra.yaml:{}: ", line_of(text, "policyRefs"))
        }
        Breakage::UnknownField => {
            let text = profiles_file("  replicaCount: 3\n", "");
            repo.write("profiles/p.yaml", &text);
            format!(
                "profiles/p.yaml:{}: unknown field `replicaCount`",
                line_of(&text, "replicaCount")
            )
        }
        Breakage::TemplateSyntax => {
            let text = TEMPLATE_OK.replace("name }}", "name }");
            repo.write("manifests/app/templated.yaml", &text);
            format!(
                "manifests/app/templated.yaml:{}: template syntax error",
                line_of(&text, "cluster.metadata.name")
            )
        }
        Breakage::DanglingReference => {
            let text = profiles_file(
                "",
                "  - {kind: ConfigMap, name: missing-source, namespace: default}\n",
            );
            repo.write("profiles/p.yaml", &text);
            format!(
                "profiles/p.yaml:{}: policyRefs: ConfigMap default/missing-source not found in sources/",
                line_of(&text, "missing-source")
            )
        }
    }
}

/// Undoes [`break_config`] (the visible change stays).
fn repair_config(repo: &ConfigRepo, breakage: Breakage) {
    match breakage {
        Breakage::MalformedYaml => {
            repo.remove("profiles/extra.yaml");
        }
        Breakage::UnknownField | Breakage::DanglingReference => {
            repo.write("profiles/p.yaml", &profiles_file("", ""));
        }
        Breakage::TemplateSyntax => {
            repo.write("manifests/app/templated.yaml", TEMPLATE_OK);
        }
    }
}

/// The objects `valid_app` deployed, untouched: keep=v1, drop present, templated rendered.
async fn assert_first_commit_state(client: &kube::Client, context: &str) {
    let keep = configmap(client, "apps", "keep").await;
    assert_eq!(
        keep.as_ref().and_then(|d| d.get("k")).map(String::as_str),
        Some("v1"),
        "keep changed: {context}"
    );
    assert!(
        configmap(client, "apps", "drop").await.is_some(),
        "drop was pruned: {context}"
    );
    assert_eq!(
        configmap(client, "apps", "templated")
            .await
            .and_then(|d| d.get("cluster").cloned())
            .as_deref(),
        Some("one"),
        "templated changed: {context}"
    );
}

async fn invalid_commit_applies_nothing(breakage: Breakage) {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    valid_app(&repo);
    let valid = repo.commit("deploy app");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "first sync");
    assert_first_commit_state(&client, &run.stdout).await;

    // The invalid commit also drops one object and changes another.
    let writes_before = fleet.write_requests("one").len();
    visible_change(&repo);
    let expected = break_config(&repo, breakage);
    let invalid = repo.commit(&format!("broken: {breakage:?}"));
    let run = sync_once(&repo, &fleet, &[]);
    assert_ne!(
        run.code, 0,
        "sync --once of an invalid commit must fail:\n{}\n{}",
        run.stdout, run.stderr
    );

    // Nothing applied, nothing pruned: not one write request, the objects as they were.
    let writes = fleet.write_requests("one");
    assert_eq!(
        writes.len(),
        writes_before,
        "{breakage:?}: an invalid commit wrote: {:#?}",
        &writes[writes_before..]
    );
    assert_first_commit_state(&client, &run.stdout).await;

    // The human note on the bad commit says INVALID and lists the error with FILE:LINE.
    let note = repo
        .note("refs/notes/flotilla", &invalid)
        .unwrap_or_else(|| panic!("no note on the invalid commit; stderr:\n{}", run.stderr));
    assert!(
        note.starts_with(&format!(
            "flotilla: commit {} is INVALID: nothing applied, nothing pruned",
            short(&invalid)
        )),
        "{note}"
    );
    assert!(
        note.contains(&format!("last valid commit {}", short(&valid))),
        "{note}"
    );
    assert!(
        note.lines().any(|l| l.starts_with(&expected)),
        "{breakage:?}: expected a line starting {expected:?} in the note:\n{note}"
    );
    assert!(run.stdout.contains("INVALID"), "{}", run.stdout);
    let state = repo.state(&invalid);
    assert_eq!(state["valid"], false, "{state:#}");
    assert_eq!(state["desiredCommit"], valid.as_str(), "{state:#}");
    assert!(
        state["errors"].as_array().is_some_and(|errors| errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with(&expected)))),
        "{state:#}"
    );

    // A second invalid commit on top: the desired state still is the last valid commit (found
    // through the state notes, since `sync --once` remembers nothing).
    repo.write(
        "manifests/app/objects.yaml",
        &configmap_yaml("apps", "keep", &[("k", "v3")]),
    );
    let still_invalid = repo.commit("still broken");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(fleet.write_requests("one").len(), writes_before);
    let state = repo.state(&still_invalid);
    assert_eq!(state["valid"], false, "{state:#}");
    assert_eq!(state["desiredCommit"], valid.as_str(), "{state:#}");
    assert_first_commit_state(&client, &run.stdout).await;

    // The repair applies: keep=v2, drop pruned.
    visible_change(&repo);
    repair_config(&repo, breakage);
    let fixed = repo.commit("fixed");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "sync of the repaired commit");
    assert_eq!(
        configmap(&client, "apps", "keep")
            .await
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("v2"),
        "{}",
        run.stdout
    );
    assert!(
        configmap(&client, "apps", "drop").await.is_none(),
        "{}",
        run.stdout
    );
    let state = repo.state(&fixed);
    assert_eq!(state["valid"], true, "{state:#}");
    assert_eq!(
        state["clusters"]["one"]["profiles"]["app"]["appliedCommit"],
        fixed.as_str(),
        "{state:#}"
    );
    let note = repo.note("refs/notes/flotilla", &fixed).expect("note");
    assert!(note.contains("pruned ConfigMap/apps/drop"), "{note}");
    assert!(note.contains("updated ConfigMap/apps/keep"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_commit_malformed_yaml_applies_and_prunes_nothing() {
    invalid_commit_applies_nothing(Breakage::MalformedYaml).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_commit_unknown_field_applies_and_prunes_nothing() {
    invalid_commit_applies_nothing(Breakage::UnknownField).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_commit_template_syntax_error_applies_and_prunes_nothing() {
    invalid_commit_applies_nothing(Breakage::TemplateSyntax).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_commit_dangling_reference_applies_and_prunes_nothing() {
    invalid_commit_applies_nothing(Breakage::DanglingReference).await;
}

/// An undefined template variable cannot be caught by validation (it depends on the cluster):
/// it is a render error of that (profile, cluster), which leaves the pair as it was (DESIGN §3,
/// failure isolation) — nothing applied, nothing pruned — while the commit stays valid.
#[tokio::test(flavor = "multi_thread")]
async fn undefined_template_variable_leaves_the_pair_as_it_was() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    valid_app(&repo);
    let valid = repo.commit("deploy app");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "first sync");

    let writes_before = fleet.write_requests("one").len();
    visible_change(&repo);
    let text = TEMPLATE_OK.replace("cluster.metadata.name", "no_such_variable");
    repo.write("manifests/app/templated.yaml", &text);
    let failing = repo.commit("undefined variable");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let writes = fleet.write_requests("one");
    assert_eq!(
        writes.len(),
        writes_before,
        "a failed render wrote: {:#?}",
        &writes[writes_before..]
    );
    assert_first_commit_state(&client, &run.stdout).await;

    let note = repo.note("refs/notes/flotilla", &failing).expect("note");
    assert!(note.contains("### app (Continuous): FAILED"), "{note}");
    let expected = format!(
        "error: manifests/app/templated.yaml:{}: template error",
        line_of(&text, "no_such_variable")
    );
    assert!(
        note.lines().any(|l| l.starts_with(&expected)),
        "expected {expected:?} in:\n{note}"
    );
    let state = repo.state(&failing);
    assert_eq!(state["valid"], true, "{state:#}");
    let app = &state["clusters"]["one"]["profiles"]["app"];
    assert_eq!(app["status"], "failed", "{state:#}");
    assert_eq!(app["appliedCommit"], valid.as_str(), "{state:#}");
    assert_eq!(state["clusters"]["one"]["status"], "degraded", "{state:#}");

    repo.write("manifests/app/templated.yaml", TEMPLATE_OK);
    let fixed = repo.commit("fixed");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "sync of the repaired commit");
    assert!(configmap(&client, "apps", "drop").await.is_none());
    assert_eq!(
        configmap(&client, "apps", "keep")
            .await
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("v2")
    );
    assert_eq!(
        repo.state(&fixed)["clusters"]["one"]["profiles"]["app"]["status"],
        "applied"
    );
}

// --------------------------------------------------------------------- unreachable cluster

fn app_profile() -> String {
    profile_yaml(
        "app",
        "  clusterSelector: {}\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/app}\n",
    )
}

async fn has_configmap(fleet: &ControlPlanes, cluster: &str, name: &str) -> bool {
    configmap(&fleet.client(cluster).await, "apps", name)
        .await
        .is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_isolates_an_unreachable_cluster_and_converges_it_when_it_returns() {
    let names = ["alpha", "beta", "gamma"];
    let fleet = ControlPlanes::builder().names(&names).start();
    let repo = ConfigRepo::new();
    fleet_config(&repo, &names);
    repo.write(
        "manifests/app/first.yaml",
        &configmap_yaml("apps", "first", &[("k", "v")]),
    )
    .write("profiles/p.yaml", &[base_profile(), app_profile()].concat());
    repo.commit("first");

    let mut daemon = Daemon::on(&repo, &fleet, &["--interval", "1s"]);
    let took = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            for name in names {
                if !has_configmap(&fleet, name, "first").await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert!(
        took.is_some(),
        "the first commit never converged:\n{}",
        daemon.log()
    );

    // gamma goes away; a new commit arrives.
    fleet.stop_cluster("gamma");
    repo.write(
        "manifests/app/second.yaml",
        &configmap_yaml("apps", "second", &[("k", "v")]),
    );
    let second = repo.commit("second");
    let took = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            has_configmap(&fleet, "alpha", "second").await
                && has_configmap(&fleet, "beta", "second").await
        },
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "alpha and beta did not converge while gamma was down:\n{}",
            daemon.log()
        )
    });
    eprintln!("with gamma down, alpha and beta converged {took:?} after the push");

    // The notes on the new commit show gamma unreachable, with the error.
    let unreachable = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            repo.note("refs/notes/flotilla-state", &second)
                .is_some_and(|_| {
                    repo.state(&second)["clusters"]["gamma"]["status"] == "unreachable"
                })
        },
    )
    .await;
    assert!(
        unreachable.is_some(),
        "no state note showing gamma unreachable:\n{:?}\n{}",
        repo.note("refs/notes/flotilla-state", &second),
        daemon.log()
    );
    let state = repo.state(&second);
    let error = state["clusters"]["gamma"]["error"].as_str().unwrap_or("");
    assert!(
        // A fresh connection fails with "Connect"; one pooled from before the stop fails with
        // "SendRequest". Either way the reason is the transport, and it is named.
        error.contains("gamma")
            && ["connect", "sendrequest"]
                .iter()
                .any(|w| error.to_lowercase().contains(w)),
        "the note should say why gamma is unreachable: {state:#}"
    );
    for name in ["alpha", "beta"] {
        assert_eq!(state["clusters"][name]["status"], "synced", "{state:#}");
    }
    let note = repo.note("refs/notes/flotilla", &second).expect("note");
    assert!(note.contains("1 unreachable"), "{note}");
    assert!(note.contains("\n## gamma\nunreachable: "), "{note}");
    eprintln!("gamma in the note: {}", error);

    // gamma returns: a later pass of the same daemon converges it.
    let restarting = Instant::now();
    fleet.start_cluster("gamma");
    let ready = restarting.elapsed();
    let took = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { has_configmap(&fleet, "gamma", "second").await },
    )
    .await
    .unwrap_or_else(|| panic!("gamma never converged:\n{}", daemon.log()));
    eprintln!(
        "gamma converged {:?} after start_cluster was called (ready after {ready:?}, converged {took:?} later)",
        restarting.elapsed()
    );
    assert!(daemon.running(), "the daemon exited:\n{}", daemon.log());
    let synced = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { repo.state(&second)["clusters"]["gamma"]["status"] == "synced" },
    )
    .await;
    assert!(
        synced.is_some(),
        "the note was not rewritten after gamma converged:\n{:#}\n{}",
        repo.state(&second),
        daemon.log()
    );
    let note = repo.note("refs/notes/flotilla", &second).expect("note");
    assert!(!note.contains("unreachable"), "{note}");
    assert!(note.contains("created ConfigMap/apps/second"), "{note}");

    // SIGTERM: a clean exit, quickly.
    daemon.signal("-TERM");
    let (status, took) = daemon
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", daemon.log()));
    eprintln!("the daemon exited {took:?} after SIGTERM: {status}");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
}

// ------------------------------------------------------------------------ crash mid-pass

const BULK: usize = 300;

fn bulk_name(i: usize) -> String {
    format!("bulk-{i:03}")
}

/// A `bulk` namespace (deployed by `base`) and profile `bulk` with ConfigMaps `range`.
fn bulk_config(repo: &ConfigRepo, range: std::ops::Range<usize>) {
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("one", "env: prod")]),
    )
    .write(
        "manifests/ns.yaml",
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: bulk\n",
    );
    let objects: String = range
        .map(|i| configmap_yaml("bulk", &bulk_name(i), &[("index", &i.to_string())]))
        .collect();
    repo.write("manifests/bulk/objects.yaml", &objects).write(
        "profiles/p.yaml",
        &[
            base_profile(),
            profile_yaml(
                "bulk",
                "  clusterSelector: {}\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/bulk}\n",
            ),
        ]
        .concat(),
    );
}

/// Names of the ConfigMaps flotilla manages in `bulk`.
async fn managed_bulk(client: &kube::Client) -> BTreeSet<String> {
    configmaps_in(client, "bulk")
        .await
        .into_iter()
        .filter(|(_, cm)| {
            cm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                .is_some_and(|v| v == "flotilla")
        })
        .map(|(name, _)| name)
        .collect()
}

/// Starts `flotilla run` on the repo and kills it with SIGKILL as soon as the audit log shows
/// its first write of a `bulk` ConfigMap; returns the managed ConfigMaps that exist afterwards.
async fn kill_mid_pass(fleet: &ControlPlanes, repo: &ConfigRepo) -> BTreeSet<String> {
    let client = fleet.client("one").await;
    let writes_before = fleet.write_requests("one").len();
    let mut daemon = Daemon::on(repo, fleet, &["--interval", "60s"]);
    let started = Instant::now();
    loop {
        let writes = fleet.write_requests("one");
        let bulk_writes = writes[writes_before..]
            .iter()
            .filter(|e| {
                e.resource.as_deref() == Some("configmaps")
                    && e.namespace.as_deref() == Some("bulk")
            })
            .count();
        if bulk_writes > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no write of a bulk ConfigMap within 60 s:\n{}",
            daemon.log()
        );
        assert!(daemon.running(), "the daemon exited:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.child.kill().expect("SIGKILL the daemon");
    let status = daemon.child.wait().expect("reap the daemon");
    assert_eq!(status.code(), None, "killed by a signal");
    let present = managed_bulk(&client).await;
    eprintln!(
        "killed the daemon {:?} after start; {} of the bulk ConfigMaps existed",
        started.elapsed(),
        present.len()
    );
    let inventory = inventory_keys(&client, "bulk").await;
    eprintln!(
        "inventory after the kill: {}",
        match &inventory {
            Some((keys, hashed)) => format!("{} entries, all hashed: {hashed}", keys.len()),
            None => "none".into(),
        }
    );
    present
}

/// After convergence: exactly `expected` exist, the inventory lists each exactly once (with a
/// hash), and no managed object lies outside the inventory.
async fn assert_bulk_converged(client: &kube::Client, expected: &BTreeSet<String>, context: &str) {
    let present = managed_bulk(client).await;
    assert_eq!(
        &present,
        expected,
        "{context}: missing {:?}, extra {:?}",
        expected.difference(&present).collect::<Vec<_>>(),
        present.difference(expected).collect::<Vec<_>>()
    );
    let (keys, hashed) = inventory_keys(client, "bulk")
        .await
        .expect("the bulk inventory");
    assert!(hashed, "{context}: an inventory entry without hash");
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "{context}: duplicate inventory entries"
    );
    let listed: BTreeSet<String> = keys
        .iter()
        .map(|k| {
            k.strip_prefix("ConfigMap/bulk/")
                .unwrap_or_else(|| panic!("{context}: unexpected inventory key {k}"))
                .to_string()
        })
        .collect();
    assert_eq!(&listed, expected, "{context}: inventory");
}

/// Withdraws `bulk` by removing the profile; every ConfigMap goes.
async fn remove_bulk_and_assert_empty(fleet: &ControlPlanes, repo: &ConfigRepo) {
    let client = fleet.client("one").await;
    repo.remove("manifests/bulk/objects.yaml")
        .write("profiles/p.yaml", &base_profile());
    repo.commit("remove bulk");
    let run = sync_once(repo, fleet, &[]);
    assert_ok(&run, "sync of the removal");
    let left: Vec<String> = configmaps_in(&client, "bulk")
        .await
        .into_keys()
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    assert!(left.is_empty(), "left after withdraw: {left:?}");
    assert!(inventory_keys(&client, "bulk").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_pass_is_recovered_by_the_next_sync() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    bulk_config(&repo, 0..BULK);
    repo.commit("300 configmaps");

    let present = kill_mid_pass(&fleet, &repo).await;
    assert!(
        present.len() < BULK,
        "the pass finished before the kill ({} objects): the test did not crash mid-pass",
        present.len()
    );

    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "sync after the crash");
    let all: BTreeSet<String> = (0..BULK).map(bulk_name).collect();
    assert_bulk_converged(&client, &all, "after the crash").await;

    remove_bulk_and_assert_empty(&fleet, &repo).await;
}

/// The harder case: after the crash the set shrinks, so objects created by the killed pass
/// are no longer in the render. The inventory written before the writes must still prune them.
#[tokio::test(flavor = "multi_thread")]
async fn objects_created_by_a_killed_pass_are_pruned_when_the_next_commit_drops_them() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    bulk_config(&repo, 0..BULK);
    repo.commit("300 configmaps");

    let present = kill_mid_pass(&fleet, &repo).await;
    assert!(present.len() < BULK, "the pass finished before the kill");
    let dropped: BTreeSet<String> = (0..BULK / 2).map(bulk_name).collect();
    let orphan_candidates = present.intersection(&dropped).count();
    eprintln!("{orphan_candidates} objects of the killed pass leave the render");
    assert!(
        orphan_candidates > 0,
        "none of the first {} objects existed after the kill: {present:?}",
        BULK / 2
    );

    bulk_config(&repo, BULK / 2..BULK);
    repo.commit("only the second half");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "sync after the crash");
    let kept: BTreeSet<String> = (BULK / 2..BULK).map(bulk_name).collect();
    assert_bulk_converged(&client, &kept, "after the crash and the shrink").await;

    remove_bulk_and_assert_empty(&fleet, &repo).await;
}

// ---------------------------------------------------------------------- concurrent notes

#[tokio::test(flavor = "multi_thread")]
async fn notes_pushed_by_someone_else_are_kept() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let repo = ConfigRepo::new();
    repo.write("README.md", "config\n");
    let readme = repo.commit("readme");
    fleet_config(&repo, &["one"]);
    repo.write(
        "manifests/app/first.yaml",
        &configmap_yaml("apps", "first", &[("k", "v")]),
    )
    .write("profiles/p.yaml", &[base_profile(), app_profile()].concat());
    let first = repo.commit("first");
    assert_ok(&sync_once(&repo, &fleet, &[]), "first sync");
    assert!(repo.note("refs/notes/flotilla", &first).is_some());

    // Someone else clones, notes an older commit and pushes the notes ref.
    let other = tempfile::tempdir().expect("tempdir");
    git(
        other.path(),
        &["clone", "-q", &repo.bare().display().to_string(), "clone"],
    );
    let clone = other.path().join("clone");
    git(
        &clone,
        &["fetch", "-q", "origin", "refs/notes/*:refs/notes/*"],
    );
    git(
        &clone,
        &[
            "notes",
            "--ref",
            "flotilla",
            "add",
            "-m",
            "reviewed by a human",
            &readme,
        ],
    );
    git(&clone, &["push", "-q", "origin", "refs/notes/flotilla"]);
    let their_tip = git(&clone, &["rev-parse", "refs/notes/flotilla"])
        .trim()
        .to_string();

    // The next sync writes its note on the new commit; theirs survives.
    repo.write(
        "manifests/app/second.yaml",
        &configmap_yaml("apps", "second", &[("k", "v")]),
    );
    let second = repo.commit("second");
    let run = sync_once(&repo, &fleet, &[]);
    assert_ok(&run, "second sync");
    assert_eq!(
        repo.note("refs/notes/flotilla", &readme).as_deref(),
        Some("reviewed by a human\n")
    );
    let note = repo.note("refs/notes/flotilla", &second).expect("our note");
    assert!(note.contains("created ConfigMap/apps/second"), "{note}");
    assert!(repo.note("refs/notes/flotilla", &first).is_some());
    assert_eq!(repo.state(&second)["valid"], true);
    // Nothing was force-pushed away: their notes commit is in the history of the remote ref.
    git(
        &repo.bare(),
        &[
            "merge-base",
            "--is-ancestor",
            &their_tip,
            "refs/notes/flotilla",
        ],
    );
}

// ---------------------------------------------------------------------- authenticated remote

const TOKEN: &str = "s3cr3t-token-0123456789abcdef";
const WRONG: &str = "wrong-token-fedcba9876543210";

fn sync_over_http(
    url: &str,
    fleet: &ControlPlanes,
    cache: &Path,
    token: Option<&str>,
) -> (Run, Duration) {
    let mut cmd = flotilla();
    cmd.args(["sync", "--once", "--repo", url, "--kubeconfig-dir"])
        .arg(fleet.dir())
        .arg("--cache-dir")
        .arg(cache);
    if let Some(token) = token {
        cmd.env("FLOTILLA_GIT_TOKEN", token);
    }
    run_timed(&mut cmd)
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticated_remote_with_a_token_and_a_wrong_one() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    fleet_config(&repo, &["one"]);
    repo.write(
        "manifests/app/first.yaml",
        &configmap_yaml("apps", "first", &[("k", "v")]),
    )
    .write("profiles/p.yaml", &[base_profile(), app_profile()].concat());
    let first = repo.commit("first");
    let root = repo.bare().parent().expect("parent").to_path_buf();
    let server = GitHttpServer::start(&root, TOKEN);
    let url = server.url("config.git");
    let cache = tempfile::tempdir().expect("tempdir");

    let (run, took) = sync_over_http(&url, &fleet, cache.path(), Some(TOKEN));
    assert_ok(&run, "sync over authenticated HTTP");
    eprintln!(
        "sync over HTTP with the token: {took:?}, {} requests",
        server.requests()
    );
    assert!(configmap(&client, "apps", "first").await.is_some());
    let note = repo
        .note("refs/notes/flotilla", &first)
        .unwrap_or_else(|| panic!("notes not pushed over HTTP: {:?}", server.log()));
    assert!(note.contains("created ConfigMap/apps/first"), "{note}");
    assert_eq!(repo.state(&first)["valid"], true);
    assert!(
        server.log().iter().any(|l| l.contains("git-receive-pack")),
        "{:?}",
        server.log()
    );
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }

    // A wrong token: a fast, clear failure, no retry storm, nothing applied, no leak.
    repo.write(
        "manifests/app/second.yaml",
        &configmap_yaml("apps", "second", &[("k", "v")]),
    );
    repo.commit("second");
    for (token, what) in [(Some(WRONG), "a wrong token"), (None, "no token")] {
        let before = server.requests();
        let (run, took) = sync_over_http(&url, &fleet, cache.path(), token);
        let requests = server.requests() - before;
        eprintln!(
            "{what}: exit {} in {took:?} after {requests} requests; stderr: {}",
            run.code,
            run.stderr.trim()
        );
        assert_ne!(run.code, 0, "{what}: {}\n{}", run.stdout, run.stderr);
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
        assert!(
            requests <= 4,
            "{what}: {requests} requests: {:?}",
            server.log()
        );
        assert!(
            run.stderr.to_lowercase().contains("authentication"),
            "{what}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("FLOTILLA_GIT_TOKEN"), "{}", run.stderr);
        for text in [&run.stdout, &run.stderr] {
            assert!(!text.contains(WRONG), "the token leaked: {text}");
            assert!(!text.contains(TOKEN), "the token leaked: {text}");
        }
    }
    assert!(configmap(&client, "apps", "second").await.is_none());
}

// ---------------------------------------------------------------------- local repository

/// `git notes --ref flotilla show REV` in a local repository.
fn local_note(dir: &Path, notes_ref: &str, rev: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["notes", "--ref", notes_ref, "show", rev])
        .output()
        .expect("run git notes");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_in_a_local_repository_is_applied_within_seconds() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    fleet_config(&repo, &["one"]);
    repo.write(
        "manifests/app/first.yaml",
        &configmap_yaml("apps", "first", &[("k", "v")]),
    )
    .write("profiles/p.yaml", &[base_profile(), app_profile()].concat());
    repo.commit("first");
    let work = repo.work();

    let mut daemon = Daemon::spawn(&[
        "--repo".as_ref(),
        work.as_os_str(),
        "--kubeconfig-dir".as_ref(),
        fleet.dir().as_os_str(),
        "--cache-dir".as_ref(),
        repo.cache_dir().as_os_str(),
        "--interval".as_ref(),
        "60s".as_ref(),
    ]);
    let took = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            configmap(&client, "apps", "first").await.is_some()
                && local_note(&work, "flotilla", "HEAD").is_some()
        },
    )
    .await;
    assert!(
        took.is_some(),
        "the first commit was not synced:\n{}",
        daemon.log()
    );

    // A commit in the work tree, not pushed anywhere.
    repo.write(
        "manifests/app/second.yaml",
        &configmap_yaml("apps", "second", &[("k", "v")]),
    );
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "second"]);
    let committed = Instant::now();
    let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    let latency = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { configmap(&client, "apps", "second").await.is_some() },
    )
    .await
    .map(|_| committed.elapsed());
    let Some(latency) = latency else {
        panic!(
            "the commit was not applied within 10 s (interval 60 s):\n{}",
            daemon.log()
        );
    };
    eprintln!("local commit → object in the cluster: {latency:?} (poll interval 60 s)");
    assert!(latency < Duration::from_secs(10), "{latency:?}");

    // The notes are written into the local repository (and nowhere else).
    let noted = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { local_note(&work, "flotilla", &head).is_some() },
    )
    .await;
    assert!(noted.is_some(), "no note on HEAD:\n{}", daemon.log());
    let note = local_note(&work, "flotilla", "HEAD").expect("note");
    assert!(note.contains("created ConfigMap/apps/second"), "{note}");
    let state: serde_json::Value = serde_json::from_str(
        &local_note(&work, "flotilla-state", &head).expect("state note on HEAD"),
    )
    .expect("JSON");
    assert_eq!(state["commit"], head.as_str());
    assert!(
        repo.note("refs/notes/flotilla", &head).is_none(),
        "a local repository's notes were pushed to its origin"
    );

    daemon.signal("-TERM");
    let (status, took) = daemon
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", daemon.log()));
    eprintln!("the daemon exited {took:?} after SIGTERM: {status}");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

// ------------------------------------------------------------------- persistent apply error

/// The running daemon retries a failing (profile, cluster) every interval, but the same failure
/// again is no news: the note is written once, not once per pass; the retry that succeeds
/// rewrites it (DESIGN §4).
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_apply_error_is_retried_without_rewriting_the_note_every_pass() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("one", "env: prod")]),
    )
    .write(
        "manifests/app/first.yaml",
        &configmap_yaml("later", "first", &[("k", "v")]),
    )
    .write(
        "profiles/p.yaml",
        &profile_yaml(
            "app",
            "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/app}\n",
        ),
    );
    let commit = repo.commit("a ConfigMap in a namespace that does not exist yet");
    let daemon = Daemon::on(&repo, &fleet, &["--interval", "1s"]);
    let notes_commits = || {
        git(
            &repo.bare(),
            &["rev-list", "--count", "refs/notes/flotilla"],
        )
        .trim()
        .parse::<usize>()
        .expect("a count")
    };
    let noted = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        // Both notes refs are pushed, one after the other: wait for the second too.
        || async {
            repo.note("refs/notes/flotilla", &commit).is_some()
                && repo.note("refs/notes/flotilla-state", &commit).is_some()
        },
    )
    .await;
    assert!(noted.is_some(), "no notes:\n{}", daemon.log());
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["app"]["status"], "failed",
        "{state:#}"
    );
    let first = notes_commits();
    let writes = fleet.write_requests("one").len();

    // Several passes later: retried (more write attempts), but the note was not rewritten.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let retries = fleet.write_requests("one").len() - writes;
    let rewrites = notes_commits() - first;
    eprintln!("in 5 s at --interval 1s: {retries} write attempts, {rewrites} note rewrites");
    assert!(
        retries > 0,
        "the failing pair was not retried:\n{}",
        daemon.log()
    );
    assert_eq!(
        rewrites,
        0,
        "the same failure rewrote the note:\n{}",
        daemon.log()
    );

    // The namespace appears out of band: the next retry succeeds and rewrites the note once.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "later"}}))
            .expect("namespace");
    namespaces
        .create(&Default::default(), &ns)
        .await
        .expect("create the namespace");
    let applied = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            configmap(&client, "later", "first").await.is_some()
                && repo.state(&commit)["clusters"]["one"]["profiles"]["app"]["status"] == "applied"
        },
    )
    .await;
    assert!(
        applied.is_some(),
        "the retry did not succeed:\n{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(note.contains("created ConfigMap/later/first"), "{note}");
    assert!(!note.contains("FAILED"), "{note}");
    assert_eq!(
        notes_commits(),
        first + 1,
        "one rewrite for the successful retry, none after:\n{}",
        daemon.log()
    );
}
