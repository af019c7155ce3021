//! Side by side with Perl's Server::Starter (installed by .ci/run): each
//! scenario runs the same command lines and signals under the original and
//! under ours, and compares everything both show: the log lines, the raw
//! status file at each step and whether it is gone after exit, the pid
//! file, the exit status, the client modes' output and exit status, the
//! workers' environment, the sockets (address, backlog, descriptor) and
//! the respawn pace.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use crate::support::*;

/// Numbers every pid by order of first appearance across all the texts
/// given to it: pids differ from run to run, the order they appear in does
/// not. A pid is a number of three digits or more (these tests run in the
/// host's pid namespace) that is not a wait status; smaller numbers
/// (signals, delays, descriptors) are kept as written.
#[derive(Default)]
struct Numbering(HashMap<String, String>);

impl Numbering {
    fn line(&mut self, line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
            let len = rest[start..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - start);
            let number = &rest[start..start + len];
            out.push_str(&rest[..start]);
            if out.ends_with("status:") || len < 3 {
                out.push_str(number);
            } else {
                let n = self.0.len() + 1;
                out.push_str(
                    self.0
                        .entry(number.to_string())
                        .or_insert_with(|| format!("P{n}")),
                );
            }
            rest = &rest[start + len..];
        }
        out.push_str(rest);
        out
    }

    fn lines(&mut self, lines: &[String]) -> Vec<String> {
        lines.iter().map(|l| self.line(l)).collect()
    }
}

/// Perl's `warn` and `die` add where they were called: ` at FILE line N.`
fn without_perl_location(line: &str) -> &str {
    match line.rfind(" at /") {
        Some(i) if line.ends_with('.') && line[i..].contains(" line ") => &line[..i],
        _ => line,
    }
}

/// What one run of a scenario showed: compared whole between the
/// original and ours.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// start_server's output, numbered.
    log: Vec<String>,
    /// The status file's raw text at each step that read it, numbered.
    status: Vec<String>,
    /// Each client mode run: its exit code and output, numbered.
    clients: Vec<(Option<i32>, Vec<String>)>,
    /// What the steps read from workers (their environment).
    seen: Vec<String>,
    /// start_server's exit code (128+N for signal N).
    exit: Option<i32>,
    /// Whether the status file and the pid file are still there after
    /// the exit.
    left: (bool, bool),
}

impl Outcome {
    /// Fails unless a step saw `entry` in a worker's environment.
    fn must_see(&self, entry: &str) {
        assert!(
            self.seen.iter().any(|e| e == entry),
            "{entry} not seen: {self:#?}"
        );
    }

    /// Fails unless a compared log line contains `needle`: the scenario
    /// did what it is about, on both sides.
    fn must_say(&self, needle: &str) {
        assert!(
            self.log.iter().any(|l| l.contains(needle)),
            "{needle:?} not said: {self:#?}"
        );
    }
}

/// A scenario's run under one binary: the steps act on it and record.
struct Run<'a> {
    bin: &'a str,
    /// start_server's arguments, as given.
    args: Vec<String>,
    /// The port `{port}` stood for.
    port: String,
    dir: &'a TempDir,
    server: Server,
    status: Vec<String>,
    clients: Vec<(Option<i32>, Vec<String>)>,
    seen: Vec<String>,
    /// Where the compared log ends, when the two differ on purpose after
    /// it: the `nth` line containing the text, included.
    log_until: Option<(&'static str, usize)>,
}

