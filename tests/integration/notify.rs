//! Readiness by notification (--readiness=notify): the hand-over waits for
//! READY=1, attributed to the right worker; bad notifications change
//! nothing.

use std::os::unix::net::UnixDatagram;

use crate::support::*;

fn start(dir: &TempDir, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let st = dir.join("status");
    let st_arg = format!("--status-file={}", st.display());
    let mut args = vec!["--readiness=notify", &st_arg];
    args.extend_from_slice(extra);
    (start_probe(dir, &args), st)
}

/// The NOTIFY_SOCKET value a probe of `generation` was given.
fn notify_socket(dir: &TempDir, generation: u64, server: &Server) -> String {
    dir.report(generation, server)["env.NOTIFY_SOCKET"].clone()
}

/// Sends `message` to a NOTIFY_SOCKET (a path, or `@name`) from this test
/// process.
fn send(address: &str, message: &[u8]) {
    use std::os::linux::net::SocketAddrExt;
    let addr = match address.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap(),
        None => std::os::unix::net::SocketAddr::from_pathname(address).unwrap(),
    };
    UnixDatagram::unbound()
        .unwrap()
        .send_to_addr(message, &addr)
        .unwrap();
}

/// NOTIFY_SOCKET is a socket file alone in a directory only its owner
/// can enter.
fn assert_private_path(address: &str) {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = std::path::Path::new(address);
    assert!(path.is_absolute(), "{address}");
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(meta.file_type().is_socket(), "{address}");
    let dir = path.parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
}

#[test]
fn the_old_generation_is_signalled_only_after_ready() {
    let dir = TempDir::with_mode("notify-handover", "notify graceful");
    // --interval=0: a start_server that took --interval for readiness
    // would hand over as soon as the new worker runs, long before the
    // checks below.
    let (mut server, st) = start(&dir, &["--interval=0"]);
    let first = wait_status(&st, &[1], &server)[0].1;
    server.wait_line(&format!("new worker {first} is ready"));
    // A generation that does not say READY=1 is not started, however long
    // it lives: the old one keeps serving.
    dir.mode("graceful");
    server.signal("HUP");
    let second = server.wait_worker(2);
    let address = notify_socket(&dir, 2, &server);
    assert_private_path(&address);
    assert_eq!(status(&st), [(1, first)]);
    assert!(!dir.join("1.stopped").exists());
    // READY=1 sent on its behalf by another process does not count.
    send(&address, b"READY=1");
    server.wait_line("is not a worker or a worker's descendant");
    assert_eq!(status(&st), [(1, first)]);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    wait_gone(second, &server);
}

#[test]
fn ready_from_a_child_of_the_worker_counts_and_status_is_logged() {
    let dir = TempDir::with_mode("notify-child", "notify-child");
    let (mut server, st) = start(&dir, &[]);
    let first = wait_status(&st, &[1], &server)[0].1;
    server.wait_line(&format!("new worker {first} is ready"));
    // The probe writes its child's pid once it has started it: the child
    // may have sent READY=1 by then.
    let child: u32 = wait_for("the worker's child's pid", &server, || {
        std::fs::read_to_string(dir.join("1.child"))
            .ok()?
            .parse()
            .ok()
    });
    kill("KILL", child);
    server.wait_line(&format!("worker {first} status: generation 1 ready"));
    // STATUS= is logged; READY=1 again is noted and ignored.
    dir.mode("notify-twice");
    server.signal("HUP");
    let second = wait_status(&st, &[2], &server)[0].1;
    server.wait_line(&format!("worker {second} sent READY=1 again, ignored"));
    assert!(server.stop().success());
}

#[test]
fn a_worker_that_never_gets_ready_is_killed_and_retried() {
    let dir = TempDir::with_mode("notify-timeout", "notify");
    let (mut server, st) = start(&dir, &["--ready-timeout=0.3"]);
    let first = wait_status(&st, &[1], &server)[0].1;
    dir.mode("run");
    server.signal("HUP");
    let second = server.wait_worker(2);
    server.wait_line(&format!(
        "new worker {second} is not ready after 0.3 s, killing it"
    ));
    server.wait_line(&format!(
        "new worker {second} seems to have failed to start, exit status:9"
    ));
    // Retried, while the first generation keeps serving.
    server.wait_worker(3);
    assert_eq!(status(&st), [(1, first)]);
    dir.mode("notify");
    server.signal("HUP");
    server.wait_line(&format!("old worker {first} died"));
    assert!(server.stop().success());
}

