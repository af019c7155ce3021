//! Faults injected from outside: hostile files (FIFOs, devices,
//! symlinks), values that do not fit, a log command that dies, a full
//! filesystem, descriptor and process exhaustion. start_server says what
//! is wrong in one line and carries on, or refuses to start and leaves
//! nothing behind.

use std::os::unix::fs::FileTypeExt;
use std::process::Command;

use crate::support::*;

fn run(cmd: &str, args: &[&str]) {
    let ok = Command::new(cmd).args(args).status().unwrap();
    assert!(ok.success(), "{cmd} {args:?} failed");
}

#[test]
fn an_envdir_with_a_fifo_a_device_and_an_overlong_line_neither_blocks_nor_breaks_spawns() {
    let dir = TempDir::with_mode("envdir-hostile", "graceful");
    let env = dir.join("env");
    std::fs::create_dir(&env).unwrap();
    run("mkfifo", &[env.join("BLOCK").to_str().unwrap()]);
    std::os::unix::fs::symlink("/dev/zero", env.join("ZERO")).unwrap();
    std::fs::write(env.join("LONG"), vec![b'x'; 200 * 1024]).unwrap();
    std::fs::write(env.join("FINE"), "yes\n").unwrap();
    let envdir = format!("--envdir={}", env.display());
    let mut server = Server::start(&[
        &envdir,
        "--interval=0",
        "--",
        &probe(),
        dir.path().to_str().unwrap(),
    ]);
    let r = dir.report(1, &server);
    assert_eq!(r["env.FINE"], "yes");
    for absent in ["env.BLOCK", "env.ZERO", "env.LONG"] {
        assert!(!r.contains_key(absent), "{absent} reached the worker");
    }
    server.wait_line(&format!(
        "envdir {}: LONG: its first line is longer than",
        env.display()
    ));
    // Restarts go on, and the warning is not repeated for the same file.
    server.signal("HUP");
    dir.report(2, &server);
    assert_eq!(server.count("LONG: its first line"), 1, "{}", server.log());
    assert!(server.stop().success(), "{}", server.log());
    assert_eq!(dir.stopped_by(2), "15");
}

/// Bytes a process has read so far (/proc/PID/io).
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: ")?.parse().ok())
        .unwrap()
}

#[test]
fn the_envdir_is_not_read_again_on_every_turn_of_the_loop() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::with_mode("envdir-turns", "run");
    let env = dir.join("env");
    std::fs::create_dir(&env).unwrap();
    // Reading the envdir once reads a megabyte.
    for i in 0..10 {
        let mut line = vec![b'v'; 100 * 1024];
        line.push(b'\n');
        std::fs::write(env.join(format!("VAR{i}")), line).unwrap();
    }
    let envdir = format!("--envdir={}", env.display());
    let mut server = Server::start(&[&envdir, "--readiness=notify", "--", &probe(), "notify-once"]);
    server.wait_line("is ready");
    let worker = server.wait_worker(1);
    let address = env_var(&raw_environ(worker), "NOTIFY_SOCKET").unwrap();
    let before = bytes_read(server.pid);
    // 200 turns of the loop: notifications from a process that is no
    // worker, each read and ignored.
    // Paced, so that each is a turn of its own (were some read together,
    // the bound below would only be easier to meet).
    let s = UnixDatagram::unbound().unwrap();
    for _ in 0..200 {
        s.send_to(b"STATUS=x", &address).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    server.wait_line("ignoring a notification");
    server.signal("USR1");
    server.wait_line("received USR1");
    // The signal read it once (1 MB); 200 turns reading it would read
    // 200 MB. Each notification costs a few /proc/PID/stat reads.
    let read = bytes_read(server.pid) - before;
    assert!(read < 10 << 20, "{read} bytes read for 200 notifications");
    assert!(server.stop().success());
}

