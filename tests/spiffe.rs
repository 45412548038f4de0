//! Certificates from the SPIFFE Workload API, without a cluster: a SPIRE
//! agent is emulated from the spec by tests/common/workload_api.rs (real
//! gRPC over a Unix socket), and the host, its TLS peers and the Python
//! arrpc client are real processes and sockets.

mod common;
#[path = "common/workload_api.rs"]
mod workload_api;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrpc_client::tls::{HandshakeError, Identity, Tls, Trust};
use arrpc_client::{BlockingClient, ClientConfig, Error};
use arrpc_host::config::{
    Allowed, ClientCertificates, Config, HandlerConfig, SpiffeConfig, TlsConfig,
};
use common::admin::{admin_of, get, scrape};
use common::certs::{self, CertFiles};
use common::*;
use serde_json::json;
use tokio_rustls::rustls::{ClientConnection, StreamOwned};
use workload_api::{Agent, Issued, TrustDomainCa};

/// Names the host's SVID carries besides its SPIFFE ID, for clients that
/// check host names.
const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

/// A host serving TLS from the agent at `agent`, with its admin listener;
/// clients must present a certificate when `required`.
fn spiffe_host(agent: &Agent, required: bool) -> Host {
    let config = from_agent(
        SpiffeConfig {
            socket: Some(agent.endpoint()),
            startup_timeout: Duration::from_secs(10),
        },
        if required {
            ClientCertificates::Required
        } else {
            ClientCertificates::Optional
        },
        vec![handler_config("echo", "echo")],
    );
    Host::start_with(
        write_config_value(&config),
        &["--admin-listen", "127.0.0.1:0"],
    )
}

/// `handlers` (the first the default one) served over TLS from the
/// Workload API as `spiffe` says, with client certificates as `clients`.
fn from_agent(
    spiffe: SpiffeConfig,
    clients: ClientCertificates,
    handlers: Vec<HandlerConfig>,
) -> Config {
    Config {
        tls: Some(TlsConfig {
            spiffe: Some(spiffe),
            client_certificates: clients,
            ..TlsConfig::default()
        }),
        ..serving(handlers)
    }
}

/// Writes `text` to `dir/name`, owner-only.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    certs::write_private(&path, text);
    path
}

/// A client SVID's certificate and key as files, as csi-driver-spiffe
/// would mount them.
fn client_files(dir: &Path, name: &str, issued: &Issued) -> CertFiles {
    CertFiles {
        cert: write(dir, &format!("{name}.crt"), &issued.cert_pem),
        key: write(dir, &format!("{name}.key"), &issued.key_pem),
    }
}

/// A TLS connection to the host, trusting the CAs in `ca`, presenting
/// `identity` if given, its handshake done.
fn connect(
    host: &Host,
    ca: &Path,
    identity: Option<&CertFiles>,
) -> StreamOwned<ClientConnection, TcpStream> {
    certs::tls_connect(host.addr, certs::rustls_client(ca, identity))
}

/// The subject of the SVID a new handshake gets.
fn served_subject(host: &Host, ca: &Path, identity: Option<&CertFiles>) -> String {
    let stream = connect(host, ca, identity);
    let leaf = &stream.conn.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    cert.subject().to_string()
}

/// How long a change at the agent may take to reach the host.
const PUSHED: Duration = Duration::from_secs(30);

/// One message through the Rust client, trusting the CAs in `ca` and
/// presenting `identity`.
fn call(host: &Host, ca: &Path, identity: &CertFiles) -> Result<String, Error> {
    let identity = Identity {
        cert: identity.cert.clone(),
        key: identity.key.clone(),
    };
    let mut config = ClientConfig::new(host.addr.to_string());
    config.tls = Some(Tls::new(&Trust::CaFile(ca.to_owned()), Some(&identity)).unwrap());
    config.connect_attempts = 1;
    BlockingClient::new(config).unwrap().send("hi")
}

fn refused(result: &Result<String, Error>) -> bool {
    matches!(
        result,
        Err(Error::Tls {
            source: HandshakeError::ClientCertificateRefused { .. },
            ..
        })
    )
}

