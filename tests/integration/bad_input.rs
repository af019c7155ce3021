//! Bad input: one clear line naming the culprit, a documented exit status,
//! and nothing left behind.

use std::process::Command;

use crate::support::*;

/// Runs start_server with `args` plus files in `dir`, expecting it to fail
/// with `code` and a message containing `needle`, leaving `dir` empty.
fn rejects(dir: &TempDir, args: &[&str], code: i32, needle: &str) -> String {
    let pid = dir.s("pid");
    let status = dir.s("status");
    let sock = dir.s("sock");
    let mut all = vec!["--pid-file", &pid, "--status-file", &status];
    let path_arg = format!("--path={sock}");
    if !args.iter().any(|a| a.starts_with("--path")) {
        all.push(&path_arg);
    }
    all.extend_from_slice(args);
    let out = Command::new(bin()).args(&all).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("start_server: fatal:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{args:?}: one error line expected:\n{stderr}"
    );
    let left: Vec<String> = dir
        .entries()
        .into_iter()
        .filter(|e| !["mode", "file", "live.sock"].contains(&e.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "{args:?} left {left:?} behind\nstderr:\n{stderr}"
    );
    stderr
}

#[test]
fn invalid_values_are_rejected_before_anything_starts() {
    let dir = TempDir::new("invalid-values");
    for (args, needle) in [
        (
            &["--port=70000", "true"][..],
            "'70000': port number out of range",
        ),
        (&["--port=abc", "true"], "'abc'"),
        (&["--port=[no:pe]:80", "true"], "not an IPv6 address"),
        (
            &["--interval=abc", "true"],
            "invalid --interval value 'abc'",
        ),
        (&["--interval=-1", "true"], "invalid --interval value '-1'"),
        (
            &["--kill-old-delay=x", "true"],
            "invalid --kill-old-delay value 'x'",
        ),
        (
            &["--signal-on-hup=NOSUCH", "true"],
            "invalid --signal-on-hup value 'NOSUCH': no such signal",
        ),
        (
            &["--signal-on-term=", "true"],
            "invalid --signal-on-term value ''",
        ),
        (&["--backlog=-1", "true"], "invalid --backlog value '-1'"),
        (
            &["--drain-timeout=-1", "true"],
            "invalid --drain-timeout value '-1': expected a non-negative number of seconds",
        ),
        (
            &["--drain-timeout=", "true"],
            "invalid --drain-timeout value ''",
        ),
        (
            &["--drain-timeout=soon", "true"],
            "invalid --drain-timeout value 'soon'",
        ),
        (
            &["--shutdown-delay=-2", "true"],
            "invalid --shutdown-delay value '-2'",
        ),
        (
            &["--shutdown-delay=", "true"],
            "invalid --shutdown-delay value ''",
        ),
        (
            &["--shutdown-delay=x", "true"],
            "invalid --shutdown-delay value 'x'",
        ),
        (
            &["--start-retries=-1", "true"],
            "invalid --start-retries value '-1': expected a non-negative whole number",
        ),
        (
            &["--start-retries=", "true"],
            "invalid --start-retries value ''",
        ),
        (
            &["--start-retries=1.5", "true"],
            "invalid --start-retries value '1.5'",
        ),
        (
            &["--start-retries=many", "true"],
            "invalid --start-retries value 'many'",
        ),
        (
            &["--start-retries=99999999999", "true"],
            "invalid --start-retries value '99999999999': too large",
        ),
        (&["--signal-group=1", "true"], "takes no value"),
        (&["--daemonize", "true"], "--daemonize requires --log-file"),
        (&["--bogus", "true"], "unknown option 'bogus'"),
        (&["--s=1", "true"], "is ambiguous"),
        (&["--enable-auto-restart=1", "true"], "takes no value"),
        (&["--port"], "needs a value"),
        (&[], "server program not specified"),
        (
            &["--port=80=9", "--port=81=9", "true"],
            "descriptor 9 is already taken",
        ),
        (&["--port=80=2", "true"], "descriptor 2"),
        (
            &["--workers=0", "true"],
            "invalid --workers value '0': must be at least 1",
        ),
        (&["--workers=-1", "true"], "invalid --workers value '-1'"),
        (&["--workers=abc", "true"], "invalid --workers value 'abc'"),
        (
            &["--workers=2", "--max-surge=0", "true"],
            "invalid --max-surge value '0': must be at least 1",
        ),
        (
            &["--workers=2", "--max-surge=3", "true"],
            "invalid --max-surge value '3': above --workers (2)",
        ),
        (&["--max-surge=1", "true"], "--max-surge needs --workers"),
        (
            &["--forward=HUP", "true"],
            "invalid --forward value 'HUP': start_server acts on HUP itself",
        ),
        (
            &["--pdeathsig=0", "true"],
            "invalid --pdeathsig value '0': no such signal",
        ),
        (
            &["--watch=", "true"],
            "invalid --watch value '': empty path",
        ),
        (
            &["--watch-delay=-1", "true"],
            "invalid --watch-delay value '-1'",
        ),
        (
            &["--watch=/nonexistent/dir/app.conf", "true"],
            "invalid --watch value '/nonexistent/dir/app.conf': unable to watch its directory: No such file or directory",
        ),
        (
            &["--forward=NOSUCH", "true"],
            "invalid --forward value 'NOSUCH': no such signal 'NOSUCH'",
        ),
    ] {
        // No listening socket is bound for a parse error: no sock file.
        rejects(&dir, args, 1, needle);
    }
}

#[test]
fn bad_environment_settings_are_rejected() {
    let dir = TempDir::new("bad-env");
    let out = Command::new(bin())
        .env("KILL_OLD_DELAY", "soon")
        .args(["--pid-file", &dir.s("pid"), "true"])
        .output()
        .unwrap();
    assert_fails_saying(&out, "invalid KILL_OLD_DELAY value 'soon'");
    assert!(dir.entries().is_empty());
}

#[test]
fn a_port_in_use_is_rejected_and_nothing_is_left() {
    let dir = TempDir::new("port-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec = format!("--port=127.0.0.1:{port}");
    let err = rejects(&dir, &[&spec, "true"], 1, "Address in use");
    assert!(
        err.contains(&format!("unable to bind to 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn unbindable_addresses_and_paths_are_rejected() {
    let dir = TempDir::new("unbindable");
    // TEST-NET-1 is never a local address.
    rejects(
        &dir,
        &["--port=192.0.2.1:8080", "true"],
        1,
        "unable to bind to 192.0.2.1:8080",
    );
    rejects(
        &dir,
        &["--path=/nonexistent/dir/sock", "true"],
        1,
        "unable to bind to /nonexistent/dir/sock",
    );
    let long = format!("--path={}/{}", dir.path().display(), "x".repeat(120));
    rejects(&dir, &[&long, "true"], 1, "Filename too long");
    rejects(
        &dir,
        &["--port=no-such-host.invalid:80", "true"],
        1,
        "unable to resolve host 'no-such-host.invalid'",
    );
    // A regular file where the socket should go is not removed.
    std::fs::write(dir.join("file"), "keep").unwrap();
    let file = format!("--path={}", dir.s("file"));
    rejects(&dir, &[&file, "true"], 1, "Address in use");
    assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "keep");
}

/// A live server's socket at --path is never taken over: refused, and
/// the other server keeps its socket.
#[test]
fn a_live_socket_at_path_is_refused_and_left_alone() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("live-path");
    let live = dir.join("live.sock");
    let other = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let inode = std::fs::metadata(&live).unwrap().ino();
    let path = format!("--path={}", live.display());
    rejects(
        &dir,
        &[&path, "true"],
        1,
        &format!("fatal: {} is in use by another server", live.display()),
    );
    assert_eq!(std::fs::metadata(&live).unwrap().ino(), inode);
    std::os::unix::net::UnixStream::connect(&live).unwrap();
    other.accept().unwrap();
}

/// At exit, start_server removes its socket file only if it is still
/// the one it bound: one that replaced it stays.
#[test]
fn a_socket_file_that_replaced_ours_is_not_removed_at_exit() {
    let dir = TempDir::new("replaced-path");
    let sock = dir.join("app.sock");
    let st = dir.join("status");
    let start = || {
        let (path_arg, st_arg) = (
            format!("--path={}", sock.display()),
            format!("--status-file={}", st.display()),
        );
        let server = start_probe(&dir, &[&path_arg, &st_arg, "--interval=0"]);
        wait_status(&st, &[1], &server);
        server
    };
    let mut server = start();
    std::fs::remove_file(&sock).unwrap();
    let _newcomer = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert!(server.stop().success());
    assert!(sock.exists(), "the newcomer's socket file was removed");
    // And our own is removed, when it is still ours.
    std::fs::remove_file(&sock).unwrap();
    let mut server = start();
    assert!(server.stop().success());
    assert!(!sock.exists(), "our socket file was left behind");
}

#[test]
fn a_missing_dir_or_unopenable_log_file_is_rejected() {
    let dir = TempDir::new("bad-dir");
    rejects(
        &dir,
        &["--dir=/nonexistent", "true"],
        1,
        "invalid --dir value '/nonexistent': not a directory",
    );
    rejects(
        &dir,
        &["--log-file=/nonexistent/log", "true"],
        1,
        "unable to open log file /nonexistent/log",
    );
}

#[test]
fn a_first_worker_that_cannot_be_executed_exits_127_or_126() {
    let dir = TempDir::new("cannot-exec");
    let port = format!("--port=127.0.0.1:{}", free_port());
    rejects(
        &dir,
        &[&port, "/nonexistent/server"],
        127,
        "unable to exec /nonexistent/server: No such file or directory",
    );
    rejects(
        &dir,
        &["no-such-command-anywhere"],
        127,
        "unable to exec no-such-command-anywhere: No such file or directory",
    );
    std::fs::write(dir.join("file"), "#!/bin/sh\n").unwrap();
    rejects(&dir, &[&port, &dir.s("file")], 126, "Permission denied");
}

#[test]
fn help_and_version() {
    for flag in ["--help", "-h", "-help"] {
        let out = Command::new(bin()).arg(flag).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--port="));
    }
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn a_second_instance_leaves_the_first_alone() {
    let dir = TempDir::with_mode("second-instance", "run");
    let probe = probe();
    let (pid, sock) = (dir.s("pid"), dir.s("sock"));
    let mut first = Server::start(&[
        "--pid-file",
        &pid,
        "--path",
        &sock,
        "--interval=0",
        &probe,
        &dir.s(""),
    ]);
    first.wait_worker(1);
    wait_for("pid file", &first, || {
        std::fs::read_to_string(&pid).ok().filter(|s| !s.is_empty())
    });
    let out = Command::new(bin())
        .args(["--pid-file", &pid, "--path", &sock, "true"])
        .output()
        .unwrap();
    assert_fails_saying(&out, &format!("another start_server (pid {})", first.pid));
    // The first one's socket file and pid file are intact.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap(),
        format!("{}\n", first.pid)
    );
    assert!(first.stop().success());
}
