//! start_server as PID 1 of a real container: the example Containerfile
//! (FROM scratch) built and run with podman and runc, the runtime that
//! Kubernetes and Docker use. Skipped by the skip rule where no container
//! can be started (not root, no podman; a failure under CI); `.ci/run`
//! installs podman. An image that does not build always fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::support::*;

/// podman with its own storage under target/tmp, and the settings that
/// work on a plain host as root: vfs storage, cgroupfs, runc.
struct Podman {
    root: PathBuf,
}

/// The test image: the example image plus the tests' probe.
const IMAGE: &str = "localhost/start_server-test";

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.root.join("root"))
            // podman refuses a run root longer than 50 characters.
            .arg("--runroot")
            .arg(std::env::temp_dir().join("start_server-podman-run"))
            .args([
                "--storage-driver=vfs",
                "--events-backend=file",
                "--cgroup-manager=cgroupfs",
                "--runtime=runc",
            ]);
        c
    }

    /// Runs a podman command to its end: its exit code and output.
    fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.cmd().args(args).output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    }

    fn build(&self, context: &Path, tag: &str) -> Result<(), String> {
        let (code, out) = self.run(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
        match code {
            Some(0) => Ok(()),
            _ => Err(format!("podman build {tag} failed: {out}")),
        }
    }
}

/// A hard limit of ours, from /proc/self/limits ("Max open files").
fn hard_limit(name: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().nth(1)?.parse().ok()
}

/// podman and the test image, built once per test run; None where the
/// skip rule lets a test skip (podman missing, not root). A build that
/// fails fails the test: the image that ships is broken.
fn podman() -> Option<&'static Podman> {
    static PODMAN: OnceLock<Result<Podman, String>> = OnceLock::new();
    let true =
        (root_or_skip("podman with runc") && tool_or_skip("podman", &["--version"], "podman"))
    else {
        return None;
    };
    let p = PODMAN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("podman");
        let podman = Podman { root };
        // The example image, from examples/Containerfile as it ships...
        let context = podman.root.join("context");
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(&context).unwrap();
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (from, to) in [
            (bin(), "start_server"),
            (example("hello"), "hello"),
            (here.join("examples/Containerfile"), "Containerfile"),
        ] {
            std::fs::copy(from, context.join(to)).unwrap();
        }
        podman.build(&context, "localhost/start_server-example")?;
        // ...and the probe on top, for the tests, also as the /bin/sh
        // podman runs a healthcheck with (see examples/probe.rs).
        std::fs::copy(example("probe"), context.join("probe")).unwrap();
        std::fs::write(
            context.join("Containerfile"),
            "FROM localhost/start_server-example\nCOPY probe /probe\nCOPY probe /bin/sh\n",
        )
        .unwrap();
        podman.build(&context, IMAGE)?;
        let _ = podman.run(&["image", "prune", "-f"]);
        Ok(podman)
    });
    match p {
        Ok(p) => Some(p),
        Err(why) => panic!("{why}"),
    }
}

/// The host's pid of the one process whose command line is `/probe`
/// followed by `args`.
fn host_pid_of(args: &[&str]) -> u32 {
    let mut wanted = b"/probe".to_vec();
    for a in args {
        wanted.push(0);
        wanted.extend_from_slice(a.as_bytes());
    }
    wanted.push(0);
    let found: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "processes running /probe {args:?}: {found:?}"
    );
    found[0]
}

/// The test's directory, with the probe's `mode`, and a container of the
/// test image running start_server with `options` and the probe working
/// there; None where the skip rule lets the test skip.
fn probe_container(test: &str, mode: &str, options: &[&str]) -> Option<(TempDir, Container)> {
    let podman = podman()?;
    let dir = TempDir::with_mode(&format!("ct-{test}"), mode);
    let mut args = options.to_vec();
    args.extend(["--", "/probe", "/d"]);
    let c = Container::run(podman, test, &dir, &args);
    Some((dir, c))
}

/// A container of the test image, removed when dropped.
struct Container {
    name: String,
    podman: &'static Podman,
    /// `podman run`, attached: its output is start_server's, its exit
    /// status the container's.
    server: Server,
}

impl Container {
    /// Runs the test image with start_server's `args`, in the host's
    /// network (loopback only) with `dir` at /d.
    fn run(podman: &'static Podman, test: &str, dir: &TempDir, args: &[&str]) -> Container {
        Self::run_with(podman, test, dir, &[], args, |c| c)
    }

