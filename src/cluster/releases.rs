//! Helm releases as the kube API shows them, read without starting helm: helm (v3 and v4) keeps
//! each revision of a release in a Secret `sh.helm.release.v1.<name>.v<revision>` of type
//! `helm.sh/release.v1` in the release namespace, labelled `owner=helm`, `name`, `status` and
//! `version`. A metadata-only list of those labels tells whether a release is still at the
//! revision flotilla wrote, deployed; the record itself (values and manifest) is read only when
//! a release changes, for the note's diffs.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

use super::{ClusterError, Target};
use std::collections::BTreeMap;

use crate::helm::{OWNER_LABEL, ReleaseRecord, record_secret_name};

/// The labels of every helm release record in `namespace` (all releases, all revisions): one
/// metadata-only list request, so a pass over N releases of a namespace asks once, not N times.
/// `helm::newest_revision` picks one release's current revision and status from them.
pub async fn in_namespace(
    target: &Target,
    namespace: &str,
) -> Result<Vec<BTreeMap<String, String>>, ClusterError> {
    let api: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
    let selector = format!("{OWNER_LABEL}=helm");
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ClusterError::Api {
            cluster: target.name.clone(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|m| m.metadata.labels)
        .collect())
}

/// Revision `revision` of a release as helm recorded it; `Ok(None)` when the Secret is gone,
/// `Err` with a message when it cannot be read or decoded.
pub async fn record(
    target: &Target,
    namespace: &str,
    name: &str,
    revision: u64,
) -> Result<Option<ReleaseRecord>, String> {
    let api: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
    let secret = api
        .get_opt(&record_secret_name(name, revision))
        .await
        .map_err(|e| {
            format!(
                "cluster {}: reading release {namespace}/{name}: {e}",
                target.name
            )
        })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("release"))
        .ok_or_else(|| format!("release {namespace}/{name} v{revision}: no data.release"))?;
    ReleaseRecord::decode(&data.0)
        .map(Some)
        .map_err(|e| format!("release {namespace}/{name} v{revision}: {e}"))
}
