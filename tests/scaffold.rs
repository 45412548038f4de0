//! `arrpc-host new`: every skeleton builds with its printed `build` command
//! and, served from the printed `[[handler]]` entry, answers a message.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use rmpv::Value;

/// Writes a `lang` skeleton into a temporary folder, builds and serves it,
/// and checks that it echoes.
fn skeleton_builds_and_serves(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hello-{lang}");
    let out = Command::new(HOST)
        .args(["new", &name, "--lang", lang, "--dir"])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = String::from_utf8(out.stdout).unwrap();
    assert!(
        entry.starts_with(&format!("[[handler]]\nname = \"{name}\"\n")),
        "{entry}"
    );

    // The entry's build command, as the host would run it for a missing module.
    let config: toml::Table = toml::from_str(&entry).unwrap();
    let handler = &config["handler"].as_array().unwrap()[0];
    let build = handler["build"].as_str().unwrap();
    let built = Command::new("sh")
        .args(["-c", build])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "`{build}` failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(Path::new(handler["module"].as_str().unwrap()).is_file());

    let host = Host::start(&entry);
    let message = Value::Map(vec![(str_value("hello"), Value::from(lang))]);
    assert_eq!(host.connect().call_value(&message), message);

    // A second skeleton of the same name is refused, not written over.
    let again = Command::new(HOST)
        .args(["new", &name, "--lang", lang, "--dir"])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn rust_skeleton() {
    skeleton_builds_and_serves("rust");
}

#[test]
fn python_skeleton() {
    skeleton_builds_and_serves("python");
}

#[test]
fn js_skeleton() {
    skeleton_builds_and_serves("js");
}

#[test]
fn c_skeleton() {
    skeleton_builds_and_serves("c");
}

#[test]
fn zig_skeleton() {
    skeleton_builds_and_serves("zig");
}

#[test]
fn a_bad_name_or_language_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(HOST)
        .args(["new", "Bad_Name", "--lang", "rust", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a usable name"));
    let out = Command::new(HOST)
        .args(["new", "fine", "--lang", "cobol"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'cobol'"));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
