//! What a worker receives: SERVER_STARTER_PORT and _GENERATION, exactly
//! the sockets and nothing else, a clean signal state, the envdir, --dir.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// The worker's ignored signals, but SIGPIPE, which the probe's own Rust
/// runtime ignores before its main runs.
fn ignored(report: &std::collections::HashMap<String, String>) -> u64 {
    u64::from_str_radix(&report["sigign"], 16).unwrap() & !(1 << (13 - 1))
}

#[test]
fn the_worker_gets_the_sockets_and_nothing_else() {
    let dir = TempDir::new("worker-env");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let sock = dir.s("app.sock");
    let probe = probe();
    let ports = [
        format!("--port={p1}"),
        format!("--port=127.0.0.1:{p2}"),
        format!("--port=[::1]:{p3}"),
        format!("--port=127.0.0.1:u{p2}"),
        format!("--port=localhost:{p3}=9"),
    ];
    let mut args: Vec<&str> = ports.iter().map(String::as_str).collect();
    args.extend([
        "--path",
        &sock,
        "--interval=0",
        "--",
        &probe,
        dir.path().to_str().unwrap(),
    ]);
    let mut server = Server::start(&args);
    let report = dir.report(1, &server);
    server.wait_line("socket is duplicated to file descriptor 9");
    let port = &report["env.SERVER_STARTER_PORT"];
    let pairs: Vec<(&str, &str)> = port
        .split(';')
        .map(|p| p.rsplit_once('=').unwrap())
        .collect();
    let names: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let expected_names = [
        p1.to_string(),
        format!("127.0.0.1:{p2}"),
        format!("[::1]:{p3}"),
        format!("127.0.0.1:{p2}"),
        format!("localhost:{p3}"),
        sock.clone(),
    ];
    assert_eq!(names, expected_names, "{port}");
    assert_eq!(pairs[4].1, "9", "{port}");
    assert_eq!(report["env.SERVER_STARTER_GENERATION"], "1");
    // Descriptors: stdio and exactly the sockets.
    let mut expected_fds: Vec<u32> = pairs.iter().map(|p| p.1.parse().unwrap()).collect();
    expected_fds.extend([0, 1, 2]);
    expected_fds.sort();
    let fds: Vec<u32> = report["fds"]
        .split(',')
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fds, expected_fds, "{report:?}");
    assert_eq!(report["sigblk"], "0000000000000000");
    assert_eq!(ignored(&report), 0);
    // The unix socket is world-connectable and works.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o777, "{mode:o}");
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    assert!(server.stop().success());
    assert!(!dir.join("app.sock").exists(), "socket file left behind");
}

#[test]
fn no_port_gives_an_empty_variable_and_the_settings_are_exported() {
    let dir = TempDir::new("no-port");
    let probe = probe();
    let mut server = Server::start(&[
        "--interval=0",
        "--kill-old-delay=2",
        &probe,
        dir.path().to_str().unwrap(),
    ]);
    let report = dir.report(1, &server);
    assert_eq!(report["env.SERVER_STARTER_PORT"], "");
    assert_eq!(report["env.KILL_OLD_DELAY"], "2");
    assert_eq!(report["fds"], "0,1,2");
    assert!(server.stop().success());
}

#[test]
fn stray_descriptors_and_ignored_signals_do_not_reach_the_worker() {
    let dir = TempDir::new("strays");
    let probe = probe();
    // The shell leaks descriptor 7 and ignores HUP and PIPE before exec.
    let script = format!(
        "trap '' HUP PIPE; exec 7</dev/null; exec {} --interval=0 {probe} {}",
        bin().display(),
        dir.path().display()
    );
    let mut server = Server::spawn(std::process::Command::new("sh").args(["-c", &script]));
    let report = dir.report(1, &server);
    assert_eq!(report["fds"], "0,1,2");
    assert_eq!(ignored(&report), 0);
    // And HUP, ignored by our parent, still restarts.
    server.signal("HUP");
    dir.report(2, &server);
    assert!(server.stop().success());
}

/// A descriptor start_server inherits and does not use is closed once it
/// is up: the reader of a pipe left open to it sees end-of-file.
#[test]
fn inherited_descriptors_are_closed_at_start_up() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = TempDir::new("strays-closed");
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Opened first without blocking, so that the shell's open for
    // writing does not wait for a reader.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let probe = probe();
    let script = format!(
        "exec {} --interval=0 {probe} {} 9>{}",
        bin().display(),
        dir.path().display(),
        fifo.display()
    );
    let mut server = Server::spawn(std::process::Command::new("sh").args(["-c", &script]));
    dir.report(1, &server);
    wait_for("end-of-file on the inherited pipe", &server, || {
        let mut buf = [0u8; 16];
        match reader.read(&mut buf) {
            Ok(0) => Some(()),
            _ => None,
        }
    });
    assert!(server.stop().success());
}