impl Run<'_> {
    fn status_file(&self) -> std::path::PathBuf {
        self.dir.join("status")
    }

    /// Waits until the status file lists `gens`, and records its text.
    fn status(&mut self, gens: &[u64]) {
        wait_status(&self.status_file(), gens, &self.server);
        let text = std::fs::read_to_string(self.status_file()).unwrap();
        self.status.push(text);
    }

    /// Compares the log up to the `nth` line containing `needle` only.
    fn compare_log_until(&mut self, needle: &'static str, nth: usize) {
        self.log_until = Some((needle, nth));
    }

    fn line(&self, needle: &str, nth: usize) {
        self.server.wait_line_n(needle, nth);
    }

    fn signal(&self, sig: &str) {
        self.server.signal(sig);
    }

    /// The pid of the `nth` worker started.
    fn worker(&self, nth: usize) -> u32 {
        self.server.wait_worker(nth)
    }

    /// Runs the binary in a client mode (`--restart`, `--stop`) to its
    /// end, recording its exit code and output.
    fn client(&mut self, args: &[&str]) {
        let mut client = Server::spawn(Command::new(self.bin).args(args));
        let code = client.wait_exit().code();
        let lines = client
            .lines()
            .iter()
            .map(|l| without_perl_location(l).to_string())
            .collect();
        self.clients.push((code, lines));
    }

    /// Records the whole environment of the worker of `generation`, as
    /// the kernel holds it, but the variables ours adds for the protocols
    /// the original does not speak (LISTEN_*, EINHORN_*); the port as
    /// `{port}`.
    fn environ(&mut self, generation: u64) {
        let pid: u32 = self.dir.report(generation, &self.server)["pid"]
            .parse()
            .unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut environ: Vec<String> = raw_environ(pid)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("LISTEN_") && !k.starts_with("EINHORN_"))
            .map(|(k, v)| (k, v.replace(&self.port, "{port}")))
            .map(|(k, v)| match k.as_str() {
                "SERVER_STARTER_PORT" if self.bin == PERL => {
                    let specs: Vec<String> = v.split(';').map(str::to_string).collect();
                    format!("{k}={}", one_lower(&specs, &args).join(";"))
                }
                _ => format!("{k}={v}"),
            })
            .collect();
        environ.sort();
        self.seen.extend(environ);
    }
}

/// Runs `steps` under `bin` with `args` (`{dir}` stands for the test's
/// directory, the same name for both binaries since it appears in log
/// lines; `{port}` for a free port) followed by the probe in `mode`, and
/// `env`.
/// start_server must exit by the end of the steps or on the TERM sent
/// after them.
fn scenario(
    bin: &str,
    name: &str,
    mode: &str,
    args: &[&str],
    env: &[(&str, &str)],
    steps: &dyn Fn(&mut Run),
) -> (Outcome, Vec<(Instant, String)>) {
    let dir = TempDir::with_mode(name, mode);
    // An envdir, for the scenarios that name it; and one whose ENVDIR
    // file names another.
    std::fs::create_dir(dir.join("env")).unwrap();
    std::fs::write(dir.join("env/GREETING"), "first\n").unwrap();
    std::fs::create_dir(dir.join("envr")).unwrap();
    std::fs::write(dir.join("envr/GREETING"), "first\n").unwrap();
    std::fs::write(dir.join("envr/FOO"), "1\n").unwrap();
    std::fs::write(
        dir.join("envr/ENVDIR"),
        format!("{}/env2\n", dir.path().display()),
    )
    .unwrap();
    std::fs::create_dir(dir.join("env2")).unwrap();
    std::fs::write(dir.join("env2/GREETING"), "second\n").unwrap();
    // The program: a copy of the probe, for scenarios that change it.
    let probe = dir.join("server");
    copy_program(&example("probe"), &probe);
    let probe = probe.display().to_string();
    let port = free_port().to_string();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("{dir}", dir.path().to_str().unwrap())
                .replace("{port}", &port)
        })
        .collect();
    if args.iter().any(|a| a.contains("stale.sock")) {
        // A socket file left by a previous run, for --path to remove.
        let stale = std::os::unix::net::UnixListener::bind(dir.join("stale.sock")).unwrap();
        drop(stale);
    }
    let server = Server::spawn(
        Command::new(bin)
            .args(&args)
            .args(["--", &probe, dir.path().to_str().unwrap()])
            .envs(env.iter().copied()),
    );
    let mut run = Run {
        bin,
        args: args.clone(),
        port: port.clone(),
        dir: &dir,
        server,
        status: Vec::new(),
        clients: Vec::new(),
        seen: Vec::new(),
        log_until: None,
    };
    steps(&mut run);
    if run.server.exited().is_none() {
        run.server.signal("TERM");
    }
    let exit = run.server.wait_exit();
    let exit = {
        use std::os::unix::process::ExitStatusExt;
        exit.code().or(exit.signal().map(|s| 128 + s))
    };
    let left = (run.status_file().exists(), dir.join("pid").exists());
    let timed = run.server.timed_lines();
    let mut lines: Vec<String> = run
        .server
        .lines()
        .iter()
        .filter(|l| !l.starts_with("hello"))
        .map(|l| without_perl_location(l).to_string())
        .collect();
    if let Some((needle, nth)) = run.log_until {
        let end = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth - 1)
            .map_or(lines.len(), |(i, _)| i + 1);
        lines.truncate(end);
    }
    let mut numbering = Numbering::default();
    let outcome = Outcome {
        log: numbering.lines(&lines),
        status: run.status.iter().map(|t| numbering.line(t)).collect(),
        clients: run
            .clients
            .iter()
            .map(|(code, lines)| (*code, numbering.lines(lines)))
            .collect(),
        seen: run.seen,
        exit,
        left,
    };
    (outcome, timed)
}

