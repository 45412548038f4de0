//! MessagePack-RPC calls to named handlers, many in flight on one connection.
//!
//! An [`RpcClient`] is cheap to clone and shared by every caller. Each call
//! gets its own msgid and waits for the response with that msgid, so calls
//! finish in whatever order their handlers do. One task per connection
//! reads responses and hands each to its waiting caller while another
//! writes requests; reading never waits on writing, so a server that stops
//! reading until its replies are taken cannot deadlock the connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), arrpc_client::Error> {
//! use arrpc_client::{ClientConfig, RpcClient};
//! let client = RpcClient::new(ClientConfig::new("127.0.0.1:8080"));
//! let sum: std::collections::HashMap<String, f64> = client.call("sum", &[1, 2, 3]).await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrpc_wire::{Connection, ReadError, rpc, trace};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncWriteExt, BufWriter, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::balance::{Balanced, Target};
use crate::tls::HandshakeError;
use crate::{ClientConfig, Error, Io, Tls, lock};

/// Requests queued for the writer before callers wait for room.
const OUTGOING_QUEUE: usize = 256;

/// Callers waiting for a response, by msgid.
type Waiting = Arc<Mutex<HashMap<u32, oneshot::Sender<Delivery>>>>;

/// What a waiting caller learns.
enum Delivery {
    Answered(Response),
    /// The connection ended with the request still queued: it never left.
    Unsent,
}

/// A request for the writer, with its msgid (none for a notification).
type Outgoing = (Option<u32>, Vec<u8>);

/// A response's `error` (when not nil) and `result`, sliced from the message.
struct Response {
    error: Option<Bytes>,
    result: Bytes,
}

/// A MessagePack-RPC client of one server, or of the replicas behind a
/// list or a DNS name (see [`crate::balance`]); clones share the connections.
#[derive(Clone)]
pub struct RpcClient {
    shared: Arc<Shared>,
    route: Route,
    /// Calls may run twice: retried after any failure without a reply.
    idempotent: bool,
}

/// Where calls go.
#[derive(Clone)]
enum Route {
    /// To the one server at the address, on `shared`'s connection.
    One,
    /// To a replica chosen by load.
    Balanced(Arc<Balanced>),
    /// Nowhere: the address could not be read, for this reason.
    Bad(Arc<str>),
}

struct Shared {
    config: ClientConfig,
    next_msgid: AtomicU32,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// The open connection: where requests go and who waits for responses.
#[derive(Clone)]
pub(crate) struct Link {
    outgoing: mpsc::Sender<Outgoing>,
    waiting: Waiting,
    /// Set when the connection ended because the server refused this
    /// client's TLS settings, so waiting callers learn why.
    refused: Arc<OnceLock<HandshakeError>>,
}

impl RpcClient {
    /// A client for `config`; nothing is connected until the first call.
    ///
    /// `config.addr` is one server (`host:port`), a list of replicas
    /// (`a:7400,b:7400`) or a DNS name whose every address is a replica
    /// (`dns://name:7400`). An address that cannot be read fails each call
    /// with [`Error::Address`].
    pub fn new(config: ClientConfig) -> Self {
        let route = match Target::parse(&config.addr) {
            Ok(Target::One) => Route::One,
            Ok(target) => Route::Balanced(Arc::new(Balanced::new(config.clone(), target))),
            Err(reason) => Route::Bad(reason.into()),
        };
        RpcClient {
            route,
            ..RpcClient::single(config)
        }
    }

    /// A client of the one server at `config.addr`.
    pub(crate) fn single(config: ClientConfig) -> Self {
        RpcClient {
            shared: Arc::new(Shared {
                config,
                next_msgid: AtomicU32::new(0),
                link: tokio::sync::Mutex::new(None),
            }),
            route: Route::One,
            idempotent: false,
        }
    }

