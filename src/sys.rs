//! Thin, safe wrappers around the system calls start_server needs.
//!
//! This is the only module allowed to use `unsafe`. Every wrapper is named
//! after the call it makes, turns `-1` into `io::Error`, retries on `EINTR`
//! where the call is restartable, and hands descriptors out as `OwnedFd`.
//! The code that runs in a forked child before `execve` lives here too
//! ([`fork_exec`]): a fixed script of async-signal-safe calls that touches
//! only memory prepared before the fork.
//!
//! The two primitives with contracts the compiler cannot check, forking
//! (`fork_raw`) and taking ownership of a descriptor number (`own`), are
//! `unsafe fn`s private to this module. Every public function built on
//! them establishes the contract itself, so no safe caller can break it:
//! the child's fixed script, the single-thread check of [`fork`], and the
//! record of inherited descriptors, each of which [`take_inherited`] hands
//! out once.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::wait::Pid;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The text of an errno value, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated string that
    // stays valid at least until the next strerror call; we copy it at once.
    let msg = unsafe { CStr::from_ptr(libc::strerror(errno)) };
    msg.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------- signals

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> SigSet {
        let mut set = MaybeUninit::uninit();
        // SAFETY: sigemptyset initialises the whole set it is given.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    pub fn add(&mut self, sig: i32) {
        // SAFETY: self.0 is an initialised set; an invalid number only makes
        // the call fail with EINVAL, which is harmless here.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }
}

