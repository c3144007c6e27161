//! Adapter: `flotilla plan --live` — head against what is really in each cluster. Per cluster it
//! classifies live (version, resource classifiers), renders head with live template data, and
//! asks the apiserver for each object's live state and the server-side dry-run of its apply, so
//! drift and admission errors show up; what the cluster's inventories hold that head no longer
//! renders is what would be pruned or withdrawn. An unreachable cluster is reported, not fatal.
//! Reads and dry-runs only: nothing is written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt as _;
use serde_json::{Value, json};

use super::commits::{self, Built};
use super::{
    ClusterInput, ClusterReview, CommitInfo, Contents, Counts, LabelSource, Membership,
    ProfileSide, ProfileState, Release, Review, ReviewError, Side, SideError, compare_cluster,
};
use crate::classify::{self, ClusterFacts, LabelOwner};
use crate::cluster::apply::{self, Preview};
use crate::cluster::inventory::{self, Destination, Inventory};
use crate::cluster::objects::{self, Management, ReadCache};
use crate::cluster::{self, Target};
use crate::config::{
    Cluster, ConfigRepo, DeploymentType, HelmChartAction, Profile, StopMatchingBehavior,
};
use crate::git::GitSource;
use crate::helm;
use crate::render::kustomize::Kustomize;
use crate::render::sandbox::Sandbox;
use crate::render::{self, RenderedProfile};

/// Clusters asked at once.
const CONCURRENCY: usize = 8;

/// What [`review_live`] needs besides the revision.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Config root inside the repository.
    pub subdir: Option<String>,
    /// Where the inventory's kubeconfig files are.
    pub kubeconfig_dir: PathBuf,
    /// The cluster of the inventory that holds Local objects and management templateResourceRefs.
    pub management_cluster: Option<String>,
    /// The kustomize binary; `None`: kustomizationRefs are reported as not expanded.
    pub kustomize: Option<Kustomize>,
}

/// The live review of `head_rev`: base is what each cluster holds now.
pub async fn review_live(
    source: &GitSource,
    head_rev: &str,
    options: &LiveOptions,
) -> Result<Review, ReviewError> {
    let head = commits::load(
        source,
        head_rev,
        &commits::Options {
            subdir: options.subdir.clone(),
            notes_ref: String::new(),
            kustomize: None,
            threads: 1,
        },
    )?;
    review_loaded(head, options).await
}

async fn review_loaded(
    head: commits::Loaded,
    options: &LiveOptions,
) -> Result<Review, ReviewError> {
    let base = CommitInfo {
        commit: "live".into(),
        subject: "what the clusters hold now".into(),
    };
    let repo = match head.repo {
        Ok(repo) => repo,
        Err(diags) => {
            let errors = diags
                .0
                .iter()
                .map(|d| SideError {
                    side: Side::Head,
                    message: format!("{}:{}: {}", d.file, d.line, d.message),
                })
                .collect();
            return Ok(live(base, head.info, errors, vec![]));
        }
    };
    let built = match &options.kustomize {
        Some(tool) => Some(commits::build_all(&repo, tool.clone()).await),
        None => None,
    };
    let management = match &options.management_cluster {
        Some(name) => match repo.clusters.get(name) {
            Some(cluster) => connect(cluster, options).await.ok(),
            None => None,
        },
        None => None,
    };
    let reads = ReadCache::new();
    let sandbox = Sandbox::new();
    let context = Ctx {
        repo: &repo,
        built: built.as_ref(),
        management: management.as_ref(),
        options,
        reads: &reads,
        sandbox: &sandbox,
    };
    let clusters: Vec<ClusterReview> =
        futures::stream::iter(repo.clusters.values().map(|c| context.cluster(c)))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    Ok(live(base, head.info, vec![], clusters))
}

fn live(
    base: CommitInfo,
    head: CommitInfo,
    errors: Vec<SideError>,
    clusters: Vec<ClusterReview>,
) -> Review {
    let mut review = super::review(base, head, errors, clusters);
    review.mode = "live".into();
    review
}

async fn connect(cluster: &Cluster, options: &LiveOptions) -> Result<Arc<Target>, String> {
    let client = cluster::client(cluster, &options.kubeconfig_dir)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(Target::new(cluster.name.clone(), client)))
}

/// What every cluster's review shares.
struct Ctx<'a> {
    repo: &'a ConfigRepo,
    built: Option<&'a Built>,
    management: Option<&'a Arc<Target>>,
    options: &'a LiveOptions,
    reads: &'a ReadCache,
    sandbox: &'a Sandbox,
}

