//! A blocking face over [`Client`] for callers without an async runtime.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::{Client, ClientConfig, Error};

/// [`Client`] driven by a private single-threaded runtime.
///
/// Must not be used from inside an async runtime (the call would block it).
pub struct BlockingClient {
    runtime: tokio::runtime::Runtime,
    inner: Client,
}

impl BlockingClient {
    pub fn new(config: ClientConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingClient {
            runtime,
            inner: Client::new(config),
        })
    }

    /// See [`Client::send`].
    pub fn send<T: Serialize + ?Sized, R: DeserializeOwned>(
        &mut self,
        message: &T,
    ) -> Result<R, Error> {
        self.runtime.block_on(self.inner.send(message))
    }

    /// See [`Client::send_raw`].
    pub fn send_raw(&mut self, message: &[u8]) -> Result<Bytes, Error> {
        self.runtime.block_on(self.inner.send_raw(message))
    }

    /// See [`Client::send_raw_traced`].
    pub fn send_raw_traced(&mut self, message: &[u8], traceparent: &str) -> Result<Bytes, Error> {
        self.runtime
            .block_on(self.inner.send_raw_traced(message, traceparent))
    }
}