    fn run_with(
        podman: &'static Podman,
        test: &str,
        dir: &TempDir,
        run_options: &[&str],
        args: &[&str],
        wrap: impl FnOnce(Command) -> Command,
    ) -> Container {
        let name = format!("start_server-test-{}-{test}", std::process::id());
        let nofile = hard_limit("Max open files").unwrap_or(1024).min(4096);
        let nproc = hard_limit("Max processes").unwrap_or(4096).min(4096);
        let mut cmd = podman.cmd();
        cmd.args(["run", "--rm", "--name", &name, "--network=host"])
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            .arg(format!("--ulimit=nproc={nproc}:{nproc}"))
            .arg(format!("--volume={}:/d", dir.path().display()))
            .args(run_options)
            .arg(IMAGE)
            .args(args);
        let interactive = run_options.contains(&"--interactive");
        let mut cmd = wrap(cmd);
        let server = match interactive {
            true => Server::spawn_interactive(&mut cmd),
            false => Server::spawn(&mut cmd),
        };
        Container {
            name,
            podman,
            server,
        }
    }

    /// `start_server --restart` run inside, with the pid and status files
    /// under /d: it exits `code`, saying `needle`.
    fn restart_expecting(&self, code: i32, needle: &str) {
        let (got, out) = self.exec(&[
            "/start_server",
            "--restart",
            "--pid-file=/d/pid",
            "--status-file=/d/status",
        ]);
        assert_eq!(got, Some(code), "--restart: {out}\n{}", self.server.log());
        assert!(out.contains(needle), "--restart: {out}");
    }

    fn exec(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(args);
        self.podman.run(&all)
    }

    /// `podman kill --signal=SIG`: to start_server, PID 1 inside.
    fn signal(&self, sig: &str) {
        let (code, out) = self
            .podman
            .run(&["kill", &format!("--signal={sig}"), &self.name]);
        assert_eq!(code, Some(0), "podman kill: {out}\n{}", self.server.log());
    }

    /// `podman stop`, in the background (it returns when the container
    /// has stopped); wait for that with `wait_exit`.
    fn stop(&self) {
        let mut stop = self.podman.cmd();
        stop.args(["stop", "--time=10", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::thread::spawn(move || stop.status());
    }

    /// The container's exit status.
    fn wait_exit(&mut self) -> Option<i32> {
        self.server.wait_exit().code()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "--force", "--time=0", &self.name]);
    }
}

fn port_args() -> (String, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (format!("--port={addr}"), addr)
}

#[test]
fn serves_restarts_under_load_and_stops_gracefully() {
    let Some(podman) = podman() else { return };
    let dir = TempDir::new("ct-load");
    let (port, addr) = port_args();
    let mut c = Container::run(
        podman,
        "load",
        &dir,
        &[
            &port,
            "--interval=0.2",
            "--status-file=/d/status",
            "--",
            "/hello",
        ],
    );
    c.server.wait_line("start_server (pid:1) starting now...");
    wait_for("the server to answer", &c.server, || get(&addr).ok());
    let load = Load::start(&addr, 4, "hello from generation");
    // Through `podman kill`: the signal proxy of `podman run` may not be
    // in place yet when the server first answers.
    for generation in 2..=4 {
        let before = load.ok();
        c.signal("HUP");
        wait_status(&dir.join("status"), &[generation], &c.server);
        wait_for("requests after a restart", &c.server, || {
            (load.ok() > before + 20).then_some(())
        });
    }
    // No request failed (finish checks it) across the restarts above.
    load.finish();
    c.stop();
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
    c.server.wait_line("exiting");
}

#[test]
fn client_modes_in_the_container_exit_0() {
    let Some(podman) = podman() else { return };
    let dir = TempDir::with_mode("ct-clients", "graceful");
    // Kept after it stops (until dropped): podman exec reads the exec's
    // exit status from the container, which --rm removes at once.
    let mut c = Container::run_with(
        podman,
        "clients",
        &dir,
        &["--rm=false"],
        &[
            "--interval=0.2",
            "--pid-file=/d/pid",
            "--status-file=/d/status",
            "--",
            "/probe",
            "/d",
        ],
        |c| c,
    );
    wait_status(&dir.join("status"), &[1], &c.server);
    c.restart_expecting(0, "");
    assert_eq!(status(&dir.join("status")).len(), 1);
    // The exec probe an orchestrator would run: a generation serves.
    let (code, out) = c.exec(&[
        "/start_server",
        "--status",
        "--pid-file=/d/pid",
        "--status-file=/d/status",
    ]);
    assert_eq!(code, Some(0), "--status: {out}\n{}", c.server.log());
    assert!(
        out.starts_with("start_server 1 running\ngeneration 2 pid "),
        "{out}"
    );
    assert!(out.ends_with(" serving\n"), "{out}");
    let (code, out) = c.exec(&["/start_server", "--stop", "--pid-file=/d/pid"]);
    assert_eq!(code, Some(0), "--stop: {out}\n{}", c.server.log());
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
    assert_eq!(dir.stopped_by(2), "15");
}

