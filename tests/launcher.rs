//! The control-plane launcher (`scripts/local-clusters.sh`) against real etcd and kube-apiservers
//! of two minor versions.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use support::{ControlPlanes, now_micros, process_running, rfc3339_micros};

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

#[tokio::test]
async fn audit_log_counts_writes_and_one_cluster_stops_and_starts() {
    let planes = ControlPlanes::start(2, &["1.34", "1.37"]);

    // (a) The audit log: what the kubeconfig's user did, writes apart, dry runs excluded.
    for name in ["cluster-1", "cluster-2"] {
        assert!(planes.audit_log(name).is_file(), "{name}: audit log");
        // The launcher's readiness probes authenticate as another user.
        assert_eq!(planes.requests(name), [], "{name}: requests before any");

        let api: Api<ConfigMap> = Api::namespaced(planes.client(name).await, "default");
        let desired = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "audited" },
            "data": { "cluster": name },
        });
        let before = now_micros();
        api.patch(
            "audited",
            &PatchParams::apply("flotilla").force(),
            &Patch::Apply(&desired),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: server-side apply: {e}"));
        let after = now_micros();

        // Read right away: the blocking log backend wrote the event before the response.
        let writes = planes.write_requests(name);
        assert_eq!(writes.len(), 1, "{name}: {writes:#?}");
        let apply = &writes[0];
        assert_eq!(apply.verb, "patch", "{name}: {apply:?}");
        assert_eq!(apply.resource.as_deref(), Some("configmaps"), "{name}");
        assert_eq!(apply.subresource, None, "{name}");
        assert_eq!(apply.namespace.as_deref(), Some("default"), "{name}");
        assert_eq!(apply.name.as_deref(), Some("audited"), "{name}");
        assert_eq!(apply.code, Some(201), "{name}: created by apply: {apply:?}");
        assert_eq!(apply.user, "flotilla-admin", "{name}");
        assert_eq!(
            apply.query_param("fieldManager"),
            Some("flotilla"),
            "{name}"
        );
        assert!(!apply.is_dry_run(), "{name}: {apply:?}");
        let (received, completed) = (apply.received_micros(), apply.completed_micros());
        assert!(
            before <= received && received <= completed && completed <= after,
            "{name}: request at {before}..{after} µs, audited {received}..{completed} µs"
        );
        eprintln!(
            "{name}: apply took {} µs at the client, {} µs in the apiserver; \
             audit event found on the first read after the response",
            after - before,
            completed - received
        );

        // A read is a request but not a write.
        api.get("audited")
            .await
            .unwrap_or_else(|e| panic!("{name}: get: {e}"));
        let requests = planes.requests(name);
        assert!(
            requests.iter().any(|e| e.verb == "get"
                && e.name.as_deref() == Some("audited")
                && e.code == Some(200)),
            "{name}: no GET in {requests:#?}"
        );
        assert_eq!(
            planes.write_requests(name),
            writes,
            "{name}: a GET counted as a write"
        );

        // A dry-run apply is a patch request, but not a write.
        let changed = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "audited" },
            "data": { "cluster": "dry-run" },
        });
        api.patch(
            "audited",
            &PatchParams::apply("flotilla").force().dry_run(),
            &Patch::Apply(&changed),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: dry-run apply: {e}"));
        let requests = planes.requests(name);
        let dry: Vec<_> = requests.iter().filter(|e| e.is_dry_run()).collect();
        assert_eq!(dry.len(), 1, "{name}: {requests:#?}");
        assert_eq!(dry[0].verb, "patch", "{name}: {:?}", dry[0]);
        assert_eq!(dry[0].query_param("dryRun"), Some("All"), "{name}");
        assert_eq!(
            planes.write_requests(name),
            writes,
            "{name}: a dry run counted"
        );
    }

    // (b) Stop cluster-1: it is unreachable, cluster-2 still answers.
    let kubeconfig = std::fs::read(planes.kubeconfig("cluster-1")).expect("read kubeconfig");
    let old_client = planes.client("cluster-1").await;
    old_client
        .apiserver_version()
        .await
        .expect("cluster-1 answers before stop");
    let pids = planes.pids();
    assert_eq!(pids.len(), 4, "etcd, 2 apiservers, watchdog: {pids:?}");

    let started = Instant::now();
    planes.stop_cluster("cluster-1");
    eprintln!("stop_cluster took {:?}", started.elapsed());
    let after_stop = planes.pids();
    assert_eq!(after_stop.len(), 3, "{after_stop:?}");
    let stopped: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| !after_stop.contains(pid))
        .collect();
    assert_eq!(stopped.len(), 1, "{pids:?} -> {after_stop:?}");
    assert!(
        !process_running(stopped[0]),
        "apiserver {} still runs",
        stopped[0]
    );
    let down = planes.client("cluster-1").await.apiserver_version().await;
    assert!(down.is_err(), "cluster-1 answers while stopped: {down:?}");
    assert!(
        old_client.apiserver_version().await.is_err(),
        "cluster-1 answers an old client while stopped"
    );
    let other: Api<ConfigMap> = Api::namespaced(planes.client("cluster-2").await, "default");
    let read = other.get("audited").await.expect("cluster-2 answers");
    assert_eq!(
        read.data,
        Some(BTreeMap::from([(
            "cluster".to_string(),
            "cluster-2".to_string()
        )]))
    );
    planes.stop_cluster("cluster-1"); // already stopped: nothing to do

    // Start it again: same port and certificates, the same kubeconfig works, etcd kept the data.
    let started = Instant::now();
    planes.start_cluster("cluster-1");
    eprintln!("start_cluster took {:?}", started.elapsed());
    assert_eq!(
        std::fs::read(planes.kubeconfig("cluster-1")).expect("read kubeconfig"),
        kubeconfig,
        "start rewrote the kubeconfig"
    );
    assert_eq!(planes.pids().len(), 4, "{:?}", planes.pids());
    let api: Api<ConfigMap> = Api::namespaced(planes.client("cluster-1").await, "default");
    let read = api
        .get("audited")
        .await
        .expect("cluster-1 answers after start");
    assert_eq!(
        read.data,
        Some(BTreeMap::from([(
            "cluster".to_string(),
            "cluster-1".to_string()
        )])),
        "the dry run changed nothing, the restart lost nothing"
    );
    old_client
        .apiserver_version()
        .await
        .expect("a client made before the stop answers after the start");
    planes.start_cluster("cluster-1"); // already running: nothing to do

    // The audit log continued across the restart.
    let writes = planes.write_requests("cluster-1");
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].name.as_deref(), Some("audited"));

    // `down` stops the restarted apiserver too.
    let pids = planes.pids();
    drop(planes);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = pids.clone();
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left.retain(|&pid| process_running(pid));
    }
    assert!(left.is_empty(), "still running after down: {left:?}");
}

