//! Descriptors: pipes, flags, reads and writes, dup2, polling.
#![allow(unsafe_code)]

use super::*;

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

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole stat into the buffer when it succeeds,
    // and only then is it read.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the buffer is initialised.
    Ok(unsafe { st.assume_init() })
}

/// The file type bits (`S_IFMT`) of what descriptor `fd` refers to.
pub fn file_type(fd: RawFd) -> io::Result<libc::mode_t> {
    Ok(fstat(fd)?.st_mode & libc::S_IFMT)
}

/// The inode number of what descriptor `fd` refers to (for a socket, the
/// number /proc shows as `socket:[N]`).
pub fn inode(fd: RawFd) -> io::Result<u64> {
    Ok(fstat(fd)?.st_ino)
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
