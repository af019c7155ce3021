//! Nothing escapes and nothing hangs: process groups, the subreaper and
//! the sweep at shutdown, --drain-timeout, --start-retries,
//! --shutdown-delay and the exit statuses, as a plain process and as PID 1
//! of a pid namespace. (The same in a real container: `container.rs`.)

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::support::*;

/// A field of /proc/PID/stat after the command name: 1 is the parent,
/// 2 the process group, 3 the session.
fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n)?.parse().ok()
}

/// The pid a probe's helper wrote, once it has.
fn helper_pid(dir: &TempDir, generation: u64, server: &Server) -> u32 {
    let path = dir.join(&format!("{generation}.helper"));
    wait_for("the helper's pid", server, || {
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    })
}

#[test]
fn drain_timeout_kills_an_old_worker_that_ignores_its_signal() {
    let dir = TempDir::with_mode("drain", "stubborn");
    let (mut server, pid, st) = probe_server(&dir, &["--interval=0", "--drain-timeout=0.3"]);
    let old = server.wait_worker(1);
    dir.report(1, &server);
    wait_status(&dir.join("status"), &[1], &server);
    dir.mode("graceful");
    // --restart returns: the old worker does not keep it waiting.
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(0), "{err}\n{}", server.log());
    server.wait_line(&format!(
        "old worker {old} still running 0.3 s after TERM, sending KILL (--drain-timeout)"
    ));
    server.wait_line(&format!("old worker {old} died, status:9"));
    wait_gone(old, &server);
    assert_eq!(server.stop().code(), Some(0), "{}", server.log());
    assert_eq!(dir.stopped_by(2), "15");
}

#[test]
fn stubborn_workers_at_shutdown_make_the_exit_status_2() {
    let dir = TempDir::with_mode("killed-status", "stubborn");
    let mut server = Server::start(&[
        "--interval=0",
        "--stop-timeout=0.2",
        "--",
        &probe(),
        dir.path().to_str().unwrap(),
    ]);
    server.wait_worker(1);
    dir.report(1, &server);
    server.signal("TERM");
    assert_eq!(server.wait_exit().code(), Some(2), "{}", server.log());
    server.wait_line("exiting with status 2: workers had to be killed");
}

#[test]
fn a_worker_leads_its_own_group_so_a_terminal_interrupt_reaches_only_start_server() {
    let dir = TempDir::with_mode("groups", "graceful");
    // start_server leads a group, as a shell's foreground job does; ^C
    // sends SIGINT to that whole group.
    let mut cmd = Command::new(bin());
    cmd.args(["--interval=0", "--", &probe(), dir.path().to_str().unwrap()])
        .process_group(0);
    let mut server = Server::spawn(&mut cmd);
    let w = server.wait_worker(1);
    dir.report(1, &server);
    assert_eq!(stat_field(w, 2), Some(w), "the worker leads its group");
    assert_eq!(stat_field(server.pid, 2), Some(server.pid));
    kill("INT", 0u32.wrapping_sub(server.pid));
    server.wait_line(&format!("received INT, sending TERM to all workers:{w}"));
    assert!(server.wait_exit().success(), "{}", server.log());
    // The worker got TERM from start_server, never the INT.
    assert_eq!(dir.stopped_by(1), "15");
}

/// A wrapper shell that runs the probe as its child and does not pass
/// signals on.
fn wrapped(dir: &TempDir) -> String {
    format!("{} {}; true", probe(), dir.path().display())
}

#[test]
fn signal_group_reaches_what_a_wrapper_started() {
    for group in [true, false] {
        let dir = TempDir::with_mode(&format!("signal-group-{group}"), "graceful");
        let script = wrapped(&dir);
        let mut args = vec!["--interval=0", "--", "sh", "-c", &script];
        if group {
            args.insert(0, "--signal-group");
        }
        let mut server = Server::start(&args);
        let w = server.wait_worker(1);
        let first: u32 = dir.report(1, &server)["pid"].parse().unwrap();
        assert_ne!(first, w, "the probe runs under the shell");
        server.signal("HUP");
        dir.report(2, &server);
        server.wait_line(&format!("old worker {w} died"));
        if group {
            // The old generation's probe got the signal too.
            wait_gone(first, &server);
            assert_eq!(dir.stopped_by(1), "15");
        } else {
            // Only the shell did: the probe lives on, an orphan, until
            // start_server stops what the workers left behind.
            assert!(alive(first));
            assert_eq!(stat_field(first, 1), Some(server.pid));
        }
        server.signal("TERM");
        assert!(server.wait_exit().success(), "{}", server.log());
        assert_eq!(dir.stopped_by(1), "15");
        assert_eq!(dir.stopped_by(2), "15");
        assert!(!alive(first));
    }
}

/// A worker's helper in a session of its own comes back to start_server
/// when its worker exits, and gets TERM before start_server exits.
fn helpers_come_back_and_are_stopped(server: &mut Server, dir: &TempDir, me: u32) {
    server.wait_worker(1);
    dir.report(1, server);
    let first = helper_pid(dir, 1, server);
    assert_eq!(stat_field(first, 3), Some(first), "a session of its own");
    server.signal("HUP");
    dir.report(2, server);
    let second = helper_pid(dir, 2, server);
    server.wait_line("old worker");
    wait_for("the orphaned helper to come back", server, || {
        (stat_field(first, 1) == Some(me)).then_some(())
    });
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.log());
    let (a, b) = (first.min(second), first.max(second));
    assert_eq!(server.count("left behind"), 1, "{}", server.log());
    assert!(
        server.log().contains(&format!("left behind:{a},{b}")),
        "{}",
        server.log()
    );
    for g in [1, 2] {
        assert!(
            dir.join(&format!("{g}.helper-stopped")).exists(),
            "helper {g} got no TERM\n{}",
            server.log()
        );
    }
    assert_eq!(server.count(" died"), 2, "orphans are reaped quietly");
}

