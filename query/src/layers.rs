//! The folders of `query/src` are layers, lowest first in [`LAYERS`]; a
//! module may name (`crate::...`) its own layer and lower ones only, so
//! the crate's modules form no cycle and `session/` sits on top. This test
//! reads the sources, as DataFusion's CI reads its crates' manifests.

use std::path::Path;

/// Lowest first. `sql`: errors, SQLSTATEs, syntax helpers; `types`:
/// PostgreSQL's types as Arrow holds them; `catalog`: the storage-backed
/// provider and its scan; `optimizer`: every planner rule; `index`: one
/// module per access method; `pg`: pg_catalog, its functions, sequences;
/// `io`: file access and formats; `session`: Session and one file per
/// statement kind.
const LAYERS: &[&str] = &[
    "sql",
    "types",
    "catalog",
    "optimizer",
    "index",
    "pg",
    "io",
    "session",
];

/// Names the crate root declares or re-exports, by the layer that defines
/// them. A root module not a layer (`test_rng`, `stream`) counts as the
/// lowest.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "sql"),
    ("Result", "sql"),
    ("Interrupt", "sql"),
    ("sqlstate", "sql"),
    ("pgtext", "types"),
    ("pgtypes", "types"),
    ("vector", "types"),
    ("test_rng", "sql"),
    ("stream", "sql"),
    ("StorageTable", "catalog"),
    ("StorageScanExec", "catalog"),
    ("CATALOG", "catalog"),
    ("SCHEMA", "catalog"),
    ("PG_TYPE_KEY", "types"),
    ("CopyStream", "io"),
    ("Reject", "io"),
    ("FileAccess", "io"),
    ("Database", "session"),
    ("Session", "session"),
    ("QueryResult", "session"),
    ("PreparedStatement", "session"),
];

/// The layer a `crate::` path's first segment belongs to, if known.
fn layer_of_name(name: &str) -> Option<usize> {
    let layer = ROOT_ITEMS
        .iter()
        .find(|(item, _)| *item == name)
        .map_or(name, |(_, layer)| layer);
    LAYERS.iter().position(|l| *l == layer)
}

/// Every `crate::name` a source names outside comments and its unit tests
/// (which may drive a module through a whole session).
fn named_from_crate(source: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for (at, _) in code.match_indices("crate::") {
            let preceded_by_ident = code[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded_by_ident {
                continue;
            }
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push((number + 1, name));
        }
        if code.contains("super::super::") {
            names.push((number + 1, "super::super".to_string()));
        }
    }
    names
}

/// The imports that reach a higher layer (or a name no layer claims), as
/// `file:line: message`, for sources given as (path under src, text).
fn upward_imports(sources: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, source) in sources {
        let Some(own_name) = path.split('/').next().map(|p| p.trim_end_matches(".rs")) else {
            continue;
        };
        if own_name == "lib" || own_name == "layers" {
            continue;
        }
        let Some(own) = layer_of_name(own_name) else {
            found.push(format!("{path}: not in a layer; add its folder to LAYERS"));
            continue;
        };
        for (line, name) in named_from_crate(source) {
            match layer_of_name(&name) {
                Some(layer) if layer <= own => {}
                Some(layer) => found.push(format!(
                    "{path}:{line}: {} imports crate::{name} from the higher layer {}",
                    LAYERS[own], LAYERS[layer]
                )),
                None => found.push(format!(
                    "{path}:{line}: crate::{name} is in no layer; add it to ROOT_ITEMS"
                )),
            }
        }
    }
    found
}

fn read_sources(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("query/src is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() {
            read_sources(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            out.push((format!("{prefix}{name}"), text));
        }
    }
}

#[test]
fn no_module_imports_from_a_higher_layer() {
    let mut sources = Vec::new();
    read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut sources,
    );
    assert!(sources.len() > 30, "found only {} sources", sources.len());
    let upward = upward_imports(&sources);
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn the_check_finds_an_upward_import_and_ignores_comments_and_tests() {
    let source = |text: &str| text.to_string();
    let sources = vec![
        (
            "catalog/table.rs".to_string(),
            source(
                "use crate::sql::error::Error;\n\
                 /// see crate::session::Session\n\
                 fn f() { crate::session::run(); }\n",
            ),
        ),
        (
            "types/json.rs".to_string(),
            source("use crate::Error;\n#[cfg(test)]\nmod tests { use crate::Session; }\n"),
        ),
        ("sql/x.rs".to_string(), source("use crate::nowhere::X;\n")),
        ("misc.rs".to_string(), source("")),
    ];
    let found = upward_imports(&sources);
    assert_eq!(
        found,
        vec![
            "catalog/table.rs:3: catalog imports crate::session from the higher layer session"
                .to_string(),
            "sql/x.rs:1: crate::nowhere is in no layer; add it to ROOT_ITEMS".to_string(),
            "misc.rs: not in a layer; add its folder to LAYERS".to_string(),
        ]
    );
}
