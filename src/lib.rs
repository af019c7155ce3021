//! # start_server
//!
//! A superdaemon for hot-deploying server programs, and a drop-in for
//! Perl Server::Starter's `start_server`: it binds the listening sockets,
//! runs the server with them inherited, and on SIGHUP starts a new
//! generation and gracefully stops the old one once the new one is up,
//! without ever closing the sockets.
//!
//! The binary is the product; this library exposes the server side of the
//! protocol in [`worker`]: how a Rust server takes the sockets it is given.

// A PID 1 that panics takes its container down: no panic may be reachable
// in the supervisor. Outside tests, the constructs that can panic are
// refused: unwrap, expect, explicit panics, indexing and slicing, and
// arithmetic that can overflow (Instant and Duration arithmetic panics
// even in release builds). The few places that can be shown safe say why
// where they allow it.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod cli;
mod client;
mod clock;
mod config;
mod env;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod listen;
mod log;
mod notify;
mod output;
mod procs;
mod relay;
mod rules;
mod shell;
mod sig;
mod signals;
mod spawn;
mod status;
mod sys;
mod upgrade;
mod upgrade_check;
mod users;
mod wait;
pub mod worker;

use std::fs::File;
use std::os::fd::{IntoRawFd, RawFd};

use cli::Mode;
use config::Config;
use log::errtext;
use log::{fatal, original, warning};
use notify::Notify;
use output::Output;
use shell::{Setup, Shell};
use status::{LockError, PidFile};

/// Exit status for bad usage and failures before the first worker runs.
const EXIT_FAILURE: i32 = 1;

/// The program: returns the exit status.
#[doc(hidden)]
pub fn main() -> i32 {
    // From here on every catchable signal is an event for the loop: none
    // can kill us before we are ready for it.
    let blocked = match signals::block_all() {
        Ok(set) => set,
        Err(e) => {
            fatal!("unable to block signals: {}", errtext(&e));
            return EXIT_FAILURE;
        }
    };
    ensure_stdio();
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let socketmaster = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "socketmaster");
    if socketmaster {
        log::set_prog("socketmaster");
    }
    let parsed = match socketmaster {
        true => cli::parse_socketmaster(args),
        false => cli::parse(args),
    };
    let mode = match parsed {
        Ok(mode) => mode,
        Err(msg) => {
            fatal!("{msg}");
            return EXIT_FAILURE;
        }
    };
    let client = |result: Result<(), String>| match result {
        Ok(()) => 0,
        Err(msg) => {
            fatal!("{msg}");
            EXIT_FAILURE
        }
    };
    match mode {
        Mode::Help if socketmaster => {
            // As Go's flag package does: usage on stderr, success.
            let _ = sys::write_all(2, cli::SOCKETMASTER_USAGE.as_bytes());
            0
        }
        Mode::Help => {
            let _ = sys::write_all(1, cli::usage().as_bytes());
            0
        }
        Mode::Version => {
            let _ = sys::write_all(1, format!("{}\n", env!("CARGO_PKG_VERSION")).as_bytes());
            0
        }
        Mode::Restart {
            pid_file,
            status_file,
            timeout,
        } => {
            let _ = signals::unblock_all();
            client(client::restart(&pid_file, &status_file, timeout))
        }
        Mode::Stop { pid_file, timeout } => {
            let _ = signals::unblock_all();
            client(client::stop(&pid_file, timeout))
        }
        Mode::Status {
            pid_file,
            status_file,
        } => match client::status(&pid_file, &status_file) {
            Ok((text, code)) => {
                let _ = sys::write_all(1, text.as_bytes());
                code
            }
            Err(msg) => {
                fatal!("{msg}");
                EXIT_FAILURE
            }
        },
        Mode::Run(_) if std::env::var_os(upgrade::CHECK_VAR).is_some() => {
            // Asked by a running start_server whether we take its state.
            let text = std::env::var(upgrade::STATE_VAR).unwrap_or_default();
            // Our parent is the start_server asking: its workers are ours
            // to be.
            match accept_state(&text, sys::getppid()) {
                Ok(_) => {
                    let _ = sys::write_all(1, format!("{}\n", upgrade::CHECK_OK).as_bytes());
                    0
                }
                Err(why) => {
                    let _ = sys::write_all(1, format!("{why}\n").as_bytes());
                    EXIT_FAILURE
                }
            }
        }
        Mode::Run(cfg) => run(*cfg, blocked, &argv0),
    }
}

