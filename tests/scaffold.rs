//! `arrpc-host new`, run as a user who installed the binary would: in an
//! empty folder outside any checkout. Every skeleton builds with its printed
//! `build` command and, served from the printed `[[handler]]` entry, answers
//! a message. The language toolchains are the real ones, installed by
//! `handlers/install-toolchains.sh` and found on `PATH`, as a user's are.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use common::toolchains::{toolchain, toolchain_path};
use common::*;
use rmpv::Value;

/// `arrpc-host new ARGS` run in `folder`.
fn new(folder: &Path, args: &[&str]) -> Output {
    host_command()
        .arg("new")
        .args(args)
        .current_dir(folder)
        .output()
        .unwrap()
}

/// `PATH` with the installed guest toolchains first.
fn path() -> OsString {
    let mut paths = vec![toolchain_path()];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap()));
    std::env::join_paths(paths).unwrap()
}

/// Writes a `lang` skeleton into an empty temporary folder, builds it with
/// the printed command, serves the printed entry and checks that it echoes.
fn skeleton_builds_and_serves(lang: &'static str, toolchain_part: &'static str) {
    toolchain(toolchain_part);
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    assert!(
        !root.starts_with(env!("CARGO_MANIFEST_DIR")),
        "the test folder must be outside the checkout"
    );
    let name = format!("hello-{lang}");
    let out = new(root, &[&name, "--lang", lang]);
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
    let counts = add_counter(&root.join("handlers").join(&name), lang);

    // The entry's build command, as the host would run it for a missing
    // module: in the folder of the config it belongs to.
    let config: toml::Table = toml::from_str(&entry).unwrap();
    let handler = &config["handler"].as_array().unwrap()[0];
    let build = handler["build"].as_str().unwrap();
    let built = Command::new("sh")
        .args(["-c", build])
        .current_dir(root)
        .env("PATH", path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "`{build}` failed:\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(root.join(handler["module"].as_str().unwrap()).is_file());

    let config_path = root.join("arrpc.toml");
    std::fs::write(&config_path, &entry).unwrap();
    let host = Host::start_with(
        TestConfig {
            dir: folder,
            path: config_path,
        },
        &[],
    );
    let message = Value::Map(vec![(str_value("hello"), Value::from(lang))]);
    assert_eq!(host.connect().call_value(&message), message);
    // Built against the current world, which asks the host for the caller.
    let loaded = host.wait_for_log("loaded handler");
    assert!(loaded.contains("world=0.3.0"), "{loaded}");
    // The printed entry keeps one instance for many messages in Python and
    // JavaScript (module state lives on, as in a Python arrpc.Server) and
    // gives the compiled languages a fresh one per message.
    if counts {
        let mut client = host.connect();
        let seen: Vec<Value> = (0..3).map(|_| client.call_value(&Value::Nil)).collect();
        let expected: &[u64] = match lang {
            "python" | "js" => &[2, 3, 4],
            _ => &[1, 1, 1],
        };
        let expected: Vec<Value> = expected.iter().map(|&n| Value::from(n)).collect();
        assert_eq!(seen, expected, "messages counted by {lang}'s module state");
    }

    // A second skeleton of the same name is refused, not written over.
    let again = new(host.config.dir.path(), &[&name, "--lang", lang]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// Makes the skeleton's handler count the messages its instance has seen
/// in module state, answering a nil message with the count and echoing
/// anything else as before; false for a language it is not done for.
fn add_counter(skeleton: &Path, lang: &str) -> bool {
    let (file, plain, counting, module_state) = match lang {
        "python" => (
            "app.py",
            "        return payload\n",
            "        global calls\n        calls += 1\n        \
             return bytes([calls]) if payload == b\"\\xc0\" else payload\n",
            "\ncalls = 0\n",
        ),
        "js" => (
            "handler.js",
            "  return payload;\n",
            "  calls += 1;\n  \
             return payload.length === 1 && payload[0] === 0xc0 ? new Uint8Array([calls]) : payload;\n",
            "\nlet calls = 0;\n",
        ),
        "rust" => (
            "src/lib.rs",
            "    Ok(message)\n",
            "    static CALLS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);\n    \
             let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;\n    \
             Ok(if message.is_nil() { Value::from(calls) } else { message })\n",
            "",
        ),
        _ => return false,
    };
    let path = skeleton.join(file);
    let source = std::fs::read_to_string(&path).unwrap();
    assert!(source.contains(plain), "{file} no longer has {plain:?}");
    std::fs::write(&path, source.replace(plain, counting) + module_state).unwrap();
    true
}

#[test]
fn rust_skeleton() {
    skeleton_builds_and_serves("rust", "rust");
}

#[test]
fn python_skeleton() {
    skeleton_builds_and_serves("python", "python");
}

#[test]
fn js_skeleton() {
    skeleton_builds_and_serves("js", "node");
}

#[test]
fn c_skeleton() {
    skeleton_builds_and_serves("c", "c");
}

#[test]
fn zig_skeleton() {
    skeleton_builds_and_serves("zig", "zig");
}

/// `--sdk` makes a Rust skeleton depend on that SDK crate instead of
/// carrying a copy; it is checked, and refused for other languages.
#[test]
fn a_given_rust_sdk_is_depended_on_instead_of_copied() {
    let folder = tempfile::tempdir().unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers/sdk");
    let out = new(
        folder.path(),
        &["given", "--lang", "rust", "--sdk", sdk.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let skeleton = folder.path().join("handlers/given");
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(skeleton.join("Cargo.toml")).unwrap()).unwrap();
    let dependency = manifest["dependencies"]["arrpc-handler"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        skeleton.join(dependency).canonicalize().unwrap(),
        sdk.canonicalize().unwrap()
    );
    assert!(!skeleton.join("sdk").exists());

    let out = new(
        folder.path(),
        &["other", "--lang", "rust", "--sdk", "nowhere"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--sdk nowhere: no Cargo.toml there"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = new(folder.path(), &["other", "--lang", "c", "--sdk", "nowhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sdk is for --lang rust"));
    assert!(!folder.path().join("handlers/other").exists());
}

#[test]
fn a_bad_name_or_language_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = new(dir.path(), &["Bad_Name", "--lang", "rust"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a usable name"));
    let out = new(dir.path(), &["fine", "--lang", "cobol"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'cobol'"));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}
