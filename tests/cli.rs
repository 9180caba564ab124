//! The `basalt` command line, run as a process.

use std::process::Command;

use basalt::storage::{Db, Options};

fn basalt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
}

#[test]
fn serve_opens_and_recovers_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for _ in 0..2 {
        let out = basalt()
            .args(["serve", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("0 tables"), "{stdout}");
        assert!(stdout.contains("wire server"), "{stdout}");
    }
    assert!(data.join("CURRENT").is_file());
}

#[test]
fn serve_refuses_a_directory_another_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(dir.path(), Options::default()).unwrap();
    let out = basalt()
        .args(["serve", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}