#[test]
fn rfc3339_micros_parses_apiserver_times() {
    assert_eq!(
        rfc3339_micros("2026-11-27T10:00:00.123456Z"),
        Some(1_795_773_600_123_456)
    );
    assert_eq!(
        rfc3339_micros("2024-02-29T23:59:59.999999Z"),
        Some(1_709_251_199_999_999)
    );
    assert_eq!(
        rfc3339_micros("2026-11-27T12:00:00.5+02:00"),
        Some(1_795_773_600_500_000)
    );
    assert_eq!(
        rfc3339_micros("2000-03-01T00:00:00Z"),
        Some(951_868_800_000_000)
    );
    assert_eq!(rfc3339_micros("1969-12-31T23:00:00-01:00"), Some(0));
    assert_eq!(
        rfc3339_micros("2026-11-27T10:00:00.123456789Z"),
        Some(1_795_773_600_123_456),
        "nanoseconds truncate"
    );
    for bad in [
        "",
        "2026-11-27",
        "2026-11-27T10:00:00",
        "2026-11-27T10:00:00.Z",
        "2026-13-27T10:00:00Z",
        "2026-11-27T10:00:00+0200",
        "1969-12-31T23:59:59Z",
        "2026-11-27T10:00:00.123456Zjunk",
    ] {
        assert_eq!(rfc3339_micros(bad), None, "{bad:?}");
    }
}
