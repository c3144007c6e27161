//! Helpers shared by the integration tests: real Kubernetes control planes (one etcd, N
//! kube-apiservers) started by `scripts/local-clusters.sh`, the one launcher that the demo and the
//! benchmarks use too. Binaries come from `scripts/testbin.sh`'s cache.
//!
//! Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod daemon;
pub mod fleet;
pub mod git_server;
pub mod helm;

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
        if !out.status.success() {
            // Keep the directory: its logs are the evidence (the launcher already stopped
            // whatever it started).
            let kept = dir.keep();
            panic!(
                "{} up failed ({}):\n{}\n{}",
                launcher_script().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                log_tails(&kept)
            );
        }
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
            timeout_secs: self.timeout_secs,
        }
    }
}

/// Running control planes in a fresh temporary directory; dropping it runs the launcher's `down`
/// (stops every process) and removes the directory.
#[derive(Debug)]
pub struct ControlPlanes {
    dir: Option<tempfile::TempDir>,
    clusters: Vec<Cluster>,
    timeout_secs: Option<u32>,
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

    /// Stops cluster `name`'s apiserver; etcd and the other clusters keep running. Nothing happens
    /// when it is already stopped.
    pub fn stop_cluster(&self, name: &str) {
        self.cluster(name);
        self.launcher(&["stop", "--name", name]);
    }

    /// Starts cluster `name`'s apiserver again, on the same port with the same certificates (the
    /// kubeconfig stays valid), and blocks until it is ready. Nothing happens when it runs.
    pub fn start_cluster(&self, name: &str) {
        self.cluster(name);
        let timeout = self.timeout_secs.map(|secs| secs.to_string());
        let mut args = vec!["start", "--name", name];
        if let Some(timeout) = &timeout {
            args.extend(["--timeout", timeout.as_str()]);
        }
        self.launcher(&args);
    }

    /// Runs `local-clusters.sh ARGS --dir DIR`; panics with its stderr when it fails.
    fn launcher(&self, args: &[&str]) {
        let out = Command::new(launcher_script())
            .args(args)
            .arg("--dir")
            .arg(self.dir())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", launcher_script().display()));
        assert!(
            out.status.success(),
            "local-clusters.sh {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            log_tails(self.dir())
        );
    }

    /// Cluster `name`'s audit log: JSON lines, one `ResponseComplete` event per request (level
    /// Metadata). Written before the response is sent, so a request that returned is in it.
    /// Kept across [`stop_cluster`](Self::stop_cluster) / [`start_cluster`](Self::start_cluster).
    pub fn audit_log(&self, name: &str) -> PathBuf {
        self.cluster(name);
        self.dir().join("logs").join(format!("{name}.audit.log"))
    }

    /// Every completed request the kubeconfig's user ([`ADMIN_USER`]) made to cluster `name`, in
    /// log order (reads too; not the launcher's own probes, nor the apiserver's internal ones).
    pub fn requests(&self, name: &str) -> Vec<AuditEvent> {
        read_audit_log(&self.audit_log(name))
            .into_iter()
            .filter(|e| e.user == ADMIN_USER)
            .collect()
    }

    /// The write requests (create, update, patch, delete, deletecollection) among
    /// [`requests`](Self::requests), without dry runs: what changed, or tried to change, state.
    pub fn write_requests(&self, name: &str) -> Vec<AuditEvent> {
        self.requests(name)
            .into_iter()
            .filter(|e| e.is_write() && !e.is_dry_run())
            .collect()
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

/// For a launcher failure: the last lines of every log in `DIR/logs` (etcd, each apiserver; not
/// the audit logs), and where the directory is.
pub fn log_tails(dir: &Path) -> String {
    const LINES: usize = 20;
    let logs = dir.join("logs");
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&logs) {
        Ok(entries) => entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.ends_with(".log") && !n.ends_with(".audit.log"))
            })
            .collect(),
        Err(e) => return format!("(no logs: read {}: {e})", logs.display()),
    };
    paths.sort();
    let mut out = format!("launcher directory (kept): {}\n", dir.display());
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(read: {e})\n"));
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        out.push_str(&format!(
            "---- tail of {} ({} lines) ----\n",
            path.display(),
            lines.len()
        ));
        for line in tail {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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

/// The user of every kubeconfig the launcher writes (its static admin token).
pub const ADMIN_USER: &str = "flotilla-admin";

/// The audit verbs that change state.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// One completed request from an apiserver's audit log (see [`ControlPlanes::audit_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` (also server-side apply), `delete`,
    /// `deletecollection`; for non-resource URLs the HTTP method in lower case.
    pub verb: String,
    /// Path and query, e.g. `/api/v1/namespaces/default/configmaps/x?fieldManager=flotilla`.
    pub uri: String,
    /// `objectRef.resource` (plural, e.g. `configmaps`); `None` for non-resource URLs.
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// `None` for collections (list, create by POST without a name in the path, ...).
    pub name: Option<String>,
    /// `requestReceivedTimestamp`, RFC 3339 with microseconds.
    pub received: String,
    /// `stageTimestamp` of the ResponseComplete stage.
    pub completed: String,
    /// `responseStatus.code`.
    pub code: Option<u16>,
    pub user: String,
    pub user_agent: Option<String>,
    pub audit_id: String,
}

