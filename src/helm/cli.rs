//! The helm subprocess adapter: the pinned `helm` binary run with a private environment and a
//! time limit, and an on-disk chart cache keyed by (repository, chart, version).
//!
//! Every helm process gets `env_clear()` plus only what it needs: a private `HOME` and
//! `HELM_{CACHE,CONFIG,DATA}_HOME` (so nothing of the host's helm setup — repositories, registry
//! logins, plugins — is used), `PATH` (kubeconfig exec credential plugins), the proxy and CA
//! variables, and the in-cluster service variables. Credentials never appear on a command line:
//! they go to `helm repo add` / `helm registry login` on stdin, into a private temporary
//! directory removed after the pull.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{OnceCell, Semaphore};
use tracing::{debug, info};

use super::{ChartLocation, ReleaseRecord, clean_stderr, index_digest, sha256_hex};
use crate::binary::Missing;

/// How long one helm operation may take by default (helm's own `--timeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Extra time given to the process beyond helm's own `--timeout`, before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(30);

/// Revisions helm keeps per release.
const HISTORY_MAX: &str = "10";

/// Variables passed through to helm from flotilla's environment.
const PASS_ENV: [&str; 12] = [
    "PATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "TZ",
];

/// Why helm could not do something. Messages carry helm's own words, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelmError {
    /// `--helm-bin` names nothing executable.
    #[error("helm binary {0}: not an executable file")]
    BadBinary(String),
    /// No binary given and none found where we look by default.
    #[error(
        "no helm binary found (looked for `helm` on PATH and in {0}); install helm v4 or pass --helm-bin"
    )]
    NotFound(String),
    /// The process could not be started or waited for.
    #[error("running {bin}: {error}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The OS error.
        error: String,
    },
    /// helm ran longer than the time limit and was killed.
    #[error("helm {what} did not finish within {after:?} and was killed")]
    Timeout {
        /// The operation.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// helm exited non-zero.
    #[error("helm {what} failed: {message}")]
    Failed {
        /// The operation (`pull`, `upgrade`, `uninstall`, `template`, ...).
        what: String,
        /// helm's stderr, cleaned.
        message: String,
    },
    /// helm printed something we could not read.
    #[error("helm {what}: unexpected output: {message}")]
    Output {
        /// The operation.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The chart could not be found in the repository, or does not match its digest.
    #[error("{0}")]
    Chart(String),
    /// Files of the chart cache or a temporary directory could not be written.
    #[error("{0}")]
    Io(String),
}

/// Credentials for a chart repository or registry. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How helm reaches a cluster: a kubeconfig file (and context), or in-cluster credentials
/// (neither set: helm uses the service account of the pod it runs in).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubeAccess {
    /// Absolute path of the kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Context in it.
    pub context: Option<String>,
}

impl KubeAccess {
    fn args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        if let Some(path) = &self.kubeconfig {
            out.push("--kubeconfig".into());
            out.push(path.into());
        }
        if let Some(context) = &self.context {
            out.push("--kube-context".into());
            out.push(context.into());
        }
        out
    }
}

/// The helm binary, its time limit, and a private home directory for its caches.
#[derive(Debug, Clone)]
pub struct Helm {
    bin: PathBuf,
    timeout: Duration,
    home: Arc<tempfile::TempDir>,
}

impl Helm {
    /// A binary at a known path.
    pub fn new(bin: impl Into<PathBuf>, timeout: Duration) -> Result<Self, HelmError> {
        let home = tempfile::Builder::new()
            .prefix("flotilla-helm-home-")
            .tempdir()
            .map_err(|e| HelmError::Io(format!("creating helm's home directory: {e}")))?;
        Ok(Helm {
            bin: bin.into(),
            timeout,
            home: Arc::new(home),
        })
    }

    /// The binary to use: `explicit` (`--helm-bin`; a bare name is looked up on `PATH`), else
    /// `helm` on `PATH`, else `scripts/testbin.sh`'s cache (`$FLOTILLA_TESTBIN` or
    /// `~/.cache/flotilla/testbin`).
    pub fn locate(explicit: Option<&Path>, timeout: Duration) -> Result<Self, HelmError> {
        match crate::binary::locate("helm", explicit) {
            Ok(bin) => Self::new(bin, timeout),
            Err(Missing::BadExplicit(path)) => Err(HelmError::BadBinary(path)),
            Err(Missing::NotFound(cache)) => Err(HelmError::NotFound(cache)),
        }
    }

