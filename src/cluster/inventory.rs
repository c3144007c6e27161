//! The inventory: per (profile, cluster), what flotilla applied, kept as a ConfigMap in
//! `flotilla-system` of the cluster that holds the objects (DESIGN §3). It lives next to the
//! objects so that prune and withdraw work after a restart, a crash mid-pass, or the removal of
//! the profile from Git; nothing outside it is ever deleted.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::config::{StopMatchingBehavior, SyncMode};
use crate::helm::ReleaseEntry;
use crate::plan::Deployed;

/// Namespace of the inventories.
pub const SYSTEM_NAMESPACE: &str = "flotilla-system";
/// Field manager of every write flotilla makes.
pub const FIELD_MANAGER: &str = "flotilla";
/// Label naming the managed cluster an inventory is about.
const CLUSTER_LABEL: &str = "flotilla.dev/cluster";
/// Label naming the profile of an inventory.
const PROFILE_LABEL: &str = "flotilla.dev/inventory";
/// Label telling a cluster's own inventory from one of Local objects in the management cluster.
const DESTINATION_LABEL: &str = "flotilla.dev/destination";

/// Where the objects of an inventory live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Destination {
    /// In the managed cluster itself.
    Remote,
    /// In the management cluster, on behalf of the managed cluster (`deploymentType: Local`).
    Local,
}

impl Destination {
    fn label(self) -> &'static str {
        match self {
            Destination::Remote => "remote",
            Destination::Local => "local",
        }
    }
}

/// One applied object. `hash` is empty while a write is in flight (so a crash re-applies it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// apiVersion it was applied with.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; empty when cluster-scoped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Hash of the rendered object last written.
    #[serde(default)]
    pub hash: String,
}

/// What one profile deployed for one cluster to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Profile name.
    pub profile: String,
    /// Managed cluster the objects are for.
    pub cluster: String,
    /// Where they live.
    pub destination: Destination,
    /// Commit, syncMode and stopMatchingBehavior at the last write.
    pub deployed: Deployed,
    /// Objects by key (`diff::object_key`).
    pub objects: BTreeMap<String, Entry>,
    /// Helm releases by key (`helm:<namespace>/<name>`), in `data.releases` (absent when none).
    pub releases: BTreeMap<String, ReleaseEntry>,
}

impl Inventory {
    /// Every object written and every release installed completely.
    pub fn complete(&self) -> bool {
        self.objects.values().all(|e| !e.hash.is_empty())
            && self.releases.values().all(ReleaseEntry::complete)
    }
}

impl Inventory {
    /// The ConfigMap name: `flotilla-inventory-<profile>`, and for Local objects kept in the
    /// management cluster `flotilla-inventory-<profile>.<cluster>` (names cannot contain dots,
    /// so the two forms never collide).
    pub fn name(&self) -> String {
        config_map_name(&self.profile, &self.cluster, self.destination)
    }
}

fn config_map_name(profile: &str, cluster: &str, destination: Destination) -> String {
    match destination {
        Destination::Remote => format!("flotilla-inventory-{profile}"),
        Destination::Local => format!("flotilla-inventory-{profile}.{cluster}"),
    }
}

/// Every inventory kept in this cluster for `cluster` at `destination`, by profile. One list
/// request; an absent `flotilla-system` namespace simply yields none.
pub async fn list(
    client: &kube::Client,
    target: &str,
    cluster: &str,
    destination: Destination,
) -> Result<BTreeMap<String, Inventory>, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let selector = format!(
        "{CLUSTER_LABEL}={cluster},{DESTINATION_LABEL}={}",
        destination.label()
    );
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ClusterError::Api {
            cluster: target.to_string(),
            source,
        })?;
    let mut out = BTreeMap::new();
    for cm in list {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let inventory =
            decode(&cm, cluster, destination).map_err(|message| ClusterError::Inventory {
                cluster: target.to_string(),
                name: name.clone(),
                message,
            })?;
        out.insert(inventory.profile.clone(), inventory);
    }
    Ok(out)
}

