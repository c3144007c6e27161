//! A `flotilla run` child process for tests of the running daemon, and polling helpers.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::ControlPlanes;
use super::fleet::{ConfigRepo, flotilla_bin};

/// A `flotilla` command with logging on (so a failing test shows what the daemon did), no
/// token from the test's environment, and no HTTP listener unless a test passes `--http-addr`
/// (daemons of parallel tests would all want the default port).
pub fn flotilla() -> Command {
    let mut cmd = Command::new(flotilla_bin());
    cmd.env_remove("FLOTILLA_GIT_TOKEN")
        .env_remove("FLOTILLA_WEBHOOK_SECRET_FILE")
        .env("FLOTILLA_HTTP_ADDR", "off")
        .env("FLOTILLA_LOG", "info");
    cmd
}

/// `--http-addr off` when this `flotilla run` has an HTTP endpoint (several daemons of one test
/// would otherwise all bind the default port), else nothing.
pub fn no_http() -> Vec<String> {
    let help = flotilla()
        .args(["run", "--help"])
        .output()
        .expect("run flotilla run --help");
    if String::from_utf8_lossy(&help.stdout).contains("--http-addr") {
        vec!["--http-addr".into(), "off".into()]
    } else {
        vec![]
    }
}

/// A `flotilla run` child process. Dropping it kills the process (every test path, panics
/// included), so no daemon outlives its test.
pub struct Daemon {
    pub child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Spawns `flotilla run ARGS`; stdout and stderr go to a log file (never a pipe that could
    /// fill up and block the daemon).
    pub fn spawn(args: &[&std::ffi::OsStr]) -> Daemon {
        Daemon::spawn_env(args, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables (`POD_NAME`, ...).
    pub fn spawn_env(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-daemon-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("daemon.log");
        let out = std::fs::File::create(&log).expect("create the daemon log");
        let err = out.try_clone().expect("clone the log handle");
        let child = flotilla()
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn flotilla run");
        Daemon {
            child,
            log,
            _dir: dir,
        }
    }

    /// `flotilla run` of `repo` (its URL and cache directory) over `fleet`, with `extra` flags
    /// (the interval, a management cluster, ...).
    pub fn on(repo: &ConfigRepo, fleet: &ControlPlanes, extra: &[&str]) -> Daemon {
        Daemon::on_env(repo, fleet, extra, &[])
    }

    /// [`on`](Self::on) with extra environment variables (`POD_NAME` of a replica, ...).
    pub fn on_env(
        repo: &ConfigRepo,
        fleet: &ControlPlanes,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--repo".into(),
            repo.url().into(),
            "--kubeconfig-dir".into(),
            fleet.dir().into(),
            "--cache-dir".into(),
            repo.cache_dir().into(),
        ];
        args.extend(extra.iter().map(|a| a.into()));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Daemon::spawn_env(&args, env)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running (not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal with the `kill` command (`-TERM`, `-KILL`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every `every` until it returns true or `timeout` passes; the time it took.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}
