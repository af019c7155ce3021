//! Live upgrade of the supervisor itself: SIGUSR2 (SIGUSR1 as
//! socketmaster) executes the program file again, in place.

use std::process::Command;

use crate::support::*;

/// A private copy of the binary, so that tests can replace it.
fn private_copy(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    copy_program(&bin(), &path);
    path
}

/// start_server from a private copy, with a probe worker and a status
/// file, once its first worker is up: the copy's path, the status file's.
fn start_private_copy(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf, Server) {
    dir.mode("run");
    let exe = private_copy(dir, "start_server");
    let probe = probe();
    let st = dir.join("status");
    let server = Server::spawn(Command::new(&exe).args([
        "--interval=0",
        &format!("--status-file={}", st.display()),
        &probe,
        dir.path().to_str().unwrap(),
    ]));
    wait_status(&st, &[1], &server);
    (exe, st, server)
}

/// Installs `contents` at `path` the way package managers do: a new file
/// renamed over the old one (the running image keeps its own inode).
fn install(path: &std::path::Path, contents: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    write_program(&tmp, contents);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn no_request_fails_across_20_live_upgrades_and_everything_works_after() {
    let dir = TempDir::new("upgrade-load");
    let (_, addr) = free_addr();
    let hello = example("hello").display().to_string();
    let (st, pid) = (dir.join("status"), dir.s("pid"));
    let mut server = Server::start(&[
        &format!("--port={addr}"),
        &format!("--status-file={}", st.display()),
        &format!("--pid-file={pid}"),
        "--interval=0.1",
        &hello,
    ]);
    let first = wait_status(&st, &[1], &server)[0].1;
    let load = Load::start(&addr, 4, "hello from generation 1");
    for n in 1..=20 {
        let before = load.ok();
        server.signal("USR2");
        server.wait_line_n("upgraded in place", n);
        wait_for("requests after an upgrade", &server, || {
            (load.ok() > before + 10).then_some(())
        });
    }
    let requests = load.finish();
    // Same process, same worker, status file continuous.
    assert_eq!(status(&st), [(1, first)]);
    assert_eq!(
        server.count("starting new worker"),
        1,
        "the upgrades started no worker"
    );
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap(),
        format!("{}\n", server.pid)
    );
    // HUP, --restart and --stop reach the adopted workers.
    server.signal("HUP");
    server.wait_line(&format!("old worker {first} died"));
    let st_arg = st.to_str().unwrap();
    let Ended { code, err, .. } =
        run_to_end(&["--restart", "--pid-file", &pid, "--status-file", st_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(&st)[0].0, 3);
    let Ended { code, err, .. } = run_to_end(&["--stop", "--pid-file", &pid]);
    assert_eq!(code, Some(0), "{err}");
    assert!(server.wait_exit().success());
    assert!(!dir.join("pid").exists() && !dir.join("status").exists());
    eprintln!("{requests} requests, none failed, across 20 live upgrades");
}

/// A unix socket whose path is not UTF-8 keeps its name across a live
/// upgrade: the new image serves it, and removes that very file at exit.
#[test]
fn a_non_utf8_socket_path_survives_an_upgrade_and_is_removed_at_exit() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::with_mode("upgrade-bytes", "run");
    let exe = private_copy(&dir, "start_server");
    let sock = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"s\xff\xfe.sock"));
    let mut path_arg = b"--path=".to_vec();
    path_arg.extend_from_slice(sock.as_os_str().as_bytes());
    let mut server = Server::spawn(
        Command::new(&exe)
            .arg(std::ffi::OsStr::from_bytes(&path_arg))
            .args(["--interval=0", &probe(), dir.path().to_str().unwrap()]),
    );
    dir.report(1, &server);
    assert!(sock.exists());
    server.signal("USR2");
    server.wait_line("upgraded in place");
    // The adopted socket is the same file, still served.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    server.signal("HUP");
    let env = dir.report(2, &server);
    let ports = &env["env.SERVER_STARTER_PORT"];
    assert!(ports.contains(".sock="), "{ports}");
    assert!(server.stop().success(), "{}", server.log());
    assert!(!sock.exists(), "the socket file is left behind");
    assert_eq!(
        dir.entries().iter().filter(|e| e.contains("sock")).count(),
        0
    );
}

