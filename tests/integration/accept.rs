//! --readiness=accept with real servers, unchanged: after HUP the old
//! generation is signalled only once the new one waits on the socket, as
//! the kernel shows it, and a new generation that dies while loading
//! leaves the old one serving, never signalled.
//!
//! Each application takes APP_LOAD seconds to load, then prints
//! `loaded PID NS` (NS: CLOCK_MONOTONIC in nanoseconds) and only then
//! starts to serve. The old generation's signal is start_server's
//! `killing old workers` line, timed when the test reads it: never before
//! the signal itself. So a signal read before the new generation says it
//! is loaded was certainly early; the delays shown (signal read minus
//! loaded) are upper bounds.

use std::path::PathBuf;
use std::time::Instant;

use crate::support::*;

/// The application's load time for the restarts that are counted.
const LOAD: &str = "2";
/// For the longer runs (20 restarts).
const QUICK_LOAD: &str = "0.2";

/// A server under test: the files of its application and its command line
/// (from the test's directory and the address).
struct Case {
    name: &'static str,
    /// The program that must run here, and the Debian package it is in.
    program: (&'static str, &'static [&'static str], &'static str),
    /// What a response's body starts with.
    expect: &'static str,
    files: &'static [(&'static str, &'static str)],
    /// start_server's options for it: the signal it drains on.
    options: &'static [&'static str],
    command: fn(&TempDir, &str) -> Vec<String>,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

const PSGI: &str = r#"
use Time::HiRes ();
Time::HiRes::sleep($ENV{APP_LOAD});
$| = 1;
printf "loaded %d %d\n", $$, Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) * 1e9;
die "dying while loading\n" if -e "die";
my $app = sub { [200, ["Content-Type" => "text/plain"], ["hello from psgi\n"]] };
"#;

const RACK: &str = r#"
sleep(ENV["APP_LOAD"].to_f)
$stdout.sync = true
$stdout.write("loaded #{$$} #{Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)}\n")
abort "dying while loading" if File.exist?("die")
run ->(env) { [200, {"content-type" => "text/plain"}, ["hello from rack\n"]] }
"#;

/// What every Python program here starts with: the load, the `loaded`
/// line, and death while loading when the file `die` exists (with 3,
/// gunicorn's code for a worker that cannot boot: its arbiter stops).
macro_rules! py_load {
    () => {
        r#"
import os, socket, sys, time
time.sleep(float(os.environ["APP_LOAD"]))
# One write, so that no other process's line lands in the middle.
sys.stdout.write("loaded %d %d\n" % (os.getpid(), time.monotonic_ns()))
sys.stdout.flush()
if os.path.exists("die"):
    print("dying while loading", file=sys.stderr, flush=True)
    sys.exit(3)
"#
    };
}

const PY_APP: &str = concat!(
    py_load!(),
    r#"
def app(environ, start_response):
    body = b"hello from wsgi\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from asgi\n"})
"#
);

/// A server with a blocking accept in its main thread: no event loop.
const PY_BLOCKING: &str = concat!(
    py_load!(),
    r#"s = socket.socket(fileno=3)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from python\n")
    c.close()
"#
);

const NODE: &str = r#"
const end = Date.now() + parseFloat(process.env.APP_LOAD) * 1000;
while (Date.now() < end) {}
console.log("loaded " + process.pid + " " + process.hrtime.bigint());
if (require("fs").existsSync("die")) { console.error("dying while loading"); process.exit(1); }
const server = require("http").createServer((req, res) => res.end("hello from node\n"));
server.listen({ fd: 3 });
process.on("SIGTERM", () => server.close(() => process.exit(0)));
"#;

const GO: &str = r#"package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func monotonic() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

func main() {
	load, _ := strconv.ParseFloat(os.Getenv("APP_LOAD"), 64)
	time.Sleep(time.Duration(load * float64(time.Second)))
	fmt.Printf("loaded %d %d\n", os.Getpid(), monotonic())
	if _, err := os.Stat("die"); err == nil {
		fmt.Fprintln(os.Stderr, "dying while loading")
		os.Exit(1)
	}
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from go")
	})}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		srv.Shutdown(context.Background())
	}()
	srv.Serve(l)
}
"#;