#[test]
fn orphans_are_reaped_and_helpers_stopped_before_start_server_exits() {
    let Some((dir, mut c)) = probe_container("orphans", "graceful helper", &["--interval=0"])
    else {
        return;
    };
    dir.report(1, &c.server);
    wait_file_contains(&dir.join("1.helper"), "", &c.server);
    c.signal("HUP");
    dir.report(2, &c.server);
    wait_file_contains(&dir.join("2.helper"), "", &c.server);
    c.server.wait_line("old worker");
    // The first generation's helper is an orphan now, PID 1's child. It
    // ends: PID 1 reaps it (a zombie would keep its /proc entry).
    let orphan = host_pid_of(&["helper-run", "/d", "1"]);
    kill("TERM", orphan);
    wait_file_contains(&dir.join("1.helper-stopped"), "", &c.server);
    wait_gone(orphan, &c.server);
    c.stop();
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
    c.server
        .wait_line("sending TERM to what the workers left behind:");
    for g in [1, 2] {
        assert!(
            dir.join(&format!("{g}.helper-stopped")).exists(),
            "helper {g} got no TERM\n{}",
            c.server.log()
        );
    }
}

#[test]
fn a_worker_ignoring_term_is_killed_by_drain_and_stop_timeouts() {
    let Some((dir, mut c)) = probe_container(
        "stubborn",
        "stubborn",
        &[
            "--interval=0",
            "--drain-timeout=0.3",
            "--stop-timeout=0.3",
            "--pid-file=/d/pid",
            "--status-file=/d/status",
        ],
    ) else {
        return;
    };
    wait_status(&dir.join("status"), &[1], &c.server);
    dir.report(1, &c.server);
    c.restart_expecting(0, "");
    c.server
        .wait_line("still running 0.3 s after TERM, sending KILL (--drain-timeout)");
    dir.report(2, &c.server);
    c.stop();
    assert_eq!(c.wait_exit(), Some(2), "{}", c.server.log());
    c.server
        .wait_line("workers still running after --stop-timeout, sending KILL");
}

#[test]
fn a_restart_that_never_comes_up_is_given_up_and_the_old_generation_serves() {
    let Some((dir, c)) = probe_container(
        "give-up-restart",
        "run",
        &[
            "--interval=1",
            "--start-retries=1",
            "--pid-file=/d/pid",
            "--status-file=/d/status",
        ],
    ) else {
        return;
    };
    wait_status(&dir.join("status"), &[1], &c.server);
    let first = status(&dir.join("status"))[0].1;
    dir.mode("exit 1");
    c.restart_expecting(1, "gave up the restart");
    c.server.wait_line(&format!(
        "2 failed starts in a row, giving up the restart (--start-retries=1): generation 1 (pid {first}) goes on serving"
    ));
    assert_eq!(status(&dir.join("status")), [(1, first)]);
    dir.mode("run");
    c.restart_expecting(0, "");
}

#[test]
fn signal_group_reaches_what_a_wrapper_started() {
    let Some(podman) = podman() else { return };
    let dir = TempDir::with_mode("ct-signal-group", "graceful");
    let args = ["--interval=0", "--signal-group", "--status-file=/d/status"];
    let wrapped = ["--", "/probe", "wrap", "/d"];
    let mut c = Container::run(
        podman,
        "signal-group",
        &dir,
        &[&args[..], &wrapped].concat(),
    );
    dir.report(1, &c.server);
    c.signal("HUP");
    dir.report(2, &c.server);
    // The wrapper passes nothing on: the probe under it stopped on the
    // group's signal, while start_server still runs.
    wait_file_contains(&dir.join("1.stopped"), "15 ", &c.server);
    assert_eq!(c.server.exited(), None);
    c.stop();
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
    assert_eq!(dir.stopped_by(2), "15");
}

