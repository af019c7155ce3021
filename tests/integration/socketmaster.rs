//! The same binary run as `socketmaster`.

use std::process::Command;

use crate::support::*;

/// A `socketmaster` symlink to the binary under test, in `dir`.
fn socketmaster(dir: &TempDir) -> std::path::PathBuf {
    let link = dir.join("socketmaster");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    link
}

fn run(dir: &TempDir, args: &[impl AsRef<std::ffi::OsStr>]) -> Server {
    Server::spawn(Command::new(socketmaster(dir)).args(args))
}

/// Runs socketmaster expecting it to fail at start-up.
fn rejects(args: &[&str], needle: &str) {
    let dir = TempDir::new("sm-rejects");
    let out = Command::new(socketmaster(&dir))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("fatal:")).count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        dir.entries(),
        ["socketmaster"],
        "{args:?} left files behind"
    );
}

#[test]
fn bad_input_is_rejected_with_one_line() {
    let port = free_port();
    let tcp = format!("-listen=tcp4://127.0.0.1:{port}");
    rejects(
        &["-listen=udp://:53", "-command=true"],
        "unknown scheme 'udp'",
    );
    rejects(
        &["-listen=tcp:/x", "-command=true"],
        "expected SCHEME://ADDRESS",
    );
    rejects(
        &["-listen=tcp://host", "-command=true"],
        "expected HOST:PORT",
    );
    rejects(&[&tcp], "-command is required");
    rejects(
        &[&tcp, "-ready-timeout=0", "-command=true"],
        "invalid value \"0\" for flag -ready-timeout: must be more than 0",
    );
    rejects(
        &[&tcp, "-command=no-such-command-anywhere"],
        "-command 'no-such-command-anywhere' not found in PATH",
    );
    rejects(&[&tcp, "-command=true", "-start=-5"], "flag -start");
    rejects(
        &[&tcp, "-command=true", "-bogus"],
        "flag provided but not defined: -bogus",
    );
    rejects(
        &[&tcp, "-command=true", "-user=no-such-user-here"],
        "unknown user 'no-such-user-here'",
    );
    rejects(
        &["-listen=fd://9", "-command=true"],
        "descriptor 9 is not an open socket",
    );
    // Nothing was left bound.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn user_needs_root() {
    if !root_or_skip("dropping privileges")
        || !tool_or_skip("setpriv", &["--version"], "util-linux")
    {
        return;
    }
    let dir = TempDir::new("sm-nonroot");
    let link = copy_for_all(&dir, &bin(), "socketmaster");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&link)
        .args([
            &format!("-listen=tcp4://127.0.0.1:{}", free_port()),
            "-command=true",
            "-user=root",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("setpriv:"), "setpriv failed: {stderr}");
    assert_fails_saying(&out, "-user needs root (running as uid 65534)");
}

#[test]
fn workers_get_fd_3_and_einhorn_fds_and_run_as_the_user() {
    let true = root_or_skip("-user=nobody") else {
        return;
    };
    let dir = TempDir::new("sm-env");
    let probe = copy_for_all(&dir, &example("probe"), "probe")
        .display()
        .to_string();
    let port = free_port();
    let mut server = run(
        &dir,
        &[
            &format!("-listen=tcp://:{port}"),
            &format!("-command={probe}"),
            "-start=0",
            "-user=nobody",
            "--",
            dir.path().to_str().unwrap(),
        ],
    );
    let r = dir.report(1, &server);
    assert_eq!(r["env.EINHORN_FDS"], "3");
    assert_eq!(r["env.LISTEN_FDS"], "1");
    assert!(r["fd3"].starts_with("socket:"), "{r:?}");
    assert_eq!((r["uid"].as_str(), r["gid"].as_str()), ("65534", "65534"));
    assert_eq!(r["groups"], "65534");
    // tcp:// with no host listens on both IPv4 and IPv6.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(std::net::TcpStream::connect(("::1", port)).is_ok());
    server.signal("TERM");
    // The probe takes TERM's default action: the signal forwarded, so
    // socketmaster reports success.
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log());
}

#[test]
fn hup_hands_over_and_a_new_worker_that_dies_keeps_the_old_ones() {
    let dir = TempDir::with_mode("sm-hup", "graceful");
    let probe = probe();
    let sock = dir.s("sm.sock");
    let listen = format!("-listen=unix://{sock}");
    let mut server = run(
        &dir,
        &[
            &listen,
            &format!("-command={probe}"),
            "-start=100",
            "--",
            dir.path().to_str().unwrap(),
        ],
    );
    let first = server.wait_worker(1);
    dir.report(1, &server);
    dir.mode("exit 4");
    server.signal("HUP");
    let second = server.wait_worker(2);
    server.wait_line(&format!("new worker {second} exited before it was up (exit status 4): keeping the old workers: {first}"));
    assert!(alive(first));
    dir.mode("graceful");
    server.signal("HUP");
    let third = server.wait_worker(3);
    server.wait_line(&format!(
        "new worker is now running, sending TERM to old workers:{first}"
    ));
    server.wait_line(&format!("worker {first} exited (exit status 0)"));
    // INT is forwarded as INT.
    server.signal("INT");
    server.wait_line(&format!("received INT, sending INT to all workers:{third}"));
    assert_eq!(server.wait_exit().code(), Some(0));
    assert_eq!(dir.stopped_by(3), "2");
}

