//! The supervisor: a state machine driven by one `poll` with one deadline.
//!
//! Events are signals (read from a signalfd), exec reports (a pipe per
//! starting worker) and timers (the earliest of the start check, a retry,
//! the kill-old delay, auto-restart and the stop timeout). Nothing here
//! sleeps, and when nothing is pending the loop waits with no timeout at
//! all, so an idle supervisor never wakes.
//!
//! Workers are kept in one list, each with its generation and role: the
//! one starting (at most one at a time), the current one, and old ones
//! (kept until they exit, signalled once their successor is up).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cli::{Policy, Protocols};
use crate::env::{self, Settings, Vars, fmt_secs};
use crate::listen::{self, Listener, errtext};
use crate::log::{self, fatal, note, original, warning};
use crate::notify::Notify;
use crate::output::Output;
use crate::relay::Relay;
use crate::signals::{self, Signals};
use crate::spawn::{self, Command, Report};
use crate::status::{self, PidFile};
use crate::sys::{self, Pid, WaitStatus};
use crate::upgrade::{self, ExecState, ListenerState, RoleState, State, WorkerState};
use crate::upgrade_check::{UpgradeCheck, Verdict};
use crate::users::Ids;

/// Retries that keep the original's pace (one `--interval` apart).
const FAST_RETRIES: u32 = 3;
/// The first backed-off wait, doubled at every further failure...
const BACKOFF_FIRST: Duration = Duration::from_millis(125);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A worker that exits sooner than max(--interval, this) after it was
/// spawned counts as a failed start, even if it passed the start check.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// Everything the supervisor runs with, prepared by `main`.
pub struct Setup {
    pub command: Command,
    /// The workers' environment before the envdir and protocol variables.
    pub base_env: Vars,
    pub envdir: Option<PathBuf>,
    pub listeners: Vec<Listener>,
    /// The sockets sit on 3, 4, ...: LISTEN_FDS can be offered.
    pub systemd_layout: bool,
    pub protocols: Protocols,
    pub interval: Duration,
    pub signal_on_hup: signals::Signal,
    pub signal_on_term: signals::Signal,
    pub stop_timeout: Option<Duration>,
    pub status_file: Option<PathBuf>,
    pub pid_file: Option<PidFile>,
    pub output: Output,
    pub signals: Signals,
    /// With --daemonize: where to tell the waiting parent how the first
    /// start went (one byte, the exit status it should use).
    pub started: Option<OwnedFd>,
    /// With --readiness=notify: the socket workers send READY=1 to.
    pub notify: Option<Notify>,
    /// The NOTIFY_SOCKET start_server itself was given (by systemd): told
    /// READY=1 once the first generation is up.
    pub upstream_notify: Option<std::ffi::OsString>,
    /// Where start_server and socketmaster behave differently.
    pub policy: Policy,
    /// The user workers run as.
    pub ids: Option<Ids>,
    /// How to execute ourselves again, for a live upgrade.
    pub image: Image,
}

/// Our own program: its path (where a new version gets installed), the
/// arguments we were run with, and the environment to run it with.
pub struct Image {
    pub exe: PathBuf,
    pub argv: Vec<std::ffi::OsString>,
    pub env: Vars,
}

/// The largest notification read whole; bigger ones are rejected.
const NOTIFY_MAX: usize = 4096;
/// Notifications handled per turn of the loop, so that a flood cannot
/// starve signals and reaping.
const NOTIFY_BATCH: usize = 256;
/// Ignored notifications described in full per IGNORED_WINDOW.
const IGNORED_SHOWN: usize = 3;
const IGNORED_WINDOW: Duration = Duration::from_secs(1);

/// The rate limit on ignored-notification lines.
struct Ignored {
    window_end: Instant,
    shown: usize,
    suppressed: u64,
}
/// How far up the process tree a sender is looked for among the workers.
const NOTIFY_ANCESTRY: usize = 32;

/// What makes a starting worker count as started.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ready {
    /// Still alive at this instant (--interval).
    After(Instant),
    /// It sent READY=1 (or not yet).
    Notified(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Spawned, not yet counted as started. `restart`: old workers are to
    /// be signalled once it is up. `give_up`: killed if not ready by then.
    Starting {
        restart: bool,
        ready: Ready,
        give_up: Option<Instant>,
    },
    Current,
    Old {
        signalled: bool,
    },
}

/// Whether a worker's program is running yet.
enum Exec {
    /// Waiting on the exec report pipe.
    Pending(OwnedFd),
    /// The program runs: the worker may count as started.
    Done,
    /// It could not be executed: the worker is about to exit.
    Failed,
}

struct Worker {
    pid: Pid,
    generation: u64,
    spawned: Instant,
    role: Role,
    exec: Exec,
}

impl Worker {
    fn report_fd(&self) -> Option<&OwnedFd> {
        match &self.exec {
            Exec::Pending(fd) => Some(fd),
            _ => None,
        }
    }

    /// When a starting worker counts as started, if its program runs.
    fn ready_at(&self) -> Option<(Instant, bool)> {
        let Role::Starting { restart, ready, .. } = self.role else {
            return None;
        };
        match (ready, &self.exec) {
            (Ready::After(at), Exec::Done) => Some((at, restart)),
            (Ready::Notified(true), Exec::Done) => Some((self.spawned, restart)),
            _ => None,
        }
    }

