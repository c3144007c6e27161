//! kustomizationRefs end to end: the pinned kustomize binary builds an overlay from a real git
//! repository, `sync --once` applies it to real control planes with its targetNamespace, the
//! inventory records it so a resource dropped from the base is pruned, and a kustomization that
//! kustomize rejects (or that names a remote base) fails only its own profile.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use support::ControlPlanes;
use support::fleet::{
    ConfigRepo, Run, clusters_yaml, configmap, configmap_meta, configmap_yaml, profile_yaml,
    sync_once,
};

/// `--kustomize-bin` pointing at scripts/testbin.sh's pinned kustomize.
fn kustomize_bin() -> String {
    support::require_testbin(&["kustomize"]);
    support::testbin_dir()
        .join("kustomize")
        .display()
        .to_string()
}

fn sync(repo: &ConfigRepo, fleet: &ControlPlanes) -> Run {
    sync_once(repo, fleet, &["--kustomize-bin", &kustomize_bin()])
}

const BASE: &str = "\
resources:
- namespace.yaml
- settings.yaml
- extra.yaml
- deployment.yaml
";

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.k8s.io/pause:3.10
        envFrom:
        - configMapRef: {name: settings}
";

const OVERLAY: &str = "\
resources:
- ../../base
namePrefix: prod-
labels:
- pairs: {tier: prod}
patches:
- path: settings.yaml
";

/// A base (Namespace `web`, two ConfigMaps without a namespace, a Deployment scaled to zero)
/// and a prod overlay (prefix, label, patch), deployed by profile `web` to env=prod clusters.
fn web_repo(repo: &ConfigRepo) {
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[
            ("prod", "env: prod"),
            ("prod-b", "env: prod"),
            ("dev", "env: dev"),
        ]),
    )
    .write("kustomize/base/kustomization.yaml", BASE)
    .write(
        "kustomize/base/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
    )
    .write(
        "kustomize/base/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  LOG_LEVEL: debug\n",
    )
    .write(
        "kustomize/base/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: v\n",
    )
    .write("kustomize/base/deployment.yaml", DEPLOYMENT)
    .write("kustomize/overlays/prod/kustomization.yaml", OVERLAY)
    .write(
        "kustomize/overlays/prod/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  LOG_LEVEL: warn\n",
    )
    .write(
        "profiles/web.yaml",
        &profile_yaml(
            "web",
            "  clusterSelector: {matchLabels: {env: prod}}\n  kustomizationRefs:\n  - {path: kustomize/overlays/prod, targetNamespace: web}\n",
        ),
    );
}

/// The `Kind/namespace/name` keys of a profile's inventory ConfigMap.
async fn inventory_keys(client: &kube::Client, profile: &str) -> Vec<String> {
    let data = configmap(
        client,
        "flotilla-system",
        &format!("flotilla-inventory-{profile}"),
    )
    .await
    .unwrap_or_else(|| panic!("no inventory for {profile}"));
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(data.get("objects").expect("inventory has data.objects"))
            .expect("data.objects is a JSON list");
    let mut keys: Vec<String> = objects
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
    keys.sort();
    keys
}

