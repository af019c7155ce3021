//! The server side: what a Rust server run under start_server uses to
//! take the sockets it inherits, and to shut down gracefully.
//!
//! ```no_run
//! use start_server::worker::{self, Event, Shutdown, Socket};
//! use std::os::fd::AsFd;
//!
//! // Block the shutdown signals first, before any thread exists.
//! let shutdown = Shutdown::new().unwrap();
//! let listeners = worker::listeners().unwrap();
//! let Socket::Tcp(tcp) = &listeners[0].socket else { panic!("not TCP") };
//! tcp.set_nonblocking(true).unwrap();
//! loop {
//!     match shutdown.wait(&[tcp.as_fd()]).unwrap() {
//!         Event::Shutdown(_) => break, // stop accepting, finish in-flight work
//!         Event::Readable(_) => while let Ok((conn, _)) = tcp.accept() { drop(conn) },
//!     }
//! }
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

/// Takes the sockets named by SERVER_STARTER_PORT. Call it once: the
/// returned values own the descriptors.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let value = std::env::var("SERVER_STARTER_PORT").map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "SERVER_STARTER_PORT is not set: not started by start_server?",
        )
    })?;
    let pairs = parse_server_starter_port(&value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    pairs
        .into_iter()
        .map(|(name, fd)| adopt(name, fd))
        .collect()
}

fn adopt(name: String, fd: RawFd) -> io::Result<Listener> {
    let owned: OwnedFd = sys::adopt_inherited(fd).map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: descriptor {fd} is not open"),
        )
    })?;
    let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
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
            if let Some(sig) = sys::signalfd_read(std::os::fd::AsFd::as_fd(&self.fd))? {
                return Ok(Event::Shutdown(sig));
            }
            if let Some(i) = fds[1..].iter().position(|f| f.revents != 0) {
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
}
