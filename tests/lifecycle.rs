//! Shutdown and restart: acknowledged rows survive, exactly once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{DEFAULT_KEY, Env, client, count, ingest, rows, signal};

fn body(writer: usize, request: usize, lines: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..lines)
        .map(|l| format!("w{writer}-r{request}-l{l}"))
        .collect();
    let body = ids
        .iter()
        .map(|id| format!("{{\"message\":\"{id}\",\"host\":\"crash-test\"}}"))
        .collect::<Vec<_>>()
        .join("\n");
    (body, ids)
}

#[tokio::test]
async fn graceful_shutdown_answers_pending_requests_and_keeps_their_rows() {
    // Without eager flushes and with a one-minute linger, only the shutdown
    // flush can answer in time.
    let env = Env::new()
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "60000")
        .set("SECURENET_INGEST__BATCH__FLUSH_CONCURRENCY", "0");
    let mut server = env.serve();
    let (payload, _) = body(0, 0, 250);
    let url = server.url("/api/ingest/logs");
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(DEFAULT_KEY)
            .header("content-type", "application/x-ndjson")
            .body(payload)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "request should be waiting for its batch"
    );
    let started = Instant::now();
    signal(server.pid(), "TERM");
    assert_eq!(pending.await.unwrap().unwrap(), 200);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exit after SIGTERM");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );

    let server = env.serve();
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 250);
}

#[tokio::test]
async fn restart_after_crash_keeps_every_acknowledged_row_exactly_once() {
    let env = Env::new().set("SECURENET_INGEST__BATCH__LINGER_MS", "30");
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    for round in 0..3 {
        let server = env.serve();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let url = server.url("/api/ingest/logs");
                let acked = acked.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let c = client();
                    let mut request = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (payload, ids) = body(round * 10 + w, request, 40);
                        request += 1;
                        let sent = c
                            .post(&url)
                            .bearer_auth(DEFAULT_KEY)
                            .header("content-type", "application/x-ndjson")
                            .body(payload)
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                            Ok(_) => {}
                            Err(_) => break, // the server died
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700 + 300 * round as u64)).await;
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 500, "only {} rows acknowledged", acked.len());

    let server = env.serve();
    let total = count(&server, DEFAULT_KEY, "logs").await;
    let distinct = rows(
        &server,
        DEFAULT_KEY,
        "SELECT count(DISTINCT message) AS n FROM logs",
    )
    .await[0]["n"]
        .as_u64()
        .unwrap();
    assert_eq!(total, distinct, "a row is stored twice");
    let stored: BTreeSet<String> = rows(&server, DEFAULT_KEY, "SELECT message FROM logs")
        .await
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acked.difference(&stored).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged rows lost after crash: {missing:?}"
    );
    // And the server keeps working after the crashes.
    let (status, _) = ingest(&server, DEFAULT_KEY, "{\"message\":\"after\"}").await;
    assert_eq!(status, 200);
}
