//! Leader election of `flotilla run --leader-elect` against real control planes: a management
//! cluster `mgmt` (holds the Lease) and a workload cluster `work`, and real `flotilla run`
//! processes with distinct POD_NAMEs over the same repository.
//!
//! Who wrote what: every replica sends `User-Agent: flotilla/<version> (<POD_NAME>)`, and the
//! apiserver's audit log records the agent of every request, so the audit log (not the daemons'
//! own word) says which process wrote each object. All replicas use the same kubeconfig user.
//!
//! Short durations for the test: `--lease-duration 6s --lease-renew-deadline 4s
//! --lease-retry-period 1s`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use support::daemon::{Daemon, wait_until};
use support::fleet::{ConfigRepo, clusters_yaml, configmap, configmap_yaml, profile_yaml};
use support::{AuditEvent, ControlPlanes, now_micros};

const LEASE_DURATION: Duration = Duration::from_secs(6);
const RETRY: Duration = Duration::from_secs(1);

/// A loopback address no one listens on now (the replica binds it a moment later).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

/// The status code of `GET /readyz` at `addr` (0 when nothing answers).
fn readyz(addr: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A replica: `flotilla run --leader-elect` as pod `pod`, with its own git mirror, serving HTTP
/// on `http` (`off`: no listener).
fn replica(repo: &ConfigRepo, fleet: &ControlPlanes, pod: &str, http: &str) -> Daemon {
    let cache = repo.cache_dir().join(pod);
    let args: Vec<std::ffi::OsString> = vec![
        "--repo".into(),
        repo.url().into(),
        "--kubeconfig-dir".into(),
        fleet.dir().into(),
        "--cache-dir".into(),
        cache.into(),
        "--management-cluster".into(),
        "mgmt".into(),
        "--interval".into(),
        "2s".into(),
        "--leader-elect".into(),
        "--lease-duration".into(),
        "6s".into(),
        "--lease-renew-deadline".into(),
        "4s".into(),
        "--lease-retry-period".into(),
        "1s".into(),
    ];
    let mut args = args;
    args.extend(["--http-addr".into(), http.into()]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    Daemon::spawn_env(&args, &[("POD_NAME", pod)])
}

/// The Lease's holder and transitions.
async fn lease(client: &kube::Client) -> Option<(Option<String>, i32)> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "flotilla-system");
    let lease = api.get_opt("flotilla").await.expect("read the lease")?;
    let spec = lease.spec.unwrap_or_default();
    Some((
        spec.holder_identity.filter(|h| !h.is_empty()),
        spec.lease_transitions.unwrap_or(0),
    ))
}

/// Waits until `pod` holds the Lease; how long it took.
async fn until_holder(client: &kube::Client, pod: &str, timeout: Duration) -> Option<Duration> {
    wait_until(timeout, Duration::from_millis(50), || async {
        lease(client)
            .await
            .is_some_and(|(h, _)| h.as_deref() == Some(pod))
    })
    .await
}

/// Object writes (anything but the Lease; no dry runs) that `pod` made to `cluster`.
fn object_writes(fleet: &ControlPlanes, cluster: &str, pod: &str) -> Vec<AuditEvent> {
    let agent = format!("({pod})");
    fleet
        .write_requests(cluster)
        .into_iter()
        .filter(|e| e.resource.as_deref() != Some("leases"))
        .filter(|e| e.user_agent.as_deref().is_some_and(|a| a.contains(&agent)))
        .collect()
}

