//! `flotilla render` of example-repo, per cluster, against golden files. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test render_golden` and review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned kustomize of `scripts/testbin.sh`, so the goldens do not depend on what else is on
/// PATH.
fn kustomize_bin() -> PathBuf {
    let dir = std::env::var_os("FLOTILLA_TESTBIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flotilla/testbin"))
        })
        .expect("HOME or FLOTILLA_TESTBIN");
    let bin = dir.join("kustomize");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/testbin.sh first",
        bin.display()
    );
    bin
}

fn render(cluster: &str, extra: &[&str]) -> (i32, String, String) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/example-repo");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["render", "--path", example, "--cluster", cluster])
        .args(extra)
        .env("FLOTILLA_KUSTOMIZE_BIN", kustomize_bin())
        .output()
        .expect("run flotilla");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn render_matches_golden_files_for_every_cluster() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/render");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for cluster in ["prod-eu-1", "prod-us-1", "staging-eu-1", "mgmt"] {
        let (code, stdout, stderr) = render(cluster, &[]);
        assert_eq!(code, 0, "render {cluster} failed: {stderr}");
        let golden = golden_dir.join(format!("{cluster}.yaml"));
        if update {
            std::fs::create_dir_all(&golden_dir).expect("mkdir golden");
            std::fs::write(&golden, &stdout).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
        if want != stdout {
            mismatches.push(format!("--- {cluster}: want\n{want}\n--- got\n{stdout}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn render_is_deterministic() {
    let first = render("prod-eu-1", &[]);
    for _ in 0..3 {
        assert_eq!(render("prod-eu-1", &[]), first);
    }
}

#[test]
fn render_one_profile_and_unknown_names() {
    // deploy-calico needs a cluster labelled internet=true (its chart is public, and the
    // offline demo must not reach for it): label prod-eu-1 so in a copy of example-repo.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        copy.path(),
    );
    let fleet = copy.path().join("clusters/fleet.yaml");
    let text = std::fs::read_to_string(&fleet).expect("fleet.yaml");
    let labelled = text.replace(
        "labels: {env: prod, region: eu, cni: calico}",
        "labels: {env: prod, region: eu, cni: calico, internet: \"true\"}",
    );
    assert_ne!(text, labelled, "prod-eu-1's labels moved in example-repo");
    std::fs::write(&fleet, labelled).expect("write fleet.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "render",
            "--cluster",
            "prod-eu-1",
            "--profile",
            "deploy-calico",
            "--path",
        ])
        .arg(copy.path())
        .env("FLOTILLA_KUSTOMIZE_BIN", kustomize_bin())
        .output()
        .expect("run flotilla");
    let (code, stdout) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("helm release: tigera-operator/calico"),
        "{stdout}"
    );
    assert!(!stdout.contains("platform-baseline"), "{stdout}");
    assert!(stdout.contains("- cidr: 10.244.0.0/16"), "{stdout}");

    let (code, _, stderr) = render("nope", &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cluster \"nope\" is not in clusters/"),
        "{stderr}"
    );

    let (code, _, stderr) = render("prod-eu-1", &["--profile", "ghost"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("profile \"ghost\" is not in profiles/"),
        "{stderr}"
    );
}

#[test]
fn a_template_error_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let write = |path: &str, text: &str| {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    };
    write(
        "clusters/c.yaml",
        "apiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c1}\n",
    );
    write(
        "profiles/p.yaml",
        "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {name: p}\nspec:\n  clusterRefs: [c1]\n  policyRefs:\n  - {path: m.yaml, template: true}\n",
    );
    write(
        "m.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: '{{ cluster.spec.missing }}'\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["render", "--path"])
        .arg(root)
        .args(["--cluster", "c1"])
        .output()
        .expect("run flotilla");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/m.yaml:6: profile p on cluster c1: template error"),
        "{stderr}"
    );
    assert!(stderr.contains("cluster.spec.missing"), "{stderr}");
}

#[test]
fn without_a_kustomize_binary_refs_are_printed_as_comments() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/example-repo");
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "render",
            "--path",
            example,
            "--cluster",
            "prod-eu-1",
            "--profile",
            "web",
        ])
        .env_remove("FLOTILLA_KUSTOMIZE_BIN")
        .env("PATH", empty.path())
        .env("FLOTILLA_TESTBIN", empty.path())
        .output()
        .expect("run flotilla");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout
            .contains("kustomize: kustomize/web/overlays/prod (not expanded: no kustomize binary"),
        "{stdout}"
    );
    assert!(stderr.contains("no kustomize binary found"), "{stderr}");

    // An explicit binary that does not exist is an error, not a silent fallback.
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["render", "--path", example, "--cluster", "prod-eu-1"])
        .args(["--kustomize-bin", "/nonexistent/kustomize"])
        .output()
        .expect("run flotilla");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/kustomize: not an executable file")
    );
}

/// Copies a directory tree (files and folders).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
