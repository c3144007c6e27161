//! Real Helm parts for the Helm tests: the pinned `helm` binary, a real OCI registry (CNCF
//! distribution, built by `scripts/testbin.sh`) and a classic http chart repository on loopback,
//! and small charts written to temporary directories.
//!
//! - [`Helm`] runs the pinned binary with its own cache/config/data homes (never `~/.config/helm`),
//!   optionally against one cluster's kubeconfig; [`Helm::list`] parses `helm list -A -o json`.
//! - [`Chart`] builds a chart: a ConfigMap (greeting, chart and app version, kube version) and a
//!   Deployment scaled to 0 by default; optionally a CRD (in `crds/`) with a custom resource, a
//!   Secret, a hook the API server rejects (fails in well under a second), a hook that never
//!   completes (a Job: these control planes run no controllers), a template that fails to render,
//!   a `kubeVersion` constraint.
//! - [`ChartRepo`] serves `index.yaml` and `*.tgz` from a temporary directory over HTTP/1.1 on
//!   127.0.0.1 (std only), optionally behind Basic auth, and records every request.
//! - [`Registry`] runs the distribution registry on 127.0.0.1 (plain http: helm v4 needs
//!   `--plain-http` for it, on `push`, `pull`, `install`, `upgrade`, `template`, `show`), with a
//!   temporary storage directory, optionally behind htpasswd Basic auth; [`push_oci`] pushes a
//!   chart to it.
//!
//! Never use `--wait` against these clusters: there are no nodes and no controllers, so a
//! Deployment is accepted but never becomes ready and a Job never runs.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{require_testbin, testbin_dir};

/// The pinned helm binary (`$FLOTILLA_TESTBIN/helm`, v4.3.1); panics when it is missing.
pub fn helm_bin() -> PathBuf {
    require_testbin(&["helm"]);
    testbin_dir().join("helm")
}

/// The pinned OCI registry binary (`$FLOTILLA_TESTBIN/registry`, distribution v3.0.0).
pub fn registry_bin() -> PathBuf {
    require_testbin(&["registry"]);
    testbin_dir().join("registry")
}

// ---------------------------------------------------------------------------------------------
// Running helm

