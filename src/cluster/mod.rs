//! Adapter to the fleet's Kubernetes API servers: one client per cluster from its kubeconfig
//! reference, and the live facts (`/version`) that templates and classifiers read. Thin: the
//! decisions live in the pure modules.

pub mod apply;
pub mod discovery;
pub mod inventory;
pub mod objects;
pub mod releases;
pub mod resources;

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::classify::VersionInfo;
use crate::config::Cluster;

/// Why a cluster could not be reached. Messages name the cluster and the kubeconfig path, never
/// credentials.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig file could not be read or parsed.
    #[error("cluster {cluster}: cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Cluster name.
        cluster: String,
        /// The file.
        path: PathBuf,
        /// kube's error.
        source: kube::config::KubeconfigError,
    },
    /// In-cluster credentials are not available.
    #[error("cluster {cluster}: in-cluster config: {source}")]
    InCluster {
        /// Cluster name.
        cluster: String,
        /// kube's error.
        source: kube::config::InClusterError,
    },
    /// A client could not be built from the config.
    #[error("cluster {cluster}: cannot build a client: {source}")]
    Client {
        /// Cluster name.
        cluster: String,
        /// kube's error.
        source: kube::Error,
    },
    /// The API server did not answer, or refused a request.
    #[error("cluster {cluster}: {source}")]
    Api {
        /// Cluster name.
        cluster: String,
        /// kube's error.
        source: kube::Error,
    },
    /// No API serves a kind (yet).
    #[error("cluster {cluster}: kind {kind} is not served: {source}")]
    UnknownKind {
        /// Cluster name.
        cluster: String,
        /// `apiVersion kind`.
        kind: String,
        /// kube's error.
        source: kube::Error,
    },
    /// An inventory ConfigMap could not be read or written.
    #[error("cluster {cluster}: inventory {name}: {message}")]
    Inventory {
        /// Cluster name.
        cluster: String,
        /// ConfigMap name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A cluster flotilla writes to: its client and its discovery cache, kept across passes.
pub struct Target {
    /// Cluster name (as in the inventory; for messages).
    pub name: String,
    /// Client authenticated with the cluster's kubeconfig.
    pub client: kube::Client,
    /// Kinds resolved so far.
    pub discovery: discovery::Discovery,
}

impl Target {
    /// Wraps a client.
    pub fn new(name: impl Into<String>, client: kube::Client) -> Self {
        Target {
            name: name.into(),
            client,
            discovery: discovery::Discovery::default(),
        }
    }
}

/// The kubeconfig file of a cluster: `spec.kubeconfig.file` or `<name>.kubeconfig`, under
/// `--kubeconfig-dir` (validation keeps it inside that directory).
pub fn kubeconfig_path(cluster: &Cluster, kubeconfig_dir: &Path) -> PathBuf {
    let file = cluster
        .kubeconfig
        .file
        .clone()
        .unwrap_or_else(|| format!("{}.kubeconfig", cluster.name));
    kubeconfig_dir.join(file)
}

/// A client for one cluster of the inventory.
pub async fn client(
    cluster: &Cluster,
    kubeconfig_dir: &Path,
) -> Result<kube::Client, ClusterError> {
    client_as(cluster, kubeconfig_dir, None).await
}

/// A client for one cluster of the inventory whose requests carry `user_agent` (the daemon
/// names its replica there, so the apiserver's audit log tells replicas apart; an agent that is
/// not a valid header value is left out).
pub async fn client_as(
    cluster: &Cluster,
    kubeconfig_dir: &Path,
    user_agent: Option<&str>,
) -> Result<kube::Client, ClusterError> {
    let mut config = if cluster.kubeconfig.in_cluster {
        kube::Config::incluster().map_err(|source| ClusterError::InCluster {
            cluster: cluster.name.clone(),
            source,
        })?
    } else {
        let path = kubeconfig_path(cluster, kubeconfig_dir);
        let kubeconfig_error = |source| ClusterError::Kubeconfig {
            cluster: cluster.name.clone(),
            path: path.clone(),
            source,
        };
        let kubeconfig = Kubeconfig::read_from(&path).map_err(kubeconfig_error)?;
        let options = KubeConfigOptions {
            context: cluster.kubeconfig.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(kubeconfig_error)?
    };
    if let Some(agent) = user_agent.and_then(|a| http::HeaderValue::from_str(a).ok()) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    kube::Client::try_from(config).map_err(|source| ClusterError::Client {
        cluster: cluster.name.clone(),
        source,
    })
}

/// `/version` of a cluster, as templates and version classifiers see it.
pub async fn version(cluster: &str, client: &kube::Client) -> Result<VersionInfo, ClusterError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|source| ClusterError::Api {
            cluster: cluster.to_string(),
            source,
        })?;
    Ok(VersionInfo {
        git_version: info.git_version,
        major: info.major,
        minor: info.minor,
    })
}
