//! The `flotilla` command line: parse flags, build the pieces, call one command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use flotilla::classify::{self, ClusterFacts};
use flotilla::config::{self, ConfigRepo, Diagnostics};
use flotilla::render::{self, sandbox::Sandbox};
use flotilla::{cluster, source};

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    let result = match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Render {
            path,
            cluster,
            profile,
            kubeconfig_dir,
        } => render(
            &path,
            &cluster,
            profile.as_deref(),
            kubeconfig_dir.as_deref(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
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
        .with_writer(std::io::stderr);
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

fn render(
    root: &Path,
    cluster_name: &str,
    only: Option<&str>,
    kubeconfig_dir: Option<&Path>,
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
    let facts = match kubeconfig_dir {
        Some(dir) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let version = runtime.block_on(async {
                let client = cluster::client(cluster, dir).await?;
                cluster::version(&cluster.name, &client).await
            })?;
            ClusterFacts {
                version: Some(version),
            }
        }
        None => ClusterFacts::default(),
    };
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
        match render::render_profile(&repo, profile, &variables, &sandbox) {
            Ok(r) => rendered.push(r),
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