/// One helm invocation's outcome.
#[derive(Debug)]
pub struct HelmRun {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl HelmRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the output unless helm succeeded; returns stdout.
    #[track_caller]
    pub fn expect_success(&self) -> &str {
        assert!(
            self.success(),
            "helm {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Panics unless helm failed; returns stderr (helm's `Error: ...` message).
    #[track_caller]
    pub fn expect_failure(&self) -> &str {
        assert!(
            !self.success(),
            "helm {:?} succeeded but should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

/// A release as `helm list -A -o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRelease {
    pub name: String,
    pub namespace: String,
    pub revision: u32,
    /// `deployed`, `failed`, `pending-install`, ...
    pub status: String,
    /// `<chart name>-<chart version>`, e.g. `demo-1.0.0`.
    pub chart: String,
    pub app_version: String,
}

/// The pinned helm binary with private `HELM_CACHE_HOME`, `HELM_CONFIG_HOME` and `HELM_DATA_HOME`
/// (a temporary directory removed on drop), so nothing leaks between tests or from `~`.
pub struct Helm {
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Default for Helm {
    fn default() -> Self {
        Self::new()
    }
}

impl Helm {
    /// No kubeconfig: for `package`, `repo index`, `push`, `pull`, `template` (client-only).
    pub fn new() -> Helm {
        let home = tempfile::Builder::new()
            .prefix("flotilla-helm-home-")
            .tempdir()
            .expect("create a temporary helm home");
        Helm {
            home,
            kubeconfig: None,
        }
    }

    /// Runs against the cluster of `kubeconfig` (`KUBECONFIG`).
    pub fn with_kubeconfig(kubeconfig: impl Into<PathBuf>) -> Helm {
        let mut helm = Helm::new();
        helm.kubeconfig = Some(kubeconfig.into());
        helm
    }

    /// The directory holding `cache/`, `config/` and `data/`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A `helm` command with the private homes and the kubeconfig (or none) in its environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(helm_bin());
        let home = self.home.path();
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .env_remove("HELM_DRIVER")
            .env_remove("HELM_REGISTRY_CONFIG")
            .env_remove("HELM_REPOSITORY_CONFIG")
            .env_remove("HELM_REPOSITORY_CACHE")
            .stdin(Stdio::null());
        match &self.kubeconfig {
            Some(path) => cmd.env("KUBECONFIG", path),
            // A path that does not exist: helm then talks to no cluster at all.
            None => cmd.env("KUBECONFIG", home.join("no-kubeconfig")),
        };
        cmd
    }

    /// Runs `helm ARGS` and returns its outcome, success or not.
    pub fn run(&self, args: &[&str]) -> HelmRun {
        let start = Instant::now();
        let out = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", helm_bin().display()));
        HelmRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    /// Runs `helm ARGS`, panicking with its output when it fails; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).expect_success().to_string()
    }

    /// `helm list -A -o json`: every release in every namespace (deployed and failed ones;
    /// helm v4 has no `--all`), sorted by namespace and name.
    #[track_caller]
    pub fn list(&self) -> Vec<ListedRelease> {
        let out = self.ok(&["list", "--all-namespaces", "--output", "json"]);
        let value: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("helm list output is not JSON ({e}): {out}"));
        let field = |item: &serde_json::Value, key: &str| -> String {
            item.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let mut releases: Vec<ListedRelease> = value
            .as_array()
            .unwrap_or_else(|| panic!("helm list output is not a JSON array: {out}"))
            .iter()
            .map(|item| ListedRelease {
                name: field(item, "name"),
                namespace: field(item, "namespace"),
                // A string in helm's JSON ("1").
                revision: field(item, "revision").parse().unwrap_or_else(|_| {
                    panic!("release {item} has no numeric revision");
                }),
                status: field(item, "status"),
                chart: field(item, "chart"),
                app_version: field(item, "app_version"),
            })
            .collect();
        releases.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        releases
    }

    /// The release `namespace/name` from [`list`](Self::list), if helm lists it.
    #[track_caller]
    pub fn release(&self, namespace: &str, name: &str) -> Option<ListedRelease> {
        self.list()
            .into_iter()
            .find(|r| r.namespace == namespace && r.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Charts

/// A hook that makes `helm install`/`upgrade` fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailingHook {
    /// A `pre-install,pre-upgrade` ConfigMap hook with an invalid data key: the API server
    /// rejects it (422) and helm fails at once with `failed pre-install: ... is invalid: ...`
    /// (about 0.2 s against these control planes).
    Rejected,
    /// A `pre-install,pre-upgrade` Job hook: accepted, but nothing ever runs it here, so helm
    /// fails only after its `--timeout` (default 5m; pass e.g. `--timeout 3s`) with
    /// `failed pre-install: resource Job/<ns>/<release>-pre-install not ready ... context
    /// deadline exceeded`. The Job is left behind.
    NeverCompletes,
}

/// A small chart, written to disk by [`write_to`](Chart::write_to) or packaged by
/// [`package`](Chart::package).
///
/// Default templates (both named `<release>-<chart>`):
/// - a ConfigMap with `greeting` (`.Values.greeting`), `chartVersion`, `appVersion`,
///   `kubeVersion` (`.Capabilities.KubeVersion.Version`), `releaseNamespace`, and one
///   `extra.<key>` entry per key of the map `.Values.extra`;
/// - a Deployment with `.Values.replicas` (0) replicas of an image that does not exist.
///
/// Default values.yaml: `greeting: hello`, `replicas: 0`, `extra: {}`.
#[derive(Debug, Clone)]
pub struct Chart {
    name: String,
    version: String,
    app_version: String,
    kube_version: Option<String>,
    values_yaml: String,
    default_templates: bool,
    templates: Vec<(String, String)>,
    crd: bool,
    secret: bool,
    hook: Option<FailingHook>,
    render_failure: Option<String>,
}

/// Kind, group and plural of the CRD that [`Chart::with_crd`] ships.
pub const CRD_GROUP: &str = "charts.flotilla.test";
pub const CRD_KIND: &str = "Widget";
pub const CRD_PLURAL: &str = "widgets";
/// `widgets.charts.flotilla.test`.
pub const CRD_NAME: &str = "widgets.charts.flotilla.test";

const DEFAULT_VALUES: &str = "\
greeting: hello
replicas: 0
extra: {}
";

const CONFIGMAP_TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
    helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
data:
  greeting: {{ .Values.greeting | quote }}
  chartVersion: {{ .Chart.Version | quote }}
  appVersion: {{ .Chart.AppVersion | quote }}
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  releaseNamespace: {{ .Release.Namespace | quote }}
  {{- range $key, $value := .Values.extra }}
  extra.{{ $key }}: {{ $value | quote }}
  {{- end }}
"#;

const DEPLOYMENT_TEMPLATE: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      containers:
      - name: app
        image: "registry.invalid/flotilla-test/{{ .Chart.Name }}:{{ .Chart.AppVersion }}"
"#;

const SECRET_TEMPLATE: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
type: Opaque
stringData:
  password: {{ .Values.password | quote }}
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.charts.flotilla.test
spec:
  group: charts.flotilla.test
  scope: Namespaced
  names:
    kind: Widget
    listKind: WidgetList
    plural: widgets
    singular: widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET_TEMPLATE: &str = r#"apiVersion: charts.flotilla.test/v1
kind: Widget
metadata:
  name: {{ .Release.Name }}-{{ .Chart.Name }}
spec:
  greeting: {{ .Values.greeting | quote }}
  crdKnownAtRender: {{ .Capabilities.APIVersions.Has "charts.flotilla.test/v1/Widget" }}
"#;

const REJECTED_HOOK: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-pre-install
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
data:
  "not a valid key!": "the API server rejects this object"
"#;

const JOB_HOOK: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-pre-install
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: hook
        image: registry.invalid/flotilla-test/hook:never
        command: ["false"]
"#;

impl Chart {
    /// Chart `name` at `version` (SemVer), appVersion = version.
    pub fn new(name: &str, version: &str) -> Chart {
        Chart {
            name: name.to_string(),
            version: version.to_string(),
            app_version: version.to_string(),
            kube_version: None,
            values_yaml: DEFAULT_VALUES.to_string(),
            default_templates: true,
            templates: Vec::new(),
            crd: false,
            secret: false,
            hook: None,
            render_failure: None,
        }
    }

    pub fn app_version(mut self, app_version: &str) -> Chart {
        self.app_version = app_version.to_string();
        self
    }

    /// `kubeVersion` constraint in Chart.yaml, e.g. `">=1.35.0-0"`: helm refuses to install
    /// on (or `template --kube-version` for) a cluster outside it.
    pub fn kube_version(mut self, constraint: &str) -> Chart {
        self.kube_version = Some(constraint.to_string());
        self
    }

    /// Replaces values.yaml (keep `greeting`, `replicas` and `extra` if the default templates
    /// stay).
    pub fn values_yaml(mut self, yaml: &str) -> Chart {
        self.values_yaml = yaml.to_string();
        self
    }

    /// Adds `templates/<file>` with `content`.
    pub fn template(mut self, file: &str, content: &str) -> Chart {
        self.templates.push((file.to_string(), content.to_string()));
        self
    }

    /// Leaves out the default ConfigMap and Deployment.
    pub fn without_default_templates(mut self) -> Chart {
        self.default_templates = false;
        self
    }

    /// Ships the CRD [`CRD_NAME`] in `crds/` (helm installs it before the templates, never
    /// upgrades or deletes it) and a Widget `<release>-<chart>` in the templates.
    pub fn with_crd(mut self) -> Chart {
        self.crd = true;
        self
    }

    /// Adds a Secret `<release>-<chart>` with `stringData.password: .Values.password`
    /// (values.yaml gets `password: changeme` appended).
    pub fn with_secret(mut self) -> Chart {
        self.secret = true;
        self
    }

    /// Adds a hook that fails install and upgrade (see [`FailingHook`]).
    pub fn failing_hook(mut self, hook: FailingHook) -> Chart {
        self.hook = Some(hook);
        self
    }

    /// Adds a template that always fails to render with `message` (`{{ fail ... }}`).
    pub fn failing_render(mut self, message: &str) -> Chart {
        self.render_failure = Some(message.to_string());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `<name>-<version>`, as `helm list` shows the chart.
    pub fn chart_label(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// `<name>-<version>.tgz`, what `helm package` writes.
    pub fn archive_name(&self) -> String {
        format!("{}-{}.tgz", self.name, self.version)
    }

    /// Writes the chart as `<dir>/<name>/` and returns that directory.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let root = dir.join(&self.name);
        let templates = root.join("templates");
        fs::create_dir_all(&templates)
            .unwrap_or_else(|e| panic!("create {}: {e}", templates.display()));
        let mut chart_yaml = format!(
            "apiVersion: v2\nname: {}\ndescription: flotilla test chart\ntype: application\n\
             version: {}\nappVersion: {:?}\n",
            self.name, self.version, self.app_version
        );
        if let Some(constraint) = &self.kube_version {
            chart_yaml.push_str(&format!("kubeVersion: {constraint:?}\n"));
        }
        write(&root.join("Chart.yaml"), &chart_yaml);
        let mut values = self.values_yaml.clone();
        if self.secret {
            if !values.ends_with('\n') && !values.is_empty() {
                values.push('\n');
            }
            values.push_str("password: changeme\n");
        }
        write(&root.join("values.yaml"), &values);
        let mut files: Vec<(String, String)> = Vec::new();
        if self.default_templates {
            files.push(("configmap.yaml".into(), CONFIGMAP_TEMPLATE.into()));
            files.push(("deployment.yaml".into(), DEPLOYMENT_TEMPLATE.into()));
        }
        if self.secret {
            files.push(("secret.yaml".into(), SECRET_TEMPLATE.into()));
        }
        if self.crd {
            let crds = root.join("crds");
            fs::create_dir_all(&crds).unwrap_or_else(|e| panic!("create {}: {e}", crds.display()));
            write(&crds.join("widgets.yaml"), CRD);
            files.push(("widget.yaml".into(), WIDGET_TEMPLATE.into()));
        }
        match self.hook {
            Some(FailingHook::Rejected) => files.push(("hook.yaml".into(), REJECTED_HOOK.into())),
            Some(FailingHook::NeverCompletes) => files.push(("hook.yaml".into(), JOB_HOOK.into())),
            None => {}
        }
        if let Some(message) = &self.render_failure {
            files.push(("fail.yaml".into(), format!("{{{{ fail {message:?} }}}}\n")));
        }
        files.extend(self.templates.iter().cloned());
        for (file, content) in files {
            write(&templates.join(file), &content);
        }
        root
    }

    /// `helm package` into `dest` (created if missing); returns the `.tgz` path.
    pub fn package(&self, dest: &Path) -> PathBuf {
        let src = tempfile::Builder::new()
            .prefix("flotilla-chart-")
            .tempdir()
            .expect("create a temporary chart directory");
        let dir = self.write_to(src.path());
        fs::create_dir_all(dest).unwrap_or_else(|e| panic!("create {}: {e}", dest.display()));
        Helm::new().ok(&["package", path_str(&dir), "--destination", path_str(dest)]);
        let archive = dest.join(self.archive_name());
        assert!(
            archive.is_file(),
            "helm package did not write {}",
            archive.display()
        );
        archive
    }
}

fn write(path: &Path, content: &str) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
}

// ---------------------------------------------------------------------------------------------
// OCI registry

/// User and password of a registry started with [`Registry::start_with_basic_auth`].
pub const REGISTRY_USER: &str = "flotilla";
pub const REGISTRY_PASSWORD: &str = "flotilla-registry-password";
/// bcrypt (cost 4) of [`REGISTRY_PASSWORD`]: distribution's htpasswd file accepts only bcrypt.
const REGISTRY_PASSWORD_BCRYPT: &str =
    "$2b$04$YQckIxDzlUf8TebUCo.szuslz3dij.mzCNY7dFP6zGSuM2uSaI.4m";

/// One request from the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRequest {
    pub method: String,
    /// Path and query, e.g. `/v2/charts/demo/manifests/1.0.0`.
    pub path: String,
    pub status: u16,
    /// The authenticated user (`-` when none).
    pub user: String,
}

/// A running distribution registry (plain http on 127.0.0.1, filesystem storage in a temporary
/// directory). Dropping it kills the process. A detached watchdog kills it too if the test
/// process dies without dropping it.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
    auth: bool,
    pushed: Mutex<Vec<PushedChart>>,
}

/// A chart [`push_oci`] pushed to a [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedChart {
    pub name: String,
    pub version: String,
    /// The manifest digest helm printed (`sha256:...`): `<chart_ref>@<digest>` pulls it.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the `.tgz`, the chart layer's digest.
    pub layer_digest: String,
}

impl Registry {
    /// A registry anyone may push to and pull from.
    pub fn start() -> Registry {
        Self::start_inner(false)
    }

    /// A registry requiring Basic auth with [`REGISTRY_USER`] / [`REGISTRY_PASSWORD`]
    /// (`helm registry login`, or `--username/--password` on push/pull/install).
    pub fn start_with_basic_auth() -> Registry {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> Registry {
        let bin = registry_bin();
        let dir = tempfile::Builder::new()
            .prefix("flotilla-registry-")
            .tempdir()
            .expect("create a temporary registry directory");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create the registry storage directory");
        // Port 0: the registry binds a free port and logs it, so there is no race for it.
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n  secret: flotilla-test-registry\n",
            path_str(&storage)
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            write(
                &htpasswd,
                &format!("{REGISTRY_USER}:{REGISTRY_PASSWORD_BCRYPT}\n"),
            );
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {}\n",
                path_str(&htpasswd)
            ));
        }
        let config_path = dir.path().join("config.yml");
        write(&config_path, &config);
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).expect("create the registry log");
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config_path)
            .env("OTEL_SDK_DISABLED", "true")
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut registry = Registry {
            child,
            dir,
            host: String::new(),
            auth,
            pushed: Mutex::new(Vec::new()),
        };
        registry.spawn_watchdog();
        registry.host = registry.wait_listening(&log_path);
        registry
    }

    /// Kills the registry if this test process goes away without dropping it.
    fn spawn_watchdog(&self) {
        let script = "while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do \
                      sleep 1; done; kill \"$2\" 2>/dev/null; exit 0";
        let spawned = Command::new("setsid")
            .args(["sh", "-c", script, "registry-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("registry watchdog not started: {e}");
        }
    }

    /// Waits for `listening on 127.0.0.1:PORT` in the log.
    fn wait_listening(&mut self, log_path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = fs::read_to_string(log_path).unwrap_or_default();
            if let Some(rest) = log.split("msg=\"listening on ").nth(1) {
                let addr = rest.split('"').next().unwrap_or_default().to_string();
                if addr.parse::<SocketAddr>().is_ok() && !addr.ends_with(":0") {
                    return addr;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the registry exited ({status}) before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not listen within 30s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, for `helm registry login`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `oci://127.0.0.1:PORT/charts`: where [`push_oci`] pushes; a chart is
    /// `<url>/<name>` with `--version <version>` (or `:<version>`).
    pub fn url(&self) -> String {
        format!("oci://{}/charts", self.host)
    }

    /// `oci://127.0.0.1:PORT/charts/<name>`.
    pub fn chart_ref(&self, name: &str) -> String {
        format!("{}/{name}", self.url())
    }

    pub fn requires_auth(&self) -> bool {
        self.auth
    }

    /// The registry's log (logrus text lines and the access log).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The access log so far. The registry writes a line after it has sent the response, so a
    /// request helm made just before exiting may appear a few milliseconds later: use
    /// [`wait_for_requests`](Self::wait_for_requests) to count.
    pub fn requests(&self) -> Vec<RegistryRequest> {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        log.lines().filter_map(parse_access_line).collect()
    }

    /// Polls the access log (up to 5s) until `done(requests)` holds; returns the requests then
    /// (or the last read when it never holds).
    pub fn wait_for_requests(
        &self,
        done: impl Fn(&[RegistryRequest]) -> bool,
    ) -> Vec<RegistryRequest> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let requests = self.requests();
            if done(&requests) || Instant::now() >= deadline {
                return requests;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Successful downloads of the chart archive (the OCI layer `helm push` made from the
    /// `.tgz`) of any version of chart `name` pushed with [`push_oci`]. helm v4 fetches the
    /// manifest, the config blob and this layer on every pull (its content cache does not spare
    /// the download); `helm push` itself downloads no layer (it only reads the manifest back).
    pub fn chart_downloads(&self, name: &str) -> usize {
        let layers: Vec<String> = self
            .pushed
            .lock()
            .expect("pushed lock")
            .iter()
            .filter(|p| p.name == name)
            .map(|p| format!("/v2/charts/{name}/blobs/{}", p.layer_digest))
            .collect();
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.status == 200 && layers.contains(&r.path))
            .count()
    }

    /// What [`push_oci`] pushed here, in order.
    pub fn pushed(&self) -> Vec<PushedChart> {
        self.pushed.lock().expect("pushed lock").clone()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1 - user [date] "GET /v2/... HTTP/1.1" 200 123 "" "agent"`.
fn parse_access_line(line: &str) -> Option<RegistryRequest> {
    if line.starts_with("time=") {
        return None;
    }
    let mut head = line.split_whitespace();
    let _ip = head.next()?;
    let _ident = head.next()?;
    let user = head.next()?.to_string();
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut parts = request.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(RegistryRequest {
        method,
        path,
        status,
        user,
    })
}

/// Packages `chart` and pushes it with `helm push --plain-http` to `registry` (with the
/// registry's credentials when it requires them); returns the manifest digest
/// (`sha256:...`). The chart is then `registry.chart_ref(chart.name())`, version
/// `chart.version()`.
pub fn push_oci(chart: &Chart, registry: &Registry) -> String {
    let dir = tempfile::Builder::new()
        .prefix("flotilla-oci-push-")
        .tempdir()
        .expect("create a temporary directory");
    let archive = chart.package(dir.path());
    let url = registry.url();
    let mut args = vec!["push", path_str(&archive), url.as_str(), "--plain-http"];
    if registry.requires_auth() {
        args.extend(["--username", REGISTRY_USER, "--password", REGISTRY_PASSWORD]);
    }
    let run = Helm::new().run(&args);
    run.expect_success();
    // helm prints `Pushed: ...` and `Digest: sha256:...` (on stderr in v4).
    let all = format!("{}\n{}", run.stdout, run.stderr);
    let digest = all
        .lines()
        .find_map(|line| line.trim().strip_prefix("Digest: "))
        .map(|digest| digest.trim().to_string())
        .unwrap_or_else(|| panic!("helm push printed no digest:\n{all}"));
    let bytes = fs::read(&archive).unwrap_or_else(|e| panic!("read {}: {e}", archive.display()));
    let layer_digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    registry
        .pushed
        .lock()
        .expect("pushed lock")
        .push(PushedChart {
            name: chart.name().to_string(),
            version: chart.version().to_string(),
            manifest_digest: digest.clone(),
            layer_digest,
        });
    digest
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// http chart repository

/// One request to a [`ChartRepo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRequest {
    pub method: String,
    /// Path and query as requested, e.g. `/index.yaml`, `/demo-1.0.0.tgz`.
    pub path: String,
    pub status: u16,
    /// The Basic-auth user the request presented (right password or not).
    pub user: Option<String>,
}

struct RepoState {
    root: PathBuf,
    credentials: Option<(String, String)>,
    requests: Mutex<Vec<RepoRequest>>,
    /// When set, every request is answered with this status (an outage).
    forced_status: Mutex<Option<u16>>,
}

/// A classic Helm chart repository over http on 127.0.0.1: serves the files of a temporary
/// directory (`index.yaml`, `*.tgz`) to GET and HEAD, one thread per connection, every response
/// closing its connection. Dropping it stops the server (the port then refuses connections).
pub struct ChartRepo {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    state: Arc<RepoState>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ChartRepo {
    /// An open repository with an empty `index.yaml`.
    pub fn start() -> ChartRepo {
        Self::start_inner(None)
    }

    /// A repository answering 401 (`WWW-Authenticate: Basic`) to any request without
    /// `user`/`password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> ChartRepo {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(credentials: Option<(String, String)>) -> ChartRepo {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-chart-repo-")
            .tempdir()
            .expect("create a temporary chart repository directory");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(RepoState {
            root: dir.path().to_path_buf(),
            credentials,
            requests: Mutex::new(Vec::new()),
            forced_status: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        let _ = serve_file(&state, stream);
                    });
                }
            })
        };
        let repo = ChartRepo {
            addr,
            dir,
            state,
            stop,
            accept: Some(accept),
        };
        repo.reindex();
        repo
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): for `helm install --repo`, `helm repo add`,
    /// and the `url` of a flotilla chart source.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The served directory: tests may drop in or tamper with files (then
    /// [`reindex`](Self::reindex) if the index should follow).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Packages `chart` into the repository and regenerates `index.yaml` (with
    /// `helm repo index --url <url>`, so every entry has an absolute URL and a sha256 digest).
    /// Returns the archive's path.
    pub fn add_chart(&self, chart: &Chart) -> PathBuf {
        let archive = chart.package(self.root());
        self.reindex();
        archive
    }

    /// Regenerates `index.yaml` from the `.tgz` files in the root.
    pub fn reindex(&self) {
        let url = self.url();
        Helm::new().ok(&["repo", "index", path_str(self.root()), "--url", &url]);
    }

    /// Every request so far, in order of arrival. A request is recorded before it is answered,
    /// so everything a finished helm process asked for is here.
    pub fn requests(&self) -> Vec<RepoRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().expect("requests lock").len()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.state.requests.lock().expect("requests lock").clear();
    }

    /// Successful GETs of `/<file>` (e.g. `index.yaml`, `demo-1.0.0.tgz`).
    pub fn downloads(&self, file: &str) -> usize {
        let path = format!("/{}", file.trim_start_matches('/'));
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.status == 200 && r.path == path)
            .count()
    }

    /// Successful GETs of `chart`'s archive.
    pub fn chart_downloads(&self, chart: &Chart) -> usize {
        self.downloads(&chart.archive_name())
    }

    /// Successful GETs of `index.yaml`.
    pub fn index_fetches(&self) -> usize {
        self.downloads("index.yaml")
    }

    /// `Some(status)`: answer every request with that status (e.g. 503) until `None`.
    pub fn force_status(&self, status: Option<u16>) {
        *self.state.forced_status.lock().expect("status lock") = status;
    }
}

