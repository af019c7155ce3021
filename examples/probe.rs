//! A worker for start_server's tests. It writes what it received to
//! `DIR/<generation>.report` (atomically), then behaves as the words in
//! `DIR/mode` say (read at start, so tests can change it between
//! generations):
//!
//! - `run` (or no file): wait until a signal's default action ends it;
//! - `exit N`: exit with status N at once;
//! - `graceful`: on TERM/INT/QUIT write `<signal> <time>` to
//!   `DIR/<generation>.stopped` and exit 0;
//! - `stubborn`: block TERM/INT/QUIT and never exit (SIGKILL only);
//! - `notify`: send READY=1 and a STATUS= line (after writing `<time>` to
//!   `DIR/<generation>.ready`); `notify-twice`: send READY=1 twice;
//!   `notify-child`: have a child process send them.
//! - `helper`: also start a helper in a session of its own (as daemons
//!   do), which writes its pid to `DIR/<generation>.helper` and, on TERM,
//!   `<time>` to `DIR/<generation>.helper-stopped` before it exits.
//!
//! Times are nanoseconds since the epoch.
//!
//!     probe DIR
//!     probe wrap DIR
//!
//! `wrap` stands for a wrapper that passes no signal on (as `sh -c` does):
//! it runs `probe DIR` as its child, waits for it, and dies of the first
//! signal it gets.
//!
//!     sh -c 'PROGRAM ARG...'
//!
//! Run under the name `sh`, it is the least shell a container image
//! without one needs for podman's healthchecks (which run an exec probe
//! through `/bin/sh -c`): the words of the command, split at spaces, are
//! executed as they are, no quoting, no expansion.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use start_server::worker::{self, Event, Shutdown};

fn now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    if argv0 == "sh" || argv0.ends_with("/sh") {
        use std::os::unix::process::CommandExt;
        let line = std::env::args()
            .nth(2)
            .expect("usage: sh -c 'PROGRAM ARG...'");
        let mut words = line.split_whitespace();
        let program = words.next().expect("a program to run");
        let err = std::process::Command::new(program).args(words).exec();
        eprintln!("sh: {program}: {err}");
        std::process::exit(127);
    }
    let dir = std::env::args().nth(1).expect("usage: probe DIR");
    if dir == "wrap" {
        let dir = std::env::args().nth(2).expect("usage: probe wrap DIR");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .arg(dir)
            .status()
            .expect("run the probe");
        std::process::exit(status.code().unwrap_or(1));
    }
    if dir == "helper-run" {
        let args: Vec<String> = std::env::args().skip(2).collect();
        helper(Path::new(&args[0]), &args[1]);
        return;
    }
    if dir == "notify-once" {
        let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_default();
        worker::notify(&format!("READY=1\nSTATUS=generation {generation} ready"))
            .expect("send READY=1");
        loop {
            std::thread::park();
        }
    }
    let dir = Path::new(&dir);
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_else(|_| "none".into());
    let mode = fs::read_to_string(dir.join("mode")).unwrap_or_else(|_| "run".into());
    let words: Vec<&str> = mode.split_whitespace().collect();
    let has = |w: &str| words.contains(&w);
    // Decide before reporting, so a test never sees a report from a
    // worker that has not yet blocked its signals.
    let shutdown =
        (has("graceful") || has("stubborn")).then(|| Shutdown::new().expect("block signals"));
    report(dir, &generation);
    if let Some(code) = words
        .iter()
        .position(|&w| w == "exit")
        .and_then(|i| words.get(i + 1))
    {
        std::process::exit(code.parse().unwrap_or(1));
    }
    if has("notify") || has("notify-twice") {
        fs::write(dir.join(format!("{generation}.ready")), now().to_string()).unwrap();
        worker::notify(&format!("READY=1\nSTATUS=generation {generation} ready"))
            .expect("send READY=1");
        if has("notify-twice") {
            worker::ready().expect("send READY=1 again");
        }
    }
    if has("notify-child") {
        // The child stays alive (its pid in DIR/<generation>.child): a
        // sender that is gone cannot be traced back to its worker.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("notify-once")
            .spawn()
            .expect("start the child");
        fs::write(
            dir.join(format!("{generation}.child")),
            child.id().to_string(),
        )
        .unwrap();
        std::thread::spawn(move || child.wait());
    }
    if has("helper") {
        // Never waited for, on purpose: once we exit it is an orphan, for
        // start_server to reap.
        #[allow(clippy::zombie_processes)]
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["helper-run", &dir.display().to_string(), &generation])
            .spawn()
            .expect("start the helper");
    }
    match shutdown {
        Some(s) if has("graceful") => {
            if let Ok(Event::Shutdown(sig)) = s.wait(&[]) {
                fs::write(
                    dir.join(format!("{generation}.stopped")),
                    format!("{sig} {}", now()),
                )
                .unwrap();
            }
        }
        _ => loop {
            std::thread::park();
        },
    }
}

/// A helper that left our session: only a subreaper (or PID 1) still
/// knows it.
fn helper(dir: &Path, generation: &str) {
    worker::new_session().expect("setsid");
    let shutdown = Shutdown::new().expect("block signals");
    let tmp = dir.join(format!(".{generation}.helper.tmp"));
    fs::write(&tmp, std::process::id().to_string()).unwrap();
    fs::rename(&tmp, dir.join(format!("{generation}.helper"))).unwrap();
    if let Ok(Event::Shutdown(_)) = shutdown.wait(&[]) {
        fs::write(
            dir.join(format!("{generation}.helper-stopped")),
            now().to_string(),
        )
        .unwrap();
    }
}

fn report(dir: &Path, generation: &str) {
    let mut text = format!("pid={}\n", std::process::id());
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    text.push_str(&format!("cwd={cwd}\n"));
    let mut fds: Vec<u32> = fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !fs::read_link(e.path()).is_ok_and(|t| t.starts_with("/proc")))
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    let fds: Vec<String> = fds.iter().map(u32::to_string).collect();
    text.push_str(&format!("fds={}\n", fds.join(",")));
    let fd3 = fs::read_link("/proc/self/fd/3")
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "closed".into());
    text.push_str(&format!("fd3={fd3}\n"));
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("SigBlk:\t") {
            text.push_str(&format!("sigblk={v}\n"));
        }
        if let Some(v) = line.strip_prefix("SigIgn:\t") {
            text.push_str(&format!("sigign={v}\n"));
        }
        for (key, name) in [
            ("Uid:\t", "uid"),
            ("Gid:\t", "gid"),
            ("Groups:\t", "groups"),
        ] {
            if let Some(v) = line.strip_prefix(key) {
                // Uid and Gid list real, effective, saved, fs: the first will do.
                let v = if name == "groups" {
                    v.trim()
                } else {
                    v.split_whitespace().next().unwrap_or("")
                };
                text.push_str(&format!("{name}={v}\n"));
            }
        }
    }
    for (k, v) in std::env::vars() {
        text.push_str(&format!("env.{k}={v}\n"));
    }
    let tmp = dir.join(format!(".{generation}.report.tmp"));
    fs::write(&tmp, text).expect("write report");
    fs::rename(&tmp, dir.join(format!("{generation}.report"))).expect("rename report");
}