#[test]
fn orphaned_helpers_come_back_to_start_server_and_are_stopped_with_it() {
    let dir = TempDir::with_mode("subreaper", "graceful helper");
    let mut server = Server::start(&[
        "--interval=0",
        "--signal-on-hup=TERM",
        "--",
        &probe(),
        dir.path().to_str().unwrap(),
    ]);
    let me = server.pid;
    helpers_come_back_and_are_stopped(&mut server, &dir, me);
}

#[test]
fn as_pid_1_with_its_own_proc_helpers_are_stopped_too() {
    let dir = TempDir::with_mode("pid1-sweep", "graceful helper");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .arg(bin())
        .args(["--interval=0", "--", &probe(), dir.path().to_str().unwrap()]);
    let Some(server) = start_in_pid_namespace(&mut cmd) else {
        return;
    };
    // Signals go to start_server (pid 1 inside), not to unshare.
    let init = wait_for("pid 1 of the namespace", &server, || {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.pid))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    });
    let mut inner = InnerServer {
        outer: server,
        init,
    };
    inner.run(&dir);
}

/// start_server as PID 1 under unshare: signals go to its host pid.
struct InnerServer {
    outer: Server,
    init: u32,
}

impl InnerServer {
    fn run(&mut self, dir: &TempDir) {
        let s = &mut self.outer;
        s.wait_worker(1);
        dir.report(1, s);
        let first = helper_pid(dir, 1, s);
        kill("HUP", self.init);
        dir.report(2, s);
        let second = helper_pid(dir, 2, s);
        s.wait_line("old worker");
        kill("TERM", self.init);
        assert!(s.wait_exit().success(), "{}", s.log());
        assert_eq!(s.count("left behind"), 1, "{}", s.log());
        // The helpers' own pids (the namespace's, as both sides see them).
        let (a, b) = (first.min(second), first.max(second));
        assert!(
            s.log().contains(&format!("left behind:{a},{b}")),
            "{}",
            s.log()
        );
        for g in [1, 2] {
            assert!(
                dir.join(&format!("{g}.helper-stopped")).exists(),
                "helper {g} got no TERM\n{}",
                s.log()
            );
        }
    }
}

#[test]
fn start_retries_spent_with_nothing_serving_exits_3_and_leaves_nothing() {
    let dir = TempDir::with_mode("give-up", "exit 1");
    let (mut server, _, _) = probe_server(&dir, &["--interval=0", "--start-retries=2"]);
    assert_eq!(server.wait_exit().code(), Some(3), "{}", server.log());
    assert_eq!(server.count("starting new worker"), 3);
    server.wait_line(
        "3 failed starts in a row and no generation serving, giving up (--start-retries=2)",
    );
    let left: Vec<String> = dir
        .entries()
        .into_iter()
        .filter(|e| !e.ends_with(".report") && e != "mode")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn start_retries_spent_during_a_restart_keeps_the_old_generation_and_restart_fails() {
    let dir = TempDir::with_mode("give-up-restart", "run");
    // An --interval the failing worker cannot pass: with 0, a worker whose
    // program runs counts as up at once, and the old one is signalled.
    let (mut server, pid, st) = probe_server(&dir, &["--interval=1", "--start-retries=1"]);
    let first = server.wait_worker(1);
    wait_status(&dir.join("status"), &[1], &server);
    dir.mode("exit 1");
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(1), "{err}\n{}", server.log());
    assert!(err.contains("gave up the restart"), "{err}");
    server.wait_line(&format!(
        "2 failed starts in a row, giving up the restart (--start-retries=1): generation 1 (pid {first}) goes on serving"
    ));
    assert!(alive(first));
    assert_eq!(status(&dir.join("status")), [(1, first)]);
    let state = std::fs::read_to_string(dir.join("status.state")).unwrap();
    assert!(
        state.contains(&format!("\n1 {first} serving 0\n")),
        "{state}"
    );
    // Fixed: the next restart goes through.
    dir.mode("run");
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(code, Some(0), "{err}\n{}", server.log());
    assert!(server.stop().success());
    assert!(!dir.join("status.state").exists());
}

#[test]
fn shutdown_delay_keeps_serving_then_stops_gracefully() {
    let dir = TempDir::new("shutdown-delay");
    let (_, addr) = free_addr();
    let port_arg = format!("--port={addr}");
    let mut server = Server::start(&[
        &port_arg,
        "--interval=0",
        "--shutdown-delay=3",
        "--",
        example("hello").to_str().unwrap(),
    ]);
    let w = server.wait_worker(1);
    wait_for("the server to answer", &server, || get(&addr).ok());
    let asked = std::time::Instant::now();
    server.signal("TERM");
    server.wait_line(
        "received TERM, serving 3 s more before stopping the workers (--shutdown-delay)",
    );
    // Still answering during the delay: a request made after it began
    // is served before the workers are told to stop.
    assert!(get(&addr).is_ok(), "{}", server.log());
    let answered = std::time::Instant::now();
    let stopping = server.line_arrival(&format!("received TERM, sending TERM to all workers:{w}"));
    assert!(answered < stopping, "{}", server.log());
    // For its whole duration: the line that ends it arrives (on the
    // test's clock) no sooner than 3 s after TERM was sent.
    assert!(
        stopping.duration_since(asked) >= std::time::Duration::from_secs(3),
        "{}",
        server.log()
    );
    assert!(server.wait_exit().success(), "{}", server.log());
    drop(dir);
}
