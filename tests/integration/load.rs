//! Zero failed requests while a client hammers the example server across
//! many SIGHUP restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use crate::support::*;

#[test]
fn no_request_fails_across_20_restarts() {
    hammer("load", 20);
}

/// `make soak`: SOAK_RESTARTS restarts (default 500).
#[test]
#[ignore = "long: run by `make soak`"]
fn soak_restarts_under_load() {
    let n = std::env::var("SOAK_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    hammer("soak", n);
}

fn hammer(name: &str, restarts: u64) {
    let dir = TempDir::new(name);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let hello = example("hello").display().to_string();
    let st = dir.join("status");
    let mut server = Server::start(&[
        &format!("--port={addr}"),
        &format!("--status-file={}", st.display()),
        "--interval=0.1",
        "--",
        &hello,
    ]);
    wait_status(&st, &[1], &server);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, errors, addr) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                errors.clone(),
                addr.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(&addr) {
                        Ok(body) if body.starts_with("hello from generation") => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        other => {
                            errors.lock().unwrap().push(format!("{other:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for generation in 2..=restarts + 1 {
        let before = ok.load(Ordering::Relaxed);
        server.signal("HUP");
        wait_status(&st, &[generation], &server);
        // Requests keep flowing through every hand-over.
        wait_for("requests after a restart", &server, || {
            (ok.load(Ordering::Relaxed) > before + 10).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let body = get(&addr).unwrap();
    assert!(
        body.starts_with(&format!("hello from generation {}", restarts + 1)),
        "{body}"
    );
    assert!(server.stop().success());
    let errors = errors.lock().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failures: {:?}",
        &errors[..errors.len().min(5)]
    );
    eprintln!(
        "{} requests, none failed, across 20 restarts",
        ok.load(Ordering::Relaxed)
    );
}
