//! The `flotilla` command line: parse flags, build the pieces, call one command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use flotilla::classify::{self, ClusterFacts};
use flotilla::config::{self, ConfigRepo, Diagnostics};
use flotilla::render::{self, kustomize, sandbox::Sandbox};
use flotilla::report::{ClusterStatus, StateNote};
use flotilla::{cluster, daemon, source};

/// mimalloc instead of glibc's malloc: rendering a fleet allocates and frees millions of small
/// values from two threads, where glibc's allocator spent a quarter of the time (consolidating
/// and unlinking free chunks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the add-ons of a fleet of Kubernetes clusters in the state a Git repository declares.
#[derive(Parser)]
#[command(name = "flotilla", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FLOTILLA_LOG_FORMAT")]
    log_format: LogFormat,
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant (`run`'s flags) does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Validate a config repo: exit 0 when valid, 1 with every `FILE:LINE: message` when not.
    Validate {
        /// The config root.
        #[arg(long, default_value = ".", env = "FLOTILLA_PATH")]
        path: PathBuf,
    },
    /// Print the multi-document YAML that would be applied to one cluster.
    Render {
        /// The config root.
        #[arg(long, env = "FLOTILLA_PATH")]
        path: PathBuf,
        /// The cluster to render for.
        #[arg(long, env = "FLOTILLA_CLUSTER")]
        cluster: String,
        /// Only this profile.
        #[arg(long, env = "FLOTILLA_PROFILE")]
        profile: Option<String>,
        /// Read the cluster's live version (and version classifiers) through its kubeconfig here.
        #[arg(long, env = "FLOTILLA_KUBECONFIG_DIR")]
        kubeconfig_dir: Option<PathBuf>,
        /// Cluster of the inventory that templateResourceRefs with `cluster: management` are
        /// read from (with --kubeconfig-dir; default: the cluster flotilla runs in, if any).
        #[arg(long, env = "FLOTILLA_MANAGEMENT_CLUSTER")]
        management_cluster: Option<String>,
        /// kustomize binary that expands kustomizationRefs (default: `kustomize` on PATH, then
        /// scripts/testbin.sh's cache; without one they are printed as comments).
        #[arg(long, env = "FLOTILLA_KUSTOMIZE_BIN")]
        kustomize_bin: Option<PathBuf>,
    },
    /// One sync pass of the branch's commit over the fleet, then exit (0 when every cluster is
    /// in sync, 1 when a cluster or profile failed or the commit is invalid).
    Sync {
        #[command(flatten)]
        sync: SyncArgs,
        /// Run one pass and exit (the only mode of `sync`; `run` is the daemon).
        #[arg(long, required = true)]
        once: bool,
    },
    /// The daemon: poll the repository and keep the fleet in sync until SIGTERM.
    Run {
        #[command(flatten)]
        sync: SyncArgs,
        /// Poll interval (e.g. 30s, 2m).
        #[arg(long, default_value = "30s", value_parser = parse_duration, env = "FLOTILLA_INTERVAL")]
        interval: Duration,
        /// How often classifiers are re-evaluated between passes (`/version` and their resource
        /// queries only); a cluster whose labels changed gets a pass at once.
        #[arg(long, default_value = "60s", value_parser = parse_duration, env = "FLOTILLA_CLASSIFY_INTERVAL")]
        classify_interval: Duration,
        /// Glob of refs (e.g. 'refs/pull/*/head') whose new head commits get a plan note under
        /// `<notes-ref>-plan`, rendered against the merge base with the branch.
        #[arg(long, env = "FLOTILLA_PLAN_REFS")]
        plan_refs: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        ha: HaArgs,
    },
    /// What the notes say: clusters × profiles with their status, as a table.
    Status {
        /// URL or local directory of the config repository.
        #[arg(long, env = "FLOTILLA_REPO")]
        repo: String,
        /// Commit to show (default: the branch's head).
        #[arg(long, env = "FLOTILLA_REV")]
        rev: Option<String>,
        /// Branch.
        #[arg(long, default_value = "main", env = "FLOTILLA_BRANCH")]
        branch: String,
        /// Notes ref of the human note; the state note is `<ref>-state`.
        #[arg(
            long,
            default_value = "refs/notes/flotilla",
            env = "FLOTILLA_NOTES_REF"
        )]
        notes_ref: String,
        #[command(flatten)]
        git: GitArgs,
    },
    /// What merging head into base would do, per cluster (render mode: no cluster access).
    /// Exit 0 when nothing would change, 1 when something would, 2 on an error.
    Plan {
        /// Local directory of the config repository.
        #[arg(long, env = "FLOTILLA_REPO")]
        repo: PathBuf,
        /// The old revision (the pull request's target); not used with `--live`, where the
        /// clusters themselves are the old side.
        #[arg(long, env = "FLOTILLA_BASE", required_unless_present = "live")]
        base: Option<String>,
        /// The new revision (the pull request's head).
        #[arg(long, env = "FLOTILLA_HEAD")]
        head: String,
        /// Config root inside the repository.
        #[arg(long, env = "FLOTILLA_PATH")]
        path: Option<String>,
        /// Notes ref of the human note; labels come from `<ref>-state`.
        #[arg(
            long,
            default_value = "refs/notes/flotilla",
            env = "FLOTILLA_NOTES_REF"
        )]
        notes_ref: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Markdown, env = "FLOTILLA_FORMAT")]
        format: PlanFormat,
        /// Write the plan here instead of stdout.
        #[arg(long, env = "FLOTILLA_OUTPUT")]
        output: Option<PathBuf>,
        /// kustomize binary for kustomizationRefs (default: `kustomize` on PATH, then
        /// scripts/testbin.sh's cache; without one they are reported as not expanded).
        #[arg(long, env = "FLOTILLA_KUSTOMIZE_BIN")]
        kustomize_bin: Option<PathBuf>,
        /// Diff head against what each cluster really holds (server-side dry-run), so drift and
        /// admission errors show up; needs `--kubeconfig-dir`.
        #[arg(long, requires = "kubeconfig_dir")]
        live: bool,
        /// With `--live`: where the inventory's kubeconfig files are.
        #[arg(long, env = "FLOTILLA_KUBECONFIG_DIR")]
        kubeconfig_dir: Option<PathBuf>,
        /// With `--live`: the cluster holding Local objects and management templateResourceRefs.
        #[arg(long, env = "FLOTILLA_MANAGEMENT_CLUSTER")]
        management_cluster: Option<String>,
    },
}

