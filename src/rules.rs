//! The supervisor's rules: which workers exist and in what role, what a
//! signal, an exit, an exec report, a READY=1 or the passing of time
//! does, and when the next timer falls due. Nothing here makes a system
//! call, holds a descriptor or reads the clock: every event comes with the
//! time it is handled at, and every act (spawn, signal, status file, log
//! line, upstream notification) is asked of a [`Host`] (the shell). The unit
//! tests (`rules/tests.rs`) drive it with a fake host and a fake clock.
//!
//! Workers are kept in one list, each with its generation, its slot
//! (one of --workers places, kept across generations) and its role:
//! starting, current, or old (kept until they exit, signalled once their
//! successor is up). Each slot says what it waits for when it has no
//! worker starting or serving: nothing, a spawn as soon as --max-surge
//! allows, or a retry at a time. What changes as the rules run is one
//! [`Phase`], which a live upgrade hands over whole; the timers it implies
//! are one list ([`Core::dues`]), read both for the next deadline and to
//! fire what is due.
//!
//! What each event does in each phase (`-`: nothing; "restart" below
//! also stands for a retry wait after a failed start):
//!
//! | event | serving | restart under way | kill-old delay | shutdown delay | stopping | sweeping |
//! |---|---|---|---|---|---|---|
//! | HUP | start a new worker | one more restart once done (a retry wait: retry now) | one more restart once done | ignored | ignored | ignored |
//! | TERM, INT, QUIT | shutdown delay, or signal every worker | same | same | end the delay: signal every worker | KILL every worker | KILL what is left |
//! | upgrade signal, USR1 | the host upgrades, reopens the log | same | same | same | same | same |
//! | a --forward signal | the current workers get it | same | same | same | same | same |
//! | a --watch change | a restart once quiet | same | same | ignored | ignored | ignored |
//! | exec report | - | a failure is a failed start: retry, back off, give up | - | - | - | - |
//! | READY=1 (notify) | - | the new worker is up | - | - | - | - |
//! | a worker exits | the current one: respawn (a new generation), or leave (socketmaster) | the new one: a failed start; an old one: gone | an old one: gone | as serving | the last one: sweep, then leave | - |
//! | a timer falls due | auto-restart | --interval passed: up; --ready-timeout: KILL; retry: spawn | signal the old workers; --drain-timeout: KILL | signal every worker | --stop-timeout: KILL | TERM grace over: KILL; reap time over: leave |
//!
//! A new worker being up hands over: the old worker of its slot (with
//! --max-surge below --workers), or, once every slot's new worker is up,
//! all old workers, get --signal-on-hup, at once or after the kill-old
//! delay. With several workers, "the new worker" in the table is each
//! one, "respawn" keeps the slot and the generation, and a restart is
//! under way until every slot has its new worker up.

use std::time::Duration;

use crate::clock::Instant;
use crate::clock::{after, fmt_secs};
pub use crate::config::Rules;
use crate::config::{Readiness, Settings};
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
///
/// The host delivers a worker's exec report (`on_exec`) before its exit
/// (`on_exit`) and before its READY=1 (`on_ready`): an exit read first
/// would be taken for a worker that never ran, and READY=1 counts only
/// from a program that runs.
pub trait Host {
    /// Starts a worker in `place`: its pid, or why it could not.
    fn spawn(&mut self, place: Place) -> Result<Pid, String>;
    fn signal(&mut self, pid: Pid, sig: i32);
    /// Rewrites the status file with these `(generation, pid)` pairs, in
    /// this order.
    fn announce(&mut self, workers: &[(u64, Pid)]);
    fn say(&mut self, kind: Say, line: String);
    /// Tells whoever started us (systemd's NOTIFY_SOCKET) where we are.
    fn upstream(&mut self, event: Upstream);
    /// The first worker's program runs (0), or will never (its status):
    /// what a daemonizing parent exits with.
    fn tell_parent(&mut self, code: i32);
    /// The upgrade signal arrived.
    fn upgrade(&mut self);
    /// Whether a process of worker `pid`'s tree waits on one of the
    /// listening sockets (--readiness=accept).
    fn look(&mut self, pid: Pid) -> Seen;
    /// USR1 (start_server): reopen the log.
    fn reopen_log(&mut self);
    /// Sends `sig` to a process that is not a worker (one the workers
    /// left behind).
    fn kill(&mut self, pid: Pid, sig: i32);
    /// The processes still running under us that are not workers (nor our
    /// own helpers): what the workers left behind.
    fn leftovers(&mut self) -> Vec<Pid>;
    /// Every worker with its role, and how many restarts were given up:
    /// the fuller state beside the status file.
    fn state(&mut self, workers: &[Shows], restarts_given_up: u64);
}

/// Where a new worker goes: its generation, its slot (0..--workers, the
/// same across generations and respawns) and its index (the lowest not
/// held by a live worker, as einhorn numbers its children).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    pub generation: u64,
    pub slot: u32,
    pub index: u32,
}

/// A worker as the state file shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shows {
    pub generation: u64,
    pub pid: Pid,
    pub slot: u32,
    pub role: Shown,
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
    /// EXTEND_TIMEOUT_USEC=: stopping may take this much longer.
    ExtendTimeout(Duration),
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

/// What makes a starting worker count as started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ready {
    /// Still alive at this instant (--interval).
    After(Instant),
    /// By READY=1 or einhorn's ACK, not sent yet.
    Awaiting,
    /// By waiting on a socket (--readiness=accept), not seen yet: the
    /// host looks at `next`, then `step` later, the step doubling up to
    /// LOOK_STEP_MAX. `warned`: it said the worker cannot be seen.
    Looking {
        next: Instant,
        step: Duration,
        warned: bool,
    },
    /// By READY=1 or an ACK, which it sent, or by waiting on a socket,
    /// which it was seen doing.
    Said,
}

/// The first look at a new worker's sockets comes this long after its
/// spawn...
pub const LOOK_STEP_FIRST: Duration = Duration::from_millis(1);
/// ...and the gap between looks doubles up to this.
pub const LOOK_STEP_MAX: Duration = Duration::from_millis(32);