/// The path we were started by, which a live upgrade executes again: a
/// symbolic link re-pointed at a new version then runs that version.
/// `argv[0]` as given (made absolute), looked up in PATH when it has no
/// slash; /proc/self/exe where neither names a program.
fn own_path(argv0: &std::ffi::OsStr) -> std::path::PathBuf {
    let found = spawn::resolve(argv0).map(|p| match std::env::current_dir() {
        Ok(cwd) if p.is_relative() => cwd.join(p),
        _ => p,
    });
    found
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_default()
}

/// Makes sure descriptors 0-2 are open, so that no socket or file of ours
/// lands on them by accident.
fn ensure_stdio() {
    for fd in 0..3 {
        if !sys::is_open(fd)
            && let Ok(null) = File::options().read(true).write(true).open("/dev/null")
        {
            // The lowest free number is `fd` itself: keep it open for good.
            let _ = null.into_raw_fd();
        }
    }
}

/// Start-up, as a script: check, bind, write files, daemonize, supervise.
fn run(mut cfg: Config, blocked: sys::SigSet, argv0: &std::ffi::OsStr) -> i32 {
    let fail = |msg: String| {
        fatal!("{msg}");
        EXIT_FAILURE
    };
    let socketmaster = cfg.personality == config::Personality::Socketmaster;
    if socketmaster {
        // socketmaster resolves its command once, at start-up.
        let Some(program) = cfg.command.first_mut() else {
            return fail("server program not specified".into());
        };
        match spawn::resolve(program) {
            Some(path) => *program = path.into_os_string(),
            None => {
                return fail(format!(
                    "-command '{}' not found in PATH",
                    program.to_string_lossy()
                ));
            }
        }
    }
    let ids = match &cfg.user {
        None => None,
        Some(_) if sys::geteuid() != 0 => {
            let flag = if socketmaster { "-user" } else { "--user" };
            return fail(format!(
                "{flag} needs root (running as uid {})",
                sys::geteuid()
            ));
        }
        Some(login) => match users::lookup(login) {
            Ok(ids) => Some(ids),
            Err(msg) => return fail(msg),
        },
    };
    if let Some(dir) = &cfg.dir
        && !dir.is_dir()
    {
        return fail(format!(
            "invalid --dir value '{}': not a directory",
            dir.display()
        ));
    }
    // What was handed to us (LISTEN_FDS, NOTIFY_SOCKET, ...) is consumed
    // here; the workers get their own.
    let inherited = listen::inherited(
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDNAMES").ok().as_deref(),
    );
    let mut base_env: env::Vars = env::dedup(
        std::env::vars_os()
            .filter(|(k, _)| {
                k != "SERVER_STARTER_PORT"
                    && k != "SERVER_STARTER_GENERATION"
                    && !env::is_consumed(k)
            })
            .collect(),
    );
    // As in the original, settings given as options are exported too.
    if let Some(dir) = &cfg.envdir {
        env::set(&mut base_env, "ENVDIR", dir.as_os_str());
    }
    for (name, value) in &cfg.settings {
        env::set(&mut base_env, name, value);
    }
    if !socketmaster
        && let Some(problem) = config::Settings::from_vars(&base_env).1.into_iter().next()
    {
        return fail(problem);
    }
    if let Some(path) = &cfg.status_file
        && let Err(e) = status::check_writable(path)
    {
        return fail(format!(
            "unable to write status file {}: {}",
            path.display(),
            errtext(&e)
        ));
    }
    let envdir = env::get(&base_env, "ENVDIR")
        .filter(|_| !socketmaster)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    if let Some(dir) = &envdir
        && !dir.is_dir()
    {
        warning!(
            "envdir {} is not a directory (yet): no variables from it",
            dir.display()
        );
    }
    let command = match spawn::Command::new(&cfg.command, cfg.dir.clone()) {
        Ok(c) => c,
        Err(_) => return fail("invalid server command: an argument holds a NUL byte".into()),
    };
    let image = shell::Image {
        exe: own_path(argv0),
        argv: std::env::args_os().collect(),
        env: base_env.clone(),
    };
    if let Some(text) = std::env::var_os(upgrade::STATE_VAR) {
        // The previous program image handed its state over: carry on.
        // It kept open only what it hands over, which resume() adopts;
        // nothing else may reach the workers.
        sys::cloexec_inherited();
        let text = text.to_string_lossy().into_owned();
        return match resume(&cfg, &text, &blocked) {
            Ok((resources, state)) => {
                let setup = make_setup(cfg, command, base_env, envdir, ids, image, resources);
                match Shell::restore(setup, state) {
                    Ok(s) => s.run_loop(),
                    Err(msg) => fail(format!("refusing the handed-over state: {msg}")),
                }
            }
            Err(msg) => fail(format!(
                "refusing the handed-over state in {}: {msg}",
                upgrade::STATE_VAR
            )),
        };
    }

    // Whatever our own parent leaked to us is closed: we neither use it
    // nor pass it on. Nothing else is open yet.
    let keep: Vec<RawFd> = inherited
        .iter()
        .map(listen::Inherited::raw)
        .chain(cfg.open_fds.iter().copied())
        .collect();
    sys::close_inherited(&keep);
    if socketmaster {
        if cfg.syslog {
            log::use_syslog();
        }
    } else {
        original!("start_server (pid:{}) starting now...", sys::getpid());
    }
    let specs = cfg
        .ports
        .len()
        .saturating_add(cfg.paths.len())
        .saturating_add(cfg.open_fds.len());
    let layout = listen::Layout::plan(&cfg.ports, if specs == 0 { inherited.len() } else { specs });
    let mut output = match Output::open(cfg.log_file.clone(), &layout) {
        Ok(o) => o,
        Err(msg) => return fail(msg),
    };
    // The pid file comes before binding: a second start_server must not
    // touch the first one's unix socket files.
    let mut pid_file = match &cfg.pid_file {
        None => None,
        Some(path) => match PidFile::lock(path).map(|p| p.keep_clear(&layout)) {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) | Err(LockError::Io(e)) => {
                return fail(format!(
                    "unable to lock pid file {}: {}",
                    path.display(),
                    errtext(&e)
                ));
            }
            Err(LockError::Held(pid)) => {
                let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                return fail(format!(
                    "pid file {} is locked: another start_server{who} is running",
                    path.display()
                ));
            }
        },
    };
    let sockets = listen::Sockets {
        ports: &cfg.ports,
        paths: &cfg.paths,
        open_fds: &cfg.open_fds,
        backlog: cfg.backlog.unwrap_or(listen::DEFAULT_BACKLOG),
        fd_names: &cfg.fd_names,
    };
    let listeners = match listen::open_all(&sockets, &layout, inherited) {
        Ok(l) => l,
        Err(msg) => {
            if let Some(p) = pid_file {
                p.remove();
            }
            return fail(msg);
        }
    };
    let abort = |msg: String, pid_file: Option<PidFile>, listeners: &[listen::Listener]| {
        if let Some(p) = pid_file {
            p.remove();
        }
        listen::remove_socket_files(listeners);
        fail(msg)
    };
    let signals = match signals::Signals::new(&blocked) {
        Ok(s) => s,
        Err(e) => {
            return abort(
                format!("unable to create signalfd: {}", errtext(&e)),
                pid_file,
                &listeners,
            );
        }
    };
    let started = if cfg.daemonize {
        match daemonize(&listeners) {
            Ok(Daemon::Parent(code)) => return code,
            Ok(Daemon::Child(fd)) => Some(fd),
            Err(e) => {
                return abort(
                    format!("unable to daemonize: {}", errtext(&e)),
                    pid_file,
                    &listeners,
                );
            }
        }
    } else {
        None
    };
    if let Err(msg) = output.redirect() {
        return abort(msg, pid_file, &listeners);
    }
    if let Some(p) = &mut pid_file
        && let Err(e) = p.write(sys::getpid())
    {
        return abort(
            format!("unable to write pid file: {}", errtext(&e)),
            pid_file,
            &listeners,
        );
    }
    // Made by the process that will serve (after daemonizing), and last:
    // nothing can fail after it but the supervisor, which removes it.
    let notify = match cfg.readiness {
        config::Readiness::Interval => None,
        config::Readiness::Notify => match Notify::create(ids.as_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                return abort(
                    format!("unable to create the notification socket: {}", errtext(&e)),
                    pid_file,
                    &listeners,
                );
            }
        },
    };
    let resources = Resources {
        listeners,
        systemd_layout: layout.systemd,
        pid_file,
        output,
        signals,
        started,
        notify,
    };
    Shell::new(make_setup(
        cfg, command, base_env, envdir, ids, image, resources,
    ))
    .run()
}