#[test]
fn pid_and_status_files_that_are_not_regular_files_are_refused_and_left_alone() {
    let true = root_or_skip("mknod(1) of a device node") else {
        return;
    };
    let dir = TempDir::new("hostile-files");
    let node = dir.join("null");
    run("mknod", &[node.to_str().unwrap(), "c", "1", "3"]);
    run("mkfifo", &[dir.s("fifo").as_str()]);
    std::fs::write(dir.join("victim"), "precious\n").unwrap();
    std::os::unix::fs::symlink(dir.join("victim"), dir.join("link")).unwrap();
    std::fs::create_dir(dir.join("subdir")).unwrap();
    for (option, name, kind) in [
        ("--pid-file", "null", "a device"),
        ("--pid-file", "fifo", "a FIFO"),
        ("--pid-file", "link", "a symlink"),
        ("--pid-file", "subdir", "a directory"),
        ("--status-file", "null", "a device"),
        ("--status-file", "fifo", "a FIFO"),
        ("--status-file", "link", "a symlink"),
        ("--status-file", "subdir", "a directory"),
    ] {
        let arg = format!("{option}={}", dir.s(name));
        let Ended { code, err, .. } = run_to_end(&[&arg, "--port=127.0.0.1:0", "true"]);
        assert_eq!(code, Some(1), "{arg}: {err}");
        assert!(
            err.contains(&format!("it is {kind}, not a regular file")),
            "{arg}: {err}"
        );
        assert_eq!(err.matches("fatal:").count(), 1, "{err}");
    }
    assert!(
        std::fs::metadata(&node)
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::metadata(dir.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("victim")).unwrap(),
        "precious\n"
    );
    assert_eq!(
        dir.entries(),
        ["fifo", "link", "null", "subdir", "victim"],
        "nothing left behind"
    );
    // The client modes never wait on a FIFO for a pid file.
    let fifo = format!("--pid-file={}", dir.s("fifo"));
    let Ended { code, err, .. } = run_to_end(&["--stop", &fifo]);
    assert_eq!(code, Some(1));
    assert!(err.contains("it is not a regular file"), "{err}");
}

#[test]
fn a_log_command_that_exits_is_started_again_and_workers_live_on() {
    let dir = TempDir::new("log-command-exits");
    let (_, addr) = free_addr();
    let st = dir.join("status");
    // It says it started, takes one line and exits.
    let log = format!(
        "--log-file=| echo >> {}; read line; echo \"$line\" >> {}",
        dir.s("starts"),
        dir.s("log")
    );
    let mut server = Server::start(&[
        &format!("--port={addr}"),
        &format!("--status-file={}", st.display()),
        "--interval=0",
        &log,
        "--",
        example("hello").to_str().unwrap(),
    ]);
    server.wait_line("log command (pid");
    // Every later worker writes to start_server's output (or to the log
    // command started again), never to a pipe nobody reads.
    for generation in 2..=4 {
        server.signal("HUP");
        wait_status(&st, &[generation], &server);
        let body = get(&addr).unwrap();
        assert!(
            body.starts_with(&format!("hello from generation {generation}")),
            "{body}\n{}",
            server.log()
        );
    }
    // It is started again (after its backoff), and a line written after
    // that reaches it.
    let lines = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    wait_for("the log command started again", &server, || {
        (lines("starts").len() >= 2).then_some(())
    });
    server.signal("HUP");
    let logged = wait_for("a line through the new log command", &server, || {
        let logged = lines("log");
        (logged.len() >= 2).then_some(logged)
    });
    assert!(logged[1].contains("received HUP"), "{logged:?}");
    assert_eq!(
        server.count("log command (pid"),
        1,
        "said once\n{}",
        server.log()
    );
    assert!(server.stop().success(), "{}", server.log());
}

