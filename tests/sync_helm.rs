//! helmCharts end to end: `flotilla sync --once` with the real pinned helm (v4) installs charts
//! from a real http chart repository and a real OCI registry on loopback into real control
//! planes, as real releases (`helm list`), and keeps them in line with Git: by label, values
//! templated per cluster, values change, upgrade, downgrade, a no-op pass that starts no helm
//! process, Uninstall, withdraw on a label change, a release two profiles want (tier), helm's
//! own errors failing only their profile, LeavePolicies, credentials (from sources/ or from a
//! Secret of the management cluster).
//!
//! `--helm-bin` points at a wrapper script that logs every helm invocation, which is how the
//! tests see that a no-op pass runs no helm at all.

mod support;

use std::path::PathBuf;
use std::time::Instant;

use support::ControlPlanes;
use support::fleet::{ConfigRepo, Run, clusters_yaml, profile_yaml, sync_once};
use support::helm::{
    Chart, ChartRepo, FailingHook, Helm, REGISTRY_PASSWORD, REGISTRY_USER, Registry, push_oci,
};

/// A `--helm-bin` wrapper around the pinned helm that appends each invocation's arguments to a
/// log, one line per process.
struct LoggingHelm {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
}

impl LoggingHelm {
    fn new() -> LoggingHelm {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix("flotilla-helm-wrapper-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("calls.log");
        let bin = dir.path().join("helm");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                support::helm::helm_bin().display()
            ),
        )
        .expect("write wrapper");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        LoggingHelm {
            _dir: dir,
            bin,
            log,
        }
    }

    /// Every helm invocation so far (its arguments).
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn sync(repo: &ConfigRepo, fleet: &ControlPlanes, helm: &LoggingHelm, extra: &[&str]) -> Run {
    let bin = helm.bin.display().to_string();
    let mut args = vec!["--helm-bin", bin.as_str()];
    args.extend_from_slice(extra);
    sync_once(repo, fleet, &args)
}

fn note(repo: &ConfigRepo, commit: &str) -> String {
    repo.note("refs/notes/flotilla", commit)
        .unwrap_or_else(|| panic!("no note on {commit}"))
}

/// `helm get values <name> -n <ns> -o json` on one cluster.
fn values(fleet: &ControlPlanes, cluster: &str, namespace: &str, name: &str) -> serde_json::Value {
    let helm = Helm::with_kubeconfig(fleet.kubeconfig(cluster));
    let out = helm.ok(&["get", "values", name, "-n", namespace, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("helm get values: {e}: {out}"))
}

/// The chart label (`demo-1.0.0`) of a release on a cluster, `None` when helm does not list it.
fn listed(fleet: &ControlPlanes, cluster: &str, namespace: &str, name: &str) -> Option<String> {
    Helm::with_kubeconfig(fleet.kubeconfig(cluster))
        .release(namespace, name)
        .map(|r| format!("{} {}", r.chart, r.status))
}

fn helm_chart(repository: &str, chart: &str, version: &str, release: &str, extra: &str) -> String {
    format!(
        "  - repositoryURL: {repository}\n    repositoryName: charts\n    chartName: charts/{chart}\n    chartVersion: {version}\n    releaseName: {release}\n    releaseNamespace: apps\n{extra}"
    )
}

fn web_profile(repository: &str, version: &str, values: &str, action: &str) -> String {
    profile_yaml(
        "web",
        &format!(
            "  clusterSelector: {{matchLabels: {{env: prod}}}}\n  helmCharts:\n{}",
            helm_chart(
                repository,
                "demo",
                version,
                "web",
                &format!("    helmChartAction: {action}\n    values: |\n{values}"),
            )
        ),
    )
}

fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "sync failed:\n{}", run.stderr);
}

