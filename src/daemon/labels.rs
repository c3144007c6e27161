//! Classifier labels of the running daemon: reading a cluster's facts and classifying it (the
//! one code path of a pass's `reach` and of the classify timer), and the timer's check whether
//! any cluster's effective labels moved since the last pass.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use tracing::{debug, info};

use crate::classify::{self, Classification, ClusterFacts};
use crate::cluster::{self, Target};
use crate::config::{Cluster, ConfigRepo};

use super::Fleet;

/// Reads what classifiers need from a cluster — `/version`, and the classifiers' resource
/// queries as metadata-only lists — and classifies it. Errors (the cluster was not reached) are
/// the text shown in the notes.
pub(super) async fn classify_cluster(
    target: &Target,
    repo: &ConfigRepo,
    cluster: &Cluster,
) -> Result<(ClusterFacts, Classification), String> {
    let version = cluster::version(&cluster.name, &target.client)
        .await
        .map_err(|e| e.to_string())?;
    let queries = classify::resource_queries(repo.classifiers.values());
    let facts = ClusterFacts {
        version: Some(version),
        resources: cluster::resources::answer(target, &queries).await,
    };
    let classification = classify::classify(cluster, repo.classifiers.values(), &facts);
    Ok((facts, classification))
}

/// The clusters whose effective labels now differ from `used`, the labels the last pass used
/// (only clusters it reached are in there; paused ones are not asked). A cluster that does not
/// answer now is left to the next pass, which reports it. Without classifiers no label can
/// move, and nothing is asked.
pub(super) async fn changed(
    fleet: &Fleet,
    repo: &ConfigRepo,
    used: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    if repo.classifiers.is_empty() {
        return Vec::new();
    }
    let concurrency = fleet.options.concurrency.max(1);
    let clusters = repo
        .clusters
        .values()
        .filter(|c| !c.paused)
        .filter_map(|c| used.get(&c.name).map(|labels| (c, labels)));
    let mut changed: Vec<String> = futures::stream::iter(clusters.map(|(cluster, used)| async move {
        let target = match fleet.target(cluster).await {
            Ok(target) => target,
            Err(e) => {
                debug!(cluster = %cluster.name, error = %e, "classify check: no client");
                return None;
            }
        };
        match classify_cluster(&target, repo, cluster).await {
            Ok((_, now)) if &now.labels != used => {
                info!(
                    cluster = %cluster.name,
                    before = ?used,
                    now = ?now.labels,
                    "classifier labels changed"
                );
                Some(cluster.name.clone())
            }
            Ok(_) => None,
            Err(e) => {
                debug!(cluster = %cluster.name, error = %e, "classify check: cluster not reached");
                None
            }
        }
    }))
    .buffer_unordered(concurrency)
    .filter_map(std::future::ready)
    .collect()
    .await;
    changed.sort();
    changed
}
