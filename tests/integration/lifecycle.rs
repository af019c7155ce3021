//! The lifecycle: start check, HUP restarts, failed starts and backoff,
//! crash respawn, kill-old-delay, auto-restart, shutdown, signals.

use crate::support::*;

#[test]
fn hup_starts_a_new_generation_then_stops_the_old_one() {
    let dir = TempDir::with_mode("hup", "graceful");
    let st = dir.join("status");
    let st_arg = format!("--status-file={}", st.display());
    let pid_arg = format!("--pid-file={}", dir.s("pid"));
    let mut server = start_probe(&dir, &["--interval=0.2", &st_arg, &pid_arg]);
    let first = server.wait_worker(1);
    server.wait_line(&format!(
        "start_server (pid:{}) starting now...",
        server.pid
    ));
    assert_eq!(wait_status(&st, &[1], &server), [(1, first)]);
    let hup = now_ns();
    server.signal("HUP");
    server.wait_line("received HUP, spawning a new worker");
    let second = server.wait_worker(2);
    server.wait_line(&format!(
        "new worker is now running, sending TERM to old workers:{first}"
    ));
    server.wait_line("killing old workers");
    server.wait_line(&format!("old worker {first} died, status:0"));
    assert_eq!(wait_status(&st, &[2], &server), [(2, second)]);
    assert_eq!(dir.stopped_by(1), "15");
    // The old worker got its signal only after the new one was up: at
    // least --interval after the HUP that started it (both stamps from
    // the system clock; a slow machine only widens the gap).
    let stopped = dir.stamp(1, "stopped").expect("the stop stamp");
    assert!(
        stopped >= hup + 200_000_000,
        "signalled {} ms after the HUP, before --interval=0.2 had passed",
        (stopped.saturating_sub(hup)) / 1_000_000
    );
    server.signal("TERM");
    server.wait_line(&format!(
        "received TERM, sending TERM to all workers:{second}"
    ));
    server.wait_line(&format!("worker {second} died, status:0"));
    server.wait_line("exiting");
    assert!(server.wait_exit().success());
    wait_gone(second, &server);
    let left: Vec<String> = dir
        .entries()
        .into_iter()
        .filter(|e| e.ends_with("pid") || e.starts_with("status"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_failed_restart_keeps_the_old_generation_serving() {
    let dir = TempDir::with_mode("failed-restart", "run");
    let st = dir.join("status");
    let st_arg = format!("--status-file={}", st.display());
    let mut server = start_probe(&dir, &["--interval=0.3", &st_arg]);
    let first = server.wait_worker(1);
    wait_status(&st, &[1], &server);
    dir.mode("exit 3");
    server.signal("HUP");
    let failed = server.wait_worker(2);
    server.wait_line(&format!(
        "new worker {failed} seems to have failed to start, exit status:768"
    ));
    // Retried; the old generation is still the one listed and alive.
    server.wait_worker(3);
    assert_eq!(status(&st), [(1, first)]);
    assert!(alive(first));
    // Fix the deployment: the next attempt (HUP makes it immediate) wins.
    dir.mode("run");
    server.signal("HUP");
    server.wait_line("new worker is now running, sending TERM to old workers:");
    server.wait_line(&format!("old worker {first} died, status:15"));
    let s = wait_for("one new generation", &server, || {
        let s = status(&st);
        (s.len() == 1 && s[0].0 > 2).then_some(s)
    });
    assert_ne!(s[0].1, first);
    assert!(server.stop().success());
}

#[test]
fn consecutive_failures_back_off() {
    let dir = TempDir::with_mode("backoff", "exit 1");
    let mut server = start_probe(&dir, &["--interval=0"]);
    // Workers pass the (zero) start check, then die at once: the first
    // three respawns keep the original's pace, then waits double, each
    // said before the attempt it delays.
    server.wait_line("4 failed starts in a row, next attempt in 0.125 s");
    server.wait_line("5 failed starts in a row, next attempt in 0.25 s");
    server.wait_line("6 failed starts in a row, next attempt in 0.5 s");
    server.wait_worker(7);
    let lines = server.lines();
    let at = |needle: &str, nth: usize| {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth - 1)
            .map(|(i, _)| i)
            .unwrap()
    };
    for failures in 4..=6 {
        let said = at(&format!("{failures} failed starts in a row"), 1);
        let next = at("starting new worker", failures + 1);
        assert!(
            said < next,
            "attempt {} came before its wait was said:\n{}",
            failures + 1,
            server.log()
        );
    }
    assert!(server.stop().success());
}

#[test]
fn a_crashed_worker_is_respawned() {
    let dir = TempDir::with_mode("crash", "run");
    let st = dir.join("status");
    let st_arg = format!("--status-file={}", st.display());
    let mut server = start_probe(&dir, &["--interval=0", &st_arg]);
    let first = server.wait_worker(1);
    wait_status(&st, &[1], &server);
    kill("KILL", first);
    server.wait_line(&format!(
        "worker {first} died unexpectedly with status:9, restarting"
    ));
    let second = server.wait_worker(2);
    assert_eq!(wait_status(&st, &[2], &server), [(2, second)]);
    assert!(server.stop().success());
}

#[test]
fn term_during_kill_old_delay_exits_promptly() {
    let dir = TempDir::with_mode("kill-old-delay", "run");
    let mut server = start_probe(&dir, &["--interval=0", "--kill-old-delay=60"]);
    let first = server.wait_worker(1);
    dir.report(1, &server);
    server.signal("HUP");
    let second = server.wait_worker(2);
    server.wait_line("sleeping 60 secs before killing old workers");
    server.signal("TERM");
    let mut both = [first, second];
    both.sort();
    server.wait_line(&format!(
        "received TERM, sending TERM to all workers:{},{}",
        both[0], both[1]
    ));
    // Promptly: wait_exit gives up long before the 60 s delay ends.
    assert!(server.wait_exit().success());
    assert!(!server.lines().iter().any(|l| l == "killing old workers"));
    wait_gone(first, &server);
    wait_gone(second, &server);
}

#[test]
fn fractional_kill_old_delay_then_old_workers_are_signalled() {
    let dir = TempDir::with_mode("fraction", "graceful");
    let mut server = start_probe(
        &dir,
        &[
            "--interval=0",
            "--kill-old-delay=0.25",
            "--signal-on-hup=USR1",
        ],
    );
    server.wait_worker(1);
    dir.report(1, &server);
    server.signal("HUP");
    server.wait_line("new worker is now running, sending USR1 to old workers:");
    server.wait_line("sleeping 0.25 secs before killing old workers");
    server.wait_line("killing old workers");
    // The probe takes USR1's default action (death).
    server.wait_line("old worker");
    assert!(server.stop().success());
}

#[test]
fn signal_on_term_and_int_and_quit_shut_down_gracefully() {
    for (sig, custom, expected) in [
        ("TERM", "--signal-on-term=INT", "2"),
        ("INT", "--signal-on-term=INT", "15"),
        ("QUIT", "", "15"),
    ] {
        let dir = TempDir::with_mode(&format!("shutdown-{sig}"), "graceful");
        let mut extra = vec!["--interval=0"];
        if !custom.is_empty() {
            extra.push(custom);
        }
        let mut server = start_probe(&dir, &extra);
        let w = server.wait_worker(1);
        dir.report(1, &server);
        server.signal(sig);
        server.wait_line(&format!("received {sig}, sending"));
        assert!(server.wait_exit().success(), "{}", server.log());
        assert_eq!(dir.stopped_by(1), expected, "{sig}");
        wait_gone(w, &server);
    }
}

#[test]
fn stray_signals_do_not_kill() {
    let dir = TempDir::with_mode("stray-signals", "run");
    let mut server = start_probe(&dir, &["--interval=0"]);
    server.wait_worker(1);
    dir.report(1, &server);
    for sig in ["ALRM", "VTALRM", "PWR", "TSTP", "PIPE", "USR1", "WINCH"] {
        server.signal(sig);
    }
    server.wait_line("received ALRM, ignored");
    server.wait_line("received USR1, but there is no --log-file to reopen");
    // Still in charge: a restart works.
    server.signal("HUP");
    dir.report(2, &server);
    assert!(server.stop().success());
}

#[test]
fn stubborn_workers_get_kill_on_a_second_term_or_after_stop_timeout() {
    let dir = TempDir::with_mode("stubborn", "stubborn");
    let mut server = start_probe(&dir, &["--interval=0"]);
    let w = server.wait_worker(1);
    dir.report(1, &server);
    server.signal("TERM");
    server.wait_line("received TERM, sending TERM");
    server.signal("TERM");
    server.wait_line(&format!(
        "received TERM again, sending KILL to all workers:{w}"
    ));
    assert_eq!(
        server.wait_exit().code(),
        Some(2),
        "a worker had to be killed"
    );
    wait_gone(w, &server);

    let dir = TempDir::with_mode("stop-timeout", "stubborn");
    let mut server = start_probe(&dir, &["--interval=0", "--stop-timeout=0.2"]);
    let w = server.wait_worker(1);
    dir.report(1, &server);
    server.signal("INT");
    server.wait_line(&format!(
        "workers still running after --stop-timeout, sending KILL to all workers:{w}"
    ));
    server.wait_line(&format!("worker {w} died, status:9"));
    assert_eq!(
        server.wait_exit().code(),
        Some(2),
        "a worker had to be killed"
    );
}

#[test]
fn auto_restart_restarts_periodically() {
    let dir = TempDir::with_mode("auto-restart", "run");
    let mut server = start_probe(
        &dir,
        &[
            "--interval=0",
            "--enable-auto-restart",
            "--auto-restart-interval=0.3",
            "--kill-old-delay=0",
        ],
    );
    server.wait_worker(1);
    server.wait_line("autorestart triggered (interval=0.3)");
    server.wait_worker(2);
    server.wait_line("killing old workers");
    // And again, from the new generation.
    server.wait_line_n("autorestart triggered (interval=0.3)", 2);
    server.wait_worker(3);
    server.wait_line_n("killing old workers", 2);
    assert!(server.stop().success());
}

#[test]
fn a_burst_of_hups_folds_into_a_follow_up_restart() {
    let dir = TempDir::with_mode("hup-burst", "run");
    let st = dir.join("status");
    let st_arg = format!("--status-file={}", st.display());
    let mut server = start_probe(&dir, &["--interval=0.2", &st_arg]);
    server.wait_worker(1);
    wait_status(&st, &[1], &server);
    for _ in 0..5 {
        server.signal("HUP");
    }
    // However the HUPs fold, the last one is acted on after the first
    // restart completes, and in the end one generation is left.
    server.wait_line("received HUP while a new worker is starting, will restart once that is done");
    let s = wait_for("a single generation newer than 2", &server, || {
        let s = status(&st);
        (s.len() == 1 && s[0].0 > 2 && server.count("old worker") >= 2).then_some(s)
    });
    assert!(s[0].0 <= 6, "{s:?}");
    assert!(server.stop().success());
}

#[test]
fn children_we_did_not_spawn_are_reaped_quietly() {
    let dir = TempDir::with_mode("orphans", "run");
    let probe = probe();
    // The shell's background child becomes start_server's child at exec.
    let script = format!(
        "sleep 0.3 & echo \"stray $!\" >&2; exec {} --interval=0 {probe} {}",
        bin().display(),
        dir.path().display()
    );
    let mut server = Server::spawn(std::process::Command::new("sh").args(["-c", &script]));
    let stray: u32 = server
        .wait_line("stray ")
        .trim_start_matches("stray ")
        .parse()
        .unwrap();
    let w = server.wait_worker(1);
    wait_gone(stray, &server);
    assert_eq!(server.count("died"), 0, "{}", server.log());
    assert!(alive(w));
    assert!(server.stop().success());
}

#[test]
fn usr1_reopens_the_log_file() {
    let dir = TempDir::with_mode("reopen", "run");
    let log = dir.join("log");
    let log_arg = format!("--log-file={}", log.display());
    let mut server = start_probe(&dir, &["--interval=0", &log_arg]);
    // Before the redirect, the banner goes to our stderr.
    server.wait_line("starting now...");
    wait_file_contains(&log, "starting new worker", &server);
    std::fs::rename(&log, dir.join("log.1")).unwrap();
    server.signal("USR1");
    wait_file_contains(&log, "reopened log file", &server);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("exiting"), "{text}");
}

#[test]
fn a_log_command_receives_the_output() {
    let dir = TempDir::with_mode("log-pipe", "run");
    let log = dir.join("piped");
    let log_arg = format!("--log-file=| cat >> {}", log.display());
    let mut server = start_probe(&dir, &["--interval=0", &log_arg]);
    server.wait_line("starting now...");
    wait_file_contains(&log, "starting new worker", &server);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    // start_server waited for the log command to drain.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("exiting"), "{text}");
}

#[test]
fn daemonize_detaches_and_reports_the_first_start() {
    let dir = TempDir::with_mode("daemonize", "run");
    let probe = probe();
    let (pid, log) = (dir.s("pid"), dir.s("log"));
    succeeds(std::process::Command::new(bin()).args([
        "--daemonize",
        "--interval=0",
        "--pid-file",
        &pid,
        "--log-file",
        &log,
        &probe,
        dir.path().to_str().unwrap(),
    ]));
    let daemon: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(daemon));
    let stop = std::process::Command::new(bin())
        .args(["--stop", "--pid-file", &pid])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!dir.join("pid").exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("exiting"), "{text}");

    // A first worker that cannot run fails the command, even daemonized.
    let out = std::process::Command::new(bin())
        .args([
            "--daemonize",
            "--pid-file",
            &pid,
            "--log-file",
            &log,
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(!dir.join("pid").exists());
}

#[test]
fn as_pid_1_orphans_are_reaped_and_term_shuts_down() {
    let true = tool_or_skip("unshare", &["--version"], "util-linux") else {
        return;
    };
    let dir = TempDir::with_mode("pid1", "run");
    let probe = probe();
    // The worker's subshell leaves an orphan, which lands on PID 1: it
    // lives until the test writes to its FIFO.
    let fifo = dir.s("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let script = format!(
        "(exec cat {fifo} >/dev/null &); exec {probe} {}",
        dir.path().display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--"])
        .arg(bin())
        .args(["--interval=0", "--", "sh", "-c", &script]);
    let Some(mut server) = start_in_pid_namespace(&mut cmd) else {
        return;
    };
    dir.report(1, &server);
    let init = children(server.pid)[0];
    wait_for("the worker and the orphan under PID 1", &server, || {
        (children(init).len() == 2).then_some(())
    });
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    wait_for("the orphan to be reaped", &server, || {
        (children(init).len() == 1).then_some(())
    });
    assert_eq!(server.count("died"), 0, "{}", server.log());
    kill("TERM", init);
    server.wait_line("exiting");
    assert!(server.wait_exit().success());
}

#[test]
fn a_log_command_that_stops_reading_never_stalls_start_server() {
    let dir = TempDir::with_mode("stuck-log", "run");
    let st = dir.join("status");
    let st_arg = format!("--status-file={}", st.display());
    let mut server = start_probe(
        &dir,
        &["--interval=0", &st_arg, "--log-file=| exec sleep 987654"],
    );
    wait_status(&st, &[1], &server);
    // Each USR2 is a log line; thousands fill the 64 KiB pipe.
    let flood = format!(
        "i=0; while [ $i -lt 4000 ]; do kill -USR2 {}; i=$((i+1)); done",
        server.pid
    );
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &flood])
            .status()
            .unwrap()
            .success()
    );
    server.signal("HUP");
    wait_status(&st, &[2], &server);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    // The log command, which ignored end-of-file, was stopped too.
    let logger_left = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.windows(6).any(|w| w == b"987654"))
    });
    assert!(!logger_left, "the log command was left running");
}

