//! The admin listener: `/metrics`, `/healthz` and `/readyz` over HTTP/1.1,
//! on its own address (`[admin] listen`), apart from the message port.
//!
//! - `/metrics`: every metric in the Prometheus text format.
//! - `/healthz`: 200 while the process runs.
//! - `/readyz`: 200 once handlers are loaded and the message port accepts
//!   connections; 503 while loading, once draining has begun, and while a
//!   [`Readiness`] hold is raised (such as a withdrawn SPIFFE identity).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::telemetry::Metrics;

/// The text format `prometheus-client` writes.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reasons besides loading and draining for `/readyz` to answer 503, by
/// what raised them, so a load balancer stops sending new work while the
/// host still serves what it has.
#[derive(Debug, Default)]
pub struct Readiness {
    holds: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    /// Makes `/readyz` answer 503 with `reason` until `what` is released.
    pub fn hold(&self, what: &'static str, reason: String) {
        self.lock().insert(what, reason);
    }

    pub fn release(&self, what: &'static str) {
        self.lock().remove(what);
    }

    /// The reasons held now, joined; `None` when there are none.
    fn held(&self) -> Option<String> {
        let holds = self.lock();
        (!holds.is_empty()).then(|| holds.values().cloned().collect::<Vec<_>>().join("; "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bound admin listener.
pub struct AdminListener {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl AdminListener {
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> std::io::Result<AdminListener> {
        Ok(AdminListener {
            listener: TcpListener::bind(addr).await?,
            metrics,
            readiness,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves requests in the background, as a task of `tasks`: it stops
    /// when they are dropped.
    pub fn spawn(self, tasks: &mut JoinSet<()>) {
        tasks.spawn(async move {
            loop {
                let stream = match self.listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin listener: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let metrics = self.metrics.clone();
                let readiness = self.readiness.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let metrics = metrics.clone();
                        let readiness = readiness.clone();
                        async move { Ok::<_, Infallible>(respond(&request, &metrics, &readiness)) }
                    });
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %e, "admin connection failed");
                    }
                });
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match request.uri().path() {
        "/metrics" => Response::builder()
            .header(CONTENT_TYPE, METRICS_TYPE)
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("static headers are valid"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness.held() {
            Some(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reasons}\n"),
            ),
            None if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: handlers loading or listener draining\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static headers are valid")
}
