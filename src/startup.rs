//! Start-up, in two halves. `check` reads and validates the command line
//! and the environment and acquires nothing, so that every refusal leaves
//! nothing behind. `acquire` then takes, in order, the output, the pid
//! file, the sockets, the signals, the daemon's detachment and the
//! notification socket; what it holds (the pid file, the unix socket
//! files) is released by a guard if a later step fails, and handed to the
//! shell when all went well. A live upgrade `resume`s instead: it takes
//! over what the previous program image held.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::config::{self, Config};
use crate::env::{self, Vars};
use crate::listen::{self, Listener};
use crate::log::{errtext, original, warning};
use crate::notify::{Channel, Notify};
use crate::output::Output;
use crate::shell::{Image, Setup, Shell};
use crate::status::{LockError, PidFile};
use crate::users::{self, Ids};
use crate::watch::Watcher;
use crate::{procs, signals, spawn, sys, upgrade};

/// What `check` found: everything start-up needs, nothing yet acquired.
pub struct Plan {
    cfg: Config,
    ids: Option<Ids>,
    /// The workers' environment before the envdir and protocol variables.
    base_env: Vars,
    envdir: Option<PathBuf>,
    /// What the environment says of auto-restart and the kill-old delay.
    settings: config::Settings,
    command: spawn::Command,
    /// Sockets handed to us (LISTEN_FDS).
    inherited: Vec<listen::Inherited>,
    /// The variables of our environment that speak to us.
    handed: Vars,
}

/// How start-up ended, when it did not fail.
pub enum Started {
    /// Supervising.
    Serving(Box<Shell>),
    /// The process started from the shell, once the daemon is off: exit
    /// with this status.
    Detached(i32),
}

/// Checks the command line and the environment; acquires nothing.
#[inline(never)]
pub fn check(mut cfg: Config, env: env::Environment) -> Result<Plan, String> {
    let policy = cfg.rules.policy;
    if policy.resolve_command {
        let program = cfg
            .command
            .first_mut()
            .ok_or("server program not specified")?;
        let path = spawn::resolve(program, env::get(&env.passed, "PATH")).ok_or_else(|| {
            format!(
                "{}command '{}' not found in PATH",
                policy.flag_prefix,
                program.to_string_lossy()
            )
        })?;
        *program = path.into_os_string();
    }
    let ids = match &cfg.user {
        None => None,
        Some(_) if sys::geteuid() != 0 => {
            return Err(format!(
                "{}user needs root (running as uid {})",
                policy.flag_prefix,
                sys::geteuid()
            ));
        }
        Some(login) => Some(users::lookup(login)?),
    };
    if let Some(dir) = &cfg.dir
        && !dir.is_dir()
    {
        return Err(format!(
            "invalid --dir value '{}': not a directory",
            dir.display()
        ));
    }
    // What was handed to us (LISTEN_FDS, NOTIFY_SOCKET, ...) is consumed
    // here; the workers get their own.
    let handed = |name| env.handed(name).and_then(OsStr::to_str);
    let inherited = listen::inherited(
        handed("LISTEN_FDS"),
        handed("LISTEN_PID"),
        handed("LISTEN_FDNAMES"),
    );
    let base_env = base_env(&cfg, env.passed);
    let (settings, problems) = config::Settings::from_vars(&base_env);
    if policy.env_settings
        && let Some(problem) = problems.into_iter().next()
    {
        return Err(problem);
    }
    if let Some(path) = &cfg.status_file
        && let Err(e) = crate::status::check_writable(path)
    {
        return Err(format!(
            "unable to write status file {}: {}",
            path.display(),
            errtext(&e)
        ));
    }
    let envdir = env::get(&base_env, "ENVDIR")
        .filter(|_| policy.env_settings)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    if let Some(dir) = &envdir
        && !dir.is_dir()
    {
        warning!(
            "envdir {} is not a directory (yet): no variables from it",
            dir.display()
        );
    }
    let command = spawn::Command::new(&cfg.command, cfg.dir.clone())
        .map_err(|_| "invalid server command: an argument holds a NUL byte".to_string())?;
    Ok(Plan {
        cfg,
        ids,
        base_env,
        envdir,
        settings,
        command,
        inherited,
        handed: env.handed,
    })
}