/// Runs `steps` under the original and under ours and compares all they
/// showed; ours, for the checks that follow.
fn side_by_side(
    name: &str,
    mode: &str,
    args: &[&str],
    env: &[(&str, &str)],
    steps: &dyn Fn(&mut Run),
) -> Option<Outcome> {
    let true = perl_or_skip() else { return None };
    let (theirs, _) = scenario(PERL, name, mode, args, env, steps);
    let (ours, _) = scenario(bin().to_str().unwrap(), name, mode, args, env, steps);
    assert_eq!(ours, theirs, "ours (left) and the original (right) differ");
    Some(ours)
}

/// The status file and the pid file for a scenario's command line.
const FILES: [&str; 2] = ["--status-file={dir}/status", "--pid-file={dir}/pid"];

fn with_files<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = FILES.to_vec();
    all.extend_from_slice(args);
    all
}

/// Start, HUP, TERM.
fn hup_and_term(run: &mut Run) {
    run.status(&[1]);
    run.signal("HUP");
    run.line("old worker", 1);
    run.status(&[2]);
}

#[test]
fn start_hup_and_term_match_server_starter() {
    let Some(ours) = side_by_side(
        "compat-hup",
        "run",
        &with_files(&["--port=127.0.0.1:{port}", "--interval=1"]),
        &[],
        &|run| {
            run.status(&[1]);
            run.environ(1);
            run.signal("HUP");
            run.line("old worker", 1);
            run.status(&[2]);
            run.environ(2);
        },
    ) else {
        return;
    };
    // What both did, so that a scenario that did nothing cannot match.
    assert_eq!(ours.status, ["1:P2\n", "2:P3\n"], "{ours:#?}");
    assert_eq!((ours.exit, ours.left), (Some(0), (false, false)));
}

/// Signals and delays appear in log lines as the user wrote them, and
/// start-up lines come in the original's order.
#[test]
fn log_lines_keep_what_the_user_wrote() {
    let Some(ours) = side_by_side(
        "compat-written",
        "run",
        &with_files(&[
            "--port=127.0.0.1:{port}",
            "--interval=1",
            "--signal-on-hup=15",
            "--signal-on-term=sigint",
            "--port=0=5",
            "--path={dir}/stale.sock",
        ]),
        &[("KILL_OLD_DELAY", "01")],
        &hup_and_term,
    ) else {
        return;
    };
    let log = ours.log.join("\n");
    for needle in [
        "sending 15 to old workers",
        "sleeping 01 secs",
        "received TERM, sending INT to all workers",
        "socket is duplicated to file descriptor",
        "removing existing socket file:",
    ] {
        assert!(log.contains(needle), "{needle:?} in:\n{log}");
    }
}

/// A first worker that exits during --interval: "seems to have failed to
/// start", retried, until TERM.
#[test]
fn a_failed_start_matches_server_starter() {
    let Some(ours) = side_by_side(
        "compat-failed-start",
        "exit 3",
        &with_files(&["--interval=1"]),
        &[],
        &|run| {
            run.line("starting new worker", 3);
            // TERM comes during the third attempt's --interval. The
            // original then leaves its start loop, finds the attempt
            // dead, starts one more worker and stops that one; ours stops
            // without starting another (see COMPATIBILITY in the manual).
            run.compare_log_until("starting new worker", 3);
        },
    ) else {
        return;
    };
    ours.must_say("seems to have failed to start, exit status:768");
}