#[test]
fn a_crash_loop_gives_up_with_status_3() {
    let Some((_dir, mut c)) =
        probe_container("crash", "exit 1", &["--interval=0", "--start-retries=2"])
    else {
        return;
    };
    assert_eq!(c.wait_exit(), Some(3), "{}", c.server.log());
    c.server.wait_line("giving up (--start-retries=2)");
}

#[test]
fn shutdown_delay_keeps_answering_for_its_duration() {
    let Some(podman) = podman() else { return };
    let dir = TempDir::new("ct-delay");
    let (port, addr) = port_args();
    let mut c = Container::run(
        podman,
        "delay",
        &dir,
        &[&port, "--interval=0", "--shutdown-delay=3", "--", "/hello"],
    );
    wait_for("the server to answer", &c.server, || get(&addr).ok());
    let asked = std::time::Instant::now();
    c.stop();
    c.server
        .wait_line("serving 3 s more before stopping the workers");
    // Served during the delay, and for all of it: the line that ends it
    // arrives no sooner than 3 s after the stop was asked (one clock).
    assert!(get(&addr).is_ok(), "{}", c.server.log());
    let answered = std::time::Instant::now();
    let stopping = c.server.line_arrival("sending TERM to all workers");
    assert!(answered < stopping, "{}", c.server.log());
    assert!(
        stopping.duration_since(asked) >= std::time::Duration::from_secs(3),
        "{}",
        c.server.log()
    );
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
}

