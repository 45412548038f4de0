//! Blocking faces over [`Client`] and [`RpcClient`] for callers without an
//! async runtime.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use std::sync::Arc;

use crate::{Client, ClientConfig, Error, RpcClient};

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

/// [`RpcClient`] driven by a private single-threaded runtime, so a blocking
/// caller can also balance calls over the replicas behind a list or a
/// `dns://` name. Its connections and the name's resolution make progress
/// only while a call runs.
///
/// Must not be used from inside an async runtime (the call would block it).
pub struct BlockingRpcClient {
    runtime: tokio::runtime::Runtime,
    inner: RpcClient,
}

impl BlockingRpcClient {
    pub fn new(config: ClientConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingRpcClient {
            runtime,
            inner: RpcClient::new(config),
        })
    }

    /// This client for calls that are safe to run twice (see
    /// [`RpcClient::idempotent`]).
    pub fn idempotent(self) -> Self {
        BlockingRpcClient {
            inner: self.inner.idempotent(),
            ..self
        }
    }

    /// See [`RpcClient::call`].
    pub fn call<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, Error> {
        self.runtime.block_on(self.inner.call(method, params))
    }

    /// See [`RpcClient::call_raw`].
    pub fn call_raw(&self, method: &str, params: &[u8]) -> Result<Bytes, Error> {
        self.runtime.block_on(self.inner.call_raw(method, params))
    }

    /// See [`RpcClient::call_raw_via`].
    pub fn call_raw_via(&self, method: &str, params: &[u8]) -> Result<(Bytes, Arc<str>), Error> {
        self.runtime
            .block_on(self.inner.call_raw_via(method, params))
    }
}
