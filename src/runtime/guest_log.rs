//! A handler's stdout and stderr, turned into host log lines.
//!
//! Each message's instance gets its own pair of streams, so every line is
//! tagged with the handler, the request it came from and, when the message
//! belongs to a trace, the trace id. Output per stream
//! and message is capped: past the cap the rest is dropped with one notice,
//! and the guest never sees a write fail.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept whole; longer ones are split.
const MAX_LINE: usize = 4096;

/// One of a guest's output streams.
#[derive(Clone)]
pub struct GuestLog {
    state: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    handler: Arc<str>,
    request_id: u64,
    trace_id: Option<Arc<str>>,
    stream: &'static str,
    partial: Vec<u8>,
    /// Bytes still allowed, of `limit`.
    budget: usize,
    limit: usize,
    truncated: bool,
}

impl GuestLog {
    /// A stream that logs at most `budget` bytes.
    pub fn new(
        handler: Arc<str>,
        request_id: u64,
        trace_id: Option<Arc<str>>,
        stream: &'static str,
        budget: usize,
    ) -> Self {
        GuestLog {
            state: Arc::new(Mutex::new(LineBuffer {
                handler,
                request_id,
                trace_id,
                stream,
                partial: Vec::new(),
                budget,
                limit: budget,
                truncated: false,
            })),
        }
    }

    fn append(&self, bytes: &[u8]) {
        self.lock().append(bytes);
    }

    /// Starts the next message on a kept instance: what is left of the last
    /// one's output is logged, and the budget starts over.
    pub fn begin(&self, request_id: u64, trace_id: Option<Arc<str>>) {
        let mut state = self.lock();
        state.emit();
        state.request_id = request_id;
        state.trace_id = trace_id;
        state.budget = state.limit;
        state.truncated = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LineBuffer> {
        super::lock(&self.state)
    }
}

impl LineBuffer {
    fn append(&mut self, bytes: &[u8]) {
        let kept = bytes.len().min(self.budget);
        self.budget -= kept;
        for chunk in bytes[..kept].split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || self.partial.len() >= MAX_LINE {
                self.emit();
            }
        }
        if kept < bytes.len() && !self.truncated {
            self.truncated = true;
            self.emit();
            tracing::warn!(
                handler = %self.handler,
                request_id = self.request_id,
                stream = self.stream,
                "guest output over {} bytes (max_output_bytes); the rest of this message's output is dropped",
                self.limit
            );
        }
    }

    fn emit(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.partial);
        let line = line.trim_end_matches(['\n', '\r']);
        tracing::info!(
            target: "guest",
            handler = %self.handler,
            request_id = self.request_id,
            trace_id = self.trace_id.as_deref().map(tracing::field::display),
            stream = self.stream,
            "{line}"
        );
        self.partial.clear();
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        self.emit();
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
