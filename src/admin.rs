//! The admin listener: `/metrics`, `/healthz` and `/readyz` over HTTP/1.1,
//! on its own address (`[admin] listen`), apart from the message port.
//!
//! - `/metrics`: every metric in the Prometheus text format.
//! - `/healthz`: 200 while the process runs.
//! - `/readyz`: 200 once handlers are loaded and the message port accepts
//!   connections; 503 while loading and once draining has begun.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::telemetry::Metrics;

/// The text format `prometheus-client` writes.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A bound admin listener.
pub struct AdminListener {
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

impl AdminListener {
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<AdminListener> {
        Ok(AdminListener {
            listener: TcpListener::bind(addr).await?,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves requests in the background for the rest of the process.
    pub fn spawn(self) {
        tokio::spawn(async move {
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
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
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

fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match request.uri().path() {
        "/metrics" => Response::builder()
            .header(CONTENT_TYPE, METRICS_TYPE)
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("static headers are valid"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: handlers loading or listener draining\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static headers are valid")
}
