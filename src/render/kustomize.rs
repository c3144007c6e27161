//! kustomizationRefs: the `kustomize` binary run on a directory of the config snapshot.
//!
//! Two halves. The pure half works on values: [`check_references`] walks a kustomization and
//! everything it pulls in and refuses remote bases and paths that leave the config root,
//! [`parse_output`] turns `kustomize build` output into objects, [`set_namespace`] applies a
//! `targetNamespace`. The adapter half ([`Kustomize`], [`Workspace`]) does the I/O: it writes the
//! snapshot to a private temporary directory once (overlays refer to `../base`, so the whole tree
//! must exist on disk), runs `kustomize build` there with a time limit, and caches the output.
//!
//! No network, in two layers. Before kustomize runs, [`check_references`] refuses any reference
//! that looks remote (a URL, `git@host:`, `github.com/...`) or leaves the root (a directory
//! resource outside the kustomization root is allowed by kustomize's `LoadRestrictionsRootOnly`,
//! so `../../../../home/x` would read the host). Then kustomize runs with an empty environment:
//! no `PATH` (it cannot start `git`, which it uses for remote bases) and HTTP(S) proxies set to a
//! closed loopback port (its HTTP fetches of remote files fail at once).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore};
use tracing::{debug, info};

use super::{RenderError, RenderedObject, RenderedProfile, stamp};
use crate::binary::Missing;
use crate::config::yaml::check_manifests;
use crate::source::{Entry, FileTree, PathError};

/// How long one `kustomize build` may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The names kustomize accepts for the kustomization file of a directory.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Most of kustomize's stderr kept in a message (a note must stay readable).
const MAX_STDERR: usize = 4096;

/// An address where nothing listens: kustomize's HTTP client is pointed at it as its proxy.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// Why a kustomization could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KustomizeError {
    /// `--kustomize-bin` names nothing executable.
    #[error("kustomize binary {0}: not an executable file")]
    BadBinary(String),
    /// No binary given and none found where we look by default.
    #[error(
        "no kustomize binary found (looked for `kustomize` on PATH and in {0}); install kustomize v5 or pass --kustomize-bin"
    )]
    NotFound(String),
    /// A reference that would read the network or the host's filesystem.
    #[error("{0}")]
    Refused(String),
    /// The snapshot could not be written to the temporary directory.
    #[error("writing the config tree for kustomize: {0}")]
    Workspace(String),
    /// The process could not be started or waited for.
    #[error("running {bin}: {error}")]
    Spawn {
        /// The binary.
        bin: String,
        /// The OS error.
        error: String,
    },
    /// The build ran longer than the time limit and was killed.
    #[error("kustomize build did not finish within {0:?} and was killed")]
    Timeout(Duration),
    /// kustomize exited non-zero; its message, with temporary paths made repo-relative.
    #[error("kustomize build failed ({status}): {stderr}")]
    Failed {
        /// Exit status.
        status: String,
        /// What kustomize printed on stderr.
        stderr: String,
    },
    /// kustomize printed something that is not a list of Kubernetes objects.
    #[error("kustomize output line {line}: {message}")]
    Output {
        /// Line of the output.
        line: usize,
        /// What is wrong there.
        message: String,
    },
}

// ------------------------------------------------------------------------------------ pure

/// Fields of a kustomization whose entries may be directories (other kustomizations).
const DIR_FIELDS: [&str; 6] = [
    "resources",
    "bases",
    "components",
    "generators",
    "transformers",
    "validators",
];

/// Fields whose entries are file paths (or inline YAML, which is skipped).
const FILE_LIST_FIELDS: [&str; 3] = ["crds", "configurations", "patchesStrategicMerge"];

/// Fields holding a list of objects, each with a `path`.
const PATH_OBJECT_FIELDS: [&str; 3] = ["patches", "patchesJson6902", "replacements"];

