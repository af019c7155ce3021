//! A worker for start_server's tests. It writes what it received to
//! `DIR/<generation>.report` (atomically), then behaves as `DIR/mode`
//! says (read at start, so tests can change it between generations):
//!
//! - `run` (or no file): wait until a signal's default action ends it;
//! - `exit N`: exit with status N at once;
//! - `graceful`: on TERM/INT/QUIT write the signal's number to
//!   `DIR/<generation>.stopped` and exit 0;
//! - `stubborn`: block TERM/INT/QUIT and never exit (SIGKILL only).
//!
//!     probe DIR

use std::fs;
use std::path::Path;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: probe DIR");
    let dir = Path::new(&dir);
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_else(|_| "none".into());
    let mode = fs::read_to_string(dir.join("mode")).unwrap_or_else(|_| "run".into());
    let mode = mode.trim();
    // Decide before reporting, so a test never sees a report from a
    // worker that has not yet blocked its signals.
    let shutdown = match mode {
        "graceful" | "stubborn" => {
            Some(start_server::worker::Shutdown::new().expect("block signals"))
        }
        _ => None,
    };
    report(dir, &generation);
    if let Some(code) = mode.strip_prefix("exit ") {
        std::process::exit(code.trim().parse().unwrap_or(1));
    }
    match (mode, shutdown) {
        ("graceful", Some(s)) => {
            if let Ok(start_server::worker::Event::Shutdown(sig)) = s.wait(&[]) {
                let _ = fs::write(dir.join(format!("{generation}.stopped")), sig.to_string());
            }
        }
        _ => loop {
            std::thread::park();
        },
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
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("SigBlk:\t") {
            text.push_str(&format!("sigblk={v}\n"));
        }
        if let Some(v) = line.strip_prefix("SigIgn:\t") {
            text.push_str(&format!("sigign={v}\n"));
        }
    }
    for (k, v) in std::env::vars() {
        text.push_str(&format!("env.{k}={v}\n"));
    }
    let tmp = dir.join(format!(".{generation}.report.tmp"));
    fs::write(&tmp, text).expect("write report");
    fs::rename(&tmp, dir.join(format!("{generation}.report"))).expect("rename report");
}
