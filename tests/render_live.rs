//! `flotilla render --kubeconfig-dir` against real kube-apiservers of two versions: the live
//! version reaches templates (`cluster.status.version`) and the version classifiers, which
//! decide whether the classifier-selected profile of example-repo is rendered.

mod support;

use std::process::Command;

use support::ControlPlanes;

/// Runs `flotilla render` of example-repo for one cluster with kubeconfigs from `kubeconfig_dir`.
fn run_render(cluster: &str, kubeconfig_dir: &std::path::Path) -> std::process::Output {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/example-repo");
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "render",
            "--path",
            example,
            "--cluster",
            cluster,
            "--kubeconfig-dir",
        ])
        .arg(kubeconfig_dir)
        .output()
        .expect("run flotilla")
}

fn render(planes: &ControlPlanes, cluster: &str) -> String {
    let out = run_render(cluster, planes.dir());
    assert_eq!(
        out.status.code(),
        Some(0),
        "render {cluster}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_versions_drive_templates_and_classifiers() {
    let planes = ControlPlanes::builder()
        .names(&["prod-eu-1", "prod-us-1"])
        .versions(&["1.37", "1.34"])
        .start();

    let new = render(&planes, "prod-eu-1");
    assert!(new.contains("k8s-minor=1.37-plus"), "{new}");
    assert!(new.contains("version v1.37."), "{new}");
    assert!(new.contains("# profile: new-apis"), "{new}");
    assert!(new.contains("kubernetes: v1.37."), "{new}");

    let old = render(&planes, "prod-us-1");
    assert!(old.contains("k8s-minor=before-1.37"), "{old}");
    assert!(old.contains("version v1.34."), "{old}");
    assert!(!old.contains("# profile: new-apis"), "{old}");
}

#[test]
fn an_unreachable_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_render("prod-eu-1", dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster prod-eu-1: cannot read kubeconfig"),
        "{stderr}"
    );
    assert!(stderr.contains("prod-eu-1.kubeconfig"), "{stderr}");
}
