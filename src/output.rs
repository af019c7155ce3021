//! Where start_server's stdout and stderr go (and so its workers'):
//! `--log-file=FILE` (appended to, reopened on SIGUSR1 for log rotation)
//! or `--log-file="| cmd"` (a pipe into `/bin/sh -c cmd`, started anew on
//! SIGUSR1).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use crate::clock::Instant;
use crate::config::LogTarget;
use crate::env::{Layered, Vars};
use crate::listen::Layout;
use crate::log::errtext;
use crate::log::{note, warning};
use crate::signals::Signals;
use crate::spawn::{self, Command, Report};
use crate::sys::{self, Pid};

/// How long start_server waits at exit for a log command to drain.
const LOGGER_GRACE: Duration = Duration::from_secs(2);
/// A log command that lived at least this long is restarted at once when
/// it exits; one that dies sooner, after a wait that doubles from 1 s...
const LOGGER_STABLE: Duration = Duration::from_secs(10);
/// ...up to this.
const LOGGER_BACKOFF_CAP: Duration = Duration::from_secs(30);

pub struct Output {
    target: Option<LogTarget>,
    /// The opened log file, until it replaces stdout and stderr.
    file: Option<File>,
    /// The original stdout and stderr, which a log command inherits.
    saved: Option<(OwnedFd, OwnedFd)>,
    logger: Option<Pid>,
    /// When the log command was last started.
    logger_started: Option<Instant>,
    /// After the log command exited: when to start it again, and how
    /// many times in a row it died young.
    restart_at: Option<Instant>,
    quick_deaths: u32,
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

impl Output {
    /// Opens a log file right away, so that a bad path is reported before
    /// anything starts. A log command starts later, in [`Output::redirect`].
    pub fn open(target: Option<LogTarget>, layout: &Layout) -> Result<Output, String> {
        let file = match &target {
            Some(LogTarget::File(path)) => {
                let file = open_append(path).map_err(|e| {
                    format!(
                        "unable to open log file {}: {}",
                        path.display(),
                        errtext(&e)
                    )
                })?;
                let fd = layout.clear(file.into()).map_err(|e| {
                    format!(
                        "unable to open log file {}: {}",
                        path.display(),
                        errtext(&e)
                    )
                })?;
                Some(File::from(fd))
            }
            _ => None,
        };
        Ok(Output {
            target,
            file,
            saved: None,
            logger: None,
            logger_started: None,
            restart_at: None,
            quick_deaths: 0,
        })
    }

    /// The output set up by the previous program image (live upgrade):
    /// stdout and stderr already point at the log.
    pub fn adopted(target: Option<LogTarget>, logger: Option<Pid>) -> Output {
        Output {
            target,
            file: None,
            saved: None,
            logger,
            logger_started: None,
            restart_at: None,
            quick_deaths: 0,
        }
    }

    pub fn logger(&self) -> Option<Pid> {
        self.logger
    }

    /// Points stdout and stderr at the log.
    pub fn redirect(&mut self) -> Result<(), String> {
        match &self.target {
            None => Ok(()),
            Some(LogTarget::File(_)) => {
                let Some(file) = self.file.take() else {
                    return Ok(());
                };
                point_stdio_at(file.as_fd())
                    .map_err(|e| format!("unable to redirect output: {}", errtext(&e)))
            }
            Some(LogTarget::Command(cmd)) => {
                let cmd = cmd.clone();
                let saved = (sys::dup_above(1, 3), sys::dup_above(2, 3));
                let (Ok(out), Ok(err)) = saved else {
                    return Err("unable to save stdout and stderr".into());
                };
                self.saved = Some((out, err));
                self.start_logger(&cmd)
            }
        }
    }

    /// Starts `/bin/sh -c cmd` reading from a new pipe, and points stdout
    /// and stderr at that pipe.
    fn start_logger(&mut self, cmd: &std::ffi::OsStr) -> Result<(), String> {
        let fail = |e: std::io::Error| {
            format!(
                "unable to start log command '{}': {}",
                cmd.to_string_lossy(),
                errtext(&e)
            )
        };
        let (out, err) = match &self.saved {
            Some((o, e)) => (o.as_raw_fd(), e.as_raw_fd()),
            None => (1, 2),
        };
        let (r, w) = sys::pipe().map_err(fail)?;
        let sh =
            Command::new(&["/bin/sh".into(), "-c".into(), cmd.to_owned()], None).map_err(fail)?;
        let vars = crate::env::given();
        let env = Layered {
            base: &vars,
            over: &Vars::new(),
        };
        let child = spawn::spawn_helper(&sh, env, &[(r.as_raw_fd(), 0), (out, 1), (err, 2)], false)
            .map_err(fail)?;
        if let Report::Failed { step, errno } = child.report {
            return Err(format!(
                "log command: {}",
                spawn::describe_failure(&sh, step, errno)
            ));
        }
        point_stdio_at(w.as_fd()).map_err(fail)?;
        self.logger = Some(child.pid);
        self.logger_started = Some(Instant::now());
        self.restart_at = None;
        Ok(())
    }

