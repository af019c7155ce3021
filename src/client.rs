//! `--restart`, `--stop` and `--status`: talk to a running start_server
//! through its pid file (whose lock tells whether it still runs), status
//! file and state file.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use crate::cli::{self, Mode};
use crate::log::{errtext, fatal, original};
use crate::signals;
use crate::status::{read_generations, read_pid, read_restarts_given_up, read_state, state_path};
use crate::sys::{self, Pid};

/// Answers a mode that is not running a server: the help, the version,
/// or a client of a running start_server. The exit status.
pub fn answer(mode: Mode, socketmaster: bool) -> i32 {
    let done = |result: Result<(), String>| match result {
        Ok(()) => 0,
        Err(msg) => {
            fatal!("{msg}");
            crate::EXIT_FAILURE
        }
    };
    match mode {
        // As Go's flag package does: usage on stderr, success.
        Mode::Help if socketmaster => print(2, cli::SOCKETMASTER_USAGE),
        Mode::Help => print(1, &cli::usage()),
        Mode::Version => print(1, &format!("{}\n", env!("CARGO_PKG_VERSION"))),
        Mode::Restart {
            pid_file,
            status_file,
            timeout,
        } => {
            let _ = signals::unblock_all();
            done(restart(&pid_file, &status_file, timeout))
        }
        Mode::Stop { pid_file, timeout } => {
            let _ = signals::unblock_all();
            done(stop(&pid_file, timeout))
        }
        Mode::Status {
            pid_file,
            status_file,
        } => match status(&pid_file, &status_file) {
            Ok((text, code)) => {
                print(1, &text);
                code
            }
            Err(msg) => done(Err(msg)),
        },
        Mode::Run(_) => done(Err("no server to run here".into())),
    }
}

/// Writes `text` to descriptor `fd`; 0, the exit status (whether it
/// could be written does not change it).
fn print(fd: i32, text: &str) -> i32 {
    let _ = sys::write_all(fd, text.as_bytes());
    0
}

/// How often `--restart` looks at the status file.
const POLL: Duration = Duration::from_millis(20);

/// The pid of the start_server that holds `pid_file` locked.
fn running_pid(pid_file: &Path) -> Result<(Pid, File), String> {
    let what = |e: std::io::Error| {
        format!(
            "unable to read pid file {}: {}",
            pid_file.display(),
            errtext(&e)
        )
    };
    let file = crate::status::open_regular(pid_file).map_err(what)?;
    let pid = read_pid(pid_file).map_err(what)?;
    if is_unlocked(&file) {
        return Err(format!(
            "start_server is not running (pid file {} is stale: nothing holds its lock)",
            pid_file.display()
        ));
    }
    Ok((pid, file))
}

/// Whether nobody holds the lock on `file` (and leaves it unlocked).
fn is_unlocked(file: &File) -> bool {
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            true
        }
        Err(_) => false,
    }
}

/// Sends SIGHUP and waits until the status file lists exactly one
/// generation, newer than any listed before; fails when start_server
/// gives the restart up (--start-retries), as its state file tells.
pub fn restart(
    pid_file: &Path,
    status_file: &Path,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let (pid, lock) = running_pid(pid_file)?;
    let deadline = Deadline::new(timeout);
    let gens = |what: &str| {
        read_generations(status_file).map_err(|e| {
            format!(
                "unable to read status file {}{what}: {}",
                status_file.display(),
                errtext(&e)
            )
        })
    };
    let before = gens("")?;
    let Some(&newest) = before.last() else {
        return Err(format!(
            "no active process found in the status file {}",
            status_file.display()
        ));
    };
    let state = state_path(status_file);
    let given_up = || read_restarts_given_up(&state).unwrap_or(0);
    let given_up_before = given_up();
    sys::kill(pid, libc::SIGHUP).map_err(|e| {
        format!(
            "failed to send SIGHUP to the server process {pid}: {}",
            errtext(&e)
        )
    })?;
    loop {
        // A failed start uses up generation numbers: any newer one will do.
        if let Ok(now) = read_generations(status_file)
            && let [only] = now[..]
            && only > newest
        {
            return Ok(());
        }
        if given_up() > given_up_before {
            return Err(format!(
                "start_server (pid {pid}) gave up the restart (--start-retries): \
                 the previous generation goes on serving"
            ));
        }
        if is_unlocked(&lock) {
            return Err(format!(
                "start_server (pid {pid}) exited before the restart completed"
            ));
        }
        deadline.check(|secs| {
            format!(
                "timed out after {secs} s waiting for a new generation alone in the status file {}",
                status_file.display()
            )
        })?;
        std::thread::sleep(POLL);
    }
}

