//! The Helm test infrastructure itself, proved with the real pinned helm (v4.3.1) against real
//! control planes, a real http chart repository and a real OCI registry (distribution v3) on
//! loopback: installs from both sources show up in `helm list` with their chart versions, release
//! state lives in `sh.helm.release.v1.<name>.v<N>` Secrets, an unchanged `upgrade --install`
//! still makes a revision, capabilities come from the cluster, hooks fail fast or by timeout,
//! and both sources can require Basic auth. Timings are printed (`--nocapture`) for the report.
//!
//! No `--wait` anywhere: these control planes have no nodes and no controllers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams};
use kube::discovery::ApiResource;
use support::ControlPlanes;
use support::helm::{
    CRD_GROUP, CRD_KIND, CRD_NAME, CRD_PLURAL, Chart, ChartRepo, FailingHook, Helm,
    REGISTRY_PASSWORD, REGISTRY_USER, Registry, decode_release, push_oci,
};

async fn configmap_data(client: &kube::Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), ns);
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("get configmap {ns}/{name}: {e}"))
        .data
        .unwrap_or_default()
}

/// helm's release Secrets in `ns` (label `owner=helm`), sorted by name.
async fn release_secrets(client: &kube::Client, ns: &str) -> Vec<Secret> {
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), ns);
    let mut secrets = api
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .expect("list release secrets")
        .items;
    secrets.sort_by_key(|s| s.metadata.name.clone());
    secrets
}

