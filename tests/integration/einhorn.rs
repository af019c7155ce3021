//! --readiness=einhorn: a new worker is up when it sends einhorn's
//! `worker:ack` on EINHORN_SOCK_PATH. With a real client (goji's `bind`
//! package), and with stand-ins for what goji never sends: the escaped
//! YAML form, lines that must not count, ACKs from outside the worker's
//! tree.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A goji server: loads for 1 s, then serves; goji's `bind.Ready()` ACKs.
const GOJI: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/zenazn/goji"
)

func main() {
	time.Sleep(time.Second)
	fmt.Fprintf(os.Stderr, "loaded %d\n", os.Getpid())
	goji.Get("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from goji")
	})
	goji.Serve()
}
"#;

/// Debian's goji (golang-github-zenazn-goji-dev), built once per run.
fn goji_server() -> Option<PathBuf> {
    let goji = "/usr/share/gocode/src/github.com/zenazn/goji";
    if !std::path::Path::new(goji).exists() {
        skip("goji is not installed (apt-get install golang-github-zenazn-goji-dev)");
        return None;
    }
    let true = tool_or_skip("go", &["version"], "golang-go") else {
        return None;
    };
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Some(
        BUILT
            .get_or_init(|| {
                let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("goji");
                let dir = root.join("src/hello");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("main.go"), GOJI).unwrap();
                let env = [
                    ("GOPATH", format!("{}:/usr/share/gocode", root.display())),
                    ("GO111MODULE", "off".to_string()),
                ];
                go_build(&dir, &env)
            })
            .clone(),
    )
}

/// start_server running goji under --readiness=einhorn on a free port,
/// with a status file in `dir` and `options`; the address and the
/// status file's path.
fn start_goji(dir: &TempDir, goji: &Path, options: &[&str]) -> (Server, String, PathBuf) {
    let addr = format!("127.0.0.1:{}", free_port());
    let st = dir.join("status");
    let (port, status) = (
        format!("--port={addr}"),
        format!("--status-file={}", st.display()),
    );
    // goji stops gracefully on INT (and USR2 under einhorn); TERM would
    // end it at once.
    let mut args = vec![
        &port[..],
        &status,
        "--readiness=einhorn",
        "--signal-on-hup=INT",
    ];
    args.extend(["--signal-on-term=INT"].iter().chain(options));
    args.extend(["--", goji.to_str().unwrap()]);
    (Server::start(&args), addr, st)
}

#[test]
fn goji_acks_and_only_then_is_the_old_generation_signalled() {
    let Some(goji) = goji_server() else {
        return;
    };
    let dir = TempDir::new("einhorn-goji");
    let (server, addr, st) = start_goji(&dir, &goji, &[]);
    wait_status(&st, &[1], &server);
    assert_serves(&addr, "hello from goji");
    let first = server.wait_worker(1);
    let env = raw_environ(first);
    assert_eq!(
        env_var(&env, "EINHORN_MASTER_PID"),
        Some(server.pid.to_string())
    );
    let sock = env_var(&env, "EINHORN_SOCK_PATH").unwrap();
    assert!(sock.ends_with("/einhorn.sock"), "{sock}");
    assert_eq!(env_var(&env, "NOTIFY_SOCKET"), None);
    for generation in 2..=4 {
        let before = server.lines().len();
        server.signal("HUP");
        wait_status(&st, &[generation], &server);
        let lines = server.lines()[before..].to_vec();
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
        let acked = at("bind: ACKing to einhorn").expect("goji's ACK");
        let signalled = at("killing old workers").expect("the old generation's signal");
        assert!(
            acked < signalled,
            "signalled before the ACK:\n{}",
            lines.join("\n")
        );
        assert!(at("is ready").is_some_and(|r| r > acked && r < signalled));
        assert_serves(&addr, "hello from goji");
    }
    // Goji stopped gracefully (by INT) each time, and at the end.
    assert_eq!(server.count("Goji stopped"), 3);
    let mut server = server;
    assert_eq!(server.stop().code(), Some(0));
    assert!(!std::path::Path::new(&sock).exists(), "{sock} left behind");
}

