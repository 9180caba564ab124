//! The server binary and the benches resolve every shared dependency with
//! the same features, so one target directory builds both without
//! recompiling DataFusion and Arrow (a release build is over half an hour
//! here). A dependency added to one side with other features fails this.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package (name and version) -> features, as `cargo tree` resolves them
/// for `package`'s normal dependencies.
fn resolved_features(package: &str) -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "-p", package, "-e", "normal"])
        .args(["--prefix", "none", "-f", "{p}|{f}"])
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut resolved: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, features)) = line.trim_end_matches(" (*)").split_once('|') else {
            continue;
        };
        let name: Vec<&str> = package.split_whitespace().take(2).collect();
        resolved.entry(name.join(" ")).or_default().extend(
            features
                .split(',')
                .filter(|f| !f.is_empty())
                .map(String::from),
        );
    }
    resolved
}

#[test]
fn the_server_and_the_benches_share_dependency_features() {
    let server = resolved_features("basalt");
    let benches = resolved_features("basalt-bench");
    assert!(
        server.keys().any(|p| p.starts_with("datafusion ")),
        "{server:?}"
    );
    let differing: Vec<String> = server
        .iter()
        .filter_map(|(package, features)| {
            let other = benches.get(package)?;
            (other != features).then(|| {
                format!(
                    "{package}: server only {:?}, benches only {:?}",
                    features.difference(other).collect::<Vec<_>>(),
                    other.difference(features).collect::<Vec<_>>()
                )
            })
        })
        .collect();
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}