    /// When a starting worker that is not ready yet will be given up on.
    fn give_up(&self) -> Option<Instant> {
        match self.role {
            Role::Starting { give_up, .. } if self.ready_at().is_none() => give_up,
            _ => None,
        }
    }
}

pub struct Supervisor {
    s: Setup,
    workers: Vec<Worker>,
    generation: u64,
    /// A spawn waiting for its time: `(when, restart)`.
    retry: Option<(Instant, bool)>,
    /// When the old workers get `--signal-on-hup`.
    kill_old_at: Option<Instant>,
    /// A HUP arrived while a restart was under way.
    pending_restart: bool,
    /// Consecutive failed starts.
    failures: u32,
    last_restart: Instant,
    /// Whether any worker has ever been executed.
    ever_started: bool,
    /// Shutting down; `Some(deadline)` when --stop-timeout is set.
    stopping: Option<Option<Instant>>,
    exit_code: Option<i32>,
    envdir_vars: Vars,
    settings: Settings,
    settings_problems: Vec<String>,
    status_written: bool,
    ignored: Ignored,
    /// Workers' output being relayed (socketmaster).
    relays: Vec<Relay>,
    /// The signal shutdown forwarded, and the last worker's wait status:
    /// socketmaster's exit status.
    forwarded: Option<i32>,
    last_status: Option<WaitStatus>,
    /// A live upgrade asked for, while the new program says whether it
    /// takes our state.
    upgrade_check: Option<UpgradeCheck>,
}

/// A wait status in words: `exit status 1`, `killed by TERM`.
pub fn describe_status(status: WaitStatus) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by {}", signals::name(libc::WTERMSIG(status)))
    } else {
        format!("status {status}")
    }
}

/// `1,2,3`, as the original lists pids.
fn join_pids(pids: &[Pid]) -> String {
    let list: Vec<String> = pids.iter().map(Pid::to_string).collect();
    list.join(",")
}

/// The delay before the next attempt after `failures` consecutive
/// failures, beyond the original's pace.
pub fn backoff(failures: u32) -> Duration {
    if failures <= FAST_RETRIES {
        return Duration::ZERO;
    }
    let doublings = (failures - FAST_RETRIES - 1).min(16);
    (BACKOFF_FIRST * (1 << doublings)).min(BACKOFF_CAP)
}

impl Supervisor {
    pub fn new(setup: Setup) -> Supervisor {
        // Auto-restart and the kill-old delay are start_server's alone.
        let settings = match setup.policy.env_settings {
            true => Settings::from_vars(&setup.base_env).0,
            false => Settings::from_vars(&Vars::new()).0,
        };
        Supervisor {
            s: setup,
            workers: Vec::new(),
            generation: 0,
            retry: None,
            kill_old_at: None,
            pending_restart: false,
            failures: 0,
            last_restart: Instant::now(),
            ever_started: false,
            stopping: None,
            exit_code: None,
            envdir_vars: Vars::new(),
            settings,
            settings_problems: Vec::new(),
            status_written: false,
            ignored: Ignored {
                window_end: Instant::now(),
                shown: 0,
                suppressed: 0,
            },
            relays: Vec::new(),
            forwarded: None,
            last_status: None,
            upgrade_check: None,
        }
    }

    /// Runs until shutdown; returns the exit status.
    pub fn run(mut self) -> i32 {
        self.refresh();
        self.spawn(false);
        self.run_loop()
    }

    /// Runs the loop until it is time to exit; returns the exit status.
    pub fn run_loop(mut self) -> i32 {
        while self.exit_code.is_none() {
            self.wait_and_dispatch();
        }
        let code = self.exit_code.unwrap_or(1);
        self.finish(code)
    }

