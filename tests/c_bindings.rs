//! The C bindings in `handlers/c-bindings` are generated from `wit/` once
//! and committed, so C handlers build without wit-bindgen. Their
//! `WIT_SHA256` records the WIT files they came from; this fails as soon as
//! `wit/` no longer matches it, so the bindings cannot go stale unnoticed.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The `sha256sum` lines of the `.wit` files `wit-bindgen` reads from
/// `dir` (those directly in it and any under `deps/`, not the older world
/// versions kept in other subfolders), by path in byte order: what
/// `handlers/c-bindings/regenerate.sh` writes to `WIT_SHA256`.
fn wit_hashes(dir: &Path) -> String {
    let mut files = Vec::new();
    collect_wit(dir, "", &mut files);
    files.sort();
    files
        .iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            format!("{}  {name}\n", hex::encode(Sha256::digest(bytes)))
        })
        .collect()
}

/// Adds the `/`-separated paths, relative to the WIT root, of the `.wit`
/// files in `dir`, descending into `deps/` at the root and into every
/// folder below it.
fn collect_wit(dir: &Path, prefix: &str, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}{}", entry.file_name().to_str().unwrap());
        if entry.file_type().unwrap().is_dir() {
            if !prefix.is_empty() || name == "deps" {
                collect_wit(&entry.path(), &format!("{name}/"), files);
            }
        } else if name.ends_with(".wit") {
            files.push(name);
        }
    }
}

#[test]
fn c_bindings_were_generated_from_the_current_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recorded = std::fs::read_to_string(root.join("handlers/c-bindings/WIT_SHA256")).unwrap();
    let current = wit_hashes(&root.join("wit"));
    assert!(
        recorded == current,
        "handlers/c-bindings was generated from other WIT files than wit/ holds now.\n\
         recorded in handlers/c-bindings/WIT_SHA256:\n{recorded}\
         wit/ now:\n{current}\n\
         Regenerate the bindings and their hashes with \
         `sh handlers/c-bindings/regenerate.sh` (needs wit-bindgen-cli, which it \
         installs when missing), then commit handlers/c-bindings."
    );
}

/// What a C handler built with the bindings is checked against when it
/// loads: the world its component type names. That type, in
/// `handler_component_type.o`, names `wit/handler.wit`'s package at its
/// current version and every interface it declares or its world imports,
/// and no other version of the package, so bindings left over from an
/// older world fail here even if `WIT_SHA256` was rewritten by hand.
#[test]
fn c_bindings_name_the_current_world_and_its_interfaces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wit = std::fs::read_to_string(root.join("wit/handler.wit")).unwrap();
    let object = std::fs::read(root.join("handlers/c-bindings/handler_component_type.o")).unwrap();
    let names = |needle: &str| object.windows(needle.len()).any(|w| w == needle.as_bytes());

    let package = wit
        .lines()
        .find_map(|line| line.strip_prefix("package ")?.strip_suffix(';'))
        .expect("wit/handler.wit names its package");
    let (package, version) = package.split_once('@').expect("a versioned package");
    let mut wanted: Vec<String> = wit
        .lines()
        .filter_map(|line| {
            let name = line
                .strip_prefix("interface ")
                .or(line.strip_prefix("world "))?;
            Some(format!(
                "{package}/{}@{version}",
                name.trim_end_matches(" {")
            ))
        })
        .collect();
    wanted.extend(wit.lines().filter_map(|line| {
        let import = line.trim().strip_prefix("import ")?.strip_suffix(';')?;
        import.contains(':').then(|| import.to_owned())
    }));
    assert!(
        wanted.len() >= 5,
        "read too little of wit/handler.wit: {wanted:?}"
    );
    for name in &wanted {
        assert!(
            names(name),
            "the C bindings do not name {name}; regenerate them"
        );
    }
    // Names in the encoding are strings after their length (one byte, as
    // these are short).
    let prefix = format!("{package}/");
    for (at, _) in object
        .windows(prefix.len())
        .enumerate()
        .filter(|(_, w)| *w == prefix.as_bytes())
    {
        let len = usize::from(object[at - 1]);
        let name = String::from_utf8_lossy(&object[at..at + len]);
        assert!(
            name.ends_with(&format!("@{version}")),
            "the C bindings name {name}, not version {version}; regenerate them"
        );
    }
}