#[test]
fn socketmaster_exits_with_the_last_workers_status() {
    let dir = TempDir::with_mode("sm-exit", "exit 7");
    let probe = probe();
    let mut server = run(
        &dir,
        &[
            &format!("-listen=tcp4://127.0.0.1:{}", free_port()),
            &format!("-command={probe}"),
            "--",
            dir.path().to_str().unwrap(),
        ],
    );
    server.wait_line("(exit status 7)");
    assert_eq!(server.wait_exit().code(), Some(7));
}

#[test]
fn output_is_relayed_line_by_line_with_the_pid() {
    let dir = TempDir::new("sm-relay");
    // TERM is ignored: both workers write all of it, at the same time.
    // Each says in a file when it has written everything.
    let script = format!(
        "trap '' TERM; i=0; while [ $i -lt 300 ]; do echo \"line $i of $$ $(printf '%080d' 0)\"; i=$((i+1)); done; \
         head -c 10000 /dev/zero | tr '\\0' x; echo; printf 'last without newline'; : > {}/done.$$; exec sleep 100",
        dir.path().display()
    );
    let mut server = run(&dir, &socketmaster_sh("-start=0", &script));
    let first = server.wait_worker(1);
    // Once the first has trapped TERM and started writing, a second
    // worker writes at the same time.
    server.wait_line(&format!("[{first}] line 0 "));
    server.signal("HUP");
    let second = server.wait_worker(2);
    for pid in [first, second] {
        let done = dir.join(&format!("done.{pid}"));
        wait_for(
            &format!("worker {pid} to write everything"),
            &server,
            || done.exists().then_some(()),
        );
    }
    // A last line without newline is logged when its worker is gone.
    server.signal("INT");
    assert!(server.wait_exit().success());
    let lines = server.lines();
    for pid in [first, second] {
        let prefix = format!("[{pid}] ");
        let mine: Vec<&String> = lines.iter().filter(|l| l.starts_with(&prefix)).collect();
        let numbered = mine.iter().filter(|l| l.contains(" of ")).count();
        assert_eq!(numbered, 300, "every line of {pid} arrives once, whole");
        for l in mine.iter().filter(|l| l.contains(" of ")) {
            assert!(
                l.ends_with(&format!("{pid} {}", "0".repeat(80))),
                "a mixed line: {l}"
            );
        }
        // The 10000-byte line arrives split, all of it.
        let xs: usize = mine
            .iter()
            .filter(|l| l[prefix.len()..].starts_with('x'))
            .map(|l| l.len() - prefix.len())
            .sum();
        assert_eq!(xs, 10000);
        assert!(
            lines.contains(&format!("{prefix}last without newline")),
            "{}",
            server.log()
        );
    }
}

#[test]
fn syslog_without_dev_log_says_so_once_and_uses_stderr() {
    if std::path::Path::new("/dev/log").exists() {
        return skip("this machine has a /dev/log");
    }
    let dir = TempDir::new("sm-syslog");
    let mut server = run(
        &dir,
        &socketmaster_sh("-syslog", "echo hello; exec sleep 100"),
    );
    server.wait_line("socketmaster: warning: no syslog at /dev/log");
    let w = server.wait_worker(1);
    server.wait_line(&format!("[{w}] hello"));
    assert!(server.stop().success());
    assert_eq!(server.count("no syslog"), 1);
}

#[test]
fn no_request_fails_across_20_socketmaster_restarts() {
    let dir = TempDir::new("sm-load");
    let (_, addr) = free_addr();
    let hello = example("hello").display().to_string();
    let mut server = run(
        &dir,
        &[
            &format!("-listen=tcp4://{addr}"),
            &format!("-command={hello}"),
            "-start=100",
        ],
    );
    server.wait_line("serving 1 socket");
    let load = Load::start(&addr, 4, "hello from generation");
    for n in 2..=21 {
        let before = load.ok();
        server.signal("HUP");
        server.wait_line_n("killing old workers", n - 1);
        wait_for("requests after a restart", &server, || {
            (load.ok() > before + 10).then_some(())
        });
    }
    let requests = load.finish();
    assert!(server.stop().success());
    eprintln!("socketmaster: {requests} requests, none failed, across 20 restarts");
}

/// A socket both passed in LISTEN_FDS and named by `-listen=fd://3` is
/// one socket, adopted once: the worker gets it on descriptor 3 alone,
/// and socketmaster stops cleanly.
#[test]
fn a_socket_in_listen_fds_and_named_fd_3_is_adopted_once() {
    let dir = TempDir::new("sm-fd-twice");
    let port = free_port();
    let probe = probe();
    let mut server = Server::spawn(
        Command::new("python3")
            .args([
                "-c",
                crate::activation::ACTIVATE,
                &format!("tcp:127.0.0.1:{port}"),
                "web",
            ])
            .arg(socketmaster(&dir))
            .args(["-listen=fd://3", &format!("-command={probe}"), "-start=0"])
            .args(["--", dir.path().to_str().unwrap()]),
    );
    let r = dir.report(1, &server);
    assert_eq!(r["env.EINHORN_FDS"], "3", "{r:?}");
    assert_eq!(r["env.LISTEN_FDS"], "1", "{r:?}");
    assert_eq!(r["fds"], "0,1,2,3", "{r:?}");
    assert!(r["fd3"].starts_with("socket:"), "{r:?}");
    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.log());
}
