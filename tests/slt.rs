//! Runs every `tests/slt/*.slt` sqllogictest file against an embedded
//! database (one fresh database per file; `connection` records open more
//! sessions on it). Values print in Postgres' text format; NULL prints as
//! `NULL` and an empty string as `(empty)`.

mod slt_support;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let files = slt_support::slt_files(&dir);
    assert!(
        files.len() >= 7,
        "expected the slt files in {}",
        dir.display()
    );
    // BASALT_SLT=name runs one file while iterating on it.
    let only = std::env::var("BASALT_SLT").ok();
    let mut failures = Vec::new();
    for file in &files {
        if only
            .as_ref()
            .is_some_and(|only| file.file_stem() != Some(only.as_ref()))
        {
            continue;
        }
        if let Err(err) = slt_support::run_file(file).await {
            failures.push(format!("{}:\n{err}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