fn decode(cm: &ConfigMap, cluster: &str, destination: Destination) -> Result<Inventory, String> {
    let data = cm.data.clone().unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .cloned()
            .ok_or_else(|| format!("data.{key} is missing"))
    };
    let sync_mode: SyncMode = serde_json::from_value(serde_json::Value::String(field("syncMode")?))
        .map_err(|e| format!("data.syncMode: {e}"))?;
    let stop_matching: StopMatchingBehavior =
        serde_json::from_value(serde_json::Value::String(field("stopMatchingBehavior")?))
            .map_err(|e| format!("data.stopMatchingBehavior: {e}"))?;
    let entries: Vec<Entry> =
        serde_json::from_str(&field("objects")?).map_err(|e| format!("data.objects: {e}"))?;
    let releases: Vec<ReleaseEntry> = match data.get("releases") {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("data.releases: {e}"))?,
        None => Vec::new(),
    };
    Ok(Inventory {
        profile: field("profile")?,
        cluster: cluster.to_string(),
        destination,
        deployed: Deployed {
            commit: field("commit")?,
            sync_mode,
            stop_matching,
            complete: entries.iter().all(|e| !e.hash.is_empty())
                && releases.iter().all(ReleaseEntry::complete),
        },
        objects: entries.into_iter().map(|e| (entry_key(&e), e)).collect(),
        releases: releases.into_iter().map(|r| (r.key(), r)).collect(),
    })
}

/// The object key of an entry, the same form `diff::object_key` gives the object.
pub fn entry_key(entry: &Entry) -> String {
    crate::diff::object_key(&serde_json::json!({
        "apiVersion": entry.api_version,
        "kind": entry.kind,
        "metadata": {"namespace": entry.namespace, "name": entry.name},
    }))
}

/// Writes (server-side apply) the inventory, creating `flotilla-system` first when needed.
pub async fn write(
    client: &kube::Client,
    target: &str,
    inventory: &Inventory,
) -> Result<(), ClusterError> {
    let api_error = |source| ClusterError::Api {
        cluster: target.to_string(),
        source,
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(SYSTEM_NAMESPACE)
        .await
        .map_err(api_error)?
        .is_none()
    {
        let ns = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": SYSTEM_NAMESPACE},
        });
        namespaces
            .patch(
                SYSTEM_NAMESPACE,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&ns),
            )
            .await
            .map_err(api_error)?;
    }
    let entries: Vec<&Entry> = inventory.objects.values().collect();
    let objects = serde_json::to_string(&entries).map_err(|e| ClusterError::Inventory {
        cluster: target.to_string(),
        name: inventory.name(),
        message: e.to_string(),
    })?;
    let name = inventory.name();
    let mut data = serde_json::json!({
        "profile": inventory.profile,
        "commit": inventory.deployed.commit,
        "syncMode": inventory.deployed.sync_mode,
        "stopMatchingBehavior": inventory.deployed.stop_matching,
        "objects": objects,
    });
    // Absent when the profile has no release, so inventories without Helm read as before.
    if !inventory.releases.is_empty() {
        let releases: Vec<&ReleaseEntry> = inventory.releases.values().collect();
        let text = serde_json::to_string(&releases).map_err(|e| ClusterError::Inventory {
            cluster: target.to_string(),
            name: inventory.name(),
            message: e.to_string(),
        })?;
        data["releases"] = serde_json::Value::String(text);
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {
                CLUSTER_LABEL: inventory.cluster,
                PROFILE_LABEL: inventory.profile,
                DESTINATION_LABEL: inventory.destination.label(),
            },
        },
        "data": data,
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(api_error)?;
    Ok(())
}

/// Deletes an inventory (after a withdraw). Already gone is fine.
pub async fn delete(
    client: &kube::Client,
    target: &str,
    inventory: &Inventory,
) -> Result<(), ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    match api
        .delete(&inventory.name(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ClusterError::Api {
            cluster: target.to_string(),
            source,
        }),
    }
}

/// Keys present in `old` but not in `new`: what a prune removes.
pub fn removed_keys<'a>(old: &'a BTreeMap<String, Entry>, new: &BTreeSet<&str>) -> Vec<&'a String> {
    old.keys().filter(|k| !new.contains(k.as_str())).collect()
}