/// Our environment as the workers' starts: what we pass on, without the
/// variables each worker gets afresh, with the settings given as options
/// (exported, as in the original).
fn base_env(cfg: &Config, mut vars: Vars) -> Vars {
    vars.retain(|v| {
        let k = v.name();
        k != "SERVER_STARTER_PORT" && k != "SERVER_STARTER_GENERATION"
    });
    if let Some(dir) = &cfg.envdir {
        env::set(&mut vars, "ENVDIR", dir.as_os_str());
    }
    for (name, value) in &cfg.settings {
        env::set(&mut vars, name, value);
    }
    vars
}

/// The pid file and the unix socket files start-up made: removed when
/// dropped, unless handed over.
struct Held {
    pid_file: Option<PidFile>,
    listeners: Vec<Listener>,
}

impl Held {
    /// What it holds, no longer to be removed by it.
    fn hand_over(mut self) -> (Option<PidFile>, Vec<Listener>) {
        (self.pid_file.take(), std::mem::take(&mut self.listeners))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = self.pid_file.take() {
            p.remove();
        }
        listen::remove_socket_files(&self.listeners);
    }
}

/// Acquires what the supervisor runs with, in order, and starts it.
pub fn acquire(mut plan: Plan, blocked: &sys::SigSet) -> Result<Started, String> {
    let inherited = std::mem::take(&mut plan.inherited);
    let cfg = &plan.cfg;
    // Whatever our own parent leaked to us is closed: we neither use it
    // nor pass it on. Nothing else is open yet.
    let keep: Vec<RawFd> = inherited
        .iter()
        .map(listen::Inherited::raw)
        .chain(cfg.open_fds.iter().copied())
        .collect();
    sys::close_inherited(&keep);
    if cfg.syslog {
        crate::log::use_syslog();
    }
    if cfg.rules.policy.start_line {
        original!("start_server (pid:{}) starting now...", sys::getpid());
    }
    let specs = cfg
        .ports
        .len()
        .saturating_add(cfg.paths.len())
        .saturating_add(cfg.open_fds.len());
    let count = if specs == 0 { inherited.len() } else { specs };
    let layout = listen::Layout::plan(&cfg.ports, count);
    let mut output = Output::open(cfg.log_file.clone(), &layout)?;
    // The pid file comes before binding: a second start_server must not
    // touch the first one's unix socket files.
    let mut held = Held {
        pid_file: lock_pid_file(cfg, &layout)?,
        listeners: Vec::new(),
    };
    let sockets = listen::Sockets {
        ports: &cfg.ports,
        paths: &cfg.paths,
        open_fds: &cfg.open_fds,
        backlog: cfg.backlog.unwrap_or(listen::DEFAULT_BACKLOG),
        fd_names: &cfg.fd_names,
    };
    held.listeners = listen::open_all(&sockets, &layout, inherited)?;
    let signals = signals::Signals::new(blocked)
        .map_err(|e| format!("unable to create signalfd: {}", errtext(&e)))?;
    let watcher = watcher(cfg)?;
    let started = match cfg.daemonize {
        false => None,
        true => match daemonize(&held.listeners)
            .map_err(|e| format!("unable to daemonize: {}", errtext(&e)))?
        {
            Daemon::Parent(code) => {
                // The daemon goes on with the files: ours to leave alone.
                drop(held.hand_over());
                return Ok(Started::Detached(code));
            }
            Daemon::Child(fd) => Some(fd),
        },
    };
    output.redirect()?;
    if let Some(p) = &mut held.pid_file {
        p.write(sys::getpid())
            .map_err(|e| format!("unable to write pid file: {}", errtext(&e)))?;
    }
    // Made by the process that will serve (after daemonizing), and last:
    // nothing can fail after it but the supervisor, which removes it.
    let notify = match cfg.rules.readiness {
        config::Readiness::Interval | config::Readiness::Accept => None,
        config::Readiness::Notify => Some(
            Notify::create(Channel::Notify, plan.ids.as_ref()).map_err(|e| {
                format!("unable to create the notification socket: {}", errtext(&e))
            })?,
        ),
        config::Readiness::Einhorn => Some(
            Notify::create(Channel::Einhorn, plan.ids.as_ref()).map_err(|e| {
                format!(
                    "unable to create the einhorn control socket: {}",
                    errtext(&e)
                )
            })?,
        ),
    };
    let (pid_file, listeners) = held.hand_over();
    let resources = Resources {
        systemd_layout: layout.systemd,
        listeners,
        pid_file,
        output,
        signals,
        started,
        notify,
        watcher,
    };
    Ok(Started::Serving(Box::new(Shell::new(
        plan.setup(resources),
    ))))
}