/// Replaces the calling thread's signal mask.
pub fn sigprocmask_set(set: &SigSet) -> io::Result<()> {
    // SAFETY: both pointers are valid for the duration of the call; the old
    // mask is not requested.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set.0, std::ptr::null_mut()) };
    match ret {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Sets the disposition of `sig` to SIG_DFL. Made with the raw system
/// call: the C library refuses the numbers it reserves for itself (32-34),
/// which an ignored disposition inherited from our parent would otherwise
/// keep ignored in every worker.
pub fn reset_disposition(sig: i32) -> io::Result<()> {
    /// The kernel's `struct sigaction` (x86_64 and others without
    /// sa_restorer quirks for SIG_DFL): handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: act is a valid kernel sigaction for the duration of the
    // call; the old action is not requested; the size is the kernel's
    // sigset size (8 bytes).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig as libc::c_long,
            &act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8 as libc::c_long,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking, close-on-exec signalfd for `set`.
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: -1 asks for a new descriptor; set is initialised.
    let fd = cvt(unsafe { libc::signalfd(-1, &set.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: signalfd just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal from a non-blocking signalfd, if any: its
/// number, and the pid of the process that sent it (0 from the kernel).
pub fn signalfd_read(fd: BorrowedFd) -> io::Result<Option<(i32, Pid)>> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: the buffer is valid for `size` writable bytes.
    let ret = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
    match cvt_size(ret) {
        // SAFETY: the kernel filled the whole structure.
        Ok(n) if n == size => {
            // SAFETY: as above.
            let info = unsafe { info.assume_init() };
            Ok(Some((info.ssi_signo as i32, info.ssi_pid as Pid)))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends `sig` to every process of the group `pgid` leads. A number of 1
/// or less would name no such group (but init, our own group, or every
/// process): refused with ESRCH.
pub fn kill_group(pgid: Pid, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pgid.wrapping_neg(), sig) }).map(drop)
}

pub fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

// -------------------------------------------------------------- processes

pub use crate::wait::WaitStatus;

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

/// A NULL-terminated array of C strings, as `execve` takes it. Built before
/// fork so that the child only reads it (but for the pid slot).
pub struct CStrArray {
    /// Each string with its NUL.
    strings: Vec<Vec<u8>>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStrArray {
    pub fn new(strings: Vec<CString>) -> CStrArray {
        let strings: Vec<Vec<u8>> = strings
            .into_iter()
            .map(CString::into_bytes_with_nul)
            .collect();
        // The pointers stay valid when the Vec moves: each string's bytes
        // live in their own heap allocation.
        let mut ptrs: Vec<_> = strings.iter().map(|s| s.as_ptr().cast()).collect();
        ptrs.push(std::ptr::null());
        CStrArray { strings, ptrs }
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

/// Everything the forked child needs, prepared before fork: it runs the
/// steps in order and allocates nothing.
pub struct ChildScript {
    /// Descriptors to install: each `(from, to)` pair ends with `from`'s
    /// file on descriptor `to`, inherited across exec.
    pub fds: Vec<(RawFd, RawFd)>,
    /// Directory to change into.
    pub dir: Option<CString>,
    /// Paths to try in order (a PATH search done ahead of time).
    pub programs: Vec<CString>,
    pub argv: CStrArray,
    pub envp: CStrArray,
    /// The first descriptor above every `to`, where sources are parked so
    /// that no move clobbers a source still to be moved.
    pub park_fd: RawFd,
    /// Descriptors from this one up are not inherited (for helpers that
    /// must not hold the listening sockets).
    pub cloexec_from: Option<RawFd>,
    /// The user to become: `(uid, gid, supplementary groups)`, set in that
    /// order's reverse (groups, gid, uid) while still root.
    pub ids: Option<(u32, u32, Vec<u32>)>,
    /// `(envp index, byte offset)`: where the child writes its own pid in
    /// decimal, NUL-terminated (LISTEN_PID). The string must have room for
    /// PID_DIGITS bytes there.
    pub pid_slot: Option<(usize, usize)>,
    /// Lead a process group of its own (so that the group, the child and
    /// whatever it starts, can be signalled as one).
    pub new_group: bool,
}

/// Room a pid slot needs: the digits of the largest pid_t.
pub const PID_DIGITS: usize = 10;

/// What the child reports through the close-on-exec pipe when it fails:
/// the step that failed, then errno.
pub const STEP_FDS: u8 = 1;
pub const STEP_CHDIR: u8 = 2;
pub const STEP_EXEC: u8 = 3;
pub const STEP_IDS: u8 = 4;

/// Forks a child that runs `script` and execs. Returns the child's pid and
/// the read end of a close-on-exec pipe: it reaches end-of-file when the
/// exec succeeds, or carries `[step, errno as 4 native-endian bytes]` when
/// it fails (the child then exits 127 for ENOENT, 126 otherwise).
///
/// The child is made the way posix_spawn makes it: a clone that shares
/// this process's memory and runs on a stack of its own (in this frame)
/// while this process waits for it to exec or exit (CLONE_VM |
/// CLONE_VFORK). No page table is copied and no page faults in on either
/// side, which a fork of even this small process costs. The child writes
/// only to its stack and to the script (its pid in the environment), which
/// this process drops afterwards.
pub fn fork_exec(script: &mut ChildScript) -> io::Result<(Pid, OwnedFd)> {
    /// What the child's entry point is handed.
    struct Start<'a> {
        script: &'a mut ChildScript,
        report: RawFd,
    }
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: arg is the &mut Start that fork_exec passed to clone,
        // alive until the child execs or exits: the parent is suspended
        // until then (CLONE_VFORK).
        let start = unsafe { &mut *arg.cast::<Start>() };
        child_run(start.script, start.report)
    }
    /// The child's stack: child_run needs well under a page.
    const STACK: usize = 16 * 1024;
    let (report_r, report_w) = pipe()?;
    let mut stack = [0u8; STACK];
    let mut start = Start {
        script,
        report: report_w.as_raw_fd(),
    };
    // The stack grows down from its end (16-byte aligned, as the ABI
    // wants; the C library aligns it again).
    let top = stack.as_mut_ptr().wrapping_add(STACK);
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: entry runs only async-signal-safe calls (dup, dup2, fcntl,
    // setpgid, chdir, sigprocmask, execve, write, _exit, raw credential
    // syscalls) on memory prepared before the clone, on its own stack
    // (which outlives it: this frame waits), and never returns. With
    // CLONE_VFORK this thread resumes only once the child has executed or
    // exited, so nothing the child reads changes under it. Every catchable
    // asynchronous signal is blocked (main blocks them first), so no
    // handler runs in the child on shared memory.
    let pid = cvt(unsafe {
        libc::clone(
            entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut start).cast(),
        )
    })?;
    if script.new_group {
        // The child does the same: whichever runs first, the group exists
        // before anyone can signal it. Once the child has executed, this
        // fails with EACCES, and the child has done it.
        // SAFETY: setpgid has no memory-safety preconditions.
        unsafe { libc::setpgid(pid, pid) };
    }
    drop(report_w);
    Ok((pid, report_r))
}

/// The child's fixed script. Never returns.
fn child_run(script: &mut ChildScript, report: RawFd) -> ! {
    let fail = |step: u8, errno: i32| -> ! {
        let e = errno.to_ne_bytes();
        let msg = [step, e[0], e[1], e[2], e[3]];
        // SAFETY: write and _exit are async-signal-safe; msg is on the stack.
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(if errno == libc::ENOENT { 127 } else { 126 })
        }
    };
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);

    if let Err(e) = place_fds(&script.fds, script.park_fd) {
        fail(STEP_FDS, e);
    }
    if let Some(slot) = script.pid_slot {
        write_own_pid(&mut script.envp, slot);
    }
    if let Some(first) = script.cloexec_from {
        cloexec_from(first);
    }
    if script.new_group {
        // SAFETY: setpgid is async-signal-safe; (0, 0) names ourselves.
        if unsafe { libc::setpgid(0, 0) } < 0 {
            fail(STEP_FDS, errno());
        }
    }
    if let Some((uid, gid, groups)) = &script.ids {
        // Raw system calls: they change this (only) thread's credentials
        // without the C library's cross-thread machinery.
        // SAFETY: groups is a valid array of groups.len() gid_t values.
        let ok = unsafe {
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0
                && libc::syscall(libc::SYS_setgid, *gid) == 0
                && libc::syscall(libc::SYS_setuid, *uid) == 0
        };
        if !ok {
            fail(STEP_IDS, errno());
        }
    }
    if let Some(dir) = &script.dir {
        // SAFETY: dir is a valid NUL-terminated string.
        if unsafe { libc::chdir(dir.as_ptr()) } < 0 {
            fail(STEP_CHDIR, errno());
        }
    }
    // The worker starts with nothing blocked; dispositions were reset to
    // SIG_DFL in the parent, and exec keeps them.
    // SAFETY: an initialised empty set; sigprocmask is async-signal-safe.
    unsafe {
        let mut empty = MaybeUninit::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
    }
    // Try each candidate like execvp: keep going past ENOENT/ENOTDIR,
    // remember EACCES, stop at any other error.
    let mut err = libc::ENOENT;
    for program in &script.programs {
        // SAFETY: program, argv and envp are NUL-terminated and valid.
        unsafe { libc::execve(program.as_ptr(), script.argv.as_ptr(), script.envp.as_ptr()) };
        match errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => err = libc::EACCES,
            other => {
                err = other;
                break;
            }
        }
    }
    fail(STEP_EXEC, err)
}

/// In the child: each `(from, to)` pair leaves `from`'s file on `to`,
/// inherited across exec. Every source is parked above all targets first
/// (from `park_fd` up), then moved into place, so that no move clobbers
/// a source still to be moved. A fixed-size stack array: no allocation.
/// The errno of a failure.
fn place_fds(fds: &[(RawFd, RawFd)], park_fd: RawFd) -> Result<(), i32> {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut parked = [-1 as RawFd; 64];
    if fds.len() > parked.len() {
        return Err(libc::EMFILE);
    }
    for (slot, &(from, _)) in parked.iter_mut().zip(fds) {
        // SAFETY: fcntl on a descriptor number; failure is reported.
        let fd = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, park_fd) };
        if fd < 0 {
            return Err(errno());
        }
        *slot = fd;
    }
    for (&parked, &(_, to)) in parked.iter().zip(fds) {
        // SAFETY: dup2 onto a descriptor number; the copy is not
        // close-on-exec, so it survives execve.
        if unsafe { libc::dup2(parked, to) } < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// In the child: its own pid in decimal, NUL-terminated, at `(envp
/// index, byte offset)` (LISTEN_PID's value), without allocating.
fn write_own_pid(envp: &mut CStrArray, (index, offset): (usize, usize)) {
    if let Some(string) = envp.strings.get_mut(index)
        && string.len() > offset.saturating_add(PID_DIGITS)
    {
        // Decimal digits of our own pid, on the stack (least significant
        // first), then into the slot. A u32 has at most PID_DIGITS digits.
        // SAFETY: getpid is async-signal-safe.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; PID_DIGITS];
        let mut n: usize = 0;
        for d in digits.iter_mut() {
            *d = b'0'.saturating_add((pid % 10) as u8);
            n = n.saturating_add(1);
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        // Written through the Vec's own pointer, in the memory the child
        // shares with its parent (which drops the script once the child
        // has executed); envp's pointer to this string (from as_ptr) stays
        // valid alongside as_mut_ptr.
        let dst = string.as_mut_ptr();
        for (i, &d) in digits.iter().take(n).rev().enumerate() {
            // SAFETY: offset + i < offset + PID_DIGITS < string.len(),
            // checked above.
            unsafe { *dst.add(offset.saturating_add(i)) = d };
        }
        // SAFETY: as above; the NUL ends the value.
        unsafe { *dst.add(offset.saturating_add(n)) = 0 };
    }
}

/// In the child: descriptors from `first` up are not inherited.
fn cloexec_from(first: RawFd) {
    // SAFETY: close_range only changes descriptor flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret != 0 {
        for fd in first..4096 {
            // SAFETY: fcntl on a descriptor number; EBADF is harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

// ------------------------------------------------------------ descriptors

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just returned these descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number has no memory-safety preconditions.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, new) }).map(drop)
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number has no memory-safety preconditions.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Whether descriptor `fd` is open.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The file type bits (`S_IFMT`) of what descriptor `fd` refers to.
pub fn file_type(fd: RawFd) -> io::Result<libc::mode_t> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole stat into the buffer when it succeeds,
    // and only then is it read.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the buffer is initialised.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

/// Points standard input, output or error (`to`, 0 to 2) at `fd`'s file.
/// Nothing in this program owns descriptors 0 to 2 (they are never put in
/// an `OwnedFd`), so replacing them takes nothing from anyone.
pub fn dup2_stdio(fd: BorrowedFd, to: RawFd) -> io::Result<()> {
    if !(0..=2).contains(&to) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: dup2 on descriptor numbers; `to` is stdio, owned by nobody.
    cvt_r(|| unsafe { libc::dup2(fd.as_raw_fd(), to) }).map(drop)
}

/// A close-on-exec duplicate of `fd` numbered `min` or above.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a descriptor number has no memory-safety preconditions.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Duplicates `fd` onto `to` (not close-on-exec) and returns ownership of
/// descriptor `to`, which now refers to `fd`'s file. `to` must be free, or
/// stdio (which nothing owns): EBUSY for a descriptor in use, which may
/// have an owner.
pub fn dup2_owned(fd: BorrowedFd, to: RawFd) -> io::Result<OwnedFd> {
    if to > 2 && is_open(to) {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    if to < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: dup2 on descriptor numbers; `to` is free or unowned stdio.
    cvt_r(|| unsafe { libc::dup2(fd.as_raw_fd(), to) })?;
    // SAFETY: dup2 just made `to` a new reference to the file, and nothing
    // else owned that number (checked above).
    Ok(unsafe { OwnedFd::from_raw_fd(to) })
}

// ---------------------------------------------------- inherited descriptors
//
// Descriptors this process was started with (from 3 up) belong to nobody
// until something takes them: sockets passed by LISTEN_FDS or
// SERVER_STARTER_PORT, descriptors a previous program image handed over.
// Which numbers were open at start is recorded before main runs, and each
// can be taken once: so safe code can neither create a second owner of an
// inherited descriptor nor take one the program opened itself.

/// Inherited descriptors below this number are tracked; others cannot be
/// taken.
const INHERITED_LIMIT: usize = 4096;
const WORDS: usize = INHERITED_LIMIT / 64;
/// One bit per descriptor: open at start, and not taken (or closed) since.
static INHERITED: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// The word and bit of descriptor `fd` (3 up to INHERITED_LIMIT).
fn inherited_bit(fd: RawFd) -> Option<(&'static AtomicU64, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd >= 3)?;
    Some((INHERITED.get(fd / 64)?, 1u64 << (fd % 64)))
}

fn mark_inherited(fd: RawFd) {
    if let Some((word, bit)) = inherited_bit(fd) {
        word.fetch_or(bit, Ordering::SeqCst);
    }
}

/// Clears `fd`'s bit; whether it was set (this call alone took it).
fn claim_inherited(fd: RawFd) -> bool {
    inherited_bit(fd).is_some_and(|(word, bit)| word.fetch_and(!bit, Ordering::SeqCst) & bit != 0)
}

/// The inherited descriptors not taken yet.
fn unclaimed() -> Vec<RawFd> {
    let mut out = Vec::new();
    for (w, word) in INHERITED.iter().enumerate() {
        let bits = word.load(Ordering::SeqCst);
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                out.push(w.saturating_mul(64).saturating_add(b) as RawFd);
            }
        }
    }
    out
}

/// Calls `f` with every entry of a getdents64 buffer whose name is a
/// number (a descriptor, in /proc/self/fd). Allocates nothing.
fn for_each_dirent_number(buf: &[u8], mut f: impl FnMut(RawFd)) {
    // linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
    let mut rest = buf;
    while let (Some(&[lo, hi]), Some(name)) = (rest.get(16..18), rest.get(19..)) {
        let reclen = usize::from(u16::from_ne_bytes([lo, hi]));
        if reclen == 0 {
            break;
        }
        let name = name.get(..reclen.saturating_sub(19)).unwrap_or(name);
        let mut fd: RawFd = 0;
        let mut digits: u32 = 0;
        for &c in name.iter().take_while(|&&c| c != 0) {
            if !c.is_ascii_digit() || digits > 9 {
                digits = 0;
                break;
            }
            fd = fd
                .wrapping_mul(10)
                .wrapping_add(RawFd::from(c.wrapping_sub(b'0')));
            digits = digits.saturating_add(1);
        }
        if digits > 0 {
            f(fd);
        }
        rest = rest.get(reclen..).unwrap_or_default();
    }
}

/// Runs before main (from `.init_array`): records the descriptors from 3 up
/// that are open, listing /proc/self/fd with raw system calls (nothing is
/// allocated this early), or probing each number where /proc is missing.
extern "C" fn record_inherited() {
    // SAFETY: open with a NUL-terminated literal path.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        for fd in 3..INHERITED_LIMIT as RawFd {
            if is_open(fd) {
                mark_inherited(fd);
            }
        }
        return;
    }
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: getdents64 writes at most buf.len() bytes into buf.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        let Some(filled) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else {
            break;
        };
        if filled.is_empty() {
            break;
        }
        for_each_dirent_number(filled, |fd| {
            if fd != dir {
                mark_inherited(fd);
            }
        });
    }
    // SAFETY: dir was opened above and is closed once.
    unsafe { libc::close(dir) };
}

