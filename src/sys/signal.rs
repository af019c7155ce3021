//! Signal masks, dispositions and the signalfd.
#![allow(unsafe_code)]

use super::*;

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

/// The kernel's `struct sigaction` (x86_64 and others without
/// sa_restorer quirks for SIG_DFL): handler, flags, restorer, mask.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// rt_sigaction(2) itself, not the C library's wrapper, which refuses the
/// numbers it reserves for itself (32-34): an ignored disposition
/// inherited from our parent there would otherwise stay ignored in every
/// worker. Sets `sig` to SIG_DFL when `reset`; the previous disposition's
/// handler.
fn rt_sigaction(sig: i32, reset: bool) -> io::Result<libc::sighandler_t> {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let mut old = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let new: *const KernelSigaction = match reset {
        true => &default,
        false => std::ptr::null(),
    };
    // SAFETY: new is null or a valid kernel sigaction for the duration
    // of the call; old is valid and writable; the size is the kernel's
    // sigset size (8 bytes).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig as libc::c_long,
            new,
            &mut old as *mut KernelSigaction,
            8 as libc::c_long,
        )
    };
    match ret {
        0 => Ok(old.handler),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Sets the disposition of `sig` to SIG_DFL.
pub fn reset_disposition(sig: i32) -> io::Result<()> {
    rt_sigaction(sig, true).map(drop)
}

/// Whether `sig`'s disposition is SIG_IGN (false where it cannot be
/// read).
pub fn is_ignored(sig: i32) -> bool {
    rt_sigaction(sig, false).is_ok_and(|handler| handler == libc::SIG_IGN)
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