/// What start-up (or a resumed upgrade) gives the supervisor to work with.
struct Resources {
    listeners: Vec<listen::Listener>,
    systemd_layout: bool,
    pid_file: Option<PidFile>,
    output: Output,
    signals: signals::Signals,
    started: Option<std::os::fd::OwnedFd>,
    notify: Option<Notify>,
}

fn make_setup(
    cfg: Config,
    command: spawn::Command,
    base_env: env::Vars,
    envdir: Option<std::path::PathBuf>,
    ids: Option<users::Ids>,
    image: shell::Image,
    r: Resources,
) -> Setup {
    Setup {
        command,
        base_env,
        envdir,
        listeners: r.listeners,
        systemd_layout: r.systemd_layout,
        config: cfg,
        pid_file: r.pid_file,
        output: r.output,
        signals: r.signals,
        started: r.started,
        notify: r.notify,
        upstream_notify: std::env::var_os("NOTIFY_SOCKET"),
        ids,
        image,
    }
}

/// Takes over the descriptors a previous program image handed over with
/// its state: nothing is bound, opened or written anew.
fn resume(
    cfg: &Config,
    text: &str,
    blocked: &sys::SigSet,
) -> Result<(Resources, upgrade::State), String> {
    let state = accept_state(text, sys::getpid())?;
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
        listeners.push(listen::Listener {
            name: l.name.clone(),
            fd_name: l.fd_name.clone(),
            fd,
            unix_path: l.unix_path.as_ref().map(|path| listen::SocketFile {
                path: path.into(),
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
    let notify = match (cfg.readiness, &state.notify) {
        (config::Readiness::Notify, Some((fd, address, id))) => Some(Notify {
            fd: sys::take_inherited(*fd)
                .map_err(|_| format!("notify descriptor {fd} is not open"))?,
            address: address.clone(),
            file: Notify::file_of(address, *id),
        }),
        (config::Readiness::Interval, None) => None,
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
    };
    Ok((resources, state))
}

/// A handed-over state we can take: readable, consistent, and naming as
/// workers (and log command) only children of `parent`, the start_server
/// that wrote it. Nothing in it is signalled before this holds.
fn accept_state(text: &str, parent: sys::Pid) -> Result<upgrade::State, String> {
    let state = upgrade::State::decode(text, &upgrade::Clock::read())?;
    state.validate()?;
    let children = state
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
            _ => EXIT_FAILURE,
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