fn write_requests(fleet: &ControlPlanes) -> usize {
    fleet
        .names()
        .iter()
        .map(|n| fleet.write_requests(n).len())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_follow_git_by_label_with_per_cluster_values_upgrades_downgrades_and_withdraw() {
    let fleet = ControlPlanes::builder()
        .names(&["prod-a", "prod-b", "dev"])
        .start();
    let charts = ChartRepo::start();
    let v1 = Chart::new("demo", "1.0.0");
    let v2 = Chart::new("demo", "1.1.0");
    charts.add_chart(&v1);
    charts.add_chart(&v2);
    let url = charts.url();
    let helm = LoggingHelm::new();
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[
            ("prod-a", "env: prod"),
            ("prod-b", "env: prod"),
            ("dev", "env: dev"),
        ]),
    );
    let templated = "      greeting: hi-{{ cluster.metadata.name }}\n";
    repo.write(
        "profiles/web.yaml",
        &web_profile(&url, "1.0.0", templated, "Install"),
    );
    let c1 = repo.commit("web 1.0.0");

    // Install by label on exactly the matching clusters, values templated per cluster.
    let started = Instant::now();
    let run = sync(&repo, &fleet, &helm, &[]);
    let install_time = started.elapsed();
    assert_ok(&run);
    for cluster in ["prod-a", "prod-b"] {
        assert_eq!(
            listed(&fleet, cluster, "apps", "web").as_deref(),
            Some("demo-1.0.0 deployed"),
            "{cluster}"
        );
        assert_eq!(
            values(&fleet, cluster, "apps", "web")["greeting"],
            format!("hi-{cluster}")
        );
    }
    assert_eq!(listed(&fleet, "dev", "apps", "web"), None);
    let text = note(&repo, &c1);
    assert!(
        text.contains("### web (Continuous): applied — 1 release installed\nhelm release apps/web: installed demo 1.0.0\n"),
        "{text}"
    );
    assert!(text.contains("+greeting: hi-prod-a"), "{text}");
    assert!(
        text.contains("+++ desired/ConfigMap//web-demo"),
        "the manifest diff shows the chart's objects:\n{text}"
    );
    let state = repo.state(&c1);
    let hash = &state["clusters"]["prod-a"]["profiles"]["web"]["objects"]["helm:apps/web"];
    assert!(hash.as_str().is_some_and(|h| h.len() == 24), "{state}");
    // Fetched once for both clusters; installed by one helm process per cluster.
    assert_eq!(charts.chart_downloads(&v1), 1, "{:?}", charts.requests());
    let upgrades = helm
        .calls()
        .iter()
        .filter(|c| c.starts_with("upgrade --install web "))
        .count();
    assert_eq!(upgrades, 2, "{:?}", helm.calls());
    eprintln!("first pass (fetch + 2 installs): {install_time:?}");

    // A no-op pass starts no helm process and writes nothing.
    helm.clear();
    let writes = write_requests(&fleet);
    let started = Instant::now();
    let run = sync(&repo, &fleet, &helm, &[]);
    let noop_time = started.elapsed();
    assert_ok(&run);
    assert_eq!(helm.calls(), Vec::<String>::new(), "a no-op pass ran helm");
    assert_eq!(write_requests(&fleet), writes, "a no-op pass wrote");
    eprintln!("no-op pass over 2 releases: {noop_time:?}");

    // Values change → upgrade with the new values, and the note's values diff.
    repo.write(
        "profiles/web.yaml",
        &web_profile(
            &url,
            "1.0.0",
            "      greeting: hey-{{ cluster.metadata.name }}\n      extra: {tier: gold}\n",
            "Install",
        ),
    );
    let c2 = repo.commit("web values");
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(
        values(&fleet, "prod-b", "apps", "web")["greeting"],
        "hey-prod-b"
    );
    let text = note(&repo, &c2);
    assert!(
        text.contains("helm release apps/web: values changed (demo 1.0.0)"),
        "{text}"
    );
    assert!(
        text.contains("-greeting: hi-prod-a\n+extra:\n+  tier: gold\n+greeting: hey-prod-a"),
        "values diff:\n{text}"
    );
    assert!(
        text.contains("+  extra.tier: gold"),
        "manifest diff:\n{text}"
    );

    // Version bump → upgrade.
    repo.write(
        "profiles/web.yaml",
        &web_profile(&url, "1.1.0", templated, "Install"),
    );
    let c3 = repo.commit("web 1.1.0");
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(
        listed(&fleet, "prod-a", "apps", "web").as_deref(),
        Some("demo-1.1.0 deployed")
    );
    let text = note(&repo, &c3);
    assert!(
        text.contains("helm release apps/web: upgraded demo 1.0.0 → 1.1.0"),
        "{text}"
    );

    // Version back → downgrade.
    repo.write(
        "profiles/web.yaml",
        &web_profile(&url, "1.0.0", templated, "Install"),
    );
    let c4 = repo.commit("web back to 1.0.0");
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(
        listed(&fleet, "prod-b", "apps", "web").as_deref(),
        Some("demo-1.0.0 deployed")
    );
    let text = note(&repo, &c4);
    assert!(
        text.contains("helm release apps/web: downgraded demo 1.1.0 → 1.0.0"),
        "{text}"
    );
    // Each version was downloaded once over the whole test.
    assert_eq!(charts.chart_downloads(&v1), 1);
    assert_eq!(charts.chart_downloads(&v2), 1);

    // A release changed behind flotilla's back is put back.
    Helm::with_kubeconfig(fleet.kubeconfig("prod-a")).ok(&["uninstall", "web", "-n", "apps"]);
    helm.clear();
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(
        listed(&fleet, "prod-a", "apps", "web").as_deref(),
        Some("demo-1.0.0 deployed")
    );
    assert_eq!(
        helm.calls()
            .iter()
            .filter(|c| c.starts_with("upgrade"))
            .count(),
        1,
        "only the missing release is reinstalled: {:?}",
        helm.calls()
    );

    // Withdraw on a label change: prod-b stops matching, its release is uninstalled.
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[
            ("prod-a", "env: prod"),
            ("prod-b", "env: staging"),
            ("dev", "env: dev"),
        ]),
    );
    let c5 = repo.commit("prod-b leaves prod");
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(listed(&fleet, "prod-b", "apps", "web"), None);
    assert!(listed(&fleet, "prod-a", "apps", "web").is_some());
    let text = note(&repo, &c5);
    assert!(
        text.contains("helm release apps/web: uninstalled (charts/demo 1.0.0)"),
        "{text}"
    );
    let client = fleet.client("prod-b").await;
    assert!(
        support::fleet::configmap(&client, "flotilla-system", "flotilla-inventory-web")
            .await
            .is_none(),
        "the inventory goes with the withdrawn profile"
    );

    // helmChartAction: Uninstall removes the release where it is installed.
    repo.write(
        "profiles/web.yaml",
        &web_profile(&url, "1.0.0", templated, "Uninstall"),
    );
    let c6 = repo.commit("uninstall web");
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(listed(&fleet, "prod-a", "apps", "web"), None);
    let text = note(&repo, &c6);
    assert!(
        text.contains("helm release apps/web: uninstalled"),
        "{text}"
    );
    // And nothing is left for helm to do.
    helm.clear();
    assert_ok(&sync(&repo, &fleet, &helm, &[]));
    assert_eq!(helm.calls(), Vec::<String>::new());
}

