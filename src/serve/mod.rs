//! The HTTP side of `flotilla run`, one listener (`--http-addr`): `/healthz` (the process
//! answers), `/readyz` (the first pass of a valid commit has finished), `/metrics`
//! (`metrics.rs`), and `POST /hooks/git` (a forge's push webhook, verified by `webhook.rs`,
//! which makes the loop poll the repository at once). A thin adapter: the daemon loop writes
//! into [`Shared`], the handlers only read it or ring its poll bell.

pub mod metrics;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::report::PassReport;

pub use metrics::Metrics;
pub use webhook::Secret;

/// Largest webhook body accepted (GitHub caps its payloads at 25 MB, but a push event is a few
/// KiB; anything this big is refused with 413 before it is verified).
pub const MAX_BODY: usize = 1024 * 1024;

/// Errors of the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `--http-addr` cannot be listened on.
    #[error("cannot listen on --http-addr {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("HTTP server on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What the daemon loop and the HTTP handlers share: the metrics, readiness, and the bell a
/// verified webhook rings to make the loop poll now.
#[derive(Debug, Default)]
pub struct Shared {
    /// The metrics `/metrics` serves.
    pub metrics: Metrics,
    ready: AtomicBool,
    /// A `--leader-elect` candidate waiting for the Lease: ready to take over, so it counts as
    /// ready (a rolling update must not wait for a new replica to win the Lease, which the old
    /// one holds until it stops).
    standby: AtomicBool,
    poll: Notify,
}

impl Shared {
    /// Nothing recorded, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a finished pass (of a valid commit: only those pass) and makes `/readyz` answer
    /// 200 from now on, whatever the pass did on individual clusters.
    pub fn passed(&self, report: &PassReport, duration: Duration, now_unix: f64) {
        self.metrics.record_pass(report, duration, now_unix);
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first pass has finished, or this replica is a standby candidate.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) || self.standby.load(Ordering::Acquire)
    }

    /// Marks this replica as a candidate waiting for the Lease (`true`) or as its holder, which
    /// is ready once its first pass has finished (`false`).
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Release);
    }

    /// Asks the loop to poll the repository now; requests before the loop next waits make
    /// one poll.
    pub fn request_poll(&self) {
        self.poll.notify_one();
    }

    /// Resolves when a poll was requested (for the loop's `select!`).
    pub async fn poll_requested(&self) {
        self.poll.notified().await;
    }
}

/// The address `--http-addr` asks for: `None` when it is empty or `off` (no listener).
pub fn listen_addr(flag: &str) -> Option<&str> {
    let flag = flag.trim();
    (!flag.is_empty() && !flag.eq_ignore_ascii_case("off")).then_some(flag)
}

/// Binds the listener (before the daemon starts, so a taken port stops the process at once).
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    secret: Option<Arc<Secret>>,
}

/// The routes (any other method on a route answers 405, an unknown path 404).
fn router(shared: Arc<Shared>, secret: Option<Secret>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hooks/git", post(hook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(App {
            shared,
            secret: secret.map(Arc::new),
        })
}

/// Serves until `shutdown` turns true (SIGTERM), then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    secret: Option<Secret>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(addr = %addr, webhook = secret.is_some(), "HTTP listener: /healthz /readyz /metrics /hooks/git");
    axum::serve(listener, router(shared, secret))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(|source| ServeError::Serve { addr, source })
}

async fn readyz(State(app): State<App>) -> Response {
    if app.shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no pass of a valid commit has finished yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.shared.metrics.encode(),
    )
        .into_response()
}

async fn hook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &app.secret else {
        return (
            StatusCode::NOT_FOUND,
            "webhook not configured: start with --webhook-secret-file\n",
        )
            .into_response();
    };
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    match webhook::verify(
        header(webhook::GITHUB_SIGNATURE),
        header(webhook::GITLAB_TOKEN),
        &body,
        secret,
    ) {
        Ok(sender) => {
            info!(?sender, "webhook: polling the repository now");
            app.shared.request_poll();
            (StatusCode::ACCEPTED, "polling\n").into_response()
        }
        Err(e) => {
            warn!(reason = %e, "webhook refused");
            (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        for (flag, want) in [
            ("0.0.0.0:8080", Some("0.0.0.0:8080")),
            ("127.0.0.1:0", Some("127.0.0.1:0")),
            ("[::]:9090", Some("[::]:9090")),
            ("", None),
            ("  ", None),
            ("off", None),
            ("OFF", None),
        ] {
            assert_eq!(listen_addr(flag), want, "{flag:?}");
        }
    }
}