/// Output of `flotilla plan`.
#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    /// A pull-request comment.
    Markdown,
    /// docs/plan.md's schema.
    Json,
}

/// Flags shared by `sync` and `run`.
#[derive(clap::Args)]
struct SyncArgs {
    /// URL (file://, https://, ssh://) or local directory of the config repository.
    #[arg(long, env = "FLOTILLA_REPO")]
    repo: String,
    /// Branch to follow.
    #[arg(long, default_value = "main", env = "FLOTILLA_BRANCH")]
    branch: String,
    /// Config root inside the repository.
    #[arg(long, env = "FLOTILLA_PATH")]
    path: Option<String>,
    /// Directory of the clusters' kubeconfig files.
    #[arg(long, env = "FLOTILLA_KUBECONFIG_DIR")]
    kubeconfig_dir: PathBuf,
    /// Cluster of the inventory that receives `deploymentType: Local` objects (default: the
    /// cluster flotilla runs in, if any).
    #[arg(long, env = "FLOTILLA_MANAGEMENT_CLUSTER")]
    management_cluster: Option<String>,
    /// Notes ref of the human note; the state note is `<ref>-state`.
    #[arg(
        long,
        default_value = "refs/notes/flotilla",
        env = "FLOTILLA_NOTES_REF"
    )]
    notes_ref: String,
    /// Push the notes refs (default when the repository is a remote).
    #[arg(long, overrides_with = "no_push_notes", env = "FLOTILLA_PUSH_NOTES")]
    push_notes: bool,
    /// Do not push the notes refs.
    #[arg(long, overrides_with = "push_notes")]
    no_push_notes: bool,
    /// Clusters handled at once.
    #[arg(long, default_value_t = 16, env = "FLOTILLA_CONCURRENCY")]
    concurrency: usize,
    /// kustomize binary for kustomizationRefs (default: `kustomize` on PATH, then
    /// scripts/testbin.sh's cache, `$FLOTILLA_TESTBIN` or ~/.cache/flotilla/testbin).
    #[arg(long, env = "FLOTILLA_KUSTOMIZE_BIN")]
    kustomize_bin: Option<PathBuf>,
    /// helm binary (v4) for helmCharts (default: `helm` on PATH, then scripts/testbin.sh's
    /// cache, `$FLOTILLA_TESTBIN` or ~/.cache/flotilla/testbin).
    #[arg(long, env = "FLOTILLA_HELM_BIN")]
    helm_bin: Option<PathBuf>,
    /// Time limit of one helm operation (install, upgrade, uninstall, pull), also helm's own
    /// --timeout for hooks (e.g. 5m, 90s).
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "FLOTILLA_HELM_TIMEOUT")]
    helm_timeout: Duration,
    /// Where fetched Helm charts are kept (default: `charts` next to the git mirrors of
    /// --cache-dir, e.g. ~/.cache/flotilla/charts).
    #[arg(long, env = "FLOTILLA_CHART_CACHE_DIR")]
    chart_cache_dir: Option<PathBuf>,
    #[command(flatten)]
    git: GitArgs,
}