fn settings(value: &str) -> String {
    configmap_yaml("apps", "settings", &[("k", value)])
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_writes_and_another_takes_over_on_sigterm_kill_and_lost_renewals() {
    let fleet = ControlPlanes::builder().names(&["mgmt", "work"]).start();
    let mgmt = fleet.client("mgmt").await;
    let work = fleet.client("work").await;
    let namespaces: Api<Namespace> = Api::all(mgmt.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "flotilla-system"}
    }))
    .expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create flotilla-system");

    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("mgmt", "role: management"), ("work", "env: prod")]),
    )
    .write(
        "manifests/apps/ns.yaml",
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n",
    )
    .write("manifests/apps/settings.yaml", &settings("v1"))
    .write(
        "profiles/apps.yaml",
        &profile_yaml(
            "apps",
            "  clusterSelector: {matchLabels: {env: prod}}\n  policyRefs:\n  - {path: manifests/apps}\n",
        ),
    );
    let c1 = repo.commit("apps v1");

    // 1. Two replicas at once: one holds the Lease and syncs, the other waits and writes nothing.
    let http_a = free_addr();
    let http_b = free_addr();
    let mut a = replica(&repo, &fleet, "flotilla-a", &http_a);
    let mut b = replica(&repo, &fleet, "flotilla-b", &http_b);
    let synced = wait_until(
        Duration::from_secs(90),
        Duration::from_millis(100),
        || async { repo.note("refs/notes/flotilla-state", &c1).is_some() },
    )
    .await;
    assert!(
        synced.is_some(),
        "no pass:\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    let (holder, _) = lease(&mgmt).await.expect("a lease");
    let holder = holder.expect("a holder");
    let (leader, waiting, waiting_pod, leader_pod, waiting_http) = if holder == "flotilla-a" {
        (&mut a, &mut b, "flotilla-b", "flotilla-a", &http_b)
    } else {
        assert_eq!(holder, "flotilla-b");
        (&mut b, &mut a, "flotilla-a", "flotilla-b", &http_a)
    };
    // A candidate that lost the creation race reads the Lease again after a retry period.
    let candidate = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { waiting.log().contains("waiting for the lease") },
    )
    .await;
    assert!(candidate.is_some(), "{}", waiting.log());
    // A standby candidate is ready (a rolling update must not wait for it to win the Lease).
    assert_eq!(readyz(waiting_http), 200, "{}", waiting.log());
    // Another pass interval for the waiting one to (wrongly) write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for cluster in ["mgmt", "work"] {
        assert_eq!(
            object_writes(&fleet, cluster, waiting_pod),
            vec![],
            "the waiting replica wrote to {cluster}"
        );
    }
    assert!(
        !object_writes(&fleet, "work", leader_pod).is_empty(),
        "the holder's writes are in the audit log under its agent"
    );
    assert!(
        !waiting.log().contains("notes written"),
        "{}",
        waiting.log()
    );

    // 2. SIGTERM of the holder: it finishes, releases the Lease, and the other takes over at
    // its next try instead of after the lease duration.
    leader.signal("-TERM");
    let (status, _) = leader
        .wait_exit(Duration::from_secs(30))
        .expect("the holder stops on SIGTERM");
    assert!(status.success(), "{status:?}:\n{}", leader.log());
    let exited = Instant::now();
    assert!(
        leader.log().contains("released the lease"),
        "{}",
        leader.log()
    );
    until_holder(&mgmt, waiting_pod, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no takeover after SIGTERM:\n{}", waiting.log()));
    let sigterm_handover = exited.elapsed();
    eprintln!("takeover after SIGTERM (holder exit → new holder): {sigterm_handover:?}");
    // Without the release a candidate needs the full lease duration of an unchanged Lease.
    assert!(
        sigterm_handover < LEASE_DURATION - RETRY,
        "handover after a release took {sigterm_handover:?}"
    );
    let (_, transitions) = lease(&mgmt).await.expect("lease");
    assert_eq!(transitions, 1, "one transition: the release's takeover");

    // 3. kill -9 of the holder with a new commit waiting: a third replica takes over within the
    // lease duration (+ retry period), and every write of the new commit comes from it, after
    // the old holder's death.
    let (holder2, holder2_pod) = (waiting, waiting_pod);
    let mut c = replica(&repo, &fleet, "flotilla-c", "off");
    // C is a candidate (it sees the Lease renewed) before the kill.
    let candidate = wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { c.log().contains("waiting for the lease") },
    )
    .await;
    assert!(candidate.is_some(), "{}", c.log());
    repo.write("manifests/apps/settings.yaml", &settings("v2"));
    holder2.signal("-KILL");
    let killed = Instant::now();
    let killed_at = now_micros();
    holder2
        .wait_exit(Duration::from_secs(10))
        .expect("killed holder exits");
    let c2 = repo.commit("apps v2");
    until_holder(
        &mgmt,
        "flotilla-c",
        LEASE_DURATION + RETRY + Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|| panic!("no takeover after kill -9:\n{}", c.log()));
    let kill_handover = killed.elapsed();
    eprintln!("takeover after kill -9 (kill → new holder): {kill_handover:?}");
    // The candidate must wait out the lease duration of the last renewed record, which is at
    // most a retry period (and a request) older than the kill: taking over sooner would be
    // unsafe.
    assert!(
        kill_handover >= LEASE_DURATION - 2 * RETRY,
        "took over after {kill_handover:?}, before the lease could expire"
    );
    let applied = wait_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            configmap(&work, "apps", "settings")
                .await
                .is_some_and(|d| d.get("k").map(String::as_str) == Some("v2"))
                && repo.note("refs/notes/flotilla-state", &c2).is_some()
        },
    )
    .await;
    assert!(
        applied.is_some(),
        "v2 not applied by the new holder:\n{}",
        c.log()
    );
    let new_writes = object_writes(&fleet, "work", "flotilla-c");
    assert!(
        new_writes
            .iter()
            .any(|e| e.name.as_deref() == Some("settings")),
        "the new holder wrote settings: {new_writes:#?}"
    );
    for e in &new_writes {
        assert!(
            e.received_micros() > killed_at,
            "the new holder wrote before the old one died: {e:#?}"
        );
    }
    for e in object_writes(&fleet, "work", holder2_pod) {
        assert!(
            e.completed_micros() <= killed_at,
            "the killed holder wrote after its death: {e:#?}"
        );
    }
    let (_, transitions) = lease(&mgmt).await.expect("lease");
    assert_eq!(transitions, 2);

    // 4. The holder cannot renew (the management cluster is down): it exits with status 1
    // within the renew deadline (+ a retry), before any other replica could take over.
    fleet.stop_cluster("mgmt");
    let stopped = Instant::now();
    let (status, _) = c
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the holder kept running without its lease:\n{}", c.log()));
    let gave_up = stopped.elapsed();
    eprintln!("holder exit after the management cluster stopped: {gave_up:?}");
    assert_eq!(status.code(), Some(1), "{}", c.log());
    assert!(c.log().contains("could not renew the lease"), "{}", c.log());
}
