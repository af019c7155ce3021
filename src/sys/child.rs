//! The worker's birth: the script prepared before the clone, and the
//! child that runs it and executes the worker, allocating nothing.
#![allow(unsafe_code)]

use super::*;
use std::cell::UnsafeCell;
use std::sync::atomic::AtomicBool;

/// A NULL-terminated array of C strings, as `execve` takes it: strings
/// made here, one after another in a single buffer, and strings of the
/// environment we were given, where they are. Built before the clone, so
/// that the child only reads it (but for the pid slot).
pub struct CStrArray {
    /// Each string made here, with its NUL.
    bytes: Vec<u8>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStrArray {
    /// The array of these strings.
    pub fn new(strings: &[CString]) -> CStrArray {
        let size = strings.iter().map(|s| s.as_bytes_with_nul().len()).sum();
        let mut b = CStrArrayBuilder::with_capacity(strings.len(), size);
        for s in strings {
            b.push(&[s.as_bytes()]);
        }
        b.finish()
    }

    pub(super) fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }

    /// The strings, without their NULs, as the pointers find them; each
    /// made here is in the buffer, in order.
    #[cfg(test)]
    pub fn strings(&self) -> Vec<&[u8]> {
        let range = self.bytes.as_ptr_range();
        let mut made = 0;
        let mut out = Vec::new();
        for &ptr in &self.ptrs[..self.ptrs.len() - 1] {
            // SAFETY: every pointer but the last is to a NUL-terminated
            // string, in the buffer or given for the life of the process.
            let s = unsafe { CStr::from_ptr(ptr) }.to_bytes();
            if range.contains(&ptr.cast()) {
                assert_eq!(ptr, self.bytes[made..].as_ptr().cast());
                made += s.len() + 1;
            }
            out.push(s);
        }
        assert_eq!(made, self.bytes.len());
        assert!(self.ptrs.last().unwrap().is_null());
        out
    }
}

/// Makes a [`CStrArray`] one string at a time: two allocations in all
/// when the capacities given are enough.
pub struct CStrArrayBuilder {
    bytes: Vec<u8>,
    strings: Vec<Place>,
}

/// Where a string of the array is.
enum Place {
    /// In the buffer, from this offset.
    Made(usize),
    /// Where it was given.
    Given(*const libc::c_char),
}

/// Whether `bytes` holds a NUL: eight bytes at a time (the byte-wise
/// search is what a size-optimised core library does, and every
/// variable of every worker's environment goes through here).
fn holds_nul(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    let found = words.by_ref().any(|w| {
        <[u8; 8]>::try_from(w).is_ok_and(|w| {
            let w = u64::from_ne_bytes(w);
            w.wrapping_sub(ONES) & !w & HIGHS != 0
        })
    });
    found || words.remainder().contains(&0)
}

/// `bytes` with `part` appended, in one copy: the size-optimised standard
/// library's `extend_from_slice` copies byte by byte.
fn append(bytes: &mut Vec<u8>, part: &[u8]) {
    bytes.reserve(part.len());
    let len = bytes.len();
    // SAFETY: reserve made room for part.len() bytes after the first len;
    // part is borrowed apart from bytes, so the two do not overlap; the
    // new length covers exactly the bytes written.
    unsafe {
        std::ptr::copy_nonoverlapping(part.as_ptr(), bytes.as_mut_ptr().add(len), part.len());
        bytes.set_len(len.saturating_add(part.len()));
    }
}

impl CStrArrayBuilder {
    /// Room for `strings` strings in all, and `bytes` bytes of those made
    /// here.
    pub fn with_capacity(strings: usize, bytes: usize) -> CStrArrayBuilder {
        CStrArrayBuilder {
            bytes: Vec::with_capacity(bytes),
            strings: Vec::with_capacity(strings),
        }
    }

    /// Appends a string of the environment we were given, uncopied.
    pub fn push_given(&mut self, s: EnvString) {
        self.strings.push(Place::Given(s.as_ptr()));
    }