/// The pid file, locked (and cleared of what would clash with the
/// sockets' descriptors), where one is asked for.
fn lock_pid_file(cfg: &Config, layout: &listen::Layout) -> Result<Option<PidFile>, String> {
    let Some(path) = &cfg.pid_file else {
        return Ok(None);
    };
    match PidFile::lock(path).map(|p| p.keep_clear(layout)) {
        Ok(Ok(p)) => Ok(Some(p)),
        Ok(Err(e)) | Err(LockError::Io(e)) => Err(format!(
            "unable to lock pid file {}: {}",
            path.display(),
            errtext(&e)
        )),
        Err(LockError::Held(pid)) => {
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            Err(format!(
                "pid file {} is locked: another start_server{who} is running",
                path.display()
            ))
        }
    }
}

/// What start-up (or a resumed upgrade) gives the supervisor to work with.
struct Resources {
    listeners: Vec<Listener>,
    systemd_layout: bool,
    pid_file: Option<PidFile>,
    output: Output,
    signals: signals::Signals,
    started: Option<std::os::fd::OwnedFd>,
    notify: Option<Notify>,
    watcher: Option<Watcher>,
}

impl Plan {
    fn setup(self, r: Resources) -> Setup {
        Setup {
            config: self.cfg,
            command: self.command,
            base_env: self.base_env,
            envdir: self.envdir,
            settings: self.settings,
            listeners: r.listeners,
            systemd_layout: r.systemd_layout,
            pid_file: r.pid_file,
            output: r.output,
            signals: r.signals,
            started: r.started,
            notify: r.notify,
            watcher: r.watcher,
            upstream_notify: env::get(&self.handed, "NOTIFY_SOCKET").map(OsStr::to_os_string),
            watchdog: watchdog(&self.handed),
            ids: self.ids,
            image: Image::unknown(),
        }
    }
}

/// Carries on from the state a previous program image handed over: it
/// kept open only what it hands over, which is adopted; nothing else may
/// reach the workers.
#[inline(never)]
pub fn resume(plan: Plan, text: &str, blocked: &sys::SigSet) -> Result<Box<Shell>, String> {
    sys::cloexec_inherited();
    let (resources, state) = adopt(&plan.cfg, text, blocked).map_err(|msg| {
        format!(
            "refusing the handed-over state in {}: {msg}",
            upgrade::STATE_VAR
        )
    })?;
    Shell::restore(plan.setup(resources), state)
        .map_err(|msg| format!("refusing the handed-over state: {msg}"))
}

/// The --watch paths, watched (after the sockets are in place: its
/// descriptor takes none of their numbers).
fn watcher(cfg: &Config) -> Result<Option<Watcher>, String> {
    match cfg.watch.is_empty() {
        true => Ok(None),
        false => Watcher::new(&cfg.watch).map(Some),
    }
}

/// systemd's watchdog period (WATCHDOG_USEC), when it is meant for us
/// (WATCHDOG_PID ours, or absent) and there is a NOTIFY_SOCKET to ping.
fn watchdog(handed: &Vars) -> Option<std::time::Duration> {
    // A value that is not UTF-8 counts as absent (as std::env::var has
    // it).
    let text = |name| env::get(handed, name).and_then(OsStr::to_str);
    env::get(handed, "NOTIFY_SOCKET")?;
    let usec: u64 = text("WATCHDOG_USEC")?.parse().ok()?;
    let ours = match text("WATCHDOG_PID") {
        Some(pid) => pid.parse() == Ok(sys::getpid()),
        None => true,
    };
    (ours && usec > 0).then(|| std::time::Duration::from_micros(usec))
}