#[test]
fn values_are_reported_on_one_line_and_kept_byte_for_byte() {
    let dir = TempDir::new("values");
    // A newline in a value: one line, with the newline shown.
    let Ended { code, err, .. } = run_to_end(&["--port=80\nrm -rf", "true"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("80\\nrm -rf"), "{err}");
    // A non-UTF-8 path after one dash names that very file.
    use std::os::unix::ffi::OsStrExt;
    let mut path = dir.path().as_os_str().as_bytes().to_vec();
    path.extend_from_slice(b"/pid-\xe9");
    let mut arg = b"-pid-file=".to_vec();
    arg.extend_from_slice(&path);
    let mut server = Server::spawn(
        Command::new(bin())
            .arg(std::ffi::OsStr::from_bytes(&arg))
            .args(["--interval=0", "--", &probe(), dir.path().to_str().unwrap()]),
    );
    server.wait_worker(1);
    let pid_file = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&path));
    wait_for("the pid file", &server, || pid_file.exists().then_some(()));
    assert!(server.stop().success());
    // A --path given twice, however written: refused, the first's
    // socket file untouched.
    std::fs::write(dir.join("app.sock"), "").unwrap();
    let once = format!("--path={}", dir.s("app.sock"));
    let again = format!("--path={}/./app.sock", dir.path().display());
    let Ended { code, err, .. } = run_to_end(&[&once, &again, "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is given twice"), "{err}");
    assert!(dir.join("app.sock").exists());
}

/// A worker that sends STATUS= lines with terminal escapes, fast.
const NOISY_WORKER: &str = r#"
import os, signal, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a = os.environ['NOTIFY_SOCKET'].replace('@', '\0', 1)
s.sendto(b"READY=1", a)
for i in range(50):
    s.sendto(b"STATUS=\x1b[31mred\x1b[0m line %d" % i, a)
signal.pause()
"#;

