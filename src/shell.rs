//! The supervisor's shell: one `poll` with one deadline, around the rules
//! in [`crate::rules`].
//!
//! Events are signals (read from a signalfd), exec reports (known when a
//! spawn returns; a pipe only for a worker a previous program image
//! started), notifications, workers' output and timers (the earliest the
//! rules, the notification rate limit, a status file to write again and
//! an upgrade check ask for). Nothing here sleeps, and when nothing is pending the loop
//! waits with no timeout at all, so an idle supervisor never wakes. The
//! shell owns every descriptor and reads the clock; the rules decide.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::Instant;
use crate::config::{Config, Settings};
use crate::einhorn;
use crate::env::{self, Var, Vars};
use crate::listen::{self, Listener};
use crate::log::{self, errtext, fatal, note, original, warning};
use crate::notify::{self, Channel, Limited, Notify};
use crate::output::Output;
use crate::procs;
use crate::relay::Relay;
use crate::rules::{Core, ExecReport, Host, Place, Say, Seen, Shows, Upstream};
use crate::signals::Signals;
use crate::spawn::{self, Command, Report};
use crate::status::{self, PidFile};
use crate::sys::{self, Pid, WaitStatus};
use crate::upgrade::{self, Clock, ListenerState, NotifyState, RelayState, State};
use crate::upgrade_check::{UpgradeCheck, Verdict};
use crate::users::Ids;
use crate::waiters;

/// Everything the supervisor runs with, prepared by `main`.
pub struct Setup {
    /// What the command line asked for (the rules' settings, the
    /// status file, --signal-group, the protocols).
    pub config: Config,
    pub command: Command,
    /// The workers' environment before the envdir and protocol variables.
    pub base_env: Vars,
    pub envdir: Option<PathBuf>,
    /// What the environment says of auto-restart and the kill-old delay,
    /// read once by start-up (the envdir is read by the loop).
    pub settings: Settings,
    pub listeners: Vec<Listener>,
    /// The sockets sit on 3, 4, ...: LISTEN_FDS can be offered.
    pub systemd_layout: bool,
    pub pid_file: Option<PidFile>,
    pub output: Output,
    pub signals: Signals,
    /// With --daemonize: where to tell the waiting parent how the first
    /// start went (one byte, the exit status it should use).
    pub started: Option<OwnedFd>,
    /// With --readiness=notify: the socket workers send READY=1 to.
    pub notify: Option<Notify>,
    /// The NOTIFY_SOCKET start_server itself was given (by systemd): told
    /// READY=1, RELOADING=1, STOPPING=1 and STATUS= as things happen.
    pub upstream_notify: Option<std::ffi::OsString>,
    /// systemd's watchdog (WATCHDOG_USEC, for us): its period.
    pub watchdog: Option<Duration>,
    /// The --watch paths.
    pub watcher: Option<crate::watch::Watcher>,
    /// The user workers run as.
    pub ids: Option<Ids>,
    /// How to execute ourselves again, for a live upgrade.
    pub image: Image,
}

/// Our own program: its path (where a new version gets installed) and the
/// arguments we were run with (its environment is `Setup::base_env`).
pub struct Image {
    pub exe: PathBuf,
}

impl Image {
    /// Before [`Image::find`].
    pub fn unknown() -> Image {
        Image {
            exe: PathBuf::new(),
        }
    }

    /// The path we were started by, which a live upgrade executes again:
    /// a symbolic link re-pointed at a new version then runs that version.
    /// `argv[0]` as given (made absolute), looked up in `path` (our PATH)
    /// when it has no slash; /proc/self/exe where neither names a
    /// program. Found once the first worker runs, not before: up to a
    /// file lookup per PATH directory.
    fn find(path: Option<&std::ffi::OsStr>) -> Image {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        let found = spawn::resolve(&argv0, path).map(|p| match p.is_relative() {
            true => std::env::current_dir().map_or(p.clone(), |cwd| cwd.join(&p)),
            false => p,
        });
        let exe = found
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_default();
        Image { exe }
    }

    /// Our arguments, read where the process keeps them when they are
    /// needed (a live upgrade), not copied at every start.
    fn argv() -> Vec<std::ffi::OsString> {
        std::env::args_os().collect()
    }
}

/// What a descriptor in the poll set stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Signals,
    /// A starting worker's exec report pipe (handed over by a previous
    /// program image).
    Report(Pid),
    /// The socket workers send READY=1 (or connect to with einhorn's
    /// ACK) to.
    Notify,
    /// An einhorn control connection (an index into the connections).
    Ack(usize),
    /// A worker's output, relayed (an index into the relays).
    Relay(usize),
    /// The log, waited on to take more relayed output.
    LogDrained,
    /// The new program's answer, during a live upgrade.
    UpgradeCheck,
    /// A --watch path changed.
    Watch,
}

/// The descriptors one turn of the loop waits on, each with what it is.
#[derive(Default)]
struct PollSet {
    fds: Vec<libc::pollfd>,
    sources: Vec<Source>,
}