/// Sends SIGTERM and waits until start_server has exited (its lock on the
/// pid file is released).
pub fn stop(pid_file: &Path, timeout: Option<Duration>) -> Result<(), String> {
    let (pid, lock) = running_pid(pid_file)?;
    original!(
        "stop_server (pid:{}) stopping now (pid:{pid})...",
        std::process::id()
    );
    sys::kill(pid, libc::SIGTERM).map_err(|e| {
        format!(
            "failed to send SIGTERM to the server process {pid}: {}",
            errtext(&e)
        )
    })?;
    let Some(timeout) = timeout else {
        return lock.lock_shared().map_err(|e| {
            format!(
                "unable to wait for pid file {}: {}",
                pid_file.display(),
                errtext(&e)
            )
        });
    };
    let deadline = Deadline::new(Some(timeout));
    while !is_unlocked(&lock) {
        deadline.check(|secs| {
            format!("timed out after {secs} s waiting for start_server (pid {pid}) to exit")
        })?;
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// --timeout, for a client mode's wait.
struct Deadline {
    at: Option<(crate::clock::Instant, Duration)>,
}

impl Deadline {
    fn new(timeout: Option<Duration>) -> Deadline {
        Deadline {
            at: timeout.map(|t| (crate::clock::after(crate::clock::Instant::now(), t), t)),
        }
    }

    /// Fails with the message `what` makes of the timeout, once past it.
    fn check(&self, what: impl Fn(String) -> String) -> Result<(), String> {
        match self.at {
            Some((at, t)) if crate::clock::Instant::now() >= at => {
                Err(what(crate::clock::fmt_secs(t)))
            }
            _ => Ok(()),
        }
    }
}

/// `--status`'s exit status when start_server runs but no generation
/// serves.
pub const STATUS_NOT_SERVING: i32 = 2;

/// The text `--status` prints and its exit status: 0 when a generation
/// serves, [`STATUS_NOT_SERVING`] when none does; an error (exit 1) when
/// start_server is not running or its files cannot be read.
pub fn status(pid_file: &Path, status_file: &Path) -> Result<(String, i32), String> {
    let (pid, _lock) = running_pid(pid_file)?;
    let path = state_path(status_file);
    let state = read_state(&path).map_err(|e| {
        format!(
            "unable to read state file {} (beside --status-file): {}",
            path.display(),
            errtext(&e)
        )
    })?;
    let mut text = format!("start_server {pid} running\n");
    for w in &state.workers {
        let (g, worker, role) = (w.generation, w.pid, &w.role);
        let slot = match (state.count, w.slot) {
            (Some(_), Some(slot)) => format!(" slot {slot}"),
            _ => String::new(),
        };
        let _ = writeln!(text, "generation {g} pid {worker}{slot} {role}");
    }
    let serving = state.workers.iter().filter(|w| w.role == "serving").count();
    if let Some(n) = state.count {
        let _ = writeln!(text, "workers {serving}/{n} serving");
    }
    if serving == 0 {
        text.push_str("no generation serving\n");
    }
    let serving = serving > 0;
    Ok((text, if serving { 0 } else { STATUS_NOT_SERVING }))
}
