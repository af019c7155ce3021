//! start_server under a service manager: a stand-in for systemd that
//! activates it with a listening socket, listens on NOTIFY_SOCKET and
//! logs every message with the CLOCK_MONOTONIC time it arrived, as the
//! man page's unit files (Type=notify-reload, or Type=notify with
//! ExecReload=start_server --restart; KillMode=mixed) have it run.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// The stand-in: binds NOTIFY_SOCKET (a path, or `@name`) and a TCP
/// socket on 127.0.0.1:PORT, starts the command with the socket on
/// descriptor 3 (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES=web), and writes
/// `<monotonic ns> <message, newlines as |>` to LOG for every message
/// until the command exits, with whose status it exits. LOG.started has
/// the CLOCK_MONOTONIC time before the command starts.
const SYSTEMD: &str = r#"
import os, select, socket, sys, time
address, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
argv = sys.argv[4:]
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.bind(address.replace('@', '\0', 1))
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', port))
l.listen(16)
with open(log_path + '.started', 'w') as f:
    f.write('%d' % time.monotonic_ns())
pid = os.fork()
if pid == 0:
    os.dup2(l.fileno(), 3)
    os.set_inheritable(3, True)
    env = dict(os.environ, LISTEN_FDS='1', LISTEN_PID=str(os.getpid()),
               LISTEN_FDNAMES='web', NOTIFY_SOCKET=address)
    os.execve(argv[0], argv, env)
l.close()
exited = os.pidfd_open(pid)
log = open(log_path, 'a')
def drain():
    while True:
        try:
            msg = n.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        log.write('%d %s\n' % (time.monotonic_ns(), msg.decode().replace('\n', '|')))
        log.flush()
while True:
    ready, _, _ = select.select([n, exited], [], [])
    drain()
    if exited in ready:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// start_server (with `args`) under the stand-in, notified at `address`.
fn under_systemd(address: &str, port: u16, log: &Path, args: &[&str]) -> Server {
    under_systemd_with(address, port, log, args, &[])
}

/// The same, with `env` set for start_server (WATCHDOG_USEC, ...).
fn under_systemd_with(
    address: &str,
    port: u16,
    log: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> Server {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SYSTEMD, address, &port.to_string()])
        .arg(log)
        .arg(bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    Server::spawn(&mut cmd)
}

/// The probe under start_server (with a pid file, `options` and `env`)
/// under the stand-in, in a directory of its own: the directory, the
/// stand-in's log, and the stand-in.
fn probe_under_systemd(
    name: &str,
    options: &[&str],
    env: &[(&str, String)],
) -> (TempDir, std::path::PathBuf, Server) {
    let dir = TempDir::with_mode(name, "graceful");
    let (port, log) = (free_port(), dir.join("notify.log"));
    let (probe, pid_file) = (probe(), format!("--pid-file={}", dir.s("pid")));
    let mut args = options.to_vec();
    args.extend([&pid_file[..], "--", &probe, dir.path().to_str().unwrap()]);
    let server = under_systemd_with(&dir.s("notify"), port, &log, &args, env);
    (dir, log, server)
}

/// start_server's pid, from the pid file in `dir`.
fn main_pid(dir: &TempDir, server: &Server) -> u32 {
    let text = wait_file_contains(&dir.join("pid"), "\n", server);
    text.trim().parse().unwrap()
}

/// The messages logged so far: (arrival in ns of CLOCK_MONOTONIC, text).
fn messages(log: &Path) -> Vec<(u128, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, m) = l.split_once(' ')?;
            Some((t.parse().ok()?, m.to_string()))
        })
        .collect()
}

/// Waits until `count` messages have arrived; their texts, with each
/// RELOADING=1's MONOTONIC_USEC checked to be CLOCK_MONOTONIC: between
/// the stand-in's start and the message's arrival, both on that clock.
fn wait_messages(log: &Path, count: usize, server: &Server) -> Vec<String> {
    let all = wait_for(&format!("{count} messages upstream"), server, || {
        let m = messages(log);
        (m.len() >= count).then_some(m)
    });
    let started: u128 = std::fs::read_to_string(format!("{}.started", log.display()))
        .unwrap()
        .parse()
        .unwrap();
    let mut texts = Vec::new();
    for (arrived, text) in all {
        if let Some(usec) = text.strip_prefix("RELOADING=1|MONOTONIC_USEC=") {
            // In microseconds: the start, read in nanoseconds, rounded down.
            let sent = usec.parse::<u128>().unwrap() * 1000;
            assert!(
                started / 1000 * 1000 <= sent && sent <= arrived,
                "MONOTONIC_USEC {usec} is not CLOCK_MONOTONIC at the time \
                 (started {started} ns, arrived {arrived} ns)"
            );
            texts.push("RELOADING=1|MONOTONIC_USEC=*".to_string());
        } else {
            texts.push(text);
        }
    }
    texts
}