    /// Appends the string that `parts` make, joined; returns where it
    /// starts in the buffer, or None (and appends nothing) when a part
    /// holds a NUL.
    pub fn push(&mut self, parts: &[&[u8]]) -> Option<usize> {
        let start = self.bytes.len();
        for p in parts {
            append(&mut self.bytes, p);
        }
        // One search over the string as appended, taken back if it holds
        // a NUL.
        if holds_nul(self.bytes.get(start..).unwrap_or_default()) {
            self.bytes.truncate(start);
            return None;
        }
        self.bytes.push(0);
        self.strings.push(Place::Made(start));
        Some(start)
    }

    pub fn finish(self) -> CStrArray {
        // The pointers stay valid when the buffer's Vec moves into the
        // array: its bytes live in their own heap allocation, which
        // nothing resizes afterwards.
        let base = self.bytes.as_ptr();
        let mut ptrs = Vec::with_capacity(self.strings.len().saturating_add(1));
        ptrs.extend(self.strings.iter().map(|s| match s {
            Place::Made(start) => base.wrapping_add(*start).cast(),
            Place::Given(s) => *s,
        }));
        ptrs.push(std::ptr::null());
        CStrArray {
            bytes: self.bytes,
            ptrs,
        }
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
    /// Where in envp's buffer the child writes its own pid in decimal,
    /// NUL-terminated (LISTEN_PID's value): there must be room for
    /// PID_DIGITS bytes and the NUL.
    pub pid_slot: Option<usize>,
    /// Lead a process group of its own (so that the group, the child and
    /// whatever it starts, can be signalled as one).
    pub new_group: bool,
    /// The signal the child gets when this process dies, and this
    /// process's pid, to tell whether it died before the child asked.
    pub pdeathsig: Option<(i32, Pid)>,
}

/// Room a pid slot needs: the digits of the largest pid_t.
pub const PID_DIGITS: usize = 10;

/// The steps of the child's script that can fail (a [`Failure`] names
/// one).
pub const STEP_FDS: u8 = 1;
pub const STEP_CHDIR: u8 = 2;
pub const STEP_EXEC: u8 = 3;
pub const STEP_IDS: u8 = 4;

/// The child's stack: child_run needs well under a page.
const STACK: usize = 16 * 1024;

/// A stack for the child in static memory, used by one child at a time:
/// only the pages the child touches (the top one) are ever faulted in, and
/// that once for the process's life. A stack array in the parent's frame
/// would be probed page by page (the compiler touches every page of a
/// frame that large), four page faults on every start.
#[repr(C, align(16))]
struct ChildStack {
    bytes: UnsafeCell<MaybeUninit<[u8; STACK]>>,
    /// Whether a child runs on `bytes` now (only threads of a test binary
    /// can find it so; they get a stack of their own). After the bytes,
    /// next to the top of the stack, the only part a child uses: one page
    /// for both, and for the statics that follow.
    busy: AtomicBool,
}

// SAFETY: the bytes are only ever used by the one child that holds
// `busy`, through a pointer handed to clone.
unsafe impl Sync for ChildStack {}

static CHILD_STACK: ChildStack = ChildStack {
    bytes: UnsafeCell::new(MaybeUninit::uninit()),
    busy: AtomicBool::new(false),
};

/// How the child's script failed, when it did: `(step, errno)`.
pub type Failure = (u8, i32);

/// Forks a child that runs `script` and execs. Returns the child's pid
/// and, when its script failed (the child then exits 127 for ENOENT, 126
/// otherwise), the step that failed and its errno.
///
/// The child is made the way posix_spawn makes it: a clone that shares
/// this process's memory and runs on a stack of its own while this
/// process waits for it to exec or exit (CLONE_VM | CLONE_VFORK). No page
/// table is copied and no page faults in on either side, which a fork of
/// even this small process costs. The child writes only to its stack, to
/// the script (its pid in the environment), which this process drops
/// afterwards, and, on failure, to the word that says so. This call
/// returns once the child has executed (past the point where execve can
/// still fail: the new program runs, or the kernel kills the child) or
/// exited, so what that word holds then is the outcome: nothing to wait
/// for, no pipe to watch.
pub fn fork_exec(script: &mut ChildScript) -> io::Result<(Pid, Option<Failure>)> {
    /// What the child's entry point is handed.
    struct Start<'a> {
        script: &'a mut ChildScript,
        /// 0, or the failure: `1 << 40 | step << 32 | errno`.
        failure: AtomicU64,
    }
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: arg is the &mut Start that fork_exec passed to clone,
        // alive until the child execs or exits: the parent is suspended
        // until then (CLONE_VFORK).
        let start = unsafe { &mut *arg.cast::<Start>() };
        child_run(start.script, &start.failure)
    }
    let mut start = Start {
        script,
        failure: AtomicU64::new(0),
    };
    let mut own: Option<Box<MaybeUninit<[u8; STACK]>>> = None;
    let shared = !CHILD_STACK.busy.swap(true, Ordering::Acquire);
    let base: *mut u8 = match shared {
        true => CHILD_STACK.bytes.get().cast(),
        false => own.insert(Box::new_uninit()).as_mut_ptr().cast(),
    };
    // The stack grows down from its end (16-byte aligned, as the ABI
    // wants; the C library aligns it again).
    let top = base.wrapping_add(STACK);
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: entry runs only async-signal-safe calls (dup, dup2, fcntl,
    // setpgid, chdir, sigprocmask, execve, _exit, raw credential
    // syscalls) on memory prepared before the clone, on a stack of its own
    // (STACK bytes below `top`, used by no one else until this call
    // returns), and never returns. With CLONE_VFORK this thread resumes
    // only once the child has executed or exited, so nothing the child
    // reads changes under it. Every catchable asynchronous signal is
    // blocked (main blocks them first), so no handler runs in the child on
    // shared memory.
    let pid = unsafe {
        libc::clone(
            entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut start).cast(),
        )
    };
    if shared {
        CHILD_STACK.busy.store(false, Ordering::Release);
    }
    let pid = cvt(pid)?;
    if start.script.new_group {
        // The child does the same: whichever runs first, the group exists
        // before anyone can signal it. Once the child has executed, this
        // fails with EACCES, and the child has done it.
        // SAFETY: setpgid has no memory-safety preconditions.
        unsafe { libc::setpgid(pid, pid) };
    }
    let failure = start.failure.load(Ordering::SeqCst);
    let failed = (failure != 0).then_some(((failure >> 32) as u8, failure as u32 as i32));
    Ok((pid, failed))
}