/// Whether a kustomization entry names something kustomize would fetch over the network.
fn is_remote(entry: &str) -> bool {
    let e = entry.trim();
    if e.contains("://")
        || e.starts_with("git@")
        || e.starts_with("git::")
        || e.starts_with("gh:")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| e.starts_with(host))
    {
        return true;
    }
    // scp-like `user@host:path`.
    e.split_once(':')
        .is_some_and(|(before, _)| before.contains('@') && !before.contains('/'))
}

/// The kustomization file of a resolved directory, if it has one.
fn kustomization_file(tree: &FileTree, dir: &str) -> Option<(String, String)> {
    KUSTOMIZATION_FILES.iter().find_map(|name| {
        let path = join(dir, name);
        let resolved = tree.resolve(&path).ok()?;
        let text = String::from_utf8(tree.file(&resolved)?.to_vec()).ok()?;
        Some((path, text))
    })
}

fn join(dir: &str, entry: &str) -> String {
    if dir.is_empty() {
        entry.to_string()
    } else {
        format!("{dir}/{entry}")
    }
}

/// Every path-like entry of a parsed kustomization: (field, entry, may be a directory).
fn references(kustomization: &Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let strings = |value: Option<&Value>| -> Vec<String> {
        match value {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => vec![],
        }
    };
    for field in DIR_FIELDS {
        for entry in strings(kustomization.get(field)) {
            out.push((field.to_string(), entry, true));
        }
    }
    for field in FILE_LIST_FIELDS {
        for entry in strings(kustomization.get(field)) {
            out.push((field.to_string(), entry, false));
        }
    }
    for field in PATH_OBJECT_FIELDS {
        if let Some(Value::Array(items)) = kustomization.get(field) {
            for item in items {
                for entry in strings(item.get("path")) {
                    out.push((format!("{field}.path"), entry, false));
                }
            }
        }
    }
    for entry in strings(kustomization.get("openapi").and_then(|o| o.get("path"))) {
        out.push(("openapi.path".into(), entry, false));
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        if let Some(Value::Array(items)) = kustomization.get(field) {
            for item in items {
                for key in ["files", "envs", "env"] {
                    for entry in strings(item.get(key)) {
                        // `key=path` names the data key; the path follows the first `=`.
                        let path = entry.split_once('=').map_or(entry.as_str(), |(_, p)| p);
                        out.push((format!("{field}.{key}"), path.to_string(), false));
                    }
                }
            }
        }
    }
    // Inline YAML (patches, generator configs) is not a path.
    out.retain(|(_, entry, _)| !entry.contains('\n') && !entry.trim().is_empty());
    out
}

