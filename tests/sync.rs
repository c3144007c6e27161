//! End-to-end sync against real control planes and real git repositories: what a commit
//! deploys where, withdraw, prune, and the no-op pass.

mod support;

use support::ControlPlanes;
use support::fleet::{
    ConfigRepo, clusters_yaml, configmap, configmap_meta, configmap_yaml, profile_yaml, sync_once,
};

const NS: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n";

fn three_clusters() -> ControlPlanes {
    ControlPlanes::builder()
        .names(&["prod-a", "prod-b", "dev-c"])
        .start()
}

fn inventory(repo: &ConfigRepo) {
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[
            ("prod-a", "env: prod, region: eu"),
            ("prod-b", "env: prod, region: us"),
            ("dev-c", "env: dev, region: eu"),
        ]),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_deploys_to_exactly_the_matching_clusters_and_a_second_pass_writes_nothing() {
    let fleet = three_clusters();
    let repo = ConfigRepo::new();
    inventory(&repo);
    repo.write("manifests/ns.yaml", NS)
        .write(
            "manifests/by-object.yaml",
            &configmap_yaml("apps", "by-object", &[("k", "v")]),
        )
        .write(
            "manifests/by-string.yaml",
            &configmap_yaml("apps", "by-string", &[("k", "v")]),
        )
        .write(
            "manifests/by-ref.yaml",
            &configmap_yaml("apps", "by-ref", &[("k", "v")]),
        )
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml("base", "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/ns.yaml}\n"),
                profile_yaml(
                    "object-selector",
                    "  clusterSelector: {matchLabels: {env: prod}}\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/by-object.yaml}\n",
                ),
                profile_yaml(
                    "string-selector",
                    "  clusterSelector: \"region in (eu)\"\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/by-string.yaml}\n",
                ),
                profile_yaml(
                    "by-ref",
                    "  clusterRefs: [prod-b]\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/by-ref.yaml}\n",
                ),
            ]
            .concat(),
        );
    let commit = repo.commit("add profiles");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );

    let expected = [
        ("prod-a", ["by-object", "by-string"].as_slice()),
        ("prod-b", ["by-object", "by-ref"].as_slice()),
        ("dev-c", ["by-string"].as_slice()),
    ];
    for (cluster, present) in expected {
        let client = fleet.client(cluster).await;
        for name in ["by-object", "by-string", "by-ref"] {
            let got = configmap(&client, "apps", name).await;
            assert_eq!(
                got.is_some(),
                present.contains(&name),
                "{cluster}: configmap {name} present? note:\n{}",
                run.stdout
            );
        }
        let (labels, annotations) = configmap_meta(&client, "apps", present[0])
            .await
            .expect("deployed object");
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("flotilla")
        );
        assert!(annotations.contains_key("flotilla.dev/profile"));
    }

    // The notes arrived on the remote, on the synced commit.
    let note = repo
        .note("refs/notes/flotilla", &commit)
        .expect("human note on the remote");
    assert!(
        note.starts_with("flotilla: 3 clusters (3 changed)"),
        "{note}"
    );
    assert!(note.contains("created ConfigMap/apps/by-ref"), "{note}");
    let state = repo.state(&commit);
    assert_eq!(state["valid"], true);
    assert_eq!(
        state["clusters"]["prod-b"]["profiles"]["by-ref"]["status"], "applied",
        "{state:#}"
    );
    assert_eq!(state["clusters"]["dev-c"]["labels"]["env"], "dev");

    // `flotilla status` with its own mirror (as on a laptop) reads the state note.
    let status_cache = tempfile::tempdir().expect("tempdir");
    let status = || {
        let out = std::process::Command::new(support::fleet::flotilla_bin())
            .args(["status", "--repo", &repo.url(), "--cache-dir"])
            .arg(status_cache.path())
            .output()
            .expect("run status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let row = |table: &str, cluster: &str, profile: &str| -> String {
        table
            .lines()
            .find(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == [cluster, profile])
            .unwrap_or_else(|| panic!("no row {cluster} {profile}:\n{table}"))
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(row(&status(), "prod-b", "by-ref"), "applied");

    // A second pass with no new commit: zero write requests anywhere, and the note says so.
    let before: Vec<usize> = fleet
        .names()
        .iter()
        .map(|n| fleet.write_requests(n).len())
        .collect();
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for (i, name) in fleet.names().iter().enumerate() {
        let writes = fleet.write_requests(name);
        assert_eq!(
            writes.len(),
            before[i],
            "{name}: writes in the no-op pass: {:?}",
            &writes[before[i]..]
        );
    }
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.starts_with("flotilla: 3 clusters (0 changed): nothing changed"),
        "{note}"
    );

    // The same mirror sees the new state note although the branch did not move.
    assert_eq!(row(&status(), "prod-b", "by-ref"), "inSync");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_change_withdraws_and_leave_policies_releases() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/ns.yaml", NS)
        .write("manifests/w.yaml", &configmap_yaml("apps", "withdrawn", &[("k", "v")]))
        .write("manifests/l.yaml", &configmap_yaml("apps", "left", &[("k", "v")]))
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml("base", "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/ns.yaml}\n"),
                profile_yaml(
                    "withdraws",
                    "  clusterSelector: env=prod\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/w.yaml}\n",
                ),
                profile_yaml(
                    "leaves",
                    "  clusterSelector: env=prod\n  dependsOn: [base]\n  stopMatchingBehavior: LeavePolicies\n  policyRefs:\n  - {path: manifests/l.yaml}\n",
                ),
            ]
            .concat(),
        );
    repo.commit("deploy");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let client = fleet.client("one").await;
    assert!(configmap(&client, "apps", "withdrawn").await.is_some());
    assert!(configmap(&client, "apps", "left").await.is_some());

    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[("one", "env: staging")]),
    );
    let commit = repo.commit("move the cluster to staging");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        configmap(&client, "apps", "withdrawn").await.is_none(),
        "WithdrawPolicies deletes:\n{}",
        run.stdout
    );
    let (labels, annotations) = configmap_meta(&client, "apps", "left")
        .await
        .expect("LeavePolicies keeps the object");
    assert!(
        !labels.contains_key("app.kubernetes.io/managed-by"),
        "{labels:?}"
    );
    assert!(
        !annotations.contains_key("flotilla.dev/profile"),
        "{annotations:?}"
    );
    let inventories: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "flotilla-system");
    assert!(
        inventories
            .get_opt("flotilla-inventory-leaves")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        inventories
            .get_opt("flotilla-inventory-withdraws")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        inventories
            .get_opt("flotilla-inventory-base")
            .await
            .expect("get")
            .is_some()
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("### withdraws (Continuous): withdrawn"),
        "{note}"
    );
    assert!(note.contains("released ConfigMap/apps/left"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_what_left_the_render_and_never_touches_objects_outside_the_inventory() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write("manifests/ns.yaml", NS)
        .write(
            "manifests/app/objects.yaml",
            &[
                configmap_yaml("apps", "keep", &[("k", "v")]),
                configmap_yaml("apps", "drop", &[("k", "v")]),
            ]
            .concat(),
        )
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml("base", "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/ns.yaml}\n"),
                profile_yaml(
                    "app",
                    "  clusterSelector: {}\n  dependsOn: [base]\n  policyRefs:\n  - {path: manifests/app}\n",
                ),
            ]
            .concat(),
        );
    repo.commit("deploy");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // Someone else's object carrying flotilla's label and even its profile annotation.
    let stranger = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "stranger", "namespace": "apps",
            "labels": {"app.kubernetes.io/managed-by": "flotilla"},
            "annotations": {"flotilla.dev/profile": "app"}},
        "data": {"k": "v"},
    });
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "apps");
    api.patch(
        "stranger",
        &kube::api::PatchParams::apply("someone-else"),
        &kube::api::Patch::Apply(&stranger),
    )
    .await
    .expect("create stranger");

    repo.write(
        "manifests/app/objects.yaml",
        &configmap_yaml("apps", "keep", &[("k", "v2")]),
    );
    let commit = repo.commit("drop one object");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        configmap(&client, "apps", "drop").await.is_none(),
        "{}",
        run.stdout
    );
    assert_eq!(
        configmap(&client, "apps", "keep")
            .await
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("v2")
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(note.contains("pruned ConfigMap/apps/drop"), "{note}");
    assert!(note.contains("updated ConfigMap/apps/keep"), "{note}");

    // Removing the profile withdraws it; the stranger survives everything.
    repo.write(
        "profiles/p.yaml",
        &profile_yaml(
            "base",
            "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/ns.yaml}\n",
        ),
    );
    let commit = repo.commit("remove the app profile");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        configmap(&client, "apps", "keep").await.is_none(),
        "{}",
        run.stdout
    );
    assert!(configmap(&client, "apps", "stranger").await.is_some());
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("### app (removed from Git): withdrawn"),
        "{note}"
    );
}
