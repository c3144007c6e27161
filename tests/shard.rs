//! Sharding of `flotilla run --shards 2` over six real control planes `c0..c5`: two replicas
//! (POD_NAME `flotilla-0`/`flotilla-1`, so the index comes from the StatefulSet ordinal), each
//! with its own Lease (`flotilla-shard-<i>`, management cluster `c0`). Each cluster is synced by
//! exactly one shard — the one `fnv1a64(name) % 2` names (pinned in src/shard.rs: c0, c2, c4 →
//! shard 0; c1, c3, c5 → shard 1) — as the audit logs show by the replicas' user agents; each
//! shard's state note lists exactly its clusters; `flotilla status` and `flotilla plan` see all
//! six. Every cluster also gets a Local object in `c0`: the inventories named
//! `flotilla-inventory-<profile>.<cluster>` keep the shards from pruning each other's.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use support::ControlPlanes;
use support::daemon::{Daemon, flotilla, no_http, wait_until};
use support::fleet::{ConfigRepo, clusters_yaml, configmap, configmap_yaml, profile_yaml};

const CLUSTERS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];

/// The owner of each of `CLUSTERS` over two shards (src/shard.rs pins the same values).
const OWNER: [usize; 6] = [0, 1, 0, 1, 0, 1];

const LOCAL: &str = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"local-{{ cluster.metadata.name }}\"\n  namespace: apps\ndata:\n  cluster: \"{{ cluster.metadata.name }}\"\n";

fn shard_replica(repo: &ConfigRepo, fleet: &ControlPlanes, index: usize) -> Daemon {
    let pod = format!("flotilla-{index}");
    let mut args: Vec<std::ffi::OsString> = vec![
        "--repo".into(),
        repo.url().into(),
        "--kubeconfig-dir".into(),
        fleet.dir().into(),
        "--cache-dir".into(),
        repo.cache_dir().join(&pod).into(),
        "--management-cluster".into(),
        "c0".into(),
        "--interval".into(),
        "2s".into(),
        "--shards".into(),
        "2".into(),
        "--leader-elect".into(),
        "--lease-duration".into(),
        "6s".into(),
        "--lease-renew-deadline".into(),
        "4s".into(),
        "--lease-retry-period".into(),
        "1s".into(),
    ];
    args.extend(no_http().into_iter().map(Into::into));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    Daemon::spawn_env(&args, &[("POD_NAME", &pod)])
}