/// The `millis` of every "kustomize build" log line (FLOTILLA_LOG=info), for the report.
fn build_times(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.contains("kustomize build"))
        .filter_map(|l| {
            let rest = &l[l.find("millis=")? + "millis=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overlay_is_applied_with_its_target_namespace_and_a_resource_dropped_from_the_base_is_pruned()
 {
    let fleet = ControlPlanes::builder()
        .names(&["prod", "prod-b", "dev"])
        .start();
    let repo = ConfigRepo::new();
    web_repo(&repo);
    let commit = repo.commit("web overlay");
    let run = sync(&repo, &fleet);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // Two clusters match; kustomize ran once for both (cached per commit, path, namespace).
    let times = build_times(&run.stderr);
    assert_eq!(times.len(), 1, "{}", run.stderr);
    eprintln!("kustomize build of the overlay: {times:?} ms");

    let prod = fleet.client("prod").await;
    let settings = configmap(&prod, "web", "prod-settings")
        .await
        .unwrap_or_else(|| panic!("prod-settings in web:\n{}", run.stdout));
    assert_eq!(
        settings.get("LOG_LEVEL").map(String::as_str),
        Some("warn"),
        "the overlay's patch"
    );
    let (labels, annotations) = configmap_meta(&prod, "web", "prod-settings")
        .await
        .expect("meta");
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("flotilla")
    );
    assert_eq!(labels.get("tier").map(String::as_str), Some("prod"));
    assert_eq!(
        annotations.get("flotilla.dev/profile").map(String::as_str),
        Some("web")
    );
    assert!(configmap(&prod, "web", "prod-extra").await.is_some());
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(prod.clone(), "web");
    let deployment = deployments
        .get_opt("prod-app")
        .await
        .expect("get deployment")
        .expect("Deployment web/prod-app");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(0));
    // kustomize rewrote the reference to the prefixed ConfigMap.
    let env_from = spec.template.spec.expect("pod spec").containers[0]
        .env_from
        .clone()
        .unwrap_or_default();
    assert_eq!(
        env_from[0].config_map_ref.as_ref().map(|r| r.name.as_str()),
        Some("prod-settings")
    );
    // The cluster-scoped Namespace got no namespace and kept its name (no prefix on it).
    let namespaces: kube::Api<Namespace> = kube::Api::all(prod.clone());
    assert!(namespaces.get_opt("web").await.expect("get ns").is_some());
    assert_eq!(
        inventory_keys(&prod, "web").await,
        vec![
            "ConfigMap/web/prod-extra",
            "ConfigMap/web/prod-settings",
            "Deployment/web/prod-app",
            "Namespace//web",
        ]
    );

    let prod_b = fleet.client("prod-b").await;
    assert!(configmap(&prod_b, "web", "prod-settings").await.is_some());

    // dev does not match the profile.
    let dev = fleet.client("dev").await;
    let namespaces: kube::Api<Namespace> = kube::Api::all(dev.clone());
    assert!(namespaces.get_opt("web").await.expect("get ns").is_none());

    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(
        note.contains("created ConfigMap/web/prod-settings"),
        "{note}"
    );
    assert!(
        note.contains("created Deployment.apps/web/prod-app"),
        "{note}"
    );
    assert_eq!(
        repo.state(&commit)["clusters"]["prod"]["profiles"]["web"]["status"],
        "applied"
    );

    // The same commit again: kustomize's output is unchanged, so nothing is written.
    let writes = fleet.write_requests("prod").len();
    let run = sync(&repo, &fleet);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        fleet.write_requests("prod").len(),
        writes,
        "writes in a no-op pass"
    );

    // A resource removed from the base is pruned through the overlay.
    repo.write(
        "kustomize/base/kustomization.yaml",
        &BASE.replace("- extra.yaml\n", ""),
    )
    .remove("kustomize/base/extra.yaml");
    let commit = repo.commit("drop extra from the base");
    let run = sync(&repo, &fleet);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        configmap(&prod, "web", "prod-extra").await.is_none(),
        "{}",
        run.stdout
    );
    assert!(configmap(&prod, "web", "prod-settings").await.is_some());
    assert!(
        !inventory_keys(&prod, "web")
            .await
            .contains(&"ConfigMap/web/prod-extra".to_string())
    );
    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(note.contains("pruned ConfigMap/web/prod-extra"), "{note}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_or_remote_kustomization_fails_only_its_own_profile() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let client = fleet.client("one").await;
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: prod")]))
        .write(
            "kustomize/fine/kustomization.yaml",
            "resources: [cm.yaml]\n",
        )
        .write(
            "kustomize/fine/cm.yaml",
            &configmap_yaml("ignored", "fine", &[("k", "v")]),
        )
        .write(
            "kustomize/broken/kustomization.yaml",
            "resources:\n- cm.yaml\n- missing.yaml\n",
        )
        .write(
            "kustomize/broken/cm.yaml",
            &configmap_yaml("default", "broken", &[("k", "v")]),
        )
        .write(
            "kustomize/remote/kustomization.yaml",
            "resources:\n- https://raw.githubusercontent.com/kubernetes-sigs/kustomize/master/examples/helloWorld/configMap.yaml\n",
        )
        .write(
            "profiles/p.yaml",
            &[
                profile_yaml(
                    "fine",
                    "  clusterSelector: {}\n  kustomizationRefs:\n  - {path: kustomize/fine, targetNamespace: default}\n",
                ),
                profile_yaml(
                    "broken",
                    "  clusterSelector: {}\n  kustomizationRefs:\n  - {path: kustomize/broken}\n",
                ),
                profile_yaml(
                    "remote",
                    "  clusterSelector: {}\n  kustomizationRefs:\n  - {path: kustomize/remote}\n",
                ),
            ]
            .concat(),
        );
    let commit = repo.commit("one fine, one broken, one remote kustomization");
    let run = sync(&repo, &fleet);
    assert_ne!(
        run.code, 0,
        "a failed profile fails the pass:\n{}",
        run.stdout
    );

    // The fine profile applied, into its targetNamespace (not the one in the file).
    assert!(
        configmap(&client, "default", "fine").await.is_some(),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(configmap(&client, "ignored", "fine").await.is_none());
    // The broken one applied nothing, not even its valid resource.
    assert!(configmap(&client, "default", "broken").await.is_none());

    let note = repo.note("refs/notes/flotilla", &commit).expect("note");
    assert!(note.contains("### broken (Continuous): FAILED"), "{note}");
    assert!(note.contains("### remote (Continuous): FAILED"), "{note}");
    let error = |needle: &str| -> String {
        note.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{note}"))
            .to_string()
    };
    // kustomize's own message, with paths relative to the config root (no temporary dir).
    let broken = error("kustomizationRef kustomize/broken: kustomize build failed");
    assert!(broken.contains("profiles/p.yaml:"), "{broken}");
    assert!(broken.contains("missing.yaml"), "{broken}");
    assert!(broken.contains("no such file or directory"), "{broken}");
    assert!(!broken.contains("flotilla-kustomize-"), "{broken}");
    let remote = error("kustomizationRef kustomize/remote:");
    assert!(
        remote.contains("kustomize/remote/kustomization.yaml: resources entry")
            && remote.contains("is remote"),
        "{remote}"
    );

    let state = repo.state(&commit);
    let profiles = &state["clusters"]["one"]["profiles"];
    assert_eq!(profiles["fine"]["status"], "applied", "{state:#}");
    assert_eq!(profiles["broken"]["status"], "failed", "{state:#}");
    assert_eq!(profiles["remote"]["status"], "failed", "{state:#}");
    assert_eq!(state["clusters"]["one"]["status"], "degraded", "{state:#}");
}