/// What a look at a starting worker found (--readiness=accept).
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A process of its tree waits on one of the listening sockets.
    Waiting,
    /// None does yet.
    NotYet,
    /// It cannot be seen, and why: it counts as not ready.
    Unseen(String),
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
    /// A previous generation: `signal_at` set once its successor is up
    /// (then --kill-old-delay), `signalled` once that time came;
    /// `kill_at`: when it gets SIGKILL unless it has exited
    /// (--drain-timeout).
    Old {
        signalled: bool,
        signal_at: Option<Instant>,
        kill_at: Option<Instant>,
    },
}

impl Role {
    /// An old worker still serving, whose successor is not up yet.
    pub const AWAITING: Role = Role::Old {
        signalled: false,
        signal_at: None,
        kill_at: None,
    };

    /// Old, still serving, its successor not up yet.
    fn awaiting(self) -> bool {
        matches!(
            self,
            Role::Old {
                signalled: false,
                signal_at: None,
                ..
            }
        )
    }

    /// Still serving: current, or old and not yet signalled.
    fn serving(self) -> bool {
        matches!(
            self,
            Role::Current
                | Role::Old {
                    signalled: false,
                    ..
                }
        )
    }
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
    pub slot: u32,
    /// Its index among the live workers (einhorn's EINHORN_CHILD_INDEX).
    pub index: u32,
    pub spawned: Instant,
    pub role: Role,
    pub exec: Exec,
}

impl Worker {
    /// When a starting worker counts as started, if its program runs.
    fn ready_at(&self) -> Option<Attempt> {
        let Role::Starting { restart, ready, .. } = self.role else {
            return None;
        };
        match (ready, self.exec) {
            (Ready::After(at), Exec::Done) => Some(Attempt { at, restart }),
            (Ready::Said, Exec::Done) => Some(Attempt {
                at: self.spawned,
                restart,
            }),
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

/// A start of a worker and its time: an attempt due, or a new worker up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    pub at: Instant,
    /// In a restart: old workers await it.
    pub restart: bool,
}

/// One of the places (--workers of them) a generation's workers fill:
/// what it waits for when no worker of it is starting or serving, and
/// its failed starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Consecutive failed starts in this slot.
    pub failures: u32,
    pub next: Next,
}

impl Slot {
    pub const IDLE: Slot = Slot {
        failures: 0,
        next: Next::Nothing,
    };

    /// A retry waited for is due now: the spawn is queued.
    fn retry_now(&mut self) {
        if let Next::RetryAt {
            generation,
            restart,
            ..
        } = self.next
        {
            self.next = Next::Queued {
                generation,
                restart,
            };
        }
    }
}

/// What a slot's next worker waits for. `generation`: the one it joins
/// (with one slot, every spawn takes a new one instead); `restart`: old
/// workers await it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Nothing: the slot has its worker, or was given up until the next
    /// restart.
    Nothing,
    /// A spawn as soon as the surge allows.
    Queued { generation: u64, restart: bool },
    /// A spawn at `at`: the next attempt after a failed start.
    RetryAt {
        at: Instant,
        generation: u64,
        restart: bool,
    },
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

/// A timer the rules can have pending: what happens when it falls due.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Due {
    /// A starting worker has lived --interval: it counts as started
    /// (`true`: in a restart).
    Ready(Pid, bool),
    /// A starting worker is not ready by --ready-timeout.
    NotReady(Pid),
    /// Time to look whether a starting worker waits on a socket.
    Look(Pid),
    /// The next attempt after a failed start in this slot.
    Retry(u32),
    /// The kill-old delay is over: old workers get their signal.
    KillOld,
    /// An old worker is still draining at its --drain-timeout.
    Drain(Pid),
    /// The shutdown's timer (its delay, the sweep, --stop-timeout).
    Shutdown,
    /// The watched paths have been quiet since their change.
    Watch,
    AutoRestart,
}

/// What changes as the rules run: every field a live upgrade hands over,
/// whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub workers: Vec<Worker>,
    /// The newest generation.
    pub generation: u64,
    /// One per --workers.
    pub slots: Vec<Slot>,
    /// A HUP arrived while a restart was under way.
    pub pending_restart: bool,
    /// A --watch path changed: the restart is due then, unless it changes
    /// again.
    pub watch_at: Option<Instant>,
    pub last_restart: Instant,
    /// Whether any worker has ever been executed.
    pub ever_started: bool,
    pub shutdown: Shutdown,
    /// The signal shutdown forwarded (with the last worker's wait status:
    /// the exit status without respawn).
    pub forwarded: Option<i32>,
    /// A worker (or a process it left behind) had to be killed at
    /// shutdown.
    pub killed_at_shutdown: bool,
    /// --start-retries ran out with nothing serving.
    pub gave_up: bool,
    /// Restarts given up while the previous generation went on serving.
    pub restarts_given_up: u64,
}

impl Phase {
    /// Before the first worker.
    pub fn new(now: Instant) -> Phase {
        Phase {
            workers: Vec::new(),
            generation: 0,
            slots: vec![Slot::IDLE],
            pending_restart: false,
            watch_at: None,
            last_restart: now,
            ever_started: false,
            shutdown: Shutdown::Running,
            forwarded: None,
            killed_at_shutdown: false,
            gave_up: false,
            restarts_given_up: 0,
        }
    }
}

/// The supervisor's rules, their settings, and the phase they are in.
pub struct Core {
    rules: Rules,
    /// The settings the environment and envdir give (kept current by the
    /// shell).
    settings: Settings,
    phase: Phase,
    exit_code: Option<i32>,
    /// The last worker's wait status: with the signal shutdown forwarded,
    /// the exit status without respawn.
    last_status: Option<WaitStatus>,
}

/// `1,2,3`, as the original lists pids.
fn join_pids(pids: &[Pid]) -> String {
    let list: Vec<String> = pids.iter().map(Pid::to_string).collect();
    list.join(",")
}

impl Core {
    pub fn new(rules: Rules, settings: Settings, now: Instant) -> Core {
        let mut phase = Phase::new(now);
        phase.slots.resize(rules.slots() as usize, Slot::IDLE);
        let mut core = Core {
            rules,
            settings: Settings::default(),
            phase,
            exit_code: None,
            last_status: None,
        };
        core.set_settings(settings);
        core
    }