impl PollSet {
    fn add(&mut self, fd: std::os::fd::RawFd, events: libc::c_short, source: Source) {
        self.fds.push(libc::pollfd {
            fd,
            events,
            revents: 0,
        });
        self.sources.push(source);
    }

    /// The sources with something to report, in the order they were added.
    fn ready(&self) -> Vec<Source> {
        self.sources
            .iter()
            .zip(&self.fds)
            .filter(|(_, fd)| fd.revents != 0)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// How long after a failed write of the status or state file it is tried
/// again.
const UNWRITTEN_RETRY: Duration = Duration::from_secs(1);

/// How far up the process tree a sender is looked for among the workers.
const NOTIFY_ANCESTRY: usize = 32;

/// The shell around the rules: it owns every descriptor (the signalfd,
/// exec reports, output relays, the notification socket, an upgrade
/// check), reads the clock, and carries out what the rules ask.
pub struct Shell {
    core: Core,
    effects: Effects,
    /// A live upgrade asked for, while the new program says whether it
    /// takes our state.
    upgrade_check: Option<UpgradeCheck>,
    /// Who sent the first shutdown signal: as PID 1, we wait (a little)
    /// for it to exit before we do, since our exit kills every process in
    /// the namespace, `start_server --stop` included.
    stopped_by: Option<Pid>,
}

/// A worker's exec report, before the rules hear it.
enum ExecNews {
    /// Known when the spawn returned (see `sys::fork_exec`): told at the
    /// start of the next turn, or before the worker's exit or readiness.
    Known(Report),
    /// The exec report pipe of a worker that a previous program image
    /// started and whose program was not known to run yet.
    Pipe(OwnedFd),
}

/// What the rules act through: the [`Host`] of [`Core`].
struct Effects {
    s: Setup,
    /// Exec reports not given to the rules yet.
    reports: Vec<(Pid, ExecNews)>,
    /// Workers' output being relayed (socketmaster).
    relays: Vec<Relay>,
    envdir_vars: Vars,
    /// With --workers: the envdir as read for a generation's first
    /// worker, which its others get too.
    generation_vars: Option<(u64, Vars)>,
    settings_problems: Vec<String>,
    status_written: bool,
    state_written: bool,
    /// What the status and state files should say but could not be
    /// written (a full disk, no descriptor free): written again at
    /// `unwritten_retry_at`, until it goes through or a newer write does.
    status_unwritten: Option<Vec<(u64, Pid)>>,
    state_unwritten: Option<(Vec<Shows>, u64)>,
    unwritten_retry_at: Option<Instant>,
    /// The last STATUS= told upstream, and whether telling failed once.
    upstream_status: String,
    upstream_warned: bool,
    /// Rate limits on lines about notifications: those ignored, and the
    /// workers' STATUS= texts.
    ignored: Limited,
    statuses: Limited,
    /// The upgrade signal arrived: the loop starts the check.
    upgrade_requested: bool,
    /// einhorn control connections being read.
    acks: Vec<einhorn::Conn>,
    /// When the next WATCHDOG=1 is due (at half the watchdog's period).
    watchdog_at: Option<Instant>,
}

impl Host for Effects {
    fn spawn(&mut self, place: Place) -> Result<Pid, String> {
        let over = self.worker_env(place);
        let capture = match self.s.config.rules.policy.relay_output {
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
        let env = env::Layered {
            base: &self.s.base_env,
            over: &over,
        };
        let pdeathsig = self.s.config.pdeathsig;
        let child = spawn::spawn(&self.s.command, env, &fds, self.s.ids.as_ref(), pdeathsig)
            .map_err(|e| format!("unable to fork: {}", errtext(&e)))?;
        if let Some((r, _)) = capture {
            match Relay::new(child.pid, r) {
                Ok(relay) => self.relays.push(relay),
                Err(e) => warning!("unable to relay output: {}", errtext(&e)),
            }
        }
        self.reports
            .push((child.pid, ExecNews::Known(child.report)));
        Ok(child.pid)
    }

    fn signal(&mut self, pid: Pid, sig: i32) {
        // Each worker leads a process group of its own: with
        // --signal-group, what it started gets the signal too.
        if !(self.s.config.signal_group && sys::kill_group(pid, sig).is_ok()) {
            let _ = sys::kill(pid, sig);
        }
    }

    fn look(&mut self, pid: Pid) -> Seen {
        let sockets: Vec<u64> = self
            .s
            .listeners
            .iter()
            .filter_map(|l| sys::inode(l.raw()).ok())
            .collect();
        waiters::look(pid, &sockets)
    }

    fn kill(&mut self, pid: Pid, sig: i32) {
        let _ = sys::kill(pid, sig);
    }

    fn leftovers(&mut self) -> Vec<Pid> {
        let helpers: Vec<Pid> = self.s.output.logger().into_iter().collect();
        procs::descendants(sys::getpid(), &helpers)
    }

    fn state(&mut self, workers: &[Shows], restarts_given_up: u64) {
        let Some(path) = &self.s.config.status_file else {
            return;
        };
        let path = status::state_path(path);
        let count = self.s.config.rules.workers;
        match status::write_state(&path, sys::getpid(), workers, count, restarts_given_up) {
            Ok(()) => {
                self.state_written = true;
                self.state_unwritten = None;
            }
            Err(e) => {
                unwritten("state", &path, &e, self.state_unwritten.is_some());
                self.state_unwritten = Some((workers.to_vec(), restarts_given_up));
                self.retry_unwritten_later();
            }
        }
    }

    /// Rewrites the status file.
    fn announce(&mut self, workers: &[(u64, Pid)]) {
        let Some(path) = &self.s.config.status_file else {
            return;
        };
        match status::write_status(path, workers) {
            Ok(()) => {
                self.status_written = true;
                self.status_unwritten = None;
            }
            Err(e) => {
                unwritten("status", path, &e, self.status_unwritten.is_some());
                self.status_unwritten = Some(workers.to_vec());
                self.retry_unwritten_later();
            }
        }
    }

    fn say(&mut self, kind: Say, line: String) {
        match kind {
            Say::Original => original!("{line}"),
            Say::Note => note!("{line}"),
            Say::Warning => warning!("{line}"),
            Say::Fatal => fatal!("{line}"),
        }
    }

    fn upstream(&mut self, event: Upstream) {
        let Some(address) = &self.s.upstream_notify else {
            return;
        };
        let message = match event {
            Upstream::Ready => "READY=1".to_string(),
            Upstream::Reloading => {
                let usec = Instant::now().since_start().as_micros();
                format!("RELOADING=1\nMONOTONIC_USEC={usec}")
            }
            Upstream::Stopping => "STOPPING=1".to_string(),
            Upstream::ExtendTimeout(more) => format!("EXTEND_TIMEOUT_USEC={}", more.as_micros()),
            Upstream::Status(text) => {
                if text == self.upstream_status {
                    return;
                }
                let message = format!("STATUS={text}");
                self.upstream_status = text;
                message
            }
        };
        // Never waits: a full or absent receiver loses the message.
        if let Err(e) = sys::send_notification(address, message.as_bytes())
            && !std::mem::replace(&mut self.upstream_warned, true)
        {
            warning!(
                "unable to notify {}: {}; carrying on (said once)",
                address.to_string_lossy(),
                errtext(&e)
            );
        }
    }

    fn tell_parent(&mut self, code: i32) {
        if let Some(fd) = self.s.started.take() {
            let _ = sys::write_all(fd.as_raw_fd(), &[code as u8]);
        }
    }

    fn upgrade(&mut self) {
        self.upgrade_requested = true;
    }

    fn reopen_log(&mut self) {
        self.s.output.reopen();
    }
}

/// A write of the status or state file failed: said the first time
/// (`again` for the retries, which are silent).
fn unwritten(what: &str, path: &std::path::Path, e: &std::io::Error, again: bool) {
    if !again {
        warning!(
            "unable to write {what} file {}: {}",
            path.display(),
            errtext(e)
        );
    }
}

impl Effects {
    fn retry_unwritten_later(&mut self) {
        if self.unwritten_retry_at.is_none() {
            self.unwritten_retry_at = Some(crate::clock::after(Instant::now(), UNWRITTEN_RETRY));
        }
    }

    /// The status and state files that could not be written, tried again
    /// once the retry is due.
    fn retry_unwritten(&mut self, now: Instant) {
        if self.unwritten_retry_at.is_none_or(|at| now < at) {
            return;
        }
        self.unwritten_retry_at = None;
        if let Some(workers) = self.status_unwritten.clone() {
            self.announce(&workers);
        }
        if let Some((workers, given_up)) = self.state_unwritten.clone() {
            self.state(&workers, given_up);
        }
    }

    /// Re-reads the envdir; the settings it gives.
    fn refresh(&mut self) -> Option<Settings> {
        let dir = self.s.envdir.as_ref()?;
        let (vars, mut problems) = env::read_envdir(dir);
        self.envdir_vars = vars;
        let mut merged = self.s.base_env.clone();
        env::overlay(&mut merged, &self.envdir_vars);
        let (settings, setting_problems) = Settings::from_vars(&merged);
        problems.extend(
            setting_problems
                .into_iter()
                .map(|p| format!("{p}; using the default")),
        );
        if problems != self.settings_problems {
            for p in &problems {
                warning!("envdir {}: {p}", dir.display());
            }
            self.settings_problems = problems;
        }
        Some(settings)
    }

    /// What a worker's environment sets over the base environment. The
    /// envdir is read for each worker, or with --workers once per
    /// generation, so that a generation's workers share it.
    fn worker_env(&mut self, place: Place) -> Vars {
        let count = self.s.config.rules.workers;
        let shared = matches!(&self.generation_vars, Some((g, _)) if *g == place.generation);
        if count.is_none() || !shared {
            self.refresh();
            if count.is_some() {
                self.generation_vars = Some((place.generation, self.envdir_vars.clone()));
            }
        }
        let envdir = match (&self.generation_vars, count) {
            (Some((_, vars)), Some(_)) => vars,
            _ => &self.envdir_vars,
        };
        let mut vars = Vars::new();
        env::overlay(&mut vars, envdir);
        if let Some(n) = count {
            env::set(
                &mut vars,
                "SERVER_STARTER_WORKER_INDEX",
                place.slot.to_string(),
            );
            env::set(&mut vars, "SERVER_STARTER_WORKER_COUNT", n.to_string());
            if self.s.config.protocols.einhorn {
                env::set(&mut vars, "EINHORN_CHILD_INDEX", place.index.to_string());
            }
        }
        match &self.s.notify {
            Some(n) if n.channel == Channel::Einhorn => {
                env::set(&mut vars, "EINHORN_MASTER_PID", sys::getpid().to_string());
                env::set(&mut vars, "EINHORN_SOCK_PATH", n.address.as_str());
            }
            Some(n) => env::set(&mut vars, "NOTIFY_SOCKET", n.address.as_str()),
            None => {}
        }
        env::add_protocol_vars(
            &mut vars,
            &self.s.listeners,
            self.s.config.protocols,
            self.s.systemd_layout,
            place.generation,
        );
        vars
    }

    /// WATCHDOG=1, when due: at half the period systemd gave, the only
    /// wake-up of an idle start_server under a watchdog.
    fn watchdog(&mut self, now: Instant) {
        if let (Some(at), Some(period)) = (self.watchdog_at, self.s.watchdog)
            && now >= at
        {
            if let Some(address) = &self.s.upstream_notify {
                let _ = sys::send_notification(address, b"WATCHDOG=1");
            }
            let half = period.checked_div(2).unwrap_or(period);
            self.watchdog_at = Some(crate::clock::after(now, half));
        }
    }

    /// The exec report pipes still watched.
    fn report_pipes(&self) -> impl Iterator<Item = (Pid, &OwnedFd)> {
        self.reports.iter().filter_map(|(pid, news)| match news {
            ExecNews::Pipe(fd) => Some((*pid, fd)),
            ExecNews::Known(_) => None,
        })
    }
}

impl Shell {
    pub fn new(setup: Setup) -> Shell {
        let setup_watchdog = setup.watchdog;
        let settings = setup.settings.clone();
        let rules = setup.config.rules.clone();
        let now = Instant::now();
        Shell {
            core: Core::new(rules, settings, now),
            effects: Effects {
                s: setup,
                reports: Vec::new(),
                relays: Vec::new(),
                envdir_vars: Vars::new(),
                generation_vars: None,
                settings_problems: Vec::new(),
                status_written: false,
                state_written: false,
                status_unwritten: None,
                state_unwritten: None,
                unwritten_retry_at: None,
                upstream_status: String::new(),
                upstream_warned: false,
                ignored: Limited::new("ignored notifications", now),
                statuses: Limited::new("worker STATUS= lines", now),
                upgrade_requested: false,
                acks: Vec::new(),
                watchdog_at: setup_watchdog.map(|_| now),
            },
            upgrade_check: None,
            stopped_by: None,
        }
    }

    /// Runs until shutdown; returns the exit status.
    pub fn run(mut self: Box<Self>) -> i32 {
        self.refresh();
        self.core.start(Instant::now(), &mut self.effects);
        self.run_loop()
    }

    /// Runs the loop until it is time to exit; returns the exit status.
    pub fn run_loop(mut self: Box<Self>) -> i32 {
        self.effects.s.image = Image::find(env::get(&self.effects.s.base_env, "PATH"));
        // Children that exited before the loop began are reaped first: a
        // SIGCHLD pending across a live upgrade's exec is discarded when
        // the new image resets the signal dispositions.
        self.reap();
        // Orphans of our workers' helpers come back to us, not to init: we
        // reap them, and stop them at shutdown (kept across a live
        // upgrade, and set again here all the same).
        if sys::getpid() != 1
            && let Err(e) = sys::become_subreaper()
        {
            warning!(
                "unable to become a child subreaper: {}; orphans go to init",
                errtext(&e)
            );
        }
        while self.core.exit_code().is_none() {
            self.wait_and_dispatch();
        }
        let code = self.core.exit_code().unwrap_or(1);
        self.finish(code)
    }

    /// Re-reads the envdir, and gives the rules the settings it holds.
    fn refresh(&mut self) {
        if let Some(settings) = self.effects.refresh() {
            self.core.set_settings(settings);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let check = self.upgrade_check.as_ref().map(|c| c.deadline);
        [
            self.core.next_deadline(),
            self.effects.ignored.deadline(),
            self.effects.statuses.deadline(),
            self.effects.s.output.deadline(),
            self.effects.watchdog_at,
            self.effects.unwritten_retry_at,
            check,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One turn of the loop: wait for the next event or deadline, then act
    /// on everything that is ready.
    fn wait_and_dispatch(&mut self) {
        self.tell_known_reports();
        let timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let mut set = PollSet::default();
        set.add(
            self.effects.s.signals.fd().as_raw_fd(),
            libc::POLLIN,
            Source::Signals,
        );
        for (pid, fd) in self.effects.report_pipes() {
            set.add(fd.as_raw_fd(), libc::POLLIN, Source::Report(pid));
        }
        if let Some(n) = &self.effects.s.notify {
            set.add(n.fd.as_raw_fd(), libc::POLLIN, Source::Notify);
        }
        if let Some(w) = &self.effects.s.watcher {
            set.add(w.fd().as_raw_fd(), libc::POLLIN, Source::Watch);
        }
        for (i, c) in self.effects.acks.iter().enumerate() {
            set.add(c.fd.as_raw_fd(), libc::POLLIN, Source::Ack(i));
        }
        // Workers' output is read only while the log takes it; otherwise we
        // wait for the log to drain, and the workers wait on their pipes.
        let sink_ready = sys::writable_now(log::sink_fd());
        if sink_ready {
            for (i, r) in self.effects.relays.iter().enumerate() {
                set.add(r.fd().as_raw_fd(), libc::POLLIN, Source::Relay(i));
            }
        } else if !self.effects.relays.is_empty() {
            set.add(log::sink_fd(), libc::POLLOUT, Source::LogDrained);
        }
        if let Some(fd) = self.upgrade_check.as_ref().and_then(UpgradeCheck::out_fd) {
            set.add(fd.as_raw_fd(), libc::POLLIN, Source::UpgradeCheck);
        }
        let timeout = match self.effects.relays.iter().any(Relay::has_pending) && sink_ready {
            true => Some(Duration::ZERO),
            false => timeout,
        };
        if let Err(e) = sys::poll(&mut set.fds, timeout) {
            warning!("poll failed: {}", errtext(&e));
        }
        let mut readable_relays = Vec::new();
        let mut readable_acks = Vec::new();
        for source in set.ready() {
            match source {
                Source::Report(pid) => self.on_report(pid),
                Source::Notify => self.on_notifications(),
                Source::Watch => self.on_watch(),
                Source::Ack(i) => readable_acks.push(i),
                Source::Relay(i) => readable_relays.push(i),
                Source::UpgradeCheck => {
                    if let Some(check) = &mut self.upgrade_check {
                        check.on_readable();
                    }
                }
                // Signals are drained below in any case; a drained log
                // only makes the relays readable again next turn.
                Source::Signals | Source::LogDrained => {}
            }
        }
        self.on_acks(&readable_acks);
        if sink_ready {
            for (i, r) in self.effects.relays.iter_mut().enumerate() {
                if readable_relays.contains(&i) || r.has_pending() {
                    r.pump();
                }
            }
            self.effects.relays.retain(|r| !r.done());
        }
        // Drain the signals first, then act: reap before anything else so
        // that decisions see who is still alive.
        let mut sigs = Vec::new();
        while let Some((sig, sender)) = self.effects.s.signals.next() {
            if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT) && sender > 0 {
                self.stopped_by.get_or_insert(sender);
            }
            sigs.push(sig);
        }
        if sigs.contains(&libc::SIGCHLD) {
            self.reap();
        }
        // The envdir is read again when something happened that the
        // settings it holds may matter to (a signal, an exit, a timer due),
        // not on every turn; a spawn reads it anyway.
        let due = self
            .core
            .next_deadline()
            .is_some_and(|d| d <= Instant::now());
        if !sigs.is_empty() || due {
            self.refresh();
        }
        for sig in sigs {
            self.core.on_signal(sig, Instant::now(), &mut self.effects);
        }
        let now = Instant::now();
        self.effects.ignored.on_timer(now);
        self.effects.statuses.on_timer(now);
        self.effects.s.output.on_timer(now);
        self.effects.watchdog(now);
        self.effects.retry_unwritten(now);
        self.core.on_timers(now, &mut self.effects);
        if std::mem::take(&mut self.effects.upgrade_requested) {
            self.upgrade();
        }
        self.on_upgrade_check(Instant::now());
    }

    // -------------------------------------------------------------- events

    /// A --watch path changed: the rules hear of each.
    fn on_watch(&mut self) {
        let Some(watcher) = &mut self.effects.s.watcher else {
            return;
        };
        for path in watcher.changed() {
            let path = path.display().to_string();
            self.core
                .on_change(&path, Instant::now(), &mut self.effects);
        }
    }

    /// The exec reports known since the last turn's spawns, told.
    fn tell_known_reports(&mut self) {
        let known: Vec<Pid> = (self.effects.reports.iter())
            .filter_map(|(pid, news)| matches!(news, ExecNews::Known(_)).then_some(*pid))
            .collect();
        for pid in known {
            self.on_report(pid);
        }
    }

    /// A starting worker's exec report is known, or its pipe is readable
    /// (or it exited, or said it is ready: its program certainly ran, or
    /// never will).
    fn on_report(&mut self, pid: Pid) {
        let report = match self.effects.reports.iter().find(|(p, _)| *p == pid) {
            None => return,
            Some((_, ExecNews::Known(report))) => *report,
            Some((_, ExecNews::Pipe(fd))) => spawn::read_report(fd),
        };
        let report = match report {
            Report::Pending => return,
            Report::Exec => ExecReport::Executed,
            Report::Failed { step, errno } => ExecReport::Failed {
                why: spawn::describe_failure(&self.effects.s.command, step, errno),
                status: if step == sys::STEP_EXEC && errno == libc::ENOENT {
                    127
                } else {
                    126
                },
            },
        };
        self.effects.reports.retain(|(p, _)| *p != pid);
        self.core.on_exec(pid, report, &mut self.effects);
    }

    /// Reads the waiting notifications (a batch at most), acts on those from
    /// workers, and reports the others in one line; or takes the waiting
    /// einhorn connections.
    // Not inlined: its buffer would otherwise sit in every turn's frame.
    #[inline(never)]
    fn on_notifications(&mut self) {
        if self
            .effects
            .s
            .notify
            .as_ref()
            .is_some_and(|n| n.channel == Channel::Einhorn)
        {
            return self.on_connections();
        }
        let mut buf = [0u8; notify::MESSAGE_MAX];
        for _ in 0..notify::BATCH {
            let Some(n) = &self.effects.s.notify else {
                return;
            };
            let d = match sys::recv_notification(n.fd.as_fd(), &mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    warning!("unable to read notifications: {}", errtext(&e));
                    break;
                }
            };
            let data = buf.get(..d.len).unwrap_or_default();
            if let Err(why) = self.on_notification(&d, data) {
                let line = format_args!("ignoring a notification: {why}");
                self.effects.ignored.report(line, true, Instant::now());
            }
        }
    }

    /// One notification: acted on, or why it was ignored.
    fn on_notification(&mut self, d: &sys::Datagram, data: &[u8]) -> Result<(), String> {
        let sender = d.pid.ok_or("it carries no credentials")?;
        if let Some(size) = d.truncated {
            return Err(format!(
                "{size} bytes from pid {sender} (at most {})",
                notify::MESSAGE_MAX
            ));
        }
        let pid = self
            .worker_for(sender)
            .ok_or_else(|| format!("pid {sender} is not a worker or a worker's descendant"))?;
        let pairs = notify::parse(data).map_err(|why| format!("{why} from worker {pid}"))?;
        for (key, value) in pairs {
            match key {
                "READY" if value == "1" => {
                    // Its exec report first (the order the rules ask for).
                    self.on_report(pid);
                    self.core.on_ready(pid, &mut self.effects);
                }
                "STATUS" => {
                    let line = format_args!("worker {pid} status: {value}");
                    self.effects.statuses.report(line, false, Instant::now());
                }
                // Everything else (MAINPID, RELOADING, WATCHDOG, ...) is
                // not ours to act on.
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes the waiting einhorn connections (a batch at most); beyond
    /// CONNS_MAX open, they are closed unread.
    fn on_connections(&mut self) {
        for _ in 0..notify::BATCH {
            let Some(n) = &self.effects.s.notify else {
                return;
            };
            match sys::accept_with_peer(n.fd.as_fd()) {
                Ok(Some((fd, peer))) if self.effects.acks.len() < einhorn::CONNS_MAX => {
                    self.effects.acks.push(einhorn::Conn::new(fd, peer))
                }
                Ok(Some((_, peer))) => {
                    let line = format_args!(
                        "ignoring an einhorn connection from pid {}: {} already open",
                        peer.unwrap_or(0),
                        einhorn::CONNS_MAX
                    );
                    self.effects.ignored.report(line, true, Instant::now());
                }
                Ok(None) => break,
                Err(e) => {
                    warning!("unable to accept an einhorn connection: {}", errtext(&e));
                    break;
                }
            }
        }
    }

    /// Reads the einhorn connections that are readable, acts on their
    /// lines, and closes those that are over: at end of file, after an
    /// ACK (einhorn replies nothing to one), or on a bad line.
    fn on_acks(&mut self, readable: &[usize]) {
        let mut over = Vec::new();
        for &i in readable {
            let Some(conn) = self.effects.acks.get_mut(i) else {
                continue;
            };
            let peer = conn.peer;
            let (lines, end) = conn.read();
            // Its complete lines first, up to an ACK or a bad line.
            let mut done = false;
            for line in lines {
                done = match self.on_ack_line(peer, &line) {
                    Ok(acked) => acked,
                    Err(why) => {
                        let line = format_args!("ignoring an einhorn message: {why}");
                        self.effects.ignored.report(line, true, Instant::now());
                        true
                    }
                };
                if done {
                    break;
                }
            }
            if let einhorn::End::Dropped(why) = &end
                && !done
            {
                let line = format_args!("ignoring an einhorn connection: {why}");
                self.effects.ignored.report(line, true, Instant::now());
            }
            if done || end != einhorn::End::Open {
                over.push(i);
            }
        }
        // From the last, so that the indices left stay right.
        over.sort_unstable();
        over.dedup();
        for i in over.into_iter().rev() {
            if i < self.effects.acks.len() {
                self.effects.acks.swap_remove(i);
            }
        }
    }

    /// One line from an einhorn connection: whether it was an ACK that
    /// counts, or why it is refused.
    fn on_ack_line(&mut self, peer: Option<Pid>, line: &[u8]) -> Result<bool, String> {
        let pid = match einhorn::parse(line)? {
            einhorn::Message::Ack(pid) => pid,
            einhorn::Message::Other => return Ok(false),
        };
        let sender = peer.ok_or("a connection without credentials")?;
        if !self.core.is_worker(pid) {
            return Err(format!("worker:ack for pid {pid}, which is not a worker"));
        }
        if self.worker_for(sender) != Some(pid) {
            return Err(format!(
                "worker:ack for worker {pid} from pid {sender}, which is not it or its descendant"
            ));
        }
        // Its exec report first (the order the rules ask for).
        self.on_report(pid);
        self.core.on_ready(pid, &mut self.effects);
        Ok(true)
    }

    /// The worker `sender` is, or descends from.
    fn worker_for(&self, sender: Pid) -> Option<Pid> {
        let mut pid = sender;
        for _ in 0..NOTIFY_ANCESTRY {
            if self.core.is_worker(pid) {
                return Some(pid);
            }
            pid = procs::parent_of(pid).filter(|&p| p > 1)?;
        }
        None
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
        // An exec failure is told before the exit it causes.
        self.on_report(pid);
        self.effects.reports.retain(|(p, _)| *p != pid);
        if !self
            .core
            .on_exit(pid, status, Instant::now(), &mut self.effects)
        {
            // Not ours: an orphan that landed on us, or a log command.
            self.effects.s.output.reaped(pid, Instant::now());
            self.core.on_other_exit(&mut self.effects);
        }
    }

    // ------------------------------------------------------------- the end

    /// Reaps what is left, removes our files, and returns `code`.
    fn finish(mut self: Box<Self>, code: i32) -> i32 {
        match code {
            0 => original!("exiting"),
            crate::rules::EXIT_KILLED if self.core.rules().policy.respawn => {
                note!("exiting with status {code}: workers had to be killed")
            }
            crate::rules::EXIT_GAVE_UP if self.core.phase().gave_up => {
                note!("exiting with status {code}: gave up starting workers")
            }
            _ => {}
        }
        for pid in self.core.unreaped() {
            let _ = sys::waitpid(pid);
        }
        let effects = &mut self.effects;
        if let Some(path) = &effects.s.config.status_file {
            if effects.status_written {
                status::remove_regular(path);
            }
            if effects.status_written || effects.state_written {
                status::remove_regular(&status::state_path(path));
            }
        }
        if let Some(pid_file) = effects.s.pid_file.take() {
            pid_file.remove();
        }
        listen::remove_socket_files(&effects.s.listeners);
        if let Some(n) = &effects.s.notify {
            n.remove();
        }
        // What the workers wrote last, as far as the log takes it now.
        for r in &mut effects.relays {
            for _ in 0..64 {
                if r.done() || !r.pump() {
                    break;
                }
            }
        }
        effects.tell_parent(code);
        effects.s.output.close(&effects.s.signals);
        if sys::getpid() == 1
            && let Some(pid) = self.stopped_by
        {
            await_exit(pid, STOPPER_GRACE);
        }
        code
    }
}

/// How long PID 1 waits for whoever stopped it to exit first.
const STOPPER_GRACE: Duration = Duration::from_secs(2);

/// Waits until process `pid` has exited, for `limit` at most. A client
/// (`start_server --stop`) sees the pid file go and exits: as PID 1 we
/// leave after it, since our exit kills every process in the namespace.
fn await_exit(pid: Pid, limit: Duration) {
    if pid == sys::getpid() {
        return;
    }
    let Ok(fd) = sys::pidfd_open(pid) else {
        return;
    };
    let deadline = crate::clock::after(Instant::now(), limit);
    let mut fds = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    while fds[0].revents == 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sys::poll(&mut fds, Some(left)).is_err() {
            return;
        }
    }
}

impl Shell {
    /// Everything a new program image needs to carry on where we are.
    fn snapshot(&self) -> State {
        let (core, io) = (&self.core, &self.effects);
        State {
            program: Some(env!("CARGO_PKG_VERSION").to_string()),
            phase: core.phase().clone(),
            status_written: io.status_written,
            listeners: io
                .s
                .listeners
                .iter()
                .map(|l| ListenerState {
                    fd: l.raw(),
                    name: l.name.clone(),
                    fd_name: l.fd_name.clone(),
                    unix_path: l.unix_path.as_ref().map(|f| f.path.clone()),
                    unix_id: l.unix_path.as_ref().and_then(|f| f.id),
                })
                .collect(),
            pid_file_fd: io.s.pid_file.as_ref().map(PidFile::raw_fd),
            notify: io.s.notify.as_ref().map(|n| NotifyState {
                fd: n.fd.as_raw_fd(),
                address: n.address.clone(),
                id: n.file.as_ref().and_then(|f| f.id),
            }),
            reports: io.report_pipes().map(|(p, f)| (p, f.as_raw_fd())).collect(),
            relays: io
                .relays
                .iter()
                .map(|r| {
                    let (pid, fd, pending) = r.parts();
                    RelayState {
                        pid,
                        fd,
                        pending: pending.to_vec(),
                    }
                })
                .collect(),
            logger: io.s.output.logger(),
        }
    }

    /// A supervisor carrying on from `state`, handed over by the previous
    /// program image; the descriptors it names are adopted.
    pub fn restore(setup: Setup, state: State) -> Result<Box<Shell>, String> {
        let from = state.program.clone().unwrap_or_else(|| "unknown".into());
        let mut sup = Box::new(Shell::new(setup));
        let io = &mut sup.effects;
        io.status_written = state.status_written;
        let adopt = |fd: std::os::fd::RawFd, what: &str| {
            let owned = sys::take_inherited(fd)
                .map_err(|_| format!("{what} descriptor {fd} is not open"))?;
            sys::set_cloexec(fd, true)
                .map_err(|e| format!("{what} descriptor {fd}: {}", errtext(&e)))?;
            Ok::<_, String>(owned)
        };
        for (pid, fd) in state.reports {
            io.reports
                .push((pid, ExecNews::Pipe(adopt(fd, "exec report")?)));
        }
        for r in state.relays {
            let fd = adopt(r.fd, "output relay")?;
            io.relays.push(
                Relay::restore(r.pid, fd, r.pending)
                    .map_err(|e| format!("output relay: {}", errtext(&e)))?,
            );
        }
        let (workers, generation) = (state.phase.workers.len(), state.phase.generation);
        sup.core.carry_on(state.phase);
        note!(
            "upgraded in place (pid {}) from version {from} to {}: {} worker(s) adopted, generation {}",
            sys::getpid(),
            env!("CARGO_PKG_VERSION"),
            workers,
            generation
        );
        Ok(sup)
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
        self.tell_known_reports();
        let exe = &self.effects.s.image.exe;
        note!("upgrading in place: executing {}", exe.display());
        let state = self.snapshot().encode(&Clock::read());
        let (argv, env) = (Image::argv(), &self.effects.s.base_env);
        match UpgradeCheck::start(exe, &argv, env, &state, Instant::now()) {
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
            Verdict::Accepted if !self.core.may_upgrade() => {}
            Verdict::Accepted => self.exec_self(),
        }
    }

    /// Executes our program with the state as it is now; returns only if
    /// that fails.
    fn exec_self(&mut self) {
        // ACKs already written are read first: the connections end here.
        let all: Vec<usize> = (0..self.effects.acks.len()).collect();
        self.on_acks(&all);
        self.tell_known_reports();
        let exe = self.effects.s.image.exe.clone();
        let state = self.snapshot().encode(&Clock::read());
        let io = &mut self.effects;
        // The daemonizing parent, if still waiting, gets its answer now.
        io.tell_parent(0);
        let carried: Vec<std::os::fd::RawFd> =
            io.s.pid_file
                .as_ref()
                .map(PidFile::raw_fd)
                .into_iter()
                .chain(io.s.notify.as_ref().map(|n| n.fd.as_raw_fd()))
                .chain(io.report_pipes().map(|(_, f)| f.as_raw_fd()))
                .chain(io.relays.iter().map(|r| r.fd().as_raw_fd()))
                .collect();
        for &fd in &carried {
            let _ = sys::set_cloexec(fd, false);
        }
        // What the service manager gave us, consumed at start-up, goes to
        // the next image: it is the same process.
        let mut over = vec![Var::new(upgrade::STATE_VAR, state)];
        if let Some(address) = &io.s.upstream_notify {
            over.push(Var::new("NOTIFY_SOCKET", address));
        }
        if let Some(period) = io.s.watchdog {
            over.push(Var::new("WATCHDOG_USEC", period.as_micros().to_string()));
            over.push(Var::new("WATCHDOG_PID", sys::getpid().to_string()));
        }
        let env = env::Layered {
            base: &io.s.base_env,
            over: &over,
        };
        let err = match exec_args(&exe, &Image::argv(), env) {
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
    env: env::Layered,
) -> std::io::Result<(std::ffi::CString, sys::CStrArray, sys::CStrArray)> {
    let path = sys::cstring(exe.as_os_str())?;
    let argv = argv
        .iter()
        .map(|a| sys::cstring(a))
        .collect::<std::io::Result<Vec<_>>>()?;
    let (envp, _) = spawn::envp(env);
    Ok((path, sys::CStrArray::new(&argv), envp))
}