    /// The binary's path, for logs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The time limit of one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs helm with `args` in `home` (HOME and helm's directories), feeding `stdin`; returns
    /// stdout, or helm's cleaned stderr as the error.
    async fn run(
        &self,
        what: &str,
        args: Vec<OsString>,
        stdin: Option<&[u8]>,
        home: &Path,
        limit: Duration,
    ) -> Result<Vec<u8>, HelmError> {
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .args(&args)
            .current_dir(home)
            .env_clear()
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("TMPDIR", home)
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for var in PASS_ENV {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
        let spawn_error = |e: std::io::Error| HelmError::Spawn {
            bin: self.bin.display().to_string(),
            error: e.to_string(),
        };
        let started = Instant::now();
        let mut child = command.spawn().map_err(spawn_error)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).await.map_err(spawn_error)?;
            drop(pipe);
        }
        let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(result) => result.map_err(spawn_error)?,
            // Dropping the future drops the child, which kill_on_drop kills.
            Err(_) => {
                return Err(HelmError::Timeout {
                    what: what.to_string(),
                    after: limit,
                });
            }
        };
        debug!(what, millis = started.elapsed().as_millis() as u64, status = %output.status, "helm ran");
        if !output.status.success() {
            let home_text = home.display().to_string();
            return Err(HelmError::Failed {
                what: what.to_string(),
                message: clean_stderr(
                    &String::from_utf8_lossy(&output.stderr),
                    &[(&format!("{home_text}/"), ""), (&home_text, ".")],
                ),
            });
        }
        Ok(output.stdout)
    }

    /// Helm's `--timeout` and our kill limit for an operation on a cluster.
    fn limits(&self) -> (OsString, Duration) {
        (
            format!("{}s", self.timeout.as_secs().max(1)).into(),
            self.timeout + KILL_GRACE,
        )
    }

    /// `helm upgrade --install` of a cached chart with `values`, creating the namespace; never
    /// `--wait` (hooks are waited for, as helm does by default). Returns the new release record.
    pub async fn upgrade(
        &self,
        access: &KubeAccess,
        namespace: &str,
        name: &str,
        chart: &Path,
        values: &Value,
    ) -> Result<ReleaseRecord, HelmError> {
        let scratch = Scratch::new()?;
        let values_file = scratch.write("values.yaml", &values_yaml(values))?;
        let (helm_timeout, limit) = self.limits();
        let mut args: Vec<OsString> = vec![
            "upgrade".into(),
            "--install".into(),
            name.into(),
            chart.into(),
            "--namespace".into(),
            namespace.into(),
            "--create-namespace".into(),
            "--values".into(),
            values_file.into(),
            "--output".into(),
            "json".into(),
            "--history-max".into(),
            HISTORY_MAX.into(),
            "--timeout".into(),
            helm_timeout,
        ];
        args.extend(access.args());
        let out = self
            .run("upgrade", args, None, self.home.path(), limit)
            .await?;
        parse_release(&out, "upgrade")
    }

    /// `helm uninstall`; a release already gone is fine.
    pub async fn uninstall(
        &self,
        access: &KubeAccess,
        namespace: &str,
        name: &str,
    ) -> Result<(), HelmError> {
        let (helm_timeout, limit) = self.limits();
        let mut args: Vec<OsString> = vec![
            "uninstall".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--ignore-not-found".into(),
            "--timeout".into(),
            helm_timeout,
        ];
        args.extend(access.args());
        self.run("uninstall", args, None, self.home.path(), limit)
            .await
            .map(|_| ())
    }

    /// `helm template` of a cached chart with `values`, for the cluster's Kubernetes version
    /// (no cluster access): the manifest a DryRun would install.
    pub async fn template(
        &self,
        namespace: &str,
        name: &str,
        chart: &Path,
        values: &Value,
        kube_version: Option<&str>,
    ) -> Result<String, HelmError> {
        let scratch = Scratch::new()?;
        let values_file = scratch.write("values.yaml", &values_yaml(values))?;
        let mut args: Vec<OsString> = vec![
            "template".into(),
            name.into(),
            chart.into(),
            "--namespace".into(),
            namespace.into(),
            "--values".into(),
            values_file.into(),
        ];
        if let Some(version) = kube_version {
            args.push("--kube-version".into());
            args.push(version.into());
        }
        let out = self
            .run("template", args, None, self.home.path(), self.timeout)
            .await?;
        String::from_utf8(out).map_err(|_| HelmError::Output {
            what: "template".into(),
            message: "output is not UTF-8".into(),
        })
    }

    /// Downloads one chart version into `destination` (a private directory) and verifies it
    /// against the repository index's digest where one is published. Returns the `.tgz` path.
    async fn pull(
        &self,
        location: &ChartLocation,
        version: &str,
        credentials: Option<&Credentials>,
        destination: &Path,
    ) -> Result<PathBuf, HelmError> {
        let scratch = Scratch::new()?;
        let work = scratch.path();
        let out_dir = work.join("out");
        std::fs::create_dir(&out_dir).map_err(|e| HelmError::Io(format!("{e}")))?;
        let limit = self.timeout;
        let digest = match location {
            ChartLocation::Repository { url, chart } => {
                let repo_args = |args: &mut Vec<OsString>| {
                    args.push("--repository-config".into());
                    args.push(work.join("repositories.yaml").into());
                    args.push("--repository-cache".into());
                    args.push(work.join("repository").into());
                };
                let mut add: Vec<OsString> = vec![
                    "repo".into(),
                    "add".into(),
                    "flotilla".into(),
                    url.into(),
                    "--force-update".into(),
                ];
                repo_args(&mut add);
                if let Some(c) = credentials {
                    add.extend(["--username".into(), (&c.username).into()]);
                    add.push("--password-stdin".into());
                }
                self.run(
                    "repo add",
                    add,
                    credentials.map(|c| c.password.as_bytes()),
                    work,
                    limit,
                )
                .await
                .map_err(|e| with_repository(e, url))?;
                let index_path = work.join("repository").join("flotilla-index.yaml");
                let index = std::fs::read_to_string(&index_path).map_err(|e| {
                    HelmError::Chart(format!("repository {url}: index.yaml not readable: {e}"))
                })?;
                let digest = index_digest(&index, chart, version)
                    .map_err(|e| HelmError::Chart(format!("repository {url}: {e}")))?;
                let mut pull: Vec<OsString> = vec![
                    "pull".into(),
                    format!("flotilla/{chart}").into(),
                    "--version".into(),
                    version.into(),
                    "--destination".into(),
                    (&out_dir).into(),
                ];
                repo_args(&mut pull);
                self.run("pull", pull, None, work, limit)
                    .await
                    .map_err(|e| with_repository(e, url))?;
                digest
            }
            ChartLocation::Oci {
                reference,
                plain_http,
            } => {
                let registry_config = work.join("registry.json");
                if let Some(c) = credentials {
                    let host = reference
                        .trim_start_matches("oci://")
                        .split('/')
                        .next()
                        .unwrap_or_default();
                    let mut login: Vec<OsString> = vec![
                        "registry".into(),
                        "login".into(),
                        host.into(),
                        "--username".into(),
                        (&c.username).into(),
                        "--password-stdin".into(),
                        "--registry-config".into(),
                        (&registry_config).into(),
                    ];
                    if *plain_http {
                        login.push("--plain-http".into());
                    }
                    self.run(
                        "registry login",
                        login,
                        Some(c.password.as_bytes()),
                        work,
                        limit,
                    )
                    .await?;
                }
                let mut pull: Vec<OsString> = vec![
                    "pull".into(),
                    reference.into(),
                    "--version".into(),
                    version.into(),
                    "--destination".into(),
                    (&out_dir).into(),
                    "--registry-config".into(),
                    (&registry_config).into(),
                ];
                if *plain_http {
                    pull.push("--plain-http".into());
                }
                self.run("pull", pull, None, work, limit).await?;
                // OCI content is addressed by digest; helm checks it while pulling.
                None
            }
        };
        let tgz = std::fs::read_dir(&out_dir)
            .map_err(|e| HelmError::Io(format!("reading the pulled chart: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .ok_or_else(|| HelmError::Output {
                what: "pull".into(),
                message: "no chart archive was written".into(),
            })?;
        let bytes = std::fs::read(&tgz).map_err(|e| HelmError::Io(format!("{e}")))?;
        let actual = sha256_hex(&bytes);
        if let Some(expected) = digest
            && expected != actual
        {
            return Err(HelmError::Chart(format!(
                "chart {} {version}: digest mismatch: the repository's index publishes sha256:{expected}, the download is sha256:{actual}",
                location.chart_name()
            )));
        }
        std::fs::write(destination, &bytes)
            .map_err(|e| HelmError::Io(format!("writing {}: {e}", destination.display())))?;
        Ok(destination.to_path_buf())
    }
}