#[test]
fn a_worker_that_exits_before_ready_is_a_failed_start() {
    let dir = TempDir::with_mode("notify-exit", "notify");
    let (mut server, st) = start(&dir, &[]);
    let first = wait_status(&st, &[1], &server)[0].1;
    dir.mode("exit 0");
    server.signal("HUP");
    let second = server.wait_worker(2);
    server.wait_line(&format!(
        "new worker {second} seems to have failed to start, exit status:0"
    ));
    assert_eq!(status(&st), [(1, first)]);
    assert!(alive(first));
    assert!(server.stop().success());
}

#[test]
fn bad_notifications_are_reported_and_change_nothing() {
    let dir = TempDir::with_mode("notify-bad", "notify");
    let (mut server, st) = start(&dir, &[]);
    let first = wait_status(&st, &[1], &server)[0].1;
    let address = notify_socket(&dir, 1, &server);
    // From a process that is no worker: ignored, whatever it says.
    send(&address, b"READY=1\nSTATUS=hijacked");
    server.wait_line("ignoring a notification: pid ");
    // A flood from outside: ignored in batches, one line each, a few a
    // second (the bound grows with the flood's length, measured here: a
    // slow machine only makes it looser).
    let began = std::time::Instant::now();
    let flood = std::thread::spawn({
        let address = address.clone();
        move || {
            for _ in 0..5000 {
                send(&address, b"READY=1");
            }
        }
    });
    flood.join().unwrap();
    server.wait_line("ignored ");
    let lines = server.count("ignor");
    let seconds = began.elapsed().as_secs() + 1;
    assert!(
        lines as u64 <= 5 + 5 * seconds,
        "{lines} lines in {seconds} s: a few a second, not one per datagram:\n{}",
        server.log()
    );
    // Still in charge: a restart goes through.
    server.signal("HUP");
    wait_status(&st, &[2], &server);
    wait_gone(first, &server);
    assert!(!server.log().contains("hijacked"));
    assert!(server.stop().success());
}

