//! `flotilla plan` in render mode over changes of example-repo, in a temporary git repository,
//! against golden files (markdown and JSON per case) under tests/golden/plan/. Regenerate with
//! `FLOTILLA_BLESS=1 cargo test --test plan` and review the diff.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::fleet::{flotilla_bin, git};

/// The pinned kustomize of `scripts/testbin.sh`, so the goldens do not depend on PATH.
fn kustomize_bin() -> PathBuf {
    let bin = support::testbin_dir().join("kustomize");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/testbin.sh first",
        bin.display()
    );
    bin
}

/// A git repository holding a copy of example-repo as its first commit.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-plan-")
            .tempdir()
            .expect("tempdir");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
            dir.path(),
        );
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let repo = Repo { dir };
        repo.commit("example-repo");
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, file: &str, text: &str) -> &Repo {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
        self
    }

    /// Replaces `from` by `to` in `file`, which must contain it.
    fn edit(&self, file: &str, from: &str, to: &str) -> &Repo {
        let path = self.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(path, text.replacen(from, to, 1)).expect("write");
        self
    }

    fn commit(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(self.path(), &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// `flotilla plan` of base..head: (exit code, output with commit ids replaced by
    /// `<base>`/`<head>`).
    fn plan(&self, base: &str, head: &str, format: &str) -> (i32, String) {
        let out = Command::new(flotilla_bin())
            .args(["plan", "--repo"])
            .arg(self.path())
            .args(["--base", base, "--head", head, "--format", format])
            .arg("--kustomize-bin")
            .arg(kustomize_bin())
            .output()
            .expect("run flotilla plan");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = out.status.code().unwrap_or(-1);
        assert!(code == 0 || !stdout.is_empty(), "no output: {stderr}");
        let mut text = stdout;
        for (id, name) in [(head, "<head>"), (base, "<base>")] {
            text = text.replace(id, name).replace(&id[..12], name);
        }
        assert!(
            !text.contains(self.path().to_string_lossy().as_ref()),
            "temp path in output: {text}"
        );
        (code, text)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Compares (or, with FLOTILLA_BLESS=1, writes) `tests/golden/plan/<case>.<ext>`.
fn golden(case: &str, ext: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/plan")
        .join(format!("{case}.{ext}"));
    if std::env::var_os("FLOTILLA_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with FLOTILLA_BLESS=1)", path.display()));
    assert!(
        want == got,
        "{} differs (FLOTILLA_BLESS=1 rewrites it):\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

/// Plans `change` on top of example-repo, checks both formats against the goldens and the exit
/// code; returns (markdown, json).
fn case(name: &str, want_code: i32, change: impl FnOnce(&Repo)) -> (String, serde_json::Value) {
    let repo = Repo::new();
    let base = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string();
    change(&repo);
    let head = repo.commit(name);
    let (code, markdown) = repo.plan(&base, &head, "markdown");
    assert_eq!(code, want_code, "{markdown}");
    let (code, json) = repo.plan(&base, &head, "json");
    assert_eq!(code, want_code, "{json}");
    golden(name, "md", &markdown);
    golden(name, "json", &json);
    let value = serde_json::from_str(&json).expect("plan JSON");
    (markdown, value)
}

fn cluster<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {json}"))
}

#[test]
fn template_value_that_differs_per_cluster() {
    let (markdown, json) = case("template-value", 1, |repo| {
        repo.edit(
            "sources/cluster-info.yaml",
            "region: {{ cluster.metadata.labels.region }}",
            "region: {{ cluster.metadata.labels.region | upper }}",
        );
    });
    for c in ["prod-eu-1", "prod-us-1", "staging-eu-1", "mgmt"] {
        assert_eq!(cluster(&json, c)["counts"]["changed"], 1, "{c}");
    }
    assert!(markdown.contains("+  region: EU"), "{markdown}");
    assert!(markdown.contains("+  region: US"), "{markdown}");
}

#[test]
fn label_change_withdraws_profiles_from_one_cluster() {
    let (markdown, json) = case("label-withdraw", 1, |repo| {
        repo.edit(
            "clusters/fleet.yaml",
            "labels: {env: prod, region: eu, cni: calico}",
            "labels: {env: staging, region: eu, cni: calico}",
        );
    });
    let prod = cluster(&json, "prod-eu-1");
    assert!(
        prod["counts"]["removed"].as_u64().expect("removed") > 0,
        "{prod}"
    );
    let web = prod["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .find(|p| p["profile"] == "web")
        .expect("web is withdrawn");
    assert_eq!(web["targeting"], "stopsMatching");
    assert!(markdown.contains("stops matching: withdrawn"), "{markdown}");
    assert_eq!(cluster(&json, "staging-eu-1")["counts"]["changed"], 0);
}

#[test]
fn new_profile() {
    let (markdown, json) = case("new-profile", 1, |repo| {
        repo.write(
            "profiles/motd.yaml",
            "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {name: motd}\n\
             spec:\n  clusterSelector: \"env=prod\"\n  policyRefs:\n  \
             - {path: manifests/motd.yaml, template: true}\n",
        )
        .write(
            "manifests/motd.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: motd, namespace: platform}\n\
             data:\n  text: \"welcome to {{ cluster.metadata.labels.env }}\"\n",
        );
    });
    assert_eq!(cluster(&json, "prod-eu-1")["counts"]["added"], 1);
    assert_eq!(cluster(&json, "staging-eu-1")["counts"]["added"], 0);
    // prod-eu-1 and prod-us-1 get the same object: one section (prod-us-1 also has its paused line,
    // so it is grouped only with identical bodies).
    assert!(markdown.contains("+  text: welcome to prod"), "{markdown}");
}

#[test]
fn helm_chart_version_bump_groups_identical_clusters() {
    let (markdown, json) = case("helm-bump", 1, |repo| {
        repo.edit(
            "profiles/greeter.yaml",
            "chartVersion: 1.0.0",
            "chartVersion: 1.1.0",
        )
        .edit(
            "charts/greeter/Chart.yaml",
            "version: 1.0.0",
            "version: 1.1.0",
        );
    });
    let release = &cluster(&json, "mgmt")["profiles"][0]["releases"][0];
    assert_eq!(release["action"], "upgraded");
    assert_eq!(release["fromVersion"], "1.0.0");
    assert_eq!(release["toVersion"], "1.1.0");
    assert!(
        markdown.contains("<summary><b>mgmt, prod-eu-1, staging-eu-1</b>: 1 changed</summary>"),
        "identical changes are one section: {markdown}"
    );
    assert!(
        markdown.contains("upgraded platform/greeter 1.0.0 → 1.1.0"),
        "{markdown}"
    );
}

#[test]
fn profile_that_needs_live_data_is_pending_on_both_sides() {
    let (markdown, json) = case("pending", 1, |repo| {
        repo.edit(
            "manifests/storage/bucket-config.yaml",
            "endpoint: \"{{ StorageBucket.status.endpoint }}\"",
            "endpoint: \"https://{{ StorageBucket.status.endpoint }}\"",
        );
    });
    let prod = cluster(&json, "prod-eu-1");
    assert_eq!(prod["counts"]["changed"], 0, "{prod}");
    assert_eq!(prod["counts"]["errors"], 0, "not an error: {prod}");
    let pending = prod["profiles"][0]["pending"].as_array().expect("pending");
    assert_eq!(pending.len(), 2, "both sides: {prod}");
    assert!(
        markdown.contains("needs live data (pending) in base and head"),
        "{markdown}"
    );
}

#[test]
fn change_that_affects_no_cluster() {
    let (markdown, json) = case("no-change", 0, |repo| {
        repo.write("README.md", "# fleet config\n\nNothing here is deployed.\n");
    });
    assert!(markdown.contains("**No change**"), "{markdown}");
    assert!(json["errors"].is_null(), "{json}");
}

#[test]
fn invalid_head_lists_every_error() {
    let (markdown, json) = case("invalid-head", 2, |repo| {
        repo.edit(
            "profiles/web.yaml",
            "kustomizationRefs:",
            "kustomizationRefz:",
        )
        .edit(
            "profiles/greeter.yaml",
            "chartVersion: 1.0.0",
            "chartVersion: one",
        );
    });
    let errors = json["errors"].as_array().expect("errors");
    assert!(errors.len() >= 2, "{json}");
    for e in errors {
        assert_eq!(e["side"], "head");
        let message = e["message"].as_str().expect("message");
        assert!(
            message.starts_with("profiles/"),
            "FILE:LINE: message: {message}"
        );
        assert!(markdown.contains(message), "{markdown}");
    }
    assert!(
        markdown.contains("**head `<head>` is invalid**"),
        "{markdown}"
    );
    assert!(json["clusters"].as_array().expect("clusters").is_empty());
}

#[test]
fn invalid_base_is_reported_naming_the_side() {
    let repo = Repo::new();
    repo.edit(
        "profiles/web.yaml",
        "kustomizationRefs:",
        "kustomizationRefz:",
    );
    let base = repo.commit("broken");
    repo.edit(
        "profiles/web.yaml",
        "kustomizationRefz:",
        "kustomizationRefs:",
    );
    let head = repo.commit("fixed");
    let (code, markdown) = repo.plan(&base, &head, "markdown");
    assert_eq!(code, 2, "{markdown}");
    assert!(
        markdown.contains("**base `<base>` is invalid**"),
        "{markdown}"
    );
    assert!(markdown.contains("profiles/web.yaml:"), "{markdown}");
}

#[test]
fn secret_changes_show_only_hashes() {
    let repo = Repo::new();
    let secret = |password: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: db, namespace: platform}}\n\
             stringData:\n  password: {password}\n"
        )
    };
    repo.write(
        "profiles/db.yaml",
        "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {name: db}\n\
         spec:\n  clusterSelector: \"env=prod\"\n  policyRefs:\n  - {path: manifests/db.yaml}\n",
    )
    .write("manifests/db.yaml", &secret("old-Pa55word-1"));
    let base = repo.commit("db secret");
    repo.write("manifests/db.yaml", &secret("new-Pa55word-2"));
    let head = repo.commit("rotate the db password");
    for format in ["markdown", "json"] {
        let (code, out) = repo.plan(&base, &head, format);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("redacted fnv1a:"), "{out}");
        for value in ["old-Pa55word-1", "new-Pa55word-2"] {
            assert!(!out.contains(value), "{format} shows a Secret value: {out}");
        }
    }
}