/// An error of `helm repo add`/`pull` from a repository: say which one.
fn with_repository(e: HelmError, url: &str) -> HelmError {
    match e {
        HelmError::Failed { what, message } => HelmError::Failed {
            what,
            message: format!(
                "{} (repository {url})",
                message
                    .replace(" in flotilla index", " in the repository's index")
                    .replace(" (try 'helm repo update')", "")
                    .replace("\"flotilla\"", "the repository")
            ),
        },
        other => other,
    }
}

fn values_yaml(values: &Value) -> String {
    match values {
        Value::Object(m) if m.is_empty() => "{}\n".into(),
        v => serde_saphyr::to_string(v).unwrap_or_else(|_| v.to_string()),
    }
}

fn parse_release(out: &[u8], what: &str) -> Result<ReleaseRecord, HelmError> {
    let text = String::from_utf8_lossy(out);
    let start = text.find('{').ok_or_else(|| HelmError::Output {
        what: what.into(),
        message: "no JSON release in the output".into(),
    })?;
    let value: Value = serde_json::from_str(&text[start..]).map_err(|e| HelmError::Output {
        what: what.into(),
        message: format!("release JSON: {e}"),
    })?;
    ReleaseRecord::from_json(&value).map_err(|message| HelmError::Output {
        what: what.into(),
        message,
    })
}