    /// This client (sharing its connections) for calls that are safe to run
    /// twice: over replicas, a call that failed without a reply (its
    /// connection broke) is sent again to another replica. Without it, only
    /// calls that provably did not run are.
    pub fn idempotent(&self) -> RpcClient {
        RpcClient {
            idempotent: true,
            ..self.clone()
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// Calls `method` with `params` and decodes the result as `R`.
    pub async fn call<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, Error> {
        let params = rmp_serde::to_vec_named(params)?;
        let result = self.call_raw(method, &params).await?;
        Ok(rmp_serde::from_slice(&result)?)
    }

    /// Calls `method` with `params` (exactly one MessagePack value) and
    /// returns the result's bytes. A non-nil `error` in the response becomes
    /// [`Error::Rpc`] with the error's text.
    pub async fn call_raw(&self, method: &str, params: &[u8]) -> Result<Bytes, Error> {
        let (result, _) = self.call_measured(method, params, None).await?;
        Ok(result)
    }

    /// Like [`RpcClient::call_raw`], also returning the address of the
    /// server that answered (one of the replicas, for a list or a name).
    pub async fn call_raw_via(
        &self,
        method: &str,
        params: &[u8],
    ) -> Result<(Bytes, Arc<str>), Error> {
        self.call_measured(method, params, None).await
    }

    /// Like [`RpcClient::call_raw`], with the caller's W3C `traceparent`
    /// (`00-<trace id>-<span id>-<flags>`) in a trace envelope around the
    /// request, so the host's span for the call continues the caller's trace.
    pub async fn call_raw_traced(
        &self,
        method: &str,
        params: &[u8],
        traceparent: &str,
    ) -> Result<Bytes, Error> {
        let (result, _) = self
            .call_measured(method, params, Some(traceparent))
            .await?;
        Ok(result)
    }

    async fn call_measured(
        &self,
        method: &str,
        params: &[u8],
        traceparent: Option<&str>,
    ) -> Result<(Bytes, Arc<str>), Error> {
        let started = std::time::Instant::now();
        let result = match &self.route {
            Route::One => self
                .call_once(method, params, traceparent)
                .await
                .map(|result| (result, self.shared.config.addr.as_str().into())),
            Route::Balanced(balanced) => {
                let idempotent = self.idempotent;
                balanced
                    .call(method, params, traceparent, false, idempotent)
                    .await
            }
            Route::Bad(reason) => Err(self.bad_address(reason)),
        };
        crate::record(&self.shared.config, method, started, &result);
        result
    }

    fn bad_address(&self, reason: &str) -> Error {
        Error::Address {
            addr: self.shared.config.addr.clone(),
            reason: reason.to_owned(),
        }
    }

    /// One call on this client's own connection.
    pub(crate) async fn call_once(
        &self,
        method: &str,
        params: &[u8],
        traceparent: Option<&str>,
    ) -> Result<Bytes, Error> {
        let link = self.link().await?;
        let msgid = self.shared.next_msgid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&link.waiting).insert(msgid, tx);
        // Whatever ends this call (a reply, an error, a caller who stopped
        // waiting), its msgid is forgotten.
        let _forget = Forget {
            waiting: &link.waiting,
            msgid,
        };
        let mut request = rpc::request(msgid, method, params);
        if let Some(traceparent) = traceparent {
            request = trace::wrap(traceparent, &request);
        }
        let addr = &self.shared.config.addr;
        let outcome = async {
            if link
                .outgoing
                .send((Some(msgid), self.sign(request)?))
                .await
                .is_err()
            {
                return Err(Error::Unsent {
                    addr: addr.clone(),
                    reason: "the connection had closed".to_owned(),
                });
            }
            match rx.await {
                Ok(Delivery::Answered(response)) => Ok(response),
                Ok(Delivery::Unsent) => Err(Error::Unsent {
                    addr: addr.clone(),
                    reason: "the connection closed before the call was written".to_owned(),
                }),
                Err(_) => Err(self.closed(&link)),
            }
        };
        let response = match self.shared.config.timeout {
            Some(after) => {
                tokio::time::timeout(after, outcome)
                    .await
                    .map_err(|_| Error::Timeout {
                        addr: addr.clone(),
                        after,
                    })??
            }
            None => outcome.await?,
        };
        match response.error {
            None => Ok(response.result),
            Some(error) => Err(remote_error(addr, &error)),
        }
    }

    /// Sends a notification: `method` runs with `params`, nothing comes back.
    pub async fn notify(&self, method: &str, params: &[u8]) -> Result<(), Error> {
        match &self.route {
            Route::One => {}
            Route::Balanced(balanced) => {
                let sent = balanced.call(method, params, None, true, self.idempotent);
                return sent.await.map(|_| ());
            }
            Route::Bad(reason) => return Err(self.bad_address(reason)),
        }
        self.notify_once(method, params).await
    }

    /// One notification on this client's own connection.
    pub(crate) async fn notify_once(&self, method: &str, params: &[u8]) -> Result<(), Error> {
        let link = self.link().await?;
        link.outgoing
            .send((None, self.sign(rpc::notification(method, params))?))
            .await
            .map_err(|_| Error::Unsent {
                addr: self.shared.config.addr.clone(),
                reason: "the connection had closed".to_owned(),
            })
    }

    /// Opens a new connection for the next calls; calls in flight on the old
    /// one finish there.
    pub(crate) async fn reconnect(&self) {
        self.shared.link.lock().await.take();
    }

    /// `message` as sent: signed when the config has a secret, else itself,
    /// not a copy of it.
    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, Error> {
        let signed = match crate::seal(&self.shared.config, &message)? {
            Cow::Owned(signed) => Some(signed),
            Cow::Borrowed(_) => None,
        };
        Ok(signed.unwrap_or(message))
    }

    /// Why `link` ended, for a caller who was using it.
    fn closed(&self, link: &Link) -> Error {
        let addr = self.shared.config.addr.clone();
        match link.refused.get() {
            Some(refusal) => Error::Tls {
                addr,
                source: refusal.clone(),
            },
            None => Error::Transport {
                addr,
                source: ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()),
            },
        }
    }