/// The host serves the agent's SVID; when the agent pushes a new one, new
/// handshakes get it while a connection opened before keeps working, and
/// the expiry metric follows.
#[test]
fn serves_the_agents_svid_and_each_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let agent = Agent::start(
        &dir.path().join("agent.sock"),
        ca.issue("shop", "host", "svid-1", LOCAL).served(&[&ca]),
    );
    let client = client_files(dir.path(), "client", &ca.issue("shop", "web", "web", &[]));
    let host = spiffe_host(&agent, true);
    let admin = admin_of(&host);

    assert_eq!(served_subject(&host, &ca_file, Some(&client)), "CN=svid-1");
    let mut old = connect(&host, &ca_file, Some(&client));
    certs::echo_byte(&mut old, 1);
    assert_eq!(get(admin, "/readyz").0, 200);

    for n in 2..=3 {
        let label = format!("svid-{n}");
        agent.serve(ca.issue("shop", "host", &label, LOCAL).served(&[&ca]));
        let want = format!("CN={label}");
        wait_until(host.with_log(&format!("serving {label}")), PUSHED, || {
            served_subject(&host, &ca_file, Some(&client)) == want
        });
        certs::echo_byte(&mut old, n);
    }
    let metrics = scrape(admin);
    let expiry = |subject: &str| {
        metrics.value(
            "arrpc_tls_certificate_expiry_timestamp_seconds",
            &[("role", "cert"), ("subject", subject)],
        )
    };
    assert!(expiry("CN=svid-3") > 0.0, "{metrics}");
    assert_eq!(expiry("CN=svid-1"), 0.0, "retired: {metrics}");
    assert_eq!(
        metrics.value("arrpc_tls_reloads_total", &[("result", "ok")]),
        2.0
    );
}

/// The trust bundle verifies client certificates and rotates as SPIRE
/// rotates its CA: CA1, then CA1 and CA2 side by side, then CA2 alone, at
/// which point a client with a CA1 certificate is refused.
#[test]
fn the_bundle_rotates_from_one_ca_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (TrustDomainCa::new("ca1"), TrustDomainCa::new("ca2"));
    let both = write(dir.path(), "both.pem", &format!("{}{}", ca1.pem, ca2.pem));
    let old = client_files(dir.path(), "old", &ca1.issue("shop", "web", "old", &[]));
    let new = client_files(dir.path(), "new", &ca2.issue("shop", "web", "new", &[]));
    let agent = Agent::start(
        &dir.path().join("agent.sock"),
        ca1.issue("shop", "host", "host-1", LOCAL).served(&[&ca1]),
    );
    let host = spiffe_host(&agent, true);

    assert_eq!(call(&host, &both, &old).unwrap(), "hi");
    let early = call(&host, &both, &new);
    assert!(refused(&early), "{early:?}");

    agent.serve(
        ca2.issue("shop", "host", "host-2", LOCAL)
            .served(&[&ca1, &ca2]),
    );
    wait_until(host.with_log("CA2 trusted"), PUSHED, || {
        call(&host, &both, &new).is_ok()
    });
    assert_eq!(call(&host, &both, &old).unwrap(), "hi");

    agent.serve(ca2.issue("shop", "host", "host-3", LOCAL).served(&[&ca2]));
    wait_until(host.with_log("CA1 dropped"), PUSHED, || {
        refused(&call(&host, &both, &old))
    });
    assert_eq!(call(&host, &both, &new).unwrap(), "hi");
}

/// The agent dies and comes back: the host keeps serving the last SVID
/// meanwhile, says so in its log, reconnects, and serves what the agent
/// sends once it is back.
#[test]
fn the_agent_stopping_and_coming_back_does_not_stop_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let mut agent = Agent::start(
        &dir.path().join("agent.sock"),
        ca.issue("shop", "host", "before", LOCAL).served(&[&ca]),
    );
    let host = spiffe_host(&agent, false);
    let mut old = connect(&host, &ca_file, None);

    agent.stop();
    host.wait_for_log("lost the SPIFFE Workload API stream");
    assert_eq!(served_subject(&host, &ca_file, None), "CN=before");
    certs::echo_byte(&mut old, 7);

    agent.serve(ca.issue("shop", "host", "after", LOCAL).served(&[&ca]));
    agent.restart();
    wait_until(
        host.with_log("serving the SVID from the restarted agent"),
        PUSHED,
        || served_subject(&host, &ca_file, None) == "CN=after",
    );
    certs::echo_byte(&mut old, 8);
}

/// The agent withdraws this workload's identity (its registration entry
/// was deleted): `/readyz` answers 503 and says why, the log says so, and
/// both recover once the agent issues an SVID again.
#[test]
fn a_withdrawn_identity_makes_the_host_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let agent = Agent::start(
        &dir.path().join("agent.sock"),
        ca.issue("shop", "host", "first", LOCAL).served(&[&ca]),
    );
    let host = spiffe_host(&agent, false);
    let admin = admin_of(&host);
    wait_until(host.with_log("ready"), PUSHED, || {
        get(admin, "/readyz").0 == 200
    });

    agent.serve(workload_api::Served::Withdrawn);
    wait_until(host.with_log("not ready"), PUSHED, || {
        get(admin, "/readyz").0 == 503
    });
    let (_, body) = get(admin, "/readyz");
    assert!(
        body.contains("the SPIFFE Workload API withdrew this workload's identity"),
        "{body}"
    );
    host.wait_for_log("SPIFFE identity withdrawn");

    agent.serve(ca.issue("shop", "host", "again", LOCAL).served(&[&ca]));
    wait_until(host.with_log("ready again"), PUSHED, || {
        get(admin, "/readyz").0 == 200
    });
}