/// `podman run -it` under script(1), which gives it a terminal: a ^C
/// typed there goes, through the container's terminal, to its foreground
/// process group: start_server's alone.
fn on_a_terminal(cmd: Command) -> Command {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--flush", "--return", "--command"])
        .arg(line.join(" "))
        .arg("/dev/null");
    script
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Types ^C on the terminal of a container run by [`on_a_terminal`].
fn type_ctrl_c(c: &mut Container) {
    use std::io::Write;
    let stdin = c.server.stdin().expect("script's stdin");
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
}

/// The threads of the first worker of the container's PID 1, as the host
/// sees them (hello answers each connection on a thread of its own).
fn worker_threads(podman: &Podman, name: &str) -> Option<usize> {
    let (_, pid) = podman.run(&["inspect", "--format={{.State.Pid}}", name]);
    let pid: u32 = pid.trim().parse().ok()?;
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let worker: u32 = children.split_whitespace().next()?.parse().ok()?;
    std::fs::read_dir(format!("/proc/{worker}/task"))
        .ok()
        .map(Iterator::count)
}

#[test]
fn ctrl_c_on_podman_run_it_reaches_only_start_server() {
    let Some(podman) = podman() else { return };
    let true = tool_or_skip("script", &["--version"], "bsdutils") else {
        return;
    };
    // The probe tells which signal it got: TERM from start_server, not
    // the terminal's INT.
    let dir = TempDir::with_mode("ct-ctrl-c", "graceful");
    let mut c = Container::run_with(
        podman,
        "ctrl-c",
        &dir,
        &["--interactive", "--tty"],
        &["--interval=0", "--", "/probe", "/d"],
        on_a_terminal,
    );
    dir.report(1, &c.server);
    type_ctrl_c(&mut c);
    c.server
        .wait_line("received INT, sending TERM to all workers");
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
    assert_eq!(dir.stopped_by(1), "15");

    // A request in flight when ^C is typed is answered.
    let (port, addr) = port_args();
    let mut c = Container::run_with(
        podman,
        "ctrl-c-hello",
        &dir,
        &["--interactive", "--tty"],
        &[&port, "--interval=0", "--", "/hello"],
        on_a_terminal,
    );
    wait_for("the server to answer", &c.server, || get(&addr).ok());
    let threads = worker_threads(podman, &c.name).unwrap();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    {
        use std::io::Write;
        conn.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    }
    wait_for("the worker to take the connection", &c.server, || {
        (worker_threads(podman, &c.name)? > threads).then_some(())
    });
    type_ctrl_c(&mut c);
    c.server.wait_line("1 request(s) in flight");
    {
        use std::io::{Read, Write};
        conn.write_all(b"\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("hello from generation 1"), "{answer:?}");
    }
    assert_eq!(c.wait_exit(), Some(0), "{}", c.server.log());
}

/// The pod of examples/kubernetes.yaml, played by `podman kube play`:
/// removed (`podman kube down`) when dropped.
struct Pod {
    podman: &'static Podman,
    manifest: PathBuf,
    conf: PathBuf,
}

impl Pod {
    /// A podman command for the pod: with a containers.conf of our own,
    /// since `kube play` has no --ulimit and podman's default limits are
    /// above what this host allows.
    fn cmd(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .podman
            .cmd()
            .env("CONTAINERS_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    }

    /// What the pod's start_server said.
    fn logs(&self) -> String {
        self.cmd(&["logs", "hello-server"]).1
    }

    /// Waits until `probe` says yes; on timeout, fails with the pod's logs.
    fn wait(&self, what: &str, mut probe: impl FnMut() -> bool) {
        let end = std::time::Instant::now() + DEADLINE;
        while !probe() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}:\n{}",
                self.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let manifest = self.manifest.to_str().unwrap().to_string();
        let _ = self.cmd(&["kube", "down", &manifest]);
    }
}

/// examples/kubernetes.yaml as podman 4.3 can run it here, each change
/// said: the test image (the example image plus a /bin/sh stand-in:
/// podman runs an exec probe's healthcheck through `/bin/sh -c`, which a
/// kubelet does not), a host port to reach it, and the ConfigMap volume as
/// a host directory on which the test replays kubelet's atomic writer
/// (podman copies a ConfigMap into its volume once and never updates it).
fn manifest_for_podman(port: u16, config: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes.yaml"),
    )
    .unwrap();
    let swaps = [
        (
            "image: localhost/start_server-example",
            format!("image: {IMAGE}"),
        ),
        (
            "- containerPort: 8080",
            format!("- containerPort: 8080\n          hostPort: {port}"),
        ),
        (
            "configMap:\n        name: hello-config",
            format!(
                "hostPath:\n        path: {}\n        type: Directory",
                config.display()
            ),
        ),
    ];
    swaps.into_iter().fold(text, |text, (from, to)| {
        assert!(
            text.contains(from),
            "examples/kubernetes.yaml lacks {from:?}"
        );
        text.replacen(from, &to, 1)
    })
}

/// The Kubernetes manifest, run by `podman kube play`: it serves; a
/// ConfigMap update as kubelet writes it makes a new generation; the
/// liveness probe (`podman healthcheck run`) passes; and the pod stops
/// gracefully: TERM, the shutdown delay, the workers stopped, exit 0.
/// (`podman kube down` alone kills at once in podman 4.3: the pod is
/// stopped first.)
#[test]
fn the_kubernetes_manifest_serves_restarts_on_a_configmap_update_and_stops_gracefully() {
    let Some(podman) = podman() else { return };
    let dir = TempDir::new("kube");
    let config = dir.join("config");
    std::fs::create_dir(&config).unwrap();
    publish(&config, 1, &[("greeting.conf", "hello\n")]);
    let port = free_port();
    let manifest = dir.join("kubernetes.yaml");
    std::fs::write(&manifest, manifest_for_podman(port, &config)).unwrap();
    let nofile = hard_limit("Max open files").unwrap_or(1024).min(4096);
    let nproc = hard_limit("Max processes").unwrap_or(4096).min(4096);
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n"
        ),
    )
    .unwrap();
    let pod = Pod {
        podman,
        manifest: manifest.clone(),
        conf,
    };
    let (code, out) = pod.cmd(&["kube", "play", manifest.to_str().unwrap()]);
    assert_eq!(code, Some(0), "podman kube play: {out}");
    let addr = format!("127.0.0.1:{port}");
    let serves = |generation: u64| {
        get(&addr).is_ok_and(|b| b.starts_with(&format!("hello from generation {generation},")))
    };
    pod.wait("generation 1 serving", || serves(1));
    publish(&config, 2, &[("greeting.conf", "hello again\n")]);
    pod.wait("generation 2 serving", || serves(2));
    let (code, out) = pod.cmd(&["healthcheck", "run", "hello-server"]);
    assert_eq!(code, Some(0), "the liveness probe: {out}\n{}", pod.logs());
    let (code, out) = pod.cmd(&["pod", "stop", "hello"]);
    assert_eq!(code, Some(0), "podman pod stop: {out}");
    let (_, exit) = pod.cmd(&["inspect", "hello-server", "--format", "{{.State.ExitCode}}"]);
    let logs = pod.logs();
    assert_eq!(exit.trim(), "0", "{logs}");
    for line in [
        "a watched path changed, spawning a new worker",
        "received TERM, serving 5 s more before stopping the workers (--shutdown-delay)",
        "received TERM, sending TERM to all workers:",
        "exiting",
    ] {
        assert!(logs.contains(line), "{line:?} not in:\n{logs}");
    }
    assert!(!logs.contains("no writable directory"), "{logs}");
}
