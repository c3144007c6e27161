//! Drift detection and repair of `ContinuousWithDriftDetection` under the running daemon,
//! against a real control plane: an edited field flotilla owns and a deleted object are repaired
//! (timed), a change at an excluded path is left alone (an HPA-like writer of
//! `/spec/replicas`), a change that makes the repair impossible is reported as such, and the
//! note of the applied commit lists each repair with the changed paths and who changed them.
//! `--interval 60s`: only the watches can explain a repair within seconds.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::ControlPlanes;
use support::daemon::{Daemon, wait_until};
use support::fleet::{ConfigRepo, clusters_yaml, configmap, configmap_yaml, profile_yaml};

const NS: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n";

const DEPLOYMENT: &str = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: apps\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: registry.invalid/web:1\n";

/// Merge-patches an object as another field manager would (`kubectl edit`, an HPA).
fn as_manager(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_string()),
        ..PatchParams::default()
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_of_owned_fields_and_deletions_is_repaired_and_excluded_paths_are_left_alone() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    repo.write("clusters/fleet.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/web/ns.yaml", NS)
        .write(
            "manifests/web/settings.yaml",
            &configmap_yaml("apps", "settings", &[("k", "v")]),
        )
        .write(
            "manifests/web/frozen.yaml",
            &configmap_yaml("apps", "frozen", &[("k", "v")]),
        )
        .write("manifests/web/deployment.yaml", DEPLOYMENT)
        .write(
            "profiles/web.yaml",
            &profile_yaml(
                "web",
                "  clusterSelector: {}\n  syncMode: ContinuousWithDriftDetection\n  driftExclusions:\n  - {paths: [/spec/replicas], target: {kind: Deployment}}\n  policyRefs:\n  - {path: manifests/web}\n",
            ),
        );
    let commit = repo.commit("web with drift detection");
    let daemon = Daemon::on(&repo, &fleet, &["--interval", "60s"]);
    let synced = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            repo.note("refs/notes/flotilla-state", &commit).is_some()
                && daemon.log().contains("drift watches")
        },
    )
    .await;
    assert!(synced.is_some(), "no first pass:\n{}", daemon.log());
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["web"]["status"], "applied",
        "{state:#}"
    );
    // The watches list what exists before they see changes: give them a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");

    // 1. A field flotilla owns, edited by hand, five times: each is repaired.
    let mut edits = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        configmaps
            .patch(
                "settings",
                &as_manager("kubectl-edit"),
                &Patch::Merge(json!({"data": {"k": format!("edited-{i}")}})),
            )
            .await
            .expect("edit the ConfigMap");
        let repaired = wait_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                configmap(&client, "apps", "settings")
                    .await
                    .is_some_and(|d| d.get("k").map(String::as_str) == Some("v"))
            },
        )
        .await;
        assert!(
            repaired.is_some(),
            "edit {i} not repaired within 10 s:\n{}",
            daemon.log()
        );
        edits.push(started.elapsed());
    }
    eprintln!(
        "edited field repaired: median {:?}, max {:?} over {} edits",
        median(edits.clone()),
        edits.iter().max().copied().unwrap_or_default(),
        edits.len()
    );

    // 2. A deleted object is recreated.
    let started = Instant::now();
    configmaps
        .delete("settings", &DeleteParams::default())
        .await
        .expect("delete the ConfigMap");
    let recreated = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async { configmap(&client, "apps", "settings").await.is_some() },
    )
    .await;
    assert!(
        recreated.is_some(),
        "deleted ConfigMap not recreated:\n{}",
        daemon.log()
    );
    eprintln!("deleted object recreated after {:?}", started.elapsed());

    // 3. An excluded path (an HPA scaling the Deployment) is never repaired.
    deployments
        .patch(
            "web",
            &as_manager("hpa-controller"),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale the Deployment");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replicas = deployments
        .get("web")
        .await
        .expect("read the Deployment")
        .spec
        .replicas;
    assert_eq!(
        replicas,
        Some(5),
        "the excluded path was repaired:\n{}",
        daemon.log()
    );
    // ...but a field of the same object that is not excluded still is.
    deployments
        .patch(
            "web",
            &as_manager("kubectl-edit"),
            &Patch::Merge(
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone"}}}),
            ),
        )
        .await
        .expect("relabel the Deployment");
    let relabelled = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            deployments.get("web").await.ok().is_some_and(|d| {
                d.metadata
                    .labels
                    .unwrap_or_default()
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str)
                    == Some("flotilla")
            })
        },
    )
    .await;
    assert!(
        relabelled.is_some(),
        "the Deployment's label not repaired:\n{}",
        daemon.log()
    );
    let d = deployments.get("web").await.expect("read the Deployment");
    assert_eq!(
        d.spec.replicas,
        Some(5),
        "repairing the label reset the excluded replicas"
    );

    // 4. A change that makes the repair impossible: the ConfigMap made immutable with other
    // data. The dry-run of the repair fails, and that is reported, not retried in a loop.
    configmaps
        .patch(
            "frozen",
            &as_manager("kubectl-edit"),
            &Patch::Merge(json!({"immutable": true, "data": {"k": "frozen"}})),
        )
        .await
        .expect("freeze the ConfigMap");

    // The note of the applied commit lists every repair.
    let noted = wait_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            repo.note("refs/notes/flotilla", &commit).is_some_and(|n| {
                n.contains("NOT repaired")
                    && n.contains("; recreated")
                    && n.contains("Deployment.apps/apps/web (profile web): changed")
            })
        },
    )
    .await;
    let note = repo
        .note("refs/notes/flotilla", &commit)
        .unwrap_or_default();
    assert!(
        noted.is_some(),
        "the note lacks the repairs:\n{note}\n{}",
        daemon.log()
    );
    assert!(
        note.contains(
            "- one ConfigMap/apps/settings (profile web): changed /data/k by kubectl-edit"
        ) && note.contains("; re-applied"),
        "{note}"
    );
    assert!(
        note.contains("- one ConfigMap/apps/settings (profile web): deleted")
            && note.contains("; recreated"),
        "{note}"
    );
    assert!(
        note.contains("Deployment.apps/apps/web (profile web): changed /metadata/labels/app.kubernetes.io~1managed-by by kubectl-edit"),
        "{note}"
    );
    assert!(
        !note.contains("/spec/replicas"),
        "an excluded path was reported:\n{note}"
    );
    assert!(
        note.contains("ConfigMap/apps/frozen (profile web): changed by kubectl-edit")
            && note.contains("NOT repaired: the dry-run of the repair failed"),
        "{note}"
    );
    // Each repair's diff goes from the drifted value back to flotilla's.
    assert!(note.contains("-  k: edited-0\n+  k: v\n"), "{note}");
    let state = repo.state(&commit);
    let drift = state["drift"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        drift.len(),
        5 + 1 + 1 + 1,
        "5 edits, 1 deletion, 1 label, 1 failed repair:\n{state:#}"
    );
    assert!(
        drift
            .iter()
            .any(|d| d["result"]["result"] == "dryRunFailed"),
        "{state:#}"
    );

    // No repair loop: with nothing changing, the frozen object is not retried and the note
    // is not rewritten.
    let count = |git_ref: &str| {
        support::fleet::git(&repo.bare(), &["rev-list", "--count", git_ref])
            .trim()
            .parse::<usize>()
            .unwrap_or(0)
    };
    let notes_before = count("refs/notes/flotilla");
    let writes_before = fleet.write_requests("one").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count("refs/notes/flotilla"),
        notes_before,
        "{}",
        daemon.log()
    );
    assert_eq!(
        fleet.write_requests("one").len(),
        writes_before,
        "writes while nothing changed:\n{}",
        daemon.log()
    );

    // 5. The apiserver restarts: the watches come back by themselves (backoff, relist) and
    // repair the next edit.
    fleet.stop_cluster("one");
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.start_cluster("one");
    let client = fleet.client("one").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let restarted = Instant::now();
    let repaired = wait_until(
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async {
            // Edit until an edit is repaired: edits made before the watch is back are found by
            // its relist, later ones by the watch.
            if configmap(&client, "apps", "settings")
                .await
                .is_some_and(|d| d.get("k").map(String::as_str) == Some("v"))
            {
                let _ = configmaps
                    .patch(
                        "settings",
                        &as_manager("kubectl-edit"),
                        &Patch::Merge(json!({"data": {"k": "after-restart"}})),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            configmap(&client, "apps", "settings")
                .await
                .is_some_and(|d| d.get("k").map(String::as_str) == Some("v"))
                && repo
                    .note("refs/notes/flotilla", &commit)
                    .is_some_and(|n| n.contains("after-restart"))
        },
    )
    .await;
    assert!(
        repaired.is_some(),
        "no repair after the apiserver restarted:\n{}",
        daemon.log()
    );
    eprintln!(
        "after the apiserver restart, an edit was repaired {:?} after it was ready",
        restarted.elapsed()
    );
}