/// Walks the kustomization at `dir` (resolved, relative to the config root) and every local
/// kustomization it pulls in, and refuses what kustomize must not be allowed to do: fetch a
/// remote base or file, or read a path outside the config root. Missing files and malformed
/// kustomizations are left to kustomize, whose own message is clearer.
pub fn check_references(tree: &FileTree, dir: &str) -> Result<(), String> {
    let mut pending = vec![dir.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(dir) = pending.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Some((file, text)) = kustomization_file(tree, &dir) else {
            continue;
        };
        let Ok(kustomization) = serde_saphyr::from_str::<Value>(&text) else {
            continue;
        };
        for (field, entry, may_be_dir) in references(&kustomization) {
            let refuse = |why: &str| Err(format!("{file}: {field} entry {entry:?} {why}"));
            if is_remote(&entry) {
                return refuse(
                    "is remote; flotilla builds kustomizations only from the config repository, \
                     without network access: vendor it into the repository",
                );
            }
            if entry.starts_with('/') || entry.starts_with('\\') {
                return refuse("is an absolute path; paths must stay inside the config repository");
            }
            match tree.resolve(&join(&dir, entry.trim())) {
                Ok(resolved) => {
                    if may_be_dir && tree.file(&resolved).is_none() {
                        pending.push(resolved);
                    }
                }
                Err(
                    e @ (PathError::Escapes(_)
                    | PathError::SymlinkEscapes { .. }
                    | PathError::Absolute(_)),
                ) => return refuse(&format!("leaves the config repository ({e})")),
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// Cluster-scoped kinds of Kubernetes itself, by (API group, kind): `targetNamespace` leaves
/// them alone. Cluster-scoped custom kinds are not known here; the apply adapter drops the
/// namespace of any kind discovery reports as cluster-scoped.
const CLUSTER_SCOPED: [(&str, &str); 30] = [
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("networking.k8s.io", "IPAddress"),
    ("node.k8s.io", "RuntimeClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
];

/// Whether an object is of a well-known cluster-scoped kind.
pub fn is_cluster_scoped(object: &Value) -> bool {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    CLUSTER_SCOPED.contains(&(group, kind))
}

/// Applies a kustomizationRef's `targetNamespace`: every object not of a well-known
/// cluster-scoped kind gets `metadata.namespace`, replacing any namespace kustomize set.
/// References inside objects (RoleBinding subjects, webhook services) are not rewritten; a
/// kustomization that needs that uses kustomize's own `namespace:`.
pub fn set_namespace(object: &mut Value, namespace: &str) {
    if is_cluster_scoped(object) {
        return;
    }
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.insert("namespace".into(), Value::String(namespace.to_string()));
    }
}

/// Parses `kustomize build` output: multi-document YAML whose every document is an object.
pub fn parse_output(text: &str) -> Result<Vec<Value>, KustomizeError> {
    check_manifests(text).map_err(|(line, message)| KustomizeError::Output { line, message })
}

/// kustomize's stderr as a message: temporary paths shown relative to the config root, the
/// `Error: ` prefix gone, and capped.
fn clean_stderr(stderr: &str, root: &Path) -> String {
    let root = root.display().to_string();
    let mut text = stderr
        .trim()
        .replace(&format!("{root}/"), "")
        .replace(&root, ".");
    if let Some(rest) = text.strip_prefix("Error: ") {
        text = rest.to_string();
    }
    crate::binary::capped_message(text, MAX_STDERR)
}

// --------------------------------------------------------------------------------- adapter

/// The kustomize binary to run and its time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kustomize {
    bin: PathBuf,
    timeout: Duration,
}

impl Kustomize {
    /// A binary at a known path, with a time limit per build.
    pub fn new(bin: impl Into<PathBuf>, timeout: Duration) -> Self {
        Kustomize {
            bin: bin.into(),
            timeout,
        }
    }

    /// The binary to use: `explicit` (`--kustomize-bin`; a bare name is looked up on `PATH`),
    /// else `kustomize` on `PATH`, else `scripts/testbin.sh`'s cache (`$FLOTILLA_TESTBIN` or
    /// `~/.cache/flotilla/testbin`), so a developer machine works without installing it.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, KustomizeError> {
        match crate::binary::locate("kustomize", explicit) {
            Ok(bin) => Ok(Self::new(bin, DEFAULT_TIMEOUT)),
            Err(Missing::BadExplicit(path)) => Err(KustomizeError::BadBinary(path)),
            Err(Missing::NotFound(cache)) => Err(KustomizeError::NotFound(cache)),
        }
    }

    /// The binary's path, for logs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The same binary with another time limit.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `kustomize build` on `dir` (absolute, inside `root`) with no network and the time
    /// limit; returns its stdout.
    async fn build(&self, root: &Path, home: &Path, dir: &Path) -> Result<String, KustomizeError> {
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .arg("build")
            .arg("--load-restrictor")
            .arg("LoadRestrictionsRootOnly")
            .arg(dir)
            .current_dir(root)
            .env_clear()
            .env("PATH", "")
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("TMPDIR", home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
        ] {
            command.env(var, DEAD_PROXY);
        }
        let spawn_error = |e: std::io::Error| KustomizeError::Spawn {
            bin: self.bin.display().to_string(),
            error: e.to_string(),
        };
        let child = command.spawn().map_err(spawn_error)?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(result) => result.map_err(spawn_error)?,
            // Dropping the future drops the child, which kill_on_drop kills.
            Err(_) => return Err(KustomizeError::Timeout(self.timeout)),
        };
        if !output.status.success() {
            return Err(KustomizeError::Failed {
                status: output.status.to_string(),
                stderr: clean_stderr(&String::from_utf8_lossy(&output.stderr), root),
            });
        }
        String::from_utf8(output.stdout).map_err(|_| KustomizeError::Output {
            line: 1,
            message: "output is not UTF-8".into(),
        })
    }
}

/// The snapshot on disk: a private temporary directory removed when dropped.
#[derive(Debug)]
struct Written {
    /// Owns the directory.
    _dir: tempfile::TempDir,
    /// `<dir>/tree`, canonical: the config root.
    root: PathBuf,
    /// `<dir>/home`: kustomize's HOME and TMPDIR.
    home: PathBuf,
}

/// Writes the tree: regular files as they are, a symlink to a file as a copy of the file, a
/// symlink to a directory as the same relative link (the tree checked it stays inside). Links
/// that leave the root or dangle are not written, so nothing on disk points outside.
fn write_tree(tree: &FileTree) -> Result<Written, KustomizeError> {
    let io = |what: &str, e: std::io::Error| KustomizeError::Workspace(format!("{what}: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("flotilla-kustomize-")
        .tempdir()
        .map_err(|e| io("creating a temporary directory", e))?;
    let base = std::fs::canonicalize(dir.path()).map_err(|e| io("temporary directory", e))?;
    let root = base.join("tree");
    let home = base.join("home");
    std::fs::create_dir(&root).map_err(|e| io("tree directory", e))?;
    std::fs::create_dir(&home).map_err(|e| io("home directory", e))?;
    for (path, entry) in tree.entries_under("") {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(path, e))?;
        }
        match entry {
            Entry::File(bytes) => std::fs::write(&target, bytes).map_err(|e| io(path, e))?,
            Entry::Symlink(link) => match tree.resolve(path) {
                Ok(resolved) => match tree.file(&resolved) {
                    Some(bytes) => std::fs::write(&target, bytes).map_err(|e| io(path, e))?,
                    None => std::os::unix::fs::symlink(link, &target).map_err(|e| io(path, e))?,
                },
                Err(e) => debug!(path, error = %e, "symlink not written for kustomize"),
            },
        }
    }
    Ok(Written {
        _dir: dir,
        root,
        home,
    })
}

type Built = Result<Arc<Vec<Value>>, KustomizeError>;

/// Builds by (resolved path, targetNamespace), each computed once.
type Builds = HashMap<(String, Option<String>), Arc<OnceCell<Built>>>;

/// One config snapshot (one commit) as kustomize sees it: written to disk on the first build,
/// with every build's output cached by (path, targetNamespace) so N clusters run kustomize once.
/// Successful builds stay cached for the snapshot's lifetime (the output depends only on the
/// snapshot: no network); failures are forgotten by [`Workspace::retry_failed`] at each pass.
pub struct Workspace {
    tool: Result<Kustomize, KustomizeError>,
    written: tokio::sync::Mutex<Option<Arc<Written>>>,
    builds: Mutex<Builds>,
    /// At most one kustomize per core at a time.
    running: Semaphore,
}

impl Workspace {
    /// A workspace that builds with `tool`, or reports why there is no binary.
    pub fn new(tool: Result<Kustomize, KustomizeError>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Workspace {
            tool,
            written: tokio::sync::Mutex::new(None),
            builds: Mutex::new(HashMap::new()),
            running: Semaphore::new(cores),
        }
    }

    /// Whether a binary was found (`flotilla render` prints refs unexpanded otherwise).
    pub fn has_binary(&self) -> bool {
        self.tool.is_ok()
    }

    /// Forgets failed builds so the next pass tries them again (a timeout under load is not a
    /// property of the snapshot).
    pub fn retry_failed(&self) {
        let mut builds = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        builds.retain(|_, cell| !matches!(cell.get(), Some(Err(_))));
    }

    /// The objects kustomize builds from `path` of `tree` (the snapshot this workspace stands
    /// for), with `target_namespace` applied; not yet stamped.
    pub async fn build(
        &self,
        tree: &FileTree,
        path: &str,
        target_namespace: Option<&str>,
    ) -> Result<Arc<Vec<Value>>, KustomizeError> {
        let resolved = tree
            .resolve(path)
            .map_err(|e| KustomizeError::Refused(e.to_string()))?;
        let cell = {
            let mut builds = self.builds.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                builds
                    .entry((resolved.clone(), target_namespace.map(str::to_string)))
                    .or_default(),
            )
        };
        cell.get_or_init(|| self.run(tree, &resolved, target_namespace))
            .await
            .clone()
    }

    async fn run(&self, tree: &FileTree, resolved: &str, target_namespace: Option<&str>) -> Built {
        let tool = self.tool.as_ref().map_err(Clone::clone)?;
        check_references(tree, resolved).map_err(KustomizeError::Refused)?;
        let written = self.written(tree).await?;
        let _permit = self.running.acquire().await;
        let started = Instant::now();
        let output = tool
            .build(&written.root, &written.home, &written.root.join(resolved))
            .await?;
        let mut objects = parse_output(&output)?;
        if let Some(namespace) = target_namespace {
            for object in &mut objects {
                set_namespace(object, namespace);
            }
        }
        info!(
            path = resolved,
            objects = objects.len(),
            millis = started.elapsed().as_millis() as u64,
            "kustomize build"
        );
        Ok(Arc::new(objects))
    }

    /// The snapshot on disk, written on first use (a failed write is tried again next time).
    async fn written(&self, tree: &FileTree) -> Result<Arc<Written>, KustomizeError> {
        let mut written = self.written.lock().await;
        if let Some(w) = written.as_ref() {
            return Ok(Arc::clone(w));
        }
        let started = Instant::now();
        let tree = tree.clone();
        let entries = tree.len();
        let w = Arc::new(
            tokio::task::spawn_blocking(move || write_tree(&tree))
                .await
                .map_err(|e| KustomizeError::Workspace(e.to_string()))??,
        );
        info!(
            entries,
            millis = started.elapsed().as_millis() as u64,
            "config tree written for kustomize"
        );
        *written = Some(Arc::clone(&w));
        Ok(w)
    }
}