/// The emulated agent refuses a request without the `workload.spiffe.io`
/// header with InvalidArgument and answers one with it; the host's
/// requests carry it.
#[test]
fn the_workload_api_header_is_required_and_sent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let issued = ca.issue("shop", "host", "host", LOCAL);
    let agent = Agent::start(&dir.path().join("agent.sock"), issued.served(&[&ca]));

    let refused = agent.fetch(false).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let answered = agent.fetch(true).unwrap();
    assert_eq!(answered.svids[0].spiffe_id, issued.spiffe_id);

    let _host = spiffe_host(&agent, false);
    let requests = &agent.requests;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(requests.refused.load(Relaxed), 1, "only the test's own");
    assert!(requests.answered.load(Relaxed) >= 2);
}

/// With no agent at the socket the host waits `startup_timeout`, then
/// exits with an error naming the socket; with no socket at all it says so.
#[test]
fn no_agent_at_start_is_a_clear_error_after_the_startup_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    components();
    let config = write_config(&format!(
        "[tls.spiffe]\nsocket = \"unix://{}\"\nstartup_timeout = \"1s\"\n{}",
        socket.display(),
        handler("echo", "echo", "")
    ));
    let started = Instant::now();
    let out = host_command()
        .arg("--config")
        .arg(&config.path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the host started");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&socket.display().to_string()), "{err}");
    assert!(err.contains("within 1s"), "{err}");

    // No socket named, and none in the environment.
    let config = write_config(&format!(
        "[tls.spiffe]\nstartup_timeout = \"1s\"\n{}",
        handler("echo", "echo", "")
    ));
    let out = host_command()
        .arg("--config")
        .arg(&config.path)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the host started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "[tls.spiffe]: no SPIFFE Workload API socket: SPIFFE_ENDPOINT_SOCKET is not set"
        ),
        "{err}"
    );
}

/// The socket comes from `SPIFFE_ENDPOINT_SOCKET` when the config names
/// none; the Python arrpc client, which cannot present a certificate,
/// reaches a host where client certificates are optional, trusting the
/// bundle's CA as a file.
#[test]
fn the_python_arrpc_client_trusts_the_bundle_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let agent = Agent::start(
        &dir.path().join("agent.sock"),
        ca.issue("shop", "host", "host", LOCAL).served(&[&ca]),
    );
    let config = from_agent(
        SpiffeConfig::default(),
        ClientCertificates::Optional,
        vec![handler_config("echo", "echo")],
    );
    let host = Host::start_with_env(
        write_config_value(&config),
        &[],
        &[("SPIFFE_ENDPOINT_SOCKET", &agent.endpoint())],
    );

    let outcomes = seed::client_calls(&json!([{
        "port": host.addr.port(),
        "message": {"from": "python"},
        "kwargs": {"tls_cafile": ca_file},
    }]));
    assert_eq!(outcomes, [json!({"ok": {"from": "python"}})]);
}

/// `arrpc-host send --tls-spiffe` presents its own workload's SVID from
/// its agent and trusts the host's by the bundle, with no host name to
/// check; a client SVID from another trust domain's CA is refused.
#[test]
fn send_takes_its_identity_from_the_workload_api() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let other = TrustDomainCa::new("other");
    let host_agent = Agent::start(
        &dir.path().join("host.sock"),
        ca.issue("shop", "host", "host", &[]).served(&[&ca]),
    );
    let host = spiffe_host(&host_agent, true);
    let client_agent = Agent::start(
        &dir.path().join("client.sock"),
        ca.issue("shop", "cli", "cli", &[]).served(&[&ca]),
    );
    let send = |env: &[(&str, &str)], args: &[&str]| {
        let out = host_command()
            .args(["send", "--addr", &host.addr.to_string(), "--retries", "1"])
            .args(args)
            .arg("\"hi\"")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, stdout, stderr) = send(
        &[("SPIFFE_ENDPOINT_SOCKET", &client_agent.endpoint())],
        &["--tls-spiffe"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "\"hi\"");

    client_agent.serve(other.issue("shop", "cli", "stranger", &[]).served(&[&ca]));
    let (ok, _, stderr) = send(
        &[],
        &["--tls-spiffe", "--spiffe-socket", &client_agent.endpoint()],
    );
    assert!(!ok, "a client SVID from another CA got in");
    assert!(
        stderr.contains("the server refused our client certificate"),
        "{stderr}"
    );
    // The fix lies with trust domains, not with certificate flags.
    assert!(
        stderr.contains("hint: the server does not trust this workload's SVID")
            && !stderr.contains("--tls-cert"),
        "{stderr}"
    );
}