#[test]
fn a_new_version_installed_at_the_same_path_takes_over() {
    let dir = TempDir::with_mode("upgrade-new-version", "run");
    let exe = private_copy(&dir, "start_server");
    let probe = probe();
    let mut server = Server::spawn(Command::new(&exe).args([
        "--interval=0",
        "--kill-old-delay=0.5",
        &probe,
        dir.path().to_str().unwrap(),
    ]));
    dir.report(1, &server);
    // A pending timer is carried over: the kill-old delay is running.
    server.signal("HUP");
    server.wait_line("sleeping 0.5 secs before killing old workers");
    install(&exe, &std::fs::read(bin()).unwrap(), 0o755);
    assert!(exe_of(server.pid).ends_with(" (deleted)"));
    server.signal("USR2");
    server.wait_line("upgraded in place");
    assert_eq!(
        exe_of(server.pid),
        exe.display().to_string(),
        "the new file runs now"
    );
    server.wait_line("killing old workers");
    server.wait_line("old worker");
    assert!(server.stop().success());
}

/// The previous release: the last commit whose state format this build
/// must read. When the format changes, this becomes the last commit that
/// writes the old one (and its state text joins tests/fixtures/).
const PREVIOUS: &str = "4ef4b72c1f4cb3ad8bcf76963580fe1a02e4dc96";

/// start_server as the previous release built it, from its sources in
/// this repository's history, in a target directory of its own (built
/// once, kept across runs).
fn previous_release() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("previous");
            let src = root.join(&PREVIOUS[..12]);
            let exe = src.join("target/x86_64-unknown-linux-musl/debug/start_server");
            if exe.exists() {
                return exe;
            }
            let _ = std::fs::remove_dir_all(&src);
            std::fs::create_dir_all(&src).unwrap();
            let here = env!("CARGO_MANIFEST_DIR");
            let archive = Command::new("git")
                .args(["-C", here, "archive", "--format=tar", PREVIOUS])
                .output()
                .expect("git is needed to build the previous release");
            assert!(
                archive.status.success(),
                "git archive {PREVIOUS} (the previous release; a clone without \
                 history lacks it): {}",
                String::from_utf8_lossy(&archive.stderr)
            );
            let mut tar = Command::new("tar")
                .args(["-x", "-C"])
                .arg(&src)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive.stdout).unwrap();
            drop(tar.stdin.take());
            assert!(tar.wait().unwrap().success());
            // Its own .cargo/config.toml applies: the same static target.
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let build = Command::new(cargo)
                .args(["build", "--offline", "--bin", "start_server"])
                .current_dir(&src)
                .output()
                .unwrap();
            assert!(
                build.status.success() && exe.exists(),
                "building the previous release failed:\n{}",
                String::from_utf8_lossy(&build.stderr)
            );
            exe
        })
        .clone()
}

/// A live upgrade from the previous release into this build, with a
/// kill-old delay running, a unix socket and a pid file: this build
/// reads the state the previous one writes, adopts its workers, and
/// finishes the hand-over it started.
#[test]
fn an_upgrade_from_the_previous_release_takes_over() {
    let dir = TempDir::with_mode("upgrade-previous", "run");
    let exe = dir.join("start_server");
    copy_program(&previous_release(), &exe);
    let probe = probe();
    let (_, addr) = free_addr();
    let st = dir.join("status");
    let mut server = Server::spawn(Command::new(&exe).args([
        &format!("--port={addr}"),
        &format!("--path={}", dir.s("s.sock")),
        &format!("--status-file={}", st.display()),
        &format!("--pid-file={}", dir.s("pid")),
        "--interval=0",
        // Long enough for the upgrade to happen within it.
        "--kill-old-delay=3",
        &probe,
        dir.path().to_str().unwrap(),
    ]));
    let first = wait_status(&st, &[1], &server)[0].1;
    server.signal("HUP");
    server.wait_line("sleeping 3 secs before killing old workers");
    install(&exe, &std::fs::read(bin()).unwrap(), 0o755);
    server.signal("USR2");
    server.wait_line("2 worker(s) adopted, generation 2");
    assert_eq!(exe_of(server.pid), exe.display().to_string());
    // The hand-over the previous release began ends under this one.
    server.wait_line("killing old workers");
    server.wait_line(&format!("old worker {first} died, status:15"));
    let second = wait_status(&st, &[2], &server)[0].1;
    assert_eq!(dir.report(2, &server)["pid"], second.to_string());
    // The sockets came along: a new generation gets both.
    server.signal("HUP");
    let env = dir.report(3, &server);
    let ports = &env["env.SERVER_STARTER_PORT"];
    assert!(
        ports.contains(&format!("{addr}=")) && ports.contains("s.sock="),
        "{ports}"
    );
    wait_status(&st, &[3], &server);
    assert!(server.stop().success(), "{}", server.log());
    assert!(!dir.join("pid").exists() && !dir.join("s.sock").exists());
}

