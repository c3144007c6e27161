//! templateResourceRefs end to end against real control planes: the two-stage (Crossplane)
//! pattern under the running daemon — a claim deployed to the management cluster, a consumer
//! pending until the claim's status is filled in, then re-rendered within moments because the
//! daemon watches the object (the poll interval is 60 s, so only the watch can explain it) —
//! plus optional refs, refs read from the managed cluster, refs whose object never exists, and
//! the `render` preview.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::ControlPlanes;
use support::daemon::{Daemon, flotilla, wait_until};
use support::fleet::{ConfigRepo, clusters_yaml, configmap, profile_yaml, sync_once};

const GROUP: &str = "refs.flotilla.example";

fn bucket_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: "Bucket".into(),
        plural: "buckets".into(),
    }
}

/// Installs the `Bucket` CRD (namespaced, with a status subresource) and waits until it is served.
async fn install_bucket_crd(client: &kube::Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("buckets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "buckets", "singular": "bucket", "kind": "Bucket", "listKind": "BucketList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                }},
            }],
        },
    }))
    .expect("CRD document");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create the Bucket CRD");
    let buckets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &bucket_resource());
    let served = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let buckets = buckets.clone();
        async move { buckets.list(&Default::default()).await.is_ok() }
    })
    .await;
    assert!(served.is_some(), "the Bucket CRD was never served");
}

async fn create_configmap(client: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    };
    api.create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("create configmap {name}: {e}"));
}

async fn patch_configmap(client: &kube::Client, name: &str, key: &str, value: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {key: value}})),
    )
    .await
    .unwrap_or_else(|e| panic!("patch configmap {name}: {e}"));
}

/// Commits on a notes ref of the bare repository (each note write is one).
fn note_commits(repo: &ConfigRepo, notes_ref: &str) -> usize {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo.bare())
        .args(["rev-list", "--count", notes_ref])
        .output()
        .expect("git rev-list");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `get` requests of the Bucket `name` in an apiserver's audit log.
fn bucket_reads(fleet: &ControlPlanes, cluster: &str, name: &str) -> usize {
    fleet
        .requests(cluster)
        .iter()
        .filter(|e| {
            e.verb == "get"
                && e.resource.as_deref() == Some("buckets")
                && e.name.as_deref() == Some(name)
                && e.subresource.is_none()
        })
        .count()
}

const CLAIM: &str = "---\napiVersion: refs.flotilla.example/v1\nkind: Bucket\nmetadata:\n  name: \"bucket-{{ cluster.metadata.name }}\"\n  namespace: default\nspec:\n  size: 1Gi\n";

const CONSUMER_CM: &str = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bucket-url\n  namespace: default\ndata:\n  url: \"{{ StorageBucket.status.url }}\"\n";