    /// The open connection, opened (again) when there is none or it ended.
    pub(crate) async fn link(&self) -> Result<Link, Error> {
        let mut slot = self.shared.link.lock().await;
        if let Some(link) = slot.as_ref().filter(|l| !l.outgoing.is_closed()) {
            return Ok(link.clone());
        }
        let config = &self.shared.config;
        let stream = crate::open(config).await?;
        let (read, write) = tokio::io::split(stream);
        // Reading only: the sink stands in for the write side, which the
        // writer owns.
        let reader = Connection::new(tokio::io::join(read, tokio::io::sink()), config.max_reply);
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let link = Link {
            outgoing,
            waiting: Waiting::default(),
            refused: Arc::default(),
        };
        tokio::spawn(drive(
            reader,
            BufWriter::new(write),
            queue,
            link.waiting.clone(),
            link.refused.clone(),
            config.tls.clone(),
            config.addr.clone(),
        ));
        *slot = Some(link.clone());
        Ok(link)
    }
}

/// Runs one connection: writes queued requests and routes responses until
/// either side ends, then fails every caller still waiting.
async fn drive<R>(
    mut reader: Connection<R>,
    mut writer: BufWriter<WriteHalf<Box<dyn Io>>>,
    mut queue: mpsc::Receiver<Outgoing>,
    waiting: Waiting,
    refused: Arc<OnceLock<HandshakeError>>,
    tls: Option<Tls>,
    addr: String,
) where
    R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let read = async {
        loop {
            match reader.read_message().await {
                Ok(Some(message)) => deliver(&waiting, message),
                Ok(None) => return "server closed the connection".to_string(),
                Err(e) => {
                    let reason = e.to_string();
                    if let Some(refusal) = crate::refusal(tls.as_ref(), &e) {
                        let _ = refused.set(refusal);
                    }
                    return reason;
                }
            }
        }
    };
    let write = async {
        while let Some(first) = queue.recv().await {
            let mut next = Some(first);
            while let Some((_, message)) = next {
                if let Err(e) = writer.write_all(&message).await {
                    return e.to_string();
                }
                next = queue.try_recv().ok();
            }
            if let Err(e) = writer.flush().await {
                return e.to_string();
            }
        }
        "client dropped".to_string()
    };
    let reason = tokio::select! {
        reason = read => reason,
        reason = write => reason,
    };
    tracing::debug!(addr = %addr, reason = %reason, "rpc connection ended");
    // Requests still queued never left: their callers may send them again.
    queue.close();
    let mut waiting = lock(&waiting);
    while let Ok((msgid, _)) = queue.try_recv() {
        if let Some(caller) = msgid.and_then(|msgid| waiting.remove(&msgid)) {
            let _ = caller.send(Delivery::Unsent);
        }
    }
    // Dropping the other senders wakes their callers with a transport error:
    // their requests may have run.
    waiting.clear();
}

/// Hands a response (one whole message the connection read) to the
/// caller waiting for its msgid.
fn deliver(waiting: &Waiting, message: Bytes) {
    let Some(rpc::Message::Response {
        msgid,
        error,
        result,
    }) = rpc::parse_whole(&message)
    else {
        tracing::debug!(
            bytes = message.len(),
            "ignoring a message that is not an rpc response"
        );
        return;
    };
    let response = Response {
        error: (error != [0xc0]).then(|| message.slice_ref(error)),
        result: message.slice_ref(result),
    };
    match lock(waiting).remove(&msgid) {
        // The caller may have timed out meanwhile; then nobody wants it.
        Some(caller) => {
            let _ = caller.send(Delivery::Answered(response));
        }
        None => tracing::debug!(msgid, "response for no waiting call"),
    }
}

/// Removes a call's msgid from the callers waiting on its connection.
struct Forget<'a> {
    waiting: &'a Waiting,
    msgid: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.msgid);
    }
}

/// A response's `error` as an [`Error`]: a refused signature, a host that
/// did not run the call (busy, draining), or the handler's error.
fn remote_error(addr: &str, error: &[u8]) -> Error {
    if let Some(e) = arrpc_wire::reply::parse_error(error)
        && e.kind == arrpc_wire::ErrorKind::Auth
    {
        return Error::Auth(e.reason);
    }
    crate::remote(addr, error_text(error))
}

/// The error's text when it is a string, else the value spelled out.
fn error_text(error: &[u8]) -> String {
    if let Some(text) = rpc::error_text(error) {
        return text.to_owned();
    }
    match rmpv::decode::read_value(&mut &error[..]) {
        Ok(value) => value.to_string(),
        Err(_) => "an error that is not MessagePack".to_owned(),
    }
}
