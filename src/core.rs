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

use crate::clock::{after, fmt_secs};
use crate::config::{Policy, Settings};
use crate::sig::{self, Signal};
use crate::wait::{Pid, WaitStatus};

/// Retries that keep the original's pace (one `--interval` apart).
pub const FAST_RETRIES: u32 = 3;
/// The first backed-off wait, doubled at every further failure...
const BACKOFF_FIRST: Duration = Duration::from_millis(125);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A worker that exits sooner than max(--interval, this) after it was
/// spawned counts as a failed start, even if it passed the start check.
const STABLE_AFTER: Duration = Duration::from_secs(1);
/// Without --stop-timeout: how long processes the workers left behind
/// have after SIGTERM before SIGKILL.
pub const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SIGKILLed leftovers have to be reaped before we leave anyway.
const SWEEP_REAP: Duration = Duration::from_secs(1);

/// The exit status when a worker or a process it left behind had to be
/// killed at shutdown.
pub const EXIT_KILLED: i32 = 2;
/// The exit status when --start-retries ran out with no generation serving.
pub const EXIT_GAVE_UP: i32 = 3;

/// The delay before the next attempt after `failures` consecutive
/// failures, beyond the original's pace.
pub fn backoff(failures: u32) -> Duration {
    if failures <= FAST_RETRIES {
        return Duration::ZERO;
    }
    let doublings = failures.saturating_sub(FAST_RETRIES + 1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_CAP)
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
    /// Tells whoever started us (systemd's NOTIFY_SOCKET) where we are.
    fn upstream(&mut self, event: Upstream);
    /// The first worker's program runs (0), or will never (its status):
    /// what a daemonizing parent exits with.
    fn tell_parent(&mut self, code: i32);
    /// The upgrade signal arrived.
    fn upgrade(&mut self);
    /// USR1 (start_server): reopen the log.
    fn reopen_log(&mut self);
    /// Sends `sig` to a process that is not a worker (one the workers
    /// left behind).
    fn kill(&mut self, pid: Pid, sig: i32) {
        self.signal(pid, sig);
    }
    /// The processes still running under us that are not workers (nor our
    /// own helpers): what the workers left behind.
    fn leftovers(&mut self) -> Vec<Pid> {
        Vec::new()
    }
    /// Every worker with its role, and how many restarts were given up:
    /// the fuller state beside the status file.
    fn state(&mut self, _workers: &[(u64, Pid, Shown)], _restarts_given_up: u64) {}
}

/// What start_server tells the service manager that started it, in
/// sd_notify's words.
#[derive(Debug, Clone, PartialEq)]
pub enum Upstream {
    /// READY=1: a generation is up (the first, or a restart's).
    Ready,
    /// RELOADING=1 (with MONOTONIC_USEC, which the shell reads): a restart
    /// begins.
    Reloading,
    /// STOPPING=1: shutting down.
    Stopping,
    /// STATUS=: what is happening, in words.
    Status(String),
}

/// A worker's role as the state file and `--status` show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shown {
    Starting,
    Serving,
    Draining,
}

impl Shown {
    pub fn word(self) -> &'static str {
        match self {
            Shown::Starting => "starting",
            Shown::Serving => "serving",
            Shown::Draining => "draining",
        }
    }
}

/// The rules' settings, from the command line.
#[derive(Debug, Clone)]
pub struct Rules {
    pub interval: Duration,
    pub signal_on_hup: Signal,
    pub signal_on_term: Signal,
    pub stop_timeout: Option<Duration>,
    /// How long an old worker may drain after --signal-on-hup before it
    /// gets SIGKILL (none: as long as it takes).
    pub drain_timeout: Option<Duration>,
    /// How many failed starts in a row are retried (none: forever).
    pub start_retries: Option<u32>,
    /// How long to keep serving after TERM/INT/QUIT before the workers are
    /// signalled.
    pub shutdown_delay: Duration,
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
    /// A previous generation: `signalled` once its successor is up;
    /// `kill_at`: when it gets SIGKILL unless it has exited (--drain-timeout).
    Old {
        signalled: bool,
        kill_at: Option<Instant>,
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

/// The timers of a restart, beside the workers' roles (a worker starting
/// is a role of its own): none, the next attempt after a failure, or the
/// kill-old delay, during which the new worker may die and its own retry
/// fall due too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Restart {
    Idle,
    /// The next attempt to start a worker; `restart`: old workers await
    /// it.
    RetryAt {
        at: Instant,
        restart: bool,
    },
    /// The new generation is up; the old workers get --signal-on-hup at
    /// `at`. `retry`: the new worker died meanwhile, and this is when its
    /// replacement is due.
    KillOldAt {
        at: Instant,
        retry: Option<(Instant, bool)>,
    },
}

impl Restart {
    /// The next attempt: when, and whether old workers await it.
    pub fn retry(self) -> Option<(Instant, bool)> {
        match self {
            Restart::Idle => None,
            Restart::RetryAt { at, restart } => Some((at, restart)),
            Restart::KillOldAt { retry, .. } => retry,
        }
    }