#[test]
fn malformed_and_oversized_notifications_from_a_worker_are_rejected() {
    let dir = TempDir::with_mode("notify-malformed", "notify");
    let probe = probe();
    let st = dir.join("status");
    // The worker is a shell that sends bad datagrams through python3, then
    // becomes the probe (which says READY=1 properly).
    let script = format!(
        "python3 -c \"import os, socket
a = os.environ['NOTIFY_SOCKET'].replace('@', '\\0', 1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b'READY=1\\nno equals sign', a)
s.sendto(b'READY=1' + b'x' * 10000, a)
s.sendto(b'\\xff\\xfe=1', a)\"; exec {probe} {}",
        dir.path().display()
    );
    let mut server = Server::start(&[
        "--readiness=notify",
        &format!("--status-file={}", st.display()),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    server.wait_line("malformed line \"no equals sign\"");
    server.wait_line("(at most 4096)");
    server.wait_line("not UTF-8");
    // None of them made it ready; the probe's own READY=1 did.
    let w = wait_status(&st, &[1], &server)[0].1;
    // Its line may reach us after the status file: waited for, then
    // counted.
    server.wait_line(&format!("new worker {w} is ready"));
    assert_eq!(server.count(&format!("new worker {w} is ready")), 1);
    assert!(server.stop().success());
}

#[test]
fn no_ready_to_signal_inversion_in_100_restarts() {
    let dir = TempDir::with_mode("notify-inversion", "notify graceful");
    let (mut server, st) = start(&dir, &[]);
    wait_status(&st, &[1], &server);
    for generation in 2..=101u64 {
        server.signal("HUP");
        wait_status(&st, &[generation], &server);
        let ready = dir.stamp(generation, "ready").expect("ready stamp");
        let stopped = wait_for("the old worker's stop stamp", &server, || {
            dir.stamp(generation - 1, "stopped")
        });
        assert!(
            stopped > ready,
            "generation {} was signalled before generation {generation} was ready",
            generation - 1
        );
    }
    assert!(server.stop().success());
}

#[test]
fn start_server_tells_its_own_notify_socket_when_the_first_generation_is_up() {
    let dir = TempDir::with_mode("notify-upstream", "notify");
    let upstream = UnixDatagram::bind(dir.join("systemd")).unwrap();
    upstream.set_read_timeout(Some(DEADLINE)).unwrap();
    let probe = probe();
    let mut server = Server::spawn(
        std::process::Command::new(bin())
            .env("NOTIFY_SOCKET", dir.join("systemd"))
            .args([
                "--readiness=notify",
                "--",
                &probe,
                dir.path().to_str().unwrap(),
            ]),
    );
    // STATUS= lines come before and after it (see systemd.rs).
    let mut buf = [0u8; 256];
    loop {
        let n = upstream.recv(&mut buf).expect("READY=1 from start_server");
        if &buf[..n] == b"READY=1" {
            break;
        }
        assert!(buf.starts_with(b"STATUS="), "{:?}", &buf[..n]);
    }
    // The worker got start_server's own socket, not the upstream one.
    let r = dir.report(1, &server);
    assert_ne!(r["env.NOTIFY_SOCKET"], dir.s("systemd"));
    assert_private_path(&r["env.NOTIFY_SOCKET"]);
    server.wait_line("is ready");
    assert!(server.stop().success());
}

/// A stand-in for the sd_notify libraries that only connect to paths
/// (the sd-notify crate, Ruby's sd_notify gem): it refuses an abstract
/// address, says READY=1 on a path, then waits to be stopped.
const PATH_ONLY_NOTIFIER: &str = r#"
import os, socket, signal, sys
address = os.environ["NOTIFY_SOCKET"]
if not address.startswith("/"):
    sys.exit("not a path: " + address)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", address)
signal.pause()
"#;

/// Workers that only reach a path get through: every restart hands over
/// on READY=1. The socket and its directory go at exit, and are kept
/// across a live upgrade.
#[test]
fn notify_socket_is_a_path_that_path_only_libraries_reach() {
    let dir = TempDir::new("notify-path");
    let st = dir.join("status");
    let mut server = Server::start(&[
        "--readiness=notify",
        "--ready-timeout=5",
        &format!("--status-file={}", st.display()),
        "--",
        "python3",
        "-c",
        PATH_ONLY_NOTIFIER,
    ]);
    let first = wait_status(&st, &[1], &server)[0].1;
    server.wait_line(&format!("new worker {first} is ready"));
    let address = env_var(&raw_environ(first), "NOTIFY_SOCKET").unwrap();
    assert_private_path(&address);
    server.signal("HUP");
    let second = wait_status(&st, &[2], &server)[0].1;
    server.wait_line(&format!("new worker {second} is ready"));
    // A live upgrade keeps it.
    server.signal("USR2");
    server.wait_line("upgraded in place");
    assert_private_path(&address);
    server.signal("HUP");
    let third = wait_status(&st, &[3], &server)[0].1;
    server.wait_line(&format!("new worker {third} is ready"));
    assert!(server.stop().success());
    let dir_of = std::path::Path::new(&address).parent().unwrap();
    assert!(!dir_of.exists(), "{} left behind", dir_of.display());
    assert_eq!(server.count("not ready after"), 0, "{}", server.log());
}

/// Where no directory is writable (a scratch image without /tmp), the
/// socket falls back to an abstract address, with a warning.
#[test]
fn without_a_writable_directory_the_address_is_abstract() {
    let probe = probe();
    // A mount namespace where /tmp is read-only (its files still there:
    // the checkout may live in it), where this is allowed.
    let script = format!(
        "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp && \
         exec {} --readiness=notify -- {probe} notify-once",
        bin().display()
    );
    if !tool_or_skip(
        "unshare",
        &["--mount", "--propagation", "private", "true"],
        "util-linux",
    ) {
        return;
    }
    let mut server = Server::spawn(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("TMPDIR")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RUNTIME_DIRECTORY"),
    );
    server.wait_line("no writable directory for the notification socket");
    server.wait_line("is ready");
    assert_eq!(server.count("warning:"), 1, "{}", server.log());
    let worker = server.wait_worker(1);
    let address = env_var(&raw_environ(worker), "NOTIFY_SOCKET").unwrap_or_default();
    assert!(address.starts_with('@'), "NOTIFY_SOCKET={address:?}");
    assert!(server.stop().success());
}
