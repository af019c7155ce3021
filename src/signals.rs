//! Signals as events: every catchable asynchronous signal is blocked at
//! start-up and read from a signalfd in the event loop, so "handlers" are
//! ordinary code and no signal can kill start_server by surprise.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys::{self, SigSet};

/// Signals the kernel raises synchronously for a fault in the process
/// itself, plus the two that cannot be caught: these are never blocked.
const UNBLOCKABLE: &[i32] = &[
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
    libc::SIGSYS,
    libc::SIGKILL,
    libc::SIGSTOP,
];

/// Blocks every catchable asynchronous signal and resets every ignored
/// one to SIG_DFL (undoing an inherited SIG_IGN and the Rust runtime's
/// ignored SIGPIPE), so that workers inherit clean defaults and only
/// their mask needs resetting after fork. Handlers need nothing: execve
/// resets them. Dispositions are read, not written, where they need no
/// change. Call first thing in main.
pub fn block_all() -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for sig in 1..=crate::sig::last() {
        if !UNBLOCKABLE.contains(&sig) {
            set.add(sig);
        }
    }
    sys::sigprocmask_set(&set)?;
    for sig in 1..=crate::sig::last() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP && sys::is_ignored(sig) {
            // Numbers the C library reserves for itself refuse; that is fine.
            let _ = sys::reset_disposition(sig);
        }
    }
    Ok(set)
}

/// Unblocks everything again: client modes want Ctrl-C to work.
pub fn unblock_all() -> io::Result<()> {
    sys::sigprocmask_set(&SigSet::empty())
}

/// The stream of signals delivered to start_server.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    pub fn new(set: &SigSet) -> io::Result<Signals> {
        Ok(Signals {
            fd: sys::signalfd(set)?,
        })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The next pending signal, without blocking, and its sender's pid.
    pub fn next(&self) -> Option<(i32, sys::Pid)> {
        sys::signalfd_read(self.fd.as_fd()).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ignored_signals_are_told_apart() {
        // This test process ignores SIGPIPE (the Rust runtime does).
        assert!(crate::sys::is_ignored(libc::SIGPIPE));
        assert!(!crate::sys::is_ignored(libc::SIGTERM));
    }
}
