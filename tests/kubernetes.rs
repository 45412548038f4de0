//! arrpc-host on Kubernetes, without a cluster: volumes are laid out and
//! updated by an emulation of the kubelet's atomic writer
//! (tests/common/kubelet.rs, after kubernetes
//! `pkg/volume/util/atomic_writer.go`), as cert-manager's renewals and
//! ConfigMap edits reach a pod; the host, its TLS peers and the Python
//! arrpc client are real processes and sockets.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::admin::{admin_of, scrape};
use common::certs::{self, Ca, CertFiles};
use common::kubelet::AtomicWriter;
use common::*;
use rmpv::Value;
use serde_json::json;
use tokio_rustls::rustls::{ClientConnection, StreamOwned};

/// A `[tls]` and `[auth]` config reading the volume's visible names.
fn mounted_config(tls: &AtomicWriter, secrets: &AtomicWriter) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[auth]\nsecrets = [{{ file = \"{}\" }}]\n{}",
        tls.path("tls.crt").display(),
        tls.path("tls.key").display(),
        secrets.path("hmac").display(),
        handler("echo", "echo", "")
    )
}

/// A TLS Secret as cert-manager writes it, projected into `dir` with `mode`.
fn tls_volume(dir: &std::path::Path, mode: u32) -> AtomicWriter {
    let ca = Ca::new(dir, "cluster");
    let server = ca.server(dir, "server", certs::local_names());
    let volume = AtomicWriter::new(&dir.join("tls"), mode);
    volume.write(&[
        ("tls.crt", &std::fs::read(&server.cert).unwrap()),
        ("tls.key", &std::fs::read(&server.key).unwrap()),
        ("ca.crt", &std::fs::read(&ca.cert).unwrap()),
    ]);
    volume
}

/// A key and an HMAC secret from volumes with `defaultMode: 0440` (also
/// what `fsGroup` and csi-driver-spiffe give) serve as they are: the Python
/// arrpc client, trusting the volume's `ca.crt`, gets its signed message
/// echoed over TLS.
#[test]
fn group_readable_mounted_keys_and_secrets_serve() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_volume(dir.path(), 0o440);
    let secrets = AtomicWriter::new(&dir.path().join("secrets"), 0o440);
    secrets.write(&[("hmac", b"mounted-secret\n")]);
    let host = Host::start(&mounted_config(&tls, &secrets));
    // `check` says what the host serves and from where.
    let out = check_config(&host.config.path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("tls CN=server [DNS:localhost, IP:127.0.0.1] until ")
            && first.ends_with(&format!(", from {}", tls.path("tls.crt").display())),
        "{stdout}"
    );

    let outcomes = seed::client_calls(&json!([{
        "port": host.addr.port(),
        "message": {"from": "a pod"},
        "kwargs": {"tls_cafile": tls.path("ca.crt"), "auth_secret": "mounted-secret"},
    }]));
    assert_eq!(outcomes, [json!({"ok": {"from": "a pod"}})]);
}

/// A Secret volume's default mode, 0644, lets every user in the pod read the
/// key: the host refuses to start and names the manifest setting that fixes
/// it, since chmod cannot change a read-only volume.
#[test]
fn a_secret_volumes_default_mode_is_refused_with_the_manifest_fix() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_volume(dir.path(), 0o644);
    let secrets = AtomicWriter::new(&dir.path().join("secrets"), 0o440);
    secrets.write(&[("hmac", b"mounted-secret\n")]);
    let err = start_refused(&mounted_config(&tls, &secrets), &[], &[]);
    assert!(
        err.contains(&format!("{}: ", tls.path("tls.key").display())),
        "{err}"
    );
    assert!(err.contains("mode 0644"), "{err}");
    assert!(err.contains("set `defaultMode: 0440`"), "{err}");
}

/// A file mounted with `subPath` is a plain copy the kubelet never
/// updates: on Kubernetes the host warns, at start, of each such file it
/// would reload (here the config), and of none in a volume folder the
/// kubelet keeps up to date (here the TLS files).
#[test]
fn a_subpath_mount_is_warned_of_on_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_volume(dir.path(), 0o440);
    let secrets = AtomicWriter::new(&dir.path().join("secrets"), 0o440);
    secrets.write(&[("hmac", b"mounted-secret\n")]);
    let host = Host::start_with_env(
        write_config(&mounted_config(&tls, &secrets)),
        &[],
        &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")],
    );
    // Warned before `listening`, so the log holds it already.
    let log = host.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("(a subPath mount?)"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    let config = format!("file={}", host.config.path.display());
    assert!(
        warnings[0].contains(&config)
            && warnings[0].contains("changes to its Secret or ConfigMap will never reach it; mount the volume as a folder"),
        "{log}"
    );
}

