//! Reads the live objects that templateResourceRefs name (DESIGN §3 "Templates"), for the pure
//! render module: one GET per object per pass, shared by every cluster and profile that names
//! it. What a pass read is kept, so the daemon can watch exactly those objects afterwards.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use kube::api::{Api, DynamicObject};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::discovery::Served;
use super::{ClusterError, Target};
use crate::config::{Profile, ResourceCluster};
use crate::render::{self, RenderError, sandbox::Sandbox};

/// One object a templateResourceRef names, in one cluster (the cache and watch key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The cluster it is read from (inventory name).
    pub cluster: String,
    /// `group/version` or `v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace as rendered (`None`: cluster-scoped, or `default` for a namespaced kind).
    pub namespace: Option<String>,
    /// Name as rendered.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.api_version, self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{} in cluster {}", self.name, self.cluster)
    }
}

/// Why an object could not be read (not "absent": that is a value, not an error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObjectError {
    /// The API server refused or did not answer; the message is kube's (never object content).
    #[error("reading {key}: {message}")]
    Read {
        /// The object.
        key: ObjectKey,
        /// What failed.
        message: String,
    },
}

/// What a pass read of one object: where, and the resourceVersion it saw (`None`: absent), so
/// a watcher can tell when the object differs from what the templates were rendered with.
#[derive(Clone)]
pub struct Observed {
    /// The object.
    pub key: ObjectKey,
    /// The cluster it was read from.
    pub target: Arc<Target>,
    /// `metadata.resourceVersion` as read, or `None` when it did not exist.
    pub resource_version: Option<String>,
}

type Cell = Arc<OnceCell<Result<Option<Value>, ObjectError>>>;

/// The reads of one pass: the same object named by N clusters or profiles is one GET.
#[derive(Default)]
pub struct ReadCache {
    entries: Mutex<HashMap<ObjectKey, (Arc<Target>, Cell)>>,
}

impl ReadCache {
    /// An empty cache (one per pass).
    pub fn new() -> Self {
        Self::default()
    }

    /// The object as served (without `managedFields`), `None` when it or its kind does not
    /// exist; read once per cache, concurrent callers share the one request.
    pub async fn read(
        &self,
        target: &Arc<Target>,
        key: ObjectKey,
    ) -> Result<Option<Value>, ObjectError> {
        let cell = match self.entries.lock() {
            Ok(mut entries) => Arc::clone(
                &entries
                    .entry(key.clone())
                    .or_insert_with(|| (Arc::clone(target), Cell::default()))
                    .1,
            ),
            // A poisoned lock only loses sharing, not correctness.
            Err(_) => Cell::default(),
        };
        cell.get_or_init(|| get(target, &key)).await.clone()
    }

    /// Every object read successfully (present or absent), for the watchers.
    pub fn observed(&self) -> Vec<Observed> {
        let Ok(entries) = self.entries.lock() else {
            return vec![];
        };
        let mut out: Vec<Observed> = entries
            .iter()
            .filter_map(|(key, (target, cell))| match cell.get()? {
                Ok(object) => Some(Observed {
                    key: key.clone(),
                    target: Arc::clone(target),
                    resource_version: object.as_ref().map(resource_version),
                }),
                Err(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// `metadata.resourceVersion` of an object as read ("" when it has none).
pub fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// How a kind is served in `target`, or `None` when it is not (its CRD is not there yet).
pub async fn served(target: &Target, key: &ObjectKey) -> Result<Option<Served>, ObjectError> {
    match target
        .discovery
        .resolve(&target.name, &target.client, &key.api_version, &key.kind)
        .await
    {
        Ok(served) => Ok(Some(served)),
        Err(ClusterError::UnknownKind { source, .. }) => match source {
            kube::Error::Api(status) if status.code == 404 => Ok(None),
            kube::Error::Discovery(_) => Ok(None),
            other => Err(ObjectError::Read {
                key: key.clone(),
                message: other.to_string(),
            }),
        },
        Err(other) => Err(ObjectError::Read {
            key: key.clone(),
            message: other.to_string(),
        }),
    }
}

/// The dynamic API handle of an object's kind: its namespace (`default` when none is given) for
/// a namespaced kind, the cluster scope otherwise.
pub fn api(target: &Target, served: &Served, key: &ObjectKey) -> Api<DynamicObject> {
    if served.namespaced {
        let namespace = key.namespace.as_deref().unwrap_or("default");
        Api::namespaced_with(target.client.clone(), namespace, &served.resource)
    } else {
        Api::all_with(target.client.clone(), &served.resource)
    }
}

/// One GET of the object: `None` when it (or its kind) does not exist.
pub async fn get(target: &Target, key: &ObjectKey) -> Result<Option<Value>, ObjectError> {
    let Some(served) = served(target, key).await? else {
        return Ok(None);
    };
    let read_error = |message: String| ObjectError::Read {
        key: key.clone(),
        message,
    };
    let object = api(target, &served, key)
        .get_opt(&key.name)
        .await
        .map_err(|e| read_error(e.to_string()))?;
    let Some(object) = object else {
        return Ok(None);
    };
    let mut value = serde_json::to_value(object).map_err(|e| read_error(e.to_string()))?;
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    Ok(Some(value))
}

/// Where `cluster: management` refs are read.
#[derive(Clone, Copy)]
pub enum Management<'a> {
    /// From this cluster.
    Read(&'a Arc<Target>),
    /// There should be one but is not (not configured or not reachable): such a ref fails the
    /// pair, so the note says what is missing.
    Unavailable,
    /// Not asked for (a `render` preview without `--management-cluster`): such refs are left
    /// out, so the profile shows as pending.
    NotAsked,
}

/// The template variables of `profile` on one cluster: `base` (`cluster`) plus one variable per
/// templateResourceRef whose object exists. A missing object is left out (render makes the
/// pair pending, or renders without it when `optional`); a failed read is the pair's error,
/// located at the ref.
pub async fn variables(
    profile: &Profile,
    base: &serde_json::Map<String, Value>,
    target: &Arc<Target>,
    management: Management<'_>,
    cache: &ReadCache,
    sandbox: &Sandbox,
) -> Result<serde_json::Map<String, Value>, RenderError> {
    let mut variables = base.clone();
    if profile.spec.template_resource_refs.is_empty() {
        return Ok(variables);
    }
    let context = Value::Object(base.clone());
    for r in &profile.spec.template_resource_refs {
        let at = profile.pos.at(&r.referenced);
        let id = &r.value.identifier.value;
        let resource = &r.value.resource;
        let (name, namespace) = render::resource_ref_target(resource, &at, &context, sandbox)?;
        let source = match r.value.cluster {
            ResourceCluster::Target => target,
            ResourceCluster::Management => match management {
                Management::Read(m) => m,
                Management::NotAsked => continue,
                Management::Unavailable => {
                    return Err(RenderError {
                        origin: at,
                        message: format!(
                            "templateResourceRef {id}: {} {} is read from the management cluster, which is not configured (--management-cluster NAME, or run in a cluster) or not reachable",
                            resource.api_version, resource.kind
                        ),
                    });
                }
            },
        };
        let key = ObjectKey {
            cluster: source.name.clone(),
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            namespace,
            name,
        };
        match cache.read(source, key).await {
            Ok(Some(object)) => {
                variables.insert(id.clone(), object);
            }
            Ok(None) => {}
            Err(e) => {
                return Err(RenderError {
                    origin: at,
                    message: format!("templateResourceRef {id}: {e}"),
                });
            }
        }
    }
    Ok(variables)
}