/// Two goji workers per generation, rolled one at a time: each gets
/// einhorn's EINHORN_CHILD_INDEX (the lowest index no live worker holds),
/// each new one ACKs for itself, and the old worker of its slot is
/// signalled only after that ACK.
#[test]
fn several_goji_workers_ack_each_for_itself_and_the_roll_waits_for_each() {
    let Some(goji) = goji_server() else {
        return;
    };
    let dir = TempDir::new("einhorn-goji-workers");
    let (mut server, addr, st) = start_goji(&dir, &goji, &["--workers=2", "--max-surge=1"]);
    let first = wait_status(&st, &[1, 1], &server);
    let index = |pid: u32| env_var(&raw_environ(pid), "EINHORN_CHILD_INDEX");
    assert_eq!(index(first[0].1).as_deref(), Some("0"));
    assert_eq!(index(first[1].1).as_deref(), Some("1"));
    let before = server.lines().len();
    server.signal("HUP");
    // While slot 0's new worker loads, both old ones hold 0 and 1.
    let new = server.wait_worker(3);
    // Read once it runs its program (until then /proc shows ours).
    let got = wait_for("the new worker's environment", &server, || index(new));
    assert_eq!(got, "2");
    wait_status(&st, &[2, 2], &server);
    let lines = server.lines()[before..].to_vec();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    // The k-th old worker goes after the k-th ACK.
    for (k, old) in [(1, first[0].1), (2, first[1].1)] {
        let signalled = at(&format!("sending INT to old workers:{old}")).expect("a hand-over");
        let acks = lines[..signalled]
            .iter()
            .filter(|l| l.contains(" is ready"))
            .count();
        assert!(
            acks >= k,
            "{old} signalled before its successor's ACK:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        lines.iter().filter(|l| l.contains(" is ready")).count(),
        2,
        "{}",
        lines.join("\n")
    );
    assert_serves(&addr, "hello from goji");
    assert_eq!(server.stop().code(), Some(0));
}

/// A worker that speaks to EINHORN_SOCK_PATH as `mode` says, then waits
/// on its socket (a blocking accept: seen by the kernel, which must not
/// count under einhorn).
const WORKER: &str = r#"
import os, socket, sys, time
mode = sys.argv[1]
pid = os.getpid()
def send(data):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["EINHORN_SOCK_PATH"])
    s.sendall(data)
    s.close()
ack = b'{"command": "worker:ack", "pid": %d}' % pid
if mode == "slow":
    time.sleep(1.5)
    send(ack + b"\n")
elif mode == "json":
    send(ack + b"\n")
elif mode == "yaml":
    send(b"---%%0Acommand: worker:ack%%0Apid: %d%%0A\n" % pid)
elif mode == "unknown-then-ack":
    send(b'{"command": "state"}\n' + ack + b"\n")
elif mode == "child":
    # The child stays: its ancestry is read from /proc when its line is,
    # and a process already gone (and reaped) shows none.
    if os.fork() == 0:
        send(ack + b"\n")
        time.sleep(60)
        os._exit(0)
elif mode == "no-newline":
    send(ack)
elif mode == "other-pid":
    send(b'{"command": "worker:ack", "pid": %d}\n' % os.getppid())
elif mode == "garbage":
    send(b"worker:ack please\n")
sys.stderr.write("said %s\n" % mode)
sys.stderr.flush()
listener = socket.socket(fileno=3)
while True:
    listener.accept()[0].close()
"#;

/// start_server with the stand-in worker in `mode`, this ready timeout
/// (in seconds) and no retry.
fn stand_in(dir: &TempDir, mode: &str, ready_timeout: &str) -> Server {
    std::fs::write(dir.join("worker.py"), WORKER).unwrap();
    Server::start(&[
        &format!("--port=127.0.0.1:{}", free_port()),
        "--readiness=einhorn",
        &format!("--ready-timeout={ready_timeout}"),
        "--start-retries=0",
        "--",
        "python3",
        &dir.s("worker.py"),
        mode,
    ])
}

