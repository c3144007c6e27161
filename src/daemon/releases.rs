//! The Helm phase of a profile on one cluster: decide per release whether helm must run (from
//! the inventory's record and the release's live state, read through the kube API), fetch the
//! chart into the cache, `helm upgrade --install` / `helm uninstall`, and report each release
//! with its diffs. Runs before the profile's objects are applied (they may need the chart's
//! CRDs). A helm failure fails the profile and leaves that release as it was; the profile's
//! other releases proceed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tracing::{info, warn};

use crate::cluster::releases;
use crate::cluster::{Target, inventory};
use crate::config::HelmChartAction;
use crate::helm::cli::{Charts, Credentials, KubeAccess};
use crate::helm::{
    self, Decision, LiveRelease, ReleaseEntry, ReleaseRecord, chart_location, describe,
    manifest_diff, values_diff, values_hash,
};
use crate::render::RenderedRelease;
use crate::report::{Action, ObjectChange};

/// One cluster as helm reaches it.
pub struct HelmTarget<'a> {
    /// The cluster's client (release state, inventory).
    pub target: &'a Target,
    /// The chart cache and helm binary.
    pub charts: &'a Charts,
    /// helm's way to the cluster.
    pub access: KubeAccess,
    /// The cluster's `gitVersion`, for `helm template`.
    pub kube_version: Option<String>,
    /// Chart credentials read from the management cluster.
    pub secrets: &'a ManagementSecrets,
}

/// Chart credentials kept in the management cluster: a `registryCredentialsConfig` Secret that
/// is not in sources/ (keys `username` and `password`, as there), read once per pass per Secret
/// (a failure too). Messages name the Secret, never its values.
pub struct ManagementSecrets {
    management: Option<Arc<Target>>,
    /// `--management-cluster NAME`, to say why there is no management target.
    configured: Option<String>,
    read: tokio::sync::Mutex<BTreeMap<(String, String), Result<Credentials, String>>>,
}

impl ManagementSecrets {
    /// For one pass: the management cluster (`None` when there is none or it is unreachable)
    /// and the `--management-cluster` option.
    pub fn new(management: Option<Arc<Target>>, configured: Option<String>) -> Self {
        ManagementSecrets {
            management,
            configured,
            read: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The credentials in Secret `namespace/name` of the management cluster.
    pub async fn credentials(&self, namespace: &str, name: &str) -> Result<Credentials, String> {
        // Held across the read, so concurrent clusters wait for one request per Secret.
        let mut read = self.read.lock().await;
        let key = (namespace.to_string(), name.to_string());
        if let Some(result) = read.get(&key) {
            return result.clone();
        }
        let result = self.fetch(namespace, name).await;
        read.insert(key, result.clone());
        result
    }

    async fn fetch(&self, namespace: &str, name: &str) -> Result<Credentials, String> {
        let what = format!(
            "registryCredentialsConfig: Secret {namespace}/{name} (not in sources/) in the management cluster"
        );
        let Some(target) = &self.management else {
            return Err(match &self.configured {
                Some(cluster) => format!(
                    "{what}: management cluster {cluster} is not reachable or not in clusters/"
                ),
                None => format!(
                    "{what}: no management cluster is configured: set --management-cluster NAME or run in a cluster"
                ),
            });
        };
        let api: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| format!("{what}: reading it from cluster {}: {e}", target.name))?
            .ok_or_else(|| format!("{what}: not found in cluster {}", target.name))?;
        let data = secret.data.unwrap_or_default();
        let field = |key: &str| -> Result<String, String> {
            let bytes = data
                .get(key)
                .ok_or_else(|| format!("{what}: no data key {key:?}"))?;
            let text = std::str::from_utf8(&bytes.0)
                .map_err(|_| format!("{what}: data key {key:?} is not UTF-8 text"))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        };
        Ok(Credentials {
            username: field("username")?,
            password: field("password")?,
        })
    }
}

/// What the Helm phase of one profile did.
#[derive(Debug, Default)]
pub struct ReleasesOutcome {
    /// One change per release (key `helm:<ns>/<name>`), the note's phrase in `detail`.
    pub changes: Vec<ObjectChange>,
    /// helm's and the cluster's errors, naming the release.
    pub errors: Vec<String>,
    /// What the inventory records after the phase.
    pub entries: BTreeMap<String, ReleaseEntry>,
    /// Whether anything was written (a helm install, upgrade or uninstall, or an inventory).
    pub wrote: bool,
}

fn change(key: &str, action: Action, detail: String, diff: Option<String>) -> ObjectChange {
    ObjectChange {
        key: key.to_string(),
        action,
        diff,
        detail: Some(detail),
    }
}

/// The live state of helm's releases, listed once per namespace the first time a release of that
/// namespace is looked at. One per `sync`/`withdraw` call: each release is looked up before
/// that call writes it, so the snapshot is never stale for the release it answers about.
struct LiveReleases<'a> {
    target: &'a Target,
    by_namespace: HashMap<String, Result<Vec<BTreeMap<String, String>>, String>>,
}

