//! Processes: pids, reaping, signals to them, forking (for --daemonize).
#![allow(unsafe_code)]

use super::*;

pub use crate::wait::WaitStatus;

unsafe extern "C" {
    /// The C library's environment: a NULL-terminated array of
    /// `NAME=VALUE` strings.
    static environ: *const *const libc::c_char;
}

/// A string of the environment this process was given, `NAME=VALUE` with
/// a name of at least one byte, where it lies: it stays there, unchanged,
/// for the rest of the process's life (see [`environment`]), so passing
/// it on to a worker copies nothing, and reading its name does not
/// measure its value.
#[derive(Clone, Copy)]
pub struct EnvString {
    ptr: *const libc::c_char,
    /// The bytes before the first `=` (after the first byte).
    name_len: usize,
}

// SAFETY: the string is never written, by this process or anyone else,
// while it lives (see `environment`): any thread may read it.
unsafe impl Send for EnvString {}
// SAFETY: as above.
unsafe impl Sync for EnvString {}

impl EnvString {
    pub fn name(&self) -> &'static [u8] {
        // SAFETY: the first name_len bytes of the string were read before
        // its NUL when it was found, and never change (see environment).
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.name_len) }
    }

    pub fn value(&self) -> &'static [u8] {
        // SAFETY: the string holds its name, an `=` and a NUL-terminated
        // value, unchanged while the process lives (see environment).
        unsafe { CStr::from_ptr(self.ptr.add(self.name_len).add(1)).to_bytes() }
    }

    /// The whole string, NUL-terminated, as execve takes it.
    pub fn as_ptr(&self) -> *const libc::c_char {
        self.ptr
    }
}

/// This process's environment as it was given, in order: its strings that
/// have a name.
pub fn environment() -> Vec<EnvString> {
    // environ is the C library's NULL-terminated array of NUL-terminated
    // strings, set up before main. This program never changes its own
    // environment (no setenv or putenv; std's set_var is unsafe, and only
    // this module holds unsafe code: workers get theirs built apart), and
    // the C library never frees or rewrites the strings a process starts
    // with: each one stays where it is, unchanged, until the process
    // ends.
    // SAFETY: as above; entries are read up to the terminating NULL.
    let count = unsafe {
        let mut n = 0usize;
        while !environ.is_null() && !(*environ.add(n)).is_null() {
            n = n.saturating_add(1);
        }
        n
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: as above; `i` is below `count`, so entry `i` is a string.
        let ptr = unsafe { *environ.add(i) };
        // The name ends at the first `=` after its first byte; a string
        // that ends first has none.
        let bytes = ptr.cast::<u8>();
        let mut n = 0usize;
        let name_len = loop {
            // SAFETY: bytes are read one at a time, up to the string's NUL
            // at most.
            match unsafe { *bytes.add(n) } {
                0 => break None,
                b'=' if n > 0 => break Some(n),
                _ => n = n.saturating_add(1),
            }
        };
        if let Some(name_len) = name_len {
            out.push(EnvString { ptr, name_len });
        }
    }
    out
}

/// Reaps one child that has ended, without blocking: `Ok(None)` when none
/// has (or there are no children at all).
pub fn waitpid_any() -> io::Result<Option<(Pid, WaitStatus)>> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    match cvt_r(|| unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) }) {
        Ok(0) => Ok(None),
        Ok(pid) => Ok(Some((pid, WaitStatus(status)))),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits for `pid` to end (blocking).
pub fn waitpid(pid: Pid) -> io::Result<WaitStatus> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    cvt_r(|| unsafe { libc::waitpid(pid, &mut status, 0) })?;
    Ok(WaitStatus(status))
}

pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

pub fn getpid() -> Pid {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

pub fn getppid() -> Pid {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

/// Forks a process that has one thread; `Ok(None)` in the child, which is
/// then a complete copy and may go on running ordinary code (used by
/// `--daemonize`). With more than one thread (or where /proc cannot say),
/// fails with EDEADLK: the child of a threaded process could find a lock
/// held forever by a thread that does not exist in it.
pub fn fork() -> io::Result<Option<Pid>> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if threads != Some(1) {
        return Err(io::Error::from_raw_os_error(libc::EDEADLK));
    }
    // SAFETY: the process has one thread (this one, which alone could have
    // started another), so the child is a complete copy of it and may run
    // ordinary code.
    match unsafe { fork_raw() }? {
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// fork(2): the child's pid, or 0 in the child.
///
/// # Safety
///
/// In the child, only async-signal-safe calls may be made before it execs
/// or exits, unless the process had a single thread when it forked: a lock
/// another thread held (the allocator's, say) stays held forever there.
unsafe fn fork_raw() -> io::Result<Pid> {
    // SAFETY: fork has no memory-safety preconditions of its own; what
    // the child may do is the caller's contract.
    cvt(unsafe { libc::fork() })
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// Reads `buf.len()` bytes at address `addr` of process `pid`'s memory
/// (process_vm_readv: the caller must be allowed to trace it). Returns how
/// many were read.
pub fn read_process_memory(pid: Pid, addr: usize, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes buf, valid for writes of its length; the
    // kernel only reads `remote`, checking the other process's memory
    // itself (EFAULT where it is not mapped).
    cvt_size(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_environment_is_the_one_the_standard_library_reads() {
        use std::os::unix::ffi::OsStrExt;
        let ours: Vec<_> = super::environment()
            .iter()
            .map(|e| {
                let name = std::ffi::OsStr::from_bytes(e.name());
                (
                    name.to_owned(),
                    std::ffi::OsStr::from_bytes(e.value()).to_owned(),
                )
            })
            .collect();
        let std: Vec<_> = std::env::vars_os().collect();
        assert_eq!(ours, std);
        assert!(!ours.is_empty());
    }
}
