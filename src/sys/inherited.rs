//! Descriptors start_server inherits: recorded once, at the first need,
//! each taken (owned) once.
#![allow(unsafe_code)]

use super::*;

//
// Descriptors this process was started with (from 3 up) belong to nobody
// until something takes them: sockets passed by LISTEN_FDS or
// SERVER_STARTER_PORT, descriptors a previous program image handed over.
// Which numbers they are is recorded once, at the first need, and each can
// be taken once: so safe code can neither create a second owner of an
// inherited descriptor nor take one the program opened itself.
//
// The record holds the descriptors open without FD_CLOEXEC. Every
// descriptor this program opens is close-on-exec from its creation (std
// and these wrappers ask for it), and exec closed the previous image's
// close-on-exec ones: so those are what our parent passed, and nothing of
// ours, as long as nothing of ours had the flag cleared before the record
// (start_server records, or closes everything, first thing in `run`; the
// listening sockets it shares with workers come later).
//
// A start that takes no descriptor (no LISTEN_FDS, no handed-over state,
// no fd:// socket) makes no record at all: everything from 3 up is closed
// at once, before anything of ours is opened ([`close_all_inherited`]),
// which spares start-up reading /proc.

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
    record_inherited();
    let mut out = Vec::new();
    for (w, word) in INHERITED.iter().enumerate() {
        let mut bits = word.load(Ordering::SeqCst);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits.wrapping_sub(1);
            out.push(w.saturating_mul(64).saturating_add(b) as RawFd);
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

/// The record, made once.
static RECORD: std::sync::Once = std::sync::Once::new();

/// Makes the record if it is not made yet (see above).
pub fn record_inherited() {
    RECORD.call_once(record_now);
}

/// Whether descriptor `fd` is open and not close-on-exec: inherited.
fn inherited_now(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC == 0
}

/// Records the descriptors from 3 up that are open and not close-on-exec,
/// listing /proc/self/fd with raw system calls, or probing each number
/// where /proc is missing.
fn record_now() {
    // SAFETY: open with a NUL-terminated literal path.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        for fd in 3..INHERITED_LIMIT as RawFd {
            if inherited_now(fd) {
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
            if fd != dir && inherited_now(fd) {
                mark_inherited(fd);
            }
        });
    }
    // SAFETY: dir was opened above and is closed once.
    unsafe { libc::close(dir) };
}

/// For a start that takes no inherited descriptor: closes every
/// descriptor from 3 up at once (close_range), so that none is recorded
/// and nothing is left to take. start_server calls it first thing in
/// `run`, before it opens anything from 3 up (nothing of ours is open
/// then: the runtime opens nothing, and standard input, output and error
/// are 0 to 2). Where the kernel has no close_range (before Linux 5.9), or
/// the record is already made, it closes what the record holds instead.
pub fn close_all_inherited() {
    // A close-on-exec descriptor 3 is ours (the first this program
    // opened): too late for closing everything; the record does it.
    // SAFETY: F_GETFD only queries the descriptor table.
    let ours_open = unsafe { libc::fcntl(3, libc::F_GETFD) } > 0;
    let mut fresh = false;
    if !ours_open {
        RECORD.call_once(|| fresh = true);
    }
    // SAFETY: close_range takes plain numbers; the record was just taken
    // as made (empty), so no later call can take any of these, and nothing
    // from 3 up is owned yet (see above).
    if fresh && unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
        return;
    }
    if fresh {
        record_now();
    }
    close_inherited(&[]);
}

/// Takes ownership of descriptor `fd`, which this process inherited (it
/// is in the record: open, not close-on-exec) and nothing has taken yet:
/// EBADF when it is not open, EBUSY when it is not inherited or already
/// taken.
pub fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    record_inherited();
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

/// Writes `parts` one after another, in one writev where the descriptor
/// takes them whole (a pipe does up to PIPE_BUF bytes in all, in one
/// piece), the rest as it comes otherwise. At most four parts.
pub fn write_parts(fd: RawFd, parts: &[&[u8]]) -> io::Result<()> {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; 4];
    for (v, part) in iov.iter_mut().zip(parts) {
        *v = libc::iovec {
            iov_base: part.as_ptr().cast_mut().cast(),
            iov_len: part.len(),
        };
    }
    let written = loop {
        // SAFETY: each iovec points at a live slice of its length (or is
        // empty); the kernel only reads them.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
        match cvt_size(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => break other?,
        }
    };
    // What a short write left, part by part.
    let mut skip = written;
    for part in parts.iter().take(iov.len()) {
        let done = skip.min(part.len());
        skip = skip.saturating_sub(done);
        write_all(fd, part.get(done..).unwrap_or_default())?;
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
