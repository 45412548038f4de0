//! `arrpc-host new`, run as a user who installed the binary would: in an
//! empty folder outside any checkout, after the documented setup
//! (`handlers/install-toolchains.sh`, which the tests run themselves), and
//! with `PATH` as the test itself was given it. Every skeleton, served from
//! the printed `[[handler]]` entry, is built by the host (its module is
//! missing) and answers a message; under `--watch` an edit is rebuilt and
//! served. The toolchains are the real ones.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::toolchains::toolchain;
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

/// Writes a `lang` skeleton into an empty temporary folder outside the
/// checkout and its printed entry into `arrpc.toml` there, as a user
/// would; returns the config and the entry.
fn scaffold(lang: &str, name: &str) -> (TestConfig, toml::Table) {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    assert!(
        !root.starts_with(env!("CARGO_MANIFEST_DIR")),
        "the test folder must be outside the checkout"
    );
    let out = new(root, &[name, "--lang", lang]);
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
    let path = root.join("arrpc.toml");
    std::fs::write(&path, &entry).unwrap();
    let config = TestConfig { dir: folder, path };
    (config, toml::from_str(&entry).unwrap())
}

/// Writes a `lang` skeleton, serves its printed entry (the host runs its
/// `build`, as the module is missing) and checks that it echoes.
fn skeleton_builds_and_serves(lang: &'static str, toolchain_part: &'static str) {
    toolchain(toolchain_part);
    let name = format!("hello-{lang}");
    let (config, entry) = scaffold(lang, &name);
    let root = config.dir.path().to_path_buf();
    let handler = &entry["handler"].as_array().unwrap()[0];
    let skeleton = root.join("handlers").join(&name);
    let counts = add_counter(&skeleton, lang);
    // `sources` name what the skeleton holds, build output aside.
    let sources: Vec<&str> = handler["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&format!("handlers/{name}/build.sh").as_str()),
        "{sources:?}"
    );
    for source in &sources {
        assert!(root.join(source).exists(), "{source}");
    }

    let module = root.join(handler["module"].as_str().unwrap());
    assert!(!module.exists());
    let host = Host::start_building(config, &[]);
    host.wait_for_log("module missing; building");
    assert!(module.is_file());
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
    let again = new(&root, &[&name, "--lang", lang]);
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
            "    return message\n",
            "    global calls\n    calls += 1\n    return calls if message is None else message\n",
            "\ncalls = 0\n",
        ),
        "js" => (
            "handler.js",
            "serve((message, ctx) => message);\n",
            "serve((message, ctx) => (++calls, message === null ? calls : message));\n",
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

/// The development loop docs/handlers.md promises: under `--watch`, an edit
/// to a scaffolded Rust handler's `src/lib.rs` is rebuilt and served.
#[test]
fn watch_rebuilds_an_edited_skeleton() {
    toolchain("rust");
    let (config, _) = scaffold("rust", "edited");
    let lib = config.dir.path().join("handlers/edited/src/lib.rs");
    let host = Host::start_building(config, &["--watch"]);
    let message = str_value("hello");
    assert_eq!(host.connect().call_value(&message), message);

    let source = std::fs::read_to_string(&lib).unwrap();
    assert!(source.contains("    Ok(message)\n"), "{source}");
    let edited = source.replace("    Ok(message)\n", "    Ok(Value::from(\"edited\"))\n");
    std::fs::write(&lib, edited).unwrap();
    host.wait_for_log("sources changed: building");
    // The crate alone compiles again, which may take minutes on a busy
    // machine.
    wait_until(
        host.with_log("the edit built and swapped in"),
        Duration::from_secs(900),
        || host.log().contains("swapped handler"),
    );
    assert_eq!(host.connect().call_value(&message), str_value("edited"));
}

/// A build that misses a tool stops, saying what installs it.
#[test]
fn a_missing_tool_is_named_with_what_installs_it() {
    let (config, _) = scaffold("rust", "untooled");
    // A PATH with `dirname` (build.sh needs it) and no cargo.
    let bin = config.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let dirname = Command::new("sh")
        .args(["-c", "command -v dirname"])
        .output()
        .unwrap();
    let dirname = String::from_utf8(dirname.stdout).unwrap();
    std::os::unix::fs::symlink(dirname.trim(), bin.join("dirname")).unwrap();
    let out = Command::new("/bin/sh")
        .arg(config.dir.path().join("handlers/untooled/build.sh"))
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "untooled/build.sh: cargo not found; install it with: rustup, from https://rustup.rs"
        ),
        "{stderr}"
    );
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