#[test]
fn workers_status_lines_are_escaped_and_rate_limited() {
    let mut server = Server::start(&["--readiness=notify", "--", "python3", "-c", NOISY_WORKER]);
    server.wait_line("not shown");
    let shown = server.count("status: \\x1b[31mred\\x1b[0m line");
    assert!((1..=3).contains(&shown), "{}", server.log());
    assert!(
        !server.log().contains('\x1b'),
        "a raw escape reached the log"
    );
    // Every line is accounted for, shown or summed up, however the 50
    // fall into the limiter's windows; most are not shown.
    let hidden = |log: &[String]| -> usize {
        log.iter()
            .filter_map(|l| l.strip_suffix(" more worker STATUS= lines not shown"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .sum()
    };
    let shown = wait_for("all 50 STATUS= lines accounted for", &server, || {
        let shown = server.count("status: \\x1b[31mred\\x1b[0m line");
        (shown + hidden(&server.lines()) == 50).then_some(shown)
    });
    assert!(shown < 25, "{}", server.log());
    assert!(server.stop().success());
}

/// start_server with its status file on a tmpfs of its own, in a mount
/// namespace; None where that is not permitted.
fn with_small_tmpfs(dir: &TempDir, args: &[&str]) -> Option<Server> {
    if !tool_or_skip(
        "unshare",
        &["--mount", "--propagation", "private", "true"],
        "util-linux",
    ) {
        return None;
    }
    std::fs::create_dir(dir.join("small")).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {} && exec \"$@\"",
        dir.s("small")
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(bin())
    .args(args);
    Some(Server::spawn(&mut cmd))
}

#[test]
fn a_full_filesystem_is_reported_and_restart_gives_up_at_its_timeout() {
    let dir = TempDir::with_mode("enospc", "run");
    let st = format!("{}/small/status", dir.path().display());
    let pid = dir.s("pid");
    let Some(mut server) = with_small_tmpfs(
        &dir,
        &[
            "--interval=0",
            &format!("--pid-file={pid}"),
            &format!("--status-file={st}"),
            "--",
            &probe(),
            dir.path().to_str().unwrap(),
        ],
    ) else {
        return;
    };
    server.wait_worker(1);
    // The tmpfs, as the test sees it: through start_server's root.
    let small = format!("/proc/{}/root{}/small", server.pid, dir.path().display());
    let status = format!("{small}/status");
    wait_file_contains(std::path::Path::new(&status), "1:", &server);
    // Fill it up.
    let mut filler = std::fs::File::create(format!("{small}/filler")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    let out = Command::new(bin())
        .args(["--restart", "--timeout=1"])
        .arg(format!("--pid-file={pid}"))
        .arg(format!("--status-file={status}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", server.log());
    assert!(
        err.contains("timed out after 1 s waiting for a new generation"),
        "{err}"
    );
    server.wait_line(&format!(
        "unable to write status file {st}: No space left on device"
    ));
    // Room again: the status file catches up (it is tried again every
    // second), without a line per attempt.
    std::fs::remove_file(format!("{small}/filler")).unwrap();
    wait_file_contains(std::path::Path::new(&status), "2:", &server);
    assert_eq!(
        server.log().matches("unable to write status file").count(),
        1
    );
    assert!(server.stop().success(), "{}", server.log());
}

#[test]
fn descriptor_exhaustion_during_a_hup_restarts_and_the_status_file_catches_up() {
    // Starting a worker takes no descriptor of start_server's own (the
    // exec's outcome comes back in shared memory): with none free, a
    // restart goes through; the status file, which needs one, is written
    // once there is room again.
    let dir = TempDir::with_mode("emfile", "run");
    let st = dir.join("status");
    let mut server = Server::start(&[
        "--interval=0",
        &format!("--status-file={}", st.display()),
        "--",
        &probe(),
        dir.path().to_str().unwrap(),
    ]);
    let first = wait_status(&st, &[1], &server)[0].1;
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.pid))
        .unwrap()
        .count();
    let pid = server.pid.to_string();
    run("prlimit", &["--pid", &pid, &format!("--nofile={open}:")]);
    server.signal("HUP");
    // EMFILE, in musl's words: "No file descriptors available".
    server.wait_line(&format!(
        "unable to write status file {}: No file descriptors available",
        st.display()
    ));
    let second = server.wait_worker(2);
    server.wait_line(&format!("old worker {first} died"));
    assert_eq!(status(&st), [(1, first)], "not written yet");
    run("prlimit", &["--pid", &pid, "--nofile=1024:"]);
    wait_for("the status file to catch up", &server, || {
        (status(&st) == [(2, second)]).then_some(())
    });
    assert!(server.stop().success(), "{}", server.log());
}

#[test]
fn fork_failure_as_an_unprivileged_user_is_retried_until_it_works() {
    let true = (root_or_skip("running as nobody")
        && tool_or_skip("setpriv", &["--version"], "util-linux"))
    else {
        return;
    };
    let dir = TempDir::with_mode("eagain", "run");
    let start_server = copy_for_all(&dir, &bin(), "start_server");
    let probe = copy_for_all(&dir, &example("probe"), "probe");
    // As nobody, with room for two processes: start_server and one
    // worker (the limit counts every process nobody runs).
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(["prlimit", "--nproc=2:2", "--"])
        .arg(&start_server)
        .args(["--interval=0", "--"])
        .arg(&probe)
        .arg(dir.path());
    let mut server = Server::spawn(&mut cmd);
    let first = server.wait_worker(1);
    dir.report(1, &server);
    // A restart cannot fork: the old generation goes on.
    server.signal("HUP");
    server.wait_line("unable to fork: Resource temporarily unavailable");
    assert!(alive(first));
    // Room again once the old worker is gone: the retry goes through.
    // (The failed attempt used up generation 2.)
    kill("KILL", first);
    let r = dir.report(3, &server);
    assert_ne!(r["pid"], first.to_string());
    assert!(server.stop().success(), "{}", server.log());
}