#[test]
fn acks_that_count_json_yaml_after_an_unknown_command_and_from_a_child() {
    for mode in ["json", "yaml", "unknown-then-ack", "child"] {
        let dir = TempDir::new(&format!("einhorn-{mode}"));
        // Time enough for python to start on a busy machine.
        let mut server = stand_in(&dir, mode, "20");
        let pid = server.wait_worker(1);
        server.wait_line(&format!("new worker {pid} is ready"));
        assert_eq!(server.count("ignoring"), 0, "{mode}:\n{}", server.log());
        assert_eq!(server.stop().code(), Some(0));
    }
}

#[test]
fn acks_that_do_not_count_leave_the_worker_not_ready() {
    for (mode, said) in [
        ("no-newline", None),
        (
            "other-pid",
            Some("worker:ack for pid START_SERVER, which is not a worker"),
        ),
        (
            "garbage",
            Some("ignoring an einhorn message: not a JSON object"),
        ),
        // Waiting on the socket is the accept mode's sign, not einhorn's.
        ("waits", None),
    ] {
        let dir = TempDir::new(&format!("einhorn-{mode}"));
        // Time enough for python to start and speak on a busy machine,
        // and no more: the start then fails at it.
        let mut server = stand_in(&dir, mode, "3");
        let pid = server.wait_worker(1);
        server.wait_line(&format!("said {mode}"));
        server.wait_line(&format!("new worker {pid} is not ready after 3 s"));
        if let Some(said) = said {
            let said = said.replace("START_SERVER", &server.pid.to_string());
            assert_eq!(server.count(&said), 1, "{mode}:\n{}", server.log());
        }
        assert_eq!(server.count("is ready"), 0, "{mode}:\n{}", server.log());
        assert_eq!(
            server.wait_exit().code(),
            Some(3),
            "{mode}:\n{}",
            server.log()
        );
    }
}

#[test]
fn an_ack_from_outside_the_workers_tree_does_not_count() {
    use std::io::Write;
    let dir = TempDir::new("einhorn-outside");
    let mut server = stand_in(&dir, "waits", "3");
    let pid = server.wait_worker(1);
    server.wait_line("said waits");
    let sock = env_var(&raw_environ(pid), "EINHORN_SOCK_PATH").unwrap();
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    writeln!(c, r#"{{"command": "worker:ack", "pid": {pid}}}"#).unwrap();
    drop(c);
    let me = std::process::id();
    server.wait_line(&format!(
        "worker:ack for worker {pid} from pid {me}, which is not it or its descendant"
    ));
    server.wait_line(&format!("new worker {pid} is not ready after 3 s"));
    assert_eq!(server.count("is ready"), 0);
    assert_eq!(server.wait_exit().code(), Some(3));
}

#[test]
fn einhorn_readiness_without_the_einhorn_protocol_is_refused() {
    let dir = TempDir::new("einhorn-refused");
    let out = run_to_end(&[
        "--port=127.0.0.1:0",
        &format!("--pid-file={}", dir.s("pid")),
        "--readiness=einhorn",
        "--protocols=server-starter,systemd",
        "--",
        "true",
    ]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.err.trim(),
        "start_server: fatal: --readiness=einhorn needs the einhorn protocol (add einhorn to --protocols)",
    );
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

/// A live upgrade while a worker has not ACKed yet: the new image takes
/// the control socket over, and the ACK, sent after, counts.
#[test]
fn a_live_upgrade_before_the_ack_carries_the_wait_on() {
    let dir = TempDir::new("einhorn-upgrade");
    std::fs::write(dir.join("worker.py"), WORKER).unwrap();
    let mut server = Server::start(&[
        &format!("--port=127.0.0.1:{}", free_port()),
        "--readiness=einhorn",
        "--ready-timeout=20",
        "--",
        "python3",
        &dir.s("worker.py"),
        "slow",
    ]);
    let pid = server.wait_worker(1);
    server.signal("USR2");
    server.wait_line("upgraded in place");
    assert_eq!(server.count("is ready"), 0, "{}", server.log());
    server.wait_line(&format!("new worker {pid} is ready"));
    assert_eq!(server.stop().code(), Some(0));
}