fn profiles(ticker: bool) -> String {
    let ticker = if ticker {
        "  - resource: {apiVersion: v1, kind: ConfigMap, name: ticker, namespace: default}\n    identifier: Ticker\n    optional: true\n"
    } else {
        ""
    };
    [
        profile_yaml(
            "claim",
            "  clusterRefs: [one]\n  policyRefs:\n  - {path: claims/bucket.yaml, template: true, deploymentType: Local}\n",
        ),
        profile_yaml(
            "consumer",
            &format!("  clusterRefs: [one]\n  templateResourceRefs:\n  - resource: {{apiVersion: refs.flotilla.example/v1, kind: Bucket, name: \"bucket-{{{{ cluster.metadata.name }}}}\", namespace: default}}\n    identifier: StorageBucket\n{ticker}  policyRefs:\n  - {{path: consumer/cm.yaml, template: true}}\n"),
        ),
        // Reads an object of the managed cluster itself, which appears later.
        profile_yaml(
            "target-copy",
            "  clusterRefs: [one]\n  templateResourceRefs:\n  - resource: {apiVersion: v1, kind: ConfigMap, name: local-source, namespace: default}\n    identifier: Local\n    cluster: target\n  policyRefs:\n  - {path: consumer/copy.yaml, template: true}\n",
        ),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_waits_for_the_claims_status_and_is_rerendered_by_the_watch() {
    let fleet = ControlPlanes::builder().names(&["mgmt", "one"]).start();
    let mgmt = fleet.client("mgmt").await;
    let one = fleet.client("one").await;
    install_bucket_crd(&mgmt).await;
    // An object the consumer reads (optionally) and the test touches to cause passes.
    create_configmap(&mgmt, "ticker", &[("n", "0")]).await;

    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("mgmt", "role: management"), ("one", "env: prod")]),
    )
    .write("claims/bucket.yaml", CLAIM)
    .write("consumer/cm.yaml", CONSUMER_CM)
    .write(
        "consumer/copy.yaml",
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: copied\n  namespace: default\ndata:\n  k: \"{{ Local.data.k }}\"\n",
    )
    .write("profiles/p.yaml", &profiles(true));
    let commit = repo.commit("claim and consumer");

    // The bare repository as a local directory: the daemon watches its refs, so a new commit is
    // seen at once (the poll interval is 60 s).
    let daemon = Daemon::spawn(&[
        "--repo".as_ref(),
        repo.bare().as_os_str(),
        "--kubeconfig-dir".as_ref(),
        fleet.dir().as_os_str(),
        "--cache-dir".as_ref(),
        repo.cache_dir().as_os_str(),
        "--management-cluster".as_ref(),
        "mgmt".as_ref(),
        "--interval".as_ref(),
        "60s".as_ref(),
    ]);
    let buckets: Api<DynamicObject> =
        Api::namespaced_with(mgmt.clone(), "default", &bucket_resource());

    // Stage one: the claim is created in the management cluster; the consumer is pending on
    // the claim's missing status (after the watch saw the claim appear).
    let consumer_state = |repo: &ConfigRepo| {
        repo.note("refs/notes/flotilla-state", &commit)
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .map(|state| state["clusters"]["one"]["profiles"]["consumer"].clone())
    };
    let pending = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        let state = consumer_state(&repo);
        let buckets = buckets.clone();
        async move {
            let not_set = state.is_some_and(|s| {
                s["status"] == "pending" && s["errors"].to_string().contains("is not set yet")
            });
            not_set && buckets.get_opt("bucket-one").await.ok().flatten().is_some()
        }
    })
    .await;
    assert!(
        pending.is_some(),
        "never pending on the claim's status: state {:?}\n{}",
        consumer_state(&repo),
        daemon.log()
    );
    eprintln!(
        "claim created and consumer pending on its status after {:?}",
        pending.unwrap_or_default()
    );
    let human = repo
        .note("refs/notes/flotilla", &commit)
        .expect("human note");
    assert!(
        human.contains("StorageBucket") && human.contains("bucket-one"),
        "the human note does not say why the consumer waits:\n{human}"
    );
    assert!(
        configmap(&one, "default", "bucket-url").await.is_none(),
        "a pending consumer applied its ConfigMap"
    );

    // While pending, passes (caused here by a watched object changing) do not rewrite the note.
    let notes_before = note_commits(&repo, "refs/notes/flotilla");
    let reads_before = bucket_reads(&fleet, "mgmt", "bucket-one");
    for n in 1..=3 {
        patch_configmap(&mgmt, "ticker", "n", &n.to_string()).await;
        let passed = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let reads = bucket_reads(&fleet, "mgmt", "bucket-one");
            async move { reads >= reads_before + n }
        })
        .await;
        assert!(
            passed.is_some(),
            "no pass after ticker change {n}:\n{}",
            daemon.log()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let passes = bucket_reads(&fleet, "mgmt", "bucket-one") - reads_before;
    assert_eq!(
        note_commits(&repo, "refs/notes/flotilla"),
        notes_before,
        "{passes} passes while pending rewrote the note:\n{}",
        daemon.log()
    );
    eprintln!("{passes} passes while pending, note not rewritten");

    // Stage two: the status is filled in; the watch re-renders the consumer.
    for url in ["s3://bucket-one/v1", "s3://bucket-one/v2"] {
        let started = Instant::now();
        let started_micros = support::now_micros();
        buckets
            .patch_status(
                "bucket-one",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"url": url}})),
            )
            .await
            .expect("patch the claim's status");
        let applied = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let one = one.clone();
            async move {
                configmap(&one, "default", "bucket-url")
                    .await
                    .is_some_and(|data| data.get("url").map(String::as_str) == Some(url))
            }
        })
        .await;
        assert!(
            applied.is_some(),
            "the consumer was not re-rendered with {url} within 30 s (interval is 60 s):\n{}",
            daemon.log()
        );
        // The apiserver's own clock: the first write of the ConfigMap after the status patch.
        let write = fleet
            .write_requests("one")
            .iter()
            .filter(|e| {
                e.resource.as_deref() == Some("configmaps")
                    && e.name.as_deref() == Some("bucket-url")
                    && !e.is_dry_run()
                    && e.received_micros() >= started_micros
            })
            .map(|e| e.received_micros())
            .min();
        eprintln!(
            "status.url = {url}: ConfigMap in the managed cluster after {:?} (status patch → ConfigMap read back, 50 ms polls); apply request received {} ms after the patch (audit log)",
            started.elapsed(),
            write.map_or("?".to_string(), |w| format!(
                "{:.1}",
                (w - started_micros) as f64 / 1000.0
            ))
        );
    }
    let state = consumer_state(&repo).expect("state note");
    assert!(
        state["status"] == "applied" || state["status"] == "inSync",
        "{state}"
    );

    // `cluster: target`: the object appears in the managed cluster; the watch there re-renders.
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["target-copy"]["status"], "pending",
        "{state}"
    );
    let started = Instant::now();
    create_configmap(&one, "local-source", &[("k", "from-one")]).await;
    let copied = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let one = one.clone();
        async move {
            configmap(&one, "default", "copied")
                .await
                .is_some_and(|d| d.get("k").map(String::as_str) == Some("from-one"))
        }
    })
    .await;
    assert!(
        copied.is_some(),
        "the target-cluster ref was not re-rendered within 30 s:\n{}",
        daemon.log()
    );
    eprintln!(
        "cluster: target object created: rendered into the cluster after {:?}",
        started.elapsed()
    );

    // A ref no longer read loses its watcher: once a commit drops the Ticker ref, changing the
    // ticker causes no pass.
    repo.write("profiles/p.yaml", &profiles(false));
    let second = repo.commit("consumer without the ticker");
    let synced = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let note = repo.note("refs/notes/flotilla-state", &second);
        async move { note.is_some() }
    })
    .await;
    assert!(
        synced.is_some(),
        "second commit not synced:\n{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads_before = bucket_reads(&fleet, "mgmt", "bucket-one");
    patch_configmap(&mgmt, "ticker", "n", "after").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bucket_reads(&fleet, "mgmt", "bucket-one"),
        reads_before,
        "a change of an object no longer read caused a pass:\n{}",
        daemon.log()
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_target_and_missing_refs_render_read_or_wait_and_the_fleet_proceeds() {
    let fleet = ControlPlanes::builder()
        .names(&["mgmt", "one", "two"])
        .start();
    let mgmt = fleet.client("mgmt").await;
    let one = fleet.client("one").await;
    // The same name in both clusters, different data: `cluster: target` must read `one`'s.
    create_configmap(&mgmt, "source", &[("k", "from-mgmt")]).await;
    create_configmap(&one, "source", &[("k", "from-target")]).await;
    let two = fleet.client("two").await;

    let manifest = |name: &str, value: &str| {
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  v: \"{value}\"\n"
        )
    };
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[
            ("mgmt", "role: management"),
            ("one", "env: prod"),
            ("two", "env: prod"),
        ]),
    )
    .write(
        "m/optional.yaml",
        &manifest(
            "optional-out",
            "{% if Maybe is defined %}{{ Maybe.data.k }}{% else %}absent{% endif %}",
        ),
    )
    .write("m/target.yaml", &manifest("target-out", "{{ Src.data.k }}"))
    .write("m/mgmt.yaml", &manifest("mgmt-out", "{{ Src.data.k }}"))
    .write("m/never.yaml", &manifest("never-out", "{{ Ghost.data.k }}"))
    .write("m/unserved.yaml", &manifest("unserved-out", "{{ G.spec }}"))
    .write("m/plain.yaml", &manifest("plain-out", "plain"))
    .write(
        "profiles/p.yaml",
        &[
            profile_yaml(
                "optional",
                "  clusterRefs: [one]\n  templateResourceRefs:\n  - resource: {apiVersion: v1, kind: ConfigMap, name: maybe, namespace: default}\n    identifier: Maybe\n    optional: true\n  policyRefs:\n  - {path: m/optional.yaml, template: true}\n",
            ),
            profile_yaml(
                "target",
                "  clusterRefs: [one]\n  templateResourceRefs:\n  - resource: {apiVersion: v1, kind: ConfigMap, name: source, namespace: default}\n    identifier: Src\n    cluster: target\n  policyRefs:\n  - {path: m/target.yaml, template: true}\n",
            ),
            profile_yaml(
                "management",
                "  clusterRefs: [one, two]\n  templateResourceRefs:\n  - resource: {apiVersion: v1, kind: ConfigMap, name: source, namespace: default}\n    identifier: Src\n  policyRefs:\n  - {path: m/mgmt.yaml, template: true}\n",
            ),
            profile_yaml(
                "never",
                "  clusterRefs: [one]\n  templateResourceRefs:\n  - resource: {apiVersion: v1, kind: ConfigMap, name: \"never-{{ cluster.metadata.name }}\", namespace: default}\n    identifier: Ghost\n  policyRefs:\n  - {path: m/never.yaml, template: true}\n",
            ),
            profile_yaml(
                "unserved",
                "  clusterRefs: [one]\n  templateResourceRefs:\n  - resource: {apiVersion: nothere.flotilla.example/v1, kind: Ghost, name: g}\n    identifier: G\n  policyRefs:\n  - {path: m/unserved.yaml, template: true}\n",
            ),
            profile_yaml(
                "plain",
                "  clusterRefs: [one]\n  policyRefs:\n  - {path: m/plain.yaml}\n",
            ),
        ]
        .concat(),
    );
    let commit = repo.commit("refs of every kind");
    let source_reads = |fleet: &ControlPlanes| {
        fleet
            .requests("mgmt")
            .iter()
            .filter(|e| {
                e.verb == "get"
                    && e.resource.as_deref() == Some("configmaps")
                    && e.name.as_deref() == Some("source")
            })
            .count()
    };
    let reads_before = source_reads(&fleet);
    let run = sync_once(&repo, &fleet, &["--management-cluster", "mgmt"]);
    eprintln!("sync --once exit {}:\n{}", run.code, run.stdout);
    // Two clusters read the same management object: one GET in the pass.
    let reads = source_reads(&fleet) - reads_before;
    eprintln!("GETs of the management object read by 2 clusters in one pass: {reads}");
    assert_eq!(reads, 1, "the pass did not share the read");
    assert_eq!(
        configmap(&two, "default", "mgmt-out")
            .await
            .and_then(|d| d.get("v").cloned())
            .as_deref(),
        Some("from-mgmt")
    );
    let state = repo.state(&commit);
    let profiles = &state["clusters"]["one"]["profiles"];
    let value = |name: &'static str| {
        let one = one.clone();
        async move {
            configmap(&one, "default", name)
                .await
                .and_then(|d| d.get("v").cloned())
        }
    };
    assert_eq!(
        value("optional-out").await.as_deref(),
        Some("absent"),
        "{state}"
    );
    assert_eq!(
        value("target-out").await.as_deref(),
        Some("from-target"),
        "{state}"
    );
    assert_eq!(
        value("mgmt-out").await.as_deref(),
        Some("from-mgmt"),
        "{state}"
    );
    assert_eq!(
        value("plain-out").await.as_deref(),
        Some("plain"),
        "{state}"
    );
    for pending in ["never", "unserved"] {
        assert_eq!(profiles[pending]["status"], "pending", "{pending}: {state}");
        assert!(
            value(if pending == "never" {
                "never-out"
            } else {
                "unserved-out"
            })
            .await
            .is_none(),
            "{pending} applied"
        );
    }
    assert!(
        profiles["never"]["errors"]
            .to_string()
            .contains("default/never-one"),
        "{state}"
    );
    for done in ["optional", "target", "management", "plain"] {
        assert_eq!(profiles[done]["status"], "applied", "{done}: {state}");
    }

    // The optional object appears: the next pass renders with it.
    create_configmap(&mgmt, "maybe", &[("k", "now-here")]).await;
    let run = sync_once(&repo, &fleet, &["--management-cluster", "mgmt"]);
    assert_eq!(
        value("optional-out").await.as_deref(),
        Some("now-here"),
        "{}",
        run.stdout
    );

    // `render` previews with the live objects.
    let out = flotilla()
        .args(["render", "--path"])
        .arg(repo.work())
        .args(["--cluster", "one", "--management-cluster", "mgmt"])
        .arg("--kubeconfig-dir")
        .arg(fleet.dir())
        .output()
        .expect("run flotilla render");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in ["v: from-target", "v: from-mgmt", "v: now-here", "v: plain"] {
        assert!(
            stdout.contains(expected),
            "render lacks {expected:?}:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert!(
        !stdout.contains("never-out") && !stdout.contains("unserved-out"),
        "{stdout}"
    );

    // A read that fails for another reason than "not found" (here: the management cluster is
    // down) fails the pairs that read there, naming the ref and the object; the rest proceeds.
    fleet.stop_cluster("mgmt");
    let run = sync_once(&repo, &fleet, &["--management-cluster", "mgmt"]);
    let state = repo.state(&commit);
    let profiles = &state["clusters"]["one"]["profiles"];
    assert_eq!(profiles["management"]["status"], "failed", "{state}");
    let errors = profiles["management"]["errors"].to_string();
    assert!(
        errors.contains("templateResourceRef Src")
            && errors.contains("default/source in cluster mgmt"),
        "{errors}"
    );
    assert!(
        !errors.contains("from-mgmt"),
        "object content in an error: {errors}"
    );
    for fine in ["target", "plain"] {
        assert_eq!(profiles[fine]["status"], "inSync", "{fine}: {state}");
    }
    eprintln!("management cluster down: {errors}\nexit {}", run.code);
}
