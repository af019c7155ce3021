//! The supervisor's rules: which workers exist and in what role, what a
//! signal, an exit, an exec report, a READY=1 or the passing of time
//! does, and when the next timer falls due. Nothing here makes a system
//! call, holds a descriptor or reads the clock: every event comes with the
//! time it is handled at, and every act (spawn, signal, status file, log
//! line, upstream notification) is asked of a [`Shell`]. The unit tests
//! below drive it with a fake shell and a fake clock.
//!
//! Workers are kept in one list, each with its generation and role: the
//! one starting (at most one at a time), the current one, and old ones
//! (kept until they exit, signalled once their successor is up).

use std::time::{Duration, Instant};

use crate::cli::Policy;
use crate::env::{Settings, fmt_secs};
use crate::signals::{self, Signal};
use crate::sys::{Pid, WaitStatus};

/// Retries that keep the original's pace (one `--interval` apart).
pub const FAST_RETRIES: u32 = 3;
/// The first backed-off wait, doubled at every further failure...
const BACKOFF_FIRST: Duration = Duration::from_millis(125);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A worker that exits sooner than max(--interval, this) after it was
/// spawned counts as a failed start, even if it passed the start check.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// The delay before the next attempt after `failures` consecutive
/// failures, beyond the original's pace.
pub fn backoff(failures: u32) -> Duration {
    if failures <= FAST_RETRIES {
        return Duration::ZERO;
    }
    let doublings = (failures - FAST_RETRIES - 1).min(16);
    (BACKOFF_FIRST * (1 << doublings)).min(BACKOFF_CAP)
}

/// The kinds of log line (see `log`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Say {
    /// Server::Starter's own wording.
    Original,
    Note,
    Warning,
    Fatal,
}

/// What the rules ask of the world.
pub trait Shell {
    /// Starts a worker of `generation`: its pid, or why it could not.
    fn spawn(&mut self, generation: u64) -> Result<Pid, String>;
    fn signal(&mut self, pid: Pid, sig: i32);
    /// Rewrites the status file with these `(generation, pid)` pairs.
    fn announce(&mut self, workers: &[(u64, Pid)]);
    fn say(&mut self, kind: Say, line: String);
    /// The first generation is up: READY=1 to whoever started us.
    fn first_generation_up(&mut self);
    /// The first worker's program runs (0), or will never (its status):
    /// what a daemonizing parent exits with.
    fn tell_parent(&mut self, code: i32);
    /// The upgrade signal arrived.
    fn upgrade(&mut self);
    /// USR1 (start_server): reopen the log.
    fn reopen_log(&mut self);
}

/// The rules' settings, from the command line.
#[derive(Debug, Clone)]
pub struct Rules {
    pub interval: Duration,
    pub signal_on_hup: Signal,
    pub signal_on_term: Signal,
    pub stop_timeout: Option<Duration>,
    /// With readiness by notification: how long a new worker may take to
    /// send READY=1.
    pub ready_timeout: Option<Duration>,
    pub policy: Policy,
}

