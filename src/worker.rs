//! The server side: what a Rust server run under start_server (or under
//! anything that speaks the same conventions) uses to take the sockets it
//! inherits, to say it is ready, and to shut down gracefully.
//!
//! [`listeners`] finds the sockets through whichever convention the
//! environment carries: Server::Starter's `SERVER_STARTER_PORT`, systemd's
//! `LISTEN_FDS` (only when `LISTEN_PID` is this process), or einhorn's
//! `EINHORN_FD_COUNT` / `EINHORN_FDS`. [`ready`] sends `READY=1` to
//! `NOTIFY_SOCKET`, as sd_notify does. [`Shutdown`] turns SIGTERM into an
//! event, so that a server stops accepting before it exits.
//!
//! ```
//! use start_server::worker;
//!
//! // What start_server passes: each socket's spec and descriptor.
//! let pairs = worker::parse_server_starter_port("127.0.0.1:8080=3;/tmp/app.sock=4").unwrap();
//! assert_eq!(pairs[0], ("127.0.0.1:8080".to_string(), 3));
//!
//! // Only descriptors this process inherited can be taken, and each once:
//! // one the program opened itself already has an owner.
//! let own = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let fd = std::os::fd::AsRawFd::as_raw_fd(&own);
//! let env = |name: &str| (name == "SERVER_STARTER_PORT").then(|| format!("127.0.0.1:8080={fd}"));
//! assert!(worker::listeners_from(&env).is_err());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A complete server, `examples/hello.rs`, serves until SIGTERM:
//!
//! ```no_run
//! use start_server::worker::{self, Event, Shutdown, Socket};
//! use std::os::fd::AsFd;
//!
//! // Block the shutdown signals first, before any thread exists.
//! let shutdown = Shutdown::new()?;
//! let listeners = worker::listeners()?;
//! let Socket::Tcp(tcp) = &listeners[0].socket else { panic!("not TCP") };
//! tcp.set_nonblocking(true)?;
//! worker::ready()?; // with --readiness=notify, the hand-over happens now
//! loop {
//!     match shutdown.wait(&[tcp.as_fd()])? {
//!         Event::Shutdown(_) => break, // stop accepting, finish in-flight work
//!         Event::Readable(_) => while let Ok((conn, _)) = tcp.accept() { drop(conn) },
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use crate::sys;

/// An inherited socket, as the std type it is.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Unix(UnixListener),
}

/// One inherited socket and the name start_server gave it (the `--port`
/// or `--path` spec: `8080`, `127.0.0.1:8080`, `[::1]:8080`, a path).
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub socket: Socket,
}

/// Parses SERVER_STARTER_PORT (`SPEC=FD` pairs joined by `;`).
pub fn parse_server_starter_port(value: &str) -> Result<Vec<(String, RawFd)>, String> {
    value
        .split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, fd) = pair
                .rsplit_once('=')
                .ok_or_else(|| format!("'{pair}' is not SPEC=FD"))?;
            let fd = fd
                .parse()
                .map_err(|_| format!("'{pair}': '{fd}' is not a descriptor"))?;
            Ok((name.to_string(), fd))
        })
        .collect()
}

/// Takes the sockets this process was given, as the environment
/// describes them (see [`listeners_from`]). The returned values own the
/// descriptors: a second call finds them taken.
pub fn listeners() -> io::Result<Vec<Listener>> {
    listeners_from(&|name| std::env::var(name).ok())
}

