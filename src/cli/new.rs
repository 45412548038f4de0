//! `arrpc-host new`: writes a handler skeleton that builds and serves as it
//! is, in Rust, Python, JavaScript, C or Zig, and prints its `[[handler]]` entry.
//!
//! Skeletons echo the message back; each file says where to put real work.
//! Every skeleton except Rust's carries its own copy of `wit/handler.wit`,
//! and the C and Zig ones the C bindings generated from it, so it builds wherever it
//! is moved. Paths in the printed entry are relative to the current folder,
//! where `arrpc.toml` is expected to live.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// The contract every skeleton implements.
const WIT: &str = include_str!("../../wit/handler.wit");

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

/// Where `handlers/install-toolchains.sh` puts the WASI preview1 reactor
/// adapter that C and Zig components need.
const ADAPTER: &str = "handlers/.toolchains/wasi_snapshot_preview1.reactor.wasm";

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
    /// The Rust SDK crate (`arrpc-handler`), for `--lang rust`.
    #[arg(long, default_value = "handlers/sdk")]
    sdk: PathBuf,
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
    let up = relative(&folder, Path::new("."))?;
    let sdk = match args.lang {
        Lang::Rust => {
            if !args.sdk.join("Cargo.toml").is_file() {
                bail!(
                    "the Rust SDK was not found at {}; run this in an arrpc-host checkout or pass --sdk",
                    args.sdk.display()
                );
            }
            relative(&folder, &args.sdk)?
        }
        _ => String::new(),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", &args.name)
            .replace("{{sdk}}", &sdk)
            .replace("{{adapter}}", &format!("{up}/{ADAPTER}"))
    };
    let files: &[(&str, &str)] = match args.lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
        ],
        Lang::Python => &[
            ("app.py", include_str!("templates/python/app.py")),
            ("build.sh", include_str!("templates/python/build.sh")),
            ("wit/handler.wit", WIT),
        ],
        Lang::Js => &[
            ("handler.js", include_str!("templates/js/handler.js")),
            ("build.mjs", include_str!("templates/js/build.mjs")),
            ("package.json", include_str!("templates/js/package.json")),
            ("build.sh", include_str!("templates/js/build.sh")),
            ("wit/handler.wit", WIT),
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
    let copies = match args.lang {
        Lang::C | Lang::Zig => C_BINDINGS,
        _ => &[],
    };
    let filled = files
        .iter()
        .map(|(file, template)| (*file, fill(template).into_bytes()));
    let copied = copies.iter().map(|(file, bytes)| (*file, bytes.to_vec()));
    for (file, contents) in filled.chain(copied) {
        let path = folder.join(file);
        std::fs::create_dir_all(path.parent().unwrap_or(&folder))
            .with_context(|| format!("cannot create {}", folder.display()))?;
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    let entry = entry(&args.name, args.lang, &folder);
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
    Ok(())
}

/// The `[[handler]]` table serving the skeleton; its `build` command runs
/// when the module is missing.
fn entry(name: &str, lang: Lang, folder: &Path) -> String {
    let folder = folder.display();
    let (module, build) = match lang {
        Lang::Rust => (
            format!(
                "{folder}/target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ),
            format!(
                "rustup target add wasm32-wasip2 && cargo build --release --target wasm32-wasip2 --manifest-path {folder}/Cargo.toml"
            ),
        ),
        _ => (
            format!("{folder}/{name}.wasm"),
            format!("sh {folder}/build.sh"),
        ),
    };
    format!("[[handler]]\nname = \"{name}\"\nmodule = \"{module}\"\nbuild = \"{build}\"\n")
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

    #[test]
    fn entries_point_at_what_the_build_produces() {
        let rust = entry("order-total", Lang::Rust, Path::new("handlers/order-total"));
        assert!(rust.contains(
            "module = \"handlers/order-total/target/wasm32-wasip2/release/order_total.wasm\""
        ));
        let js = entry("t", Lang::Js, Path::new("h/t"));
        assert_eq!(
            js,
            "[[handler]]\nname = \"t\"\nmodule = \"h/t/t.wasm\"\nbuild = \"sh h/t/build.sh\"\n"
        );
    }
}