#[test]
fn a_new_program_that_cannot_run_or_refuses_leaves_the_old_one_in_charge() {
    let dir = TempDir::new("upgrade-refused");
    let (exe, st, mut server) = start_private_copy(&dir);
    install(&exe, b"not a program", 0o644);
    server.signal("USR2");
    server.wait_line("not upgrading: unable to exec");
    install(&exe, b"#!/bin/sh\necho no thanks\nexit 3\n", 0o755);
    server.signal("USR2");
    server.wait_line("refused the state (exit status 3; it said: no thanks); carrying on");
    install(&exe, b"#!/bin/sh\nexec sleep 100\n", 0o755);
    server.signal("USR2");
    server.wait_line("refused the state (killed by KILL; it said: nothing); carrying on");
    // Still the same supervisor, still in charge.
    server.signal("HUP");
    wait_status(&st, &[2], &server);
    assert_eq!(server.count("upgraded in place"), 0);
    assert!(server.stop().success());
}

#[test]
fn a_foreign_or_corrupted_state_is_refused_at_start_up() {
    let dir = TempDir::new("upgrade-foreign");
    let port = free_port();
    // A process that is not start_server's child: it must not be signalled.
    let mut bystander = Command::new("sleep").arg("100").spawn().unwrap();
    let worker = |pid: &str| {
        format!("start_server-state 1\ngeneration 1\nworker {pid} 1 0 done - current\nend\n")
    };
    let (minus_one, wrapped, foreign) = (
        worker("-1"),
        worker("4294967295"),
        worker(&bystander.id().to_string()),
    );
    let foreign_why = format!(
        "worker pid {} is not a child of start_server",
        bystander.id()
    );
    let shared_fd = "start_server-state 1\ngeneration 1\nlistener 5 2d 2d -\n\
                     worker 77 1 0 pending 5 current\nend\n";
    for (state, needle) in [
        ("hello", "not a start_server state (foreign)"),
        ("start_server-state 1\ngeneration x\nend\n", "line 2"),
        (
            "start_server-state 1\nlistener 57 2d 2d -\nend\n",
            "listener descriptor 57 is not an open socket",
        ),
        (&minus_one, "worker pid -1 is not a child's"),
        (&wrapped, "line 3"),
        (&foreign, &foreign_why),
        (shared_fd, "descriptor 5 is named twice"),
    ] {
        let out = Command::new(bin())
            .env("START_SERVER_STATE", state)
            .args([
                &format!("--port=127.0.0.1:{port}"),
                "--pid-file",
                &dir.s("pid"),
                "true",
            ])
            .output()
            .unwrap();
        let stderr = assert_fails_saying(&out, "refusing the handed-over state");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(dir.entries().is_empty(), "{:?}", dir.entries());
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "nothing is left bound"
        );
    }
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a process named in the state was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn socketmaster_upgrades_on_usr1_and_keeps_relaying() {
    let dir = TempDir::new("upgrade-socketmaster");
    let link = dir.join("socketmaster");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let fifo = dir.join("say");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The worker relays, line by line, whatever the test writes to a fifo.
    let script = format!("echo before; exec cat {}", fifo.display());
    let mut server = Server::spawn(Command::new(&link).args(socketmaster_sh("-start=0", &script)));
    let w = server.wait_worker(1);
    server.wait_line(&format!("[{w}] before"));
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    server.signal("USR1");
    server.wait_line("upgraded in place");
    use std::io::Write;
    writeln!(writer, "after the upgrade").unwrap();
    server.wait_line(&format!("[{w}] after the upgrade"));
    drop(writer);
    // cat exits at end of input: socketmaster, with no worker left, exits 0.
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// A deploy by symbolic link: start_server started through
/// `bin/start_server -> 1.0/start_server`; the link re-pointed at 2.0,
/// then USR2, runs 2.0 (the path it was started by, looked up in PATH,
/// not the file that path resolved to at start-up).
#[test]
fn a_symlink_flip_then_usr2_runs_the_new_target() {
    let dir = TempDir::new("upgrade-symlink");
    for version in ["1.0", "2.0", "bin"] {
        std::fs::create_dir(dir.join(version)).unwrap();
    }
    private_copy(&dir, "1.0/start_server");
    private_copy(&dir, "2.0/start_server");
    let link = dir.join("bin/start_server");
    std::os::unix::fs::symlink(dir.join("1.0/start_server"), &link).unwrap();
    let st = dir.join("status");
    let path = format!("{}:/usr/bin:/bin", dir.join("bin").display());
    let mut server = Server::spawn(Command::new("start_server").env("PATH", &path).args([
        &format!("--status-file={}", st.display()),
        "--interval=0",
        "--",
        example("probe").to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]));
    wait_status(&st, &[1], &server);
    assert_eq!(exe_of(server.pid), dir.s("1.0/start_server"));
    let flipped = dir.join("bin/start_server.new");
    std::os::unix::fs::symlink(dir.join("2.0/start_server"), &flipped).unwrap();
    std::fs::rename(&flipped, &link).unwrap();
    server.signal("USR2");
    let line = server.wait_line("upgraded in place");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        line.contains(&format!("from version {version} to {version}")),
        "{line}"
    );
    assert_eq!(exe_of(server.pid), dir.s("2.0/start_server"));
    server.wait_line(&format!("executing {}", link.display()));
    assert!(server.stop().success());
}

