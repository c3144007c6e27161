//! Answers the resource queries of classifiers' `deployedResourceConstraint`s: metadata-only
//! lists, reads only. Label filters are applied by `classify` to the labels collected here.

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, ListParams};

use super::Target;
use crate::classify::ResourceQuery;

/// The labels of the objects each query finds. A kind the cluster does not serve finds no
/// objects; a query whose list fails is left out (it finds nothing either, but is not claimed to
/// have been answered). A namespace on a cluster-scoped kind is ignored.
pub async fn answer(
    target: &Target,
    queries: &[ResourceQuery],
) -> BTreeMap<ResourceQuery, Vec<BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    for query in queries {
        let api_version = query.api_version();
        let Ok(served) = target
            .discovery
            .resolve(&target.name, &target.client, &api_version, &query.kind)
            .await
        else {
            out.insert(query.clone(), Vec::new());
            continue;
        };
        let api: Api<DynamicObject> = match (&query.namespace, served.namespaced) {
            (Some(namespace), true) => {
                Api::namespaced_with(target.client.clone(), namespace, &served.resource)
            }
            _ => Api::all_with(target.client.clone(), &served.resource),
        };
        let mut params = ListParams::default();
        if let Some(name) = &query.name {
            params = params.fields(&format!("metadata.name={name}"));
        }
        if let Ok(list) = api.list_metadata(&params).await {
            let labels = list
                .items
                .into_iter()
                .map(|object| object.metadata.labels.unwrap_or_default())
                .collect();
            out.insert(query.clone(), labels);
        }
    }
    out
}