/// --pdeathsig: when start_server is killed (SIGKILL, as the OOM killer
/// does), its worker gets the signal (the example server stops on TERM),
/// so that the port is free for the next start_server at once. A live
/// upgrade in between is no death: the worker lives on through it, and the
/// request stays in force after it.
#[test]
fn with_pdeathsig_a_killed_start_servers_worker_goes_and_frees_the_port() {
    let dir = TempDir::new("pdeathsig");
    let addr = format!("127.0.0.1:{}", free_port());
    let port = format!("--port={addr}");
    let st = format!("--status-file={}", dir.s("status"));
    let hello = example("hello").display().to_string();
    let args = [
        &port[..],
        &st,
        "--readiness=notify",
        "--pdeathsig=TERM",
        "--",
        &hello,
    ];
    let mut server = Server::start(&args);
    let worker = wait_status(&dir.join("status"), &[1], &server)[0].1;
    server.signal("USR2");
    server.wait_line("upgraded in place");
    assert_serves(&addr, "hello from generation 1");
    assert!(alive(worker), "the upgrade killed the worker");
    kill("KILL", server.pid);
    server.wait_exit();
    wait_for("the worker to go on its parent's death", &server, || {
        (!alive(worker)).then_some(())
    });
    let mut next = Server::start(&args);
    // The status file the killed one left says generation 1 too.
    wait_for("the new worker in the status file", &next, || {
        let s = status(&dir.join("status"));
        (s.len() == 1 && s[0].1 != worker).then_some(())
    });
    assert_serves(&addr, "hello from generation 1");
    assert!(next.stop().success());
}