/// h2o loads no application of its own: a wrapper takes the load time,
/// says so, and executes h2o in its place (the same process).
const H2O_WRAPPER: &str = concat!(
    py_load!(),
    r#"os.execvp("h2o", ["h2o", "-c", sys.argv[1]])
"#
);

fn h2o_config(dir: &TempDir, addr: &str) -> PathBuf {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let conf = dir.join("h2o.conf");
    std::fs::write(
        &conf,
        format!(
            "listen:\n  host: {host}\n  port: {port}\nhosts:\n  default:\n    paths:\n      /:\n        \
             mruby.handler: |\n          Proc.new do |env|\n            \
             [200, {{\"content-type\" => \"text/plain\"}}, [\"hello from h2o\\n\"]]\n          end\n"
        ),
    )
    .unwrap();
    conf
}

/// The Go server, built once per test run.
fn go_server() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-hello");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("main.go"), GO).unwrap();
            std::fs::write(dir.join("go.mod"), "module hello\n\ngo 1.19\n").unwrap();
            let gopath = dir.join("gopath").display().to_string();
            let env = [
                ("GOPATH", gopath),
                ("GOFLAGS", "-mod=mod".to_string()),
                ("GOPROXY", "off".to_string()),
            ];
            go_build(&dir, &env)
        })
        .clone()
}

// The servers, one per line or two: a table, kept as one.
#[rustfmt::skip]
const STARLET: Case = Case { name: "starlet", program: ("plackup", &["--version"], "starlet"),
    expect: "hello from psgi", files: &[("app.psgi", PSGI)], options: &[],
    command: |_, _| strings(&["plackup", "-s", "Starlet", "--max-workers=2", "app.psgi"]) };
// Starman and unicorn stop gracefully on QUIT (TERM stops them at once).
#[rustfmt::skip]
const STARMAN: Case = Case { name: "starman", program: ("starman", &["--version"], "starman"),
    expect: "hello from psgi", files: &[("app.psgi", PSGI)], options: &["--signal-on-hup=QUIT"],
    command: |_, _| strings(&["starman", "--workers=2", "app.psgi"]) };
#[rustfmt::skip]
const UNICORN: Case = Case { name: "unicorn", program: ("unicorn", &["--version"], "unicorn"),
    expect: "hello from rack", files: &[("config.ru", RACK)], options: &["--signal-on-hup=QUIT"],
    command: |_, addr| strings(&["unicorn", "-l", addr, "config.ru"]) };
#[rustfmt::skip]
const GUNICORN: Case = Case { name: "gunicorn", program: ("gunicorn", &["--version"], "gunicorn"),
    expect: "hello from wsgi", files: &[("app.py", PY_APP)], options: &[],
    command: |_, _| strings(&["gunicorn", "--workers=2", "app:app"]) };
#[rustfmt::skip]
const UVICORN: Case = Case { name: "uvicorn", program: ("uvicorn", &["--version"], "uvicorn"),
    expect: "hello from asgi", files: &[("app.py", PY_APP)], options: &[],
    command: |_, _| strings(&["uvicorn", "--fd", "3", "app:asgi"]) };
#[rustfmt::skip]
const PYTHON: Case = Case { name: "python", program: ("python3", &["--version"], "python3"),
    expect: "hello from python", files: &[("server.py", PY_BLOCKING)], options: &[],
    command: |_, _| strings(&["python3", "server.py"]) };
#[rustfmt::skip]
const NODE_CASE: Case = Case { name: "node", program: ("node", &["--version"], "nodejs"),
    expect: "hello from node", files: &[("app.js", NODE)], options: &[],
    command: |_, _| strings(&["node", "app.js"]) };
#[rustfmt::skip]
const GO_CASE: Case = Case { name: "go", program: ("go", &["version"], "golang-go"),
    expect: "hello from go", files: &[], options: &[],
    command: |_, _| vec![go_server().display().to_string()] };
#[rustfmt::skip]
const H2O: Case = Case { name: "h2o", program: ("h2o", &["--version"], "h2o"),
    expect: "hello from h2o", files: &[("wrapper.py", H2O_WRAPPER)], options: &[],
    command: |dir, addr| strings(&["python3", "wrapper.py", &h2o_config(dir, addr).display().to_string()]) };

