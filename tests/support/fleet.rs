//! A real config repository (a bare repo on disk plus a work tree that pushes to it) and the
//! `flotilla` binary, for end-to-end sync tests against real control planes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::ControlPlanes;

/// Runs a git command, panicking with its stderr on failure; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap_or_else(|e| panic!("run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config repository: `bare` is what flotilla reads (as `file://`), `work` is where the test
/// edits and commits, pushing to `bare` on every commit.
pub struct ConfigRepo {
    dir: tempfile::TempDir,
}

impl ConfigRepo {
    /// An empty repository with branch `main` (no commit yet).
    pub fn new() -> ConfigRepo {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-config-")
            .tempdir()
            .expect("temp dir");
        let repo = ConfigRepo { dir };
        std::fs::create_dir_all(repo.work()).expect("mkdir work");
        git(
            repo.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "config.git"],
        );
        git(&repo.work(), &["init", "-q", "-b", "main"]);
        git(
            &repo.work(),
            &[
                "remote",
                "add",
                "origin",
                &repo.bare().display().to_string(),
            ],
        );
        repo
    }

    /// The bare repository.
    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("config.git")
    }

    /// The work tree.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `file://` URL of the bare repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Where flotilla keeps its mirror for this repository.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes a file in the work tree (creating folders).
    pub fn write(&self, path: &str, text: &str) -> &Self {
        let full = self.work().join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&full, text).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
        self
    }

    /// Removes a file from the work tree.
    pub fn remove(&self, path: &str) -> &Self {
        let full = self.work().join(path);
        std::fs::remove_file(&full).unwrap_or_else(|e| panic!("remove {}: {e}", full.display()));
        self
    }

    /// Commits everything and pushes to the bare repository; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(
            &self.work(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work(), &["push", "-q", "origin", "main"]);
        git(&self.work(), &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// The note on `commit` under `notes_ref` in the bare repository.
    pub fn note(&self, notes_ref: &str, commit: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.bare())
            .args(["notes", "--ref", notes_ref, "show", commit])
            .output()
            .expect("run git notes");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The state note (JSON) on `commit`.
    pub fn state(&self, commit: &str) -> serde_json::Value {
        let text = self
            .note("refs/notes/flotilla-state", commit)
            .unwrap_or_else(|| panic!("no state note on {commit}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("state note is not JSON: {e}\n{text}"))
    }
}

/// The `inventory` document of clusters with these labels, one per (name, labels).
pub fn clusters_yaml(clusters: &[(&str, &str)]) -> String {
    clusters
        .iter()
        .map(|(name, labels)| {
            format!(
                "---\napiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n"
            )
        })
        .collect()
}

/// A ClusterProfile document.
pub fn profile_yaml(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: flotilla.dev/v1alpha1\nkind: ClusterProfile\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// A ConfigMap manifest.
pub fn configmap_yaml(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut text = format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n"
    );
    for (k, v) in data {
        text.push_str(&format!("  {k}: {v:?}\n"));
    }
    text
}

/// Path of the flotilla binary built for the tests, or `$FLOTILLA_TEST_BIN` when set: worktrees
/// that share one `CARGO_TARGET_DIR` replace each other's `target/debug/flotilla`, so a test run
/// there points this at a private copy of its own build.
pub fn flotilla_bin() -> PathBuf {
    std::env::var_os("FLOTILLA_TEST_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_flotilla")),
            PathBuf::from,
        )
}

/// Output of a command, as text.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `flotilla sync --once` of `repo` over `fleet`.
pub fn sync_once(repo: &ConfigRepo, fleet: &ControlPlanes, extra: &[&str]) -> Run {
    let out = Command::new(flotilla_bin())
        .args(["sync", "--once", "--repo", &repo.url(), "--kubeconfig-dir"])
        .arg(fleet.dir())
        .arg("--cache-dir")
        .arg(repo.cache_dir())
        .args(extra)
        .env_remove("FLOTILLA_GIT_TOKEN")
        .env("FLOTILLA_LOG", "info")
        .output()
        .expect("run flotilla sync");
    out.into()
}

/// A ConfigMap's data, or `None` when it does not exist.
pub async fn configmap(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get configmap {namespace}/{name}: {e}"))
        .map(|cm| cm.data.unwrap_or_default())
}

/// A ConfigMap's labels and annotations, when it exists.
pub async fn configmap_meta(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Option<(
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
)> {
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get configmap {namespace}/{name}: {e}"))
        .map(|cm| {
            (
                cm.metadata.labels.unwrap_or_default(),
                cm.metadata.annotations.unwrap_or_default(),
            )
        })
}
