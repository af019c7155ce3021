//! `--restart` and `--stop`.

use crate::support::*;

#[test]
fn restart_waits_for_the_new_generation_and_stop_for_the_exit() {
    let dir = TempDir::with_mode("clients", "run");
    let (mut server, pid, st) = probe_server(&dir, &["--interval=0.2"]);
    let first = server.wait_worker(1);
    wait_status(&dir.join("status"), &[1], &server);
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(0), "{err}\n{}", server.log());
    // It returned only once generation 2 alone was listed.
    let s = status(&dir.join("status"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, 2);
    assert!(!alive(first) || server.log().contains(&format!("old worker {first} died")));

    let Ended { code, err, .. } = run_to_end(&["--stop", "--pid-file", &pid]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("stopping now (pid:{})", server.pid)),
        "{err}"
    );
    // --stop returned after start_server had exited and cleaned up.
    assert!(!dir.join("pid").exists());
    assert!(!dir.join("status").exists());
    assert!(server.wait_exit().success());
}

#[test]
fn clients_fail_clearly_when_nothing_runs() {
    let dir = TempDir::new("clients-fail");
    let (pid, st) = (dir.s("pid"), dir.s("status"));
    let Ended { code, err, .. } = run_to_end(&["--stop", "--pid-file", &pid]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "unable to read pid file {pid}: No such file or directory"
        )),
        "{err}"
    );
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unable to read pid file"), "{err}");
    // A stale pid file: nobody holds its lock.
    std::fs::write(&pid, "999999\n").unwrap();
    std::fs::write(&st, "1:999999\n").unwrap();
    for args in [
        &["--stop", "--pid-file", &pid][..],
        &["--restart", "--pid-file", &pid, "--status-file", &st],
    ] {
        let Ended { code, err, .. } = run_to_end(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(err.contains("start_server is not running"), "{err}");
    }
    let Ended { code, err, .. } = run_to_end(&["--restart", "--pid-file", &pid]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--restart option requires --pid-file and --status-file"),
        "{err}"
    );
}

#[test]
fn restart_fails_when_the_status_file_is_missing_or_empty() {
    let dir = TempDir::with_mode("restart-no-status", "run");
    let probe = probe();
    let pid = dir.s("pid");
    let mut server = Server::start(&[
        "--interval=0",
        "--pid-file",
        &pid,
        &probe,
        dir.path().to_str().unwrap(),
    ]);
    server.wait_worker(1);
    wait_for("pid file", &server, || {
        std::fs::read_to_string(&pid).ok().filter(|s| !s.is_empty())
    });
    let st = dir.s("status");
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unable to read status file"), "{err}");
    std::fs::write(&st, "").unwrap();
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no active process found in the status file"),
        "{err}"
    );
    assert!(server.stop().success());
}

#[test]
fn status_lists_the_workers_and_says_whether_one_serves() {
    let dir = TempDir::with_mode("status-client", "graceful");
    let (pid, st) = (dir.s("pid"), dir.s("status"));
    let args = ["--status", "--pid-file", &pid, "--status-file", &st];
    // A worker that takes long to be up: start_server runs, nothing serves.
    let files = ["--pid-file", &pid, "--status-file", &st];
    let mut server = start_probe(&dir, &[&["--interval=60"][..], &files].concat());
    let first = server.wait_worker(1);
    wait_file_contains(&dir.join("status.state"), " starting 0\n", &server);
    let says = |code: i32, lines: &str, server: &Server| {
        let Ended {
            code: got,
            out,
            err,
        } = run_to_end(&args);
        assert_eq!(got, Some(code), "{out}{err}");
        assert_eq!(out, format!("start_server {} running\n{lines}", server.pid));
    };
    says(
        2,
        &format!("generation 1 pid {first} starting\nno generation serving\n"),
        &server,
    );
    assert!(server.stop().success());
    // Serving: 0, with every generation and its role.
    let mut server = start_probe(
        &dir,
        &[&["--interval=0", "--kill-old-delay=60"][..], &files].concat(),
    );
    let first = server.wait_worker(1);
    wait_status(&dir.join("status"), &[1], &server);
    server.signal("HUP");
    let second = server.wait_worker(2);
    server.wait_line("sleeping 60 secs before killing old workers");
    says(
        0,
        &format!("generation 1 pid {first} serving\ngeneration 2 pid {second} serving\n"),
        &server,
    );
    assert!(server.stop().success());
    // Not running: 1, and one line naming the file.
    let Ended { code, out, err } = run_to_end(&args);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert_eq!(
        err,
        format!("start_server: fatal: unable to read pid file {pid}: No such file or directory\n")
    );
}

#[test]
fn status_names_the_file_it_cannot_read() {
    let dir = TempDir::with_mode("status-unreadable", "run");
    let (mut server, pid, st) = probe_server(&dir, &["--interval=0"]);
    wait_status(&dir.join("status"), &[1], &server);
    // A state file named after another status file: none there.
    let other = dir.s("other");
    let Ended { code, err, .. } =
        run_to_end(&["--status", "--pid-file", &pid, "--status-file", &other]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!(
            "start_server: fatal: unable to read state file {other}.state (beside --status-file): No such file or directory\n"
        )
    );
    // A stale pid file.
    assert!(server.stop().success());
    std::fs::write(&pid, "999999\n").unwrap();
    let Ended { code, err, .. } =
        run_to_end(&["--status", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(err.contains("start_server is not running"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
