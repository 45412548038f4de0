//! A SPIFFE Workload API server for the tests: it emulates a SPIRE agent
//! from the spec (spiffe/spiffe `standards/SPIFFE_Workload_API.md` and
//! `SPIFFE_Workload_Endpoint.md`, messages from `workload.proto`), since no
//! agent runs here. It speaks the real protocol: gRPC
//! `SpiffeWorkloadAPI/FetchX509SVID`, server-streaming, over a Unix socket.
//!
//! - Each message carries the whole current state: the SVID (chain DER,
//!   PKCS#8 key DER) and its trust domain's bundle (concatenated DER).
//! - A request without the `workload.spiffe.io: true` metadata is refused
//!   with `InvalidArgument`, which a client must not retry.
//! - A withdrawn identity ends the stream with `PermissionDenied` ("no
//!   identity issued", as SPIRE words it), and so does every new stream
//!   until an SVID is served again.
//! - Stopping drops the socket and every stream, as an agent restart does.
//!
//! The messages are hand-written `prost` structs, as protoc is not here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};

/// `X509SVIDRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`: one identity, its key, and its trust domain's bundle.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
}

const METHOD: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
const HEADER: &str = "workload.spiffe.io";

/// What the agent tells the workload now.
#[derive(Clone)]
pub enum Served {
    Svid(X509Svid),
    Withdrawn,
}

/// Requests the agent answered and refused for a missing header.
#[derive(Default)]
pub struct Requests {
    pub answered: AtomicUsize,
    pub refused: AtomicUsize,
}

/// A running (or stopped) emulated agent on a Unix socket.
pub struct Agent {
    pub socket: PathBuf,
    state: Arc<watch::Sender<Served>>,
    pub requests: Arc<Requests>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Agent {
    /// Starts serving `first` on `socket`.
    pub fn start(socket: &Path, first: Served) -> Agent {
        let mut agent = Agent {
            socket: socket.to_owned(),
            state: Arc::new(watch::channel(first).0),
            requests: Arc::default(),
            runtime: None,
        };
        agent.restart();
        agent
    }

    /// `unix:///path`, as `SPIFFE_ENDPOINT_SOCKET` names it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Pushes a new state to every open stream and later ones.
    pub fn serve(&self, served: Served) {
        self.state.send_replace(served);
    }

    /// Stops listening and drops every stream, as a dying agent does.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Listens again on the same socket, serving the current state.
    pub fn restart(&mut self) {
        self.stop();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(async { UnixListener::bind(&self.socket).unwrap() });
        let service = WorkloadApi {
            state: self.state.subscribe(),
            requests: self.requests.clone(),
        };
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        self.runtime = Some(runtime);
    }

    /// One `FetchX509SVID` call as any gRPC client makes it, with or
    /// without the required header: its first message, or its status.
    pub fn fetch(&self, with_header: bool) -> Result<X509SvidResponse, tonic::Status> {
        let socket = self.socket.clone();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let channel = tonic::transport::Endpoint::from_static("http://agent")
                    .connect_with_connector(UnixConnector(socket))
                    .await
                    .unwrap();
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.unwrap();
                let mut request = tonic::Request::new(X509SvidRequest {});
                if with_header {
                    request
                        .metadata_mut()
                        .insert(HEADER, "true".parse().unwrap());
                }
                let mut stream = grpc
                    .server_streaming(
                        request,
                        http::uri::PathAndQuery::from_static(METHOD),
                        tonic_prost::ProstCodec::<X509SvidRequest, X509SvidResponse>::default(),
                    )
                    .await?
                    .into_inner();
                stream
                    .message()
                    .await?
                    .ok_or_else(|| tonic::Status::unknown("the stream ended without a message"))
            })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects a gRPC channel to the agent's Unix socket.
#[derive(Clone)]
struct UnixConnector(PathBuf);

impl Service<http::Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let socket = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(socket).await?)) })
    }
}

/// The `SpiffeWorkloadAPI` service, routed by hand as generated code does.
#[derive(Clone)]
struct WorkloadApi {
    state: watch::Receiver<Served>,
    requests: Arc<Requests>,
}

impl tonic::server::NamedService for WorkloadApi {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

impl<B> Service<http::Request<B>> for WorkloadApi
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != METHOD {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("only FetchX509SVID").into_http())
            });
        }
        let method = FetchX509Svid(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                X509SvidResponse,
                X509SvidRequest,
            >::default());
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<X509SvidResponse, tonic::Status>> + Send>>;

/// One `FetchX509SVID` stream.
struct FetchX509Svid(WorkloadApi);

impl tonic::server::ServerStreamingService<X509SvidRequest> for FetchX509Svid {
    type Response = X509SvidResponse;
    type ResponseStream = Responses;
    type Future = BoxFuture<tonic::Response<Responses>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<X509SvidRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let header = request.metadata().get(HEADER).and_then(|v| v.to_str().ok());
            if header != Some("true") {
                api.requests.refused.fetch_add(1, Ordering::Relaxed);
                return Err(tonic::Status::invalid_argument(
                    "security header missing from request",
                ));
            }
            api.requests.answered.fetch_add(1, Ordering::Relaxed);
            let stream =
                futures::stream::unfold((api.state, true), |(mut state, first)| async move {
                    if !first && state.changed().await.is_err() {
                        return None;
                    }
                    let served = state.borrow_and_update().clone();
                    let item = match served {
                        Served::Svid(svid) => Ok(X509SvidResponse {
                            svids: vec![svid],
                            crl: Vec::new(),
                            federated_bundles: HashMap::new(),
                        }),
                        Served::Withdrawn => {
                            Err(tonic::Status::permission_denied("no identity issued"))
                        }
                    };
                    Some((item, (state, false)))
                });
            Ok(tonic::Response::new(Box::pin(stream) as Responses))
        })
    }
}

/// A trust domain's signing CA, as SPIRE's server holds it.
pub struct TrustDomainCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM, for clients that trust a CA file.
    pub pem: String,
}

/// A certificate and key from [`TrustDomainCa::issue`].
pub struct Issued {
    pub spiffe_id: String,
    pub chain_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TrustDomainCa {
    pub fn new(name: &str) -> TrustDomainCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::URI("spiffe://cluster.local".try_into().unwrap())];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        TrustDomainCa { issuer, pem }
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// An X.509-SVID for `spiffe://cluster.local/ns/{ns}/sa/{sa}`, named
    /// `label` in its subject so a test can tell which one is served, with
    /// `dns` names too for clients that check them (the Python arrpc
    /// package does).
    pub fn issue(&self, ns: &str, sa: &str, label: &str, dns: &[&str]) -> Issued {
        let spiffe_id = format!("spiffe://cluster.local/ns/{ns}/sa/{sa}");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, label);
        params.subject_alt_names = vec![SanType::URI(spiffe_id.as_str().try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        for name in dns {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            spiffe_id,
            chain_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Issued {
    /// What the agent serves for this SVID, with `bundle` as its trust
    /// domain's CAs.
    pub fn served(&self, bundle: &[&TrustDomainCa]) -> Served {
        Served::Svid(X509Svid {
            spiffe_id: self.spiffe_id.clone(),
            x509_svid: self.chain_der.clone(),
            x509_svid_key: self.key_der.clone(),
            bundle: bundle.iter().flat_map(|ca| ca.der()).collect(),
        })
    }
}