impl Ctx<'_> {
    async fn cluster(&self, cluster: &Cluster) -> ClusterReview {
        if cluster.paused {
            let mut review = compare_cluster(ClusterInput {
                name: cluster.name.clone(),
                labels: LabelSource::Inventory,
                paused: true,
                base: Some(BTreeMap::new()),
                head: Some(BTreeMap::new()),
            });
            review.paused = true;
            return review;
        }
        match self.ask(cluster).await {
            Ok(input) => compare_cluster(input),
            Err(why) => ClusterReview {
                name: cluster.name.clone(),
                membership: Membership::Stays,
                paused: false,
                labels: LabelSource::Inventory,
                counts: Counts::default(),
                profiles: vec![],
                unreachable: Some(why),
            },
        }
    }

    /// Both sides of one reachable cluster; `Err` when it cannot be asked.
    async fn ask(&self, cluster: &Cluster) -> Result<ClusterInput, String> {
        let target = connect(cluster, self.options).await?;
        let version = cluster::version(&cluster.name, &target.client)
            .await
            .map_err(|e| e.to_string())?;
        let queries = classify::resource_queries(self.repo.classifiers.values());
        let facts = ClusterFacts {
            version: Some(version),
            resources: cluster::resources::answer(&target, &queries).await,
        };
        let classification = classify::classify(cluster, self.repo.classifiers.values(), &facts);
        let classifier_labels: BTreeMap<String, String> = classification
            .labels
            .iter()
            .filter(|(k, _)| {
                matches!(
                    classification.owners.get(*k),
                    Some(LabelOwner::Classifier(_))
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remote = inventory::list(
            &target.client,
            &target.name,
            &cluster.name,
            Destination::Remote,
        )
        .await
        .map_err(|e| e.to_string())?;
        let local = match self.management {
            Some(m) => inventory::list(&m.client, &m.name, &cluster.name, Destination::Local)
                .await
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let labels = &classification.labels;
        let mut variables = serde_json::Map::new();
        variables.insert(
            "cluster".into(),
            render::cluster_context(cluster, labels, facts.version.as_ref()),
        );
        let mut base = BTreeMap::new();
        let mut head = BTreeMap::new();
        for profile in crate::plan::profiles_for_cluster(self.repo, &cluster.name, labels) {
            let (b, h) = self
                .profile(profile, &variables, &target, &remote, &local)
                .await;
            base.insert(profile.name.clone(), b);
            head.insert(profile.name.clone(), h);
        }
        // Deployed but no longer targeted: withdrawn.
        for (name, inv) in remote.iter().chain(local.iter()) {
            if head.contains_key(name) || base.contains_key(name) {
                continue;
            }
            let leave = inv.deployed.stop_matching == StopMatchingBehavior::LeavePolicies;
            let contents = self
                .deployed(&target, remote.get(name), local.get(name), &[])
                .await;
            base.insert(
                name.clone(),
                ProfileSide {
                    state: ProfileState::Rendered(contents),
                    leave_policies: leave,
                },
            );
        }
        Ok(ClusterInput {
            name: cluster.name.clone(),
            labels: LabelSource::Live { classifier_labels },
            paused: false,
            base: Some(base),
            head: Some(head),
        })
    }

    /// One targeted profile: (live side, head side).
    async fn profile(
        &self,
        profile: &Profile,
        variables: &serde_json::Map<String, Value>,
        target: &Arc<Target>,
        remote: &BTreeMap<String, Inventory>,
        local: &BTreeMap<String, Inventory>,
    ) -> (ProfileSide, ProfileSide) {
        let leave = profile.spec.stop_matching_behavior == StopMatchingBehavior::LeavePolicies;
        let side = |state| ProfileSide {
            state,
            leave_policies: leave,
        };
        let management = match self.management {
            Some(m) => Management::Read(m),
            None => Management::Unavailable,
        };
        let rendered = match objects::variables(
            profile,
            variables,
            target,
            management,
            self.reads,
            self.sandbox,
        )
        .await
        .and_then(|vars| render::render_profile(self.repo, profile, &vars, self.sandbox))
        {
            Ok(mut r) => {
                if let Some(built) = self.built
                    && r.pending.is_empty()
                    && let Err(e) = commits::expand(built, &mut r)
                {
                    Err(e)
                } else {
                    Ok(r)
                }
            }
            Err(e) => Err(e),
        };
        let rendered = match rendered {
            Ok(r) if r.pending.is_empty() => r,
            // Pending or failed: head says why; the live side is what is deployed.
            other => {
                let head = match other {
                    Ok(r) => ProfileState::Pending(r.pending),
                    Err(e) => ProfileState::Error(format!(
                        "{}:{}: {}",
                        e.origin.file, e.origin.line, e.message
                    )),
                };
                let deployed = self
                    .deployed(
                        target,
                        remote.get(&profile.name),
                        local.get(&profile.name),
                        &[],
                    )
                    .await;
                return (side(ProfileState::Rendered(deployed)), side(head));
            }
        };
        let (live_side, head_side) = self.preview(profile, rendered, target, remote, local).await;
        (side(live_side), side(head_side))
    }

    /// Dry-runs a rendered profile: the live objects (base) and the dry-run results (head);
    /// objects and releases the inventories hold that the render dropped appear on the live
    /// side only (what prune would delete).
    async fn preview(
        &self,
        profile: &Profile,
        rendered: RenderedProfile,
        target: &Arc<Target>,
        remote: &BTreeMap<String, Inventory>,
        local: &BTreeMap<String, Inventory>,
    ) -> (ProfileState, ProfileState) {
        let mut head = Contents::default();
        let mut refused = Vec::new();
        let mut seen: Vec<(bool, String)> = Vec::new();
        let mut live_objects: BTreeMap<(bool, String), Value> = BTreeMap::new();
        for (is_local, destination) in [(false, Some(target)), (true, self.management)] {
            let objects: Vec<Value> = rendered
                .objects
                .iter()
                .filter(|o| (o.deployment_type == DeploymentType::Local) == is_local)
                .map(|o| o.object.clone())
                .collect();
            if objects.is_empty() {
                continue;
            }
            let Some(destination) = destination else {
                refused.push(
                    "deploymentType: Local needs --management-cluster: its objects were not asked"
                        .to_string(),
                );
                continue;
            };
            match apply::preview(destination, &objects).await {
                Ok(previews) => {
                    for Preview {
                        key,
                        object,
                        live,
                        result,
                    } in previews
                    {
                        seen.push((is_local, key.clone()));
                        if let Some(live) = live {
                            live_objects.insert((is_local, key.clone()), live);
                        }
                        match result {
                            Ok(result) => {
                                head.objects.insert((is_local, key), result);
                            }
                            Err(e) => {
                                refused.push(e);
                                head.objects.insert((is_local, key), object);
                            }
                        }
                    }
                }
                Err(e) => refused.push(e),
            }
        }
        for release in rendered.releases {
            head.releases.insert(
                helm::release_key(&release.namespace, &release.name),
                Release {
                    chart: release.chart,
                    version: release.version,
                    repository: release.repository,
                    uninstall: release.action == HelmChartAction::Uninstall,
                    values: release.values,
                    secret_paths: release.secret_paths,
                },
            );
        }
        let mut base = self
            .deployed(
                target,
                remote.get(&profile.name),
                local.get(&profile.name),
                &seen,
            )
            .await;
        base.objects.extend(live_objects);
        // A deployed release keeps its recorded chart; its values are known only by hash: equal
        // hashes mean head's values are what is installed.
        for (key, release) in base.releases.iter_mut() {
            let Some(new) = head.releases.get(key) else {
                release.values = Value::Null;
                continue;
            };
            if release.values == json!(helm::values_hash(&new.values)) {
                release.values = new.values.clone();
            } else {
                release.values = Value::Null;
                head.notes.push(format!(
                    "{key}: the installed values are known only by their hash, so the values diff shows head's values in full"
                ));
            }
        }
        if refused.is_empty() {
            (ProfileState::Rendered(base), ProfileState::Rendered(head))
        } else {
            (
                ProfileState::Rendered(base),
                ProfileState::Error(format!(
                    "the cluster refuses the apply (server-side dry-run): {}",
                    refused.join("; ")
                )),
            )
        }
    }

    /// What the inventories say is deployed, as live objects (those in `skip` are read by the
    /// caller) and recorded releases.
    async fn deployed(
        &self,
        target: &Arc<Target>,
        remote: Option<&Inventory>,
        local: Option<&Inventory>,
        skip: &[(bool, String)],
    ) -> Contents {
        let mut contents = Contents::default();
        for (is_local, inv, destination) in [
            (false, remote, Some(target)),
            (true, local, self.management),
        ] {
            let (Some(inv), Some(destination)) = (inv, destination) else {
                continue;
            };
            for (key, entry) in &inv.objects {
                if skip.contains(&(is_local, key.clone())) {
                    continue;
                }
                let stub = json!({
                    "apiVersion": entry.api_version,
                    "kind": entry.kind,
                    "metadata": {"name": entry.name, "namespace": entry.namespace},
                });
                if let Ok(Some(live)) = apply::read_live(destination, &stub).await {
                    contents.objects.insert((is_local, key.clone()), live);
                }
            }
            for (key, entry) in &inv.releases {
                contents.releases.insert(
                    key.clone(),
                    Release {
                        chart: entry.chart.clone(),
                        version: entry.version.clone(),
                        repository: entry.repository.clone(),
                        uninstall: false,
                        // Replaced by head's values when the hashes match (see `preview`).
                        values: json!(entry.values_hash),
                        secret_paths: entry.secret_paths.clone(),
                    },
                );
            }
        }
        contents
    }
}