/// Sources of the second test's profiles, by name.
fn profiles_with_errors(
    http: &str,
    oci: &str,
    private_http: &str,
    oci_extra: &str,
) -> Vec<(&'static str, String)> {
    let profile = |name: &str, tier: u32, charts: String| {
        profile_yaml(
            name,
            &format!("  clusterRefs: [one]\n  tier: {tier}\n  helmCharts:\n{charts}"),
        )
    };
    vec![
        (
            "oci",
            profile(
                "oci",
                100,
                format!(
                    "  - repositoryURL: {oci}\n    repositoryName: charts\n    chartName: charts/ocidemo\n    chartVersion: 2.0.0\n    releaseName: from-oci\n    releaseNamespace: apps\n{oci_extra}"
                ),
            ),
        ),
        (
            "private",
            profile(
                "private",
                100,
                helm_chart(
                    private_http,
                    "demo",
                    "1.0.0",
                    "private",
                    "    registryCredentialsConfig:\n      credentials: {name: chart-creds}\n",
                ),
            ),
        ),
        (
            "winner",
            profile(
                "winner",
                10,
                helm_chart(
                    http,
                    "demo",
                    "1.0.0",
                    "shared",
                    "    values: |\n      greeting: from-winner\n",
                ),
            ),
        ),
        (
            "loser",
            profile(
                "loser",
                100,
                helm_chart(
                    http,
                    "demo",
                    "1.0.0",
                    "shared",
                    "    values: |\n      greeting: from-loser\n",
                ),
            ),
        ),
        (
            "unknown-version",
            profile(
                "unknown-version",
                100,
                helm_chart(http, "demo", "9.9.9", "nine", ""),
            ),
        ),
        (
            "unreachable",
            profile(
                "unreachable",
                100,
                helm_chart("http://127.0.0.1:9/charts", "demo", "1.0.0", "gone", ""),
            ),
        ),
        (
            "bad-render",
            profile(
                "bad-render",
                100,
                helm_chart(http, "broken", "1.0.0", "broken", ""),
            ),
        ),
        (
            "bad-hook",
            profile(
                "bad-hook",
                100,
                helm_chart(http, "hooked", "1.0.0", "hooked", ""),
            ),
        ),
        (
            "slow-hook",
            profile(
                "slow-hook",
                100,
                helm_chart(http, "slow", "1.0.0", "slow", ""),
            ),
        ),
    ]
}