/// Replicas of `run`: leader election and sharding.
#[derive(clap::Args)]
struct HaArgs {
    /// Only the holder of a Lease in the management cluster syncs; other replicas wait and take
    /// over when it stops renewing. A holder that cannot renew within --lease-renew-deadline
    /// exits with status 1 (its Deployment restarts it as a candidate).
    #[arg(long, env = "FLOTILLA_LEADER_ELECT")]
    leader_elect: bool,
    /// The Lease's name (with --shards: `<name>-shard-<i>`, one Lease per shard).
    #[arg(long, default_value = "flotilla", env = "FLOTILLA_LEASE_NAME")]
    lease_name: String,
    /// The Lease's namespace in the management cluster (it must exist).
    #[arg(
        long,
        default_value = "flotilla-system",
        env = "FLOTILLA_LEASE_NAMESPACE"
    )]
    lease_namespace: String,
    /// How long other replicas wait on a Lease that is not renewed before taking it over.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "FLOTILLA_LEASE_DURATION")]
    lease_duration: Duration,
    /// How long the holder keeps failing to renew before it gives up (< --lease-duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "FLOTILLA_LEASE_RENEW_DEADLINE")]
    lease_renew_deadline: Duration,
    /// How often the holder renews and candidates try (< --lease-renew-deadline).
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "FLOTILLA_LEASE_RETRY_PERIOD")]
    lease_retry_period: Duration,
    /// Split the fleet's clusters over this many shards (fnv1a64(cluster name) % shards); each
    /// shard writes notes to `<notes-ref>/shard-<i>` and `<notes-ref>/shard-<i>-state`.
    #[arg(long, default_value_t = 1, env = "FLOTILLA_SHARDS")]
    shards: u32,
    /// This replica's shard (default: the StatefulSet ordinal, the trailing `-N` of POD_NAME or
    /// the hostname).
    #[arg(long, env = "FLOTILLA_SHARD_INDEX")]
    shard_index: Option<u32>,
}

impl HaArgs {
    /// Adds the shard, the Lease and the replica's user agent to `options`.
    fn apply(&self, options: daemon::Options) -> anyhow::Result<daemon::Options> {
        let pod = std::env::var("POD_NAME")
            .ok()
            .filter(|p| !p.trim().is_empty());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let shard = flotilla::shard::Shard::resolve(
            self.shards,
            self.shard_index,
            pod.as_deref(),
            host.as_deref(),
        )?;
        let identity = daemon::lease::identity(pod.as_deref(), host.as_deref(), std::process::id());
        let lease = self.leader_elect.then(|| daemon::lease::LeaseOptions {
            name: shard.lease_name(&self.lease_name),
            namespace: self.lease_namespace.clone(),
            identity: identity.clone(),
            duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        });
        if let Some(lease) = &lease {
            lease.check()?;
        }
        if shard.sharded() {
            tracing::info!(shard = shard.index, shards = shard.count, "sharded");
        }
        Ok(daemon::Options {
            // One plan note per pull-request head: shard 0 writes them for everyone.
            plan_refs: options.plan_refs.filter(|_| shard.index == 0),
            shard,
            lease,
            user_agent: Some(format!(
                "flotilla/{} ({identity})",
                env!("CARGO_PKG_VERSION")
            )),
            ..options
        })
    }
}