impl<'a> LiveReleases<'a> {
    fn new(target: &'a Target) -> Self {
        LiveReleases {
            target,
            by_namespace: HashMap::new(),
        }
    }

    /// Release `name`'s newest revision and status in `namespace`; `None` when helm has none.
    async fn get(&mut self, namespace: &str, name: &str) -> Result<Option<LiveRelease>, String> {
        if !self.by_namespace.contains_key(namespace) {
            let listed = releases::in_namespace(self.target, namespace)
                .await
                .map_err(|e| e.to_string());
            self.by_namespace.insert(namespace.to_string(), listed);
        }
        match self.by_namespace.get(namespace) {
            Some(Ok(labels)) => Ok(helm::newest_revision(labels, name)),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(None),
        }
    }
}

/// Installs, upgrades and uninstalls a profile's releases. `base` is the inventory to extend
/// with an in-flight record before a new release is installed (so a crash cannot orphan it);
/// `lost` maps release keys another profile won to the winner; `others` maps release keys to
/// the other profile whose inventory holds them.
pub async fn sync(
    ctx: &HelmTarget<'_>,
    releases: &[RenderedRelease],
    base: &inventory::Inventory,
    lost: &BTreeMap<String, String>,
    others: &BTreeMap<String, String>,
    dry_run: bool,
) -> ReleasesOutcome {
    let previous = &base.releases;
    let mut out = ReleasesOutcome {
        entries: previous.clone(),
        ..ReleasesOutcome::default()
    };
    let mut live = LiveReleases::new(ctx.target);
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for release in releases {
        let key = helm::release_key(&release.namespace, &release.name);
        wanted.insert(key.clone());
        if let Some(winner) = lost.get(&key) {
            if out.entries.remove(&key).is_some() {
                out.changes.push(change(
                    &key,
                    Action::Skipped,
                    format!("now installed by profile {winner}"),
                    None,
                ));
            }
            continue;
        }
        match release.action {
            HelmChartAction::Uninstall => {
                if let Some(owner) = others.get(&key) {
                    out.changes.push(change(
                        &key,
                        Action::Skipped,
                        format!("not uninstalled: profile {owner} installs it"),
                        None,
                    ));
                    continue;
                }
                let recorded = out.entries.get(&key).cloned();
                uninstall(
                    ctx,
                    &mut live,
                    &key,
                    release,
                    recorded.as_ref(),
                    dry_run,
                    &mut out,
                )
                .await;
            }
            HelmChartAction::Install => {
                install(ctx, &mut live, &key, release, base, dry_run, &mut out).await;
            }
        }
    }
    // Releases that left the profile (not to another profile) are uninstalled, like a prune.
    for (key, entry) in previous {
        if wanted.contains(key) {
            continue;
        }
        if let Some(winner) = lost.get(key) {
            out.entries.remove(key);
            out.changes.push(change(
                key,
                Action::Skipped,
                format!("now installed by profile {winner}"),
                None,
            ));
            continue;
        }
        remove(ctx, &mut live, key, entry, others, dry_run, &mut out).await;
    }
    out
}

/// Withdraws a profile's releases: uninstalls them (or, with LeavePolicies, leaves them and
/// forgets them). Returns the outcome; `entries` holds the releases that could not be
/// uninstalled (the inventory keeps them for the next pass).
pub async fn withdraw(
    ctx: &HelmTarget<'_>,
    entries: &BTreeMap<String, ReleaseEntry>,
    others: &BTreeMap<String, String>,
    leave: bool,
) -> ReleasesOutcome {
    let mut out = ReleasesOutcome {
        entries: entries.clone(),
        ..ReleasesOutcome::default()
    };
    let mut live = LiveReleases::new(ctx.target);
    for (key, entry) in entries {
        if leave {
            out.entries.remove(key);
            out.changes.push(change(
                key,
                Action::Released,
                format!(
                    "left installed ({} {}; LeavePolicies)",
                    entry.chart, entry.version
                ),
                None,
            ));
            continue;
        }
        remove(ctx, &mut live, key, entry, others, false, &mut out).await;
    }
    out
}