fn labels(secret: &Secret) -> BTreeMap<String, String> {
    secret.metadata.labels.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn charts_from_an_http_repository_and_an_oci_registry_install_as_real_releases() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let helm = Helm::with_kubeconfig(fleet.kubeconfig("one"));

    let repo = ChartRepo::start();
    let v1 = Chart::new("demo", "1.0.0");
    let v2 = Chart::new("demo", "1.1.0").app_version("1.1");
    repo.add_chart(&v1);
    repo.add_chart(&v2);
    let index = std::fs::read_to_string(repo.root().join("index.yaml")).expect("index.yaml");
    assert!(
        index.contains(&format!("{}/demo-1.0.0.tgz", repo.url())) && index.contains("digest: "),
        "index.yaml has absolute URLs and digests:\n{index}"
    );

    let registry = Registry::start();
    let oci_chart = Chart::new("ocidemo", "2.0.0");
    let digest = push_oci(&oci_chart, &registry);
    assert!(digest.starts_with("sha256:"), "{digest}");

    // From the http repository, the older of two versions.
    let url = repo.url();
    let run = helm.run(&["install", "r", "demo", "--repo", &url, "--version", "1.0.0"]);
    run.expect_success();
    eprintln!("helm install from the http repository: {:?}", run.elapsed);
    assert_eq!(repo.index_fetches(), 1, "{:?}", repo.requests());
    assert_eq!(repo.chart_downloads(&v1), 1, "{:?}", repo.requests());
    assert_eq!(repo.chart_downloads(&v2), 0);

    // From the OCI registry: helm v4 needs --plain-http for an http registry, even on loopback.
    let chart_ref = registry.chart_ref("ocidemo");
    let refused = helm.run(&["install", "r2", &chart_ref, "--version", "2.0.0"]);
    assert!(
        refused
            .expect_failure()
            .contains("server gave HTTP response to HTTPS client"),
        "{}",
        refused.stderr
    );
    let run = helm.run(&[
        "install",
        "r2",
        &chart_ref,
        "--version",
        "2.0.0",
        "--plain-http",
        "--namespace",
        "oci",
        "--create-namespace",
        "--set",
        "greeting=from-oci",
    ]);
    run.expect_success();
    eprintln!("helm install from the OCI registry: {:?}", run.elapsed);
    let requests = registry.wait_for_requests(|_| registry.chart_downloads("ocidemo") >= 1);
    assert_eq!(registry.chart_downloads("ocidemo"), 1, "{requests:?}");

    let releases = helm.list();
    let summary: Vec<(&str, &str, &str, u32, &str)> = releases
        .iter()
        .map(|r| {
            (
                r.namespace.as_str(),
                r.name.as_str(),
                r.chart.as_str(),
                r.revision,
                r.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("default", "r", "demo-1.0.0", 1, "deployed"),
            ("oci", "r2", "ocidemo-2.0.0", 1, "deployed"),
        ]
    );

    // The default templates rendered against the real cluster.
    let data = configmap_data(&client, "default", "r-demo").await;
    assert_eq!(data["greeting"], "hello");
    assert_eq!(data["chartVersion"], "1.0.0");
    assert_eq!(data["kubeVersion"], fleet.cluster("one").version);
    let data = configmap_data(&client, "oci", "r2-ocidemo").await;
    assert_eq!(data["greeting"], "from-oci");
    assert_eq!(data["releaseNamespace"], "oci");

    // Release state: one Secret per revision, labelled for a cheap label-selector read.
    let secrets = release_secrets(&client, "default").await;
    let names: Vec<String> = secrets
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["sh.helm.release.v1.r.v1"]);
    let secret = &secrets[0];
    assert_eq!(secret.type_.as_deref(), Some("helm.sh/release.v1"));
    let l = labels(secret);
    assert_eq!(l["owner"], "helm");
    assert_eq!(l["name"], "r");
    assert_eq!(l["status"], "deployed");
    assert_eq!(l["version"], "1");
    eprintln!("release secret labels: {l:?}");
    let payload = &secret.data.as_ref().expect("secret data")["release"].0;
    let release = decode_release(payload);
    assert_eq!(release["name"], "r");
    assert_eq!(release["version"], 1);
    assert_eq!(release["chart"]["metadata"]["version"], "1.0.0");
    assert_eq!(release["info"]["status"], "deployed");
    // No user-supplied values: no `config` at all.
    assert!(release.get("config").is_none(), "{}", release["config"]);
    eprintln!(
        "release payload keys: {:?}, apply_method {}",
        release.as_object().map(|o| o.keys().collect::<Vec<_>>()),
        release["apply_method"]
    );
    let oci_secrets = release_secrets(&client, "oci").await;
    let oci_release = decode_release(&oci_secrets[0].data.as_ref().expect("data")["release"].0);
    assert_eq!(
        oci_release["config"],
        serde_json::json!({"greeting": "from-oci"})
    );

    // An unchanged `upgrade --install` (same chart, version and values) still makes a revision.
    let before = repo.request_count();
    let run = helm.run(&[
        "upgrade",
        "--install",
        "r",
        "demo",
        "--repo",
        &url,
        "--version",
        "1.0.0",
    ]);
    run.expect_success();
    eprintln!("unchanged helm upgrade --install: {:?}", run.elapsed);
    assert!(run.stdout.contains("REVISION: 2"), "{}", run.stdout);
    // helm fetched the index and the chart again: it caches neither for --repo.
    assert_eq!(repo.request_count() - before, 2, "{:?}", repo.requests());
    assert_eq!(repo.chart_downloads(&v1), 2);
    let secrets = release_secrets(&client, "default").await;
    let revisions: Vec<(String, String)> = secrets
        .iter()
        .map(|s| {
            let l = labels(s);
            (l["version"].clone(), l["status"].clone())
        })
        .collect();
    assert_eq!(
        revisions,
        vec![
            ("1".to_string(), "superseded".to_string()),
            ("2".to_string(), "deployed".to_string())
        ]
    );

    // Upgrade to the newer version; the ConfigMap follows.
    helm.ok(&[
        "upgrade",
        "--install",
        "r",
        "demo",
        "--repo",
        &url,
        "--version",
        "1.1.0",
    ]);
    assert_eq!(
        helm.release("default", "r").expect("release r").chart,
        "demo-1.1.0"
    );
    assert_eq!(
        configmap_data(&client, "default", "r-demo").await["appVersion"],
        "1.1"
    );

    // A second OCI pull downloads again too (helm v4's content cache does not avoid it).
    let pulled = tempfile::tempdir().expect("tempdir");
    let dest = pulled.path().to_str().expect("utf-8");
    let run = Helm::new().run(&[
        "pull",
        &chart_ref,
        "--version",
        "2.0.0",
        "--plain-http",
        "--destination",
        dest,
    ]);
    run.expect_success();
    assert!(pulled.path().join("ocidemo-2.0.0.tgz").is_file());
    registry.wait_for_requests(|_| registry.chart_downloads("ocidemo") >= 2);
    assert_eq!(registry.chart_downloads("ocidemo"), 2);

    // Uninstall removes every revision's Secret.
    helm.ok(&["uninstall", "r"]);
    assert!(release_secrets(&client, "default").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_come_from_the_cluster_and_hooks_fail_fast_or_by_timeout() {
    let fleet = ControlPlanes::builder()
        .names(&["old"])
        .versions(&["1.34"])
        .start();
    let client = fleet.client("old").await;
    let cluster_version = fleet.cluster("old").version.clone();
    let helm = Helm::with_kubeconfig(fleet.kubeconfig("old"));
    let charts = tempfile::tempdir().expect("tempdir");
    let demo = Chart::new("demo", "1.0.0").write_to(charts.path());
    let demo = demo.to_str().expect("utf-8");

    // install/upgrade take the kube version from the cluster (they have no --kube-version).
    helm.ok(&["install", "caps", demo]);
    assert_eq!(
        configmap_data(&client, "default", "caps-demo").await["kubeVersion"],
        cluster_version
    );
    let install_help = helm.ok(&["install", "--help"]);
    assert!(!install_help.contains("--kube-version"));
    // `helm template` is client-only: helm's built-in default unless --kube-version is given;
    // `--dry-run=server` asks the cluster and then ignores --kube-version.
    let rendered = |args: &[&str]| -> String {
        let mut all = vec!["template", "t", demo];
        all.extend_from_slice(args);
        let out = helm.ok(&all);
        out.lines()
            .find_map(|l| l.trim().strip_prefix("kubeVersion: "))
            .unwrap_or_else(|| panic!("no kubeVersion in:\n{out}"))
            .trim_matches('"')
            .to_string()
    };
    let default_version = rendered(&[]);
    eprintln!("helm template without --kube-version renders kubeVersion {default_version}");
    assert_ne!(default_version, cluster_version);
    assert_eq!(
        rendered(&["--kube-version", &cluster_version]),
        cluster_version
    );
    assert_eq!(rendered(&["--kube-version", "1.34.4"]), "v1.34.4");
    assert_eq!(
        rendered(&["--dry-run=server", "--kube-version", "1.30.0"]),
        cluster_version
    );

    // A kubeVersion constraint is checked against the cluster.
    let newer_only = Chart::new("newer", "1.0.0")
        .kube_version(">=1.35.0-0")
        .write_to(charts.path());
    let refused = helm.run(&["install", "newer", newer_only.to_str().expect("utf-8")]);
    assert!(
        refused.expect_failure().contains(
            "chart requires kubeVersion: >=1.35.0-0 which is incompatible with Kubernetes v1.34"
        ),
        "{}",
        refused.stderr
    );

    // A CRD in crds/ is installed first, and the custom resource in the templates is created.
    let crd_chart = Chart::new("widgets", "1.0.0")
        .with_crd()
        .write_to(charts.path());
    let crd_chart = crd_chart.to_str().expect("utf-8");
    let run = helm.run(&["install", "w", crd_chart]);
    run.expect_success();
    eprintln!("helm install of a chart with a CRD: {:?}", run.elapsed);
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    crds.get(CRD_NAME).await.expect("the chart's CRD");
    let resource = ApiResource {
        group: CRD_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{CRD_GROUP}/v1"),
        kind: CRD_KIND.into(),
        plural: CRD_PLURAL.into(),
    };
    let widgets: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), "default", &resource);
    let widget = widgets.get("w-widgets").await.expect("the chart's Widget");
    eprintln!(
        "Capabilities.APIVersions.Has the chart's own CRD at render: {}",
        widget.data["spec"]["crdKnownAtRender"]
    );

    // A hook the API server rejects fails the install at once.
    let rejected = Chart::new("hookbad", "1.0.0")
        .failing_hook(FailingHook::Rejected)
        .write_to(charts.path());
    let rejected = rejected.to_str().expect("utf-8");
    let run = helm.run(&["install", "hb", rejected]);
    let message = run.expect_failure();
    eprintln!(
        "rejected hook: failed after {:?}: {}",
        run.elapsed,
        message.trim()
    );
    assert!(message.contains("failed pre-install"), "{message}");
    assert!(message.contains("is invalid"), "{message}");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    let failed = helm
        .release("default", "hb")
        .expect("the failed release is listed");
    assert_eq!((failed.status.as_str(), failed.revision), ("failed", 1));
    // upgrade --install over a failed first install is an upgrade (revision 2), not an error.
    let run = helm.run(&["upgrade", "--install", "hb", demo]);
    run.expect_success();
    assert!(run.stdout.contains("REVISION: 2"), "{}", run.stdout);
    // And a failing pre-upgrade hook leaves a failed revision 3 over the deployed revision 2.
    let message = helm
        .run(&["upgrade", "--install", "hb", rejected])
        .expect_failure()
        .to_string();
    assert!(message.contains("pre-upgrade hooks failed"), "{message}");
    let secrets = release_secrets(&client, "default").await;
    let mut hb: Vec<(String, String)> = secrets
        .iter()
        .map(labels)
        .filter(|l| l["name"] == "hb")
        .map(|l| (l["version"].clone(), l["status"].clone()))
        .collect();
    hb.sort();
    assert_eq!(
        hb,
        vec![
            ("1".to_string(), "superseded".to_string()),
            ("2".to_string(), "deployed".to_string()),
            ("3".to_string(), "failed".to_string()),
        ]
    );
    assert_eq!(helm.release("default", "hb").expect("hb").status, "failed");

    // A Job hook never completes here: helm fails when its --timeout expires.
    let stuck = Chart::new("hookjob", "1.0.0")
        .failing_hook(FailingHook::NeverCompletes)
        .write_to(charts.path());
    let run = helm.run(&[
        "install",
        "hj",
        stuck.to_str().expect("utf-8"),
        "--timeout",
        "3s",
    ]);
    let message = run.expect_failure();
    eprintln!(
        "never-completing Job hook with --timeout 3s: failed after {:?}: {}",
        run.elapsed,
        message.trim()
    );
    assert!(message.contains("failed pre-install"), "{message}");
    assert!(run.elapsed >= Duration::from_secs(3), "{:?}", run.elapsed);

    // A template that fails to render: helm's message, nothing recorded.
    let broken = Chart::new("broken", "1.0.0")
        .failing_render("broken on purpose")
        .write_to(charts.path());
    let run = helm.run(&["install", "br", broken.to_str().expect("utf-8")]);
    assert!(
        run.expect_failure().contains("broken on purpose"),
        "{}",
        run.stderr
    );
    assert!(helm.release("default", "br").is_none());
}