#[used]
// SAFETY: `.init_array` holds pointers to functions the C runtime calls,
// without arguments that we read, before main; record_inherited is such a
// function and needs nothing initialised beyond static memory.
#[unsafe(link_section = ".init_array")]
static RECORD_INHERITED: extern "C" fn() = record_inherited;

/// Takes ownership of descriptor `fd`, which this process inherited (it
/// was open when the process started) and nothing has taken yet: EBADF
/// when it is not open, EBUSY when it is not inherited or already taken.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if !is_open(fd) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    if !claim_inherited(fd) {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    // SAFETY: the descriptor is open, was open when the process started,
    // and this call alone cleared its bit: no other owner exists.
    Ok(unsafe { own(fd) })
}

/// Ownership of descriptor `fd`.
///
/// # Safety
///
/// `fd` must be open, and nothing else in the process may own it or close
/// it: the returned `OwnedFd` closes it when dropped.
unsafe fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller's contract is OwnedFd::from_raw_fd's.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// [`take_inherited`] for a descriptor that must be a socket (ENOTSOCK
/// otherwise, and it is not taken). Returns the socket type (SOCK_STREAM,
/// SOCK_DGRAM, ...) with it.
pub fn take_inherited_socket(fd: RawFd) -> io::Result<(OwnedFd, i32)> {
    let ty = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    Ok((take_inherited(fd)?, ty))
}