/// A worker killed while serving: "died unexpectedly", a new generation.
#[test]
fn a_crash_respawn_matches_server_starter() {
    let Some(ours) = side_by_side(
        "compat-crash",
        "run",
        &with_files(&["--interval=0"]),
        &[],
        &|run| {
            run.status(&[1]);
            kill("KILL", run.worker(1));
            run.status(&[2]);
        },
    ) else {
        return;
    };
    ours.must_say("died unexpectedly with status:9, restarting");
}

/// --enable-auto-restart: a restart by itself once the interval is past.
#[test]
fn auto_restart_matches_server_starter() {
    let Some(ours) = side_by_side(
        "compat-auto",
        "run",
        &with_files(&[
            "--interval=0",
            "--enable-auto-restart",
            "--auto-restart-interval=1",
            "--kill-old-delay=0",
        ]),
        &[],
        &|run| {
            run.status(&[1]);
            run.line("old worker", 1);
            run.status(&[2]);
        },
    ) else {
        return;
    };
    ours.must_say("autorestart triggered (interval=");
}

/// Where the manual says the envdir differs (COMPATIBILITY), the original
/// does what it says: its first read is kept for good, so a removed file
/// still sets its variable and an ENVDIR file moves later reads; ours
/// reads the directory given, afresh.
#[test]
fn the_envdir_differs_from_the_original_as_the_manual_says() {
    let true = perl_or_skip() else { return };
    let args = [
        "--interval=0",
        "--status-file={dir}/status",
        "--envdir={dir}/envr",
    ];
    let steps = |run: &mut Run| {
        run.status(&[1]);
        run.environ(1);
        std::fs::remove_file(run.dir.join("envr/FOO")).unwrap();
        run.signal("HUP");
        run.status(&[2]);
        run.environ(2);
    };
    // The second worker's entries: each worker's are sorted, so they
    // begin where the order starts again.
    let second = |outcome: &Outcome, name: &str| -> Option<String> {
        let seen = &outcome.seen;
        let start = (1..seen.len()).find(|&i| seen[i] < seen[i - 1]).unwrap();
        seen[start..]
            .iter()
            .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    let (theirs, _) = scenario(PERL, "compat-envdir-differs", "run", &args, &[], &steps);
    let (ours, _) = scenario(
        bin().to_str().unwrap(),
        "compat-envdir-differs",
        "run",
        &args,
        &[],
        &steps,
    );
    assert_eq!(
        (second(&theirs, "FOO"), second(&theirs, "GREETING")),
        (Some("1".into()), Some("second".into())),
        "{theirs:#?}"
    );
    assert_eq!(
        (second(&ours, "FOO"), second(&ours, "GREETING")),
        (None, Some("first".into())),
        "{ours:#?}"
    );
}

/// Numeric options in Getopt::Long's syntax reach the workers'
/// environment as the number they stand for, not as written.
#[test]
fn numbers_reach_the_environment_as_the_original_exports_them() {
    let Some(ours) = side_by_side(
        "compat-numbers",
        "run",
        &with_files(&[
            "--interval=0",
            "--kill-old-delay=0_1",
            "--auto-restart-interval=+06",
        ]),
        &[],
        &|run| {
            run.status(&[1]);
            run.environ(1);
        },
    ) else {
        return;
    };
    for expected in ["KILL_OLD_DELAY=1", "AUTO_RESTART_INTERVAL=6"] {
        ours.must_see(expected);
    }
}

/// `--restart` and `--stop` as clients of a running start_server.
#[test]
fn restart_and_stop_clients_match_server_starter() {
    let Some(ours) = side_by_side(
        "compat-clients",
        "run",
        &with_files(&["--interval=0"]),
        &[],
        &|run| {
            run.status(&[1]);
            let dir = run.dir.path().display().to_string();
            let (st, pid) = (
                format!("--status-file={dir}/status"),
                format!("--pid-file={dir}/pid"),
            );
            run.client(&["--restart", &pid, &st]);
            run.status(&[2]);
            run.client(&["--stop", &pid]);
        },
    ) else {
        return;
    };
    assert_eq!(ours.clients.len(), 2);
    assert_eq!(ours.clients[0].0, Some(0), "{ours:#?}");
    assert_eq!(ours.clients[1].0, Some(0), "{ours:#?}");
}

/// The envdir: read at start and at each restart, its values in the
/// workers' environment and in start_server's own settings.
#[test]
fn the_envdir_matches_server_starter() {
    let envdir_args = with_files(&["--interval=0", "--envdir={dir}/env"]);
    let Some(ours) = side_by_side("compat-envdir", "run", &envdir_args, &[], &|run| {
        // Made before the start: the scenario made the directory.
        run.status(&[1]);
        run.environ(1);
        let env = run.dir.join("env");
        std::fs::write(env.join("GREETING"), "second\n").unwrap();
        std::fs::write(env.join("KILL_OLD_DELAY"), "1\n").unwrap();
        run.signal("HUP");
        run.line("old worker", 1);
        run.status(&[2]);
        run.environ(2);
    }) else {
        return;
    };
    for expected in ["GREETING=first", "GREETING=second", "KILL_OLD_DELAY=1"] {
        ours.must_see(expected);
    }
}

/// The gaps between the first `n` "starting new worker" lines, as the
/// test saw them arrive (one clock for both binaries).
fn spawn_gaps(timed: &[(Instant, String)], n: usize) -> Vec<f64> {
    let spawns: Vec<Instant> = timed
        .iter()
        .filter(|(_, l)| l.starts_with("starting new worker"))
        .map(|&(t, _)| t)
        .take(n)
        .collect();
    assert_eq!(spawns.len(), n, "{timed:?}");
    spawns
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect()
}

/// A first worker that keeps failing is started again at the original's
/// pace, one --interval apart, for the first three attempts (ours backs
/// off after that, on purpose). Measured in one run as a ratio of the
/// original's gaps, never as an absolute time.
#[test]
fn the_respawn_pace_matches_server_starter() {
    let true = perl_or_skip() else { return };
    let steps = |run: &mut Run| run.line("starting new worker", 4);
    let args = ["--interval=1"];
    let (_, theirs) = scenario(PERL, "compat-pace", "exit 3", &args, &[], &steps);
    let (_, ours) = scenario(
        bin().to_str().unwrap(),
        "compat-pace",
        "exit 3",
        &args,
        &[],
        &steps,
    );
    let (theirs, ours) = (spawn_gaps(&theirs, 4), spawn_gaps(&ours, 4));
    for (o, t) in ours.iter().zip(&theirs) {
        let ratio = o / t;
        assert!(
            (0.5..2.0).contains(&ratio),
            "gaps between attempts: ours {ours:?}, the original's {theirs:?}"
        );
    }
}

/// Whether the original takes a `--port` form.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Accept,
    Refuse,
}

