//! Cancels landing at random moments, checked against a model: every
//! statement reported done took effect, and every statement reported
//! cancelled did not. A cancel arriving while a commit waits for its fsync
//! must not turn a durable commit into a reported failure (a client would
//! retry it and apply it twice).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_cancel_reports_is_what_happened() {
    let (_dir, mut session) = common::temp_session();
    session
        .execute("CREATE TABLE t (id bigint PRIMARY KEY, v bigint)")
        .await
        .unwrap();
    let interrupt = session.interrupt();
    let running = Arc::new(AtomicBool::new(true));
    let canceller = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(7);
            while running.load(Ordering::Relaxed) {
                let pause = Duration::from_micros(rng.gen_range(50..3000));
                tokio::time::sleep(pause).await;
                interrupt.cancel();
            }
        })
    };
    let mut acknowledged = BTreeSet::new();
    let mut cancelled = BTreeSet::new();
    let mut rng = SmallRng::seed_from_u64(11);
    for id in 0..600i64 {
        // Single inserts, multi-row inserts and explicit blocks, so that
        // cancels land in every kind of commit.
        let sql = match rng.gen_range(0..3) {
            0 => format!("INSERT INTO t VALUES ({id}, 1)"),
            1 => format!("INSERT INTO t SELECT {id}, count(*) FROM generate_series(1, 300000)"),
            _ => format!("BEGIN; INSERT INTO t VALUES ({id}, 2); COMMIT"),
        };
        match session.execute(&sql).await {
            Ok(_) => {
                acknowledged.insert(id);
            }
            Err(e) if e.sqlstate() == "57014" => {
                cancelled.insert(id);
                // A block the cancel interrupted is left failed: end it.
                let _ = session.execute("ROLLBACK").await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    running.store(false, Ordering::Relaxed);
    canceller.await.unwrap();
    assert!(
        !cancelled.is_empty() && !acknowledged.is_empty(),
        "the cancels did not land: {} cancelled, {} acknowledged",
        cancelled.len(),
        acknowledged.len()
    );
    session.interrupt().reset();
    let present: BTreeSet<i64> = common::rows(&mut session, "SELECT id FROM t")
        .await
        .into_iter()
        .map(|row| row[0].as_deref().unwrap().parse().unwrap())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&present).collect();
    let phantom: Vec<_> = cancelled.intersection(&present).collect();
    assert!(lost.is_empty(), "acknowledged but missing: {lost:?}");
    assert!(
        phantom.is_empty(),
        "reported cancelled but committed: {phantom:?}"
    );
}

/// `lock_timeout` bounds how long an autocommit write keeps retrying a
/// write conflict (Basalt's wait for a row lock): under a writer that
/// keeps changing the same row, a statement with a 1 ms limit gives up
/// with 55P03, and one that gave up changed nothing. The row's final value
/// accounts for every write reported done and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_gives_up_on_a_contended_row_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = basalt::storage::Options {
        synchronous_commit: false,
        ..Default::default()
    };
    let db = basalt::Database::open_with(dir.path().join("db"), options).unwrap();
    let mut setup = db.session();
    setup
        .execute("CREATE TABLE hot (id int PRIMARY KEY, v bigint)")
        .await
        .unwrap();
    setup
        .execute("INSERT INTO hot VALUES (1, 0)")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let mut session = db.session();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if session
                    .execute("UPDATE hot SET v = v + 1 WHERE id = 1")
                    .await
                    .is_ok()
                {
                    done += 1;
                }
            }
            done
        })
    };
    let mut victim = db.session();
    victim.execute("SET lock_timeout = '1ms'").await.unwrap();
    let (mut applied, mut timed_out) = (0i64, 0);
    for _ in 0..2000 {
        match victim
            .execute("UPDATE hot SET v = v + 1000000000 WHERE id = 1")
            .await
        {
            Ok(_) => applied += 1,
            Err(e) => {
                assert_eq!(e.sqlstate(), "55P03", "{e}");
                timed_out += 1;
                if timed_out >= 3 {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let hammered = hammer.await.unwrap() as i64;
    assert!(
        timed_out > 0,
        "no statement hit the lock timeout in 2000 tries"
    );
    let rows = common::rows(&mut setup, "SELECT v FROM hot").await;
    let want = hammered + applied * 1_000_000_000;
    assert_eq!(rows[0][0].as_deref(), Some(want.to_string().as_str()));
}
