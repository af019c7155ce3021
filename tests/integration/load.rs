//! Zero failed requests while a client hammers the example server across
//! many SIGHUP restarts.

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
    let load = Load::start(&addr, 4, "hello from generation");
    load.restart(&server, &st, restarts, 10);
    let requests = load.finish();
    let body = get(&addr).unwrap();
    assert!(
        body.starts_with(&format!("hello from generation {}", restarts + 1)),
        "{body}"
    );
    assert!(server.stop().success());
    eprintln!("{requests} requests, none failed, across {restarts} restarts");
}
