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
mod einhorn;
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
mod startup;
mod status;
mod sys;
mod upgrade;
mod upgrade_check;
mod users;
mod wait;
mod waiters;
mod watch;
pub mod worker;

use std::fs::File;
use std::os::fd::IntoRawFd;

use cli::Mode;
use config::Config;
use log::{errtext, fatal};
use startup::Started;

/// The allocator the binary uses (see `sys::arena`).
#[doc(hidden)]
pub use sys::Arena;

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
    let Mode::Run(cfg) = mode else {
        return client::answer(mode, socketmaster);
    };
    let env = env::Environment::read();
    match env.handed(upgrade::CHECK_VAR) {
        Some(_) => answer_check(&env, cfg.rules.slots()),
        None => run(*cfg, blocked, env),
    }
}

/// Asked by a running start_server whether we take its state: our parent
/// is the one asking, and its workers are ours to be.
fn answer_check(env: &env::Environment, slots: u32) -> i32 {
    let text = env
        .handed(upgrade::STATE_VAR)
        .and_then(|t| t.to_str())
        .unwrap_or_default();
    let (answer, code) = match startup::accept_state(text, sys::getppid(), slots) {
        Ok(_) => (upgrade::CHECK_OK.to_string(), 0),
        Err(why) => (why, EXIT_FAILURE),
    };
    let _ = sys::write_all(1, format!("{answer}\n").as_bytes());
    code
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

/// Start-up: check, then acquire and supervise, or carry on from a
/// previous program image's state (a live upgrade).
fn run(cfg: Config, blocked: sys::SigSet, env: env::Environment) -> i32 {
    let fail = |msg: String| {
        fatal!("{msg}");
        EXIT_FAILURE
    };
    // What our own parent left open from 3 up, before we open anything:
    // recorded, to be taken (sockets LISTEN_FDS passes, a live upgrade's
    // state, socketmaster's fd://N) or closed later; or, when nothing can
    // be taken from it, closed at once.
    let state = env
        .handed(upgrade::STATE_VAR)
        .map(|t| t.to_string_lossy().into_owned());
    let takes = !cfg.open_fds.is_empty() || env.handed("LISTEN_FDS").is_some() || state.is_some();
    match takes {
        true => sys::record_inherited(),
        false => sys::close_all_inherited(),
    }
    let plan = match startup::check(cfg, env) {
        Ok(plan) => plan,
        Err(msg) => return fail(msg),
    };
    if let Some(text) = state {
        return match startup::resume(plan, &text, &blocked) {
            Ok(shell) => shell.run_loop(),
            Err(msg) => fail(msg),
        };
    }
    match startup::acquire(plan, &blocked) {
        Ok(Started::Serving(shell)) => shell.run(),
        Ok(Started::Detached(code)) => code,
        Err(msg) => fail(msg),
    }
}
