//! The control-plane launcher (`scripts/local-clusters.sh`) against real etcd and kube-apiservers
//! of two minor versions.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use support::{ControlPlanes, process_running};

#[tokio::test]
async fn two_versions_from_one_launch_serve_server_side_apply() {
    let planes = ControlPlanes::start(2, &["1.34", "1.37"]);
    assert_eq!(planes.names(), ["cluster-1", "cluster-2"]);

    for (name, minor) in [("cluster-1", "34"), ("cluster-2", "37")] {
        assert!(planes.kubeconfig(name).is_file(), "{name}: kubeconfig");
        let client = planes.client(name).await;

        let info = client
            .apiserver_version()
            .await
            .unwrap_or_else(|e| panic!("{name}: GET /version: {e}"));
        assert_eq!(info.major, "1", "{name}: {info:?}");
        assert_eq!(info.minor.trim_end_matches('+'), minor, "{name}: {info:?}");
        assert_eq!(
            planes.cluster(name).version,
            info.git_version,
            "{name}: launcher and apiserver disagree on the version"
        );

        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let desired = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "launcher-probe" },
            "data": { "cluster": name, "minor": minor },
        });
        api.patch(
            "launcher-probe",
            &PatchParams::apply("flotilla").force(),
            &Patch::Apply(&desired),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: server-side apply: {e}"));

        let read = api
            .get("launcher-probe")
            .await
            .unwrap_or_else(|e| panic!("{name}: get: {e}"));
        let expected = BTreeMap::from([
            ("cluster".to_string(), name.to_string()),
            ("minor".to_string(), minor.to_string()),
        ]);
        assert_eq!(read.data, Some(expected), "{name}");
        let managers: Vec<_> = read
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| f.manager)
            .collect();
        assert!(
            managers.iter().any(|m| m == "flotilla"),
            "{name}: field managers {managers:?}"
        );
    }

    // Same etcd, distinct prefixes: a ConfigMap in one cluster is invisible in the other.
    let api: Api<ConfigMap> = Api::namespaced(planes.client("cluster-1").await, "default");
    let only_here = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "only-in-cluster-1" },
    });
    api.patch(
        "only-in-cluster-1",
        &PatchParams::apply("flotilla").force(),
        &Patch::Apply(&only_here),
    )
    .await
    .expect("apply in cluster-1");
    let other: Api<ConfigMap> = Api::namespaced(planes.client("cluster-2").await, "default");
    assert!(
        other
            .get_opt("only-in-cluster-1")
            .await
            .expect("get in cluster-2")
            .is_none(),
        "clusters share state"
    );
}

#[tokio::test]
async fn down_leaves_no_process() {
    let planes = ControlPlanes::builder()
        .names(&["solo"])
        .versions(&["1.37"])
        .start();
    let client = planes.client("solo").await;
    client
        .apiserver_version()
        .await
        .expect("apiserver answers before down");
    drop(client);

    let dir = planes.dir().to_path_buf();
    let pids = planes.pids();
    // etcd, one apiserver, the watchdog.
    assert_eq!(pids.len(), 3, "recorded pids {pids:?}");
    assert!(
        pids.iter().all(|&pid| process_running(pid)),
        "{pids:?} not all running"
    );

    drop(planes);

    // `down` waits for the processes; the watchdog may need a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<u32> = pids.clone();
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left.retain(|&pid| process_running(pid));
    }
    assert!(left.is_empty(), "still running after down: {left:?}");
    assert!(!dir.exists(), "{} not removed", dir.display());
}