/// The descriptors a previous program image handed over with its
/// state, taken over: nothing is bound, opened or written anew.
fn adopt(
    cfg: &Config,
    text: &str,
    blocked: &sys::SigSet,
) -> Result<(Resources, upgrade::State), String> {
    let state = accept_state(text, sys::getpid(), cfg.rules.slots())?;
    for (what, fd, kind) in state.descriptors() {
        let (want, kind) = kind.mode();
        if sys::file_type(fd).ok() != Some(want) {
            return Err(format!("{what} descriptor {fd} is not an open {kind}"));
        }
    }
    let mut listeners = Vec::new();
    for l in &state.listeners {
        let (fd, _) = sys::take_inherited_socket(l.fd)
            .map_err(|_| format!("listener descriptor {} is not an open socket", l.fd))?;
        sys::set_cloexec(l.fd, false).map_err(|e| errtext(&e))?;
        listeners.push(Listener {
            name: l.name.clone(),
            fd_name: l.fd_name.clone(),
            fd,
            unix_path: l.unix_path.as_ref().map(|path| listen::SocketFile {
                path: path.clone(),
                id: l.unix_id,
            }),
        });
    }
    let systemd_layout = listeners
        .iter()
        .enumerate()
        .all(|(i, l)| l.raw() == listen::nth_fd(i));
    let pid_file = match (&cfg.pid_file, state.pid_file_fd) {
        (Some(path), Some(fd)) => {
            let owned = sys::take_inherited(fd)
                .map_err(|_| format!("pid file descriptor {fd} is not open"))?;
            Some(PidFile::adopt(path, owned))
        }
        (None, None) => None,
        _ => return Err("the pid file does not match the command line".into()),
    };
    let notify = match (cfg.rules.readiness, &state.notify) {
        (r @ (config::Readiness::Notify | config::Readiness::Einhorn), Some(n)) => Some(Notify {
            channel: match r {
                config::Readiness::Einhorn => Channel::Einhorn,
                _ => Channel::Notify,
            },
            fd: sys::take_inherited(n.fd)
                .map_err(|_| format!("notify descriptor {} is not open", n.fd))?,
            address: n.address.clone(),
            file: Notify::file_of(&n.address, n.id),
        }),
        (config::Readiness::Interval | config::Readiness::Accept, None) => None,
        _ => return Err("the readiness socket does not match the command line".into()),
    };
    let signals = signals::Signals::new(blocked)
        .map_err(|e| format!("unable to create signalfd: {}", errtext(&e)))?;
    let resources = Resources {
        listeners,
        systemd_layout,
        pid_file,
        output: Output::adopted(cfg.log_file.clone(), state.logger),
        signals,
        started: None,
        notify,
        watcher: watcher(cfg)?,
    };
    Ok((resources, state))
}

/// A handed-over state we can take: readable, consistent, and naming as
/// workers (and log command) only children of `parent`, the start_server
/// that wrote it, each in one of our `slots` (--workers). Nothing in it is
/// signalled before this holds.
pub fn accept_state(text: &str, parent: sys::Pid, slots: u32) -> Result<upgrade::State, String> {
    let state = upgrade::State::decode(text, &upgrade::Clock::read())?;
    state.validate()?;
    if let Some(w) = state.phase.workers.iter().find(|w| w.slot >= slots) {
        return Err(format!(
            "worker {} is in slot {}, beyond --workers={slots}",
            w.pid, w.slot
        ));
    }
    let children = state
        .phase
        .workers
        .iter()
        .map(|w| ("worker", w.pid))
        .chain(state.logger.map(|p| ("log command", p)));
    for (what, pid) in children {
        if procs::parent_of(pid) != Some(parent) {
            return Err(format!(
                "{what} pid {pid} is not a child of start_server (pid {parent})"
            ));
        }
    }
    Ok(state)
}

/// What daemonizing made of this process.
enum Daemon {
    /// The process started from the shell: exit with this status.
    Parent(i32),
    /// The daemon; the pipe on which to tell the parent how the first
    /// start went.
    Child(std::os::fd::OwnedFd),
}

/// fork, setsid, fork. The original process waits until the daemon has
/// executed its first worker (or failed to), and exits with the daemon's
/// verdict, so `start_server --daemonize` still fails visibly.
fn daemonize(listeners: &[listen::Listener]) -> std::io::Result<Daemon> {
    use std::os::fd::{AsFd, AsRawFd};
    let (r, w) = sys::pipe()?;
    if let Some(child) = sys::fork()? {
        drop(w);
        let mut byte = [0u8; 1];
        let code = match sys::read(r.as_raw_fd(), &mut byte) {
            Ok(1) => i32::from(byte[0]),
            _ => crate::EXIT_FAILURE,
        };
        let _ = sys::waitpid(child);
        return Ok(Daemon::Parent(code));
    }
    drop(r);
    sys::setsid()?;
    if sys::fork()?.is_some() {
        std::process::exit(0);
    }
    // stdin is /dev/null, unless a socket was placed there (`--port=80=0`).
    if !listeners.iter().any(|l| l.raw() == 0) {
        let null = File::open("/dev/null")?;
        sys::dup2_stdio(null.as_fd(), 0)?;
    }
    Ok(Daemon::Child(w))
}