impl AuditEvent {
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// A `dryRun` query parameter (kube sends `dryRun=All`): the apiserver changed nothing.
    pub fn is_dry_run(&self) -> bool {
        self.query_param("dryRun").is_some_and(|v| !v.is_empty())
    }

    /// The first value of query parameter `key` in [`uri`](Self::uri), undecoded.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        let (_, query) = self.uri.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// [`received`](Self::received) in microseconds since the Unix epoch.
    pub fn received_micros(&self) -> u64 {
        rfc3339_micros(&self.received)
            .unwrap_or_else(|| panic!("bad requestReceivedTimestamp {:?}", self.received))
    }

    /// [`completed`](Self::completed) in microseconds since the Unix epoch.
    pub fn completed_micros(&self) -> u64 {
        rfc3339_micros(&self.completed)
            .unwrap_or_else(|| panic!("bad stageTimestamp {:?}", self.completed))
    }
}

/// The ResponseComplete events of an audit log, in order. A last line without its newline (being
/// written right now) is skipped; any other malformed line panics.
pub fn read_audit_log(path: &Path) -> Vec<AuditEvent> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read audit log {}: {e}", path.display()));
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad audit line {line:?}: {e}", path.display()));
            parse_audit_event(&value)
        })
        .collect()
}

/// One audit event (`audit.k8s.io/v1` `Event`) if its stage is ResponseComplete.
pub fn parse_audit_event(value: &serde_json::Value) -> Option<AuditEvent> {
    if value["stage"] != "ResponseComplete" {
        return None;
    }
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let object = &value["objectRef"];
    Some(AuditEvent {
        verb: text(&value["verb"]).unwrap_or_default(),
        uri: text(&value["requestURI"]).unwrap_or_default(),
        resource: text(&object["resource"]),
        subresource: text(&object["subresource"]),
        namespace: text(&object["namespace"]),
        name: text(&object["name"]),
        received: text(&value["requestReceivedTimestamp"]).unwrap_or_default(),
        completed: text(&value["stageTimestamp"]).unwrap_or_default(),
        code: value["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok()),
        user: text(&value["user"]["username"]).unwrap_or_default(),
        user_agent: text(&value["userAgent"]),
        audit_id: text(&value["auditID"]).unwrap_or_default(),
    })
}

/// Microseconds since the Unix epoch of an RFC 3339 time as the apiserver writes it
/// (`2026-11-27T10:00:00.123456Z`); also any number of fraction digits (beyond 6 truncated) and
/// a `+hh:mm` / `-hh:mm` offset. `None` when malformed or before 1970.
pub fn rfc3339_micros(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        for k in 0..6 {
            let d = if start + k < i {
                i64::from(b[start + k] - b'0')
            } else {
                0
            };
            micros = micros * 10 + d;
        }
    }
    let offset_secs = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = std::str::from_utf8(&[*h1, *h2]).ok()?.parse::<i64>().ok()?;
            let mm = std::str::from_utf8(&[*m1, *m2]).ok()?.parse::<i64>().ok()?;
            let secs = hh * 3600 + mm * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Now, in microseconds since the Unix epoch (to compare with [`AuditEvent`] times).
pub fn now_micros() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock before 1970");
    u64::try_from(since.as_micros()).expect("time fits u64")
}
