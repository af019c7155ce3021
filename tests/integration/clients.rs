//! `--restart` and `--stop`.

use std::process::Command;

use crate::support::*;

fn client(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn restart_waits_for_the_new_generation_and_stop_for_the_exit() {
    let dir = TempDir::new("clients");
    dir.mode("run");
    let probe = example("probe").display().to_string();
    let (pid, st) = (dir.s("pid"), dir.s("status"));
    let mut server = Server::start(&[
        "--interval=0.2",
        "--pid-file",
        &pid,
        "--status-file",
        &st,
        &probe,
        dir.path().to_str().unwrap(),
    ]);
    let first = server.wait_worker(1);
    wait_status(&dir.join("status"), &[1], &server);
    let (code, err) = client(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(0), "{err}\n{}", server.log());
    // It returned only once generation 2 alone was listed.
    let s = status(&dir.join("status"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, 2);
    assert!(!alive(first) || server.log().contains(&format!("old worker {first} died")));

    let (code, err) = client(&["--stop", "--pid-file", &pid]);
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
    let (code, err) = client(&["--stop", "--pid-file", &pid]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "unable to read pid file {pid}: No such file or directory"
        )),
        "{err}"
    );
    let (code, err) = client(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unable to read pid file"), "{err}");
    // A stale pid file: nobody holds its lock.
    std::fs::write(&pid, "999999\n").unwrap();
    std::fs::write(&st, "1:999999\n").unwrap();
    for args in [
        &["--stop", "--pid-file", &pid][..],
        &["--restart", "--pid-file", &pid, "--status-file", &st],
    ] {
        let (code, err) = client(args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(err.contains("start_server is not running"), "{err}");
    }
    let (code, err) = client(&["--restart", "--pid-file", &pid]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--restart option requires --pid-file and --status-file"),
        "{err}"
    );
}

#[test]
fn restart_fails_when_the_status_file_is_missing_or_empty() {
    let dir = TempDir::new("restart-no-status");
    dir.mode("run");
    let probe = example("probe").display().to_string();
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
    let (code, err) = client(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unable to read status file"), "{err}");
    std::fs::write(&st, "").unwrap();
    let (code, err) = client(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no active process found in the status file"),
        "{err}"
    );
    assert!(server.stop().success());
}
