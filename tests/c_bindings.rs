//! The C bindings in `handlers/c-bindings` are generated from `wit/` once
//! and committed, so C handlers build without wit-bindgen; those in
//! `handlers/c-bindings/http`, of the same world plus wasi:http's
//! outgoing-handler, from `handlers/c-bindings/http/wit`, which links
//! `wit/handler.wit` in. Each `WIT_SHA256` records the WIT files they came
//! from; this fails as soon as the WIT no longer matches it, so the
//! bindings cannot go stale unnoticed.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The `sha256sum` lines of the `.wit` files `wit-bindgen` reads from
/// `dir` (those directly in it and any under `deps/`, through symbolic
/// links, not the older world versions kept in other subfolders), by path
/// in byte order: what `handlers/c-bindings/regenerate.sh` writes to
/// `WIT_SHA256`.
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
        if entry.path().is_dir() {
            if !prefix.is_empty() || name == "deps" {
                collect_wit(&entry.path(), &format!("{name}/"), files);
            }
        } else if name.ends_with(".wit") {
            files.push(name);
        }
    }
}

/// Fails unless `handlers/c-bindings/<bindings>WIT_SHA256` holds the
/// hashes of the files in `wit`, a folder of the repository.
fn assert_generated_from(bindings: &str, wit: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recorded =
        std::fs::read_to_string(root.join(format!("handlers/c-bindings/{bindings}WIT_SHA256")))
            .unwrap();
    let current = wit_hashes(&root.join(wit));
    assert!(
        recorded == current,
        "handlers/c-bindings/{bindings} was generated from other WIT files than {wit}/ holds now.\n\
         recorded in handlers/c-bindings/{bindings}WIT_SHA256:\n{recorded}\
         {wit}/ now:\n{current}\n\
         Regenerate the bindings and their hashes with \
         `sh handlers/c-bindings/regenerate.sh` (needs wit-bindgen-cli, which it \
         installs when missing), then commit handlers/c-bindings."
    );
}

#[test]
fn c_bindings_were_generated_from_the_current_wit() {
    assert_generated_from("", "wit");
}

/// Through its links, a change to `wit/handler.wit` or to the
/// `wasi:keyvalue` WIT changes what the HTTP bindings' `WIT_SHA256` must
/// say too.
#[test]
fn c_http_bindings_were_generated_from_the_current_wit() {
    assert_generated_from("http/", "handlers/c-bindings/http/wit");
}

/// `wit/handler.wit`'s package and version, and the names a component type
/// of a world that includes its `handler` world carries: each interface
/// it declares, at that version, and each interface of another package
/// that world imports.
fn handler_world_names(root: &Path) -> (String, String, Vec<String>) {
    let wit = std::fs::read_to_string(root.join("wit/handler.wit")).unwrap();
    let package = wit
        .lines()
        .find_map(|line| line.strip_prefix("package ")?.strip_suffix(';'))
        .expect("wit/handler.wit names its package");
    let (package, version) = package.split_once('@').expect("a versioned package");
    let mut wanted: Vec<String> = wit
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("interface ")?;
            Some(format!(
                "{package}/{}@{version}",
                name.trim_end_matches(" {")
            ))
        })
        .collect();
    wanted.extend(imported_packages(&wit));
    assert!(
        wanted.len() >= 5,
        "read too little of wit/handler.wit: {wanted:?}"
    );
    (package.to_owned(), version.to_owned(), wanted)
}

/// The interfaces of other packages (`ns:pkg/name@version`) a WIT file's
/// worlds import.
fn imported_packages(wit: &str) -> Vec<String> {
    wit.lines()
        .filter_map(|line| {
            let import = line.trim().strip_prefix("import ")?.strip_suffix(';')?;
            import.contains(':').then(|| import.to_owned())
        })
        .collect()
}

/// Fails unless the component type in `handlers/c-bindings/<object>` names
/// each of `wanted`, and names `package`'s interfaces at `version` only.
fn assert_component_type(object: &str, package: &str, version: &str, wanted: &[String]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let object = std::fs::read(root.join("handlers/c-bindings").join(object)).unwrap();
    let names = |needle: &str| object.windows(needle.len()).any(|w| w == needle.as_bytes());
    for name in wanted {
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

/// What a C handler built with the bindings is checked against when it
/// loads: the world its component type names. That type, in
/// `handler_component_type.o`, names `wit/handler.wit`'s package at its
/// current version and every interface it declares or its world imports,
/// and no other version of the package, so bindings left over from an
/// older world fail here even if `WIT_SHA256` was rewritten by hand.
#[test]
fn c_bindings_name_the_current_world_and_its_interfaces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (package, version, mut wanted) = handler_world_names(root);
    wanted.push(format!("{package}/handler@{version}"));
    assert_component_type("handler_component_type.o", &package, &version, &wanted);
}

/// The HTTP bindings' component type names the same, and wasi:http's
/// outgoing-handler at the version `http/wit/http-handler.wit` imports.
#[test]
fn c_http_bindings_name_the_current_world_and_wasi_http() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (package, version, mut wanted) = handler_world_names(root);
    let world = std::fs::read_to_string(root.join("handlers/c-bindings/http/wit/http-handler.wit"))
        .unwrap();
    let http = imported_packages(&world);
    assert!(
        http.iter()
            .any(|name| name.starts_with("wasi:http/outgoing-handler@")),
        "http-handler.wit imports no wasi:http/outgoing-handler: {http:?}"
    );
    wanted.extend(http);
    assert_component_type("http/handler_component_type.o", &package, &version, &wanted);
}