/// Takes the sockets described by `env`, a variable lookup: from
/// SERVER_STARTER_PORT if it is set (names: the specs); else from
/// LISTEN_FDS, if LISTEN_PID is this process (names: LISTEN_FDNAMES);
/// else from EINHORN_FD_COUNT and EINHORN_FD_0... or the older EINHORN_FDS
/// (names: the sockets' addresses). Fails when none is set, or when a
/// named descriptor is not an open socket, or was not inherited (this
/// process was not started with it open), or is already taken: a
/// descriptor has one owner. The descriptors become close-on-exec:
/// whatever the server runs does not inherit them.
pub fn listeners_from(env: &dyn Fn(&str) -> Option<String>) -> io::Result<Vec<Listener>> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    if let Some(value) = env("SERVER_STARTER_PORT") {
        let pairs = parse_server_starter_port(&value).map_err(invalid)?;
        return pairs
            .into_iter()
            .map(|(name, fd)| adopt(Some(name), fd))
            .collect();
    }
    if let Some(count) = env("LISTEN_FDS") {
        let pid = env("LISTEN_PID").and_then(|p| p.trim().parse::<u32>().ok());
        if pid != Some(std::process::id()) {
            return Ok(Vec::new());
        }
        let count: RawFd = count
            .trim()
            .parse()
            .map_err(|_| invalid(format!("LISTEN_FDS={count}")))?;
        let names = env("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        return (3..count.max(0).saturating_add(3))
            .map(|fd| {
                adopt(
                    names.next().filter(|n| !n.is_empty()).map(str::to_string),
                    fd,
                )
            })
            .collect();
    }
    let fds: Vec<RawFd> = if let Some(count) = env("EINHORN_FD_COUNT") {
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| invalid(format!("EINHORN_FD_COUNT={count}")))?;
        (0..count)
            .map(|i| {
                let var = format!("EINHORN_FD_{i}");
                env(&var)
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| invalid(format!("{var} is missing")))
            })
            .collect::<io::Result<_>>()?
    } else if let Some(list) = env("EINHORN_FDS") {
        list.split_whitespace()
            .map(|f| {
                f.parse()
                    .map_err(|_| invalid(format!("EINHORN_FDS={list}")))
            })
            .collect::<io::Result<_>>()?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no sockets were passed: none of SERVER_STARTER_PORT, LISTEN_FDS, EINHORN_FDS is set",
        ));
    };
    fds.into_iter().map(|fd| adopt(None, fd)).collect()
}

/// Sends `state` (`READY=1`, `STATUS=...`, several lines at once if need
/// be) to the socket NOTIFY_SOCKET names. `Ok(false)` when it is not set:
/// nobody is listening, which is not an error.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        None => Ok(false),
        Some(socket) => notify_to(&socket, state).map(|()| true),
    }
}

/// Sends `state` to `socket`: a path, or an abstract name written `@name`.
///
/// ```
/// use start_server::worker;
/// use std::os::unix::net::UnixDatagram;
///
/// let path = std::env::temp_dir().join(format!("notify-example-{}", std::process::id()));
/// let supervisor = UnixDatagram::bind(&path)?;
/// worker::notify_to(path.as_os_str(), "READY=1\nSTATUS=serving")?;
/// let mut buf = [0; 64];
/// let n = supervisor.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
/// std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn notify_to(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    sys::send_notification(socket, state.as_bytes())
}

/// Leaves the caller's session and process group for a new session of
/// its own, as a daemon does (`setsid`). Fails for a process group
/// leader.
pub fn new_session() -> io::Result<()> {
    sys::setsid()
}

/// Says the server is ready to serve: `notify("READY=1")`.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// A socket's name from its address: `127.0.0.1:8080`, a unix path, or
/// `fdN`.
fn address_name(fd: RawFd) -> String {
    match sys::local_addr(fd) {
        Ok(sys::LocalAddr::Inet(a)) => a.to_string(),
        Ok(sys::LocalAddr::Unix(Some(p))) => p.to_string_lossy().into_owned(),
        _ => format!("fd{fd}"),
    }
}