#[test]
fn the_whole_cycle_activation_ready_reload_failed_reload_and_stop() {
    let dir = TempDir::with_mode("systemd", "graceful");
    let (port, log) = (free_port(), dir.join("notify.log"));
    let (pid_file, st) = (dir.s("pid"), dir.s("status"));
    let probe = probe();
    let mut server = under_systemd(
        &dir.s("notify"),
        port,
        &log,
        // The man page's ExecStart= (and --interval at its default, 1 s).
        &[
            "--stop-timeout=20",
            "--start-retries=3",
            &format!("--pid-file={pid_file}"),
            &format!("--status-file={st}"),
            "--",
            &probe,
            dir.path().to_str().unwrap(),
        ],
    );
    // Activated: the worker serves the socket systemd passed.
    let r = dir.report(1, &server);
    assert_eq!(r["env.SERVER_STARTER_PORT"], format!("127.0.0.1:{port}=3"));
    assert_eq!(r["env.LISTEN_FDNAMES"], "web");
    let p1 = r["pid"].clone();
    let mut expected = vec![
        "STATUS=starting generation 1, attempt 1".to_string(),
        "READY=1".into(),
        format!("STATUS=generation 1 serving (pid {p1})"),
    ];
    assert_eq!(wait_messages(&log, expected.len(), &server), expected);
    let main_pid = wait_file_contains(Path::new(&pid_file), "\n", &server);
    let main_pid: u32 = main_pid.trim().parse().unwrap();

    // systemctl reload, Type=notify-reload: SIGHUP to the main process.
    kill("HUP", main_pid);
    let p2 = dir.report(2, &server)["pid"].clone();
    expected.extend([
        "RELOADING=1|MONOTONIC_USEC=*".to_string(),
        format!("STATUS=generation 1 serving (pid {p1}); starting generation 2, attempt 1"),
        "READY=1".into(),
        format!("STATUS=generation 2 serving (pid {p2}); generation 1 serving (pid {p1})"),
        format!("STATUS=generation 2 serving (pid {p2}); draining generation 1 (pid {p1})"),
        format!("STATUS=generation 2 serving (pid {p2})"),
    ]);
    assert_eq!(wait_messages(&log, expected.len(), &server), expected);

    // systemctl reload, Type=notify: ExecReload=start_server --restart,
    // into a deployment that never comes up.
    dir.mode("exit 1");
    let out = Command::new(bin())
        .args(["--restart", &format!("--pid-file={pid_file}")])
        .arg(format!("--status-file={st}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", server.log());
    expected.extend([
        "RELOADING=1|MONOTONIC_USEC=*".to_string(),
        format!("STATUS=generation 2 serving (pid {p2}); starting generation 3, attempt 1"),
        format!("STATUS=generation 2 serving (pid {p2}); starting generation 4, attempt 2"),
        format!("STATUS=generation 2 serving (pid {p2}); starting generation 5, attempt 3"),
        format!("STATUS=generation 2 serving (pid {p2}); starting generation 6, attempt 4"),
        format!("STATUS=restart given up after 4 failed starts; generation 2 serving (pid {p2})"),
        "READY=1".into(),
        format!("STATUS=generation 2 serving (pid {p2})"),
    ]);
    assert_eq!(wait_messages(&log, expected.len(), &server), expected);

    // systemctl stop, KillMode=mixed: SIGTERM to the main process alone.
    kill("TERM", main_pid);
    assert!(server.wait_exit().success(), "{}", server.log());
    // --stop-timeout=20: the workers 20 s, what they left 20 s more, 1 s
    // to reap it.
    expected.extend([
        "STOPPING=1".to_string(),
        "EXTEND_TIMEOUT_USEC=41000000".into(),
        "STATUS=stopping; no generation serving".into(),
    ]);
    assert_eq!(wait_messages(&log, expected.len(), &server), expected);
    assert_eq!(dir.stopped_by(2), "15");
}

#[test]
fn an_abstract_notify_address_is_reached_too() {
    let dir = TempDir::with_mode("systemd-abstract", "graceful");
    let (port, log) = (free_port(), dir.join("notify.log"));
    let address = format!("@start_server-test-{}", std::process::id());
    let probe = probe();
    let mut server = under_systemd(
        &address,
        port,
        &log,
        &["--interval=0", "--", &probe, dir.path().to_str().unwrap()],
    );
    let texts = wait_messages(&log, 3, &server);
    assert_eq!(texts[1], "READY=1");
    let main_pid = server.wait_line("starting now...");
    let main_pid: u32 = main_pid
        .split("pid:")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .parse()
        .unwrap();
    kill("TERM", main_pid);
    assert!(server.wait_exit().success(), "{}", server.log());
    assert!(messages(&log).iter().any(|(_, m)| m == "STOPPING=1"));
}

/// NOTIFY_SOCKET naming nothing, or a receiver that never reads: one
/// warning, and start_server carries on, never waiting.
#[test]
fn an_unreachable_or_full_notify_socket_is_one_warning_and_nothing_more() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::with_mode("systemd-unreachable", "graceful");
    let probe = probe();
    let st = dir.join("status");
    // Never read: its queue fills after a few messages.
    let full = UnixDatagram::bind(dir.join("full")).unwrap();
    for address in [dir.join("nothing-here"), dir.join("full")] {
        let mut server = Server::spawn(
            Command::new(bin())
                .env("NOTIFY_SOCKET", &address)
                .arg("--interval=0")
                .arg(format!("--status-file={}", st.display()))
                .args(["--", &probe, dir.path().to_str().unwrap()]),
        );
        wait_status(&st, &[1], &server);
        for generation in 2..=6 {
            server.signal("HUP");
            wait_status(&st, &[generation], &server);
        }
        server.wait_line(&format!("unable to notify {}", address.display()));
        assert_eq!(server.count("unable to notify"), 1, "{}", server.log());
        assert!(server.stop().success(), "{}", server.log());
    }
    drop(full);
}

