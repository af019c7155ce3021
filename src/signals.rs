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
/// resets them. Call first thing in main.
pub fn block_all() -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    for sig in 1..=crate::sig::last() {
        if !UNBLOCKABLE.contains(&sig) {
            set.add(sig);
        }
    }
    sys::sigprocmask_set(&set)?;
    let ignored = ignored();
    for sig in 1..=crate::sig::last() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP && ignored(sig) {
            // Numbers the C library reserves for itself refuse; that is fine.
            let _ = sys::reset_disposition(sig);
        }
    }
    Ok(set)
}

/// Which signals this process ignores, from one read of
/// /proc/self/status (`SigIgn:`, a bit per signal); every one where that
/// cannot be read (no /proc), so that none is missed.
fn ignored() -> impl Fn(i32) -> bool {
    // One read into a buffer on the stack: the file is about 1.5 KB, and
    // SigIgn comes in its first half.
    let mut buf = [0u8; 4096];
    let mask = std::fs::File::open("/proc/self/status")
        .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
        .ok()
        .and_then(|n| std::str::from_utf8(buf.get(..n)?).ok())
        .and_then(sig_ign);
    move |sig| match (mask, u32::try_from(sig.saturating_sub(1))) {
        (Some(mask), Ok(bit)) => mask.checked_shr(bit).is_some_and(|m| m & 1 == 1),
        _ => true,
    }
}

/// The `SigIgn:` mask of a /proc/PID/status text.
fn sig_ign(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
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
    fn the_ignored_signals_are_read_from_proc() {
        assert_eq!(
            super::sig_ign("Name:\tx\nSigIgn:\t0000000000001001\nSigCgt:\t0\n"),
            Some(0x1001)
        );
        assert_eq!(super::sig_ign("Name:\tx\n"), None);
        // This test process ignores SIGPIPE (the Rust runtime does).
        let ignored = super::ignored();
        assert!(ignored(libc::SIGPIPE) && !ignored(libc::SIGTERM));
    }
}
