//! Test support: a temp dir per test, the binary under test, and a handle
//! on a running start_server whose stderr is collected line by line. Every
//! wait has a deadline and, on failure, prints what it found and the
//! supervisor's stderr.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::procfs::children;

/// The usual deadline for an event that should take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The binary under test: the one cargo built for this test run, or the
/// one START_SERVER_BIN names (`make test` runs the suite again on the
/// release binary that ships).
pub fn bin() -> PathBuf {
    match std::env::var_os("START_SERVER_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_start_server")),
    }
}

/// Whether every test must run: under CI (`CI` set and not "false", as
/// CI runners do) or with `START_SERVER_TESTS_REQUIRE_ALL=1` (.ci/run
/// exports it).
pub fn require_all() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("START_SERVER_TESTS_REQUIRE_ALL")
}

/// The one skip rule. A test that cannot run here says why through
/// `return skip(why)`: on a developer's machine the reason is printed
/// (past libtest's capture) and recorded in the file
/// `START_SERVER_SKIPS` names, which `make test` counts; under CI the
/// test fails with the reason instead.
pub fn skip(why: impl std::fmt::Display) {
    let test = thread::current().name().unwrap_or("?").to_string();
    if require_all() {
        panic!("{test} cannot run here, and every test must under CI: {why}");
    }
    // Straight to the descriptor: libtest hides a passing test's eprintln!.
    let line = format!("skipped: {test}: {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    if let Some(path) = std::env::var_os("START_SERVER_SKIPS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Whether this test runs as root; otherwise the skip rule decides.
pub fn root_or_skip(what: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:\t0\t"));
    if !root {
        skip(format!("{what} needs root"));
    }
    root
}

/// Whether `program` can be started (`program ARGS` exits 0); otherwise
/// the skip rule decides, naming the package that has it.
pub fn tool_or_skip(program: &str, args: &[&str], package: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(format!(
            "{program} does not run here (apt-get install {package})"
        ));
    }
    ok
}

/// socketmaster's arguments for a worker that is the shell running
/// `script`, on a free port, with `flag` (`-start=0`, `-syslog`).
pub fn socketmaster_sh(flag: &str, script: &str) -> Vec<String> {
    [
        &format!("-listen=tcp4://127.0.0.1:{}", free_port()),
        "-command=sh",
        flag,
        "--",
        "-c",
        script,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Perl's Server::Starter, for side-by-side tests (.ci/run installs it).
pub const PERL: &str = "/usr/bin/start_server";

/// Whether the original is here, and is the Perl script (not our binary
/// installed over it); otherwise the skip rule decides, and a start_server
/// at that path that is not Perl's fails the test.
pub fn perl_or_skip() -> bool {
    let Ok(text) = std::fs::read(PERL) else {
        skip(format!(
            "{PERL} is not installed (apt-get install libserver-starter-perl)"
        ));
        return false;
    };
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    assert!(
        first.starts_with(b"#!") && first.windows(4).any(|w| w == b"perl"),
        "{PERL} is not Perl's Server::Starter: its first line is {:?}",
        String::from_utf8_lossy(&first[..first.len().min(80)])
    );
    assert!(
        String::from_utf8_lossy(&text).contains("Server::Starter"),
        "{PERL} does not use Server::Starter"
    );
    true
}

/// How a start_server run to its end went: a client mode, a refused
/// command line.
pub struct Ended {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

/// Fails unless the program that gave `out` exited 1 and said `needle`
/// on stderr; its stderr.
pub fn assert_fails_saying(out: &std::process::Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    stderr
}

/// Runs start_server with `args` to its end.
pub fn run_to_end(args: &[&str]) -> Ended {
    let out = Command::new(bin()).args(args).output().unwrap();
    Ended {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The tests' worker (examples/probe.rs), as an argument.
pub fn probe() -> String {
    example("probe").display().to_string()
}

/// start_server with `options`, then the probe working in `dir`.
pub fn start_probe(dir: &TempDir, options: &[&str]) -> Server {
    let probe = probe();
    let mut args = options.to_vec();
    args.extend(["--", &probe, dir.path().to_str().unwrap()]);
    Server::start(&args)
}

/// start_server with `options`, a pid file and a status file in `dir`,
/// running the probe; and the pid and status file arguments.
pub fn probe_server(dir: &TempDir, options: &[&str]) -> (Server, String, String) {
    let (pid, st) = (dir.s("pid"), dir.s("status"));
    let (pid_arg, st_arg) = (format!("--pid-file={pid}"), format!("--status-file={st}"));
    let mut args = options.to_vec();
    args.extend([&pid_arg[..], &st_arg]);
    (start_probe(dir, &args), pid, st)
}

/// A process's environment as the kernel holds it, entry by entry.
pub fn raw_environ(pid: u32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let e = String::from_utf8_lossy(e);
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The value of `name` in an environment read by [`raw_environ`].
pub fn env_var(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// What kubelet's atomic writer does to a ConfigMap volume at `volume`
/// to publish `files`: a new timestamped directory holding them, a
/// `..data_tmp` link to it renamed over `..data`, a link per file name
/// into `..data` (made once), and the previous directory removed.
pub fn publish(volume: &std::path::Path, version: u32, files: &[(&str, &str)]) {
    let stamp = format!("..2026_12_06_09_00_00.{version}");
    let dir = volume.join(&stamp);
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let old = std::fs::read_link(volume.join("..data")).ok();
    std::os::unix::fs::symlink(&stamp, volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    for (name, _) in files {
        let link = volume.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(std::path::Path::new("..data").join(name), link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).unwrap();
    }
}

/// An envdir, `env` in `dir`, holding these files (name, contents).
pub fn make_envdir(dir: &TempDir, files: &[(&str, &str)]) -> PathBuf {
    let envdir = dir.join("env");
    std::fs::create_dir(&envdir).unwrap();
    for (name, contents) in files {
        std::fs::write(envdir.join(name), contents).unwrap();
    }
    envdir
}

/// An example program built alongside the test binary.
pub fn example(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_start_server"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --examples`",
        path.display()
    );
    path
}

/// Writes `contents` to a new file at `path` from a child process (`cat`),
/// never through a descriptor of this process: a test in another thread
/// that forks would hold that descriptor open until its child executes,
/// and executing the file meanwhile fails with "Text file busy".
pub fn write_program(path: &Path, contents: &[u8]) {
    use std::io::Write;
    let mut cat = Command::new("sh")
        .args(["-c", "cat > \"$0\""])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin.take().unwrap().write_all(contents).unwrap();
    assert!(cat.wait().unwrap().success(), "writing {}", path.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of the program at `from`, made as [`write_program`] makes one.
pub fn copy_program(from: &Path, to: &Path) {
    write_program(to, &std::fs::read(from).unwrap());
}

/// A copy of `program` in `dir`, which every user may enter: for tests
/// that run it as another user, wherever the checkout lives (a directory
/// only its owner can enter included).
pub fn copy_for_all(dir: &TempDir, program: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let copy = dir.join(name);
    copy_program(program, &copy);
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// A directory of its own for one test, removed when the test passes.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("start_server-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A directory of its own, with the probe's behaviour set (see
    /// [`TempDir::mode`]).
    pub fn with_mode(name: &str, mode: &str) -> TempDir {
        let dir = TempDir::new(name);
        dir.mode(mode);
        dir
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn s(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }

    /// Names in the directory (the leftovers check).
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Sets the probe's behaviour for the next workers.
    pub fn mode(&self, mode: &str) {
        std::fs::write(self.join("mode"), mode).unwrap();
    }

    /// The signal a graceful probe of `generation` stopped on.
    pub fn stopped_by(&self, generation: u64) -> String {
        let text = std::fs::read_to_string(self.join(&format!("{generation}.stopped"))).unwrap();
        text.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// A timestamp (ns) a probe wrote to `DIR/<generation>.<what>`, as the
    /// last word of the file.
    pub fn stamp(&self, generation: u64, what: &str) -> Option<u128> {
        let text = std::fs::read_to_string(self.join(&format!("{generation}.{what}"))).ok()?;
        text.split_whitespace().last()?.parse().ok()
    }

    /// The report a probe of `generation` wrote, once it exists.
    pub fn report(&self, generation: u64, server: &Server) -> HashMap<String, String> {
        self.report_of(&generation.to_string(), server)
    }

    /// The report of a probe that got `generation` ("none" without
    /// SERVER_STARTER_GENERATION).
    pub fn report_of(&self, generation: &str, server: &Server) -> HashMap<String, String> {
        let path = self.join(&format!("{generation}.report"));
        wait_for(
            &format!("report of generation {generation}"),
            server,
            || {
                std::fs::read_to_string(&path).ok().map(|text| {
                    text.lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
            },
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The system clock in nanoseconds since the epoch, as the probe writes
/// its stamps: for orderings of events seen on both sides.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A port on 127.0.0.1 that was free a moment ago, and its address.
pub fn free_addr() -> (u16, String) {
    let port = free_port();
    (port, format!("127.0.0.1:{port}"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `sig` (a name like "HUP") to `pid`.
pub fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

pub fn alive(pid: u32) -> bool {
    // A zombie has been reaped by nobody yet: count it as alive.
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` is gone (exited and reaped).
pub fn wait_gone(pid: u32, server: &Server) {
    wait_for(&format!("process {pid} to be gone"), server, || {
        (!alive(pid)).then_some(())
    });
}

/// Polls `probe` until it yields, or fails the test after DEADLINE with
/// what it was waiting for and the supervisor's stderr.
pub fn wait_for<T>(what: &str, server: &Server, probe: impl FnMut() -> Option<T>) -> T {
    poll_until(what, || server.log(), probe)
}

/// Polls `probe` until it yields, or fails the test after DEADLINE with
/// what it was waiting for and `log`.
fn poll_until<T>(what: &str, log: impl Fn() -> String, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\n--- start_server stderr ---\n{}",
                log()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Output collected from start_server's stdout and stderr.
#[derive(Default)]
struct Output {
    lines: Vec<String>,
    /// When each line arrived.
    times: Vec<Instant>,
    /// Streams that reached end-of-file.
    closed: usize,
}

/// A running start_server.
pub struct Server {
    child: Option<Child>,
    stdin: Option<std::process::ChildStdin>,
    pub pid: u32,
    lines: Arc<(Mutex<Output>, Condvar)>,
    status: Option<ExitStatus>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Self::spawn(Command::new(bin()).args(args))
    }

    /// Starts `cmd`, collecting its stderr (and stdout) lines.
    pub fn spawn(cmd: &mut Command) -> Server {
        Self::spawn_io(cmd, Stdio::null())
    }

    /// The same, with a pipe to its standard input ([`Server::stdin`]).
    pub fn spawn_interactive(cmd: &mut Command) -> Server {
        Self::spawn_io(cmd, Stdio::piped())
    }

    fn spawn_io(cmd: &mut Command, stdin: Stdio) -> Server {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn start_server");
        let lines = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = Arc::clone(&lines);
            thread::spawn(move || {
                let (store, cv) = &*lines;
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut out = store.lock().unwrap();
                    out.lines.push(line);
                    out.times.push(Instant::now());
                    drop(out);
                    cv.notify_all();
                }
                store.lock().unwrap().closed += 1;
                cv.notify_all();
            });
        }
        Server {
            pid: child.id(),
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            status: None,
        }
    }

    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.stdin.as_mut()
    }

    pub fn log(&self) -> String {
        self.lines.0.lock().unwrap().lines.join("\n")
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().lines.clone()
    }

    /// The lines with the moment each arrived.
    pub fn timed_lines(&self) -> Vec<(Instant, String)> {
        let out = self.lines.0.lock().unwrap();
        out.times
            .iter()
            .copied()
            .zip(out.lines.iter().cloned())
            .collect()
    }

    /// When the first line containing `needle` arrived, once it has: never
    /// earlier than what it reports happened.
    pub fn line_arrival(&self, needle: &str) -> Instant {
        self.wait_line(needle);
        let out = self.lines.0.lock().unwrap();
        let i = out.lines.iter().position(|l| l.contains(needle)).unwrap();
        out.times[i]
    }

    /// Waits for the `nth` (1-based) line containing `needle`.
    pub fn wait_line_n(&self, needle: &str, nth: usize) -> String {
        let deadline = Instant::now() + DEADLINE;
        let (store, cv) = &*self.lines;
        let mut out = store.lock().unwrap();
        loop {
            if let Some(l) = out.lines.iter().filter(|l| l.contains(needle)).nth(nth - 1) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for line #{nth} containing {needle:?}\n--- start_server stderr ---\n{}",
                    out.lines.join("\n")
                );
            }
            out = cv.wait_timeout(out, left).unwrap().0;
        }
    }

    pub fn wait_line(&self, needle: &str) -> String {
        self.wait_line_n(needle, 1)
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The pid in a line ending with one: `starting new worker 123`.
    pub fn wait_worker(&self, nth: usize) -> u32 {
        let line = self.wait_line_n("starting new worker ", nth);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        kill(sig, self.pid);
    }

    /// Waits for start_server to exit; fails the test with its stderr if
    /// it does not within DEADLINE.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let lines = Arc::clone(&self.lines);
        let child = self.child.as_mut().unwrap();
        let status = poll_until(
            "start_server to exit",
            || lines.0.lock().unwrap().lines.join("\n"),
            || child.try_wait().unwrap(),
        );
        self.status = Some(status);
        self.wait_output_closed();
        status
    }

    /// Waits until both output streams are closed, so that every line is
    /// collected; gives up quietly at the deadline (a process that outlived
    /// start_server may hold them, and the test then says what it misses).
    fn wait_output_closed(&self) {
        let deadline = Instant::now() + DEADLINE;
        let (store, cv) = &*self.lines;
        let mut out = store.lock().unwrap();
        while out.closed < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            out = cv.wait_timeout(out, left).unwrap().0;
        }
    }

    /// The exit code, if start_server has exited (128+N for signal N).
    pub fn exited(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.status = Some(status);
        Some(status.code().unwrap_or(128 + status.signal().unwrap_or(0)))
    }

    /// Stops start_server with SIGTERM and waits for it.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }
}

impl Drop for Server {
    /// A test that fails midway still leaves nothing running: TERM lets
    /// start_server stop its workers; SIGKILL only if it will not.
    fn drop(&mut self) {
        let Some(child) = &mut self.child else { return };
        if self.status.is_some() || child.try_wait().ok().flatten().is_some() {
            return;
        }
        kill("TERM", self.pid);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until the file at `path` exists and contains `needle`; its text.
pub fn wait_file_contains(path: &Path, needle: &str, server: &Server) -> String {
    wait_for(
        &format!("{} to contain {needle:?}", path.display()),
        server,
        || {
            std::fs::read_to_string(path)
                .ok()
                .filter(|t| t.contains(needle))
        },
    )
}

/// Reads a status file as (generation, pid) pairs.
pub fn status(path: &Path) -> Vec<(u64, u32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (g, p) = l.split_once(':')?;
            Some((g.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

/// Waits until the status file lists exactly `gens`.
pub fn wait_status(path: &Path, gens: &[u64], server: &Server) -> Vec<(u64, u32)> {
    wait_for(
        &format!(
            "status file {} to list generations {gens:?}",
            path.display()
        ),
        server,
        || {
            let s = status(path);
            (s.iter().map(|&(g, _)| g).collect::<Vec<_>>() == gens).then_some(s)
        },
    )
}

/// One HTTP GET over TCP; the body.
pub fn get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head[8..].starts_with(" 200") => {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!("bad response: {out:?}"))),
    }
}

/// Fails unless a GET to `addr` answers with a body that starts with
/// `prefix`.
pub fn assert_serves(addr: &str, prefix: &str) {
    let body = get(addr).unwrap();
    assert!(body.starts_with(prefix), "{addr}: {body}");
}

/// Clients hammering an HTTP server with GETs until stopped, counting the
/// answers that start as expected and keeping the first failures.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: &str, clients: usize, expect: &'static str) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, ok, failures, addr) =
                    (stop.clone(), ok.clone(), failures.clone(), addr.to_string());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(&addr) {
                            Ok(body) if body.starts_with(expect) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.lock().unwrap().push(format!("{other:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            clients,
        }
    }

    /// Requests failed so far.
    pub fn failed(&self) -> usize {
        self.failures.lock().unwrap().len()
    }

    pub fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends SIGHUP `restarts` times, each time waiting until the status
    /// file lists only the next generation and `per_restart` more requests
    /// have succeeded: requests keep flowing through every hand-over.
    pub fn restart(&self, server: &Server, status_file: &Path, restarts: u64, per_restart: usize) {
        for generation in 2..=restarts + 1 {
            let before = self.ok();
            server.signal("HUP");
            wait_status(status_file, &[generation], server);
            wait_for("requests after a restart", server, || {
                (self.ok() > before + per_restart).then_some(())
            });
        }
    }

    /// Stops the clients; the number of successes, failing the test if
    /// any request failed.
    pub fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in self.clients {
            c.join().unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed requests, the first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Starts `cmd` (an `unshare --pid --fork ...` running start_server) and
/// waits until start_server runs as PID 1 inside; None, after saying why,
/// where no pid namespace can be made.
pub fn start_in_pid_namespace(cmd: &mut Command) -> Option<Server> {
    let server = Server::spawn(cmd);
    let started = wait_for("start_server or unshare's failure", &server, || {
        if server.count("starting new worker") > 0 {
            Some(true)
        } else if server.count("unshare") > 0 {
            Some(false)
        } else {
            None
        }
    });
    if !started {
        skip(format!(
            "cannot create a pid namespace here:\n{}",
            server.log()
        ));
        return None;
    }
    server.wait_line("start_server (pid:1) starting now...");
    Some(server)
}

/// Builds the Go program `main.go` in `dir` (with the environment `env`
/// added) into `dir/hello`, failing the test with go's own words.
pub fn go_build(dir: &Path, env: &[(&str, String)]) -> PathBuf {
    succeeds(
        Command::new("go")
            .args(["build", "-o", "hello", "."])
            .current_dir(dir)
            .env("GOCACHE", dir.join("cache"))
            .envs(env.iter().map(|(k, v)| (k, v))),
    );
    dir.join("hello")
}

/// Runs `cmd` to its end, failing the test with its stderr unless it
/// exits 0; its output.
pub fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