/// Git credentials and the mirror cache.
#[derive(clap::Args)]
struct GitArgs {
    /// Private key for ssh remotes.
    #[arg(long, env = "FLOTILLA_SSH_KEY")]
    ssh_key: Option<PathBuf>,
    /// known_hosts file for ssh host keys (default ~/.ssh/known_hosts).
    #[arg(long, env = "FLOTILLA_KNOWN_HOSTS")]
    known_hosts: Option<PathBuf>,
    /// Accept ssh hosts missing from known_hosts (never a changed key).
    #[arg(long, env = "FLOTILLA_ALLOW_UNKNOWN_HOSTS")]
    allow_unknown_hosts: bool,
    /// Where bare mirrors of remote repositories are kept.
    #[arg(long, env = "FLOTILLA_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl GitArgs {
    fn credentials(&self) -> flotilla::git::Credentials {
        flotilla::git::Credentials {
            // Only from the environment, never a flag: flags show up in `ps`.
            token: std::env::var("FLOTILLA_GIT_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            ssh_key: self.ssh_key.clone(),
            known_hosts: self.known_hosts.clone(),
            allow_unknown_hosts: self.allow_unknown_hosts,
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("flotilla/repos")
        })
    }
}

impl SyncArgs {
    fn options(&self, interval: Duration) -> daemon::Options {
        daemon::Options {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            path: self.path.clone(),
            kubeconfig_dir: self.kubeconfig_dir.clone(),
            management_cluster: self.management_cluster.clone(),
            notes_ref: self.notes_ref.clone(),
            push_notes: if self.no_push_notes {
                Some(false)
            } else if self.push_notes {
                Some(true)
            } else {
                None
            },
            interval,
            classify_interval: Duration::from_secs(60),
            plan_refs: None,
            concurrency: self.concurrency,
            cache_dir: self.git.cache_dir(),
            credentials: self.git.credentials(),
            kustomize_bin: self.kustomize_bin.clone(),
            helm_bin: self.helm_bin.clone(),
            helm_timeout: self.helm_timeout,
            chart_cache_dir: self.chart_cache_dir.clone().unwrap_or_else(|| {
                let repos = self.git.cache_dir();
                repos
                    .parent()
                    .map_or_else(|| repos.join("charts"), |p| p.join("charts"))
            }),
            watch_drift: false,
            shard: flotilla::shard::Shard::SINGLE,
            lease: None,
            user_agent: None,
        }
    }
}

/// `30s`, `2m`, `1h`, `500ms`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| (&text[..i], &text[i..]));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m, 500ms"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?}: unit must be ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("the interval must be positive".into());
    }
    Ok(duration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    set_git_timeouts();
    let result = match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Render {
            path,
            cluster,
            profile,
            kubeconfig_dir,
            management_cluster,
            kustomize_bin,
        } => render(
            &path,
            &cluster,
            profile.as_deref(),
            kubeconfig_dir.as_deref(),
            management_cluster.as_deref(),
            kustomize_bin.as_deref(),
        ),
        Command::Sync { sync, once: _ } => sync_once(sync.options(Duration::from_secs(30))),
        Command::Run {
            sync,
            interval,
            classify_interval,
            plan_refs,
            http,
            ha,
        } => ha
            .apply(daemon::Options {
                watch_drift: true,
                classify_interval,
                plan_refs,
                ..sync.options(interval)
            })
            .and_then(|options| run(options, &http)),
        Command::Status {
            repo,
            rev,
            branch,
            notes_ref,
            git,
        } => status(&repo, &branch, rev.as_deref(), &notes_ref, &git),
        Command::Plan {
            repo,
            base,
            head,
            path,
            notes_ref,
            format,
            output,
            kustomize_bin,
            live,
            kubeconfig_dir,
            management_cluster,
        } => {
            // `--live` requires `--kubeconfig-dir` (clap checks it).
            let live = if live {
                kubeconfig_dir.map(|dir| (dir, management_cluster))
            } else {
                None
            };
            return match plan(
                &repo,
                base.as_deref(),
                &head,
                path,
                notes_ref,
                format,
                output.as_deref(),
                kustomize_bin.as_deref(),
                live,
            ) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// libgit2 has no timeouts by default: a hung git server would block a poll forever. Set once,
/// before any thread starts (the setters are process-wide and not thread-safe).
fn set_git_timeouts() {
    // SAFETY: called at the start of main, before the runtime or any other thread exists.
    let result = unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(15_000)
            .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(60_000))
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not set git network timeouts");
    }
}