/// Builds every kustomizationRef of a rendered profile and appends the objects, stamped, to its
/// objects (leaving `kustomizations` empty). A failure names the ref and is the profile's
/// render error on this cluster.
pub async fn expand(
    workspace: &Workspace,
    tree: &FileTree,
    rendered: &mut RenderedProfile,
) -> Result<(), RenderError> {
    for k in std::mem::take(&mut rendered.kustomizations) {
        let objects = workspace
            .build(tree, &k.path, k.target_namespace.as_deref())
            .await
            .map_err(|e| RenderError {
                origin: k.origin.clone(),
                message: format!("kustomizationRef {}: {e}", k.path),
            })?;
        add_built(rendered, &k, &objects);
    }
    Ok(())
}

/// Adds the objects a kustomizationRef built to the profile's render, stamped as its own (the
/// pass and `flotilla plan` build differently but add the same way).
pub fn add_built(
    rendered: &mut RenderedProfile,
    k: &super::KustomizationTarget,
    objects: &[Value],
) {
    for object in objects {
        let mut object = object.clone();
        stamp(&mut object, &rendered.profile);
        rendered.objects.push(RenderedObject {
            source: format!("kustomize {}", k.path),
            deployment_type: k.deployment_type,
            object,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(files: &[(&str, &str)]) -> FileTree {
        let mut t = FileTree::new();
        for (path, text) in files {
            t.insert_file(*path, text.as_bytes().to_vec());
        }
        t
    }

    #[test]
    fn target_namespace_skips_cluster_scoped_kinds_and_overrides_others() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
                Some("apps"),
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "other"}}),
                Some("apps"),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
                None,
            ),
            (
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "a"}}),
                None,
            ),
            (
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "a"}}),
                None,
            ),
            // Same kind name, another group: a custom kind, treated as namespaced.
            (
                json!({"apiVersion": "example.com/v1", "kind": "Namespace", "metadata": {"name": "a"}}),
                Some("apps"),
            ),
            (
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "a"}}),
                Some("apps"),
            ),
        ];
        for (mut object, want) in cases {
            let before = object.clone();
            set_namespace(&mut object, "apps");
            assert_eq!(object["metadata"]["namespace"].as_str(), want, "{before}");
        }
    }

    #[test]
    fn parses_output_and_reports_the_line_of_a_bad_document() {
        let objects = parse_output(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\n",
        )
        .expect("two objects");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["kind"], "Secret");
        assert!(parse_output("").expect("empty").is_empty());
        match parse_output(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkind: X\nmetadata: {name: b}\n",
        ) {
            Err(KustomizeError::Output { line, message }) => {
                assert_eq!(line, 6);
                assert!(message.contains("has no apiVersion"), "{message}");
            }
            other => panic!("want an output error, got {other:?}"),
        }
        assert!(matches!(
            parse_output("a: [1,\n"),
            Err(KustomizeError::Output { .. })
        ));
    }

    #[test]
    fn remote_entries_are_recognized() {
        for remote in [
            "https://github.com/org/repo//deploy?ref=v1",
            "http://example.com/x.yaml",
            "ssh://git@example.com/org/repo.git",
            "git@github.com:org/repo.git",
            "git::https://example.com/repo",
            "gh:org/repo",
            "github.com/kubernetes-sigs/kustomize/examples/helloWorld?ref=v1.0.6",
            "gitlab.com/org/repo",
            "deploy@host.example:repo",
            "file:///etc",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in ["../base", "cm.yaml", "sub.dir/x.yaml", "a:b.yaml", "./x"] {
            assert!(!is_remote(local), "{local}");
        }
    }

    #[test]
    fn references_that_are_remote_or_leave_the_root_are_refused_anywhere_in_the_closure() {
        let base = ("k/base/kustomization.yaml", "resources: [cm.yaml]\n");
        let ok_overlay = (
            "k/prod/kustomization.yaml",
            "resources: [../base]\npatches:\n- path: patch.yaml\nconfigMapGenerator:\n- name: g\n  files: [key=data.txt]\n",
        );
        // (files, kustomization dir, expected error substring)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (vec![base, ok_overlay], "k/prod", None),
            // A missing file is kustomize's to report.
            (
                vec![("k/a/kustomization.yaml", "resources: [missing.yaml]\n")],
                "k/a",
                None,
            ),
            (
                vec![
                    (
                        "k/a/kustomization.yaml",
                        "resources:\n- ../base\n- https://example.com/x.yaml\n",
                    ),
                    base,
                ],
                "k/a",
                Some(
                    "k/a/kustomization.yaml: resources entry \"https://example.com/x.yaml\" is remote",
                ),
            ),
            // Remote in a base pulled in by the overlay.
            (
                vec![
                    ("k/a/kustomization.yaml", "resources: [../b]\n"),
                    (
                        "k/b/kustomization.yml",
                        "components:\n- github.com/org/repo/comp?ref=v1\n",
                    ),
                ],
                "k/a",
                Some(
                    "k/b/kustomization.yml: components entry \"github.com/org/repo/comp?ref=v1\" is remote",
                ),
            ),
            (
                vec![(
                    "k/a/kustomization.yaml",
                    "resources: [../../../../home/someone/kustomize]\n",
                )],
                "k/a",
                Some("leaves the config repository"),
            ),
            (
                vec![("k/a/kustomization.yaml", "resources: [/etc/kubernetes]\n")],
                "k/a",
                Some("is an absolute path"),
            ),
            (
                vec![(
                    "k/a/kustomization.yaml",
                    "patches:\n- path: https://example.com/p.yaml\n",
                )],
                "k/a",
                Some("patches.path entry"),
            ),
            (
                vec![(
                    "k/a/kustomization.yaml",
                    "secretGenerator:\n- name: s\n  files: [key=http://169.254.169.254/latest]\n",
                )],
                "k/a",
                Some("secretGenerator.files entry"),
            ),
            // Inline patches are not paths.
            (
                vec![(
                    "k/a/kustomization.yaml",
                    "patchesStrategicMerge:\n- |\n  apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: 'http://x'}\n",
                )],
                "k/a",
                None,
            ),
            // Cycles terminate.
            (
                vec![
                    ("k/a/kustomization.yaml", "resources: [../b]\n"),
                    ("k/b/kustomization.yaml", "resources: [../a]\n"),
                ],
                "k/a",
                None,
            ),
        ];
        for (files, dir, want) in cases {
            let got = check_references(&tree(&files), dir);
            match (want, &got) {
                (None, Ok(())) => {}
                (Some(w), Err(e)) => assert!(e.contains(w), "{files:?}: {e}"),
                _ => panic!("{files:?}: want {want:?}, got {got:?}"),
            }
        }
        // A symlinked directory that points outside the root is refused too.
        let mut t = tree(&[("k/a/kustomization.yaml", "resources: [../link]\n")]);
        t.insert_symlink("k/link", "../../outside");
        assert!(check_references(&t, "k/a").is_err());
    }

    #[test]
    fn stderr_is_made_repo_relative_and_capped() {
        let root = Path::new("/tmp/flotilla-kustomize-x/tree");
        let msg = clean_stderr(
            "Error: accumulating resources from 'missing.yaml': lstat /tmp/flotilla-kustomize-x/tree/k/base/missing.yaml: no such file\n",
            root,
        );
        assert_eq!(
            msg,
            "accumulating resources from 'missing.yaml': lstat k/base/missing.yaml: no such file"
        );
        let long = "é".repeat(MAX_STDERR);
        assert!(clean_stderr(&long, root).ends_with("[truncated]"));
    }

    #[tokio::test]
    async fn a_build_that_hangs_is_killed_at_the_time_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("kustomize");
        // kustomize runs with an empty PATH, so the fake names `sleep` by its absolute path.
        let sleep = crate::binary::on_path("sleep").expect("sleep on PATH");
        std::fs::write(&script, format!("#!/bin/sh\nexec {} 30\n", sleep.display()))
            .expect("write script");
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let tool = Kustomize::locate(Some(&script))
            .expect("script is executable")
            .with_timeout(Duration::from_millis(300));
        let workspace = Workspace::new(Ok(tool));
        let t = tree(&[("k/kustomization.yaml", "resources: []\n")]);
        let started = Instant::now();
        let err = workspace.build(&t, "k", None).await.expect_err("times out");
        assert!(matches!(err, KustomizeError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The failure is cached for the pass, and forgotten for the next one.
        assert_eq!(workspace.builds.lock().expect("lock").len(), 1);
        workspace.retry_failed();
        assert!(workspace.builds.lock().expect("lock").is_empty());
    }

    /// A fake kustomize (a shell script using only builtins, since PATH is empty) that logs
    /// its environment and arguments and prints one ConfigMap.
    fn fake_kustomize(dir: &Path) -> (Kustomize, PathBuf) {
        let log = dir.join("calls");
        let script = dir.join("kustomize");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ -f \"$4/kustomization.yaml\" ] || exit 3\necho \"PATH=$PATH HTTPS_PROXY=$HTTPS_PROXY GIT=$GIT_DIR ARGS=$*\" >> {}\nprintf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: x\\n'\n",
                log.display()
            ),
        )
        .expect("write script");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (Kustomize::locate(Some(&script)).expect("executable"), log)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_builds_of_one_key_run_kustomize_once_in_a_sandboxed_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tool, log) = fake_kustomize(dir.path());
        let workspace = Arc::new(Workspace::new(Ok(tool)));
        let t = Arc::new(tree(&[("k/kustomization.yaml", "resources: []\n")]));
        let builds: Vec<_> = (0..8)
            .map(|_| {
                let (w, t) = (Arc::clone(&workspace), Arc::clone(&t));
                tokio::spawn(async move { w.build(&t, "./k/", Some("apps")).await })
            })
            .collect();
        for b in builds {
            let objects = b.await.expect("task").expect("build");
            assert_eq!(objects[0]["metadata"]["namespace"], "apps");
        }
        let calls = std::fs::read_to_string(&log).expect("log");
        assert_eq!(calls.lines().count(), 1, "{calls}");
        assert!(calls.starts_with("PATH= HTTPS_PROXY=http://127.0.0.1:9 GIT= ARGS=build --load-restrictor LoadRestrictionsRootOnly /"), "{calls}");
        assert!(calls.trim_end().ends_with("/tree/k"), "{calls}");
        // Another targetNamespace is another build; a success survives retry_failed.
        workspace.build(&t, "k", None).await.expect("build");
        workspace.retry_failed();
        workspace
            .build(&t, "k", Some("apps"))
            .await
            .expect("cached");
        let calls = std::fs::read_to_string(&log).expect("log");
        assert_eq!(calls.lines().count(), 2, "{calls}");
        // A ref that leaves the root never reaches kustomize.
        let err = workspace
            .build(&t, "../k", None)
            .await
            .expect_err("escapes");
        assert!(matches!(err, KustomizeError::Refused(_)), "{err}");
    }

    #[test]
    fn the_written_tree_holds_files_and_inside_links_but_nothing_that_points_out() {
        let mut t = tree(&[("k/base/cm.yaml", "a"), ("shared/x.yaml", "x")]);
        t.insert_symlink("k/base/x.yaml", "../../shared/x.yaml");
        t.insert_symlink("k/shared", "../shared");
        t.insert_symlink("k/out", "../../..");
        t.insert_symlink("k/abs", "/etc/passwd");
        let written = write_tree(&t).expect("written");
        let root = &written.root;
        assert_eq!(
            std::fs::read_to_string(root.join("k/base/cm.yaml")).expect("file"),
            "a"
        );
        let copied = root.join("k/base/x.yaml");
        assert!(!std::fs::symlink_metadata(&copied).expect("x").is_symlink());
        assert_eq!(std::fs::read_to_string(copied).expect("copy"), "x");
        assert_eq!(
            std::fs::read_to_string(root.join("k/shared/x.yaml")).expect("through the dir link"),
            "x"
        );
        assert!(std::fs::symlink_metadata(root.join("k/out")).is_err());
        assert!(std::fs::symlink_metadata(root.join("k/abs")).is_err());
        let base = root.parent().expect("parent").to_path_buf();
        drop(written);
        assert!(!base.exists(), "removed on drop");
    }

    #[test]
    fn an_explicit_binary_that_does_not_exist_is_an_error() {
        let err =
            Kustomize::locate(Some(Path::new("/nonexistent/kustomize"))).expect_err("missing");
        assert!(matches!(err, KustomizeError::BadBinary(_)), "{err}");
    }
}