/// Uninstalls a recorded release that is no longer wanted.
async fn remove(
    ctx: &HelmTarget<'_>,
    live_releases: &mut LiveReleases<'_>,
    key: &str,
    entry: &ReleaseEntry,
    others: &BTreeMap<String, String>,
    dry_run: bool,
    out: &mut ReleasesOutcome,
) {
    if let Some(owner) = others.get(key) {
        out.entries.remove(key);
        out.changes.push(change(
            key,
            Action::Skipped,
            format!("left alone: profile {owner} installs it now"),
            None,
        ));
        return;
    }
    let live = match live_releases.get(&entry.namespace, &entry.name).await {
        Ok(live) => live,
        Err(e) => {
            out.errors
                .push(format!("helm release {}: {e}", display(key)));
            return;
        }
    };
    if live.is_none() {
        if !dry_run {
            out.entries.remove(key);
        }
        out.changes
            .push(change(key, Action::Skipped, "already gone".into(), None));
        return;
    }
    let what = format!("({} {})", entry.chart, entry.version);
    if dry_run {
        out.changes.push(change(
            key,
            Action::Pruned,
            format!("would uninstall {what}"),
            None,
        ));
        return;
    }
    match run_uninstall(ctx, &entry.namespace, &entry.name).await {
        Ok(()) => {
            out.wrote = true;
            out.entries.remove(key);
            info!(release = display(key), "helm release uninstalled");
            out.changes.push(change(
                key,
                Action::Pruned,
                format!("uninstalled {what}"),
                None,
            ));
        }
        Err(e) => {
            out.wrote = true;
            out.errors
                .push(format!("helm release {}: {e}", display(key)));
            out.changes.push(change(
                key,
                Action::Failed,
                format!("uninstall failed {what}"),
                None,
            ));
        }
    }
}

/// `helmChartAction: Uninstall`.
async fn uninstall(
    ctx: &HelmTarget<'_>,
    live_releases: &mut LiveReleases<'_>,
    key: &str,
    release: &RenderedRelease,
    recorded: Option<&ReleaseEntry>,
    dry_run: bool,
    out: &mut ReleasesOutcome,
) {
    let entry = recorded.cloned().unwrap_or_else(|| ReleaseEntry {
        namespace: release.namespace.clone(),
        name: release.name.clone(),
        repository: release.repository.clone(),
        chart: release.chart.clone(),
        version: release.version.clone(),
        values_hash: String::new(),
        revision: 0,
        secret_paths: BTreeSet::new(),
    });
    let live = match live_releases.get(&release.namespace, &release.name).await {
        Ok(live) => live,
        Err(e) => {
            out.errors
                .push(format!("helm release {}: {e}", display(key)));
            return;
        }
    };
    if live.is_none() {
        out.entries.remove(key);
        out.changes.push(change(
            key,
            Action::Unchanged,
            "not installed (helmChartAction: Uninstall)".into(),
            None,
        ));
        return;
    }
    remove(
        ctx,
        live_releases,
        key,
        &entry,
        &BTreeMap::new(),
        dry_run,
        out,
    )
    .await;
}