    /// When the old workers get their signal.
    pub fn kill_old_at(self) -> Option<Instant> {
        match self {
            Restart::KillOldAt { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The same, with the next attempt set (or dropped).
    pub fn with_retry(self, retry: Option<(Instant, bool)>) -> Restart {
        match (self, retry) {
            (Restart::KillOldAt { at, .. }, retry) => Restart::KillOldAt { at, retry },
            (_, Some((at, restart))) => Restart::RetryAt { at, restart },
            (_, None) => Restart::Idle,
        }
    }

    /// The same, with the kill-old delay set (or over).
    pub fn with_kill_old_at(self, kill_at: Option<Instant>) -> Restart {
        match kill_at {
            Some(at) => Restart::KillOldAt {
                at,
                retry: self.retry(),
            },
            None => Restart::Idle.with_retry(self.retry()),
        }
    }
}

/// Where a shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shutdown {
    Running,
    /// TERM/INT/QUIT `sig` arrived; the workers keep serving until `until`
    /// (--shutdown-delay).
    Delaying {
        sig: i32,
        until: Instant,
    },
    /// The workers were sent their signal; SIGKILL at `kill_at`, if
    /// --stop-timeout is set.
    Stopping {
        kill_at: Option<Instant>,
    },
    /// SIGKILL was sent (a second signal, or --stop-timeout): only the
    /// exits are awaited.
    Killed,
    /// The workers are gone, and what they left behind was sent SIGTERM;
    /// at `at` it gets SIGKILL (`killed`: that was done, and at `at` we
    /// leave regardless). `code`: the exit status then.
    Sweeping {
        at: Instant,
        killed: bool,
        code: i32,
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
    pub restart: Restart,
    /// A HUP arrived while a restart was under way.
    pub pending_restart: bool,
    /// Consecutive failed starts.
    pub failures: u32,
    pub last_restart: Instant,
    /// Whether any worker has ever been executed.
    pub ever_started: bool,
    pub shutdown: Shutdown,
    pub exit_code: Option<i32>,
    /// The signal shutdown forwarded, and the last worker's wait status:
    /// the exit status without respawn.
    pub forwarded: Option<i32>,
    pub last_status: Option<WaitStatus>,
    /// A worker (or a process it left behind) had to be killed at
    /// shutdown.
    pub killed_at_shutdown: bool,
    /// --start-retries ran out with nothing serving.
    pub gave_up: bool,
    /// Restarts given up while the previous generation went on serving.
    pub restarts_given_up: u64,
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
            restart: Restart::Idle,
            pending_restart: false,
            failures: 0,
            last_restart: now,
            ever_started: false,
            shutdown: Shutdown::Running,
            exit_code: None,
            forwarded: None,
            last_status: None,
            killed_at_shutdown: false,
            gave_up: false,
            restarts_given_up: 0,
        }
    }

    /// The first worker.
    pub fn start(&mut self, now: Instant, sh: &mut dyn Shell) {
        self.spawn(false, now, sh);
    }

    /// Shutting down (the workers were told to stop).
    pub fn stopping(&self) -> bool {
        self.shutdown != Shutdown::Running
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
            .chain(self.restart.retry().map(|(at, _)| at))
            .chain(self.restart.kill_old_at())
            .chain(self.workers.iter().filter_map(|w| match w.role {
                Role::Old { kill_at, .. } => kill_at,
                _ => None,
            }))
            .chain(match self.shutdown {
                Shutdown::Running | Shutdown::Killed => None,
                Shutdown::Delaying { until, .. } => Some(until),
                Shutdown::Stopping { kill_at } => kill_at,
                Shutdown::Sweeping { at, .. } => Some(at),
            })
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
        self.candidate().is_some() || self.restart.kill_old_at().is_some()
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
            || self.stopping()
            || self.busy()
            || self.restart.retry().is_some()
            || !self.has_current()
        {
            return None;
        }
        let interval = self.settings.auto_restart_interval;
        // With old workers still draining, wait up to twice as long.
        let factor = if self.has_old() { 2 } else { 1 };
        Some(after(self.last_restart, interval.saturating_mul(factor)))
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
        self.tell_state(sh);
    }

    /// Every worker with its role, for the state file.
    fn tell_state(&self, sh: &mut dyn Shell) {
        let entries: Vec<(u64, Pid, Shown)> = self
            .workers
            .iter()
            .map(|w| {
                let shown = match w.role {
                    Role::Starting { .. } => Shown::Starting,
                    Role::Current
                    | Role::Old {
                        signalled: false, ..
                    } => Shown::Serving,
                    Role::Old {
                        signalled: true, ..
                    } => Shown::Draining,
                };
                (w.generation, w.pid, shown)
            })
            .collect();
        sh.state(&entries, self.restarts_given_up);
        sh.upstream(Upstream::Status(self.status_text()));
    }

    /// What is happening, in words, for STATUS=: the generations serving,
    /// starting and draining.
    fn status_text(&self) -> String {
        let mut serving = Vec::new();
        let mut starting = Vec::new();
        let mut draining = Vec::new();
        let mut workers: Vec<&Worker> = self.workers.iter().collect();
        workers.sort_by_key(|w| std::cmp::Reverse(w.generation));
        for w in workers {
            let (g, pid) = (w.generation, w.pid);
            match w.role {
                Role::Current
                | Role::Old {
                    signalled: false, ..
                } => serving.push(format!("generation {g} serving (pid {pid})")),
                Role::Starting { .. } => starting.push(format!(
                    "starting generation {g}, attempt {}",
                    self.failures.saturating_add(1)
                )),
                Role::Old {
                    signalled: true, ..
                } => draining.push(format!("draining generation {g} (pid {pid})")),
            }
        }
        let parts: Vec<String> = serving
            .into_iter()
            .chain(starting)
            .chain(draining)
            .collect();
        let text = match parts.is_empty() {
            true => "no generation serving".to_string(),
            false => parts.join("; "),
        };
        match self.shutdown {
            Shutdown::Running => text,
            _ => format!("stopping; {text}"),
        }
    }

    fn signal_all(&self, sig: i32, sh: &mut dyn Shell) {
        for w in &self.workers {
            sh.signal(w.pid, sig);
        }
    }

    // ------------------------------------------------------------ spawning

    fn spawn(&mut self, restart: bool, now: Instant, sh: &mut dyn Shell) {
        self.generation = self.generation.saturating_add(1);
        match sh.spawn(self.generation) {
            Ok(pid) => {
                sh.say(Say::Original, format!("starting new worker {pid}"));
                let ready = match self.rules.ready_timeout {
                    Some(_) => Ready::Notified(false),
                    None => Ready::After(after(now, self.rules.interval)),
                };
                self.workers.push(Worker {
                    pid,
                    generation: self.generation,
                    spawned: now,
                    role: Role::Starting {
                        restart,
                        ready,
                        give_up: self.rules.ready_timeout.map(|t| after(now, t)),
                    },
                    exec: Exec::Pending,
                });
                self.tell_state(sh);
            }
            Err(why) => {
                sh.say(Say::Warning, why);
                if self.count_failure(now, sh) {
                    return;
                }
                let wait = backoff(self.failures.max(FAST_RETRIES + 1));
                self.restart = self.restart.with_retry(Some((after(now, wait), restart)));
            }
        }
    }

    /// Counts a failed start, and gives up once --start-retries is spent:
    /// the restart, while the previous generation still serves (it goes on
    /// serving); otherwise everything, to exit with [`EXIT_GAVE_UP`]. True
    /// when it gave up.
    fn count_failure(&mut self, now: Instant, sh: &mut dyn Shell) -> bool {
        self.failures = self.failures.saturating_add(1);
        let Some(retries) = self.rules.start_retries else {
            return false;
        };
        if self.failures <= retries {
            return false;
        }
        let failures = std::mem::take(&mut self.failures);
        self.restart = self.restart.with_retry(None);
        let serving = self
            .workers
            .iter()
            .filter(|w| {
                matches!(
                    w.role,
                    Role::Old {
                        signalled: false,
                        ..
                    }
                )
            })
            .map(|w| (w.generation, w.pid))
            .max();
        if let Some((generation, pid)) = serving {
            if let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) {
                w.role = Role::Current;
            }
            self.restarts_given_up = self.restarts_given_up.saturating_add(1);
            sh.say(
                Say::Warning,
                format!(
                    "{failures} failed starts in a row, giving up the restart \
                     (--start-retries={retries}): generation {generation} (pid {pid}) goes on serving"
                ),
            );
            sh.upstream(Upstream::Status(format!(
                "restart given up after {failures} failed starts; generation {generation} serving (pid {pid})"
            )));
            sh.upstream(Upstream::Ready);
            self.announce(sh);
        } else {
            self.gave_up = true;
            sh.say(
                Say::Fatal,
                format!(
                    "{failures} failed starts in a row and no generation serving, \
                     giving up (--start-retries={retries})"
                ),
            );
            let term = self.rules.signal_on_term.clone();
            sh.upstream(Upstream::Stopping);
            self.stop_workers(term, None, now, sh);
        }
        true
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
        let mut at = after(spawned, self.rules.interval);
        let extra = backoff(self.failures);
        if !extra.is_zero() {
            at = at.max(after(now, extra));
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
            self.restart = self.restart.with_retry(Some((at, restart)));
        }
    }