/// A TLS connection to the host, trusting the CA in `ca`.
fn tls_connection(host: &Host, ca: &Path) -> StreamOwned<ClientConnection, TcpStream> {
    certs::tls_connect(host.addr, certs::rustls_client(ca, None))
}

/// The subject of the certificate a new handshake gets.
fn served_subject(host: &Host, ca: &Path) -> String {
    let stream = tls_connection(host, ca);
    let leaf = &stream.conn.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    cert.subject().to_string()
}

/// Waits until new handshakes get the certificate issued to `name`.
fn wait_for_subject(host: &Host, ca: &Path, name: &str) {
    let want = format!("CN={name}");
    wait_until(
        host.with_log(&format!("new handshakes getting {want}")),
        Duration::from_secs(15),
        || served_subject(host, ca) == want,
    );
}

/// The files of a TLS Secret as cert-manager fills it.
fn secret(server: &CertFiles, ca: &Ca) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tls.crt", std::fs::read(&server.cert).unwrap()),
        ("tls.key", std::fs::read(&server.key).unwrap()),
        ("ca.crt", std::fs::read(&ca.cert).unwrap()),
    ]
}

fn project(volume: &AtomicWriter, files: &[(&'static str, Vec<u8>)]) {
    let payload: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    volume.write(&payload);
}

/// A host serving TLS from a 0440 volume (csi-driver-spiffe, or a Secret
/// with `defaultMode: 0440`) that holds `first`, with its admin listener.
fn rotating_host(dir: &Path, ca: &Ca, first: &str, extra: &str) -> (Host, AtomicWriter) {
    let volume = AtomicWriter::new(&dir.join("tls"), 0o440);
    project(
        &volume,
        &secret(&ca.server(dir, first, certs::local_names()), ca),
    );
    let config = format!(
        "[server]\ndefault_handler = \"echo\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n{}",
        volume.path("tls.crt").display(),
        volume.path("tls.key").display(),
        handler("echo", "echo", "")
    );
    let host = Host::start_with(write_config(&config), &["--admin-listen", "127.0.0.1:0"]);
    (host, volume)
}

/// cert-manager renews three times in a row: each renewal reaches new
/// handshakes without a restart, a connection opened before the first
/// keeps working on the certificate it started with, and the metrics count
/// the reloads and carry the current certificate's expiry only.
#[test]
fn three_rotations_reach_new_handshakes_while_an_old_connection_works() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let (host, volume) = rotating_host(dir.path(), &ca, "gen1", "");
    let admin = admin_of(&host);
    let ca_file = volume.path("ca.crt");
    assert_eq!(served_subject(&host, &ca_file), "CN=gen1");
    let mut old = tls_connection(&host, &ca_file);
    certs::echo_byte(&mut old, 1);

    for generation in ["gen2", "gen3", "gen4"] {
        let renewed = ca.server(dir.path(), generation, certs::local_names());
        project(&volume, &secret(&renewed, &ca));
        wait_for_subject(&host, &ca_file, generation);
        certs::echo_byte(&mut old, 2);
    }
    // Each reload is logged a moment after new handshakes get it.
    let log = host.wait_for_log_count("TLS files reloaded", 3);
    assert_eq!(log.matches("TLS files reloaded").count(), 3, "{log}");
    assert!(
        log.contains("identity=CN=gen4 [DNS:localhost, IP:127.0.0.1] until "),
        "{log}"
    );

    let metrics = scrape(admin);
    assert_eq!(
        metrics.value("arrpc_tls_reloads_total", &[("result", "ok")]),
        3.0
    );
    let expiry = |subject: &str| {
        metrics.value(
            "arrpc_tls_certificate_expiry_timestamp_seconds",
            &[("role", "cert"), ("subject", subject)],
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry("CN=gen4") > now, "{metrics}");
    assert!(
        !metrics.to_string().contains("CN=gen1"),
        "the first certificate's series is retired:\n{metrics}"
    );
}

/// A renewal that does not load is refused with the file and the reason,
/// and the certificate before it serves on: a key that does not fit its
/// certificate, then an expired certificate. A good one then applies.
#[test]
fn a_rotation_that_does_not_load_leaves_the_old_certificate_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let (host, volume) = rotating_host(dir.path(), &ca, "good", "");
    let admin = admin_of(&host);
    let ca_file = volume.path("ca.crt");

    let mut mismatched = secret(
        &ca.server(dir.path(), "mismatch", certs::local_names()),
        &ca,
    );
    let other = ca.server(dir.path(), "other", certs::local_names());
    mismatched[1].1 = std::fs::read(&other.key).unwrap();
    project(&volume, &mismatched);
    host.wait_for_log("does not fit");

    let expired = certs::expired(dir.path(), "expired");
    project(&volume, &secret(&expired, &ca));
    host.wait_for_log("expired on");
    assert_eq!(served_subject(&host, &ca_file), "CN=good");
    let log = host.log();
    assert!(
        log.contains("TLS files changed but not loaded; still serving the previous ones"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}", volume.path("tls.key").display())),
        "{log}"
    );
    let metrics = scrape(admin);
    assert!(
        metrics.value("arrpc_tls_reloads_total", &[("result", "failed")]) >= 2.0,
        "{metrics}"
    );

    project(
        &volume,
        &secret(&ca.server(dir.path(), "renewed", certs::local_names()), &ca),
    );
    wait_for_subject(&host, &ca_file, "renewed");
}

/// A change the file watcher cannot see (written through a hard link in
/// another folder, so no event names the watched one) is still served: by
/// SIGHUP at once, and by the periodic check without any signal.
#[test]
fn sighup_and_the_periodic_check_find_changes_the_watcher_missed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let hidden = dir.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let start = |name: &str, recheck: &str| {
        let folder = dir.path().join(format!("plain-{name}"));
        std::fs::create_dir(&folder).unwrap();
        let first = ca.server(dir.path(), &format!("{name}1"), certs::local_names());
        let (cert, key) = (folder.join("tls.crt"), folder.join("tls.key"));
        std::fs::copy(&first.cert, &cert).unwrap();
        std::fs::copy(&first.key, &key).unwrap();
        // Hard links from elsewhere: writing through them changes the
        // files without an event in their folder.
        let (cert_link, key_link) = (
            hidden.join(format!("{name}.crt")),
            hidden.join(format!("{name}.key")),
        );
        std::fs::hard_link(&cert, &cert_link).unwrap();
        std::fs::hard_link(&key, &key_link).unwrap();
        let host = Host::start(&format!(
            "[server]\ndefault_handler = \"echo\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nrecheck_interval = \"{recheck}\"\n{}",
            cert.display(),
            key.display(),
            handler("echo", "echo", "")
        ));
        (host, cert_link, key_link)
    };
    let rewrite = |cert_link: &Path, key_link: &Path, name: &str| {
        let next = ca.server(dir.path(), name, certs::local_names());
        // In place, key first: the pair mismatches until the certificate lands.
        std::fs::write(key_link, std::fs::read(&next.key).unwrap()).unwrap();
        std::fs::write(cert_link, std::fs::read(&next.cert).unwrap()).unwrap();
    };

    let (signalled, cert_link, key_link) = start("hup", "1h");
    rewrite(&cert_link, &key_link, "hup2");
    // The host acts on file events in order: once it serves a handler added
    // to its config after the rewrite, it has acted on any event the
    // rewrite made.
    let config = std::fs::read_to_string(&signalled.config.path).unwrap();
    std::fs::write(
        &signalled.config.path,
        format!("{config}{}", handler("marker", "echo", "")),
    )
    .unwrap();
    wait_until(
        signalled.with_log("the config edit applied"),
        Duration::from_secs(15),
        || rpc_error_on(&mut tls_connection(&signalled, &ca.cert), "marker").is_nil(),
    );
    assert_eq!(
        served_subject(&signalled, &ca.cert),
        "CN=hup1",
        "no event, no reload"
    );
    signalled.signal("HUP");
    wait_for_subject(&signalled, &ca.cert, "hup2");

    let (checked, cert_link, key_link) = start("tick", "1s");
    rewrite(&cert_link, &key_link, "tick2");
    wait_for_subject(&checked, &ca.cert, "tick2");
}