/// A private temporary directory (mode 0700) for one helm call: values and credentials files.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Result<Self, HelmError> {
        tempfile::Builder::new()
            .prefix("flotilla-helm-")
            .tempdir()
            .map(Scratch)
            .map_err(|e| HelmError::Io(format!("creating a temporary directory: {e}")))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file readable by its owner only.
    fn write(&self, name: &str, text: &str) -> Result<PathBuf, HelmError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.0.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HelmError::Io(format!("writing {name}: {e}")))?;
        file.write_all(text.as_bytes())
            .map_err(|e| HelmError::Io(format!("writing {name}: {e}")))?;
        Ok(path)
    }
}

// ------------------------------------------------------------------------------ chart cache

type Fetched = Result<PathBuf, HelmError>;

/// Charts fetched once into a directory, keyed by (repository, chart, version): a chart version
/// is immutable, so a cached archive is used for as long as it is there (its sha256, recorded
/// next to it, is checked on every use). Concurrent requests for one key share one download;
/// a failed download is retried on the next pass ([`Charts::retry_failed`]).
pub struct Charts {
    dir: PathBuf,
    tool: Result<Helm, HelmError>,
    fetches: Mutex<HashMap<String, Arc<OnceCell<Fetched>>>>,
    /// At most two downloads at a time.
    running: Semaphore,
    /// At most two helm processes per core working on clusters at a time.
    slots: Semaphore,
}

