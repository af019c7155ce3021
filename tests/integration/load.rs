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

/// The example server writes each log line in one write(2), so lines of
/// generations running side by side never mix: with stderr a datagram
/// socket, every write arrives as one datagram, which must be one line.
#[test]
fn the_example_server_writes_each_line_at_once() {
    use std::os::unix::net::UnixDatagram;
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    ours.set_read_timeout(Some(DEADLINE)).unwrap();
    let hello = example("hello").display().to_string();
    let mut child = std::process::Command::new(bin())
        .args([
            &format!("--port=127.0.0.1:{}", free_port()),
            "--interval=0",
            "--",
            &hello,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::os::fd::OwnedFd::from(theirs))
        .spawn()
        .unwrap();
    let mut writes = Vec::new();
    let mut next = || {
        let mut buf = [0u8; 4096];
        let n = ours
            .recv(&mut buf)
            .expect("a write from start_server or hello");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        writes.push(text.clone());
        text
    };
    while !next().contains("serving") {}
    kill("TERM", child.id());
    while !next().contains("shutting down") {}
    let status = child.wait().unwrap();
    assert!(status.success(), "{writes:?}");
    for w in &writes {
        assert!(
            w.ends_with('\n') && w.matches('\n').count() == 1,
            "a write that is not one whole line: {w:?} among {writes:?}"
        );
    }
}