fn init_logging(format: LogFormat, verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Shows a repo-relative file as the user can open it: under the `--path` they gave.
fn shown(root: &Path, file: &str) -> String {
    if root == Path::new(".") {
        file.to_string()
    } else {
        root.join(file).display().to_string()
    }
}

fn print_diagnostics(root: &Path, diags: &Diagnostics) {
    for d in &diags.0 {
        eprintln!("{}:{}: {}", shown(root, &d.file), d.line, d.message);
    }
    eprintln!("invalid: {} errors", diags.0.len());
}

/// Loads the config root, printing every problem when it is invalid.
fn load(root: &Path) -> anyhow::Result<Result<ConfigRepo, Diagnostics>> {
    let tree = source::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
    Ok(config::load(tree))
}

fn validate(root: &Path) -> anyhow::Result<ExitCode> {
    match load(root)? {
        Ok(repo) => {
            println!("{}", repo.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            print_diagnostics(root, &diags);
            Ok(ExitCode::from(1))
        }
    }
}

/// The clusters `render` reads templateResourceRefs from: the one rendered for, and the
/// management cluster (`--management-cluster`, else the cluster flotilla runs in, if any).
async fn ref_targets(
    repo: &ConfigRepo,
    cluster: &config::Cluster,
    dir: &Path,
    management: Option<&str>,
) -> anyhow::Result<(Arc<cluster::Target>, Option<Arc<cluster::Target>>)> {
    let client = cluster::client(cluster, dir).await?;
    let target = Arc::new(cluster::Target::new(cluster.name.clone(), client));
    let management = match management {
        Some(name) if name == cluster.name => Some(Arc::clone(&target)),
        Some(name) => {
            let Some(m) = repo.clusters.get(name) else {
                bail!("--management-cluster {name:?} is not in clusters/");
            };
            let client = cluster::client(m, dir).await?;
            Some(Arc::new(cluster::Target::new(m.name.clone(), client)))
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            let in_cluster = config::Cluster {
                name: "in-cluster".into(),
                kubeconfig: config::KubeconfigRef {
                    in_cluster: true,
                    ..config::KubeconfigRef::default()
                },
                ..cluster.clone()
            };
            let client = cluster::client(&in_cluster, dir).await?;
            Some(Arc::new(cluster::Target::new("in-cluster", client)))
        }
        None => None,
    };
    Ok((target, management))
}

fn render(
    root: &Path,
    cluster_name: &str,
    only: Option<&str>,
    kubeconfig_dir: Option<&Path>,
    management_cluster: Option<&str>,
    kustomize_bin: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let repo = match load(root)? {
        Ok(repo) => repo,
        Err(diags) => {
            print_diagnostics(root, &diags);
            return Ok(ExitCode::from(1));
        }
    };
    let Some(cluster) = repo.clusters.get(cluster_name) else {
        bail!(
            "cluster {cluster_name:?} is not in clusters/ (known: {})",
            repo.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    if let Some(only) = only
        && !repo.profiles.contains_key(only)
    {
        bail!("profile {only:?} is not in profiles/");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // An explicit binary must exist; without one, kustomizationRefs stay comments.
    let kustomize = match kustomize::Kustomize::locate(kustomize_bin) {
        Ok(tool) => Some(kustomize::Workspace::new(Ok(tool))),
        Err(e) if kustomize_bin.is_some() => return Err(e.into()),
        Err(_) => None,
    };
    let facts = match kubeconfig_dir {
        Some(dir) => {
            let queries = classify::resource_queries(repo.classifiers.values());
            runtime.block_on(async {
                let client = cluster::client(cluster, dir).await?;
                let version = cluster::version(&cluster.name, &client).await?;
                let target = cluster::Target::new(cluster.name.clone(), client);
                let resources = cluster::resources::answer(&target, &queries).await;
                Ok::<_, cluster::ClusterError>(ClusterFacts {
                    version: Some(version),
                    resources,
                })
            })?
        }
        None => ClusterFacts::default(),
    };
    // With cluster access, templateResourceRefs are read live (else they stay pending).
    let live = match kubeconfig_dir {
        Some(dir) => {
            Some(runtime.block_on(ref_targets(&repo, cluster, dir, management_cluster))?)
        }
        None => None,
    };
    let reads = cluster::objects::ReadCache::new();
    let classification = classify::classify(cluster, repo.classifiers.values(), &facts);
    let mut variables = serde_json::Map::new();
    variables.insert(
        "cluster".into(),
        render::cluster_context(cluster, &classification.labels, facts.version.as_ref()),
    );
    let sandbox = Sandbox::new();
    let mut rendered = Vec::new();
    let mut failed = false;
    for profile in
        flotilla::plan::profiles_for_cluster(&repo, &cluster.name, &classification.labels)
    {
        if only.is_some_and(|p| p != profile.name) {
            continue;
        }
        let profile_variables = match &live {
            Some((target, management)) => runtime.block_on(cluster::objects::variables(
                profile,
                &variables,
                target,
                match management {
                    Some(m) => cluster::objects::Management::Read(m),
                    None => cluster::objects::Management::NotAsked,
                },
                &reads,
                &sandbox,
            )),
            None => Ok(variables.clone()),
        };
        let mut result =
            profile_variables.and_then(|v| render::render_profile(&repo, profile, &v, &sandbox));
        if let (Ok(r), Some(workspace)) = (&mut result, &kustomize)
            && r.pending.is_empty()
            && let Err(e) = runtime.block_on(kustomize::expand(workspace, &repo.tree, r))
        {
            result = Err(e);
        }
        match result {
            Ok(r) => {
                if kustomize.is_none() && !r.kustomizations.is_empty() {
                    tracing::warn!(
                        profile = %r.profile,
                        "no kustomize binary found: kustomizationRefs are not expanded (see --kustomize-bin)"
                    );
                }
                rendered.push(r)
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "{}:{}: profile {} on cluster {}: {}",
                    shown(root, &e.origin.file),
                    e.origin.line,
                    profile.name,
                    cluster.name,
                    e.message
                );
            }
        }
    }
    if let Some(only) = only
        && rendered.iter().all(|r| r.profile != only)
        && !failed
    {
        eprintln!("profile {only:?} does not match cluster {cluster_name:?}");
    }
    let labels: BTreeMap<_, _> = classification.labels;
    let label_text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "# flotilla render: cluster {} (labels: {}{})",
        cluster.name,
        label_text.join(","),
        match &facts.version {
            Some(v) => format!("; version {}", v.git_version),
            None => "; offline: no live version".to_string(),
        }
    );
    print!("{}", render::to_text(&cluster.name, &rendered));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn sync_once(options: daemon::Options) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut daemon = daemon::Daemon::new(options)?;
        let synced = daemon.sync_once().await?;
        print!("{}", synced.note);
        let healthy = synced.report.valid()
            && synced
                .report
                .clusters
                .iter()
                .all(|c| matches!(c.status, ClusterStatus::Synced | ClusterStatus::Paused));
        Ok(if healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

fn run(options: daemon::Options, http: &HttpArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let server = http.start(shutdown.clone()).await?;
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stop requested: finishing the pass in flight and its notes");
            let _ = stop.send(true);
        });
        let mut daemon = daemon::Daemon::new(options)?;
        if let Some((shared, _)) = &server {
            daemon = daemon.with_http(Arc::clone(shared));
        }
        daemon.run(shutdown).await?;
        if let Some((_, task)) = server {
            // Requests in flight get a moment; the listener stopped taking new ones on SIGTERM.
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP listener failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP listener task failed"),
                Ok(Ok(Ok(()))) | Err(_) => {}
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The HTTP listener of `run`.
#[derive(clap::Args)]
struct HttpArgs {
    /// Address of the HTTP listener: /healthz, /readyz, /metrics, POST /hooks/git
    /// ('' or 'off': none).
    #[arg(long, default_value = "0.0.0.0:8080", env = "FLOTILLA_HTTP_ADDR")]
    http_addr: String,
    /// File holding the shared secret of POST /hooks/git (GitHub's webhook secret or GitLab's
    /// secret token); without it the hook answers 404 and triggers nothing.
    #[arg(long, env = "FLOTILLA_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
}

type HttpServer = (
    Arc<flotilla::serve::Shared>,
    tokio::task::JoinHandle<Result<(), flotilla::serve::ServeError>>,
);

impl HttpArgs {
    /// Reads the secret, binds the address and serves until `shutdown`; `None` when off.
    async fn start(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Option<HttpServer>> {
        use flotilla::serve;
        let Some(addr) = serve::listen_addr(&self.http_addr) else {
            return Ok(None);
        };
        let secret = match &self.webhook_secret_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading --webhook-secret-file {}", path.display()))?;
                Some(serve::Secret::new(&path.display().to_string(), bytes)?)
            }
            None => None,
        };
        let listener = serve::bind(addr).await?;
        let shared = Arc::new(serve::Shared::new());
        let task = tokio::spawn(serve::serve(
            listener,
            Arc::clone(&shared),
            secret,
            shutdown,
        ));
        Ok(Some((shared, task)))
    }
}

fn status(
    repo: &str,
    branch: &str,
    rev: Option<&str>,
    notes_ref: &str,
    git: &GitArgs,
) -> anyhow::Result<ExitCode> {
    let mut source =
        flotilla::git::GitSource::open(repo, branch, git.credentials(), &git.cache_dir())?;
    let commit = match rev {
        Some(rev) => {
            if source.is_remote() {
                source.poll()?;
            }
            source.resolve(rev)?
        }
        None => source.poll()?.commit,
    };
    // Every shard's state note of the commit (`<ref>/shard-<i>-state`) and the unsharded one.
    let mut notes = Vec::new();
    for (state_ref, text) in source.state_notes(notes_ref, &commit)? {
        notes.push(
            StateNote::parse(&text)
                .with_context(|| format!("{state_ref} on {commit} is not flotilla's JSON"))?,
        );
    }
    let Some(state) = StateNote::merge(notes) else {
        println!(
            "commit {}: no flotilla state note ({notes_ref}-state or {notes_ref}/shard-*-state); it has not been synced yet",
            commit.get(..12).unwrap_or(&commit)
        );
        return Ok(ExitCode::from(1));
    };
    println!(
        "commit {}{}",
        commit.get(..12).unwrap_or(&commit),
        if state.valid { "" } else { " (INVALID)" }
    );
    for error in &state.errors {
        println!("  {error}");
    }
    print!("{}", state.table());
    Ok(ExitCode::SUCCESS)
}

/// `flotilla plan` in render mode: both commits rendered offline and compared.
#[allow(clippy::too_many_arguments)]
fn plan(
    repo: &Path,
    base: Option<&str>,
    head: &str,
    path: Option<String>,
    notes_ref: String,
    format: PlanFormat,
    output: Option<&Path>,
    kustomize_bin: Option<&Path>,
    live: Option<(PathBuf, Option<String>)>,
) -> anyhow::Result<ExitCode> {
    // A local directory only (a clone with both revisions): no fetch, no mirror, no credentials.
    if !repo.is_dir() {
        bail!(
            "--repo {}: not a directory (plan reads a local clone with both revisions)",
            repo.display()
        );
    }
    let source = flotilla::git::GitSource::open(
        &repo.to_string_lossy(),
        "main",
        flotilla::git::Credentials::default(),
        &std::env::temp_dir(),
    )?;
    // An explicit binary must exist; without one, kustomizationRefs are reported unexpanded.
    let kustomize = match kustomize::Kustomize::locate(kustomize_bin) {
        Ok(tool) => Some(tool),
        Err(e) if kustomize_bin.is_some() => return Err(e.into()),
        Err(_) => None,
    };
    let review = match (live, base) {
        // Live: the clusters are the old side (`--base` is not used).
        (Some((kubeconfig_dir, management_cluster)), _) => {
            let options = flotilla::review::live::LiveOptions {
                subdir: path,
                kubeconfig_dir,
                management_cluster,
                kustomize,
            };
            runtime()?.block_on(flotilla::review::live::review_live(&source, head, &options))?
        }
        (None, Some(base)) => {
            let options = flotilla::review::commits::Options {
                subdir: path,
                notes_ref,
                kustomize,
                threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
            flotilla::review::commits::review_commits(&source, base, head, &options)?
        }
        (None, None) => bail!("--base is required without --live"),
    };
    use std::io::Write as _;
    let write = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        match format {
            PlanFormat::Markdown => {
                out.write_all(flotilla::review::markdown(&review).as_bytes())?
            }
            // Streamed: a big fleet's JSON plan is not held in memory whole.
            PlanFormat::Json => review.write_json(&mut out)?,
        }
        out.flush()
    };
    match output {
        Some(file) => std::fs::File::create(file)
            .and_then(|mut f| write(&mut f))
            .with_context(|| format!("writing {}", file.display()))?,
        None => write(&mut std::io::stdout().lock()).context("writing the plan to stdout")?,
    }
    let code = review.exit_code();
    // The process ends here: freeing a big fleet's plan piece by piece would only cost time.
    std::mem::forget(review);
    Ok(ExitCode::from(code))
}