/// `arrpc.toml` from a ConfigMap: two edits, each swapped in by the kubelet
/// (only `..data` changes name), both apply without a restart.
#[test]
fn two_configmap_swaps_of_the_config_both_apply() {
    let dir = tempfile::tempdir().unwrap();
    let volume = AtomicWriter::new(&dir.path().join("config"), 0o644);
    let echo = handler("echo", "echo", "");
    let sum = handler("sum", "sum", "");
    volume.write(&[("arrpc.toml", echo.as_bytes())]);
    let config = TestConfig {
        path: volume.path("arrpc.toml"),
        dir,
    };
    let host = Host::start_with(config, &[]);
    let params = Value::Array(vec![Value::from(1), Value::from(2)]);
    let (error, _) = rpc_call(&host, "sum", &params);
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("no handler is named")),
        "{error:?}"
    );

    let both = format!("[server]\ndefault_handler = \"echo\"\n{echo}{sum}");
    volume.write(&[("arrpc.toml", both.as_bytes())]);
    wait_until(
        host.with_log("the first swap applied"),
        Duration::from_secs(15),
        || rpc_call(&host, "sum", &params).0.is_nil(),
    );

    volume.write(&[("arrpc.toml", sum.as_bytes())]);
    wait_until(
        host.with_log("the second swap applied"),
        Duration::from_secs(15),
        || !rpc_call(&host, "echo", &params).0.is_nil(),
    );
    assert!(rpc_call(&host, "sum", &params).0.is_nil());
    // One reload for each swap, logged a moment after it applies.
    let log = host.wait_for_log_count("config reloaded", 2);
    assert_eq!(log.matches("config reloaded").count(), 2, "{log}");
}