#[test]
fn the_worker_starts_in_dir_and_gets_the_envdir_read_afresh() {
    let dir = TempDir::new("envdir");
    let envdir = make_envdir(
        &dir,
        &[
            ("GREETING", "hello\nignored second line\n"),
            ("DOOMED", "soon gone"),
            (".hidden", "no"),
        ],
    );
    let probe = probe();
    let mut server = Server::start(&[
        "--interval=0",
        "--dir=/tmp",
        &format!("--envdir={}", envdir.display()),
        &probe,
        dir.path().to_str().unwrap(),
    ]);
    let report = dir.report(1, &server);
    assert_eq!(report["cwd"], "/tmp");
    assert_eq!(report["env.GREETING"], "hello");
    assert_eq!(report["env.DOOMED"], "soon gone");
    assert!(!report.contains_key("env..hidden"));
    std::fs::write(envdir.join("GREETING"), "bonjour").unwrap();
    std::fs::remove_file(envdir.join("DOOMED")).unwrap();
    server.signal("HUP");
    let report = dir.report(2, &server);
    assert_eq!(report["env.GREETING"], "bonjour");
    assert!(
        !report.contains_key("env.DOOMED"),
        "a removed file must remove the variable"
    );
    assert!(server.stop().success());
}

/// A variable both inherited and in the envdir reaches the worker once,
/// with the envdir's value, as under the original.
#[test]
fn the_envdir_replaces_inherited_variables() {
    let run = |bin: &str| {
        let dir = TempDir::new("envdir-over");
        let envdir = dir.join("env");
        std::fs::create_dir(&envdir).unwrap();
        std::fs::write(envdir.join("GREETING"), "from the envdir\n").unwrap();
        std::fs::write(envdir.join("PATH"), "/envdir/bin:/usr/bin:/bin\n").unwrap();
        let probe = probe();
        let server = Server::spawn(
            std::process::Command::new(bin)
                .args([
                    "--interval=0",
                    &format!("--envdir={}", envdir.display()),
                    &probe,
                    dir.path().to_str().unwrap(),
                ])
                .env("GREETING", "inherited")
                .env("PATH", "/usr/bin:/bin"),
        );
        let pid: u32 = dir.report(1, &server)["pid"].parse().unwrap();
        let environ = raw_environ(pid);
        let mut names: Vec<&String> = environ.iter().map(|(k, _)| k).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "{bin}: a name twice in {environ:?}");
        (env_var(&environ, "GREETING"), env_var(&environ, "PATH"))
    };
    let ours = run(bin().to_str().unwrap());
    assert_eq!(
        ours,
        (
            Some("from the envdir".to_string()),
            Some("/envdir/bin:/usr/bin:/bin".to_string())
        )
    );
    if perl_or_skip() {
        assert_eq!(ours, run(PERL));
    }
}

#[test]
fn workers_get_systemd_and_einhorn_variables() {
    let dir = TempDir::new("protocols");
    let port = free_port();
    let sock = dir.s("s.sock");
    let probe = probe();
    let d = dir.path().to_str().unwrap();
    let spec = format!("--port=127.0.0.1:{port}");
    let mut server = Server::start(&[
        "--interval=0",
        &spec,
        "--path",
        &sock,
        "--fd-names=web",
        &probe,
        d,
    ]);
    let r = dir.report(1, &server);
    assert_eq!(
        r["env.SERVER_STARTER_PORT"],
        format!("127.0.0.1:{port}=3;{sock}=4")
    );
    assert_eq!(r["env.LISTEN_FDS"], "2");
    assert_eq!(
        r["env.LISTEN_PID"], r["pid"],
        "LISTEN_PID is the worker's own pid"
    );
    assert_eq!(r["env.LISTEN_FDNAMES"], format!("web:{sock}"));
    assert_eq!(r["env.EINHORN_FD_COUNT"], "2");
    assert_eq!(
        (
            r["env.EINHORN_FD_0"].as_str(),
            r["env.EINHORN_FD_1"].as_str()
        ),
        ("3", "4")
    );
    assert_eq!(r["env.EINHORN_FDS"], "3 4");
    assert_eq!(r["fds"], "0,1,2,3,4");
    // einhorn's control socket is --readiness=einhorn's alone.
    for name in ["env.EINHORN_MASTER_PID", "env.EINHORN_SOCK_PATH"] {
        assert!(!r.contains_key(name), "{name} set");
    }
    assert!(server.stop().success());

    // Only the protocols asked for.
    let dir = TempDir::new("protocols-einhorn");
    let d = dir.path().to_str().unwrap();
    let mut server = Server::start(&["--interval=0", &spec, "--protocols=einhorn", &probe, d]);
    let r = dir.report_of("none", &server);
    assert_eq!(r["env.EINHORN_FDS"], "3");
    for absent in [
        "env.SERVER_STARTER_PORT",
        "env.SERVER_STARTER_GENERATION",
        "env.LISTEN_FDS",
        "env.LISTEN_PID",
    ] {
        assert!(!r.contains_key(absent), "{absent} in {r:?}");
    }
    assert!(server.stop().success());

    // A placement that breaks the 3, 4, ... layout: no LISTEN_FDS at all.
    let dir = TempDir::new("protocols-placed");
    let d = dir.path().to_str().unwrap();
    let placed = format!("--port=127.0.0.1:{port}=7");
    let mut server = Server::start(&["--interval=0", &placed, &probe, d]);
    let r = dir.report(1, &server);
    assert_eq!(r["env.SERVER_STARTER_PORT"], format!("127.0.0.1:{port}=7"));
    assert_eq!(r["env.EINHORN_FDS"], "7");
    assert!(
        !r.contains_key("env.LISTEN_FDS") && !r.contains_key("env.LISTEN_PID"),
        "{r:?}"
    );
    assert!(server.stop().success());
}