/// What one start under `bin` with `args` (`{P}` stands for a free port)
/// gives: SERVER_STARTER_PORT as the worker got it (descriptors kept),
/// and each listening socket's address and backlog as ss(8) shows them;
/// or the exit code when it refuses.
fn sockets_of(bin: &str, args: &[&str], port: u16) -> Result<(Vec<String>, Vec<String>), i32> {
    let dir = TempDir::new(&format!("compat-spec-{port}"));
    let probe = probe();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{P}", &port.to_string()))
        .collect();
    let mut server = Server::spawn(Command::new(bin).arg("--interval=0").args(&args).args([
        "--",
        &probe,
        dir.path().to_str().unwrap(),
    ]));
    let deadline = Instant::now() + DEADLINE;
    while !dir.join("1.report").exists() {
        if let Some(code) = server.exited() {
            return Err(code);
        }
        assert!(
            Instant::now() < deadline,
            "{bin} {args:?}: neither a worker nor an exit\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let report = dir.report(1, &server);
    let specs = report["env.SERVER_STARTER_PORT"]
        .split(';')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut sockets = Vec::new();
    for proto in ["-Hlnt", "-Hlnu"] {
        let out = Command::new("ss")
            .args([proto, &format!("sport = :{port}")])
            .output()
            .expect("ss(8) (iproute2) is needed");
        assert!(out.status.success(), "ss {proto}: {out:?}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            sockets.push(format!("{proto} {} backlog {}", f[3], f[2]));
        }
    }
    assert!(
        !sockets.is_empty(),
        "{bin} {args:?}: no socket on port {port} listed by ss\n{}",
        server.log()
    );
    server.stop();
    Ok((specs, sockets))
}

/// The original's SERVER_STARTER_PORT entries as ours are: the
/// descriptors it chose itself one lower. Its own script stays open on
/// descriptor 3 (Perl keeps the file after `__END__` as DATA), so its
/// first socket lands on 4; ours start at 3, as LISTEN_FDS needs. An
/// explicit `=FD` is honoured by both.
fn one_lower(specs: &[String], args: &[&str]) -> Vec<String> {
    let explicit = |fd: &str| {
        args.iter()
            .any(|a| a.trim_end().ends_with(&format!("={fd}")))
    };
    specs
        .iter()
        .map(|entry| match entry.rsplit_once('=') {
            Some((spec, fd)) if !explicit(fd) => {
                let fd: u32 = fd.parse().unwrap();
                format!("{spec}={}", fd - 1)
            }
            _ => entry.clone(),
        })
        .collect()
}

/// Every `--port` form the original takes gives the same socket and the
/// same SERVER_STARTER_PORT, descriptor included; the forms it refuses, we
/// refuse with the same exit code. Getopt::Long's own syntax (`+option`,
/// `+N`, `1_0`) and --backlog as well.
#[test]
fn port_specs_and_backlogs_match_server_starter() {
    use Expect::*;
    let true = perl_or_skip() else { return };
    let cases: &[(Expect, &[&str])] = &[
        (Accept, &["--port={P}"]),
        (Accept, &["--port=[127.0.0.1]:{P}"]),
        (Accept, &["--port=[127.0.0.1:{P}"]),
        (Accept, &["--port=127.0.0.1]:{P}"]),
        (Accept, &["--port=[localhost]:{P}"]),
        (Accept, &["--port=localhost:{P}"]),
        (Accept, &["--port= 127.0.0.1:{P} "]),
        (Accept, &["--port=[::1]:{P}"]),
        (Accept, &["--port=::1:{P}"]),
        (Accept, &["--port=[ ::1] : {P}"]),
        (Accept, &["--port=[0:0::1]:{P}"]),
        (Accept, &["--port=0{P}"]),
        (Accept, &["--port=127.0.0.1:0{P}"]),
        (Accept, &["--port=127.0.0.1:u{P}"]),
        (Accept, &["--port= u{P}"]),
        (Accept, &["--port={P} =5"]),
        (Accept, &["--port=127.0.0.1:{P}=7", "--port=u{P}=8"]),
        (
            Accept,
            &["+port=127.0.0.1:{P}", "+interval=+0", "--backlog=1_0"],
        ),
        (Accept, &["--port={P}", "--backlog=0"]),
        (Accept, &["--port={P}", "--backlog=7"]),
        (Accept, &["--port={P}", "--path={P}.sock"]),
        (Refuse, &["--port={P}= 5"]),
        (Refuse, &["--port=[::1 ]:{P}"]),
        (Refuse, &["--port=:{P}"]),
        (Refuse, &["--port=127.0.0.1 :{P}"]),
        (Refuse, &["--port=x{P}"]),
        (Refuse, &["--port={P}", "--backlog=x"]),
    ];
    for &(expect, args) in cases {
        let port = free_port();
        let theirs = sockets_of(PERL, args, port);
        let ours = sockets_of(bin().to_str().unwrap(), args, port);
        let taken = if theirs.is_ok() { Accept } else { Refuse };
        assert_eq!(taken, expect, "the original on {args:?}: {theirs:?}");
        // Where the original dies (255) we exit 1, as for every refusal.
        let theirs = theirs
            .map(|(specs, sockets)| (one_lower(&specs, args), sockets))
            .map_err(|code| if code == 255 { 1 } else { code });
        assert_eq!(
            ours, theirs,
            "{args:?}: ours (left), the original's (right, with the descriptors \
             it chose one lower and its 255 as 1)"
        );
    }
}