/// Closes every inherited descriptor not taken yet, but those in `keep`
/// (which stay to be taken): what our own parent leaked to us, which we
/// neither use nor pass on, must not be held open for our whole life (a
/// reader of a pipe we inherited would never see end-of-file).
pub fn close_inherited(keep: &[RawFd]) {
    for fd in unclaimed() {
        if !keep.contains(&fd) && claim_inherited(fd) {
            // SAFETY: an inherited descriptor nobody took: this call just
            // claimed it, so it closes what nothing owns.
            unsafe { libc::close(fd) };
        }
    }
}

/// Marks every inherited descriptor not taken yet close-on-exec, so that
/// none reaches a worker.
pub fn cloexec_inherited() {
    for fd in unclaimed() {
        let _ = set_cloexec(fd, true);
    }
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() writable bytes.
        match cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes all of `buf`; gives up silently on any error but EINTR (the
/// caller decides whether a lost write matters).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() readable bytes.
        match cvt_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a write of up to PIPE_BUF bytes to `fd` would not block now
/// (always true for files and closed or broken pipes, where it fails fast).
pub fn writable_now(fd: RawFd) -> bool {
    let mut pfd = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    poll(&mut pfd, Some(Duration::ZERO)).map_or(true, |n| n > 0)
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no
/// timeout). Returns how many are ready; EINTR counts as zero.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Round up, so that a deadline is never woken for early.
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: fds is a valid array of fds.len() pollfd structures.
    match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- sockets

/// A new close-on-exec socket.
pub fn socket(domain: i32, ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory-safety preconditions.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn setsockopt_int(fd: BorrowedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is a valid int for the stated length.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: value and len are valid out-pointers of the stated size.
    cvt(unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) })?;
    Ok(value)
}

pub fn bind_inet(fd: BorrowedFd, addr: &SocketAddr) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: storage holds a valid address of `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A socket's local address.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalAddr {
    Inet(SocketAddr),
    /// A unix socket bound to a path (None: unnamed or abstract).
    Unix(Option<std::path::PathBuf>),
    Other,
}

/// The local address of socket `fd` (`getsockname`).
pub fn local_addr(fd: RawFd) -> io::Result<LocalAddr> {
    // SAFETY: an all-zero sockaddr_storage is valid; len says its size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are valid out-pointers of the stated size.
    cvt(unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    let family = i32::from(storage.ss_family);
    let ptr = &storage as *const libc::sockaddr_storage;
    Ok(match family {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET socket.
            let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            LocalAddr::Inet(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            LocalAddr::Inet(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        libc::AF_UNIX => {
            // SAFETY: the kernel wrote a sockaddr_un of `len` bytes.
            let sun = unsafe { &*ptr.cast::<libc::sockaddr_un>() };
            let offset = std::mem::size_of::<libc::sa_family_t>();
            let n = (len as usize)
                .saturating_sub(offset)
                .min(sun.sun_path.len());
            let bytes: Vec<u8> = sun
                .sun_path
                .iter()
                .take(n)
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            if bytes.is_empty() {
                LocalAddr::Unix(None)
            } else {
                LocalAddr::Unix(Some(std::path::PathBuf::from(OsStr::from_bytes(&bytes))))
            }
        }
        _ => LocalAddr::Other,
    })
}

/// A unix datagram socket for sd_notify messages: non-blocking,
/// close-on-exec, with SO_PASSCRED so that every datagram carries its
/// sender's pid. Bound to `path`, or without one to an abstract name the
/// kernel picks (autobind). Returns the socket and its NOTIFY_SOCKET
/// value (the path, or `@name`).
pub fn notify_socket(path: Option<&Path>) -> io::Result<(OwnedFd, String)> {
    let fd = socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK)?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    if let Some(path) = path {
        bind_unix(fd.as_fd(), path)?;
        return Ok((fd, path.to_string_lossy().into_owned()));
    }
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // Binding just the family asks the kernel for a unique abstract name.
    let len = std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
    // SAFETY: sun is a valid sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    // SAFETY: an all-zero sockaddr_un is valid; len says its size.
    let mut bound: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: bound and len are valid out-pointers of the stated size.
    cvt(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut bound as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    })?;
    let n = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
    // An abstract name: a NUL, then the name (no terminator).
    let name: String = bound
        .sun_path
        .iter()
        .take(n)
        .skip(1)
        .map(|&c| c as u8 as char)
        .collect();
    Ok((fd, format!("@{name}")))
}

/// One datagram read by [`recv_notification`].
#[derive(Debug)]
pub struct Datagram {
    /// Bytes stored in the buffer.
    pub len: usize,
    /// The datagram was larger than the buffer (its real size).
    pub truncated: Option<usize>,
    /// The sender's pid, from its kernel-checked credentials.
    pub pid: Option<Pid>,
}

/// Receives one datagram with its sender's credentials, without
/// blocking: `Ok(None)` when none is waiting. Descriptors a sender passes
/// along are closed at once.
pub fn recv_notification(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    // Room for the credentials and a few descriptors (which we close).
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below are
    // valid for the lengths given, for the duration of the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: msg describes valid buffers, as above.
    let n = match cvt_size(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) }) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut pid = None;
    // SAFETY: msg was filled by recvmsg; the CMSG macros walk the control
    // buffer within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, ty) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let data = libc::CMSG_DATA(cmsg);
            let header = (data as usize).saturating_sub(cmsg as usize);
            let data_len = ((*cmsg).cmsg_len as usize).saturating_sub(header);
            if level == libc::SOL_SOCKET
                && ty == libc::SCM_CREDENTIALS
                && data_len >= std::mem::size_of::<libc::ucred>()
            {
                let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                pid = Some(cred.pid);
            } else if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
                for i in 0..data_len
                    .checked_div(std::mem::size_of::<RawFd>())
                    .unwrap_or(0)
                {
                    let passed = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    libc::close(passed);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let truncated = (msg.msg_flags & libc::MSG_TRUNC != 0).then_some(n);
    Ok(Some(Datagram {
        len: n.min(buf.len()),
        truncated,
        pid: pid.filter(|&p| p > 0),
    }))
}

/// Sends one datagram to the unix socket a NOTIFY_SOCKET value names: a
/// path, or an abstract name written with a leading `@`. Never waits: a
/// receiver whose queue is full gives EAGAIN.
pub fn send_notification(address: &OsStr, message: &[u8]) -> io::Result<()> {
    let bytes = address.as_bytes();
    let (abstract_name, name) = match bytes.first() {
        Some(b'@') => (true, bytes.get(1..).unwrap_or_default()),
        Some(b'/') => (false, bytes),
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    };
    if name.len() > UNIX_PATH_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let start = usize::from(abstract_name);
    for (dst, &src) in sun.sun_path.iter_mut().skip(start).zip(name) {
        *dst = src as libc::c_char;
    }
    let offset = std::mem::size_of::<libc::sa_family_t>();
    // Abstract names are exactly as long as given; paths get their NUL
    // (name is at most UNIX_PATH_MAX bytes: no sum here overflows).
    let len = offset.saturating_add(name.len()).saturating_add(1);
    let fd = socket(libc::AF_UNIX, libc::SOCK_DGRAM)?;
    // SAFETY: message and sun are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            (&sun as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    cvt_size(sent).map(drop)
}

/// A datagram socket connected to the unix socket at `path`.
pub fn connect_unix_datagram(path: &Path) -> io::Result<OwnedFd> {
    connect_unix(path, libc::SOCK_DGRAM)
}

/// A non-blocking stream connection to the unix socket at `path`: EAGAIN
/// when its listener's queue is full, rather than a wait.
pub fn connect_unix_stream(path: &Path) -> io::Result<OwnedFd> {
    connect_unix(path, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)
}

fn connect_unix(path: &Path, ty: i32) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > UNIX_PATH_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let fd = socket(libc::AF_UNIX, ty)?;
    // SAFETY: an all-zero sockaddr_un is valid; the path fits with its NUL.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = sun_len(bytes.len());
    // SAFETY: sun is a valid sockaddr_un of at least `len` bytes.
    cvt_r(|| unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Sends `buf` on a connected socket without blocking or SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    cvt_size(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock before and after exec.
pub fn monotonic_ns() -> i128 {
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC always exists.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.tv_sec)
        .saturating_mul(1_000_000_000)
        .saturating_add(i128::from(ts.tv_nsec))
}

/// Replaces this process's program image (same pid). Returns only on
/// failure.
pub fn execve(path: &CStr, argv: &CStrArray, envp: &CStrArray) -> io::Error {
    // SAFETY: path, argv and envp are NUL-terminated and valid.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Makes orphaned descendants come back to us rather than to init
/// (PR_SET_CHILD_SUBREAPER), so that they are reaped and stopped by us.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: this prctl takes plain integers.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// A descriptor that becomes readable when process `pid` ends (it need
/// not be our child).
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = cvt(fd as libc::c_int)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The length of a sockaddr_un holding a path of `n` bytes (at most
/// UNIX_PATH_MAX, checked by the callers) and its NUL.
fn sun_len(n: usize) -> usize {
    std::mem::size_of::<libc::sa_family_t>()
        .saturating_add(n)
        .saturating_add(1)
}

/// The longest path a unix socket address holds (without the NUL).
pub const UNIX_PATH_MAX: usize = 107;

pub fn bind_unix(fd: BorrowedFd, path: &Path) -> io::Result<()> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > UNIX_PATH_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: an all-zero sockaddr_un is valid; sun_path then stays
    // NUL-terminated because bytes is shorter than it.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = sun_len(bytes.len());
    // SAFETY: sun is a valid sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn listen(fd: BorrowedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen has no memory-safety preconditions.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// Sets the file mode creation mask, returning the previous one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and has no memory-safety preconditions.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Whether `path` names a socket (without following a final symlink).
/// `path` as a C string, or EINVAL when it holds a NUL byte.
pub fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
