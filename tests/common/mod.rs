//! Helpers shared by the integration tests: running a child process,
//! reading query results as text.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts this test binary again, running only the ignored test `name`,
/// with `var` pointing it at `dir`; its stdout is piped for the parent.
pub fn spawn_child_test(name: &str, var: &str, dir: &Path) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(var, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the child test process")
}

/// Every row of `sql`'s result, each value in Postgres' text form.
pub async fn rows(session: &mut basalt::Session, sql: &str) -> Vec<Vec<Option<String>>> {
    let batches = session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| basalt::query::pgtext::format_value(c.as_ref(), row))
                    .collect(),
            );
        }
    }
    out
}

/// The plan text of `explain` (an `EXPLAIN` or `EXPLAIN ANALYZE`
/// statement), one line per plan line.
pub async fn plan_text(session: &mut basalt::Session, explain: &str) -> String {
    let lines: Vec<String> = rows(session, explain)
        .await
        .into_iter()
        .filter_map(|r| r[1].clone())
        .collect();
    lines.join("\n")
}

/// A session on a new database in a temporary directory, which lives as
/// long as the returned guard.
pub fn temp_session() -> (tempfile::TempDir, basalt::Session) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = basalt::Database::open(dir.path().join("db")).expect("opening the database");
    (dir, db.session())
}

/// Names of the files in `dir` ending with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading a directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}