/// `helmChartAction: Install`: nothing when unchanged, else fetch and upgrade --install.
async fn install(
    ctx: &HelmTarget<'_>,
    live_releases: &mut LiveReleases<'_>,
    key: &str,
    release: &RenderedRelease,
    base: &inventory::Inventory,
    dry_run: bool,
    out: &mut ReleasesOutcome,
) {
    let location = chart_location(
        &release.repository,
        &release.repository_name,
        &release.chart,
    );
    let chart_name = location.chart_name().to_string();
    let desired = ReleaseEntry {
        namespace: release.namespace.clone(),
        name: release.name.clone(),
        repository: release.repository.clone(),
        chart: release.chart.clone(),
        version: release.version.clone(),
        values_hash: values_hash(&release.values),
        revision: 0,
        secret_paths: release.secret_paths.clone(),
    };
    let recorded = base.releases.get(key);
    let fail = |out: &mut ReleasesOutcome, message: String| {
        out.errors
            .push(format!("helm release {}: {message}", display(key)));
        out.changes.push(change(
            key,
            Action::Failed,
            format!("failed ({chart_name} {})", release.version),
            None,
        ));
    };
    // Credentials kept in the management cluster are read every pass, so a Secret that went
    // away fails the profile even when the release is unchanged.
    let credentials = match &release.credentials_ref {
        Some((namespace, name)) => match ctx.secrets.credentials(namespace, name).await {
            Ok(credentials) => Some(credentials),
            Err(e) => return fail(out, e),
        },
        None => release.credentials.clone(),
    };
    let live = match live_releases.get(&release.namespace, &release.name).await {
        Ok(live) => live,
        Err(e) => return fail(out, e),
    };
    let decision = helm::decide(recorded, live.as_ref(), &desired);
    if decision == Decision::Unchanged {
        out.changes.push(change(
            key,
            Action::Unchanged,
            describe(&decision, &chart_name, &release.version, None, false),
            None,
        ));
        return;
    }
    // What is there now, for the note's diffs (best effort: a record that cannot be read only
    // costs the diff).
    let old: Option<ReleaseRecord> = match &live {
        Some(l) => {
            match releases::record(ctx.target, &release.namespace, &release.name, l.revision).await
            {
                Ok(record) => record,
                Err(e) => {
                    warn!(release = display(key), error = %e, "release record not readable");
                    None
                }
            }
        }
        None => None,
    };
    let chart = match ctx
        .charts
        .chart(&location, &release.version, credentials.as_ref())
        .await
    {
        Ok(path) => path,
        Err(e) => return fail(out, e.to_string()),
    };
    let helm = match ctx.charts.helm() {
        Ok(helm) => helm,
        Err(e) => return fail(out, e.to_string()),
    };
    let mut redact = desired.secret_paths.clone();
    if let Some(r) = recorded {
        redact.extend(r.secret_paths.iter().cloned());
    }
    let empty = serde_json::Value::Object(Default::default());
    let old_values = old.as_ref().map_or(&empty, |o| &o.config);
    let old_manifest = old.as_ref().map_or("", |o| o.manifest.as_str());
    let live_version = old.as_ref().map(|o| o.chart_version.as_str());
    let action = if live.is_none() {
        Action::Created
    } else {
        Action::Updated
    };
    let diffs = |new_manifest: &str| {
        let text: String = [
            values_diff(
                &release.namespace,
                &release.name,
                old_values,
                &release.values,
                &redact,
            ),
            manifest_diff(old_manifest, new_manifest),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!text.is_empty()).then_some(text)
    };
    if dry_run {
        let _slot = ctx.charts.slot().await;
        match helm
            .template(
                &release.namespace,
                &release.name,
                &chart,
                &release.values,
                ctx.kube_version.as_deref(),
            )
            .await
        {
            Ok(manifest) => out.changes.push(change(
                key,
                action,
                describe(&decision, &chart_name, &release.version, live_version, true),
                diffs(&manifest),
            )),
            Err(e) => fail(out, e.to_string()),
        }
        return;
    }
    // A release new to the inventory is recorded (in flight) before helm creates it.
    if !base.releases.contains_key(key) {
        let in_flight = ReleaseEntry {
            values_hash: String::new(),
            ..desired.clone()
        };
        out.entries.insert(key.to_string(), in_flight);
        let intent = inventory::Inventory {
            releases: out.entries.clone(),
            ..base.clone()
        };
        out.wrote = true;
        if let Err(e) = inventory::write(&ctx.target.client, &ctx.target.name, &intent).await {
            out.entries.remove(key);
            return fail(out, e.to_string());
        }
    }
    let started = std::time::Instant::now();
    let result = {
        let _slot = ctx.charts.slot().await;
        helm.upgrade(
            &ctx.access,
            &release.namespace,
            &release.name,
            &chart,
            &release.values,
        )
        .await
    };
    out.wrote = true;
    match result {
        Ok(record) => {
            info!(
                release = display(key),
                chart = %chart_name,
                version = %release.version,
                revision = record.revision,
                millis = started.elapsed().as_millis() as u64,
                "helm upgrade --install"
            );
            out.entries.insert(
                key.to_string(),
                ReleaseEntry {
                    revision: record.revision,
                    ..desired
                },
            );
            out.changes.push(change(
                key,
                action,
                describe(
                    &decision,
                    &chart_name,
                    &release.version,
                    live_version,
                    false,
                ),
                diffs(&record.manifest),
            ));
        }
        Err(e) => fail(out, e.to_string()),
    }
}

async fn run_uninstall(
    ctx: &HelmTarget<'_>,
    namespace: &str,
    name: &str,
) -> Result<(), crate::helm::cli::HelmError> {
    let helm = ctx.charts.helm()?;
    let _slot = ctx.charts.slot().await;
    helm.uninstall(&ctx.access, namespace, name).await
}

/// `helm:ns/name` → `ns/name`.
fn display(key: &str) -> &str {
    key.strip_prefix(helm::RELEASE_PREFIX).unwrap_or(key)
}