#[test]
fn labels_from_the_state_note_or_the_inventory() {
    let repo = Repo::new();
    let noted = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string();
    // A profile selected through a classifier label, which render mode cannot evaluate.
    repo.write(
        "profiles/minor.yaml",
        "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {name: minor}\n\
         spec:\n  clusterSelector: \"k8s-minor=1.37-plus\"\n  policyRefs:\n  \
         - {path: manifests/minor.yaml, template: true}\n",
    )
    .write(
        "manifests/minor.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: minor, namespace: default}\n\
         data: {minor: \"{{ cluster.metadata.labels['k8s-minor'] }}\", v: \"1\"}\n",
    );
    let base = repo.commit("minor profile");
    repo.edit("manifests/minor.yaml", "v: \"1\"", "v: \"2\"");
    let head = repo.commit("minor v2");

    // No state note: inventory labels, nothing carries k8s-minor, no change.
    let (code, json) = repo.plan(&base, &head, "json");
    assert_eq!(code, 0, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(cluster(&json, "prod-eu-1")["labels"]["source"], "inventory");

    // A state note on base's parent (found by walking first parents) gives prod-eu-1 the label.
    let note = serde_json::json!({
        "version": 1, "commit": noted, "valid": true,
        "clusters": {"prod-eu-1": {
            "labels": {"env": "prod", "region": "eu", "cni": "calico", "k8s-minor": "1.37-plus"},
            "labelSources": {"env": "inventory", "region": "inventory", "cni": "inventory",
                             "k8s-minor": "classifier:k8s-1-37-plus"},
            "status": "synced", "profiles": {}}}
    });
    git(
        repo.path(),
        &[
            "notes",
            "--ref",
            "refs/notes/flotilla-state",
            "add",
            "-m",
            &note.to_string(),
            &noted,
        ],
    );
    let (code, markdown) = repo.plan(&base, &head, "markdown");
    assert_eq!(code, 1, "{markdown}");
    let short = &noted[..12];
    assert!(
        markdown.contains(&format!(
            "| `prod-eu-1` | 0 | 1 | 0 | 0 | state note `{short}` |"
        )),
        "{markdown}"
    );
    let (_, json) = repo.plan(&base, &head, "json");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    let prod = cluster(&json, "prod-eu-1");
    assert_eq!(prod["labels"]["source"], "stateNote");
    assert_eq!(prod["labels"]["commit"], noted.as_str());
    assert_eq!(prod["labels"]["classifierLabels"]["k8s-minor"], "1.37-plus");
    assert_eq!(prod["counts"]["changed"], 1);
    assert_eq!(
        cluster(&json, "staging-eu-1")["labels"]["source"],
        "inventory"
    );
    assert_eq!(cluster(&json, "staging-eu-1")["counts"]["changed"], 0);
}

#[test]
fn clusters_joining_and_leaving_the_fleet() {
    let repo = Repo::new();
    let base = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string();
    repo.edit(
        "clusters/fleet.yaml",
        "  name: staging-eu-1\n  labels: {env: staging, region: eu}",
        "  name: staging-eu-2\n  labels: {env: staging, region: eu}",
    );
    let head = repo.commit("replace staging-eu-1 by staging-eu-2");
    let (code, markdown) = repo.plan(&base, &head, "markdown");
    assert_eq!(code, 1, "{markdown}");
    assert!(
        markdown.contains("| `staging-eu-1` (leaves the fleet) | 0 | 0 | 0 | 0 |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("`staging-eu-2` (joins the fleet)"),
        "{markdown}"
    );
    assert!(markdown.contains("deletes nothing there"), "{markdown}");
    let (_, json) = repo.plan(&base, &head, "json");
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(cluster(&json, "staging-eu-1")["membership"], "leaves");
    let joined = cluster(&json, "staging-eu-2");
    assert_eq!(joined["membership"], "joins");
    assert!(
        joined["counts"]["added"].as_u64().expect("added") > 0,
        "{joined}"
    );
}

#[test]
fn output_file_and_bad_revision() {
    let repo = Repo::new();
    let out = repo.path().join("plan.md");
    let status = Command::new(flotilla_bin())
        .args(["plan", "--repo"])
        .arg(repo.path())
        .args(["--base", "HEAD", "--head", "HEAD", "--output"])
        .arg(&out)
        .status()
        .expect("run");
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&out).expect("plan.md");
    assert!(text.contains("**No change**"), "{text}");

    let run = Command::new(flotilla_bin())
        .args(["plan", "--repo"])
        .arg(repo.path())
        .args(["--base", "no-such-rev", "--head", "HEAD"])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("no-such-rev"),
        "{run:?}"
    );
}