/// The child's fixed script. Never returns.
fn child_run(script: &mut ChildScript, failure: &AtomicU64) -> ! {
    let fail = |step: u8, errno: i32| -> ! {
        failure.store(
            1 << 40 | u64::from(step) << 32 | u64::from(errno as u32),
            Ordering::SeqCst,
        );
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
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
    // After the credentials, whose change clears it.
    if let Some((sig, parent)) = script.pdeathsig {
        // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number reads
        // no memory, and cannot fail for a valid signal (the parser
        // checked it); getppid and kill are async-signal-safe.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong);
            // The parent died before the request took hold: the signal
            // it would have sent, now.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), sig);
            }
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

/// In the child: its own pid in decimal, NUL-terminated, at byte `at` of
/// envp's buffer (LISTEN_PID's value), without allocating.
fn write_own_pid(envp: &mut CStrArray, at: usize) {
    if envp.bytes.len() > at.saturating_add(PID_DIGITS) {
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
        // has executed); envp's pointers into this buffer (made by
        // finish) stay valid alongside as_mut_ptr.
        let dst = envp.bytes.as_mut_ptr();
        for (i, &d) in digits.iter().take(n).rev().enumerate() {
            // SAFETY: at + i < at + PID_DIGITS < bytes.len(), checked
            // above.
            unsafe { *dst.add(at.saturating_add(i)) = d };
        }
        // SAFETY: as above; the NUL ends the value.
        unsafe { *dst.add(at.saturating_add(n)) = 0 };
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

#[cfg(test)]
mod tests {
    #[test]
    fn holds_nul_finds_a_nul_anywhere() {
        assert!(!super::holds_nul(b""));
        assert!(!super::holds_nul(b"PATH=/usr/local/bin:/usr/bin:/bin"));
        for len in 1..40 {
            for at in 0..len {
                let mut v = vec![b'x'; len];
                v[at] = 0;
                assert!(super::holds_nul(&v), "{len} {at}");
            }
            assert!(!super::holds_nul(&vec![0x80; len]));
            assert!(!super::holds_nul(&vec![0x01; len]));
            assert!(!super::holds_nul(&vec![0xff; len]));
        }
    }
}
