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
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SYSTEMD, address, &port.to_string()])
        .arg(log)
        .arg(bin())
        .args(args);
    Server::spawn(&mut cmd)
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
    expected.extend([
        "STOPPING=1".to_string(),
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