#[test]
fn variables_handed_to_start_server_are_not_passed_on_stale() {
    let dir = TempDir::new("stale-vars");
    let probe = probe();
    let mut server = Server::spawn(
        std::process::Command::new(bin())
            .env("LISTEN_FDS", "2")
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDNAMES", "a:b")
            .env("NOTIFY_SOCKET", "/nonexistent/notify")
            .env("EINHORN_FDS", "9")
            .env("EINHORN_FD_COUNT", "1")
            .env("EINHORN_FD_0", "9")
            .args(["--interval=0", &probe, dir.path().to_str().unwrap()]),
    );
    let r = dir.report(1, &server);
    // The report has the worker's environment in it (a change of its keys
    // would make every check below pass).
    assert_eq!(r["env.SERVER_STARTER_GENERATION"], "1", "{r:?}");
    for stale in [
        "env.LISTEN_FDS",
        "env.LISTEN_PID",
        "env.LISTEN_FDNAMES",
        "env.NOTIFY_SOCKET",
        "env.EINHORN_FDS",
        "env.EINHORN_FD_COUNT",
        "env.EINHORN_FD_0",
    ] {
        assert!(!r.contains_key(stale), "{stale} passed on: {r:?}");
    }
    assert!(server.stop().success());
}

#[test]
fn a_worker_that_replaces_fd_3_harms_only_itself() {
    let dir = TempDir::new("fd3");
    let port = free_port();
    let probe = probe();
    let st = dir.join("status");
    // Generation 1 puts /dev/null on descriptor 3 before it runs.
    let script = format!(
        "if [ \"$SERVER_STARTER_GENERATION\" = 1 ]; then exec 3</dev/null; fi; exec {probe} {}",
        dir.path().display()
    );
    let mut server = Server::start(&[
        &format!("--port=127.0.0.1:{port}"),
        &format!("--status-file={}", st.display()),
        "--interval=0",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(dir.report(1, &server)["fd3"], "/dev/null");
    server.signal("HUP");
    let second = dir.report(2, &server);
    assert!(second["fd3"].starts_with("socket:"), "{second:?}");
    wait_status(&st, &[2], &server);
    assert!(server.stop().success());
}

#[test]
fn the_worker_library_says_when_a_descriptor_is_not_a_socket() {
    // A server told that /dev/null on descriptor 3 is a socket.
    let hello = example("hello");
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("exec 3</dev/null; exec {}", hello.display())])
        .env("SERVER_STARTER_PORT", "8080=3")
        .output()
        .unwrap();
    assert_fails_saying(&out, "descriptor 3 (8080) is not a socket");
}

#[test]
fn user_runs_workers_as_that_user() {
    let true = root_or_skip("--user=nobody") else {
        return;
    };
    let dir = TempDir::new("user");
    let probe = copy_for_all(&dir, &example("probe"), "probe");
    // The worker, as nobody, reaches the notification socket too.
    dir.mode("notify");
    let mut server = Server::start(&[
        "--readiness=notify",
        "--user=nobody",
        probe.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    let r = dir.report(1, &server);
    assert_eq!(
        (r["uid"].as_str(), r["gid"].as_str(), r["groups"].as_str()),
        ("65534", "65534", "65534")
    );
    server.wait_line("is ready");
    assert!(server.stop().success());
    let out = std::process::Command::new(bin())
        .args(["--user=no-such-user-here", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown user 'no-such-user-here'"));
}