impl Charts {
    /// A cache in `dir` (created on first use) fetching with `tool`.
    pub fn new(dir: impl Into<PathBuf>, tool: Result<Helm, HelmError>) -> Self {
        Charts {
            dir: dir.into(),
            tool,
            fetches: Mutex::new(HashMap::new()),
            running: Semaphore::new(2),
            slots: Semaphore::new(
                2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
        }
    }

    /// Waits for a slot to run helm against a cluster (install, upgrade, uninstall, template).
    pub async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    /// The helm binary, or why there is none.
    pub fn helm(&self) -> Result<&Helm, HelmError> {
        self.tool.as_ref().map_err(Clone::clone)
    }

    /// Forgets failed fetches, so the next pass tries again.
    pub fn retry_failed(&self) {
        if let Ok(mut fetches) = self.fetches.lock() {
            fetches.retain(|_, cell| !matches!(cell.get(), Some(Err(_))));
        }
    }

    /// The cached archive of a chart version, fetched first when needed.
    pub async fn chart(
        &self,
        location: &ChartLocation,
        version: &str,
        credentials: Option<&Credentials>,
    ) -> Result<PathBuf, HelmError> {
        let helm = self.helm()?;
        let source = match location {
            ChartLocation::Repository { url, chart } => format!("{url}\n{chart}"),
            ChartLocation::Oci { reference, .. } => reference.clone(),
        };
        let key = sha256_hex(format!("{source}\n{version}").as_bytes())[..32].to_string();
        let cell = {
            let mut fetches = self
                .fetches
                .lock()
                .map_err(|_| HelmError::Io("chart cache lock poisoned".into()))?;
            Arc::clone(fetches.entry(key.clone()).or_default())
        };
        cell.get_or_init(|| async {
            let dir = self.dir.join(&key);
            let archive = dir.join("chart.tgz");
            let sum = dir.join("chart.sha256");
            if let (Ok(bytes), Ok(expected)) =
                (std::fs::read(&archive), std::fs::read_to_string(&sum))
                && sha256_hex(&bytes) == expected.trim()
            {
                return Ok(archive);
            }
            let _permit = self.running.acquire().await;
            let started = Instant::now();
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| HelmError::Io(format!("chart cache {}: {e}", self.dir.display())))?;
            let staging = tempfile::Builder::new()
                .prefix(".fetch-")
                .tempdir_in(&self.dir)
                .map_err(|e| HelmError::Io(format!("chart cache {}: {e}", self.dir.display())))?;
            let staged = staging.path().join("chart.tgz");
            helm.pull(location, version, credentials, &staged).await?;
            let bytes = std::fs::read(&staged).map_err(|e| HelmError::Io(format!("{e}")))?;
            std::fs::write(staging.path().join("chart.sha256"), sha256_hex(&bytes))
                .map_err(|e| HelmError::Io(format!("{e}")))?;
            std::fs::write(
                staging.path().join("source.txt"),
                format!("{source}\n{version}\n"),
            )
            .map_err(|e| HelmError::Io(format!("{e}")))?;
            let _ = std::fs::remove_dir_all(&dir);
            let staged_dir = staging.keep();
            if let Err(e) = std::fs::rename(&staged_dir, &dir) {
                let _ = std::fs::remove_dir_all(&staged_dir);
                if !archive.exists() {
                    return Err(HelmError::Io(format!("chart cache {}: {e}", dir.display())));
                }
            }
            info!(
                chart = location.chart_name(),
                version,
                millis = started.elapsed().as_millis() as u64,
                "helm chart fetched"
            );
            Ok(archive)
        })
        .await
        .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_helm(dir: &Path, body: &str) -> Helm {
        use std::os::unix::fs::PermissionsExt as _;
        let script = dir.join("helm");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Helm::locate(Some(&script), Duration::from_secs(5)).expect("executable")
    }

    #[tokio::test]
    async fn a_hanging_helm_is_killed_and_errors_carry_its_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helm = fake_helm(dir.path(), "echo 'Error: UPGRADE FAILED: boom' >&2\nexit 1");
        let err = helm
            .uninstall(&KubeAccess::default(), "ns", "r")
            .await
            .expect_err("fails");
        assert_eq!(
            err,
            HelmError::Failed {
                what: "uninstall".into(),
                message: "UPGRADE FAILED: boom".into()
            }
        );
        let sleeper = fake_helm(dir.path(), "exec sleep 30");
        let started = Instant::now();
        let err = sleeper
            .run("pull", vec![], None, dir.path(), Duration::from_millis(200))
            .await
            .expect_err("killed");
        assert!(matches!(err, HelmError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn helm_gets_a_private_environment_and_passwords_only_on_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let helm = fake_helm(
            dir.path(),
            &format!(
                "echo \"HOME=$HOME CFG=$HELM_CONFIG_HOME CARGO=$CARGO ARGS=$*\" >> {}\ncat >> {}\nexit 1",
                log.display(),
                log.display()
            ),
        );
        let credentials = Credentials {
            username: "u".into(),
            password: "pa55".into(),
        };
        let charts = Charts::new(dir.path().join("cache"), Ok(helm));
        let location = ChartLocation::Repository {
            url: "http://127.0.0.1:9/charts".into(),
            chart: "web".into(),
        };
        let err = charts
            .chart(&location, "1.0.0", Some(&credentials))
            .await
            .expect_err("fake fails");
        assert!(
            err.to_string()
                .contains("repository http://127.0.0.1:9/charts"),
            "{err}"
        );
        let text = std::fs::read_to_string(&log).expect("log");
        let first = text.lines().next().expect("one call");
        // cargo sets CARGO for the tests it runs; helm must not see flotilla's environment.
        assert!(first.contains("CARGO= "), "{first}");
        assert!(
            !first.contains(&format!(
                "HOME={} ",
                std::env::var("HOME").unwrap_or_default()
            )),
            "{first}"
        );
        assert!(
            first.contains("ARGS=repo add flotilla http://127.0.0.1:9/charts"),
            "{first}"
        );
        assert!(first.contains("--username u --password-stdin"), "{first}");
        assert!(!first.contains("pa55"), "{first}");
        assert!(
            text.contains("pa55"),
            "the password arrives on stdin: {text}"
        );
        assert!(format!("{credentials:?}").contains("<redacted>"));
        // A failure is cached for the pass and forgotten by retry_failed.
        charts
            .chart(&location, "1.0.0", None)
            .await
            .expect_err("cached");
        let calls = || {
            std::fs::read_to_string(&log)
                .expect("log")
                .matches("ARGS=")
                .count()
        };
        assert_eq!(calls(), 1);
        charts.retry_failed();
        charts
            .chart(&location, "1.0.0", None)
            .await
            .expect_err("again");
        assert_eq!(calls(), 2);
    }
}