/// Per-handler allow lists tell callers apart by the SPIFFE ID in the SVID
/// they present, verified by the agent's bundle; a caller without one
/// reaches only handlers open to anyone.
#[test]
fn allow_lists_name_callers_by_their_svid() {
    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let agent = Agent::start(
        &dir.path().join("agent.sock"),
        ca.issue("shop", "host", "host", LOCAL).served(&[&ca]),
    );
    let allowing = |name: &str, entry| HandlerConfig {
        allow: Some(vec![entry]),
        ..handler_config(name, "echo")
    };
    let host = Host::start_config(&from_agent(
        SpiffeConfig {
            socket: Some(agent.endpoint()),
            ..SpiffeConfig::default()
        },
        ClientCertificates::Optional,
        vec![
            allowing("public", Allowed::Anyone),
            allowing("orders", Allowed::SpiffeId(WEB.into())),
        ],
    ));
    let web = client_files(dir.path(), "web", &ca.issue("shop", "web", "web", &[]));
    let billing = client_files(
        dir.path(),
        "billing",
        &ca.issue("billing", "api", "billing", &[]),
    );

    let mut stream = connect(&host, &ca_file, Some(&web));
    assert!(rpc_error_on(&mut stream, "orders").is_nil());
    let mut stream = connect(&host, &ca_file, Some(&billing));
    assert_eq!(
        rpc_error_on(&mut stream, "orders"),
        rmpv::Value::from(
            "arrpc.error.AuthException: spiffe://cluster.local/ns/billing/sa/api may not call `orders`"
        )
    );
    assert!(rpc_error_on(&mut stream, "public").is_nil());
    let mut stream = connect(&host, &ca_file, None);
    assert!(rpc_error_on(&mut stream, "public").is_nil());
    assert!(!rpc_error_on(&mut stream, "orders").is_nil());
}

/// A handler's call to an `[[upstream]]` with `tls.spiffe` presents this
/// host's SVID from the agent and trusts the agent's bundle: the upstream,
/// serving mutual TLS from files signed by the same trust domain, admits
/// the host's SPIFFE ID where its allow lists name it, and only there.
#[test]
fn upstream_calls_present_the_hosts_svid_from_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TrustDomainCa::new("cluster");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let front = ca.issue("shop", "front", "front", &[]);
    let agent = Agent::start(&dir.path().join("agent.sock"), front.served(&[&ca]));
    let served = client_files(
        dir.path(),
        "upstream",
        &ca.issue("shop", "prices", "prices", LOCAL),
    );
    let only = |name: &str, component: &str, who: &str| HandlerConfig {
        allow: Some(vec![Allowed::SpiffeId(who.into())]),
        ..handler_config(name, component)
    };
    let upstream = Host::start_config(&Config {
        tls: Some(TlsConfig {
            client_ca: Some(ca_file),
            client_certificates: ClientCertificates::Required,
            ..TlsConfig::new(served.cert, served.key)
        }),
        ..serving(vec![
            only("echo", "echo", &front.spiffe_id),
            only("sum", "sum", "spiffe://cluster.local/ns/billing/sa/api"),
        ])
    });
    let host = Host::start_config(&Config {
        upstreams: vec![arrpc_host::config::UpstreamConfig {
            tls: Some(arrpc_host::config::UpstreamTls {
                spiffe: Some(SpiffeConfig {
                    socket: Some(agent.endpoint()),
                    startup_timeout: Duration::from_secs(10),
                }),
                ..Default::default()
            }),
            ..arrpc_host::config::UpstreamConfig::remote("prices", upstream.addr.to_string())
        }],
        ..serving(vec![HandlerConfig {
            upstreams: vec!["prices".into()],
            ..handler_config("net", "net")
        }])
    });
    let call = |method: &str| {
        let message = rmpv::Value::Map(vec![
            ("op".into(), "call".into()),
            ("upstream".into(), "prices".into()),
            ("method".into(), method.into()),
            ("params".into(), rmpv::Value::Array(vec![2.into()])),
        ]);
        host.connect().call(&encode(&message))
    };
    assert_eq!(decode(&call("echo")), rmpv::Value::Array(vec![2.into()]));
    let refused = error_text(&call("sum")).unwrap();
    assert!(
        refused.contains("NotRun(")
            && refused.contains(&format!("{} may not call `sum`", front.spiffe_id)),
        "{refused}"
    );
}
