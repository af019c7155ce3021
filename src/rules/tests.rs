//! The rules without processes or the real clock: a fake host that
//! records what is asked of it, and instants made by adding to one.

use super::*;
use crate::config::Personality;

#[derive(Default)]
struct Fake {
    next_pid: Pid,
    /// (generation, pid) of every spawn.
    spawned: Vec<(u64, Pid)>,
    /// Where each spawn went.
    places: Vec<Place>,
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
    state: (Vec<Shows>, u64),
    /// What the service manager was told.
    upstream: Vec<Upstream>,
    /// Every look at a starting worker (--readiness=accept), and what the
    /// next ones find: the workers seen waiting, or why none can be seen.
    looks: Vec<Pid>,
    waiting: Vec<Pid>,
    unseen: Option<String>,
}

impl Host for Fake {
    fn spawn(&mut self, place: Place) -> Result<Pid, String> {
        if self.fail_spawns > 0 {
            self.fail_spawns -= 1;
            return Err("unable to fork: Resource temporarily unavailable".into());
        }
        self.next_pid += 1;
        let pid = 100 + self.next_pid;
        self.spawned.push((place.generation, pid));
        self.places.push(place);
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
    fn look(&mut self, pid: Pid) -> Seen {
        self.looks.push(pid);
        match &self.unseen {
            Some(why) => Seen::Unseen(why.clone()),
            None if self.waiting.contains(&pid) => Seen::Waiting,
            None => Seen::NotYet,
        }
    }
    fn reopen_log(&mut self) {}
    fn kill(&mut self, pid: Pid, sig: i32) {
        self.kills.push((pid, sig));
    }
    fn leftovers(&mut self) -> Vec<Pid> {
        self.left.clone()
    }
    fn state(&mut self, workers: &[Shows], given_up: u64) {
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
    /// The last state told, as (generation, pid, role).
    fn roles(&self) -> Vec<(u64, Pid, Shown)> {
        self.state
            .0
            .iter()
            .map(|w| (w.generation, w.pid, w.role))
            .collect()
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
    let vars = crate::env::vars(vars);
    Settings::from_vars(&vars).0
}

fn rules(personality: Personality, ready_timeout: Option<Duration>) -> Rules {
    Rules {
        ready_timeout,
        policy: personality.policy(),
        ..Rules::default()
    }
}

/// A core with its first worker spawned (not executed yet), at t0.
fn started(rules: Rules) -> (Core, Fake, Instant) {
    let t0 = Instant::now();
    let (mut core, mut sh) = (Core::new(rules, settings(&[]), t0), Fake::default());
    core.start(t0, &mut sh);
    (core, sh, t0)
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

/// The last worker spawned runs and exits 1 at once, `n` times, a
/// second apart: the instant after.
fn fail_starts(core: &mut Core, sh: &mut Fake, mut t: Instant, n: usize) -> Instant {
    for _ in 0..n {
        let pid = sh.last_pid();
        core.on_exec(pid, ExecReport::Executed, sh);
        core.on_exit(pid, exited(1), t, sh);
        t += SEC;
        core.on_timers(t, sh);
    }
    t
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
    let (mut core, mut sh, t0) = started(rules(Personality::StartServer, None));
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
    let (mut core, mut sh, t0) = started(rules(Personality::StartServer, None));
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
    let (mut core, mut sh, t0) = started(rules(Personality::StartServer, None));
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
    assert_eq!(core.phase.shutdown, Shutdown::Killed);
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

fn accepting(ready_timeout: Duration) -> Rules {
    Rules {
        readiness: Readiness::Accept,
        ..rules(Personality::StartServer, Some(ready_timeout))
    }
}

/// Runs the timers as the loop would, up to `until`: the instants they
/// fell due at.
fn run_timers(core: &mut Core, sh: &mut Fake, until: Instant) -> Vec<Instant> {
    let mut fired = Vec::new();
    while let Some(at) = core.next_deadline().filter(|&at| at <= until) {
        core.on_timers(at, sh);
        fired.push(at);
    }
    fired
}

#[test]
fn accept_readiness_looks_from_1_ms_backing_off_to_32_ms_and_hands_over_once_seen() {
    let (mut core, mut sh, t0) = started(accepting(60 * SEC));
    // No look before its program runs.
    core.on_timers(t0 + Duration::from_millis(1), &mut sh);
    assert!(sh.looks.is_empty());
    core.on_exec(101, ExecReport::Executed, &mut sh);
    let ms = Duration::from_millis;
    let fired = run_timers(&mut core, &mut sh, t0 + ms(200));
    let gaps: Vec<u128> = fired
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(&gaps[..6], [1, 2, 4, 8, 16, 32]);
    assert!(gaps[6..].iter().all(|&g| g == 32), "{gaps:?}");
    assert_eq!(sh.looks.len(), fired.len());
    assert!(sh.status.is_empty(), "not up until seen waiting");
    sh.waiting.push(101);
    let next = core.next_deadline().unwrap();
    core.on_timers(next, &mut sh);
    assert_eq!(sh.said("new worker 101 waits on the sockets"), 1);
    assert_eq!(sh.generations(), [1]);
    assert_eq!(sh.up, 1);
    // Up: no more looks, and nothing due (no wake-up when idle).
    let looks = sh.looks.len();
    assert_eq!(core.next_deadline(), None);
    assert_eq!(sh.looks.len(), looks);
}

#[test]
fn under_accept_the_old_worker_is_signalled_only_once_the_new_one_is_seen_waiting() {
    let (mut core, mut sh, t0) = started(accepting(60 * SEC));
    core.on_exec(101, ExecReport::Executed, &mut sh);
    sh.waiting.push(101);
    run_timers(&mut core, &mut sh, t0 + SEC);
    core.on_signal(libc::SIGHUP, t0 + SEC, &mut sh);
    core.on_exec(102, ExecReport::Executed, &mut sh);
    // Loading for 5 s: looked at all along, the old one untouched.
    run_timers(&mut core, &mut sh, t0 + 6 * SEC);
    assert!(sh.signals.is_empty());
    assert!(sh.looks.iter().filter(|&&p| p == 102).count() > 100);
    sh.waiting.push(102);
    let seen = core.next_deadline().unwrap();
    assert!(seen <= t0 + 6 * SEC + Duration::from_millis(32));
    core.on_timers(seen, &mut sh);
    assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
    assert_eq!(sh.said("killing old workers"), 1);
    assert_eq!(sh.generations(), [1, 2]);
}

#[test]
fn a_worker_that_cannot_be_seen_is_said_once_and_fails_at_ready_timeout() {
    let t0 = Instant::now();
    let mut core = Core::new(accepting(2 * SEC), settings(&[]), t0);
    let mut sh = Fake {
        unseen: Some("unable to read /proc/101/fd: Permission denied".into()),
        ..Fake::default()
    };
    core.start(t0, &mut sh);
    core.on_exec(101, ExecReport::Executed, &mut sh);
    run_timers(&mut core, &mut sh, t0 + 2 * SEC);
    assert_eq!(
        sh.said(
            "unable to see whether new worker 101 waits on the sockets: unable to read \
             /proc/101/fd: Permission denied; it counts as not ready"
        ),
        1
    );
    assert_eq!(sh.signals, [(101, libc::SIGKILL)]);
    assert!(sh.status.is_empty());
    // Killed: no more looks while its exit is awaited.
    let looks = sh.looks.len();
    run_timers(&mut core, &mut sh, t0 + 3 * SEC);
    assert_eq!(sh.looks.len(), looks);
}

#[test]
fn an_ack_again_is_named_as_such() {
    let r = Rules {
        readiness: Readiness::Einhorn,
        ..rules(Personality::StartServer, Some(SEC))
    };
    let (mut core, mut sh, _) = running(r, settings(&[]));
    core.on_ready(101, &mut sh);
    assert_eq!(sh.said("worker 101 sent worker:ack again, ignored"), 1);
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
    let (mut core, mut sh, _) = started(rules(Personality::StartServer, None));
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
    core.phase.slots[0].failures = 5;
    // Dead half a second after it was spawned: a failure.
    let t = t0 + SEC / 2;
    core.on_exit(101, exited(1), t, &mut sh);
    assert_eq!(core.phase.slots[0].failures, 6);
    assert_eq!(sh.said("died unexpectedly with status:256, restarting"), 1);
    let Next::RetryAt { at, .. } = core.phase.slots[0].next else {
        panic!("no backed-off retry: {:?}", core.phase.slots);
    };
    assert!(at > t);
    core.on_signal(libc::SIGHUP, t, &mut sh);
    assert_eq!(sh.spawned.len(), 2, "the HUP retried at once");
    assert_eq!(core.phase.slots[0].next, Next::Nothing);
    // A worker that served a while and then died resets the count.
    let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
    core.phase.slots[0].failures = 5;
    core.on_exit(101, exited(1), t + 60 * SEC, &mut sh);
    assert_eq!(core.phase.slots[0].failures, 0);
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
        sh.roles(),
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
    t = fail_starts(&mut core, &mut sh, t, 2);
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
    assert_eq!(
        (sh.roles(), sh.state.1),
        (vec![(1, 101, Shown::Serving)], 1)
    );
    assert_eq!(core.next_deadline(), None);
    // The next HUP is a restart like any other, with retries afresh.
    let t = restart(&mut core, &mut sh, t);
    assert_eq!(sh.generations(), [1, 4]);
    assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
    core.on_exit(101, exited(0), t, &mut sh);
    assert_eq!(
        (sh.roles(), sh.state.1),
        (vec![(4, 104, Shown::Serving)], 1)
    );
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
        sh.said("received TERM, serving 4 s more before stopping the workers (--shutdown-delay)"),
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
        sh.said("still running 2 s after TERM, sending KILL to what the workers left behind:301"),
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
    t = fail_starts(&mut core, &mut sh, t, 2);
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
    impl Host for Reopens {
        fn spawn(&mut self, p: Place) -> Result<Pid, String> {
            self.0.spawn(p)
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
        fn look(&mut self, pid: Pid) -> Seen {
            self.0.look(pid)
        }
        fn reopen_log(&mut self) {
            self.1 += 1;
        }
        fn kill(&mut self, pid: Pid, sig: i32) {
            self.0.kill(pid, sig)
        }
        fn leftovers(&mut self) -> Vec<Pid> {
            self.0.leftovers()
        }
        fn state(&mut self, workers: &[Shows], given_up: u64) {
            self.0.state(workers, given_up)
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
        sh.said(
            "new worker 102 exited before it was up (exit status 1): keeping the old workers: 101"
        ),
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
    core.phase.slots[0].failures = 5;
    core.on_exit(102, exited(1), t + SEC / 2, &mut sh);
    let signal_at = |core: &Core| match core.phase.workers[0].role {
        Role::Old { signal_at, .. } => signal_at,
        _ => None,
    };
    let at = signal_at(&core).expect("the old worker awaits its signal");
    let Next::RetryAt {
        at: retry_at,
        restart: false,
        ..
    } = core.phase.slots[0].next
    else {
        panic!("{:?}", core.phase.slots);
    };
    assert_eq!(at, t + 5 * SEC);
    assert!(retry_at < at);
    core.on_timers(retry_at, &mut sh);
    assert_eq!(sh.spawned.len(), 3, "replaced");
    assert_eq!(core.phase.slots[0].next, Next::Nothing);
    assert_eq!(signal_at(&core), Some(at));
    core.on_timers(at, &mut sh);
    assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
    assert_eq!(signal_at(&core), None);
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
                .phase
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
        assert!(
            core.phase.workers.is_empty(),
            "seed {seed}: {:?}",
            core.phase.workers
        );
        assert!(core.exit_code.is_some(), "seed {seed}: no exit");
    }
    assert!(handovers > 500, "only {handovers} hand-overs");
}

/// A live upgrade hands over a shutdown with nothing left to wait for:
/// the rules carrying on from it are done, with status 0.
#[test]
fn a_handed_over_shutdown_with_no_worker_left_is_over() {
    let (mut core, mut sh, t) = running(rules(Personality::StartServer, None), settings(&[]));
    core.on_signal(libc::SIGTERM, t, &mut sh);
    let mut handed = core.phase().clone();
    let mut next = Core::new(rules(Personality::StartServer, None), settings(&[]), t);
    next.carry_on(handed.clone());
    assert_eq!(next.exit_code(), None, "a worker is still stopping");
    handed.workers.clear();
    let mut next = Core::new(rules(Personality::StartServer, None), settings(&[]), t);
    next.carry_on(handed);
    assert_eq!(next.exit_code(), Some(0));
    assert!(!next.may_upgrade(), "leaving: nothing to hand over");
    assert!(core.may_upgrade());
}

/// Auto-restart and the kill-old delay come from the environment under
/// start_server's policy only: socketmaster's keep the defaults.
#[test]
fn environment_settings_apply_under_start_servers_policy_only() {
    let given = settings(&[("KILL_OLD_DELAY", "7"), ("ENABLE_AUTO_RESTART", "1")]);
    let t = Instant::now();
    let mut core = Core::new(rules(Personality::StartServer, None), given.clone(), t);
    assert!(core.settings.auto_restart);
    assert_eq!(core.settings.kill_old_delay, 7 * SEC);
    core = Core::new(rules(Personality::Socketmaster, None), given.clone(), t);
    assert_eq!(core.settings, Settings::default());
    core.set_settings(given);
    assert_eq!(core.settings, Settings::default());
    assert_eq!(Settings::default(), settings(&[]));
}

/// --forward: the signal goes to the current generation's workers,
/// starting ones included and old ones not, and is said; USR1 also
/// reopens the log.
#[test]
fn forwarded_signals_reach_the_current_workers_only() {
    let mut r = rules(Personality::StartServer, None);
    r.forward = vec![libc::SIGTTIN, libc::SIGUSR1, libc::SIGWINCH];
    let (mut core, mut sh, t) = running(r, settings(&[]));
    core.on_signal(libc::SIGHUP, t, &mut sh);
    // During a restart, the current generation is the one starting.
    core.on_signal(libc::SIGTTIN, t, &mut sh);
    assert_eq!(sh.signals, [(102, libc::SIGTTIN)]);
    core.on_exec(102, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    sh.signals.clear();
    core.on_signal(libc::SIGWINCH, t + SEC, &mut sh);
    assert_eq!(sh.signals, [(102, libc::SIGWINCH)], "not the old worker");
    assert_eq!(
        sh.said("received WINCH, sending it to the current workers:102"),
        1
    );
    core.on_signal(libc::SIGUSR1, t + SEC, &mut sh);
    assert_eq!(sh.signals.last(), Some(&(102, libc::SIGUSR1)));
    assert_eq!(sh.spawned.len(), 2, "no restart");
}

/// --watch: a change starts the quiet period, each further change starts
/// it again, and the restart comes once it has passed; said once per
/// burst. None while shutting down.
#[test]
fn watched_changes_restart_once_quiet() {
    let mut r = rules(Personality::StartServer, None);
    r.watch_delay = SEC / 2;
    let (mut core, mut sh, t) = running(r, settings(&[]));
    for i in 0..10 {
        core.on_change("/etc/app", t + SEC / 10 * i, &mut sh);
    }
    let last = t + SEC / 10 * 9;
    assert_eq!(core.next_deadline(), Some(last + SEC / 2));
    core.on_timers(last + SEC / 4, &mut sh);
    assert_eq!(sh.spawned.len(), 1, "not while changes keep coming");
    core.on_timers(last + SEC / 2, &mut sh);
    assert_eq!(sh.spawned.len(), 2);
    assert_eq!(
        sh.said("/etc/app changed, restarting once quiet for 0.5 s (--watch)"),
        1
    );
    assert_eq!(sh.said("a watched path changed, spawning a new worker"), 1);
    core.on_signal(libc::SIGTERM, last + SEC, &mut sh);
    core.on_change("/etc/app", last + SEC, &mut sh);
    assert_eq!(core.phase.watch_at, None);
}

/// Failed starts are counted in a row: a restart after a generation that
/// came up and served past the start check begins from none, so
/// --start-retries gives a later restart its whole allowance.
#[test]
fn a_restart_after_a_generation_that_served_counts_failures_from_none() {
    let mut r = rules(Personality::StartServer, None);
    r.start_retries = Some(2);
    let (mut core, mut sh, t) = running(r, settings(&[]));
    // A restart that fails twice, then comes up.
    core.on_signal(libc::SIGHUP, t, &mut sh);
    let mut t = t;
    t = fail_starts(&mut core, &mut sh, t, 2);
    let pid = sh.last_pid();
    core.on_exec(pid, ExecReport::Executed, &mut sh);
    t += SEC;
    core.on_timers(t, &mut sh);
    assert_eq!(core.phase.slots[0].failures, 2);
    // It serves a minute; the next restart may fail twice and still try.
    t += 60 * SEC;
    core.on_signal(libc::SIGHUP, t, &mut sh);
    assert_eq!(core.phase.slots[0].failures, 0);
    fail_starts(&mut core, &mut sh, t, 2);
    assert_eq!(sh.said("giving up the restart"), 0, "{:?}", sh.lines);
}

mod workers;
