//! `flotilla plan --live`: head against what the clusters really hold, through server-side
//! dry-run, on real control planes. A manual change shows up as a diff even when head is the
//! commit already applied; what head drops shows as removed (prune); a Secret shows only
//! hashes; an unreachable cluster is reported, not fatal.

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::ControlPlanes;
use support::fleet::{
    ConfigRepo, Run, clusters_yaml, configmap_yaml, flotilla_bin, profile_yaml, sync_once,
};

const SECRET: &str = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: default\nstringData:\n  password: s3cret-live-value\n";

fn plan_live(repo: &ConfigRepo, fleet: &ControlPlanes, format: &str) -> Run {
    Command::new(flotilla_bin())
        .args([
            "plan", "--live", "--head", "HEAD", "--format", format, "--repo",
        ])
        .arg(repo.work())
        .arg("--kubeconfig-dir")
        .arg(fleet.dir())
        .env("FLOTILLA_LOG", "warn")
        .output()
        .expect("run flotilla plan --live")
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn live_plan_shows_drift_prunes_and_unreachable_clusters() {
    let fleet = ControlPlanes::builder().names(&["one", "two"]).start();
    let repo = ConfigRepo::new();
    repo.write(
        "clusters/fleet.yaml",
        &clusters_yaml(&[("one", "env: prod"), ("two", "env: prod")]),
    )
    .write(
        "manifests/app/settings.yaml",
        &configmap_yaml("default", "settings", &[("k", "v1")]),
    )
    .write(
        "manifests/app/extra.yaml",
        &configmap_yaml("default", "extra", &[("k", "x")]),
    )
    .write("manifests/app/secret.yaml", SECRET)
    .write(
        "profiles/app.yaml",
        &profile_yaml(
            "app",
            "  clusterSelector: {}\n  policyRefs:\n  - {path: manifests/app}\n",
        ),
    );
    repo.commit("app");
    let run = sync_once(&repo, &fleet, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Head is what is applied: nothing to change.
    let run = plan_live(&repo, &fleet, "markdown");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("**No change**"), "{}", run.stdout);

    // A hand edit in `one`: base == head, and still the live plan shows it.
    let configmaps: Api<ConfigMap> = Api::namespaced(fleet.client("one").await, "default");
    configmaps
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"data": {"k": "edited-by-hand"}})),
        )
        .await
        .expect("edit settings in one");
    let run = plan_live(&repo, &fleet, "markdown");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let md = &run.stdout;
    assert!(
        md.contains("- changed `ConfigMap/default/settings`"),
        "{md}"
    );
    assert!(md.contains("-  k: edited-by-hand\n+  k: v1\n"), "{md}");
    assert!(md.contains("<b>one</b>: 1 changed"), "{md}");
    assert!(md.contains("Unchanged (1): `two`"), "{md}");
    assert!(
        md.contains("| live |"),
        "labels come from live classification:\n{md}"
    );

    // Head drops a file and changes the Secret: the prune and a hash-only Secret diff.
    repo.remove("manifests/app/extra.yaml").write(
        "manifests/app/secret.yaml",
        &SECRET.replace("s3cret-live-value", "n3w-s3cret-value"),
    );
    repo.commit("drop extra, rotate the secret");
    let run = plan_live(&repo, &fleet, "markdown");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let md = &run.stdout;
    assert!(md.contains("- removed `ConfigMap/default/extra`"), "{md}");
    assert!(md.contains("- changed `Secret/default/creds`"), "{md}");
    let json = plan_live(&repo, &fleet, "json");
    for out in [md, &json.stdout] {
        for secret in ["s3cret-live-value", "n3w-s3cret-value"] {
            assert!(!out.contains(secret), "a Secret value leaked:\n{out}");
        }
    }
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON plan");
    assert_eq!(parsed["mode"], "live", "{parsed:#}");

    // `two` stops answering: reported, not fatal.
    fleet.stop_cluster("two");
    let run = plan_live(&repo, &fleet, "markdown");
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("could not be asked"), "{}", run.stdout);
    assert!(run.stdout.contains("| `two` |"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("- changed `ConfigMap/default/settings`"),
        "one is still planned:\n{}",
        run.stdout
    );

    // An object the apiserver refuses (validation at dry-run time): that profile's error, exit 2.
    repo.write(
        "manifests/app/service.yaml",
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  ports:\n  - {port: 70000}\n",
    );
    repo.commit("a service with an invalid port");
    let run = plan_live(&repo, &fleet, "markdown");
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("the cluster refuses the apply (server-side dry-run)")
            && run.stdout.contains("Service/default/web"),
        "{}",
        run.stdout
    );
}