fn write_profiles(repo: &ConfigRepo, profiles: &[(&str, String)]) {
    for (name, text) in profiles {
        repo.write(&format!("profiles/{name}.yaml"), text);
    }
}

fn section<'a>(note: &'a str, profile: &str) -> &'a str {
    let start = note
        .find(&format!("### {profile} ("))
        .unwrap_or_else(|| panic!("no section for {profile}:\n{note}"));
    let rest = &note[start..];
    let end = rest[4..].find("\n### ").map_or(rest.len(), |i| i + 5);
    &rest[..end]
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_credentials_conflicts_and_helm_errors_fail_only_their_profile() {
    let fleet = ControlPlanes::builder().names(&["one"]).start();
    let charts = ChartRepo::start();
    charts.add_chart(&Chart::new("demo", "1.0.0"));
    charts.add_chart(&Chart::new("broken", "1.0.0").failing_render("broken on purpose"));
    charts.add_chart(&Chart::new("hooked", "1.0.0").failing_hook(FailingHook::Rejected));
    charts.add_chart(&Chart::new("slow", "1.0.0").failing_hook(FailingHook::NeverCompletes));
    // A chart whose archive no longer matches the digest the index publishes.
    charts.add_chart(&Chart::new("tampered", "1.0.0"));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let forged = Chart::new("tampered", "1.0.0")
        .values_yaml("greeting: forged\nreplicas: 0\nextra: {}\n")
        .package(elsewhere.path());
    std::fs::copy(&forged, charts.root().join("tampered-1.0.0.tgz")).expect("tamper");
    let private = ChartRepo::start_with_basic_auth("reader", "s3cr3t-chart-pass");
    private.add_chart(&Chart::new("demo", "1.0.0"));
    let registry = Registry::start_with_basic_auth();
    push_oci(&Chart::new("ocidemo", "2.0.0"), &registry);

    let helm = LoggingHelm::new();
    let repo = ConfigRepo::new();
    repo.write("clusters/c.yaml", &clusters_yaml(&[("one", "env: test")]));
    repo.write(
        "sources/creds.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: chart-creds}}\nstringData:\n  username: reader\n  password: s3cr3t-chart-pass\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: registry-creds}}\nstringData:\n  username: {REGISTRY_USER}\n  password: {REGISTRY_PASSWORD}\n"
        ),
    );
    let oci_creds = "    registryCredentialsConfig:\n      credentials: {name: registry-creds}\n    values: |\n      greeting: from-oci\n";
    let profiles = profiles_with_errors(&charts.url(), &registry.url(), &private.url(), oci_creds);
    write_profiles(&repo, &profiles);
    repo.write(
        "profiles/tampered.yaml",
        &profile_yaml(
            "tampered",
            &format!(
                "  clusterRefs: [one]\n  helmCharts:\n{}",
                helm_chart(&charts.url(), "tampered", "1.0.0", "tampered", "")
            ),
        ),
    );
    repo.write(
        "profiles/dry.yaml",
        &profile_yaml(
            "dry",
            &format!(
                "  clusterRefs: [one]\n  syncMode: DryRun\n  helmCharts:\n{}",
                helm_chart(
                    &charts.url(),
                    "demo",
                    "1.0.0",
                    "dry",
                    "    values: |\n      greeting: dry\n"
                )
            ),
        ),
    );
    let commit = repo.commit("many charts");

    let started = Instant::now();
    let run = sync(&repo, &fleet, &helm, &["--helm-timeout", "4s"]);
    eprintln!(
        "pass with 9 profiles, one hook timing out at 4s: {:?}",
        started.elapsed()
    );
    assert_eq!(
        run.code, 1,
        "failures make the exit code 1:\n{}",
        run.stderr
    );
    let text = note(&repo, &commit);
    eprintln!("{text}");

    // What works is installed: OCI with registry credentials, http with Basic auth, the
    // winner of the conflict.
    assert_eq!(
        listed(&fleet, "one", "apps", "from-oci").as_deref(),
        Some("ocidemo-2.0.0 deployed"),
        "{text}"
    );
    assert_eq!(
        values(&fleet, "one", "apps", "from-oci")["greeting"],
        "from-oci"
    );
    assert_eq!(
        listed(&fleet, "one", "apps", "private").as_deref(),
        Some("demo-1.0.0 deployed"),
        "{text}"
    );
    assert_eq!(
        values(&fleet, "one", "apps", "shared")["greeting"],
        "from-winner"
    );
    assert!(
        section(&text, "winner").contains("helm release apps/shared: installed demo 1.0.0"),
        "{text}"
    );
    assert!(
        section(&text, "loser").contains(
            "conflict: helm:apps/shared is applied by profile winner (tier 10 beats tier 100)"
        ),
        "{text}"
    );
    // Credentials never reach the note, the logs or helm's command lines.
    for secret in ["s3cr3t-chart-pass", REGISTRY_PASSWORD] {
        assert!(!text.contains(secret));
        assert!(!run.stderr.contains(secret));
        assert!(
            !helm.calls().iter().any(|c| c.contains(secret)),
            "{:?}",
            helm.calls()
        );
    }

    // Each helm error fails its own profile, with helm's message.
    for (profile, message) in [
        ("unknown-version", "has no version 9.9.9"),
        ("unreachable", "connection refused"),
        ("bad-render", "broken on purpose"),
        ("bad-hook", "failed pre-install"),
        ("slow-hook", "context deadline exceeded"),
        ("tampered", "digest mismatch"),
    ] {
        let section = section(&text, profile);
        assert!(
            section.contains(&format!("### {profile} (Continuous): FAILED")),
            "{section}"
        );
        assert!(
            section.contains(message),
            "{profile}: want {message:?} in\n{section}"
        );
    }
    // DryRun says what it would do (helm template for the manifest) and installs nothing.
    let dry = section(&text, "dry");
    assert!(
        dry.contains("### dry (DryRun): dry run, nothing applied — 1 release to install\nhelm release apps/dry: would install demo 1.0.0\n"),
        "{dry}"
    );
    assert!(dry.contains("+  greeting: dry"), "{dry}");
    assert_eq!(listed(&fleet, "one", "apps", "dry"), None);
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["unreachable"]["status"],
        "failed"
    );
    assert_eq!(
        state["clusters"]["one"]["profiles"]["loser"]["status"],
        "conflict"
    );

    // The loser takes over when the winner leaves; LeavePolicies leaves the OCI release.
    repo.remove("profiles/winner.yaml");
    let mut profiles =
        profiles_with_errors(&charts.url(), &registry.url(), &private.url(), oci_creds);
    profiles.retain(|(name, _)| *name != "winner" && *name != "slow-hook");
    repo.remove("profiles/slow-hook.yaml");
    let leave = profiles
        .iter()
        .find(|(n, _)| *n == "oci")
        .map(|(_, t)| {
            t.replace(
                "  tier: 100\n",
                "  tier: 100\n  stopMatchingBehavior: LeavePolicies\n",
            )
        })
        .expect("oci profile");
    repo.write("profiles/oci.yaml", &leave);
    repo.commit("oci leaves policies behind");
    let run = sync(&repo, &fleet, &helm, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        values(&fleet, "one", "apps", "shared")["greeting"],
        "from-loser"
    );
    assert_eq!(
        Helm::with_kubeconfig(fleet.kubeconfig("one"))
            .release("apps", "shared")
            .map(|r| r.revision),
        Some(2),
        "the release was handed over (upgraded), not uninstalled and installed again"
    );
    repo.remove("profiles/oci.yaml");
    let commit = repo.commit("oci removed");
    sync(&repo, &fleet, &helm, &[]);
    let text = note(&repo, &commit);
    assert!(
        text.contains(
            "helm release apps/from-oci: left installed (charts/ocidemo 2.0.0; LeavePolicies)"
        ),
        "{text}"
    );
    assert_eq!(
        listed(&fleet, "one", "apps", "from-oci").as_deref(),
        Some("ocidemo-2.0.0 deployed")
    );
}

