//! Helpers shared by the integration tests that run a child process.

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