/// systemd's watchdog (WatchdogSec=): with WATCHDOG_USEC=200000 and no
/// WATCHDOG_PID, WATCHDOG=1 every 100 ms (never closer), on through a
/// live upgrade, which keeps NOTIFY_SOCKET too (a restart after it is
/// still told); the worker is not handed the watchdog.
#[test]
fn the_watchdog_is_pinged_at_half_its_period_through_a_live_upgrade() {
    let (dir, log, mut server) = probe_under_systemd(
        "systemd-watchdog",
        &["--interval=0"],
        &[("WATCHDOG_USEC", "200000".into())],
    );
    let report = dir.report(1, &server);
    assert!(!report.contains_key("env.WATCHDOG_USEC"), "{report:?}");
    let pings = |n: usize| {
        wait_for(&format!("{n} WATCHDOG=1"), &server, || {
            let m = messages(&log);
            let times: Vec<u128> = m
                .iter()
                .filter(|(_, t)| t == "WATCHDOG=1")
                .map(|&(at, _)| at)
                .collect();
            (times.len() >= n).then_some(times)
        })
    };
    let times = pings(4);
    for pair in times.windows(2) {
        let gap_ms = (pair[1] - pair[0]) / 1_000_000;
        assert!(gap_ms >= 90, "pinged {gap_ms} ms after the last: {times:?}");
    }
    let main = main_pid(&dir, &server);
    kill("USR2", main);
    server.wait_line("upgraded in place");
    let before = times.len();
    let after = pings(before + 3);
    assert!(after.len() >= before + 3);
    kill("HUP", main);
    dir.report(2, &server);
    wait_for("READY=1 after the upgrade's restart", &server, || {
        let m = messages(&log);
        (m.iter().filter(|(_, t)| t == "READY=1").count() >= 2).then_some(())
    });
    kill("TERM", main);
    assert!(server.wait_exit().success(), "{}", server.log());
}

/// A WATCHDOG_PID that is not start_server's (systemd's watchdog meant
/// for another process) gets no ping, however long start_server runs.
#[test]
fn a_watchdog_meant_for_another_process_is_left_alone() {
    let (dir, log, mut server) = probe_under_systemd(
        "systemd-watchdog-other",
        &[],
        &[
            ("WATCHDOG_USEC", "100000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
    );
    // Up after --interval (1 s): ten periods of the watchdog.
    let texts = wait_messages(&log, 3, &server);
    assert_eq!(texts[1], "READY=1");
    let main = main_pid(&dir, &server);
    kill("TERM", main);
    assert!(server.wait_exit().success(), "{}", server.log());
    let all: Vec<String> = messages(&log).into_iter().map(|(_, t)| t).collect();
    assert!(!all.iter().any(|t| t == "WATCHDOG=1"), "{all:?}");
}