#[test]
fn the_http_repository_and_the_registry_can_require_basic_auth() {
    let chart = Chart::new("private", "0.1.0");

    let repo = ChartRepo::start_with_basic_auth("reader", "s3cret");
    repo.add_chart(&chart);
    let url = repo.url();
    let helm = Helm::new();
    let denied = helm.run(&["template", "x", "private", "--repo", &url]);
    let message = denied.expect_failure();
    assert!(message.contains("401"), "{message}");
    let out = helm.ok(&[
        "template",
        "x",
        "private",
        "--repo",
        &url,
        "--version",
        "0.1.0",
        "--username",
        "reader",
        "--password",
        "s3cret",
    ]);
    assert!(out.contains("chartVersion: \"0.1.0\""), "{out}");
    // The credentials went to the index and to the chart (same host).
    let authed: Vec<_> = repo
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| (r.path, r.user))
        .collect();
    assert_eq!(
        authed,
        vec![
            ("/index.yaml".to_string(), Some("reader".to_string())),
            ("/private-0.1.0.tgz".to_string(), Some("reader".to_string())),
        ]
    );

    let registry = Registry::start_with_basic_auth();
    push_oci(&chart, &registry);
    let chart_ref = registry.chart_ref("private");
    let denied = helm.run(&[
        "template",
        "x",
        &chart_ref,
        "--version",
        "0.1.0",
        "--plain-http",
    ]);
    let message = denied.expect_failure();
    eprintln!("OCI without credentials: {}", message.trim());
    let out = helm.ok(&[
        "template",
        "x",
        &chart_ref,
        "--version",
        "0.1.0",
        "--plain-http",
        "--username",
        REGISTRY_USER,
        "--password",
        REGISTRY_PASSWORD,
    ]);
    assert!(out.contains("chartVersion: \"0.1.0\""), "{out}");
    // `helm registry login` stores the credentials in the private config home instead.
    let login = Helm::new();
    login.ok(&[
        "registry",
        "login",
        registry.host(),
        "--plain-http",
        "--username",
        REGISTRY_USER,
        "--password",
        REGISTRY_PASSWORD,
    ]);
    login.ok(&[
        "template",
        "x",
        &chart_ref,
        "--version",
        "0.1.0",
        "--plain-http",
    ]);

    // An outage, then an unreachable repository.
    repo.force_status(Some(503));
    let message = helm
        .run(&[
            "template",
            "x",
            "private",
            "--repo",
            &url,
            "--username",
            "reader",
            "--password",
            "s3cret",
        ])
        .expect_failure()
        .to_string();
    assert!(message.contains("503"), "{message}");
    drop(repo);
    let message = helm
        .run(&["template", "x", "private", "--repo", &url])
        .expect_failure()
        .to_string();
    eprintln!("unreachable repository: {}", message.trim());
    assert!(message.contains("connection refused"), "{message}");
}