/// A USR2 read in the same turn as the last worker's exit, during a
/// shutdown, must not hand over a shutdown with nothing to wait for (the
/// new image then ran forever): start_server exits.
#[test]
fn usr2_with_the_last_worker_exiting_during_shutdown_still_exits() {
    let dir = TempDir::with_mode("upgrade-shutdown", "stubborn");
    let probe = probe();
    let mut server = Server::start(&["--interval=0", &probe, dir.path().to_str().unwrap()]);
    let worker: u32 = dir.report(1, &server)["pid"].parse().unwrap();
    server.signal("TERM");
    server.wait_line("received TERM");
    // Held stopped, start_server sees the worker's exit and the USR2 at
    // once when it goes on.
    server.signal("STOP");
    wait_for("start_server to stop", &server, || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid)).ok()?;
        let state = stat[stat.rfind(')')? + 2..].chars().next()?;
        (state == 'T').then_some(())
    });
    kill("KILL", worker);
    wait_for("the worker to be a zombie", &server, || {
        let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).ok()?;
        (stat[stat.rfind(')')? + 2..].starts_with('Z')).then_some(())
    });
    server.signal("USR2");
    server.signal("CONT");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.log());
}

/// A new program that closes its output and lingers, having started a
/// child of its own, holds nothing up: a HUP meanwhile is acted on at
/// once, and at the deadline the program and its child are killed.
#[test]
fn a_lingering_new_program_blocks_nothing_and_leaves_nothing() {
    let dir = TempDir::new("upgrade-lingering");
    let (exe, st, mut server) = start_private_copy(&dir);
    let child_file = dir.join("check-child");
    let script = format!(
        "#!/bin/sh\nsleep 300 >/dev/null 2>&1 &\necho $! > {}\nexec >&-\nexec sleep 300\n",
        child_file.display()
    );
    install(&exe, script.as_bytes(), 0o755);
    server.signal("USR2");
    let child: u32 = wait_for("the new program's child", &server, || {
        std::fs::read_to_string(&child_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    server.signal("HUP");
    wait_status(&st, &[2], &server);
    assert_eq!(
        server.count("not upgrading"),
        0,
        "the HUP waited for the upgrade check:\n{}",
        server.log()
    );
    server.wait_line("refused the state (killed by KILL; it said: nothing); carrying on");
    wait_for("the new program's child to be killed", &server, || {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok();
        let dead = stat.is_none_or(|s| {
            s.rfind(')')
                .is_some_and(|i| s[i + 2..].starts_with(['Z', 'X']))
        });
        dead.then_some(())
    });
    assert!(server.stop().success());
}