    /// SIGUSR1: reopen the log file, or start the log command anew.
    pub fn reopen(&mut self) {
        match self.target.clone() {
            None => note!("received USR1, but there is no --log-file to reopen"),
            Some(LogTarget::File(path)) => {
                match open_append(&path).and_then(|f| point_stdio_at(f.as_fd())) {
                    Ok(()) => note!("received USR1, reopened log file {}", path.display()),
                    Err(e) => warning!(
                        "unable to reopen log file {}: {}",
                        path.display(),
                        errtext(&e)
                    ),
                }
            }
            Some(LogTarget::Command(cmd)) => match self.start_logger(&cmd) {
                Ok(()) => note!("received USR1, restarted the log command"),
                Err(e) => warning!("{e}"),
            },
        }
    }

    /// A child that is not a worker was reaped. When it is the log
    /// command, output goes to start_server's own stdout and stderr (a
    /// worker writing to a pipe nobody reads would die of SIGPIPE), and
    /// the command is started again: at once if it had run a while, else
    /// after a wait that doubles. Said once, not at every death.
    pub fn reaped(&mut self, pid: Pid, now: Instant) {
        if self.logger != Some(pid) {
            return;
        }
        self.logger = None;
        if let Some((out, err)) = &self.saved {
            let _ = sys::dup2_stdio(out.as_fd(), 1);
            let _ = sys::dup2_stdio(err.as_fd(), 2);
        }
        let lived = self
            .logger_started
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let wait = if lived >= LOGGER_STABLE {
            self.quick_deaths = 0;
            Duration::ZERO
        } else {
            self.next_backoff()
        };
        if self.quick_deaths <= 1 {
            warning!(
                "log command (pid {pid}) exited; logging to start_server's own output until it is started again, in {} s",
                crate::clock::fmt_secs(wait)
            );
        }
        self.restart_at = Some(crate::clock::after(now, wait));
    }

    /// When the log command is due to be started again, if it is.
    pub fn deadline(&self) -> Option<Instant> {
        self.restart_at
    }

    /// Starts the log command again once it is due.
    pub fn on_timer(&mut self, now: Instant) {
        if self.restart_at.is_none_or(|at| now < at) {
            return;
        }
        self.restart_at = None;
        let Some(LogTarget::Command(cmd)) = self.target.clone() else {
            return;
        };
        if let Err(e) = self.start_logger(&cmd) {
            warning!("{e}");
            self.restart_at = Some(crate::clock::after(now, self.next_backoff()));
        }
    }

    /// One more failure of the log command in a row: the wait before the
    /// next start, 1 s doubled at every further failure, up to the cap.
    fn next_backoff(&mut self) -> Duration {
        self.quick_deaths = self.quick_deaths.saturating_add(1);
        let doublings = self.quick_deaths.saturating_sub(1).min(5);
        Duration::from_secs(1)
            .saturating_mul(1u32 << doublings)
            .min(LOGGER_BACKOFF_CAP)
    }

    /// At exit: closes our end of a log command's pipe and gives the
    /// command a moment to drain and exit; then SIGTERM, so that nothing
    /// is left running.
    pub fn close(&mut self, signals: &Signals) {
        let Some(logger) = self.logger else { return };
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            let _ = point_stdio_at(null.as_fd());
        }
        let deadline = crate::clock::after(Instant::now(), LOGGER_GRACE);
        loop {
            while let Ok(Some((pid, _))) = sys::waitpid_any() {
                if pid == logger {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = sys::kill(logger, libc::SIGTERM);
                return;
            }
            let mut pfd = [libc::pollfd {
                fd: signals.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let _ = sys::poll(&mut pfd, Some(left));
            while signals.next().is_some() {}
        }
    }
}

fn point_stdio_at(fd: std::os::fd::BorrowedFd) -> std::io::Result<()> {
    sys::dup2_stdio(fd, 1)?;
    sys::dup2_stdio(fd, 2)
}