    /// Carries on from `phase`, handed over by a live upgrade. A shutdown
    /// handed over with nothing left to wait for is over
    /// (its workers' slots are within --workers: `startup` checked).
    pub fn carry_on(&mut self, mut phase: Phase) {
        // A state of fewer slots than --workers (or more) keeps what it
        // says of the slots both have.
        phase.slots.resize(self.rules.slots() as usize, Slot::IDLE);
        self.phase = phase;
        if self.stopping() && self.phase.workers.is_empty() {
            self.exit_code = Some(0);
        }
    }

    /// The workers still listed at exit: only one whose exec just failed
    /// can be, and it is exiting.
    pub fn unreaped(&self) -> Vec<Pid> {
        self.phase.workers.iter().map(|w| w.pid).collect()
    }

    /// What a live upgrade hands over.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The exit status, once start_server is to exit.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// The settings the environment and the envdir give now: auto-restart
    /// and the kill-old delay are start_server's alone (its policy says),
    /// so the others keep the defaults.
    pub fn set_settings(&mut self, settings: Settings) {
        if self.rules.policy.env_settings {
            self.settings = settings;
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Whether an upgrade the new program accepted may go ahead: not when
    /// start_server is leaving (nothing to hand over).
    pub fn may_upgrade(&self) -> bool {
        self.exit_code.is_none()
    }

    /// The first workers: every slot at once.
    pub fn start(&mut self, now: Instant, sh: &mut dyn Host) {
        self.queue_all(false);
        self.fill(now, sh);
    }

    /// Shutting down (the workers were told to stop).
    pub fn stopping(&self) -> bool {
        self.phase.shutdown != Shutdown::Running
    }

    pub fn is_worker(&self, pid: Pid) -> bool {
        self.phase.workers.iter().any(|w| w.pid == pid)
    }

    /// The earliest instant something is due, if anything is.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.dues().into_iter().map(|(at, _)| at).min()
    }

    /// Every timer pending, with what falls due then, in the order they
    /// are acted on when several fall due together. The one list both
    /// the next deadline and the firing read.
    fn dues(&self) -> Vec<(Instant, Due)> {
        let mut dues = Vec::new();
        // One pass over the workers per kind of timer, in that order (a
        // plain loop: chained iterators cost kilobytes of code here).
        for pass in 0..5 {
            for w in &self.phase.workers {
                let due = match (pass, w.role) {
                    (0, _) => w.ready_at().map(|a| (a.at, Due::Ready(w.pid, a.restart))),
                    (
                        1,
                        Role::Starting {
                            ready: Ready::Looking { next, .. },
                            give_up: Some(_),
                            ..
                        },
                    ) => Some((next, Due::Look(w.pid))),
                    (2, _) => w.give_up().map(|at| (at, Due::NotReady(w.pid))),
                    (
                        3,
                        Role::Old {
                            signal_at: Some(at),
                            ..
                        },
                    ) => Some((at, Due::KillOld)),
                    (
                        4,
                        Role::Old {
                            kill_at: Some(at), ..
                        },
                    ) => Some((at, Due::Drain(w.pid))),
                    _ => None,
                };
                dues.extend(due);
            }
            if pass == 2 {
                for (i, s) in (0u32..).zip(&self.phase.slots) {
                    if let Next::RetryAt { at, .. } = s.next {
                        dues.push((at, Due::Retry(i)));
                    }
                }
            }
        }
        let shutdown = match self.phase.shutdown {
            Shutdown::Running | Shutdown::Killed => None,
            Shutdown::Delaying { until, .. } => Some(until),
            Shutdown::Stopping { kill_at } => kill_at,
            Shutdown::Sweeping { at, .. } => Some(at),
        };
        dues.extend(shutdown.map(|at| (at, Due::Shutdown)));
        dues.extend(self.phase.watch_at.map(|at| (at, Due::Watch)));
        dues.extend(self.auto_restart_due().map(|at| (at, Due::AutoRestart)));
        dues
    }

    fn starting(&self) -> usize {
        self.phase
            .workers
            .iter()
            .filter(|w| matches!(w.role, Role::Starting { .. }))
            .count()
    }

    /// A restart is under way: a worker is starting, a slot awaits room
    /// to start one, or old workers await their signal. Restarts run one
    /// after another.
    fn busy(&self) -> bool {
        self.starting() > 0
            || self.has_queued()
            || self.phase.workers.iter().any(|w| {
                matches!(
                    w.role,
                    Role::Old {
                        signal_at: Some(_),
                        ..
                    }
                )
            })
    }

    /// A failed start awaits its next attempt.
    fn retrying(&self) -> bool {
        self.phase
            .slots
            .iter()
            .any(|s| matches!(s.next, Next::RetryAt { .. }))
    }

    fn has_current(&self) -> bool {
        self.phase
            .workers
            .iter()
            .any(|w| matches!(w.role, Role::Current))
    }

    fn has_old(&self) -> bool {
        self.phase
            .workers
            .iter()
            .any(|w| matches!(w.role, Role::Old { .. }))
    }

    fn auto_restart_due(&self) -> Option<Instant> {
        if !self.settings.auto_restart
            || self.stopping()
            || self.busy()
            || self.retrying()
            || !self.has_current()
        {
            return None;
        }
        let interval = self.settings.auto_restart_interval;
        // With old workers still draining, wait up to twice as long.
        let factor = if self.has_old() { 2 } else { 1 };
        Some(after(
            self.phase.last_restart,
            interval.saturating_mul(factor),
        ))
    }

    fn pids(&self, pick: impl Fn(&Worker) -> bool) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .phase
            .workers
            .iter()
            .filter(|w| pick(w))
            .map(|w| w.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The workers in the order the files list them: by generation, then
    /// slot.
    fn in_order(&self) -> Vec<&Worker> {
        let mut workers: Vec<&Worker> = self.phase.workers.iter().collect();
        // Pids are unique: the order is total.
        workers.sort_unstable_by_key(|w| (w.generation, w.slot, w.pid));
        workers
    }

    /// Every current and old worker, for the status file.
    fn announce(&self, sh: &mut dyn Host) {
        let entries: Vec<(u64, Pid)> = self
            .in_order()
            .into_iter()
            .filter(|w| !matches!(w.role, Role::Starting { .. }))
            .map(|w| (w.generation, w.pid))
            .collect();
        sh.announce(&entries);
        self.tell_state(sh);
    }

    /// Every worker with its role, for the state file.
    fn tell_state(&self, sh: &mut dyn Host) {
        let entries: Vec<Shows> = self
            .in_order()
            .into_iter()
            .map(|w| Shows {
                generation: w.generation,
                pid: w.pid,
                slot: w.slot,
                role: match w.role {
                    Role::Starting { .. } => Shown::Starting,
                    r if r.serving() => Shown::Serving,
                    _ => Shown::Draining,
                },
            })
            .collect();
        sh.state(&entries, self.phase.restarts_given_up);
        sh.upstream(Upstream::Status(self.status_text()));
    }

    /// What is happening, in words, for STATUS=: the generations serving,
    /// starting and draining.
    fn status_text(&self) -> String {
        let mut serving = Vec::new();
        let mut starting = Vec::new();
        let mut draining = Vec::new();
        // The newest generation first.
        for w in self.in_order().into_iter().rev() {
            let (g, pid) = (w.generation, w.pid);
            match w.role {
                Role::Starting { .. } => {
                    let failures = self.slot(w.slot).map_or(0, |s| s.failures);
                    starting.push(format!(
                        "starting generation {g}, attempt {}",
                        failures.saturating_add(1)
                    ))
                }
                r if r.serving() => serving.push(format!("generation {g} serving (pid {pid})")),
                _ => draining.push(format!("draining generation {g} (pid {pid})")),
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
        match self.phase.shutdown {
            Shutdown::Running => text,
            _ => format!("stopping; {text}"),
        }
    }

    /// Shutting down: no slot waits for anything, and no old worker for
    /// the end of the kill-old delay.
    fn idle_slots(&mut self) {
        self.phase.watch_at = None;
        for s in &mut self.phase.slots {
            s.next = Next::Nothing;
        }
        for w in &mut self.phase.workers {
            if let Role::Old { signal_at, .. } = &mut w.role {
                *signal_at = None;
            }
        }
    }

    /// A slot awaits room to start its new worker.
    fn has_queued(&self) -> bool {
        self.phase
            .slots
            .iter()
            .any(|s| matches!(s.next, Next::Queued { .. }))
    }

    /// No new worker is on its way (with several slots: the last of a
    /// start or a roll is up, or given up): the time for READY=1.
    fn settled(&self) -> bool {
        self.starting() == 0 && !self.has_queued()
    }

    fn signal_all(&self, sig: i32, sh: &mut dyn Host) {
        for w in &self.phase.workers {
            sh.signal(w.pid, sig);
        }
    }

    fn slot(&self, slot: u32) -> Option<&Slot> {
        self.phase.slots.get(slot as usize)
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Slot> {
        self.phase.slots.get_mut(slot as usize)
    }

    fn failures(&self, slot: u32) -> u32 {
        self.slot(slot).map_or(0, |s| s.failures)
    }

    // ------------------------------------------------------------ spawning

    /// Every slot wants a new worker, of a new generation when there are
    /// several (with one, every spawn takes a new generation anyway).
    fn queue_all(&mut self, restart: bool) {
        if self.rules.slots() > 1 {
            self.phase.generation = self.phase.generation.saturating_add(1);
        }
        let generation = self.phase.generation;
        for s in &mut self.phase.slots {
            s.next = Next::Queued {
                generation,
                restart,
            };
        }
    }

    /// Whether a worker may be spawned now: at most --workers plus
    /// --max-surge alive (with --workers), and in a restart at most
    /// --max-surge starting.
    fn room(&self, restart: bool) -> bool {
        let Some(n) = self.rules.workers else {
            return true;
        };
        let surge = self.rules.surge();
        let alive = self.phase.workers.len();
        let starting = self.starting();
        alive < n.saturating_add(surge) as usize && (!restart || starting < surge as usize)
    }

    /// Spawns what the queued slots want, lowest slot first, while there
    /// is room.
    fn fill(&mut self, now: Instant, sh: &mut dyn Host) {
        for slot in 0..self.rules.slots() {
            if self.exit_code.is_some() || self.stopping() {
                return;
            }
            let Some(&Slot {
                next:
                    Next::Queued {
                        generation,
                        restart,
                    },
                ..
            }) = self.slot(slot)
            else {
                continue;
            };
            if !self.room(restart) {
                return;
            }
            if let Some(s) = self.slot_mut(slot) {
                s.next = Next::Nothing;
            }
            self.spawn(slot, generation, restart, now, sh);
        }
    }

    /// The lowest index no live worker holds.
    fn free_index(&self) -> u32 {
        (0u32..)
            .find(|i| self.phase.workers.iter().all(|w| w.index != *i))
            .unwrap_or(0)
    }

    fn spawn(
        &mut self,
        slot: u32,
        generation: u64,
        restart: bool,
        now: Instant,
        sh: &mut dyn Host,
    ) {
        // With one slot, as in the original, every spawn is a generation.
        let generation = match self.rules.slots() {
            1 => self.phase.generation.saturating_add(1),
            _ => generation,
        };
        self.phase.generation = self.phase.generation.max(generation);
        let index = self.free_index();
        let place = Place {
            generation,
            slot,
            index,
        };
        match sh.spawn(place) {
            Ok(pid) => {
                sh.say(Say::Original, format!("starting new worker {pid}"));
                let ready = match (self.rules.ready_timeout, self.rules.readiness) {
                    (None, _) => Ready::After(after(now, self.rules.interval)),
                    (Some(_), Readiness::Accept) => Ready::Looking {
                        next: after(now, LOOK_STEP_FIRST),
                        step: LOOK_STEP_FIRST,
                        warned: false,
                    },
                    (Some(_), _) => Ready::Awaiting,
                };
                self.phase.workers.push(Worker {
                    pid,
                    generation,
                    slot,
                    index,
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
                if self.count_failure(slot, now, sh) {
                    return;
                }
                let wait = backoff(self.failures(slot).max(FAST_RETRIES + 1));
                if let Some(s) = self.slot_mut(slot) {
                    s.next = Next::RetryAt {
                        at: after(now, wait),
                        generation,
                        restart,
                    };
                }
            }
        }
    }

    /// Counts a failed start in `slot`, and gives up once --start-retries
    /// is spent: the restart, while old workers still serve (they go on
    /// serving; new workers not yet up are stopped; slots already handed
    /// over keep their new workers); the slot, while other workers serve;
    /// otherwise everything, to exit with [`EXIT_GAVE_UP`]. True when it
    /// gave up.
    fn count_failure(&mut self, slot: u32, now: Instant, sh: &mut dyn Host) -> bool {
        let Some(s) = self.slot_mut(slot) else {
            return false;
        };
        s.failures = s.failures.saturating_add(1);
        let failures = s.failures;
        let Some(retries) = self.rules.start_retries else {
            return false;
        };
        if failures <= retries {
            return false;
        }
        let gave_up = format!("{failures} failed starts in a row");
        let mut kept = self.pids(|w| w.role.awaiting());
        if kept.is_empty() && !self.has_current() {
            // The restart's new worker was up and died during the kill-old
            // delay: the old ones still serve.
            kept = self.pids(|w| w.role.serving());
        }
        if !kept.is_empty() {
            for s in &mut self.phase.slots {
                *s = Slot::IDLE;
            }
            for w in &mut self.phase.workers {
                match w.role {
                    _ if kept.contains(&w.pid) => w.role = Role::Current,
                    Role::Starting { .. } => {
                        sh.signal(w.pid, sig::KILL);
                        w.role = Role::Old {
                            signalled: true,
                            signal_at: None,
                            kill_at: None,
                        };
                    }
                    _ => {}
                }
            }
            self.phase.restarts_given_up = self.phase.restarts_given_up.saturating_add(1);
            let (mut serving, mut status) = (Vec::new(), Vec::new());
            for w in self.in_order() {
                if kept.contains(&w.pid) {
                    let (g, pid) = (w.generation, w.pid);
                    serving.push(format!("generation {g} (pid {pid})"));
                    status.push(format!("generation {g} serving (pid {pid})"));
                }
            }
            let verb = if kept.len() == 1 { "goes" } else { "go" };
            sh.say(
                Say::Warning,
                format!(
                    "{gave_up}, giving up the restart \
                     (--start-retries={retries}): {} {verb} on serving",
                    serving.join(", ")
                ),
            );
            sh.upstream(Upstream::Status(format!(
                "restart given up after {failures} failed starts; {}",
                status.join(", ")
            )));
            sh.upstream(Upstream::Ready);
            self.announce(sh);
        } else if self.has_current() {
            if let Some(s) = self.slot_mut(slot) {
                *s = Slot::IDLE;
            }
            let serving = self.pids(|w| matches!(w.role, Role::Current)).len();
            sh.say(
                Say::Warning,
                format!(
                    "{gave_up} in slot {slot}, giving it up until the next restart \
                     (--start-retries={retries}): {serving} of {} workers serving",
                    self.rules.slots()
                ),
            );
            if self.settled() {
                sh.upstream(Upstream::Ready);
            }
            self.tell_state(sh);
        } else {
            self.phase.gave_up = true;
            sh.say(
                Say::Fatal,
                format!(
                    "{gave_up} and no generation serving, \
                     giving up (--start-retries={retries})"
                ),
            );
            let term = self.rules.signal_on_term.clone();
            sh.upstream(Upstream::Stopping);
            self.stop_workers(term, None, now, sh);
        }
        true
    }

    /// Schedules the next attempt in `slot` after a failure: at the
    /// original's pace (one --interval after the failed attempt began)
    /// for the first retries, then backing off exponentially.
    fn schedule_retry(
        &mut self,
        slot: u32,
        failed: &Worker,
        restart: bool,
        now: Instant,
        sh: &mut dyn Host,
    ) {
        let mut at = after(failed.spawned, self.rules.interval);
        let failures = self.failures(slot);
        let extra = backoff(failures);
        if !extra.is_zero() {
            at = at.max(after(now, extra));
            sh.say(
                Say::Note,
                format!(
                    "{failures} failed starts in a row, next attempt in {} s",
                    fmt_secs(at.saturating_duration_since(now))
                ),
            );
        }
        let generation = failed.generation;
        if let Some(s) = self.slot_mut(slot) {
            s.next = match at <= now {
                true => Next::Queued {
                    generation,
                    restart,
                },
                false => Next::RetryAt {
                    at,
                    generation,
                    restart,
                },
            };
        }
        self.fill(now, sh);
    }

    fn begin_restart(&mut self, now: Instant, sh: &mut dyn Host) {
        sh.upstream(Upstream::Reloading);
        // A slot whose worker has served past the start check's reach
        // starts this restart with no failure counted: failed starts are
        // counted in a row, and a start that held ended the row (its
        // worker's exit would have said so only once it came).
        let stable = self.rules.interval.max(STABLE_AFTER);
        for w in &mut self.phase.workers {
            if matches!(w.role, Role::Current) {
                w.role = Role::AWAITING;
                if now.saturating_duration_since(w.spawned) >= stable
                    && let Some(s) = self.phase.slots.get_mut(w.slot as usize)
                {
                    s.failures = 0;
                }
            }
        }
        self.queue_all(true);
        self.fill(now, sh);
    }

    /// The starting worker has passed its start check.
    fn promote(&mut self, pid: Pid, restart: bool, now: Instant, sh: &mut dyn Host) {
        let Some(w) = self.phase.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        w.role = Role::Current;
        let slot = w.slot;
        self.phase.last_restart = now;
        // The service manager hears READY=1 once no other new worker is
        // on its way.
        if self.settled() {
            sh.upstream(Upstream::Ready);
        }
        self.announce(sh);
        self.hand_over(slot, restart, now, sh);
        self.fill(now, sh);
    }

    /// A new worker in `slot` is up: the old workers it replaces get
    /// --signal-on-hup (after --kill-old-delay). With --max-surge below
    /// --workers, those of its slot; otherwise, once every slot has a
    /// worker up, all of them.
    fn hand_over(&mut self, slot: u32, restart: bool, now: Instant, sh: &mut dyn Host) {
        let all_up = self
            .phase
            .slots
            .iter()
            .all(|s| matches!(s.next, Next::Nothing))
            && self.starting() == 0;
        let rolling = self.rules.surge() < self.rules.slots();
        if !rolling && !all_up {
            return;
        }
        let olds = self.pids(|w| w.role.awaiting() && (!rolling || w.slot == slot));
        if olds.is_empty() && !restart {
            return;
        }
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
            self.kill_olds(&olds, now, sh);
        } else {
            sh.say(
                Say::Original,
                format!(
                    "sleeping {} secs before killing old workers",
                    self.settings.kill_old_delay_shown
                ),
            );
            for w in &mut self.phase.workers {
                if olds.contains(&w.pid) {
                    w.role = Role::Old {
                        signalled: false,
                        signal_at: Some(after(now, delay)),
                        kill_at: None,
                    };
                }
            }
        }
    }

    /// Sends --signal-on-hup to these old workers.
    fn kill_olds(&mut self, pids: &[Pid], now: Instant, sh: &mut dyn Host) {
        sh.say(Say::Original, "killing old workers".into());
        for w in &mut self.phase.workers {
            if pids.contains(&w.pid) {
                sh.signal(w.pid, self.rules.signal_on_hup.number);
                w.role = Role::Old {
                    signalled: true,
                    signal_at: None,
                    kill_at: self.rules.drain_timeout.map(|t| after(now, t)),
                };
            }
        }
        self.tell_state(sh);
    }

    /// Old workers still draining at their --drain-timeout get SIGKILL.
    fn end_drain(&mut self, pid: Pid, sh: &mut dyn Host) {
        let Some(w) = self.phase.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        w.role = Role::Old {
            signalled: true,
            signal_at: None,
            kill_at: None,
        };
        sh.say(
            Say::Warning,
            format!(
                "old worker {pid} still running {} s after {}, sending KILL (--drain-timeout)",
                fmt_secs(self.rules.drain_timeout.unwrap_or_default()),
                self.rules.signal_on_hup.shown
            ),
        );
        sh.signal(pid, sig::KILL);
    }

    // -------------------------------------------------------------- events

    /// A starting worker's exec report.
    pub fn on_exec(&mut self, pid: Pid, report: ExecReport, sh: &mut dyn Host) {
        let Some(w) = self.phase.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        if w.exec != Exec::Pending {
            return;
        }
        match report {
            ExecReport::Executed => {
                w.exec = Exec::Done;
                if !self.phase.ever_started {
                    self.phase.ever_started = true;
                    sh.tell_parent(0);
                }
            }
            ExecReport::Failed { why, status } => {
                w.exec = Exec::Failed;
                if self.phase.ever_started {
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

    /// A worker (or one of its descendants) sent READY=1, or einhorn's
    /// ACK: each counts only under its own --readiness.
    pub fn on_ready(&mut self, pid: Pid, sh: &mut dyn Host) {
        let what = match self.rules.readiness {
            Readiness::Einhorn => "worker:ack",
            _ => "READY=1",
        };
        let Some(w) = self.phase.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        match &mut w.role {
            Role::Starting {
                ready: ready @ Ready::Awaiting,
                ..
            } => {
                *ready = Ready::Said;
                sh.say(Say::Note, format!("new worker {pid} is ready"));
            }
            _ => sh.say(
                Say::Note,
                format!("worker {pid} sent {what} again, ignored"),
            ),
        }
    }

    /// A child was reaped: false when it was not a worker.
    pub fn on_exit(
        &mut self,
        pid: Pid,
        status: WaitStatus,
        now: Instant,
        sh: &mut dyn Host,
    ) -> bool {
        let Some(i) = self.phase.workers.iter().position(|w| w.pid == pid) else {
            return false;
        };
        let w = self.phase.workers.remove(i);
        self.last_status = Some(status);
        if !self.rules.policy.respawn {
            self.on_last_exit(w, status, now, sh);
            return true;
        }
        if self.stopping() || self.exit_code.is_some() {
            sh.say(Say::Original, format!("worker {pid} died, status:{status}"));
            self.announce(sh);
            if self.phase.workers.is_empty() && self.exit_code.is_none() {
                self.workers_gone(0, now, sh);
            }
            return true;
        }
        let lived = now.saturating_duration_since(w.spawned);
        let slot = w.slot;
        match w.role {
            Role::Starting { restart, .. } => {
                sh.say(
                    Say::Original,
                    format!("new worker {pid} seems to have failed to start, exit status:{status}"),
                );
                if !self.count_failure(slot, now, sh) {
                    self.schedule_retry(slot, &w, restart, now, sh);
                }
            }
            Role::Current => {
                sh.say(
                    Say::Original,
                    format!("worker {pid} died unexpectedly with status:{status}, restarting"),
                );
                self.announce(sh);
                if lived >= self.rules.interval.max(STABLE_AFTER) {
                    if let Some(s) = self.slot_mut(slot) {
                        s.failures = 0;
                    }
                } else if self.count_failure(slot, now, sh) {
                    return true;
                }
                self.schedule_retry(slot, &w, false, now, sh);
            }
            Role::Old { .. } => {
                sh.say(
                    Say::Original,
                    format!("old worker {pid} died, status:{status}"),
                );
                self.announce(sh);
                // Its going makes room for a new worker (--max-surge).
                self.fill(now, sh);
            }
        }
        true
    }

    /// Without respawn (socketmaster): nothing is replaced or retried, and
    /// start_server exits, saying how the last worker ended, once no worker
    /// is left.
    fn on_last_exit(&mut self, w: Worker, status: WaitStatus, now: Instant, sh: &mut dyn Host) {
        let pid = w.pid;
        match w.role {
            Role::Starting { .. } if !self.stopping() => {
                let keep = self.pids(|w| matches!(w.role, Role::Old { .. }));
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
        if self.phase.workers.is_empty() && self.exit_code.is_none() {
            self.workers_gone(self.last_exit_code(), now, sh);
        }
    }

    /// No worker is left and we are leaving: whatever the workers left
    /// behind gets SIGTERM, or, when nothing did, we leave with `code`.
    fn workers_gone(&mut self, code: i32, now: Instant, sh: &mut dyn Host) {
        self.sweep(sig::TERM, None, code, now, sh);
    }

    /// A process that is not a worker was reaped.
    pub fn on_other_exit(&mut self, sh: &mut dyn Host) {
        if let Shutdown::Sweeping { code, .. } = self.phase.shutdown
            && self.exit_code.is_none()
            && sh.leftovers().is_empty()
        {
            self.exit_code = Some(self.final_code(code));
        }
    }

    /// What is left behind gets SIGKILL; `why` says why now.
    fn kill_leftovers(&mut self, why: &str, code: i32, now: Instant, sh: &mut dyn Host) {
        self.sweep(sig::KILL, Some(why), code, now, sh);
    }

    /// Sends `sig` (TERM, then KILL) to what the workers left behind, or
    /// leaves with `code` when nothing is left. `why` begins the line.
    fn sweep(&mut self, sig: i32, why: Option<&str>, code: i32, now: Instant, sh: &mut dyn Host) {
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
        self.phase.killed_at_shutdown |= killed;
        let wait = match killed {
            true => SWEEP_REAP,
            false => self.rules.stop_timeout.unwrap_or(SWEEP_TIMEOUT),
        };
        if self.rules.stop_timeout.is_some() {
            let reap = if killed { Duration::ZERO } else { SWEEP_REAP };
            sh.upstream(Upstream::ExtendTimeout(wait.saturating_add(reap)));
        }
        self.phase.shutdown = Shutdown::Sweeping {
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
        } else if self.phase.gave_up {
            EXIT_GAVE_UP
        } else if self.phase.killed_at_shutdown && code == 0 {
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
            (_, Some(sig)) if Some(sig) == self.phase.forwarded => 0,
            (_, Some(sig)) => sig.saturating_add(128),
            _ => 0,
        }
    }

    pub fn on_signal(&mut self, sig: i32, now: Instant, sh: &mut dyn Host) {
        if self.exit_code.is_some() {
            // The last worker is gone and we are leaving: an upgrade now
            // would hand over a shutdown with nothing left to wait for.
            return;
        }
        if self.rules.forward.contains(&sig) {
            return self.forward(sig, sh);
        }
        match sig {
            sig::CHLD | sig::PIPE | sig::WINCH | sig::URG | sig::CONT => {}
            sig::HUP => self.on_hup(now, sh),
            sig::TERM | sig::INT | sig::QUIT => match self.phase.shutdown {
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
                    self.phase.killed_at_shutdown |= !pids.is_empty();
                    self.phase.shutdown = Shutdown::Killed;
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

    /// --forward: the current workers (those starting included, not the
    /// old ones) get `sig`; USR1 also reopens start_server's log.
    fn forward(&mut self, sig: i32, sh: &mut dyn Host) {
        if sig == sig::USR1 {
            sh.reopen_log();
        }
        let pids = self.pids(|w| !matches!(w.role, Role::Old { .. }));
        sh.say(
            Say::Note,
            format!(
                "received {}, sending it to the current workers:{}",
                sig::name(sig),
                if pids.is_empty() {
                    "none".into()
                } else {
                    join_pids(&pids)
                }
            ),
        );
        for pid in pids {
            sh.signal(pid, sig);
        }
    }

    /// A restart asked for, by HUP or by a watched path's change (`cause`
    /// begins the lines said).
    fn on_hup(&mut self, now: Instant, sh: &mut dyn Host) {
        self.restart_for("received HUP", now, sh);
    }

    fn restart_for(&mut self, cause: &str, now: Instant, sh: &mut dyn Host) {
        if self.stopping() {
            sh.say(Say::Note, format!("{cause} while shutting down, ignored"));
        } else if self.busy() {
            self.phase.pending_restart = true;
            let under_way = if self.starting() > 0 {
                "a new worker is starting"
            } else if self.has_queued() {
                "new workers await their turn (--max-surge)"
            } else {
                "old workers await --kill-old-delay"
            };
            sh.say(
                Say::Note,
                format!("{cause} while {under_way}, will restart once that is done"),
            );
        } else if self.retrying() {
            // A failing start: try the (presumably fixed) deployment now.
            for s in &mut self.phase.slots {
                s.retry_now();
            }
            sh.say(Say::Original, format!("{cause}, spawning a new worker"));
            sh.upstream(Upstream::Reloading);
            self.fill(now, sh);
        } else {
            sh.say(Say::Original, format!("{cause}, spawning a new worker"));
            self.begin_restart(now, sh);
        }
    }

    /// A --watch path changed: the restart comes once the paths have
    /// been quiet for --watch-delay (a burst of changes is one restart).
    pub fn on_change(&mut self, path: &str, now: Instant, sh: &mut dyn Host) {
        if self.stopping() || self.exit_code.is_some() {
            return;
        }
        if self.phase.watch_at.is_none() {
            sh.say(
                Say::Note,
                format!(
                    "{path} changed, restarting once quiet for {} s (--watch)",
                    fmt_secs(self.rules.watch_delay)
                ),
            );
        }
        self.phase.watch_at = Some(after(now, self.rules.watch_delay));
    }

    fn begin_shutdown(&mut self, sig: i32, now: Instant, sh: &mut dyn Host) {
        sh.upstream(Upstream::Stopping);
        let delay = self.rules.shutdown_delay;
        if delay.is_zero() || self.phase.workers.is_empty() {
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
        self.idle_slots();
        self.phase.pending_restart = false;
        self.phase.shutdown = Shutdown::Delaying {
            sig,
            until: after(now, delay),
        };
    }

    /// Sends the workers the signal that shutdown signal `sig` means.
    fn stop_workers_on(&mut self, sig: i32, now: Instant, sh: &mut dyn Host) {
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
    fn stop_workers(&mut self, term: Signal, why: Option<String>, now: Instant, sh: &mut dyn Host) {
        self.phase.forwarded = Some(term.number);
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
        self.idle_slots();
        self.phase.pending_restart = false;
        self.phase.shutdown = Shutdown::Stopping {
            kill_at: self.rules.stop_timeout.map(|t| after(now, t)),
        };
        // At most: --stop-timeout for the workers, as long again for what
        // they left behind, and a moment to reap it after SIGKILL.
        if let Some(t) = self.rules.stop_timeout {
            let most = t.saturating_mul(2).saturating_add(SWEEP_REAP);
            sh.upstream(Upstream::ExtendTimeout(most));
        }
        if self.phase.workers.is_empty() {
            self.workers_gone(0, now, sh);
        }
    }

    /// Whatever is due at `now`.
    pub fn on_timers(&mut self, now: Instant, sh: &mut dyn Host) {
        // What fires changes what is pending: the list is read again after
        // each, a bounded number of times (each firing clears its timer or
        // moves it on).
        for _ in 0..64 {
            if self.exit_code.is_some() {
                return;
            }
            let due = self.dues().into_iter().find(|&(at, _)| now >= at);
            match due {
                Some((_, due)) => self.fire(due, now, sh),
                None => break,
            }
        }
        if self.phase.pending_restart && !self.busy() && !self.retrying() && !self.stopping() {
            self.phase.pending_restart = false;
            sh.say(Say::Original, "received HUP, spawning a new worker".into());
            self.begin_restart(now, sh);
        }
    }

    /// What a timer does when it falls due.
    fn fire(&mut self, due: Due, now: Instant, sh: &mut dyn Host) {
        match due {
            Due::Ready(pid, restart) => self.promote(pid, restart, now, sh),
            Due::NotReady(pid) => self.not_ready(pid, sh),
            Due::Look(pid) => self.look(pid, now, sh),
            Due::Retry(slot) => {
                if let Some(s) = self.slot_mut(slot) {
                    s.retry_now();
                }
                self.fill(now, sh);
            }
            Due::KillOld => {
                let due = self
                    .pids(|w| matches!(w.role, Role::Old { signal_at: Some(at), .. } if at <= now));
                self.kill_olds(&due, now, sh);
            }
            Due::Drain(pid) => self.end_drain(pid, sh),
            Due::Shutdown => self.shutdown_due(now, sh),
            Due::Watch => {
                self.phase.watch_at = None;
                self.restart_for("a watched path changed", now, sh);
            }
            Due::AutoRestart => {
                let forced = if self.has_old() { "forced, " } else { "" };
                sh.say(
                    Say::Original,
                    format!(
                        "autorestart triggered ({forced}interval={})",
                        self.settings.auto_restart_interval_shown
                    ),
                );
                self.begin_restart(now, sh);
            }
        }
    }

    /// Looks whether a starting worker waits on a socket: then it is
    /// ready; else the next look is due a doubled step later. One that
    /// cannot be seen is said so, once, and stays not ready.
    fn look(&mut self, pid: Pid, now: Instant, sh: &mut dyn Host) {
        let Some(w) = self.phase.workers.iter().find(|w| w.pid == pid) else {
            return;
        };
        let Role::Starting {
            ready: Ready::Looking { step, warned, .. },
            ..
        } = w.role
        else {
            return;
        };
        // Its program runs before anything of it can wait: until then, the
        // next look comes as soon, the step unchanged.
        let seen = match w.exec {
            Exec::Done => sh.look(pid),
            _ => Seen::NotYet,
        };
        let executed = w.exec == Exec::Done;
        let (ready, line) = match seen {
            Seen::Waiting => (
                Ready::Said,
                Some((Say::Note, format!("new worker {pid} waits on the sockets"))),
            ),
            other => {
                let line = match other {
                    Seen::Unseen(why) if !warned => Some((
                        Say::Warning,
                        format!(
                            "unable to see whether new worker {pid} waits on the sockets: \
                             {why}; it counts as not ready"
                        ),
                    )),
                    _ => None,
                };
                let next = Ready::Looking {
                    next: after(now, step),
                    step: match executed {
                        true => step.saturating_mul(2).min(LOOK_STEP_MAX),
                        false => step,
                    },
                    warned: warned || line.is_some(),
                };
                (next, line)
            }
        };
        if let Some(w) = self.phase.workers.iter_mut().find(|w| w.pid == pid)
            && let Role::Starting { ready: r, .. } = &mut w.role
        {
            *r = ready;
        }
        if let Some((kind, line)) = line {
            sh.say(kind, line);
        }
    }

    /// A starting worker not ready by --ready-timeout gets SIGKILL (its
    /// exit is then a failed start).
    fn not_ready(&mut self, pid: Pid, sh: &mut dyn Host) {
        if let Some(w) = self.phase.workers.iter_mut().find(|w| w.pid == pid)
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

    /// The shutdown's own timer: the delay is over, what the workers left
    /// behind had their grace (or their time to be reaped), or workers
    /// outlived --stop-timeout.
    fn shutdown_due(&mut self, now: Instant, sh: &mut dyn Host) {
        match self.phase.shutdown {
            Shutdown::Delaying { sig, .. } => self.stop_workers_on(sig, now, sh),
            Shutdown::Sweeping {
                killed: false,
                code,
                ..
            } => {
                let waited = self.rules.stop_timeout.unwrap_or(SWEEP_TIMEOUT);
                let why = format!("still running {} s after TERM", fmt_secs(waited));
                self.kill_leftovers(&why, code, now, sh);
            }
            Shutdown::Sweeping {
                killed: true, code, ..
            } => {
                let left = sh.leftovers();
                sh.say(
                    Say::Warning,
                    format!("leaving with processes still exiting:{}", join_pids(&left)),
                );
                self.exit_code = Some(self.final_code(code));
            }
            Shutdown::Stopping { .. } => {
                self.phase.shutdown = Shutdown::Killed;
                let pids = self.pids(|_| true);
                self.phase.killed_at_shutdown |= !pids.is_empty();
                sh.say(
                    Say::Note,
                    format!(
                        "workers still running after --stop-timeout, sending KILL to all workers:{}",
                        join_pids(&pids)
                    ),
                );
                self.signal_all(sig::KILL, sh);
            }
            Shutdown::Running | Shutdown::Killed => {}
        }
    }
}

#[cfg(test)]
mod tests;