/// CLOCK_MONOTONIC now, in ns, with the Instant of the same moment: on
/// Linux an Instant is that clock's reading, which its Debug form shows
/// (`Instant { tv_sec: 8979, tv_nsec: 331000170 }`).
fn monotonic_now() -> (Instant, i128) {
    let now = Instant::now();
    let text = format!("{now:?}");
    let field = |name: &str| -> i128 {
        let rest = text.split(name).nth(1).unwrap_or_else(|| panic!("{text}"));
        let digits: String = rest
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    (now, field("tv_sec") * 1_000_000_000 + field("tv_nsec"))
}

/// `t` in CLOCK_MONOTONIC ns, from `clock` (an Instant and the clock's
/// reading at it).
fn monotonic_ns((at, ns): (Instant, i128), t: Instant) -> i128 {
    match t >= at {
        true => ns + (t - at).as_nanos() as i128,
        false => ns - (at - t).as_nanos() as i128,
    }
}

/// A running case: start_server on a free port, in a directory of its
/// own, with `--readiness=accept` and --start-retries=0 (a failed restart
/// is given up at once).
struct Running {
    server: Server,
    addr: String,
    status: PathBuf,
    /// An instant and CLOCK_MONOTONIC at it, to place the server's lines.
    clock: (Instant, i128),
    /// Last: fields drop in order, and the directory is removed only once
    /// the server has stopped (it removes its status file as it exits).
    dir: TempDir,
}

impl Running {
    fn start(case: &Case, load: &str, restarts: u64) -> Option<Running> {
        let (program, args, package) = case.program;
        let true = tool_or_skip(program, args, package) else {
            return None;
        };
        // Named by the run too: one server may run in two tests at once.
        let dir = TempDir::new(&format!("accept-{}-{restarts}", case.name));
        for (name, text) in case.files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let status = dir.join("status");
        let mut cmd = std::process::Command::new(bin());
        cmd.current_dir(dir.path())
            .env("APP_LOAD", load)
            .arg(format!("--port={addr}"))
            .arg(format!("--status-file={}", status.display()))
            .args([
                "--readiness=accept",
                "--start-retries=0",
                "--ready-timeout=6",
            ])
            .args(case.options)
            .arg("--")
            .args((case.command)(&dir, &addr));
        let server = Server::spawn(&mut cmd);
        wait_status(&status, &[1], &server);
        Some(Running {
            server,
            addr,
            status,
            clock: monotonic_now(),
            dir,
        })
    }

    /// `t` in CLOCK_MONOTONIC ns.
    fn ns(&self, t: Instant) -> i128 {
        monotonic_ns(self.clock, t)
    }

    /// HUP, and the new generation up: how long after the first of its
    /// processes said it was loaded the old one's signal was read (ns,
    /// negative when early).
    fn restart(&self, generation: u64) -> i128 {
        let before = self.server.timed_lines().len();
        self.server.signal("HUP");
        self.handed_over(before, generation)
    }

    /// Once the new generation is up: the same delay, for a restart that
    /// began after line `before`.
    fn handed_over(&self, before: usize, generation: u64) -> i128 {
        let status = wait_status(&self.status, &[generation], &self.server);
        let new = status[0].1;
        // The new generation's processes (the worker and its children,
        // alive now); an old one may say it is loaded after the HUP too.
        // Its line comes through another pipe: waited for.
        let loaded = wait_for("the new generation's loaded line", &self.server, || {
            self.server.timed_lines()[before..]
                .iter()
                .find_map(|(_, l)| {
                    let mut words = l.strip_prefix("loaded ")?.split(' ');
                    let pid: u32 = words.next()?.parse().ok()?;
                    let ns = words.next()?.parse::<i128>().ok()?;
                    (pid == new || parent(pid) == Some(new)).then_some(ns)
                })
        });
        let killed_at = wait_for("the old generation's signal", &self.server, || {
            self.server.timed_lines()[before..]
                .iter()
                .find(|(_, l)| l.contains("killing old workers"))
                .map(|(t, _)| *t)
        });
        self.ns(killed_at) - loaded
    }
}

/// The parent of process `pid`, from /proc.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The whole check for one server: `restarts` hand-overs with a load time
/// of `load`, none early, each new generation serving, then a new
/// generation that dies while loading (or, for a server whose master
/// outlives failing children, never waits on the socket), which leaves
/// the old one serving, never signalled.
fn hand_over_waits_for_the_new_generation(case: &Case, load: &str, restarts: u64) {
    let Some(run) = Running::start(case, load, restarts) else {
        return;
    };
    assert_serves(&run.addr, case.expect);
    // Whether requests under way survive an old generation's signal is
    // the server's own graceful stop (some of these reset a connection
    // they accepted but had not served yet): not checked here.
    let delays: Vec<i128> = (2..=restarts + 1)
        .map(|g| {
            let delay = run.restart(g);
            assert_serves(&run.addr, case.expect);
            delay
        })
        .collect();
    let early = delays.iter().filter(|&&d| d < 0).count();
    let ms: Vec<f64> = delays.iter().map(|&d| d as f64 / 1e6).collect();
    eprintln!(
        "{}: signal read after the new generation loaded, ms (upper bounds): {ms:.1?}",
        case.name
    );
    assert_eq!(
        early,
        0,
        "{}: the old generation was signalled before the new one was loaded: {ms:?}\n{}",
        case.name,
        run.server.log()
    );
    // A new generation that dies while loading: the old one is never
    // signalled and goes on serving; --start-retries=0 gives up.
    let old = status(&run.status);
    std::fs::write(run.dir.join("die"), "").unwrap();
    let signals = run.server.count("killing old workers");
    run.server.signal("HUP");
    run.server.wait_line("giving up the restart");
    assert_eq!(run.server.count("killing old workers"), signals);
    assert_eq!(status(&run.status), old);
    for &(_, pid) in &old {
        assert!(
            alive(pid),
            "{} {pid} died:\n{}",
            case.name,
            run.server.log()
        );
    }
    assert_serves(&run.addr, case.expect);
}

/// One test per server: `name: CASE`.
macro_rules! hand_over_tests {
    ($($name:ident: $case:ident;)*) => {$(
        #[test]
        fn $name() {
            hand_over_waits_for_the_new_generation(&$case, LOAD, 1);
        }
    )*};
}

hand_over_tests! {
    starlet_is_signalled_only_once_its_successor_accepts: STARLET;
    starman_is_signalled_only_once_its_successor_accepts: STARMAN;
    unicorn_is_signalled_only_once_its_successor_selects: UNICORN;
    gunicorn_is_signalled_only_once_its_successor_selects: GUNICORN;
    uvicorn_is_signalled_only_once_its_successor_polls: UVICORN;
    h2o_is_signalled_only_once_its_successor_polls: H2O;
    node_is_signalled_only_once_its_successor_polls: NODE_CASE;
    go_is_signalled_only_once_its_successor_polls: GO_CASE;
    a_blocking_python_server_is_signalled_only_once_its_successor_accepts: PYTHON;
}

#[test]
fn twenty_restarts_are_never_early_for_python_uvicorn_and_node() {
    for case in [&PYTHON, &UVICORN, &NODE_CASE] {
        hand_over_waits_for_the_new_generation(case, QUICK_LOAD, 20);
    }
}

/// A live upgrade while the new generation loads: the new image carries
/// the look on, and the hand-over still waits for the new generation.
#[test]
fn a_live_upgrade_during_a_pending_look_carries_it_on() {
    let Some(run) = Running::start(&PYTHON, LOAD, 0) else {
        return;
    };
    let before = run.server.timed_lines().len();
    run.server.signal("HUP");
    let new = run.server.wait_worker(2);
    run.server.signal("USR2");
    run.server.wait_line("upgraded in place");
    let delay = run.handed_over(before, 2);
    assert!(delay >= 0, "signalled early:\n{}", run.server.log());
    let lines = run.server.lines();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    assert!(
        at("upgraded in place") < at(&format!("new worker {new} waits on the sockets")),
        "{}",
        run.server.log()
    );
    assert_serves(&run.addr, PYTHON.expect);
}

/// A worker start_server may not look into (another user's, without
/// CAP_SYS_PTRACE, as in a container's default capabilities) is named in
/// one warning with the cause, and counts as not ready: its start fails at
/// --ready-timeout, never on a blind timer.
#[test]
fn a_worker_that_cannot_be_seen_is_said_so_and_never_counts_as_ready() {
    let true = root_or_skip("running a worker as another user") else {
        return;
    };
    let true = tool_or_skip("setpriv", &["--version"], "util-linux") else {
        return;
    };
    let dir = TempDir::with_mode("accept-unseen", "run");
    std::fs::write(dir.join("server.py"), PY_BLOCKING).unwrap();
    let mut server = Server::spawn(
        std::process::Command::new("setpriv")
            .args(["--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--"])
            .arg(bin())
            .current_dir(dir.path())
            .env("APP_LOAD", "0")
            .args([
                &format!("--port=127.0.0.1:{}", free_port()),
                "--user=nobody",
                "--readiness=accept",
                "--ready-timeout=1",
                "--start-retries=0",
                "--",
                "python3",
                &dir.s("server.py"),
            ]),
    );
    let pid = server.wait_worker(1);
    server.wait_line(&format!(
        "unable to see whether new worker {pid} waits on the sockets: unable to read \
         /proc/{pid}/fd/0: Permission denied; it counts as not ready"
    ));
    server.wait_line(&format!(
        "new worker {pid} is not ready after 1 s, killing it"
    ));
    assert_eq!(server.count("unable to see whether"), 1, "{}", server.log());
    assert_eq!(server.count("waits on the sockets"), 1, "{}", server.log());
    assert_eq!(server.wait_exit().code(), Some(3), "{}", server.log());
}

/// A UDP server counts once it waits to read its socket: here a thread
/// blocked in recvfrom, after a load.
const PY_UDP: &str = concat!(
    py_load!(),
    r#"s = socket.socket(fileno=3)
while True:
    data, peer = s.recvfrom(512)
    s.sendto(b"hello from udp " + data, peer)
"#
);

#[test]
fn a_udp_server_counts_once_it_waits_to_read() {
    let dir = TempDir::new("accept-udp");
    std::fs::write(dir.join("server.py"), PY_UDP).unwrap();
    let port = free_port();
    let st = dir.join("status");
    let mut cmd = std::process::Command::new(bin());
    cmd.env("APP_LOAD", "1").args([
        &format!("--port=127.0.0.1:u{port}"),
        &format!("--status-file={}", st.display()),
        "--readiness=accept",
        "--",
        "python3",
        &dir.s("server.py"),
    ]);
    let server = Server::spawn(&mut cmd);
    let pid = server.wait_worker(1);
    let clock = monotonic_now();
    let waits = server.line_arrival(&format!("new worker {pid} waits on the sockets"));
    let waits = monotonic_ns(clock, waits);
    let loaded = server.wait_line(&format!("loaded {pid} "));
    let loaded: i128 = loaded.rsplit(' ').next().unwrap().parse().unwrap();
    // Read after the fact: the line's arrival is never before the look.
    assert!(
        loaded <= waits,
        "seen before it was loaded:\n{}",
        server.log()
    );
    wait_status(&st, &[1], &server);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.send_to(b"x", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello from udp x");
}

/// `--restart` and `--status` follow this readiness as they follow
/// READY=1: --restart returns once the new generation waits on the
/// socket, never before it has loaded.
#[test]
fn restart_returns_once_the_new_generation_waits_on_the_socket() {
    let dir = TempDir::new("accept-restart");
    std::fs::write(dir.join("server.py"), PY_BLOCKING).unwrap();
    let (pid, st) = (dir.s("pid"), dir.s("status"));
    let mut cmd = std::process::Command::new(bin());
    cmd.env("APP_LOAD", "1").args([
        &format!("--port=127.0.0.1:{}", free_port()),
        &format!("--pid-file={pid}"),
        &format!("--status-file={st}"),
        "--readiness=accept",
        "--",
        "python3",
        &dir.s("server.py"),
    ]);
    let server = Server::spawn(&mut cmd);
    wait_status(std::path::Path::new(&st), &[1], &server);
    let restarted = run_to_end(&["--restart", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(restarted.code, Some(0), "{}", restarted.err);
    let new = server.wait_worker(2);
    // By the time --restart returned, the new worker was seen waiting.
    assert_eq!(
        server.count(&format!("new worker {new} waits on the sockets")),
        1
    );
    let status = run_to_end(&["--status", "--pid-file", &pid, "--status-file", &st]);
    assert_eq!(status.code, Some(0), "{}", status.out);
    assert!(status.out.contains("generation 2"), "{}", status.out);
}