/// A long-lived client whose certificate, key and CA file come from a
/// mounted Secret picks up each renewal on its next connection: a host
/// trusting only the workloads' new CA refuses the client's first
/// certificate, takes the one the kubelet swaps in next, and a later
/// mismatched pair is not loaded, so the working certificate stays in use.
#[test]
fn a_long_lived_client_picks_up_its_rotated_certificate() {
    use arrpc_client::tls::{HandshakeError, Identity, Tls, Trust};
    use arrpc_client::{BlockingClient, ClientConfig, Error};

    let dir = tempfile::tempdir().unwrap();
    let cluster = Ca::new(dir.path(), "cluster");
    let server = cluster.server(dir.path(), "server", certs::local_names());
    let retired = Ca::new(dir.path(), "retired");
    let workloads = Ca::new(dir.path(), "workloads");
    let old = retired.client(dir.path(), "old");
    let new = workloads.client(dir.path(), "new");
    let host = Host::start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n{}",
        server.cert.display(),
        server.key.display(),
        workloads.cert.display(),
        handler("echo", "echo", "")
    ));

    let volume = AtomicWriter::new(&dir.path().join("client"), 0o440);
    let secret = |files: &CertFiles, key: &Path| {
        vec![
            ("tls.crt", std::fs::read(&files.cert).unwrap()),
            ("tls.key", std::fs::read(key).unwrap()),
            ("ca.crt", std::fs::read(&cluster.cert).unwrap()),
        ]
    };
    project(&volume, &secret(&old, &old.key));
    let tls = Tls::new(
        &Trust::CaFile(volume.path("ca.crt")),
        Some(&Identity {
            cert: volume.path("tls.crt"),
            key: volume.path("tls.key"),
        }),
    )
    .unwrap();
    let mut config = ClientConfig::new(host.addr.to_string());
    config.tls = Some(tls);
    let mut client = BlockingClient::new(config.clone()).unwrap();

    let refused = client.send::<_, String>("first").unwrap_err();
    assert!(
        matches!(
            &refused,
            Error::Tls {
                source: HandshakeError::ClientCertificateRefused { .. },
                ..
            }
        ),
        "{refused:?}"
    );

    project(&volume, &secret(&new, &new.key));
    let reply: String = client.send("renewed").unwrap();
    assert_eq!(reply, "renewed");

    // A certificate whose key is another one's: refused by the client, which
    // keeps presenting the renewed certificate on a new connection.
    project(&volume, &secret(&old, &new.key));
    let reply: String = BlockingClient::new(config).unwrap().send("kept").unwrap();
    assert_eq!(reply, "kept");
}