/// Takes descriptor `fd` as a socket named `name` (or by its address).
fn adopt(name: Option<String>, fd: RawFd) -> io::Result<Listener> {
    let name = name.unwrap_or_else(|| address_name(fd));
    let (owned, ty): (OwnedFd, i32) =
        sys::take_inherited_socket(fd).map_err(|e| match e.raw_os_error() {
            Some(libc::EBADF) => io::Error::new(
                io::ErrorKind::NotFound,
                format!("descriptor {fd} is not open"),
            ),
            // Each inherited descriptor has one owner: the first taker.
            Some(libc::EBUSY) => io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("descriptor {fd} ({name}) was not inherited, or is already taken"),
            ),
            _ => io::Error::new(
                e.kind(),
                format!("descriptor {fd} ({name}) is not a socket"),
            ),
        })?;
    let domain = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    // Not inherited further by whatever the server itself runs.
    sys::set_cloexec(owned.as_raw_fd(), true)?;
    let socket = match (domain, ty) {
        (libc::AF_UNIX, libc::SOCK_STREAM) => Socket::Unix(UnixListener::from(owned)),
        (_, libc::SOCK_DGRAM) => Socket::Udp(UdpSocket::from(owned)),
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) => {
            Socket::Tcp(TcpListener::from(owned))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: descriptor {fd} is an unsupported kind of socket"),
            ));
        }
    };
    Ok(Listener { name, socket })
}

/// What [`Shutdown::wait`] saw.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// SIGTERM, SIGINT or SIGQUIT arrived (the number).
    Shutdown(i32),
    /// The socket at this index is readable.
    Readable(usize),
}

/// The shutdown signals (TERM, INT, QUIT), taken as events instead of
/// killing the process.
pub struct Shutdown {
    fd: OwnedFd,
}

impl Shutdown {
    /// Blocks TERM, INT and QUIT in the calling thread. Call it in `main`
    /// before starting any thread, so that every thread inherits the mask.
    pub fn new() -> io::Result<Shutdown> {
        let mut set = sys::SigSet::empty();
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
            set.add(sig);
        }
        sys::sigprocmask_set(&set)?;
        Ok(Shutdown {
            fd: sys::signalfd(&set)?,
        })
    }

    /// Waits until a shutdown signal arrives or one of `sockets` is
    /// readable. A signal wins over readable sockets.
    pub fn wait(&self, sockets: &[BorrowedFd]) -> io::Result<Event> {
        let mut fds = vec![libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        fds.extend(sockets.iter().map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        loop {
            sys::poll(&mut fds, None)?;
            if let Some((sig, _)) = sys::signalfd_read(std::os::fd::AsFd::as_fd(&self.fd))? {
                return Ok(Event::Shutdown(sig));
            }
            if let Some(i) = fds.iter().skip(1).position(|f| f.revents != 0) {
                return Ok(Event::Readable(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_variable() {
        assert_eq!(
            parse_server_starter_port("8080=3;[::1]:81=4;/tmp/s=5").unwrap(),
            [
                ("8080".to_string(), 3),
                ("[::1]:81".to_string(), 4),
                ("/tmp/s".to_string(), 5)
            ]
        );
        assert!(parse_server_starter_port("").unwrap().is_empty());
        assert!(parse_server_starter_port("8080").is_err());
        assert!(parse_server_starter_port("8080=x").is_err());
    }

    #[test]
    fn listen_fds_for_another_process_gives_nothing() {
        let env = |name: &str| match name {
            "LISTEN_FDS" => Some("1".to_string()),
            "LISTEN_PID" => Some("1".to_string()),
            _ => None,
        };
        assert!(listeners_from(&env).unwrap().is_empty());
        assert_eq!(
            listeners_from(&|_| None).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn sockets_without_a_name_are_named_by_address() {
        use std::os::fd::AsRawFd;
        let own = UdpSocket::bind("127.0.0.1:0").unwrap();
        let name = address_name(own.as_raw_fd());
        assert!(name.starts_with("127.0.0.1:"), "{name}");
    }

    /// A descriptor the program opened itself already has an owner: the
    /// library never takes it (that would make a second one).
    #[test]
    fn a_descriptor_that_was_not_inherited_is_not_taken() {
        use std::os::fd::AsRawFd;
        let own = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = own.as_raw_fd();
        let env = |name: &str| match name {
            "EINHORN_FD_COUNT" => Some("1".to_string()),
            "EINHORN_FD_0" => Some(fd.to_string()),
            _ => None,
        };
        let err = listeners_from(&env).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        // Still ours, still open.
        own.send_to(b"x", own.local_addr().unwrap()).unwrap();
    }
}
