//! Several workers per generation (--workers, --max-surge).

use super::*;

fn workers(n: u32, surge: Option<u32>) -> Rules {
    Rules {
        workers: Some(n),
        max_surge: surge,
        ..rules(Personality::StartServer, None)
    }
}

/// Brings every worker spawned since `from` up: executed, and past
/// --interval at `t`.
fn bring_up(core: &mut Core, sh: &mut Fake, from: usize, t: Instant) {
    let pids: Vec<Pid> = sh.spawned[from..].iter().map(|&(_, p)| p).collect();
    for pid in pids {
        core.on_exec(pid, ExecReport::Executed, sh);
    }
    core.on_timers(t, sh);
}

/// A core whose N workers of generation 1 are up.
fn serving(rules: Rules) -> (Core, Fake, Instant) {
    let (mut core, mut sh, t0) = started(rules);
    let t = t0 + SEC;
    bring_up(&mut core, &mut sh, 0, t);
    (core, sh, t)
}

fn slots_of(sh: &Fake) -> Vec<(u64, u32, u32)> {
    sh.places
        .iter()
        .map(|p| (p.generation, p.slot, p.index))
        .collect()
}

#[test]
fn n_workers_start_together_in_one_generation_with_their_slots_and_indexes() {
    let (core, sh, _) = serving(workers(3, None));
    assert_eq!(slots_of(&sh), [(1, 0, 0), (1, 1, 1), (1, 2, 2)]);
    assert_eq!(sh.up, 1, "READY=1 once all three are up");
    assert_eq!(sh.generations(), [1, 1, 1]);
    assert_eq!(
        sh.status.last().unwrap(),
        &[(1, 101), (1, 102), (1, 103)],
        "by generation, then slot"
    );
    assert_eq!(
        sh.state.0.iter().map(|w| w.slot).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(core.next_deadline().is_none(), "nothing due when all serve");
}

#[test]
fn all_at_once_signals_the_old_workers_together_once_every_new_one_is_up() {
    let (mut core, mut sh, t) = serving(workers(2, None));
    core.on_signal(libc::SIGHUP, t, &mut sh);
    assert_eq!(slots_of(&sh)[2..], [(2, 0, 2), (2, 1, 3)]);
    // One new worker up: the old ones keep serving, untouched.
    core.on_exec(103, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    assert!(sh.signals.is_empty());
    assert_eq!(sh.generations(), [1, 1, 2]);
    core.on_exec(104, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    assert_eq!(sh.signals, [(101, libc::SIGTERM), (102, libc::SIGTERM)]);
    assert_eq!(
        sh.said("new worker is now running, sending TERM to old workers:101,102"),
        1
    );
    assert_eq!(sh.generations(), [1, 1, 2, 2]);
    core.on_exit(101, killed(libc::SIGTERM), t + SEC, &mut sh);
    core.on_exit(102, killed(libc::SIGTERM), t + SEC, &mut sh);
    assert_eq!(sh.generations(), [2, 2]);
    assert_eq!(sh.spawned.len(), 4, "old workers are not replaced");
}

/// With --max-surge=1 of 3: one new worker at a time, the old worker of
/// its slot signalled once it is up, the next started once that one has
/// gone; never more than N+S alive.
#[test]
fn a_rolling_restart_replaces_one_slot_at_a_time_within_n_plus_s() {
    let (mut core, mut sh, mut t) = serving(workers(3, Some(1)));
    core.on_signal(libc::SIGHUP, t, &mut sh);
    for (slot, old) in [(0u32, 101), (1, 102), (2, 103)] {
        assert!(core.phase.workers.len() <= 4);
        let new = sh.last_pid();
        assert_eq!(
            sh.places.last().map(|p| (p.generation, p.slot)),
            Some((2, slot))
        );
        core.on_exec(new, ExecReport::Executed, &mut sh);
        t += SEC;
        core.on_timers(t, &mut sh);
        assert_eq!(sh.signals.last(), Some(&(old, libc::SIGTERM)));
        assert_eq!(
            sh.spawned.len(),
            4 + slot as usize,
            "no spawn before the old one goes"
        );
        core.on_exit(old, killed(libc::SIGTERM), t, &mut sh);
    }
    assert_eq!(sh.generations(), [2, 2, 2]);
    assert_eq!(sh.spawned.len(), 6);
    assert!(core.next_deadline().is_none());
    // READY=1 once at start-up and once when the roll is done.
    assert_eq!(sh.up, 2);
}

#[test]
fn a_crashed_worker_is_started_again_in_its_slot_and_generation() {
    let mut r = workers(2, None);
    r.interval = Duration::ZERO;
    let (mut core, mut sh, t0) = started(r);
    bring_up(&mut core, &mut sh, 0, t0);
    let t = t0 + 60 * SEC;
    core.on_exit(102, exited(1), t, &mut sh);
    assert_eq!(
        slots_of(&sh).last(),
        Some(&(1, 1, 1)),
        "at once, same place"
    );
    bring_up(&mut core, &mut sh, 2, t);
    assert_eq!(sh.generations(), [1, 1]);
    // Dying again within a second: a failed start, counted in its slot.
    core.on_exit(103, exited(1), t + SEC / 2, &mut sh);
    assert_eq!(core.phase.slots[1].failures, 1);
    assert_eq!(core.phase.slots[0].failures, 0, "counted per slot");
    assert_eq!(slots_of(&sh).last(), Some(&(1, 1, 1)));
    assert_eq!(sh.spawned.len(), 4);
}

/// --start-retries=1 with --max-surge=1 of 3: slot 0 is handed over,
/// slot 1's new worker fails twice: the restart is given up; slot 0
/// keeps its new worker, slots 1 and 2 their old ones; the next HUP
/// starts a new generation in every slot.
#[test]
fn a_roll_that_keeps_failing_stops_and_keeps_what_was_handed_over() {
    let mut r = workers(3, Some(1));
    r.start_retries = Some(1);
    let (mut core, mut sh, mut t) = serving(r);
    core.on_signal(libc::SIGHUP, t, &mut sh);
    core.on_exec(104, ExecReport::Executed, &mut sh);
    t += SEC;
    core.on_timers(t, &mut sh);
    core.on_exit(101, killed(libc::SIGTERM), t, &mut sh);
    // Every new worker from now on fails, whichever slot it is in.
    for _ in 0..10 {
        if sh.said("giving up the restart") > 0 {
            break;
        }
        let pid = sh.last_pid();
        if core.is_worker(pid) {
            core.on_exec(pid, ExecReport::Executed, &mut sh);
            core.on_exit(pid, exited(1), t, &mut sh);
        }
        t += SEC;
        core.on_timers(t, &mut sh);
    }
    assert_eq!(sh.said("giving up the restart (--start-retries=1)"), 1);
    assert_eq!(
        sh.said("generation 1 (pid 102), generation 1 (pid 103) go on serving"),
        1,
        "{:?}",
        sh.lines
    );
    assert_eq!(sh.state.1, 1, "one restart given up");
    assert_eq!(sh.generations(), [1, 1, 2]);
    assert_eq!(
        sh.roles(),
        [
            (1, 102, Shown::Serving),
            (1, 103, Shown::Serving),
            (2, 104, Shown::Serving)
        ]
    );
    assert_eq!(sh.signals[0], (101, libc::SIGTERM));
    assert!(
        sh.signals[1..]
            .iter()
            .all(|&(p, sig)| p > 104 && sig == libc::SIGKILL),
        "no old worker left was signalled: {:?}",
        sh.signals
    );
    assert!(core.next_deadline().is_none(), "nothing retried");
    let spawned = sh.spawned.len();
    core.on_signal(libc::SIGHUP, t, &mut sh);
    assert_eq!(sh.places[spawned].generation, 3);
    assert_eq!(
        sh.places[spawned].slot, 0,
        "every slot again, from the first"
    );
}

/// With --max-surge=2 of 2, new workers not yet up when the roll is given
/// up are killed, and the old ones serve on.
#[test]
fn giving_up_kills_the_new_workers_not_yet_up() {
    let mut r = workers(2, None);
    r.start_retries = Some(0);
    let (mut core, mut sh, t) = serving(r);
    core.on_signal(libc::SIGHUP, t, &mut sh);
    core.on_exec(103, ExecReport::Executed, &mut sh);
    core.on_exit(103, exited(1), t, &mut sh);
    assert_eq!(sh.signals, [(104, libc::SIGKILL)]);
    assert_eq!(
        sh.roles()[..2],
        [(1, 101, Shown::Serving), (1, 102, Shown::Serving)]
    );
    core.on_exit(104, killed(libc::SIGKILL), t, &mut sh);
    assert_eq!(sh.generations(), [1, 1]);
    assert_eq!(sh.spawned.len(), 4);
    assert!(core.next_deadline().is_none());
}

/// A slot whose worker keeps dying while the others serve is given up
/// until the next restart; start_server does not leave.
#[test]
fn a_slot_that_keeps_failing_while_others_serve_is_given_up() {
    let mut r = workers(2, None);
    r.start_retries = Some(0);
    r.interval = Duration::ZERO;
    let (mut core, mut sh, t0) = started(r);
    bring_up(&mut core, &mut sh, 0, t0);
    // Up, then dead within a second of its spawn: a failed start.
    let t = t0 + SEC / 2;
    core.on_exit(102, exited(1), t, &mut sh);
    assert_eq!(sh.said("in slot 1, giving it up until the next restart"), 1);
    assert_eq!(
        sh.up, 2,
        "READY=1 at start-up, and once the slot is given up"
    );
    assert_eq!(core.exit_code(), None);
    assert!(core.next_deadline().is_none());
    core.on_signal(libc::SIGHUP, t + SEC, &mut sh);
    assert_eq!(slots_of(&sh)[2..], [(2, 0, 1), (2, 1, 2)]);
}

/// einhorn's index: the lowest no live worker holds, draining ones
/// included; freed when its worker exits.
#[test]
fn einhorn_indexes_are_the_lowest_free_among_live_workers() {
    let (mut core, mut sh, t) = serving(workers(2, Some(1)));
    core.on_signal(libc::SIGHUP, t, &mut sh);
    assert_eq!(sh.places[2].index, 2);
    core.on_exec(103, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    core.on_exit(101, killed(libc::SIGTERM), t + SEC, &mut sh);
    assert_eq!((sh.places[3].slot, sh.places[3].index), (1, 0));
}

/// A HUP during a roll is one more restart once it is done; a live
/// upgrade mid-roll carries on from the phase it hands over.
#[test]
fn a_roll_handed_over_mid_way_resumes() {
    let (mut core, mut sh, t) = serving(workers(3, Some(1)));
    core.on_signal(libc::SIGHUP, t, &mut sh);
    core.on_exec(104, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    let handed = core.phase().clone();
    let mut next = Core::new(workers(3, Some(1)), settings(&[]), t);
    next.carry_on(handed);
    let mut sh2 = Fake {
        next_pid: sh.next_pid,
        ..Fake::default()
    };
    next.on_exit(101, killed(libc::SIGTERM), t + SEC, &mut sh2);
    assert_eq!(slots_of(&sh2), [(2, 1, 0)], "the roll goes on in slot 1");
}

/// Random events with several workers: after every step at most N+S
/// alive and S starting while a restart is under way, and no old worker
/// signalled (outside a shutdown) before a worker of a newer generation
/// is up in its slot (or, all at once, in every slot).
#[test]
fn storms_with_several_workers_keep_the_bounds() {
    let mut handovers = 0;
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let n = 1 + (seed % 4) as u32;
        let s = 1 + (seed / 4 % u64::from(n)) as u32;
        let mut r = workers(n, Some(s));
        if seed % 3 == 0 {
            r.start_retries = Some(2);
        }
        let delay = settings(&[("KILL_OLD_DELAY", ["0", "1"][(seed % 2) as usize])]);
        let t0 = Instant::now();
        let mut t = t0;
        let mut core = Core::new(r, delay, t0);
        let mut sh = Fake::default();
        core.start(t, &mut sh);
        let mut seen = 0;
        for _ in 0..80 {
            if core.exit_code.is_some() {
                break;
            }
            let alive: Vec<Pid> = core.phase.workers.iter().map(|w| w.pid).collect();
            match rng.below(8) {
                0 => core.on_signal(libc::SIGHUP, t, &mut sh),
                1 | 2 if !alive.is_empty() => {
                    let pid = alive[rng.below(alive.len() as u64) as usize];
                    core.on_exec(pid, ExecReport::Executed, &mut sh);
                }
                3 if !alive.is_empty() && rng.below(2) == 0 => {
                    let pid = alive[rng.below(alive.len() as u64) as usize];
                    core.on_exit(pid, exited(1), t, &mut sh);
                }
                _ => t += Duration::from_millis(rng.below(1500)),
            }
            core.on_timers(t, &mut sh);
            // Signalled workers exit a little later: let some go now.
            let signalled: Vec<Pid> = sh.signals[seen..].iter().map(|&(p, _)| p).collect();
            for pid in signalled {
                if core.is_worker(pid) && rng.below(2) == 0 {
                    core.on_exit(pid, killed(libc::SIGTERM), t, &mut sh);
                }
            }
            let workers = &core.phase.workers;
            let starting = workers
                .iter()
                .filter(|w| matches!(w.role, Role::Starting { restart: true, .. }))
                .count();
            assert!(
                workers.len() <= (n + s) as usize,
                "seed {seed}: {workers:?}"
            );
            assert!(starting <= s as usize, "seed {seed}: {starting} starting");
            for &(pid, sig) in &sh.signals[seen..] {
                if sig != libc::SIGTERM || core.stopping() {
                    continue;
                }
                let Some(old) = sh
                    .places
                    .iter()
                    .zip(&sh.spawned)
                    .find(|(_, sp)| sp.1 == pid)
                else {
                    continue;
                };
                let (place, _) = old;
                handovers += 1;
                let newer_up = |slot: u32| {
                    core.phase.workers.iter().any(|w| {
                        w.slot == slot && w.generation > place.generation && w.role == Role::Current
                    }) || sh.status.iter().flatten().any(|&(g, p)| {
                        g > place.generation
                            && sh
                                .places
                                .iter()
                                .zip(&sh.spawned)
                                .any(|(pl, sp)| sp.1 == p && pl.slot == slot)
                    })
                };
                assert!(
                    newer_up(place.slot),
                    "seed {seed}: worker {pid} (slot {}) signalled before its successor was up",
                    place.slot
                );
            }
            seen = sh.signals.len();
            if let Some(d) = core.next_deadline() {
                assert!(d > t, "seed {seed}: a deadline in the past");
            }
        }
    }
    assert!(handovers > 200, "only {handovers} hand-overs");
}

/// --readiness=interval counts from each worker's own spawn: with
/// --max-surge=1, the second new worker, spawned once the first's old
/// worker went, is up --interval after that, not after the first.
#[test]
fn interval_readiness_counts_from_each_workers_own_spawn() {
    let (mut core, mut sh, t) = serving(workers(2, Some(1)));
    core.on_signal(libc::SIGHUP, t, &mut sh);
    core.on_exec(103, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    let t2 = t + SEC + SEC / 2;
    core.on_exit(101, killed(libc::SIGTERM), t2, &mut sh);
    assert_eq!(sh.last_pid(), 104);
    core.on_exec(104, ExecReport::Executed, &mut sh);
    core.on_timers(t2 + SEC / 2, &mut sh);
    assert_eq!(sh.signals, [(101, libc::SIGTERM)], "not up yet");
    assert_eq!(core.next_deadline(), Some(t2 + SEC));
    core.on_timers(t2 + SEC, &mut sh);
    assert_eq!(sh.signals.last(), Some(&(102, libc::SIGTERM)));
}

/// READY=1 (or an ACK) counts for the worker that sent it only.
#[test]
fn notify_readiness_is_per_worker_by_the_senders_pid() {
    let mut r = workers(2, None);
    r.ready_timeout = Some(60 * SEC);
    r.readiness = Readiness::Notify;
    let (mut core, mut sh, t0) = started(r);
    for pid in [101, 102] {
        core.on_exec(pid, ExecReport::Executed, &mut sh);
    }
    core.on_ready(102, &mut sh);
    core.on_timers(t0, &mut sh);
    assert_eq!(
        sh.roles(),
        [(1, 101, Shown::Starting), (1, 102, Shown::Serving)]
    );
    core.on_ready(101, &mut sh);
    core.on_timers(t0, &mut sh);
    assert_eq!(sh.generations(), [1, 1]);
    // A restart: the old workers go once both new ones said it.
    core.on_signal(libc::SIGHUP, t0, &mut sh);
    for pid in [103, 104] {
        core.on_exec(pid, ExecReport::Executed, &mut sh);
    }
    core.on_ready(104, &mut sh);
    core.on_timers(t0, &mut sh);
    assert!(sh.signals.is_empty());
    core.on_ready(103, &mut sh);
    core.on_timers(t0, &mut sh);
    assert_eq!(sh.signals, [(101, libc::SIGTERM), (102, libc::SIGTERM)]);
}

/// --kill-old-delay and --drain-timeout run per old worker: with
/// --max-surge=1 of 2, each old worker gets its signal the delay after
/// its own successor is up, and SIGKILL the drain timeout after that.
#[test]
fn the_kill_old_delay_and_the_drain_timeout_run_per_old_worker() {
    let mut r = workers(2, Some(1));
    r.drain_timeout = Some(10 * SEC);
    let t0 = Instant::now();
    let mut core = Core::new(r, settings(&[("KILL_OLD_DELAY", "5")]), t0);
    let mut sh = Fake::default();
    core.start(t0, &mut sh);
    bring_up(&mut core, &mut sh, 0, t0 + SEC);
    let t = t0 + SEC;
    core.on_signal(libc::SIGHUP, t, &mut sh);
    core.on_exec(103, ExecReport::Executed, &mut sh);
    core.on_timers(t + SEC, &mut sh);
    assert_eq!(
        core.next_deadline(),
        Some(t + 6 * SEC),
        "slot 0's old worker, 5 s on"
    );
    core.on_timers(t + 6 * SEC, &mut sh);
    assert_eq!(sh.signals, [(101, libc::SIGTERM)]);
    // Slot 0's old worker drains; at its drain timeout, SIGKILL.
    core.on_timers(t + 16 * SEC, &mut sh);
    assert_eq!(sh.signals.last(), Some(&(101, libc::SIGKILL)));
    core.on_exit(101, killed(libc::SIGKILL), t + 16 * SEC, &mut sh);
    // Now slot 1's new worker, its old worker 5 s after it is up.
    assert_eq!(sh.last_pid(), 104);
    core.on_exec(104, ExecReport::Executed, &mut sh);
    core.on_timers(t + 17 * SEC, &mut sh);
    assert_eq!(sh.signals.len(), 2, "102 not yet");
    core.on_timers(t + 22 * SEC, &mut sh);
    assert_eq!(sh.signals.last(), Some(&(102, libc::SIGTERM)));
}
