//! Runs every `tests/slt/*.slt` sqllogictest file against an embedded
//! database (one fresh database per file; `connection` records open more
//! sessions on it). Values print in Postgres' text format; NULL prints as
//! `NULL` and an empty string as `(empty)`.

mod slt_support;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "expected the slt files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        if let Err(err) = slt_support::run_file(file).await {
            failures.push(format!("{}:\n{err}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