/// Creates Secret `namespace/name` (and its namespace) in a cluster with kube, as raw bytes.
async fn create_secret(client: &kube::Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Api, PostParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
            .expect("namespace");
    if let Err(e) = namespaces.create(&PostParams::default(), &ns).await {
        assert!(
            e.to_string().contains("already exists"),
            "create namespace: {e}"
        );
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_credentials_from_a_secret_of_the_management_cluster() {
    let fleet = ControlPlanes::builder().names(&["mgmt", "one"]).start();
    let charts = ChartRepo::start();
    charts.add_chart(&Chart::new("demo", "1.0.0"));
    let registry = Registry::start_with_basic_auth();
    push_oci(&Chart::new("ocidemo", "2.0.0"), &registry);

    let helm = LoggingHelm::new();
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/c.yaml",
        &clusters_yaml(&[("mgmt", "role: management"), ("one", "env: test")]),
    );
    // The Secret is not in sources/: the config is valid, the daemon reads it at sync time.
    repo.write(
        "profiles/private.yaml",
        &profile_yaml(
            "private",
            &format!(
                "  clusterRefs: [one]\n  helmCharts:\n  - repositoryURL: {}\n    repositoryName: charts\n    chartName: charts/ocidemo\n    chartVersion: 2.0.0\n    releaseName: from-oci\n    releaseNamespace: apps\n    registryCredentialsConfig:\n      credentials: {{name: registry-creds, namespace: flotilla}}\n",
                registry.url()
            ),
        ),
    );
    repo.write(
        "profiles/public.yaml",
        &profile_yaml(
            "public",
            &format!(
                "  clusterRefs: [one]\n  helmCharts:\n{}",
                helm_chart(&charts.url(), "demo", "1.0.0", "public", "")
            ),
        ),
    );
    let commit = repo.commit("a chart whose credentials are in the management cluster");
    let mut outputs = Vec::new();

    // No management cluster: the profile fails naming the Secret; the other one applies.
    let run = sync(&repo, &fleet, &helm, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let text = note(&repo, &commit);
    let private = section(&text, "private");
    assert!(
        private.contains("### private (Continuous): FAILED"),
        "{text}"
    );
    assert!(
        private.contains("Secret flotilla/registry-creds")
            && private.contains("no management cluster is configured"),
        "{text}"
    );
    assert_eq!(
        listed(&fleet, "one", "apps", "public").as_deref(),
        Some("demo-1.0.0 deployed"),
        "{text}"
    );
    outputs.push((text, run));

    // A management cluster without the Secret: the same, saying it is not there.
    let run = sync(&repo, &fleet, &helm, &["--management-cluster", "mgmt"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let text = note(&repo, &commit);
    eprintln!("{text}");
    let private = section(&text, "private");
    assert!(
        private.contains("### private (Continuous): FAILED"),
        "{text}"
    );
    assert!(
        private.contains("Secret flotilla/registry-creds")
            && private.contains("not found in cluster mgmt"),
        "{text}"
    );
    let state = repo.state(&commit);
    assert_eq!(
        state["clusters"]["one"]["profiles"]["public"]["status"], "inSync",
        "{text}"
    );
    assert_eq!(
        state["clusters"]["one"]["profiles"]["private"]["status"], "failed",
        "{text}"
    );
    assert_eq!(listed(&fleet, "one", "apps", "from-oci"), None);
    outputs.push((text, run));

    // The Secret in the management cluster (a password file's trailing newline is not part of
    // the password, as in sources/): the release installs on the managed cluster only.
    let password = format!("{REGISTRY_PASSWORD}\n");
    create_secret(
        &fleet.client("mgmt").await,
        "flotilla",
        "registry-creds",
        &[("username", REGISTRY_USER), ("password", &password)],
    )
    .await;
    let run = sync(&repo, &fleet, &helm, &["--management-cluster", "mgmt"]);
    let text = note(&repo, &commit);
    assert_eq!(run.code, 0, "{text}\n{}", run.stderr);
    assert!(
        section(&text, "private").contains("helm release apps/from-oci: installed"),
        "{text}"
    );
    assert_eq!(
        listed(&fleet, "one", "apps", "from-oci").as_deref(),
        Some("ocidemo-2.0.0 deployed"),
        "{text}"
    );
    assert_eq!(listed(&fleet, "mgmt", "apps", "from-oci"), None);
    outputs.push((text, run));

    // The password is in no note, output or helm command line.
    let state = repo.state(&commit).to_string();
    assert!(!state.contains(REGISTRY_PASSWORD));
    for (text, run) in &outputs {
        assert!(!text.contains(REGISTRY_PASSWORD));
        assert!(!run.stdout.contains(REGISTRY_PASSWORD));
        assert!(!run.stderr.contains(REGISTRY_PASSWORD));
    }
    assert!(
        !helm.calls().iter().any(|c| c.contains(REGISTRY_PASSWORD)),
        "{:?}",
        helm.calls()
    );
}
