//! Zero failed requests while a client hammers the example server across
//! many SIGHUP restarts.

use crate::support::*;

#[test]
fn no_request_fails_across_20_restarts() {
    hammer("load", 20);
}

/// start_server's descriptors, VmRSS (kB) and children, from /proc.
fn footprint(pid: u32) -> (usize, u64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .count();
    (fds, rss, children)
}

/// `make soak`: SOAK_RESTARTS restarts (default 1000) under load, with a
/// live upgrade after every fifth (200), printing failed requests and
/// start_server's footprint every 100 restarts; descriptors and children
/// must stay flat, and memory nearly so.
#[test]
#[ignore = "long: run by `make soak`"]
fn soak_restarts_and_upgrades_under_load() {
    let restarts: u64 = std::env::var("SOAK_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    assert!(restarts > 0, "SOAK_RESTARTS must be a positive number");
    let (_dir, server, _addr, st, load) = hello_under_load("soak", "--interval=0.05");
    let first = footprint(server.pid);
    let mut upgrades = 0;
    println!("restarts upgrades requests failed fds VmRSS(kB) children");
    for generation in 2..=restarts + 1 {
        let before = load.ok();
        server.signal("HUP");
        wait_status(&st, &[generation], &server);
        wait_for("requests after a restart", &server, || {
            (load.ok() > before + 5).then_some(())
        });
        let done = generation - 1;
        if done % 5 == 0 {
            server.signal("USR2");
            upgrades += 1;
            server.wait_line_n("upgraded in place", upgrades);
        }
        if done % 100 == 0 {
            let (fds, rss, children) = footprint(server.pid);
            println!(
                "{done:8} {upgrades:8} {:8} {:6} {fds:3} {rss:9} {children:8}",
                load.ok(),
                load.failed()
            );
        }
    }
    let last = footprint(server.pid);
    let requests = load.finish();
    assert_eq!(
        (last.0, last.2),
        (first.0, first.2),
        "descriptors and children flat"
    );
    assert!(
        last.1 <= first.1 + 256,
        "VmRSS grew from {} kB to {} kB",
        first.1,
        last.1
    );
    println!("{requests} requests, none failed, {restarts} restarts, {upgrades} live upgrades");
}

/// The example server under start_server with `interval`, on a free
/// port, with a status file, once up, and four clients hammering it: the
/// directory, start_server, the address, the status file, the load.
fn hello_under_load(
    name: &str,
    interval: &str,
) -> (TempDir, Server, String, std::path::PathBuf, Load) {
    let dir = TempDir::new(name);
    let addr = format!("127.0.0.1:{}", free_port());
    let st = dir.join("status");
    let server = Server::start(&[
        &format!("--port={addr}"),
        &format!("--status-file={}", st.display()),
        interval,
        "--",
        example("hello").to_str().unwrap(),
    ]);
    wait_status(&st, &[1], &server);
    let load = Load::start(&addr, 4, "hello from generation");
    (dir, server, addr, st, load)
}

fn hammer(name: &str, restarts: u64) {
    let (_dir, mut server, addr, st, load) = hello_under_load(name, "--interval=0.1");
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