impl Drop for ChartRepo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn serve_file(state: &RepoState, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(()); // closed without a request (e.g. the shutdown wake-up)
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(());
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            } else if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if content_length > 0 {
        // Not expected from helm; read and ignore, bounded.
        let mut sink = vec![0; content_length.min(1 << 20)];
        let _ = reader.read_exact(&mut sink);
    }
    let presented = authorization.as_deref().and_then(basic_credentials);
    let user = presented.as_ref().map(|(user, _)| user.clone());
    let authorized = match &state.credentials {
        None => true,
        Some(expected) => presented.as_ref() == Some(expected),
    };
    let path = target.split('?').next().unwrap_or("").to_string();
    let forced = *state.forced_status.lock().expect("status lock");
    let (status, content_type, body): (u16, &str, Vec<u8>) = if let Some(status) = forced {
        (status, "text/plain", b"forced failure\n".to_vec())
    } else if !authorized {
        (401, "text/plain", b"unauthorized\n".to_vec())
    } else if method != "GET" && method != "HEAD" {
        (405, "text/plain", b"method not allowed\n".to_vec())
    } else {
        match resolve(&state.root, &path) {
            Some(file) => match fs::read(&file) {
                Ok(bytes) => (200, content_type_of(&file), bytes),
                Err(_) => (404, "text/plain", b"not found\n".to_vec()),
            },
            None => (404, "text/plain", b"not found\n".to_vec()),
        }
    };
    state
        .requests
        .lock()
        .expect("requests lock")
        .push(RepoRequest {
            method: method.clone(),
            path: target,
            status,
            user,
        });
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"charts\"\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    if method != "HEAD" {
        writer.write_all(&body)?;
    }
    writer.flush()
}

/// A regular file under `root` for the URL path, refusing anything that climbs out.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    if relative.is_empty()
        || relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

fn content_type_of(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("yaml") | Some("yml") => "application/yaml",
        Some("tgz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Release storage

/// Decodes the `release` entry of a helm release Secret (`sh.helm.release.v1.<name>.v<N>`, type
/// `helm.sh/release.v1`): its bytes (the Secret's data, already base64-decoded once by the API
/// client) are base64 of gzip of JSON. Returns the JSON (keys `name`, `namespace`, `version`,
/// `info` {status, first_deployed, last_deployed, description}, `chart` {metadata, ...},
/// `config` (the user-supplied values; absent when none), `manifest`, `apply_method`).
/// Uses `gzip -dc` (no gzip crate in the tree).
pub fn decode_release(data: &[u8]) -> serde_json::Value {
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data.trim_ascii())
        .expect("release payload is base64");
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip -dc");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&gz);
    });
    let out = child.wait_with_output().expect("gzip -dc");
    let _ = feeder.join();
    assert!(out.status.success(), "gzip -dc of a release payload failed");
    serde_json::from_slice(&out.stdout).expect("release payload is JSON")
}
