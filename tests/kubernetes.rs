//! arrpc-host on Kubernetes, without a cluster: volumes are laid out by an
//! emulation of the kubelet's atomic writer (tests/common/kubelet.rs, after
//! kubernetes `pkg/volume/util/atomic_writer.go`), and the host and the
//! Python arrpc client are real processes.

mod common;

use std::process::Command;

use common::certs::{self, Ca};
use common::kubelet::AtomicWriter;
use common::*;
use serde_json::json;

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
    components();
    let config = write_config(&mounted_config(&tls, &secrets));
    let out = Command::new(HOST)
        .arg("--config")
        .arg(&config.path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the host started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: ", tls.path("tls.key").display())),
        "{err}"
    );
    assert!(err.contains("mode 0644"), "{err}");
    assert!(err.contains("set `defaultMode: 0440`"), "{err}");
}