/// What makes a starting worker count as started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ready {
    /// Still alive at this instant (--interval).
    After(Instant),
    /// It sent READY=1 (or not yet).
    Notified(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exec {
    /// Its exec report has not come yet.
    Pending,
    /// The program runs: the worker may count as started.
    Done,
    /// It could not be executed: the worker is about to exit.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub pid: Pid,
    pub generation: u64,
    pub spawned: Instant,
    pub role: Role,
    pub exec: Exec,
}

impl Worker {
    /// When a starting worker counts as started, if its program runs.
    fn ready_at(&self) -> Option<(Instant, bool)> {
        let Role::Starting { restart, ready, .. } = self.role else {
            return None;
        };
        match (ready, self.exec) {
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

/// How an exec report ended.
pub enum ExecReport {
    Executed,
    /// The program could not be executed: why, and the exit status this
    /// means when nothing has ever run (127 not found, 126 otherwise).
    Failed {
        why: String,
        status: i32,
    },
}

/// The supervisor's state, and its rules.
pub struct Core {
    pub rules: Rules,
    /// The settings the environment and envdir give (kept current by the
    /// shell).
    pub settings: Settings,
    pub workers: Vec<Worker>,
    pub generation: u64,
    /// A spawn waiting for its time: `(when, restart)`.
    pub retry: Option<(Instant, bool)>,
    /// When the old workers get `--signal-on-hup`.
    pub kill_old_at: Option<Instant>,
    /// A HUP arrived while a restart was under way.
    pub pending_restart: bool,
    /// Consecutive failed starts.
    pub failures: u32,
    pub last_restart: Instant,
    /// Whether any worker has ever been executed.
    pub ever_started: bool,
    /// Shutting down; `Some(deadline)` when --stop-timeout is set.
    pub stopping: Option<Option<Instant>>,
    pub exit_code: Option<i32>,
    /// The signal shutdown forwarded, and the last worker's wait status:
    /// the exit status without respawn.
    pub forwarded: Option<i32>,
    pub last_status: Option<WaitStatus>,
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

impl Core {
    pub fn new(rules: Rules, settings: Settings, now: Instant) -> Core {
        Core {
            rules,
            settings,
            workers: Vec::new(),
            generation: 0,
            retry: None,
            kill_old_at: None,
            pending_restart: false,
            failures: 0,
            last_restart: now,
            ever_started: false,
            stopping: None,
            exit_code: None,
            forwarded: None,
            last_status: None,
        }
    }

    /// The first worker.
    pub fn start(&mut self, now: Instant, sh: &mut dyn Shell) {
        self.spawn(false, now, sh);
    }

    pub fn is_worker(&self, pid: Pid) -> bool {
        self.workers.iter().any(|w| w.pid == pid)
    }

    /// The earliest instant something is due, if anything is.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ready = self.workers.iter().filter_map(|w| Some(w.ready_at()?.0));
        let give_up = self.workers.iter().filter_map(Worker::give_up);
        ready
            .chain(give_up)
            .chain(self.retry.map(|(at, _)| at))
            .chain(self.kill_old_at)
            .chain(self.stopping.flatten())
            .chain(self.auto_restart_due())
            .min()
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

    /// Every current and old worker, for the status file.
    fn announce(&self, sh: &mut dyn Shell) {
        let entries: Vec<(u64, Pid)> = self
            .workers
            .iter()
            .filter(|w| !matches!(w.role, Role::Starting { .. }))
            .map(|w| (w.generation, w.pid))
            .collect();
        sh.announce(&entries);
    }

    fn signal_all(&self, sig: i32, sh: &mut dyn Shell) {
        for w in &self.workers {
            sh.signal(w.pid, sig);
        }
    }

    // ------------------------------------------------------------ spawning

    fn spawn(&mut self, restart: bool, now: Instant, sh: &mut dyn Shell) {
        self.generation += 1;
        match sh.spawn(self.generation) {
            Ok(pid) => {
                sh.say(Say::Original, format!("starting new worker {pid}"));
                let ready = match self.rules.ready_timeout {
                    Some(_) => Ready::Notified(false),
                    None => Ready::After(now + self.rules.interval),
                };
                self.workers.push(Worker {
                    pid,
                    generation: self.generation,
                    spawned: now,
                    role: Role::Starting {
                        restart,
                        ready,
                        give_up: self.rules.ready_timeout.map(|t| now + t),
                    },
                    exec: Exec::Pending,
                });
            }
            Err(why) => {
                sh.say(Say::Warning, why);
                self.failures += 1;
                let wait = backoff(self.failures.max(FAST_RETRIES + 1));
                self.retry = Some((now + wait, restart));
            }
        }
    }

    /// Schedules the next attempt after a failure: at the original's pace
    /// (one --interval after the failed attempt began) for the first
    /// retries, then backing off exponentially.
    fn schedule_retry(
        &mut self,
        spawned: Instant,
        restart: bool,
        now: Instant,
        sh: &mut dyn Shell,
    ) {
        let mut at = spawned + self.rules.interval;
        let extra = backoff(self.failures);
        if !extra.is_zero() {
            at = at.max(now + extra);
            sh.say(
                Say::Note,
                format!(
                    "{} failed starts in a row, next attempt in {} s",
                    self.failures,
                    fmt_secs(at.saturating_duration_since(now))
                ),
            );
        }
        if at <= now {
            self.spawn(restart, now, sh);
        } else {
            self.retry = Some((at, restart));
        }
    }

    fn begin_restart(&mut self, now: Instant, sh: &mut dyn Shell) {
        for w in &mut self.workers {
            if w.role == Role::Current {
                w.role = Role::Old { signalled: false };
            }
        }
        self.spawn(true, now, sh);
    }

    /// The starting worker has passed its start check.
    fn promote(&mut self, pid: Pid, restart: bool, now: Instant, sh: &mut dyn Shell) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
            w.role = Role::Current;
        }
        self.last_restart = now;
        self.announce(sh);
        sh.first_generation_up();
        if !restart {
            return;
        }
        let olds = self.pids(|r| r == Role::Old { signalled: false });
        sh.say(
            Say::Original,
            format!(
                "new worker is now running, sending {} to old workers:{}",
                self.rules.signal_on_hup.shown,
                if olds.is_empty() {
                    "none".into()
                } else {
                    join_pids(&olds)
                }
            ),
        );
        let delay = self.settings.kill_old_delay;
        if delay.is_zero() {
            self.kill_olds(sh);
        } else {
            sh.say(
                Say::Original,
                format!(
                    "sleeping {} secs before killing old workers",
                    self.settings.kill_old_delay_shown
                ),
            );
            self.kill_old_at = Some(now + delay);
        }
    }

    fn kill_olds(&mut self, sh: &mut dyn Shell) {
        sh.say(Say::Original, "killing old workers".into());
        for w in &mut self.workers {
            if w.role == (Role::Old { signalled: false }) {
                sh.signal(w.pid, self.rules.signal_on_hup.number);
                w.role = Role::Old { signalled: true };
            }
        }
    }

    // -------------------------------------------------------------- events

    /// A starting worker's exec report.
    pub fn on_exec(&mut self, pid: Pid, report: ExecReport, sh: &mut dyn Shell) {
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        if w.exec != Exec::Pending {
            return;
        }
        match report {
            ExecReport::Executed => {
                w.exec = Exec::Done;
                if !self.ever_started {
                    self.ever_started = true;
                    sh.tell_parent(0);
                }
            }
            ExecReport::Failed { why, status } => {
                w.exec = Exec::Failed;
                if self.ever_started {
                    sh.say(Say::Warning, why);
                } else {
                    // Nothing has ever run: this is a deployment error, not
                    // something to retry forever.
                    sh.say(Say::Fatal, why);
                    self.exit_code = Some(status);
                }
            }
        }
    }

    /// A worker (or one of its descendants) sent READY=1.
    pub fn on_ready(&mut self, pid: Pid, sh: &mut dyn Shell) {
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        match &mut w.role {
            Role::Starting {
                ready: ready @ Ready::Notified(false),
                ..
            } => {
                *ready = Ready::Notified(true);
                sh.say(Say::Note, format!("new worker {pid} is ready"));
            }
            _ => sh.say(
                Say::Note,
                format!("worker {pid} sent READY=1 again, ignored"),
            ),
        }
    }

    /// A child was reaped: false when it was not a worker.
    pub fn on_exit(
        &mut self,
        pid: Pid,
        status: WaitStatus,
        now: Instant,
        sh: &mut dyn Shell,
    ) -> bool {
        let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
            return false;
        };
        let w = self.workers.remove(i);
        self.last_status = Some(status);
        if !self.rules.policy.respawn {
            self.on_last_exit(w, status, sh);
            return true;
        }
        if self.stopping.is_some() || self.exit_code.is_some() {
            sh.say(Say::Original, format!("worker {pid} died, status:{status}"));
            self.announce(sh);
            if self.workers.is_empty() && self.exit_code.is_none() {
                self.exit_code = Some(0);
            }
            return true;
        }
        let lived = now.saturating_duration_since(w.spawned);
        match w.role {
            Role::Starting { restart, .. } => {
                sh.say(
                    Say::Original,
                    format!("new worker {pid} seems to have failed to start, exit status:{status}"),
                );
                self.failures += 1;
                self.schedule_retry(w.spawned, restart, now, sh);
            }
            Role::Current => {
                sh.say(
                    Say::Original,
                    format!("worker {pid} died unexpectedly with status:{status}, restarting"),
                );
                if lived < self.rules.interval.max(STABLE_AFTER) {
                    self.failures += 1;
                } else {
                    self.failures = 0;
                }
                self.announce(sh);
                self.schedule_retry(w.spawned, false, now, sh);
            }
            Role::Old { .. } => {
                sh.say(
                    Say::Original,
                    format!("old worker {pid} died, status:{status}"),
                );
                self.announce(sh);
            }
        }
        true
    }

    /// Without respawn (socketmaster): nothing is replaced or retried, and
    /// start_server exits, saying how the last worker ended, once no worker
    /// is left.
    fn on_last_exit(&mut self, w: Worker, status: WaitStatus, sh: &mut dyn Shell) {
        let pid = w.pid;
        match w.role {
            Role::Starting { .. } if self.stopping.is_none() => {
                let keep = self.pids(|r| matches!(r, Role::Old { .. }));
                sh.say(
                    Say::Warning,
                    format!(
                        "new worker {pid} exited before it was up ({}): keeping the old workers: {}",
                        describe_status(status),
                        if keep.is_empty() {
                            "none".into()
                        } else {
                            join_pids(&keep)
                        }
                    ),
                );
            }
            _ => sh.say(
                Say::Note,
                format!("worker {pid} exited ({})", describe_status(status)),
            ),
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

    pub fn on_signal(&mut self, sig: i32, now: Instant, sh: &mut dyn Shell) {
        if self.exit_code.is_some() {
            // The last worker is gone and we are leaving: an upgrade now
            // would hand over a shutdown with nothing left to wait for.
            return;
        }
        match sig {
            libc::SIGCHLD | libc::SIGPIPE | libc::SIGWINCH | libc::SIGURG | libc::SIGCONT => {}
            libc::SIGHUP => self.on_hup(now, sh),
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => match self.stopping {
                None => self.begin_shutdown(sig, now, sh),
                Some(_) => {
                    let pids = self.pids(|_| true);
                    sh.say(
                        Say::Note,
                        format!(
                            "received {} again, sending KILL to all workers:{}",
                            signals::name(sig),
                            join_pids(&pids)
                        ),
                    );
                    self.signal_all(libc::SIGKILL, sh);
                }
            },
            sig if sig == self.rules.policy.upgrade_signal => sh.upgrade(),
            libc::SIGUSR1 => sh.reopen_log(),
            other => sh.say(
                Say::Note,
                format!("received {}, ignored", signals::name(other)),
            ),
        }
    }

    fn on_hup(&mut self, now: Instant, sh: &mut dyn Shell) {
        if self.stopping.is_some() {
            sh.say(
                Say::Note,
                "received HUP while shutting down, ignored".into(),
            );
        } else if self.busy() {
            self.pending_restart = true;
            let under_way = if self.candidate().is_some() {
                "a new worker is starting"
            } else {
                "old workers await --kill-old-delay"
            };
            sh.say(
                Say::Note,
                format!("received HUP while {under_way}, will restart once that is done"),
            );
        } else if let Some((_, restart)) = self.retry.take() {
            // A failing start: try the (presumably fixed) deployment now.
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            self.spawn(restart, now, sh);
        } else {
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            self.begin_restart(now, sh);
        }
    }

    fn begin_shutdown(&mut self, sig: i32, now: Instant, sh: &mut dyn Shell) {
        let term = if self.rules.policy.forward_as_is {
            Signal::of(sig)
        } else if sig == libc::SIGTERM {
            self.rules.signal_on_term.clone()
        } else {
            Signal::of(libc::SIGTERM)
        };
        self.forwarded = Some(term.number);
        let pids = self.pids(|_| true);
        sh.say(
            Say::Original,
            format!(
                "received {}, sending {} to all workers:{}",
                signals::name(sig),
                term.shown,
                join_pids(&pids)
            ),
        );
        self.signal_all(term.number, sh);
        self.retry = None;
        self.kill_old_at = None;
        self.pending_restart = false;
        self.stopping = Some(self.rules.stop_timeout.map(|t| now + t));
        if self.workers.is_empty() {
            self.exit_code = Some(0);
        }
    }

    /// Whatever is due at `now`.
    pub fn on_timers(&mut self, now: Instant, sh: &mut dyn Shell) {
        if self.exit_code.is_some() {
            return;
        }
        let ready = self.workers.iter().find_map(|w| {
            let (at, restart) = w.ready_at()?;
            (now >= at).then_some((w.pid, restart))
        });
        if let Some((pid, restart)) = ready {
            self.promote(pid, restart, now, sh);
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
            let secs = self.rules.ready_timeout.unwrap_or(Duration::ZERO);
            sh.say(
                Say::Warning,
                format!(
                    "new worker {pid} is not ready after {} s, killing it",
                    fmt_secs(secs)
                ),
            );
            sh.signal(pid, libc::SIGKILL);
        }
        if let Some((at, restart)) = self.retry
            && now >= at
        {
            self.retry = None;
            self.spawn(restart, now, sh);
        }
        if self.kill_old_at.is_some_and(|at| now >= at) {
            self.kill_old_at = None;
            self.kill_olds(sh);
        }
        if let Some(Some(at)) = self.stopping
            && now >= at
        {
            self.stopping = Some(None);
            let pids = self.pids(|_| true);
            sh.say(
                Say::Note,
                format!(
                    "workers still running after --stop-timeout, sending KILL to all workers:{}",
                    join_pids(&pids)
                ),
            );
            self.signal_all(libc::SIGKILL, sh);
        }
        if self.auto_restart_due().is_some_and(|due| now >= due) {
            let forced = if self.has_old() { "forced, " } else { "" };
            sh.say(
                Say::Original,
                format!(
                    "autorestart triggered ({forced}interval={})",
                    self.settings.auto_restart_interval_shown
                ),
            );
            self.begin_restart(now, sh);
        } else if self.pending_restart
            && !self.busy()
            && self.retry.is_none()
            && self.stopping.is_none()
        {
            self.pending_restart = false;
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            self.begin_restart(now, sh);
        }
    }
}
