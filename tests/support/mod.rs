//! Helpers shared by the integration tests: real Kubernetes control planes (one etcd, N
//! kube-apiservers) started by `scripts/local-clusters.sh`, the one launcher that the demo and the
//! benchmarks use too. Binaries come from `scripts/testbin.sh`'s cache.
//!
//! Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod git_server;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The launcher script, found relative to the crate.
pub fn launcher_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-clusters.sh")
}

/// Where `scripts/testbin.sh` puts the binaries (`FLOTILLA_TESTBIN`, default
/// `$HOME/.cache/flotilla/testbin`).
pub fn testbin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_TESTBIN") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set and FLOTILLA_TESTBIN is not set");
    PathBuf::from(home).join(".cache/flotilla/testbin")
}

/// Panics with a pointer to `scripts/testbin.sh` when a binary the tests need is missing.
pub fn require_testbin(names: &[&str]) {
    let dir = testbin_dir();
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !dir.join(name).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "test binaries {missing:?} are missing from {}: run scripts/testbin.sh first \
         (it builds pinned etcd, kube-apiserver, kubectl, helm and kustomize; \
         FLOTILLA_TESTBIN overrides the cache directory)",
        dir.display()
    );
}

/// One control plane started by the launcher.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    /// Full kube version, e.g. `v1.34.4`.
    pub version: String,
    pub kubeconfig: PathBuf,
}

/// Options for [`ControlPlanes`]; [`ControlPlanes::start`] covers the common case.
#[derive(Debug, Clone, Default)]
pub struct ControlPlanesBuilder {
    count: Option<usize>,
    names: Vec<String>,
    versions: Vec<String>,
    timeout_secs: Option<u32>,
}

impl ControlPlanesBuilder {
    /// Number of clusters (default: the number of names, else 1).
    pub fn count(mut self, count: usize) -> Self {
        self.count = Some(count);
        self
    }

    /// Cluster names (default `cluster-1..N`).
    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Kube versions (`"1.34"`, `"1.37"`, or full), assigned to the clusters in order and
    /// repeated when fewer than the clusters. Empty: the newest built version.
    pub fn versions(mut self, versions: &[&str]) -> Self {
        self.versions = versions.iter().map(|v| v.to_string()).collect();
        self
    }

    /// Seconds the launcher waits for each component to become ready.
    pub fn timeout_secs(mut self, secs: u32) -> Self {
        self.timeout_secs = Some(secs);
        self
    }

    /// Starts the control planes and blocks until every apiserver is ready.
    pub fn start(self) -> ControlPlanes {
        require_testbin(&["etcd", "kube-apiserver", "kube-versions"]);
        let dir = tempfile::Builder::new()
            .prefix("flotilla-clusters-")
            .tempdir()
            .expect("create a temporary directory for the control planes");
        let mut cmd = Command::new(launcher_script());
        cmd.arg("up").arg("--dir").arg(dir.path());
        let count = self.count.unwrap_or(self.names.len().max(1));
        cmd.arg("--count").arg(count.to_string());
        if !self.names.is_empty() {
            cmd.arg("--names").arg(self.names.join(","));
        }
        if !self.versions.is_empty() {
            cmd.arg("--version").arg(self.versions.join(","));
        }
        if let Some(secs) = self.timeout_secs {
            cmd.arg("--timeout").arg(secs.to_string());
        }
        // If this test process dies without running Drop, the launcher's watchdog cleans up.
        cmd.arg("--owner-pid").arg(std::process::id().to_string());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", launcher_script().display()));
        assert!(
            out.status.success(),
            "{} up failed ({}):\n{}",
            launcher_script().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let clusters = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                // NAME VERSION KUBECONFIG; the path may contain spaces.
                let fields: Vec<&str> = line.splitn(3, ' ').collect();
                assert_eq!(fields.len(), 3, "unexpected launcher output line {line:?}");
                Cluster {
                    name: fields[0].to_string(),
                    version: fields[1].to_string(),
                    kubeconfig: PathBuf::from(fields[2]),
                }
            })
            .collect::<Vec<_>>();
        assert_eq!(clusters.len(), count, "launcher reported {clusters:?}");
        ControlPlanes {
            dir: Some(dir),
            clusters,
        }
    }
}

/// Running control planes in a fresh temporary directory; dropping it runs the launcher's `down`
/// (stops every process) and removes the directory.
#[derive(Debug)]
pub struct ControlPlanes {
    dir: Option<tempfile::TempDir>,
    clusters: Vec<Cluster>,
}

impl ControlPlanes {
    /// `count` clusters named `cluster-1..N`; `versions` as in [`ControlPlanesBuilder::versions`].
    pub fn start(count: usize, versions: &[&str]) -> ControlPlanes {
        Self::builder().count(count).versions(versions).start()
    }

    pub fn builder() -> ControlPlanesBuilder {
        ControlPlanesBuilder::default()
    }

    /// The launcher's directory (kubeconfigs, logs, pids).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("control planes already stopped")
            .path()
    }

    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    pub fn names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn cluster(&self, name: &str) -> &Cluster {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cluster {name:?}; have {:?}", self.names()))
    }

    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.cluster(name).kubeconfig.clone()
    }

    /// A client for cluster `name`, authenticated as its admin (group `system:masters`).
    pub async fn client(&self, name: &str) -> kube::Client {
        let path = self.kubeconfig(name);
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("client for {name}: {e}"))
    }

    /// Pids of every process the launcher recorded (etcd, apiservers, watchdog).
    pub fn pids(&self) -> Vec<u32> {
        let run = self.dir().join("run");
        let mut pids: Vec<u32> = std::fs::read_dir(&run)
            .unwrap_or_else(|e| panic!("read {}: {e}", run.display()))
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                if path.extension()? != "pid" {
                    return None;
                }
                std::fs::read_to_string(path).ok()?.trim().parse().ok()
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Stops every process and removes the directory; what `Drop` does, with errors reported.
    pub fn stop(mut self) {
        self.down();
    }

    fn down(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let result = Command::new(launcher_script())
            .arg("down")
            .arg("--dir")
            .arg(dir.path())
            .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "local-clusters.sh down failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("run local-clusters.sh down: {e}"),
        }
    }
}

impl Drop for ControlPlanes {
    fn drop(&mut self) {
        self.down();
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
