//! Sockets: IP and unix, binding, addresses, credentials, and the
//! `sockaddr_un` built in one place.
#![allow(unsafe_code)]

use super::*;

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
    bound_at(fd, path)
}

/// A unix stream socket listening for einhorn's control messages:
/// non-blocking, close-on-exec, bound to `path` or to an abstract name the
/// kernel picks. Returns it and its address, as [`notify_socket`] does.
pub fn control_socket(path: Option<&Path>) -> io::Result<(OwnedFd, String)> {
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    let bound = bound_at(fd, path)?;
    listen(bound.0.as_fd(), 64)?;
    Ok(bound)
}

/// Accepts a connection on a listening unix socket, non-blocking and
/// close-on-exec: it and its peer's pid (SO_PEERCRED, checked by the
/// kernel), or None when no connection waits.
pub fn accept_with_peer(fd: BorrowedFd) -> io::Result<Option<(OwnedFd, Option<Pid>)>> {
    // SAFETY: accept4 with null address pointers has no memory-safety
    // preconditions.
    let conn = cvt_r(|| unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    });
    let conn = match conn {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    // SAFETY: an all-zero ucred is valid; len says its size.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid out-pointers of the stated size.
    let got = cvt(unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    });
    let pid = got.ok().map(|_| cred.pid).filter(|&p| p > 0);
    Ok(Some((conn, pid)))
}

/// `fd` bound to `path`, or to an abstract name the kernel picks; with its
/// address as a NOTIFY_SOCKET-style value (the path, or `@name`).
fn bound_at(fd: OwnedFd, path: Option<&Path>) -> io::Result<(OwnedFd, String)> {
    if let Some(path) = path {
        bind_unix(fd.as_fd(), path)?;
        return Ok((fd, path.to_string_lossy().into_owned()));
    }
    bind_unix_name(fd.as_fd(), UnixName::Unnamed)?;
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
    let name = match bytes.first() {
        Some(b'@') => UnixName::Abstract(bytes.get(1..).unwrap_or_default()),
        Some(b'/') => UnixName::Path(bytes),
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    };
    let (sun, len) = sockaddr_un(name)?;
    let fd = socket(libc::AF_UNIX, libc::SOCK_DGRAM)?;
    // SAFETY: message and sun are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            (&sun as *const libc::sockaddr_un).cast(),
            len,
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
    let (sun, len) = sockaddr_un(UnixName::Path(path.as_os_str().as_bytes()))?;
    let fd = socket(libc::AF_UNIX, ty)?;
    // SAFETY: sun is a valid sockaddr_un of at least `len` bytes.
    cvt_r(|| unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len,
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

/// A unix socket address: a path, an abstract name (without its leading
/// NUL), or none (binding it asks the kernel for a unique abstract name).
enum UnixName<'a> {
    Path(&'a [u8]),
    Abstract(&'a [u8]),
    Unnamed,
}

/// The one place a `sockaddr_un` is built: the address and the length to
/// pass with it. A path gets its NUL; an abstract name is exactly as long
/// as given; ENAMETOOLONG where it does not fit.
fn sockaddr_un(name: UnixName) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let (bytes, start, nul) = match name {
        UnixName::Path(p) => (p, 0, 1),
        UnixName::Abstract(n) => (n, 1, 0),
        UnixName::Unnamed => (&[][..], 0, 0),
    };
    if bytes.len() > UNIX_PATH_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: an all-zero sockaddr_un is valid; a path then stays
    // NUL-terminated, being shorter than sun_path.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in sun.sun_path.iter_mut().skip(start).zip(bytes) {
        *dst = src as libc::c_char;
    }
    // At most 2 + 1 + 107 + 1: no sum here overflows.
    let len = std::mem::size_of::<libc::sa_family_t>()
        .saturating_add(start)
        .saturating_add(bytes.len())
        .saturating_add(nul);
    Ok((sun, len as libc::socklen_t))
}

/// The longest path a unix socket address holds (without the NUL).
pub const UNIX_PATH_MAX: usize = 107;

pub fn bind_unix(fd: BorrowedFd, path: &Path) -> io::Result<()> {
    bind_unix_name(fd, UnixName::Path(path.as_os_str().as_bytes()))
}

fn bind_unix_name(fd: BorrowedFd, name: UnixName) -> io::Result<()> {
    let (sun, len) = sockaddr_un(name)?;
    // SAFETY: sun is a valid sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addresses_are_as_long_as_their_kind_says() {
        let len = |name| sockaddr_un(name).map(|(_, len)| len as usize);
        let family = std::mem::size_of::<libc::sa_family_t>();
        assert_eq!(len(UnixName::Path(b"/a")).unwrap(), family + 3);
        assert_eq!(len(UnixName::Abstract(b"ab")).unwrap(), family + 3);
        assert_eq!(len(UnixName::Unnamed).unwrap(), family);
        let (sun, _) = sockaddr_un(UnixName::Abstract(b"x")).unwrap();
        assert_eq!(
            (sun.sun_path[0], sun.sun_path[1]),
            (0, b'x' as libc::c_char)
        );
        let long = [b'a'; UNIX_PATH_MAX + 1];
        assert!(sockaddr_un(UnixName::Path(&long)).is_err());
        assert!(sockaddr_un(UnixName::Path(&long[1..])).is_ok());
    }
}
