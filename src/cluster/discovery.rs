//! Which resource (plural, scope) serves a kind, per cluster, cached. A kind that does not
//! resolve is asked again on the next lookup, so a CRD applied earlier in the same pass becomes
//! usable as soon as the API server serves it.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

use super::ClusterError;

/// How a kind is served: enough to build a dynamic API handle.
#[derive(Debug, Clone)]
pub struct Served {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
}

/// Discovery cache of one cluster. Only successful lookups are kept.
#[derive(Debug, Default)]
pub struct Discovery {
    known: Mutex<HashMap<(String, String, String), Served>>,
}

impl Discovery {
    /// The cached answer for `api_version`/`kind`, if any; no request is made.
    pub fn cached(&self, api_version: &str, kind: &str) -> Option<Served> {
        let key = cache_key(api_version, kind);
        self.known.lock().ok()?.get(&key).cloned()
    }

    /// How `api_version`/`kind` is served, from the cache or one discovery request for its
    /// group-version.
    pub async fn resolve(
        &self,
        cluster: &str,
        client: &kube::Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Served, ClusterError> {
        if let Some(served) = self.cached(api_version, kind) {
            return Ok(served);
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let unknown = |source| ClusterError::UnknownKind {
            cluster: cluster.to_string(),
            kind: format!("{api_version} {kind}"),
            source,
        };
        // One request lists every kind of the group-version; keep them all.
        let gv = GroupVersion::gv(group, version);
        let served_kinds: Vec<(ApiResource, ApiCapabilities)> =
            kube::discovery::pinned_group(client, &gv)
                .await
                .map_err(unknown)?
                .versioned_resources(version);
        if let Ok(mut known) = self.known.lock() {
            for (resource, capabilities) in served_kinds {
                let key = cache_key(api_version, &resource.kind);
                known.insert(
                    key,
                    Served {
                        resource,
                        namespaced: capabilities.scope == Scope::Namespaced,
                    },
                );
            }
        }
        self.cached(api_version, kind).ok_or_else(|| {
            unknown(kube::Error::Discovery(
                kube::error::DiscoveryError::MissingKind(format!("{api_version} {kind}")),
            ))
        })
    }

    /// Forgets a kind, e.g. after its CRD was deleted.
    pub fn forget(&self, api_version: &str, kind: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(&cache_key(api_version, kind));
        }
    }
}

fn cache_key(api_version: &str, kind: &str) -> (String, String, String) {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    (group.to_string(), version.to_string(), kind.to_string())
}