    fn begin_restart(&mut self, now: Instant, sh: &mut dyn Shell) {
        sh.upstream(Upstream::Reloading);
        for w in &mut self.workers {
            if w.role == Role::Current {
                w.role = Role::Old {
                    signalled: false,
                    kill_at: None,
                };
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
        sh.upstream(Upstream::Ready);
        self.announce(sh);
        if !restart {
            return;
        }
        let olds = self.pids(|r| {
            matches!(
                r,
                Role::Old {
                    signalled: false,
                    ..
                }
            )
        });
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
            self.kill_olds(now, sh);
        } else {
            sh.say(
                Say::Original,
                format!(
                    "sleeping {} secs before killing old workers",
                    self.settings.kill_old_delay_shown
                ),
            );
            self.restart = self.restart.with_kill_old_at(Some(after(now, delay)));
        }
    }

    fn kill_olds(&mut self, now: Instant, sh: &mut dyn Shell) {
        sh.say(Say::Original, "killing old workers".into());
        for w in &mut self.workers {
            if let Role::Old {
                signalled: false, ..
            } = w.role
            {
                sh.signal(w.pid, self.rules.signal_on_hup.number);
                w.role = Role::Old {
                    signalled: true,
                    kill_at: self.rules.drain_timeout.map(|t| after(now, t)),
                };
            }
        }
        self.tell_state(sh);
    }

    /// Old workers still draining at their --drain-timeout get SIGKILL.
    fn end_drains(&mut self, now: Instant, sh: &mut dyn Shell) {
        for w in &mut self.workers {
            if let Role::Old {
                kill_at: Some(at), ..
            } = w.role
                && now >= at
            {
                w.role = Role::Old {
                    signalled: true,
                    kill_at: None,
                };
                sh.say(
                    Say::Warning,
                    format!(
                        "old worker {} still running {} s after {}, sending KILL (--drain-timeout)",
                        w.pid,
                        fmt_secs(self.rules.drain_timeout.unwrap_or_default()),
                        self.rules.signal_on_hup.shown
                    ),
                );
                sh.signal(w.pid, sig::KILL);
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
            self.on_last_exit(w, status, now, sh);
            return true;
        }
        if self.stopping() || self.exit_code.is_some() {
            sh.say(Say::Original, format!("worker {pid} died, status:{status}"));
            self.announce(sh);
            if self.workers.is_empty() && self.exit_code.is_none() {
                self.workers_gone(0, now, sh);
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
                if !self.count_failure(now, sh) {
                    self.schedule_retry(w.spawned, restart, now, sh);
                }
            }
            Role::Current => {
                sh.say(
                    Say::Original,
                    format!("worker {pid} died unexpectedly with status:{status}, restarting"),
                );
                self.announce(sh);
                if lived >= self.rules.interval.max(STABLE_AFTER) {
                    self.failures = 0;
                } else if self.count_failure(now, sh) {
                    return true;
                }
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
    fn on_last_exit(&mut self, w: Worker, status: WaitStatus, now: Instant, sh: &mut dyn Shell) {
        let pid = w.pid;
        match w.role {
            Role::Starting { .. } if !self.stopping() => {
                let keep = self.pids(|r| matches!(r, Role::Old { .. }));
                sh.say(
                    Say::Warning,
                    format!(
                        "new worker {pid} exited before it was up ({}): keeping the old workers: {}",
                        status.describe(),
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
                format!("worker {pid} exited ({})", status.describe()),
            ),
        }
        if self.workers.is_empty() && self.exit_code.is_none() {
            self.workers_gone(self.last_exit_code(), now, sh);
        }
    }

    /// No worker is left and we are leaving: whatever the workers left
    /// behind gets SIGTERM, or, when nothing did, we leave with `code`.
    fn workers_gone(&mut self, code: i32, now: Instant, sh: &mut dyn Shell) {
        self.sweep(sig::TERM, None, code, now, sh);
    }

    /// A process that is not a worker was reaped.
    pub fn on_other_exit(&mut self, sh: &mut dyn Shell) {
        if let Shutdown::Sweeping { code, .. } = self.shutdown
            && self.exit_code.is_none()
            && sh.leftovers().is_empty()
        {
            self.exit_code = Some(self.final_code(code));
        }
    }

    /// What is left behind gets SIGKILL; `why` says why now.
    fn kill_leftovers(&mut self, why: &str, code: i32, now: Instant, sh: &mut dyn Shell) {
        self.sweep(sig::KILL, Some(why), code, now, sh);
    }

    /// Sends `sig` (TERM, then KILL) to what the workers left behind, or
    /// leaves with `code` when nothing is left. `why` begins the line.
    fn sweep(&mut self, sig: i32, why: Option<&str>, code: i32, now: Instant, sh: &mut dyn Shell) {
        let left = sh.leftovers();
        if left.is_empty() {
            self.exit_code = Some(self.final_code(code));
            return;
        }
        let why = why.map_or(String::new(), |w| format!("{w}, "));
        sh.say(
            Say::Note,
            format!(
                "{why}sending {} to what the workers left behind:{}",
                sig::name(sig),
                join_pids(&left)
            ),
        );
        for pid in left {
            sh.kill(pid, sig);
        }
        let killed = sig == sig::KILL;
        self.killed_at_shutdown |= killed;
        let wait = match killed {
            true => SWEEP_REAP,
            false => self.rules.stop_timeout.unwrap_or(SWEEP_TIMEOUT),
        };
        self.shutdown = Shutdown::Sweeping {
            at: after(now, wait),
            killed,
            code,
        };
    }

    /// The exit status, from the one the workers' ends make: start_server
    /// says when it gave up, or had to kill.
    fn final_code(&self, code: i32) -> i32 {
        if !self.rules.policy.respawn {
            code
        } else if self.gave_up {
            EXIT_GAVE_UP
        } else if self.killed_at_shutdown && code == 0 {
            EXIT_KILLED
        } else {
            code
        }
    }

    /// The last worker's exit status; 128+N if signal N killed it, but 0
    /// when N is the one a shutdown forwarded to it.
    fn last_exit_code(&self) -> i32 {
        let Some(status) = self.last_status else {
            return 0;
        };
        match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (_, Some(sig)) if Some(sig) == self.forwarded => 0,
            (_, Some(sig)) => sig.saturating_add(128),
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
            sig::CHLD | sig::PIPE | sig::WINCH | sig::URG | sig::CONT => {}
            sig::HUP => self.on_hup(now, sh),
            sig::TERM | sig::INT | sig::QUIT => match self.shutdown {
                Shutdown::Running => self.begin_shutdown(sig, now, sh),
                Shutdown::Delaying { sig: first, .. } => {
                    sh.say(
                        Say::Note,
                        format!("received {}, ending --shutdown-delay", sig::name(sig)),
                    );
                    self.stop_workers_on(first, now, sh);
                }
                Shutdown::Stopping { .. } | Shutdown::Killed => {
                    let pids = self.pids(|_| true);
                    sh.say(
                        Say::Note,
                        format!(
                            "received {} again, sending KILL to all workers:{}",
                            sig::name(sig),
                            join_pids(&pids)
                        ),
                    );
                    self.signal_all(sig::KILL, sh);
                    self.killed_at_shutdown |= !pids.is_empty();
                    self.shutdown = Shutdown::Killed;
                }
                Shutdown::Sweeping { code, .. } => {
                    let why = format!("received {} again", sig::name(sig));
                    self.kill_leftovers(&why, code, now, sh);
                }
            },
            sig if sig == self.rules.policy.upgrade_signal => sh.upgrade(),
            sig::USR1 => sh.reopen_log(),
            other => sh.say(Say::Note, format!("received {}, ignored", sig::name(other))),
        }
    }

    fn on_hup(&mut self, now: Instant, sh: &mut dyn Shell) {
        if self.stopping() {
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
        } else if let Some((_, restart)) = self.restart.retry() {
            self.restart = self.restart.with_retry(None);
            // A failing start: try the (presumably fixed) deployment now.
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            sh.upstream(Upstream::Reloading);
            self.spawn(restart, now, sh);
        } else {
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            self.begin_restart(now, sh);
        }
    }

    fn begin_shutdown(&mut self, sig: i32, now: Instant, sh: &mut dyn Shell) {
        sh.upstream(Upstream::Stopping);
        let delay = self.rules.shutdown_delay;
        if delay.is_zero() || self.workers.is_empty() {
            return self.stop_workers_on(sig, now, sh);
        }
        sh.say(
            Say::Note,
            format!(
                "received {}, serving {} s more before stopping the workers (--shutdown-delay)",
                sig::name(sig),
                fmt_secs(delay)
            ),
        );
        self.restart = Restart::Idle;
        self.pending_restart = false;
        self.shutdown = Shutdown::Delaying {
            sig,
            until: after(now, delay),
        };
    }

    /// Sends the workers the signal that shutdown signal `sig` means.
    fn stop_workers_on(&mut self, sig: i32, now: Instant, sh: &mut dyn Shell) {
        let term = if self.rules.policy.forward_as_is {
            Signal::of(sig)
        } else if sig == sig::TERM {
            self.rules.signal_on_term.clone()
        } else {
            Signal::of(sig::TERM)
        };
        let why = format!("received {}", sig::name(sig));
        self.stop_workers(term, Some(why), now, sh);
    }

    /// Sends every worker `term`. A signal (`why`) is answered with the
    /// original's line; giving up (no `why`) with a line of ours, and
    /// none when no worker is left to stop.
    fn stop_workers(
        &mut self,
        term: Signal,
        why: Option<String>,
        now: Instant,
        sh: &mut dyn Shell,
    ) {
        self.forwarded = Some(term.number);
        let pids = self.pids(|_| true);
        let list = join_pids(&pids);
        match why {
            Some(why) => sh.say(
                Say::Original,
                format!("{why}, sending {} to all workers:{list}", term.shown),
            ),
            None if !pids.is_empty() => sh.say(
                Say::Note,
                format!("sending {} to the workers left: {list}", term.shown),
            ),
            None => {}
        }
        self.signal_all(term.number, sh);
        self.restart = Restart::Idle;
        self.pending_restart = false;
        self.shutdown = Shutdown::Stopping {
            kill_at: self.rules.stop_timeout.map(|t| after(now, t)),
        };
        if self.workers.is_empty() {
            self.workers_gone(0, now, sh);
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
            sh.signal(pid, sig::KILL);
        }
        if let Some((at, restart)) = self.restart.retry()
            && now >= at
        {
            self.restart = self.restart.with_retry(None);
            self.spawn(restart, now, sh);
        }
        if self.restart.kill_old_at().is_some_and(|at| now >= at) {
            self.restart = self.restart.with_kill_old_at(None);
            self.kill_olds(now, sh);
        }
        self.end_drains(now, sh);
        match self.shutdown {
            Shutdown::Delaying { sig, until } if now >= until => {
                self.stop_workers_on(sig, now, sh);
            }
            Shutdown::Sweeping {
                at,
                killed: false,
                code,
            } if now >= at => {
                let waited = self.rules.stop_timeout.unwrap_or(SWEEP_TIMEOUT);
                let why = format!("still running {} s after TERM", fmt_secs(waited));
                self.kill_leftovers(&why, code, now, sh);
            }
            Shutdown::Sweeping {
                at,
                killed: true,
                code,
            } if now >= at => {
                let left = sh.leftovers();
                sh.say(
                    Say::Warning,
                    format!("leaving with processes still exiting:{}", join_pids(&left)),
                );
                self.exit_code = Some(self.final_code(code));
            }
            _ => {}
        }
        if let Shutdown::Stopping { kill_at: Some(at) } = self.shutdown
            && now >= at
        {
            self.shutdown = Shutdown::Killed;
            let pids = self.pids(|_| true);
            self.killed_at_shutdown |= !pids.is_empty();
            sh.say(
                Say::Note,
                format!(
                    "workers still running after --stop-timeout, sending KILL to all workers:{}",
                    join_pids(&pids)
                ),
            );
            self.signal_all(sig::KILL, sh);
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
            && self.restart.retry().is_none()
            && !self.stopping()
        {
            self.pending_restart = false;
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            self.begin_restart(now, sh);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The rules without processes or the real clock: a fake shell that
    //! records what is asked of it, and instants made by adding to one.

    use super::*;
    use crate::config::Personality;

    #[derive(Default)]
    struct Fake {
        next_pid: Pid,
        /// (generation, pid) of every spawn.
        spawned: Vec<(u64, Pid)>,
        signals: Vec<(Pid, i32)>,
        /// Every status file written.
        status: Vec<Vec<(u64, Pid)>>,
        lines: Vec<(Say, String)>,
        up: usize,
        parent: Vec<i32>,
        upgrades: usize,
        fail_spawns: usize,
        /// What the workers left behind, and the signals it was sent.
        left: Vec<Pid>,
        kills: Vec<(Pid, i32)>,
        /// The last state told: roles, and restarts given up.
        state: (Vec<(u64, Pid, Shown)>, u64),
        /// What the service manager was told.
        upstream: Vec<Upstream>,
    }

    impl Shell for Fake {
        fn spawn(&mut self, generation: u64) -> Result<Pid, String> {
            if self.fail_spawns > 0 {
                self.fail_spawns -= 1;
                return Err("unable to fork: Resource temporarily unavailable".into());
            }
            self.next_pid += 1;
            let pid = 100 + self.next_pid;
            self.spawned.push((generation, pid));
            Ok(pid)
        }
        fn signal(&mut self, pid: Pid, sig: i32) {
            self.signals.push((pid, sig));
        }
        fn announce(&mut self, workers: &[(u64, Pid)]) {
            self.status.push(workers.to_vec());
        }
        fn say(&mut self, kind: Say, line: String) {
            self.lines.push((kind, line));
        }
        fn upstream(&mut self, event: Upstream) {
            if event == Upstream::Ready {
                self.up += 1;
            }
            self.upstream.push(event);
        }
        fn tell_parent(&mut self, code: i32) {
            self.parent.push(code);
        }
        fn upgrade(&mut self) {
            self.upgrades += 1;
        }
        fn reopen_log(&mut self) {}
        fn kill(&mut self, pid: Pid, sig: i32) {
            self.kills.push((pid, sig));
        }
        fn leftovers(&mut self) -> Vec<Pid> {
            self.left.clone()
        }
        fn state(&mut self, workers: &[(u64, Pid, Shown)], given_up: u64) {
            self.state = (workers.to_vec(), given_up);
        }
    }

    impl Fake {
        fn said(&self, needle: &str) -> usize {
            self.lines
                .iter()
                .filter(|(_, l)| l.contains(needle))
                .count()
        }
        fn last_pid(&self) -> Pid {
            self.spawned.last().unwrap().1
        }
        fn generations(&self) -> Vec<u64> {
            self.status
                .last()
                .map(|s| s.iter().map(|&(g, _)| g).collect())
                .unwrap_or_default()
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    fn exited(code: u8) -> WaitStatus {
        WaitStatus::exited(code)
    }
    fn killed(sig: i32) -> WaitStatus {
        WaitStatus::killed(sig)
    }

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let vars: crate::env::Vars = vars.iter().map(|(k, v)| (k.into(), v.into())).collect();
        Settings::from_vars(&vars).0
    }

    fn rules(personality: Personality, ready_timeout: Option<Duration>) -> Rules {
        Rules {
            interval: SEC,
            signal_on_hup: Signal::of(libc::SIGTERM),
            signal_on_term: Signal::of(libc::SIGTERM),
            stop_timeout: None,
            drain_timeout: None,
            start_retries: None,
            shutdown_delay: Duration::ZERO,
            ready_timeout,
            policy: personality.policy(),
        }
    }

    /// A core with its first worker executed and, past --interval, up.
    fn running(rules: Rules, settings: Settings) -> (Core, Fake, Instant) {
        let t0 = Instant::now();
        let (mut core, mut sh) = (Core::new(rules, settings, t0), Fake::default());
        core.start(t0, &mut sh);
        let pid = sh.last_pid();
        core.on_exec(pid, ExecReport::Executed, &mut sh);
        if core.rules.ready_timeout.is_some() {
            core.on_ready(pid, &mut sh);
        }
        let t = t0 + SEC;
        core.on_timers(t, &mut sh);
        assert_eq!(sh.generations(), [1]);
        (core, sh, t)
    }

    /// Spawns the next generation by HUP and brings it up.
    fn restart(core: &mut Core, sh: &mut Fake, t: Instant) -> Instant {
        core.on_signal(libc::SIGHUP, t, sh);
        let pid = sh.last_pid();
        core.on_exec(pid, ExecReport::Executed, sh);
        core.on_timers(t + SEC, sh);
        t + SEC
    }

    #[test]
    fn a_new_worker_is_up_after_interval_and_the_parent_hears_of_it() {
        let t0 = Instant::now();
        let mut core = Core::new(rules(Personality::StartServer, None), settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        let pid = sh.last_pid();
        assert_eq!(sh.said(&format!("starting new worker {pid}")), 1);
        // Not before its program runs, not before --interval.
        core.on_timers(t0 + 2 * SEC, &mut sh);
        assert!(sh.status.is_empty());
        core.on_exec(pid, ExecReport::Executed, &mut sh);
        assert_eq!(sh.parent, [0]);
        assert_eq!(core.next_deadline(), Some(t0 + SEC));
        core.on_timers(t0 + SEC / 2, &mut sh);
        assert!(sh.status.is_empty());
        core.on_timers(t0 + SEC, &mut sh);
        assert_eq!(sh.status, [vec![(1, pid)]]);
        assert_eq!(sh.up, 1);
        assert_eq!(core.next_deadline(), None, "an idle supervisor never wakes");
    }

    #[test]
    fn backoff_keeps_the_original_pace_then_doubles_up_to_30_s() {
        let waits: Vec<Duration> = (1..=12).map(backoff).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [
                ms(0),
                ms(0),
                ms(0),
                ms(125),
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000)
            ]
        );
        assert_eq!(backoff(1000), BACKOFF_CAP);
    }

    #[test]
    fn failed_starts_are_retried_at_interval_then_backed_off() {
        let t0 = Instant::now();
        let mut core = Core::new(rules(Personality::StartServer, None), settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        let mut t = t0;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let pid = sh.last_pid();
            core.on_exec(pid, ExecReport::Executed, &mut sh);
            let spawns = sh.spawned.len();
            // It dies just before its start check.
            let died = t + SEC - Duration::from_millis(1);
            core.on_exit(pid, exited(1), died, &mut sh);
            t = died;
            // The next attempt: at once if its time has come, or at the
            // deadline.
            while sh.spawned.len() == spawns {
                t = core.next_deadline().expect("a retry is due");
                core.on_timers(t, &mut sh);
            }
            gaps.push(t - died);
        }
        // Three at the original's pace (one --interval after the failed
        // attempt began), then 125 ms, 250 ms, 500 ms after the failure.
        let ms = Duration::from_millis;
        assert_eq!(gaps, [ms(1), ms(1), ms(1), ms(125), ms(250), ms(500)]);
        assert_eq!(sh.said("seems to have failed to start, exit status:256"), 6);
        assert_eq!(sh.said("failed starts in a row"), 3);
    }

    /// What the manual says (LIFECYCLE): the wait is the larger of the
    /// original's pace and the back-off. With --interval=1 and a worker
    /// that dies at once, the waits after failures 4 to 11 are 1, 1, 1, 1,
    /// 2, 4, 8 and 16 s.
    #[test]
    fn the_wait_is_the_larger_of_the_pace_and_the_backoff() {
        let t0 = Instant::now();
        let mut core = Core::new(rules(Personality::StartServer, None), settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        let mut t = t0;
        let mut waits = Vec::new();
        for _ in 0..11 {
            let pid = sh.last_pid();
            core.on_exec(pid, ExecReport::Executed, &mut sh);
            core.on_exit(pid, exited(1), t, &mut sh);
            let (died, spawns) = (t, sh.spawned.len());
            while sh.spawned.len() == spawns {
                t = core.next_deadline().expect("a retry is due");
                core.on_timers(t, &mut sh);
            }
            waits.push((t - died).as_millis());
        }
        assert_eq!(
            waits,
            [
                1000, 1000, 1000, 1000, 1000, 1000, 1000, 2000, 4000, 8000, 16000
            ]
        );
    }

    #[test]
    fn hups_during_a_start_are_folded_into_one_more_restart() {
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        core.on_signal(libc::SIGHUP, t, &mut sh);
        assert_eq!(sh.spawned.len(), 2);
        core.on_signal(libc::SIGHUP, t, &mut sh);
        core.on_signal(libc::SIGHUP, t, &mut sh);
        assert_eq!(sh.spawned.len(), 2, "one start at a time");
        assert_eq!(sh.said("will restart once that is done"), 2);
        let second = sh.last_pid();
        core.on_exec(second, ExecReport::Executed, &mut sh);
        core.on_timers(t + SEC, &mut sh);
        // Generation 2 is up, generation 1 signalled, and one more restart
        // for the HUPs that came meanwhile.
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
        assert_eq!(sh.spawned.len(), 3);
        let third = sh.last_pid();
        core.on_exec(third, ExecReport::Executed, &mut sh);
        core.on_timers(t + 2 * SEC, &mut sh);
        assert_eq!(sh.spawned.len(), 3);
        assert_eq!(sh.signals, [(101, libc::SIGTERM), (second, libc::SIGTERM)]);
    }

    #[test]
    fn term_during_the_kill_old_delay_stops_everything_at_once() {
        let (mut core, mut sh, t) = running(
            rules(Personality::StartServer, None),
            settings(&[("KILL_OLD_DELAY", "5")]),
        );
        let t = restart(&mut core, &mut sh, t);
        assert_eq!(sh.said("sleeping 5 secs before killing old workers"), 1);
        assert_eq!(core.next_deadline(), Some(t + 5 * SEC));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        assert_eq!(
            sh.signals,
            [(101, libc::SIGTERM), (102, libc::SIGTERM)],
            "every worker, at once"
        );
        assert_eq!(core.next_deadline(), None, "the delay is over");
        core.on_timers(t + 10 * SEC, &mut sh);
        assert!(!sh.lines.iter().any(|(_, l)| l == "killing old workers"));
        core.on_exit(101, killed(libc::SIGTERM), t, &mut sh);
        assert_eq!(core.exit_code, None);
        core.on_exit(102, killed(libc::SIGTERM), t, &mut sh);
        assert_eq!(core.exit_code, Some(0));
    }

    #[test]
    fn a_second_term_sends_kill_and_stop_timeout_does_too() {
        let mut r = rules(Personality::StartServer, None);
        r.stop_timeout = Some(3 * SEC);
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        core.on_signal(libc::SIGINT, t, &mut sh);
        assert_eq!(sh.said("received INT, sending TERM to all workers:101"), 1);
        assert_eq!(core.next_deadline(), Some(t + 3 * SEC));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGTERM), (101, libc::SIGKILL)]);
        assert_eq!(core.shutdown, Shutdown::Killed);
        assert_eq!(core.next_deadline(), None, "nothing more to do but wait");
        // Without a second signal, --stop-timeout sends it, once.
        let (mut core, mut sh, t) = running(r, settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_timers(t + 3 * SEC, &mut sh);
        assert_eq!(sh.said("after --stop-timeout, sending KILL"), 1);
        assert_eq!(sh.signals, [(101, libc::SIGTERM), (101, libc::SIGKILL)]);
        assert_eq!(core.next_deadline(), None);
    }

    #[test]
    fn a_worker_not_ready_by_ready_timeout_is_killed_and_retried() {
        let t0 = Instant::now();
        let r = rules(Personality::StartServer, Some(2 * SEC));
        let mut core = Core::new(r, settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        core.on_exec(101, ExecReport::Executed, &mut sh);
        // Alive for ever, but never ready: not up.
        core.on_timers(t0 + SEC, &mut sh);
        assert!(sh.status.is_empty());
        assert_eq!(core.next_deadline(), Some(t0 + 2 * SEC));
        core.on_timers(t0 + 2 * SEC, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGKILL)]);
        assert_eq!(
            sh.said("new worker 101 is not ready after 2 s, killing it"),
            1
        );
        core.on_exit(101, killed(libc::SIGKILL), t0 + 2 * SEC, &mut sh);
        assert_eq!(sh.said("new worker 101 seems to have failed to start"), 1);
        // Retried; this one says READY=1 and is up at once.
        core.on_timers(core.next_deadline().unwrap(), &mut sh);
        core.on_exec(102, ExecReport::Executed, &mut sh);
        core.on_ready(102, &mut sh);
        core.on_timers(t0 + 3 * SEC, &mut sh);
        assert_eq!(sh.generations(), [2]);
    }

    #[test]
    fn a_worker_that_exits_before_ready_is_a_failed_start_and_the_old_one_serves() {
        let r = rules(Personality::StartServer, Some(10 * SEC));
        let (mut core, mut sh, t) = running(r, settings(&[]));
        core.on_signal(libc::SIGHUP, t, &mut sh);
        core.on_exec(102, ExecReport::Executed, &mut sh);
        core.on_exit(102, exited(3), t + SEC, &mut sh);
        assert_eq!(sh.said("new worker 102 seems to have failed to start"), 1);
        assert!(sh.signals.is_empty(), "the old generation keeps serving");
        assert_eq!(sh.generations(), [1]);
    }

    #[test]
    fn auto_restart_comes_after_its_interval_and_waits_twice_as_long_for_old_workers() {
        let (mut core, mut sh, t) = running(
            rules(Personality::StartServer, None),
            settings(&[
                ("ENABLE_AUTO_RESTART", "1"),
                ("AUTO_RESTART_INTERVAL", "10"),
                ("KILL_OLD_DELAY", "0"),
            ]),
        );
        assert_eq!(core.next_deadline(), Some(t + 10 * SEC));
        core.on_timers(t + 10 * SEC, &mut sh);
        assert_eq!(sh.said("autorestart triggered (interval=10)"), 1);
        core.on_exec(102, ExecReport::Executed, &mut sh);
        let up = t + 11 * SEC;
        core.on_timers(up, &mut sh);
        // The old worker is still draining: forced only at twice the interval.
        assert_eq!(core.next_deadline(), Some(up + 20 * SEC));
        core.on_timers(up + 20 * SEC, &mut sh);
        assert_eq!(sh.said("autorestart triggered (forced, interval=10)"), 1);
    }

    #[test]
    fn a_first_worker_that_cannot_be_executed_ends_with_its_status() {
        let t0 = Instant::now();
        let mut core = Core::new(rules(Personality::StartServer, None), settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        let why = "unable to exec ./srv: No such file or directory".to_string();
        core.on_exec(101, ExecReport::Failed { why, status: 127 }, &mut sh);
        assert_eq!(core.exit_code, Some(127));
        assert_eq!(sh.lines.last().unwrap().0, Say::Fatal);
        // Once something has run, the same failure is retried.
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        core.on_signal(libc::SIGHUP, t, &mut sh);
        let why = "unable to exec ./srv: Permission denied".to_string();
        core.on_exec(102, ExecReport::Failed { why, status: 126 }, &mut sh);
        assert_eq!(core.exit_code, None);
        assert_eq!(sh.lines.last().unwrap().0, Say::Warning);
    }

    #[test]
    fn socketmaster_exits_with_the_last_workers_status_and_never_respawns() {
        let sm = || rules(Personality::Socketmaster, None);
        let (mut core, mut sh, t) = running(sm(), settings(&[]));
        core.on_exit(101, exited(7), t, &mut sh);
        assert_eq!(core.exit_code, Some(7));
        assert_eq!(sh.spawned.len(), 1);
        // A forwarded signal that kills it is a clean stop...
        let (mut core, mut sh, t) = running(sm(), settings(&[]));
        core.on_signal(libc::SIGQUIT, t, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGQUIT)], "forwarded as it is");
        core.on_exit(101, killed(libc::SIGQUIT), t, &mut sh);
        assert_eq!(core.exit_code, Some(0));
        // ...another is 128+N.
        let (mut core, mut sh, t) = running(sm(), settings(&[]));
        core.on_exit(101, killed(libc::SIGSEGV), t, &mut sh);
        assert_eq!(core.exit_code, Some(128 + libc::SIGSEGV));
        // USR1 upgrades; USR2 is ignored.
        let (mut core, mut sh, t) = running(sm(), settings(&[]));
        core.on_signal(libc::SIGUSR1, t, &mut sh);
        core.on_signal(libc::SIGUSR2, t, &mut sh);
        assert_eq!(sh.upgrades, 1);
        assert_eq!(sh.said("received USR2, ignored"), 1);
    }

    #[test]
    fn once_leaving_no_signal_starts_anything() {
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_exit(101, killed(libc::SIGTERM), t, &mut sh);
        assert_eq!(core.exit_code, Some(0));
        core.on_signal(libc::SIGUSR2, t, &mut sh);
        core.on_signal(libc::SIGHUP, t, &mut sh);
        assert_eq!((sh.upgrades, sh.spawned.len()), (0, 1));
    }

    /// LIFECYCLE 3: a worker that dies within a second counts as a failed
    /// start, even once up; a HUP during a retry wait retries at once.
    #[test]
    fn lifecycle_3_early_deaths_count_as_failures_and_hup_cuts_the_wait() {
        let t0 = Instant::now();
        let mut r = rules(Personality::StartServer, None);
        r.interval = Duration::ZERO;
        let mut core = Core::new(r, settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        core.on_exec(101, ExecReport::Executed, &mut sh);
        core.on_timers(t0, &mut sh);
        assert_eq!(sh.generations(), [1], "up at once with --interval=0");
        core.failures = 5;
        // Dead half a second after it was spawned: a failure.
        let t = t0 + SEC / 2;
        core.on_exit(101, exited(1), t, &mut sh);
        assert_eq!(core.failures, 6);
        assert_eq!(sh.said("died unexpectedly with status:256, restarting"), 1);
        let (at, _) = core.restart.retry().expect("a backed-off retry");
        assert!(at > t);
        core.on_signal(libc::SIGHUP, t, &mut sh);
        assert_eq!(sh.spawned.len(), 2, "the HUP retried at once");
        assert_eq!(core.restart, Restart::Idle);
        // A worker that served a while and then died resets the count.
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        core.failures = 5;
        core.on_exit(101, exited(1), t + 60 * SEC, &mut sh);
        assert_eq!(core.failures, 0);
        assert_eq!(sh.spawned.len(), 2, "replaced at once");
    }

    /// LIFECYCLE 5: the current worker's death is a restart; an old one's
    /// is noted and the status file rewritten.
    #[test]
    fn lifecycle_5_current_and_old_workers_exiting() {
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        let t = restart(&mut core, &mut sh, t);
        assert_eq!(sh.generations(), [1, 2]);
        core.on_exit(101, killed(libc::SIGTERM), t, &mut sh);
        assert_eq!(sh.said("old worker 101 died, status:15"), 1);
        assert_eq!(sh.generations(), [2]);
        assert_eq!(sh.spawned.len(), 2, "an old worker is not replaced");
        core.on_exit(102, exited(0), t + 10 * SEC, &mut sh);
        assert_eq!(
            sh.said("worker 102 died unexpectedly with status:0, restarting"),
            1
        );
        assert_eq!(sh.spawned.len(), 3);
    }

    /// LIFECYCLE 6: TERM sends --signal-on-term, INT and QUIT send TERM;
    /// every exit is noted, and the end comes when none is left.
    #[test]
    fn lifecycle_6_shutdown_signals_and_the_end() {
        let mut r = rules(Personality::StartServer, None);
        r.signal_on_term = Signal::parse("usr1").unwrap();
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        let t = restart(&mut core, &mut sh, t);
        core.on_signal(libc::SIGTERM, t, &mut sh);
        assert_eq!(
            sh.said("received TERM, sending USR1 to all workers:101,102"),
            1
        );
        assert_eq!(
            sh.signals[1..],
            [(101, libc::SIGUSR1), (102, libc::SIGUSR1)]
        );
        core.on_signal(libc::SIGHUP, t, &mut sh);
        assert_eq!(sh.said("received HUP while shutting down, ignored"), 1);
        core.on_exit(102, exited(0), t, &mut sh);
        assert_eq!(sh.said("worker 102 died, status:0"), 1);
        assert_eq!(core.exit_code, None);
        core.on_exit(101, exited(0), t, &mut sh);
        assert_eq!(core.exit_code, Some(0));
        let (mut core, mut sh, t) = running(r, settings(&[]));
        core.on_signal(libc::SIGQUIT, t, &mut sh);
        assert_eq!(sh.said("received QUIT, sending TERM to all workers:101"), 1);
    }

    #[test]
    fn drain_timeout_kills_an_old_worker_that_outstays_it_once() {
        let mut r = rules(Personality::StartServer, None);
        r.drain_timeout = Some(5 * SEC);
        let (mut core, mut sh, t) = running(r, settings(&[]));
        let t = restart(&mut core, &mut sh, t);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
        assert_eq!(
            sh.state.0,
            [(1, 101, Shown::Draining), (2, 102, Shown::Serving)]
        );
        assert_eq!(core.next_deadline(), Some(t + 5 * SEC));
        core.on_timers(t + 4 * SEC, &mut sh);
        assert_eq!(sh.signals.len(), 1);
        core.on_timers(t + 5 * SEC, &mut sh);
        assert_eq!(sh.signals[1..], [(101, libc::SIGKILL)]);
        assert_eq!(
            sh.said("old worker 101 still running 5 s after TERM, sending KILL (--drain-timeout)"),
            1
        );
        assert_eq!(core.next_deadline(), None, "killed once");
        core.on_timers(t + 9 * SEC, &mut sh);
        assert_eq!(sh.signals.len(), 2);
        // Without it, old workers are waited for as long as they take.
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        let t = restart(&mut core, &mut sh, t);
        assert_eq!(core.next_deadline(), None);
        core.on_timers(t + 1000 * SEC, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
    }

    #[test]
    fn start_retries_spent_with_nothing_serving_gives_up_with_its_status() {
        let mut r = rules(Personality::StartServer, None);
        r.start_retries = Some(2);
        let t0 = Instant::now();
        let (mut core, mut sh) = (Core::new(r, settings(&[]), t0), Fake::default());
        core.start(t0, &mut sh);
        let mut t = t0;
        for attempt in 1..=3 {
            let pid = sh.last_pid();
            core.on_exec(pid, ExecReport::Executed, &mut sh);
            core.on_exit(pid, exited(1), t, &mut sh);
            t += SEC;
            core.on_timers(t, &mut sh);
            assert_eq!(core.exit_code.is_some(), attempt == 3);
        }
        assert_eq!(sh.spawned.len(), 3, "the first start and two retries");
        assert_eq!(
            sh.said(
                "3 failed starts in a row and no generation serving, giving up (--start-retries=2)"
            ),
            1
        );
        // Nothing left to stop: no line that lists nobody.
        assert_eq!(sh.said("sending"), 0, "{:?}", sh.lines);
        assert_eq!(core.exit_code, Some(EXIT_GAVE_UP));
    }

    #[test]
    fn start_retries_spent_during_a_restart_keeps_the_old_generation() {
        let mut r = rules(Personality::StartServer, None);
        r.start_retries = Some(1);
        let (mut core, mut sh, mut t) = running(r, settings(&[]));
        core.on_signal(libc::SIGHUP, t, &mut sh);
        for _ in 0..2 {
            let pid = sh.last_pid();
            core.on_exec(pid, ExecReport::Executed, &mut sh);
            core.on_exit(pid, exited(1), t, &mut sh);
            t += SEC;
            core.on_timers(t, &mut sh);
        }
        assert_eq!(sh.spawned.len(), 3);
        assert_eq!(
            sh.said("2 failed starts in a row, giving up the restart (--start-retries=1): generation 1 (pid 101) goes on serving"),
            1
        );
        assert_eq!(core.exit_code, None);
        assert!(
            sh.signals.is_empty(),
            "the old generation is never signalled"
        );
        assert_eq!(sh.state, (vec![(1, 101, Shown::Serving)], 1));
        assert_eq!(core.next_deadline(), None);
        // The next HUP is a restart like any other, with retries afresh.
        let t = restart(&mut core, &mut sh, t);
        assert_eq!(sh.generations(), [1, 4]);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
        core.on_exit(101, exited(0), t, &mut sh);
        assert_eq!(sh.state, (vec![(4, 104, Shown::Serving)], 1));
    }

    #[test]
    fn exit_status_says_whether_workers_had_to_be_killed() {
        let mut r = rules(Personality::StartServer, None);
        r.stop_timeout = Some(3 * SEC);
        // Graceful: 0.
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_exit(101, killed(libc::SIGTERM), t, &mut sh);
        assert_eq!(core.exit_code, Some(0));
        // --stop-timeout: 2.
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_timers(t + 3 * SEC, &mut sh);
        core.on_exit(101, killed(libc::SIGKILL), t + 3 * SEC, &mut sh);
        assert_eq!(core.exit_code, Some(EXIT_KILLED));
        // A second signal: 2.
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_signal(libc::SIGINT, t, &mut sh);
        core.on_exit(101, killed(libc::SIGKILL), t, &mut sh);
        assert_eq!(core.exit_code, Some(EXIT_KILLED));
        // socketmaster keeps its own: the last worker's status.
        let mut r = rules(Personality::Socketmaster, None);
        r.stop_timeout = Some(3 * SEC);
        let (mut core, mut sh, t) = running(r, settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_timers(t + 3 * SEC, &mut sh);
        core.on_exit(101, killed(libc::SIGKILL), t + 3 * SEC, &mut sh);
        assert_eq!(core.exit_code, Some(128 + libc::SIGKILL));
    }

    #[test]
    fn shutdown_delay_keeps_serving_until_it_ends_or_a_second_signal() {
        let mut r = rules(Personality::StartServer, None);
        r.shutdown_delay = 4 * SEC;
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        core.on_signal(libc::SIGTERM, t, &mut sh);
        assert_eq!(
            sh.said(
                "received TERM, serving 4 s more before stopping the workers (--shutdown-delay)"
            ),
            1
        );
        assert!(sh.signals.is_empty());
        assert_eq!(core.next_deadline(), Some(t + 4 * SEC));
        core.on_signal(libc::SIGHUP, t + SEC, &mut sh);
        assert_eq!(sh.spawned.len(), 1, "no restart while shutting down");
        core.on_timers(t + 3 * SEC, &mut sh);
        assert!(sh.signals.is_empty());
        core.on_timers(t + 4 * SEC, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
        assert_eq!(sh.said("received TERM, sending TERM to all workers:101"), 1);
        // A second signal ends the wait at once, gracefully.
        let (mut core, mut sh, t) = running(r, settings(&[]));
        core.on_signal(libc::SIGINT, t, &mut sh);
        core.on_signal(libc::SIGTERM, t + SEC, &mut sh);
        assert_eq!(sh.said("received TERM, ending --shutdown-delay"), 1);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
        core.on_exit(101, exited(0), t + SEC, &mut sh);
        assert_eq!(core.exit_code, Some(0));
    }

    #[test]
    fn what_the_workers_left_behind_gets_term_then_kill() {
        let mut r = rules(Personality::StartServer, None);
        r.stop_timeout = Some(2 * SEC);
        let (mut core, mut sh, t) = running(r.clone(), settings(&[]));
        sh.left = vec![300, 301];
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_exit(101, exited(0), t, &mut sh);
        assert_eq!(core.exit_code, None);
        assert_eq!(sh.kills, [(300, libc::SIGTERM), (301, libc::SIGTERM)]);
        assert_eq!(
            sh.said("sending TERM to what the workers left behind:300,301"),
            1
        );
        assert_eq!(core.next_deadline(), Some(t + 2 * SEC));
        sh.left = vec![301];
        core.on_other_exit(&mut sh);
        assert_eq!(core.exit_code, None);
        core.on_timers(t + 2 * SEC, &mut sh);
        assert_eq!(sh.kills[2..], [(301, libc::SIGKILL)]);
        assert_eq!(
            sh.said(
                "still running 2 s after TERM, sending KILL to what the workers left behind:301"
            ),
            1
        );
        sh.left.clear();
        core.on_other_exit(&mut sh);
        assert_eq!(core.exit_code, Some(EXIT_KILLED));
        // All gone after TERM: a clean exit.
        let (mut core, mut sh, t) = running(r, settings(&[]));
        sh.left = vec![300];
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_exit(101, exited(0), t, &mut sh);
        sh.left.clear();
        core.on_other_exit(&mut sh);
        assert_eq!(core.exit_code, Some(0));
        // Without --stop-timeout the bound is SWEEP_TIMEOUT; something
        // that outlives even SIGKILL does not keep us.
        let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
        sh.left = vec![300];
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_exit(101, exited(0), t, &mut sh);
        assert_eq!(core.next_deadline(), Some(t + SWEEP_TIMEOUT));
        core.on_timers(t + SWEEP_TIMEOUT, &mut sh);
        let t = t + SWEEP_TIMEOUT + SWEEP_REAP;
        assert_eq!(core.next_deadline(), Some(t));
        core.on_timers(t, &mut sh);
        assert_eq!(sh.said("leaving with processes still exiting:300"), 1);
        assert_eq!(core.exit_code, Some(EXIT_KILLED));
    }

    #[test]
    fn upstream_hears_reloading_ready_stopping_and_what_happens() {
        use Upstream::*;
        let st = |s: &str| Status(s.to_string());
        let mut r = rules(Personality::StartServer, None);
        r.start_retries = Some(1);
        let (mut core, mut sh, t) = running(r, settings(&[]));
        assert_eq!(
            sh.upstream,
            [
                st("starting generation 1, attempt 1"),
                Ready,
                st("generation 1 serving (pid 101)")
            ]
        );
        sh.upstream.clear();
        let mut t = restart(&mut core, &mut sh, t);
        assert_eq!(
            sh.upstream,
            [
                Reloading,
                st("generation 1 serving (pid 101); starting generation 2, attempt 1"),
                Ready,
                st("generation 2 serving (pid 102); generation 1 serving (pid 101)"),
                st("generation 2 serving (pid 102); draining generation 1 (pid 101)"),
            ]
        );
        core.on_exit(101, exited(0), t, &mut sh);
        assert_eq!(
            sh.upstream.last(),
            Some(&st("generation 2 serving (pid 102)"))
        );
        // A restart that never comes up: given up, and READY=1 again.
        sh.upstream.clear();
        core.on_signal(libc::SIGHUP, t, &mut sh);
        for _ in 0..2 {
            let pid = sh.last_pid();
            core.on_exec(pid, ExecReport::Executed, &mut sh);
            core.on_exit(pid, exited(1), t, &mut sh);
            t += SEC;
            core.on_timers(t, &mut sh);
        }
        assert_eq!(
            sh.upstream,
            [
                Reloading,
                st("generation 2 serving (pid 102); starting generation 3, attempt 1"),
                st("generation 2 serving (pid 102); starting generation 4, attempt 2"),
                st("restart given up after 2 failed starts; generation 2 serving (pid 102)"),
                Ready,
                st("generation 2 serving (pid 102)"),
            ]
        );
        sh.upstream.clear();
        core.on_signal(libc::SIGTERM, t, &mut sh);
        core.on_exit(102, exited(0), t, &mut sh);
        assert_eq!(
            sh.upstream,
            [Stopping, st("stopping; no generation serving")]
        );
    }

    /// READINESS: READY=1 counts only once the program runs; a second one
    /// is noted and ignored.
    #[test]
    fn readiness_ready_needs_the_exec_and_counts_once() {
        let t0 = Instant::now();
        let r = rules(Personality::StartServer, Some(10 * SEC));
        let mut core = Core::new(r, settings(&[]), t0);
        let mut sh = Fake::default();
        core.start(t0, &mut sh);
        core.on_ready(101, &mut sh);
        core.on_timers(t0 + SEC, &mut sh);
        assert!(sh.status.is_empty(), "not before its exec report");
        core.on_exec(101, ExecReport::Executed, &mut sh);
        core.on_timers(t0 + SEC, &mut sh);
        assert_eq!(sh.generations(), [1]);
        core.on_ready(101, &mut sh);
        assert_eq!(sh.said("worker 101 sent READY=1 again, ignored"), 1);
        assert_eq!(sh.status.len(), 1);
    }

    /// SIGNALS: USR1 reopens the log (start_server), USR2 upgrades, CHLD
    /// and the quiet ones say nothing, every other catchable signal is
    /// noted and ignored; none ends anything.
    #[test]
    fn signals_usr1_usr2_and_the_ignored_ones() {
        #[derive(Default)]
        struct Reopens(Fake, usize);
        impl Shell for Reopens {
            fn spawn(&mut self, g: u64) -> Result<Pid, String> {
                self.0.spawn(g)
            }
            fn signal(&mut self, pid: Pid, sig: i32) {
                self.0.signal(pid, sig)
            }
            fn announce(&mut self, w: &[(u64, Pid)]) {
                self.0.announce(w)
            }
            fn say(&mut self, kind: Say, line: String) {
                self.0.say(kind, line)
            }
            fn upstream(&mut self, _: Upstream) {}
            fn tell_parent(&mut self, _: i32) {}
            fn upgrade(&mut self) {
                self.0.upgrade()
            }
            fn reopen_log(&mut self) {
                self.1 += 1;
            }
        }
        let (mut core, _, t) = running(rules(Personality::StartServer, None), settings(&[]));
        let mut sh = Reopens::default();
        for sig in [
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGCHLD,
            libc::SIGPIPE,
            libc::SIGWINCH,
            libc::SIGURG,
            libc::SIGCONT,
            libc::SIGALRM,
            libc::SIGTSTP,
        ] {
            core.on_signal(sig, t, &mut sh);
        }
        assert_eq!((sh.1, sh.0.upgrades), (1, 1));
        assert_eq!(sh.0.said("received ALRM, ignored"), 1);
        assert_eq!(sh.0.said("received TSTP, ignored"), 1);
        assert_eq!(sh.0.lines.len(), 2, "{:?}", sh.0.lines);
        assert!(sh.0.signals.is_empty());
        assert_eq!((core.exit_code, core.stopping()), (None, false));
    }

    /// SOCKETMASTER: after -start, the others get TERM; a new worker that
    /// dies first leaves the old ones serving, and says so.
    #[test]
    fn socketmaster_a_new_worker_that_dies_first_keeps_the_old_ones() {
        let (mut core, mut sh, t) = running(rules(Personality::Socketmaster, None), settings(&[]));
        core.rules.interval = Duration::from_secs(3);
        core.on_signal(libc::SIGHUP, t, &mut sh);
        core.on_exec(102, ExecReport::Executed, &mut sh);
        core.on_exit(102, exited(1), t + SEC, &mut sh);
        assert_eq!(
            sh.said("new worker 102 exited before it was up (exit status 1): keeping the old workers: 101"),
            1
        );
        assert!(sh.signals.is_empty());
        assert_eq!(core.exit_code, None, "a worker is left");
        assert_eq!(sh.spawned.len(), 2, "never respawned");
        // And when one comes up, after -start, the others get TERM.
        core.on_signal(libc::SIGHUP, t + SEC, &mut sh);
        core.on_exec(103, ExecReport::Executed, &mut sh);
        core.on_timers(t + 4 * SEC, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
    }

    /// The kill-old delay and a retry run side by side: the new worker
    /// dying during the delay is replaced, and the old ones still get
    /// their signal when it ends.
    #[test]
    fn a_death_during_the_kill_old_delay_runs_both_timers() {
        let (mut core, mut sh, t) = running(
            rules(Personality::StartServer, None),
            settings(&[("KILL_OLD_DELAY", "5")]),
        );
        core.rules.interval = Duration::ZERO;
        core.on_signal(libc::SIGHUP, t, &mut sh);
        core.on_exec(102, ExecReport::Executed, &mut sh);
        core.on_timers(t, &mut sh);
        // Dead half a second after it was spawned: a failure, backed off.
        core.failures = 5;
        core.on_exit(102, exited(1), t + SEC / 2, &mut sh);
        let Restart::KillOldAt {
            at,
            retry: Some((retry_at, false)),
        } = core.restart
        else {
            panic!("{:?}", core.restart);
        };
        assert_eq!(at, t + 5 * SEC);
        assert!(retry_at < at);
        core.on_timers(retry_at, &mut sh);
        assert_eq!(sh.spawned.len(), 3, "replaced");
        assert_eq!(core.restart, Restart::KillOldAt { at, retry: None });
        core.on_timers(at, &mut sh);
        assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
        assert_eq!(core.restart, Restart::Idle);
    }

    #[test]
    fn restart_timers_keep_each_other() {
        let t = Instant::now();
        let retry = Some((t, true));
        let both = Restart::Idle.with_retry(retry).with_kill_old_at(Some(t));
        assert_eq!(both, Restart::KillOldAt { at: t, retry });
        assert_eq!(
            both.with_kill_old_at(None),
            Restart::RetryAt {
                at: t,
                restart: true
            }
        );
        assert_eq!(both.with_retry(None).with_kill_old_at(None), Restart::Idle);
        assert_eq!(Restart::Idle.with_retry(None), Restart::Idle);
    }

    /// A small deterministic generator for the storms.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random sequences of signals, exec reports, READY=1, exits and the
    /// passing of time, checked against the invariants after every step:
    /// at most one worker starting; no old generation signalled before a
    /// newer one was up; the next deadline never in the past once timers
    /// ran; and in the end, after TERM, every worker spawned has exited.
    #[test]
    fn storms_keep_the_invariants() {
        // Hand-overs seen across all storms: they must not be vacuous.
        let mut handovers = 0;
        for seed in 1..=1000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let notify = seed % 2 == 0;
            let personality = if seed % 5 == 0 {
                Personality::Socketmaster
            } else {
                Personality::StartServer
            };
            let r = rules(personality, notify.then_some(3 * SEC));
            let s = settings(&[("KILL_OLD_DELAY", ["0", "1", "0.5"][(seed % 3) as usize])]);
            let t0 = Instant::now();
            let mut t = t0;
            let mut core = Core::new(r, s, t0);
            let mut sh = Fake::default();
            core.start(t, &mut sh);
            let mut alive: Vec<Pid> = sh.spawned.iter().map(|&(_, p)| p).collect();
            let mut known = sh.spawned.len();
            let mut up_to: u64 = 0;
            let mut seen_signals = 0;
            for _step in 0..60 {
                if core.exit_code.is_some() {
                    break;
                }
                match rng.below(10) {
                    0 => core.on_signal(libc::SIGHUP, t, &mut sh),
                    1 | 2 if !alive.is_empty() => {
                        let pid = alive[rng.below(alive.len() as u64) as usize];
                        let report = if rng.below(8) == 0 {
                            ExecReport::Failed {
                                why: "unable to exec".into(),
                                status: 126,
                            }
                        } else {
                            ExecReport::Executed
                        };
                        core.on_exec(pid, report, &mut sh);
                    }
                    3 if !alive.is_empty() => {
                        let pid = alive[rng.below(alive.len() as u64) as usize];
                        core.on_ready(pid, &mut sh);
                    }
                    4 if !alive.is_empty() && rng.below(3) == 0 => {
                        let i = rng.below(alive.len() as u64) as usize;
                        let pid = alive.remove(i);
                        core.on_exit(pid, exited(rng.below(3) as u8), t, &mut sh);
                    }
                    5 if rng.below(10) == 0 => sh.fail_spawns = 1,
                    _ => t += Duration::from_millis(rng.below(2500)),
                }
                core.on_timers(t, &mut sh);
                alive.extend(sh.spawned[known..].iter().map(|&(_, p)| p));
                known = sh.spawned.len();
                let starting = core
                    .workers
                    .iter()
                    .filter(|w| matches!(w.role, Role::Starting { .. }))
                    .count();
                assert!(starting <= 1, "seed {seed}: {starting} starting");
                if let Some(d) = core.next_deadline() {
                    assert!(d > t, "seed {seed}: a deadline in the past");
                }
                // Which generations have been up (listed in a status file).
                for list in &sh.status {
                    for &(g, _) in list {
                        up_to = up_to.max(g);
                    }
                }
                for &(pid, sig) in &sh.signals[seen_signals..] {
                    if !core.stopping() && sig == libc::SIGTERM {
                        handovers += 1;
                        let g = sh.spawned.iter().find(|&&(_, p)| p == pid).unwrap().0;
                        assert!(
                            up_to > g,
                            "seed {seed}: generation {g} signalled before a successor was up"
                        );
                    }
                }
                seen_signals = sh.signals.len();
            }
            // The end: TERM, and every worker exits.
            core.on_signal(libc::SIGTERM, t, &mut sh);
            for pid in alive.drain(..) {
                core.on_exit(pid, killed(libc::SIGTERM), t, &mut sh);
            }
            assert!(core.workers.is_empty(), "seed {seed}: {:?}", core.workers);
            assert!(core.exit_code.is_some(), "seed {seed}: no exit");
        }
        assert!(handovers > 500, "only {handovers} hand-overs");
    }
}