fn state_clusters(repo: &ConfigRepo, index: usize, commit: &str) -> Option<BTreeSet<String>> {
    let text = repo.note(&format!("refs/notes/flotilla/shard-{index}-state"), commit)?;
    let state: serde_json::Value = serde_json::from_str(&text).expect("state note JSON");
    Some(
        state["clusters"]
            .as_object()
            .expect("clusters")
            .keys()
            .cloned()
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_shards_split_six_clusters_and_status_and_plan_merge_their_notes() {
    let fleet = ControlPlanes::builder().names(&CLUSTERS).start();
    let c0 = fleet.client("c0").await;
    let namespaces: Api<Namespace> = Api::all(c0.clone());
    for name in ["flotilla-system", "apps"] {
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create a namespace in c0");
    }
    let repo = ConfigRepo::new();
    let inventory: Vec<(&str, &str)> = CLUSTERS.iter().map(|c| (*c, "env: prod")).collect();
    repo.write("clusters/fleet.yaml", &clusters_yaml(&inventory))
        .write(
            "manifests/apps/ns.yaml",
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
        )
        .write(
            "manifests/apps/settings.yaml",
            &configmap_yaml("apps", "settings", &[("k", "v1")]),
        )
        .write("manifests/local/cm.yaml", LOCAL)
        .write(
            "profiles/apps.yaml",
            &profile_yaml(
                "apps",
                "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/apps}\n  - {path: manifests/local, template: true, deploymentType: Local}\n",
            ),
        );
    let c1 = repo.commit("apps on every cluster");

    let shards = [
        shard_replica(&repo, &fleet, 0),
        shard_replica(&repo, &fleet, 1),
    ];
    let synced = wait_until(
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async { (0..2).all(|i| state_clusters(&repo, i, &c1).is_some()) },
    )
    .await;
    assert!(
        synced.is_some(),
        "shard notes missing:\n0:\n{}\n1:\n{}",
        shards[0].log(),
        shards[1].log()
    );

    // Each shard's state note lists exactly its clusters: disjoint, all six together.
    let mut all = BTreeSet::new();
    for (index, shard) in shards.iter().enumerate() {
        let expected: BTreeSet<String> = CLUSTERS
            .iter()
            .zip(OWNER)
            .filter(|(_, owner)| *owner == index)
            .map(|(c, _)| c.to_string())
            .collect();
        let listed = state_clusters(&repo, index, &c1).expect("state note");
        assert_eq!(listed, expected, "shard {index}:\n{}", shard.log());
        assert!(all.is_disjoint(&listed));
        all.extend(listed);
    }
    assert_eq!(all.len(), 6);
    assert!(
        repo.note("refs/notes/flotilla-state", &c1).is_none(),
        "no unsharded note is written"
    );

    // Every cluster has its objects (and its Local object in c0), written by its shard only.
    for (cluster, owner) in CLUSTERS.iter().zip(OWNER) {
        let client = fleet.client(cluster).await;
        let data = configmap(&client, "apps", "settings").await;
        assert_eq!(
            data.and_then(|d| d.get("k").cloned()).as_deref(),
            Some("v1"),
            "{cluster}"
        );
        let local = configmap(&c0, "apps", &format!("local-{cluster}")).await;
        assert!(local.is_some(), "Local object of {cluster} in c0");
        let writers: BTreeSet<String> = fleet
            .write_requests(cluster)
            .into_iter()
            .filter(|e| e.resource.as_deref() != Some("leases"))
            .filter(|e| !e.name.as_deref().unwrap_or_default().starts_with("local-"))
            .filter(|e| {
                !e.name
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("flotilla-inventory-apps.")
            })
            .filter_map(|e| e.user_agent)
            .collect();
        let expected = format!("(flotilla-{owner})");
        assert!(
            !writers.is_empty() && writers.iter().all(|a| a.contains(&expected)),
            "{cluster} written by {writers:?}, expected only shard {owner}"
        );
    }

    // One Lease per shard, each held by its replica.
    let leases: Api<Lease> = Api::namespaced(c0.clone(), "flotilla-system");
    for index in 0..2 {
        let lease = leases
            .get(&format!("flotilla-shard-{index}"))
            .await
            .expect("the shard's lease");
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some(format!("flotilla-{index}").as_str())
        );
    }

    // Passes of both shards go on; neither prunes the other's Local objects.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for cluster in CLUSTERS {
        assert!(
            configmap(&c0, "apps", &format!("local-{cluster}"))
                .await
                .is_some(),
            "Local object of {cluster} still in c0"
        );
    }

    // `flotilla status` needs no flag to show all six.
    let out = flotilla()
        .args(["status", "--repo", &repo.url(), "--cache-dir"])
        .arg(repo.cache_dir().join("status"))
        .output()
        .expect("run flotilla status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cluster in CLUSTERS {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(cluster)),
            "status lacks {cluster}:\n{text}"
        );
    }

    // `flotilla plan` takes every cluster's labels from the shards' state notes.
    repo.write(
        "manifests/apps/settings.yaml",
        &configmap_yaml("apps", "settings", &[("k", "v2")]),
    );
    let c2 = repo.commit("apps v2");
    let out = flotilla()
        .args(["plan", "--repo"])
        .arg(repo.bare())
        .args(["--base", &c1, "--head", &c2, "--format", "json"])
        .output()
        .expect("run flotilla plan");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    let clusters = plan["clusters"].as_array().expect("clusters");
    assert_eq!(clusters.len(), 6, "{plan:#}");
    for c in clusters {
        assert_eq!(c["labels"]["source"], "stateNote", "{c:#}");
        assert_eq!(c["labels"]["commit"], c1.as_str(), "{c:#}");
    }
}

/// A repository whose notes were written unsharded (`refs/notes/flotilla`) cannot also hold
/// `refs/notes/flotilla/shard-<i>`: the sharded daemon says so, naming the ref in the way. No
/// cluster is needed (an empty inventory still gets notes).
#[test]
fn sharded_notes_next_to_unsharded_ones_fail_with_a_clear_error() {
    let repo = ConfigRepo::new();
    repo.write("clusters/fleet.yaml", "");
    let commit = repo.commit("no clusters yet");
    let kubeconfigs = tempfile::tempdir().expect("temp dir");
    let once = support::fleet::flotilla_bin();
    let out = std::process::Command::new(&once)
        .args(["sync", "--once", "--repo", &repo.url(), "--kubeconfig-dir"])
        .arg(kubeconfigs.path())
        .arg("--cache-dir")
        .arg(repo.cache_dir().join("unsharded"))
        .env_remove("FLOTILLA_GIT_TOKEN")
        .output()
        .expect("run flotilla sync");
    assert!(
        repo.note("refs/notes/flotilla-state", &commit).is_some(),
        "unsharded notes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args: Vec<std::ffi::OsString> = vec![
        "--repo".into(),
        repo.url().into(),
        "--kubeconfig-dir".into(),
        kubeconfigs.path().into(),
        "--cache-dir".into(),
        repo.cache_dir().join("sharded").into(),
        "--shards".into(),
        "2".into(),
        "--shard-index".into(),
        "1".into(),
    ];
    args.extend(no_http().into_iter().map(Into::into));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let daemon = Daemon::spawn(&args);
    let started = std::time::Instant::now();
    while !daemon.log().contains("writing notes failed")
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.log();
    assert!(
        log.contains("refs/notes/flotilla exists (written unsharded)"),
        "{log}"
    );
    assert!(
        repo.note("refs/notes/flotilla/shard-1-state", &commit)
            .is_none(),
        "no shard note next to the unsharded one"
    );
}