    /// One turn of the loop: wait for the next event or deadline, then act
    /// on everything that is ready.
    fn wait_and_dispatch(&mut self) {
        let timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let mut fds = vec![libc::pollfd {
            fd: self.s.signals.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let reporting: Vec<Pid> = self
            .workers
            .iter()
            .filter_map(|w| {
                let fd = w.report_fd()?;
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                Some(w.pid)
            })
            .collect();
        let notify_at = fds.len();
        if let Some(n) = &self.s.notify {
            fds.push(libc::pollfd {
                fd: n.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Workers' output is read only while the log takes it; otherwise we
        // wait for the log to drain, and the workers wait on their pipes.
        let relays_at = fds.len();
        let sink_ready = sys::writable_now(log::sink_fd());
        if sink_ready {
            fds.extend(self.relays.iter().map(|r| libc::pollfd {
                fd: r.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
        } else if !self.relays.is_empty() {
            fds.push(libc::pollfd {
                fd: log::sink_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        let check_at = fds.len();
        if let Some(fd) = self.upgrade_check.as_ref().and_then(UpgradeCheck::out_fd) {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match self.relays.iter().any(Relay::has_pending) && sink_ready {
            true => Some(Duration::ZERO),
            false => timeout,
        };
        if let Err(e) = sys::poll(&mut fds, timeout) {
            warning!("poll failed: {}", errtext(&e));
        }
        for (pid, fd) in reporting.iter().zip(&fds[1..]) {
            if fd.revents != 0 {
                self.on_report(*pid);
            }
        }
        if self.s.notify.is_some() && fds[notify_at].revents != 0 {
            self.on_notifications();
        }
        if let Some(check) = &mut self.upgrade_check
            && fds.get(check_at).is_some_and(|f| f.revents != 0)
        {
            check.on_readable();
        }
        if sink_ready {
            for (r, fd) in self.relays.iter_mut().zip(&fds[relays_at..]) {
                if fd.revents != 0 || r.has_pending() {
                    r.pump();
                }
            }
            self.relays.retain(|r| !r.done());
        }
        // Drain the signals first, then act: reap before anything else so
        // that decisions see who is still alive.
        let mut sigs = Vec::new();
        while let Some(sig) = self.s.signals.next() {
            sigs.push(sig);
        }
        if sigs.contains(&libc::SIGCHLD) {
            self.reap();
        }
        for sig in sigs {
            self.on_signal(sig);
        }
        self.refresh();
        self.on_timers(Instant::now());
        self.on_upgrade_check(Instant::now());
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ready = self.workers.iter().filter_map(|w| Some(w.ready_at()?.0));
        let give_up = self.workers.iter().filter_map(Worker::give_up);
        ready
            .chain(give_up)
            .chain(self.retry.map(|(at, _)| at))
            .chain(self.kill_old_at)
            .chain(self.stopping.flatten())
            .chain(self.auto_restart_due())
            .chain((self.ignored.suppressed > 0).then_some(self.ignored.window_end))
            .chain(self.upgrade_check.as_ref().map(|c| c.deadline))
            .min()
    }

    /// Re-reads the envdir and the settings it may change.
    fn refresh(&mut self) {
        let Some(dir) = &self.s.envdir else { return };
        self.envdir_vars = env::read_envdir(dir);
        let mut merged = self.s.base_env.clone();
        env::overlay(&mut merged, &self.envdir_vars);
        let (settings, problems) = Settings::from_vars(&merged);
        if problems != self.settings_problems {
            for p in &problems {
                warning!("envdir {}: {p}; using the default", dir.display());
            }
            self.settings_problems = problems;
        }
        self.settings = settings;
    }

    fn worker_env(&self, generation: u64) -> Vars {
        let mut vars = self.s.base_env.clone();
        env::overlay(&mut vars, &self.envdir_vars);
        if let Some(n) = &self.s.notify {
            env::set(&mut vars, "NOTIFY_SOCKET", n.address.as_str());
        }
        env::add_protocol_vars(
            &mut vars,
            &self.s.listeners,
            self.s.protocols,
            self.s.systemd_layout,
            generation,
        );
        vars
    }

    fn candidate(&self) -> Option<&Worker> {
        self.workers
            .iter()
            .find(|w| matches!(w.role, Role::Starting { .. }))
    }

    /// A restart is under way: a worker is starting or old workers await
    /// their signal. Restarts run one after another.
    fn busy(&self) -> bool {
        self.candidate().is_some() || self.kill_old_at.is_some()
    }

    fn has_current(&self) -> bool {
        self.workers.iter().any(|w| w.role == Role::Current)
    }

    fn has_old(&self) -> bool {
        self.workers
            .iter()
            .any(|w| matches!(w.role, Role::Old { .. }))
    }

    fn auto_restart_due(&self) -> Option<Instant> {
        if !self.settings.auto_restart
            || self.stopping.is_some()
            || self.busy()
            || self.retry.is_some()
            || !self.has_current()
        {
            return None;
        }
        let interval = self.settings.auto_restart_interval;
        // With old workers still draining, wait up to twice as long.
        let factor = if self.has_old() { 2 } else { 1 };
        Some(self.last_restart + interval * factor)
    }

    // ------------------------------------------------------------ spawning

    fn spawn(&mut self, restart: bool) {
        self.refresh();
        self.generation += 1;
        let vars = self.worker_env(self.generation);
        let now = Instant::now();
        let capture = match self.s.policy.relay_output {
            true => match sys::pipe() {
                Ok(pipe) => Some(pipe),
                Err(e) => {
                    warning!("unable to create an output pipe: {}", errtext(&e));
                    None
                }
            },
            false => None,
        };
        let fds: Vec<_> = capture
            .iter()
            .flat_map(|(_, w)| [(w.as_raw_fd(), 1), (w.as_raw_fd(), 2)])
            .collect();
        match spawn::spawn(&self.s.command, &vars, &fds, self.s.ids.as_ref()) {
            Ok(child) => {
                if let Some((r, _)) = capture {
                    match Relay::new(child.pid, r) {
                        Ok(relay) => self.relays.push(relay),
                        Err(e) => warning!("unable to relay output: {}", errtext(&e)),
                    }
                }
                original!("starting new worker {}", child.pid);
                self.workers.push(Worker {
                    pid: child.pid,
                    generation: self.generation,
                    spawned: now,
                    role: Role::Starting {
                        restart,
                        ready: match &self.s.notify {
                            Some(_) => Ready::Notified(false),
                            None => Ready::After(now + self.s.interval),
                        },
                        give_up: self.s.notify.as_ref().map(|n| now + n.timeout),
                    },
                    exec: Exec::Pending(child.report),
                });
            }
            Err(e) => {
                warning!("unable to fork: {}", errtext(&e));
                self.failures += 1;
                let wait = backoff(self.failures.max(FAST_RETRIES + 1));
                self.retry = Some((now + wait, restart));
            }
        }
    }

    /// Schedules the next attempt after a failure: at the original's pace
    /// (one --interval after the failed attempt began) for the first
    /// retries, then backing off exponentially.
    fn schedule_retry(&mut self, spawned: Instant, restart: bool) {
        let now = Instant::now();
        let mut at = spawned + self.s.interval;
        let extra = backoff(self.failures);
        if !extra.is_zero() {
            at = at.max(now + extra);
            note!(
                "{} failed starts in a row, next attempt in {} s",
                self.failures,
                fmt_secs(at.saturating_duration_since(now))
            );
        }
        if at <= now {
            self.spawn(restart);
        } else {
            self.retry = Some((at, restart));
        }
    }

    fn begin_restart(&mut self) {
        for w in &mut self.workers {
            if w.role == Role::Current {
                w.role = Role::Old { signalled: false };
            }
        }
        self.spawn(true);
    }

    /// The starting worker has passed its start check.
    fn promote(&mut self, pid: Pid, restart: bool) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
            w.role = Role::Current;
        }
        self.last_restart = Instant::now();
        self.announce();
        if let Some(upstream) = self.s.upstream_notify.take()
            && let Err(e) = sys::send_notification(&upstream, b"READY=1")
        {
            warning!(
                "unable to notify {}: {}",
                upstream.to_string_lossy(),
                errtext(&e)
            );
        }
        if !restart {
            return;
        }
        let olds = self.pids(|r| r == Role::Old { signalled: false });
        original!(
            "new worker is now running, sending {} to old workers:{}",
            self.s.signal_on_hup.shown,
            if olds.is_empty() {
                "none".into()
            } else {
                join_pids(&olds)
            }
        );
        let delay = self.settings.kill_old_delay;
        if delay.is_zero() {
            self.kill_olds();
        } else {
            original!(
                "sleeping {} secs before killing old workers",
                self.settings.kill_old_delay_shown
            );
            self.kill_old_at = Some(Instant::now() + delay);
        }
    }

    fn kill_olds(&mut self) {
        original!("killing old workers");
        for w in &mut self.workers {
            if w.role == (Role::Old { signalled: false }) {
                let _ = sys::kill(w.pid, self.s.signal_on_hup.number);
                w.role = Role::Old { signalled: true };
            }
        }
    }

    fn pids(&self, pick: impl Fn(Role) -> bool) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| pick(w.role))
            .map(|w| w.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Rewrites the status file: every current and old worker.
    fn announce(&mut self) {
        let Some(path) = &self.s.status_file else {
            return;
        };
        let entries: Vec<(u64, Pid)> = self
            .workers
            .iter()
            .filter(|w| !matches!(w.role, Role::Starting { .. }))
            .map(|w| (w.generation, w.pid))
            .collect();
        match status::write_status(path, &entries) {
            Ok(()) => self.status_written = true,
            Err(e) => warning!(
                "unable to write status file {}: {}",
                path.display(),
                errtext(&e)
            ),
        }
    }

    // -------------------------------------------------------------- events

    /// A starting worker's exec report pipe is readable.
    fn on_report(&mut self, pid: Pid) {
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        let Some(fd) = w.report_fd() else { return };
        match spawn::read_report(fd) {
            Report::Pending => {}
            Report::Exec => {
                w.exec = Exec::Done;
                if !self.ever_started {
                    self.ever_started = true;
                    self.tell_parent(0);
                }
            }
            Report::Failed { step, errno } => {
                w.exec = Exec::Failed;
                let msg = spawn::describe_failure(&self.s.command, step, errno);
                if self.ever_started {
                    warning!("{msg}");
                } else {
                    // Nothing has ever run: this is a deployment error, not
                    // something to retry forever.
                    fatal!("{msg}");
                    let code = if step == sys::STEP_EXEC && errno == libc::ENOENT {
                        127
                    } else {
                        126
                    };
                    self.exit_code = Some(code);
                }
            }
        }
    }

    /// Reads the waiting notifications (a batch at most), acts on those from
    /// workers, and reports the others in one line.
    fn on_notifications(&mut self) {
        let mut buf = [0u8; NOTIFY_MAX];
        for _ in 0..NOTIFY_BATCH {
            let Some(n) = &self.s.notify else { return };
            let d = match sys::recv_notification(n.fd.as_fd(), &mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    warning!("unable to read notifications: {}", errtext(&e));
                    break;
                }
            };
            if let Err(why) = self.on_notification(&d, &buf[..d.len]) {
                self.ignore(why);
            }
        }
    }

    /// Reports an ignored notification: a few a second in full, the rest
    /// counted and summed up once the second is over, so that a flood
    /// costs a few lines, not one each.
    fn ignore(&mut self, why: String) {
        let now = Instant::now();
        if now >= self.ignored.window_end {
            self.flush_ignored();
            self.ignored.window_end = now + IGNORED_WINDOW;
            self.ignored.shown = 0;
        }
        if self.ignored.shown < IGNORED_SHOWN {
            self.ignored.shown += 1;
            warning!("ignoring a notification: {why}");
        } else {
            self.ignored.suppressed += 1;
        }
    }

    fn flush_ignored(&mut self) {
        if self.ignored.suppressed > 0 {
            warning!("ignored {} more notifications", self.ignored.suppressed);
            self.ignored.suppressed = 0;
        }
    }

    /// One notification: acted on, or why it was ignored.
    fn on_notification(&mut self, d: &sys::Datagram, data: &[u8]) -> Result<(), String> {
        let sender = d.pid.ok_or("it carries no credentials")?;
        if let Some(size) = d.truncated {
            return Err(format!(
                "{size} bytes from pid {sender} (at most {NOTIFY_MAX})"
            ));
        }
        let pid = self
            .worker_for(sender)
            .ok_or_else(|| format!("pid {sender} is not a worker or a worker's descendant"))?;
        let text =
            std::str::from_utf8(data).map_err(|_| format!("not UTF-8, from worker {pid}"))?;
        let mut pairs = Vec::new();
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            let pair = line
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("malformed line {line:?} from worker {pid}"))?;
            pairs.push(pair);
        }
        for (key, value) in pairs {
            match key {
                "READY" if value == "1" => self.on_ready(pid),
                "STATUS" => note!("worker {pid} status: {value}"),
                // Everything else (MAINPID, RELOADING, WATCHDOG, ...) is
                // not ours to act on.
                _ => {}
            }
        }
        Ok(())
    }

    /// The worker `sender` is, or descends from.
    fn worker_for(&self, sender: Pid) -> Option<Pid> {
        let mut pid = sender;
        for _ in 0..NOTIFY_ANCESTRY {
            if self.workers.iter().any(|w| w.pid == pid) {
                return Some(pid);
            }
            pid = sys::parent_of(pid).filter(|&p| p > 1)?;
        }
        None
    }

    fn on_ready(&mut self, pid: Pid) {
        if self
            .workers
            .iter()
            .any(|w| w.pid == pid && w.report_fd().is_some())
        {
            // A running program has certainly been executed.
            self.on_report(pid);
        }
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        match &mut w.role {
            Role::Starting {
                ready: ready @ Ready::Notified(false),
                ..
            } => {
                *ready = Ready::Notified(true);
                note!("new worker {pid} is ready");
            }
            _ => note!("worker {pid} sent READY=1 again, ignored"),
        }
    }

    fn reap(&mut self) {
        loop {
            match sys::waitpid_any() {
                Ok(Some((pid, status))) => self.on_exit(pid, status),
                Ok(None) => return,
                Err(e) => {
                    warning!("waitpid failed: {}", errtext(&e));
                    return;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
        if let Some(check) = &mut self.upgrade_check
            && check.pid() == pid
        {
            check.exited(status);
            return;
        }
        let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
            // Not ours: an orphan that landed on us, or a log command.
            self.s.output.reaped(pid);
            return;
        };
        if self.workers[i].report_fd().is_some() {
            self.on_report(pid);
        }
        let w = self.workers.remove(i);
        self.last_status = Some(status);
        if !self.s.policy.respawn {
            self.on_last_exit(w, status);
            return;
        }
        if self.stopping.is_some() || self.exit_code.is_some() {
            original!("worker {pid} died, status:{status}");
            self.announce();
            if self.workers.is_empty() && self.exit_code.is_none() {
                self.exit_code = Some(0);
            }
            return;
        }
        let lived = w.spawned.elapsed();
        match w.role {
            Role::Starting { restart, .. } => {
                original!("new worker {pid} seems to have failed to start, exit status:{status}");
                self.failures += 1;
                self.schedule_retry(w.spawned, restart);
            }
            Role::Current => {
                original!("worker {pid} died unexpectedly with status:{status}, restarting");
                if lived < self.s.interval.max(STABLE_AFTER) {
                    self.failures += 1;
                } else {
                    self.failures = 0;
                }
                self.announce();
                self.schedule_retry(w.spawned, false);
            }
            Role::Old { .. } => {
                original!("old worker {pid} died, status:{status}");
                self.announce();
            }
        }
    }

    /// Without respawn (socketmaster): nothing is replaced or retried, and
    /// start_server exits, saying how the last worker ended, once no worker
    /// is left.
    fn on_last_exit(&mut self, w: Worker, status: WaitStatus) {
        let pid = w.pid;
        match w.role {
            Role::Starting { .. } if self.stopping.is_none() => {
                let keep = self.pids(|r| matches!(r, Role::Old { .. }));
                warning!(
                    "new worker {pid} exited before it was up ({}): keeping the old workers: {}",
                    describe_status(status),
                    if keep.is_empty() {
                        "none".into()
                    } else {
                        join_pids(&keep)
                    }
                );
            }
            _ => note!("worker {pid} exited ({})", describe_status(status)),
        }
        if self.workers.is_empty() && self.exit_code.is_none() {
            self.exit_code = Some(self.last_exit_code());
        }
    }

    /// The last worker's exit status; 128+N if signal N killed it, but 0
    /// when N is the one a shutdown forwarded to it.
    fn last_exit_code(&self) -> i32 {
        match self.last_status {
            Some(s) if libc::WIFEXITED(s) => libc::WEXITSTATUS(s),
            Some(s) if libc::WIFSIGNALED(s) && Some(libc::WTERMSIG(s)) == self.forwarded => 0,
            Some(s) if libc::WIFSIGNALED(s) => 128 + libc::WTERMSIG(s),
            _ => 0,
        }
    }

    fn on_signal(&mut self, sig: i32) {
        if self.exit_code.is_some() {
            // The last worker is gone and we are leaving: an upgrade now
            // would hand over a shutdown with nothing left to wait for.
            return;
        }
        match sig {
            libc::SIGCHLD | libc::SIGPIPE | libc::SIGWINCH | libc::SIGURG | libc::SIGCONT => {}
            libc::SIGHUP => self.on_hup(),
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => match self.stopping {
                None => self.begin_shutdown(sig),
                Some(_) => {
                    let pids = self.pids(|_| true);
                    note!(
                        "received {} again, sending KILL to all workers:{}",
                        signals::name(sig),
                        join_pids(&pids)
                    );
                    self.kill_all(libc::SIGKILL);
                }
            },
            sig if sig == self.s.policy.upgrade_signal => self.upgrade(),
            libc::SIGUSR1 => self.s.output.reopen(),
            other => note!("received {}, ignored", signals::name(other)),
        }
    }

    fn on_hup(&mut self) {
        if self.stopping.is_some() {
            note!("received HUP while shutting down, ignored");
        } else if self.busy() {
            self.pending_restart = true;
            let under_way = if self.candidate().is_some() {
                "a new worker is starting"
            } else {
                "old workers await --kill-old-delay"
            };
            note!("received HUP while {under_way}, will restart once that is done");
        } else if let Some((_, restart)) = self.retry.take() {
            // A failing start: try the (presumably fixed) deployment now.
            original!("received HUP, spawning a new worker");
            self.spawn(restart);
        } else {
            original!("received HUP, spawning a new worker");
            self.begin_restart();
        }
    }

    fn begin_shutdown(&mut self, sig: i32) {
        let term = if self.s.policy.forward_as_is {
            signals::Signal::of(sig)
        } else if sig == libc::SIGTERM {
            self.s.signal_on_term.clone()
        } else {
            signals::Signal::of(libc::SIGTERM)
        };
        self.forwarded = Some(term.number);
        let pids = self.pids(|_| true);
        original!(
            "received {}, sending {} to all workers:{}",
            signals::name(sig),
            term.shown,
            pids.iter()
                .map(Pid::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        self.kill_all(term.number);
        self.retry = None;
        self.kill_old_at = None;
        self.pending_restart = false;
        self.stopping = Some(self.s.stop_timeout.map(|t| Instant::now() + t));
        if self.workers.is_empty() {
            self.exit_code = Some(0);
        }
    }

    fn kill_all(&self, sig: i32) {
        for w in &self.workers {
            let _ = sys::kill(w.pid, sig);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if self.exit_code.is_some() {
            return;
        }
        if now >= self.ignored.window_end {
            self.flush_ignored();
        }
        let ready = self.workers.iter().find_map(|w| {
            let (at, restart) = w.ready_at()?;
            (now >= at).then_some((w.pid, restart))
        });
        if let Some((pid, restart)) = ready {
            self.promote(pid, restart);
        }
        let late: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.give_up().is_some_and(|at| now >= at))
            .map(|w| w.pid)
            .collect();
        for pid in late {
            if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid)
                && let Role::Starting { give_up, .. } = &mut w.role
            {
                *give_up = None;
            }
            let secs = self.s.notify.as_ref().map_or(Duration::ZERO, |n| n.timeout);
            warning!(
                "new worker {pid} is not ready after {} s, killing it",
                fmt_secs(secs)
            );
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        if let Some((at, restart)) = self.retry
            && now >= at
        {
            self.retry = None;
            self.spawn(restart);
        }
        if self.kill_old_at.is_some_and(|at| now >= at) {
            self.kill_old_at = None;
            self.kill_olds();
        }
        if let Some(Some(at)) = self.stopping
            && now >= at
        {
            self.stopping = Some(None);
            let pids = self.pids(|_| true);
            note!(
                "workers still running after --stop-timeout, sending KILL to all workers:{}",
                join_pids(&pids)
            );
            self.kill_all(libc::SIGKILL);
        }
        if self.auto_restart_due().is_some_and(|due| now >= due) {
            let forced = if self.has_old() { "forced, " } else { "" };
            original!(
                "autorestart triggered ({forced}interval={})",
                self.settings.auto_restart_interval_shown
            );
            self.begin_restart();
        } else if self.pending_restart
            && !self.busy()
            && self.retry.is_none()
            && self.stopping.is_none()
        {
            self.pending_restart = false;
            original!("received HUP, spawning a new worker");
            self.begin_restart();
        }
    }

    // ------------------------------------------------------------- the end

    fn tell_parent(&mut self, code: i32) {
        if let Some(fd) = self.s.started.take() {
            let _ = sys::write_all(fd.as_raw_fd(), &[code as u8]);
        }
    }

    /// Reaps what is left, removes our files, and returns `code`.
    fn finish(mut self, code: i32) -> i32 {
        if code == 0 {
            original!("exiting");
        }
        for w in std::mem::take(&mut self.workers) {
            // Only a worker whose exec just failed can be left: it is exiting.
            let _ = sys::waitpid(w.pid);
        }
        if self.status_written
            && let Some(path) = &self.s.status_file
        {
            let _ = std::fs::remove_file(path);
        }
        if let Some(pid_file) = self.s.pid_file.take() {
            pid_file.remove();
        }
        listen::remove_socket_files(&self.s.listeners);
        if let Some(n) = &self.s.notify {
            n.remove();
        }
        // What the workers wrote last, as far as the log takes it now.
        for r in &mut self.relays {
            for _ in 0..64 {
                if r.done() || !r.pump() {
                    break;
                }
            }
        }
        self.tell_parent(code);
        self.s.output.close(&self.s.signals);
        code
    }
}

/// Nanoseconds of CLOCK_MONOTONIC for an Instant (which reads that clock).
fn to_ns(t: Instant) -> i128 {
    let (now, base) = (Instant::now(), sys::monotonic_ns());
    match t.checked_duration_since(now) {
        Some(ahead) => base + ahead.as_nanos() as i128,
        None => base - now.duration_since(t).as_nanos() as i128,
    }
}

fn from_ns(ns: i128) -> Instant {
    let (now, base) = (Instant::now(), sys::monotonic_ns());
    let delta = Duration::from_nanos((ns - base).unsigned_abs().min(u64::MAX as u128) as u64);
    if ns >= base {
        now + delta
    } else {
        now.checked_sub(delta).unwrap_or(now)
    }
}

impl Supervisor {
    /// Everything a new program image needs to carry on where we are.
    fn snapshot(&self) -> State {
        let workers = self
            .workers
            .iter()
            .map(|w| WorkerState {
                pid: w.pid,
                generation: w.generation,
                spawned: to_ns(w.spawned),
                role: match w.role {
                    Role::Starting {
                        restart,
                        ready,
                        give_up,
                    } => RoleState::Starting {
                        restart,
                        ready_at: match ready {
                            Ready::After(at) => Some(to_ns(at)),
                            Ready::Notified(_) => None,
                        },
                        notified: ready == Ready::Notified(true),
                        give_up: give_up.map(to_ns),
                    },
                    Role::Current => RoleState::Current,
                    Role::Old { signalled } => RoleState::Old { signalled },
                },
                exec: match &w.exec {
                    Exec::Pending(fd) => ExecState::Pending(fd.as_raw_fd()),
                    Exec::Done => ExecState::Done,
                    Exec::Failed => ExecState::Failed,
                },
            })
            .collect();
        State {
            program: Some(env!("CARGO_PKG_VERSION").to_string()),
            generation: self.generation,
            failures: self.failures,
            pending_restart: self.pending_restart,
            ever_started: self.ever_started,
            status_written: self.status_written,
            last_restart: to_ns(self.last_restart),
            retry: self.retry.map(|(at, r)| (to_ns(at), r)),
            kill_old_at: self.kill_old_at.map(to_ns),
            stopping: self.stopping.map(|d| d.map(to_ns)),
            forwarded: self.forwarded,
            listeners: self
                .s
                .listeners
                .iter()
                .map(|l| ListenerState {
                    fd: l.raw(),
                    name: l.name.clone(),
                    fd_name: l.fd_name.clone(),
                    unix_path: l
                        .unix_path
                        .as_ref()
                        .map(|f| f.path.to_string_lossy().into_owned()),
                    unix_id: l.unix_path.as_ref().and_then(|f| f.id),
                })
                .collect(),
            pid_file_fd: self.s.pid_file.as_ref().map(PidFile::raw_fd),
            notify: self.s.notify.as_ref().map(|n| {
                let id = n.file.as_ref().and_then(|f| f.id);
                (n.fd.as_raw_fd(), n.address.clone(), id)
            }),
            workers,
            relays: self
                .relays
                .iter()
                .map(|r| {
                    let (pid, fd, pending) = r.parts();
                    (pid, fd, pending.to_vec())
                })
                .collect(),
            logger: self.s.output.logger(),
        }
    }

    /// A supervisor carrying on from `state`, handed over by the previous
    /// program image; the descriptors it names are adopted.
    pub fn restore(setup: Setup, state: State) -> Result<Supervisor, String> {
        let from = state.program.clone().unwrap_or_else(|| "unknown".into());
        let mut s = Supervisor::new(setup);
        s.generation = state.generation;
        s.failures = state.failures;
        s.pending_restart = state.pending_restart;
        s.ever_started = state.ever_started;
        s.status_written = state.status_written;
        s.last_restart = from_ns(state.last_restart);
        s.retry = state.retry.map(|(at, r)| (from_ns(at), r));
        s.kill_old_at = state.kill_old_at.map(from_ns);
        s.stopping = state.stopping.map(|d| d.map(from_ns));
        s.forwarded = state.forwarded;
        let adopt = |fd: std::os::fd::RawFd, what: &str| {
            let owned = sys::take_inherited(fd)
                .map_err(|_| format!("{what} descriptor {fd} is not open"))?;
            sys::set_cloexec(fd, true)
                .map_err(|e| format!("{what} descriptor {fd}: {}", errtext(&e)))?;
            Ok::<_, String>(owned)
        };
        for w in state.workers {
            let exec = match w.exec {
                ExecState::Pending(fd) => Exec::Pending(adopt(fd, "exec report")?),
                ExecState::Done => Exec::Done,
                ExecState::Failed => Exec::Failed,
            };
            let role = match w.role {
                RoleState::Starting {
                    restart,
                    ready_at,
                    notified,
                    give_up,
                } => Role::Starting {
                    restart,
                    ready: match ready_at {
                        Some(at) => Ready::After(from_ns(at)),
                        None => Ready::Notified(notified),
                    },
                    give_up: give_up.map(from_ns),
                },
                RoleState::Current => Role::Current,
                RoleState::Old { signalled } => Role::Old { signalled },
            };
            s.workers.push(Worker {
                pid: w.pid,
                generation: w.generation,
                spawned: from_ns(w.spawned),
                role,
                exec,
            });
        }
        for (pid, fd, pending) in state.relays {
            let fd = adopt(fd, "output relay")?;
            s.relays.push(
                Relay::restore(pid, fd, pending)
                    .map_err(|e| format!("output relay: {}", errtext(&e)))?,
            );
        }
        if s.stopping.is_some() && s.workers.is_empty() {
            // A shutdown handed over with nothing left to wait for.
            s.exit_code = Some(0);
        }
        note!(
            "upgraded in place (pid {}) from version {from} to {}: {} worker(s) adopted, generation {}",
            sys::getpid(),
            env!("CARGO_PKG_VERSION"),
            s.workers.len(),
            s.generation
        );
        Ok(s)
    }

    /// SIGUSR2 (SIGUSR1 as socketmaster): execute our program again, in
    /// place, handing the state over. The new program is asked first
    /// whether it takes the state, beside the loop; if it does not, or the
    /// exec fails, we carry on as before.
    fn upgrade(&mut self) {
        if self.upgrade_check.is_some() {
            note!("an upgrade is already under way, ignored");
            return;
        }
        let exe = &self.s.image.exe;
        note!("upgrading in place: executing {}", exe.display());
        let state = self.snapshot().encode();
        let image = &self.s.image;
        match UpgradeCheck::start(exe, &image.argv, &image.env, &state, Instant::now()) {
            Ok(check) => self.upgrade_check = Some(check),
            Err(why) => warning!("not upgrading: {why}; carrying on"),
        }
    }

    /// Acts on the upgrade check's verdict, once there is one.
    fn on_upgrade_check(&mut self, now: Instant) {
        let Some(check) = &mut self.upgrade_check else {
            return;
        };
        let Some(verdict) = check.verdict(now) else {
            return;
        };
        self.upgrade_check = None;
        match verdict {
            Verdict::Refused(why) => warning!("not upgrading: {why}; carrying on"),
            // Leaving anyway: nothing to hand over.
            Verdict::Accepted if self.exit_code.is_some() => {}
            Verdict::Accepted => self.exec_self(),
        }
    }

    /// Executes our program with the state as it is now; returns only if
    /// that fails.
    fn exec_self(&mut self) {
        let exe = self.s.image.exe.clone();
        let state = self.snapshot().encode();
        // The daemonizing parent, if still waiting, gets its answer now.
        self.tell_parent(0);
        let carried: Vec<std::os::fd::RawFd> = self
            .s
            .pid_file
            .as_ref()
            .map(PidFile::raw_fd)
            .into_iter()
            .chain(self.s.notify.as_ref().map(|n| n.fd.as_raw_fd()))
            .chain(
                self.workers
                    .iter()
                    .filter_map(|w| w.report_fd().map(|f| f.as_raw_fd())),
            )
            .chain(self.relays.iter().map(|r| r.fd().as_raw_fd()))
            .collect();
        for &fd in &carried {
            let _ = sys::set_cloexec(fd, false);
        }
        let mut env = self.s.image.env.clone();
        env::set(&mut env, upgrade::STATE_VAR, state);
        let err = match exec_args(&exe, &self.s.image.argv, &env) {
            Ok((path, argv, envp)) => sys::execve(&path, &argv, &envp),
            Err(e) => e,
        };
        for &fd in &carried {
            let _ = sys::set_cloexec(fd, true);
        }
        warning!(
            "not upgrading: unable to execute {}: {}; carrying on",
            exe.display(),
            errtext(&err)
        );
    }
}

/// C strings for execve.
fn exec_args(
    exe: &std::path::Path,
    argv: &[std::ffi::OsString],
    env: &Vars,
) -> std::io::Result<(std::ffi::CString, sys::CStrArray, sys::CStrArray)> {
    let path = sys::cstring(exe.as_os_str())?;
    let argv = argv
        .iter()
        .map(|a| sys::cstring(a))
        .collect::<std::io::Result<Vec<_>>>()?;
    let envp = spawn::env_cstrings(env);
    Ok((path, sys::CStrArray::new(argv), sys::CStrArray::new(envp)))
}
