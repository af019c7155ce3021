//! Listen specs (`--port`, `--path`) and binding them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;

use crate::log::{original, warning};
use crate::sys;

/// The largest descriptor `=FD` may name.
const MAX_PLACEMENT: RawFd = 65535;

#[derive(Debug, Clone, PartialEq)]
pub enum Host {
    /// A bare port: 0.0.0.0, IPv4 only (as Server::Starter does).
    Any,
    /// An IPv4 address or a name resolved to one.
    V4(String),
    V6(Ipv6Addr),
}

/// One `--port` value.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    /// The normalised form workers see in SERVER_STARTER_PORT: `8080`,
    /// `127.0.0.1:8080`, `[::1]:8080` (UDP specs lose their `u`, as in the
    /// original).
    pub spec: String,
    pub host: Host,
    pub port: u16,
    pub udp: bool,
    /// The descriptor to place the socket on (`=FD`).
    pub fd: Option<RawFd>,
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `[u]PORT`.
fn parse_port(s: &str) -> Result<(u16, bool), String> {
    let s = s.trim();
    let (udp, digits) = match s.strip_prefix('u') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if !all_digits(digits) {
        return Err("expected [HOST:][u]PORT[=FD]".into());
    }
    let port = digits
        .parse::<u16>()
        .map_err(|_| "port number out of range (0-65535)".to_string())?;
    Ok((port, udp))
}

impl FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<PortSpec, String> {
        let s = s.trim();
        let (main, fd) = match s.rsplit_once('=') {
            Some((main, fd)) if all_digits(fd.trim()) => {
                let fd: RawFd = fd.trim().parse().unwrap_or(RawFd::MAX);
                match fd {
                    1 | 2 => {
                        return Err(format!(
                            "descriptor {fd} is start_server's own stdout/stderr"
                        ));
                    }
                    _ if fd > MAX_PLACEMENT => return Err(format!("descriptor {fd} is too large")),
                    _ => (main.trim_end(), Some(fd)),
                }
            }
            Some(_) => return Err("expected [HOST:][u]PORT[=FD]".into()),
            None => (s, None),
        };
        let Some((host, port)) = main.rsplit_once(':') else {
            let (port, udp) = parse_port(main)?;
            return Ok(PortSpec {
                spec: port.to_string(),
                host: Host::Any,
                port,
                udp,
                fd,
            });
        };
        let (port, udp) = parse_port(port)?;
        let host = host.trim();
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let bare = bracketed.unwrap_or(host).trim();
        if bare.is_empty() {
            return Err("empty host".into());
        }
        if bare.contains(':') || bracketed.is_some() {
            let ip: Ipv6Addr = bare
                .parse()
                .map_err(|_| format!("'{bare}' is not an IPv6 address"))?;
            return Ok(PortSpec {
                spec: format!("[{bare}]:{port}"),
                host: Host::V6(ip),
                port,
                udp,
                fd,
            });
        }
        Ok(PortSpec {
            spec: format!("{bare}:{port}"),
            host: Host::V4(bare.to_string()),
            port,
            udp,
            fd,
        })
    }
}

impl PortSpec {
    fn address(&self) -> Result<SocketAddr, String> {
        let ip = match &self.host {
            Host::Any => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Host::V6(ip) => IpAddr::V6(*ip),
            Host::V4(name) => match name.parse::<Ipv4Addr>() {
                Ok(ip) => IpAddr::V4(ip),
                Err(_) => (name.as_str(), self.port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.find(SocketAddr::is_ipv4))
                    .map(|a| a.ip())
                    .ok_or_else(|| format!("unable to resolve host '{name}' to an IPv4 address"))?,
            },
        };
        Ok(SocketAddr::new(ip, self.port))
    }
}

/// A bound socket, sitting on the descriptor workers will find it on
/// (inherited: not close-on-exec).
#[derive(Debug)]
pub struct Listener {
    /// The spec as workers see it (`8080`, `/tmp/app.sock`).
    pub name: String,
    pub fd: OwnedFd,
    /// The socket file to remove at exit, for `--path`.
    pub unix_path: Option<PathBuf>,
}

impl Listener {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Moves `fd` out of the way of every `=FD` placement, so that placing a
/// socket later cannot clobber it.
pub fn clear_of_placements(fd: OwnedFd, ports: &[PortSpec]) -> std::io::Result<OwnedFd> {
    let targets: Vec<RawFd> = ports.iter().filter_map(|p| p.fd).collect();
    match targets.iter().max() {
        Some(&max) if targets.contains(&fd.as_raw_fd()) => sys::dup_above(fd.as_raw_fd(), max + 1),
        _ => Ok(fd),
    }
}

/// Binds every `--port` and then every `--path`. On failure, removes the
/// socket files it created and says which spec failed and why.
pub fn bind_all(
    ports: &[PortSpec],
    paths: &[PathBuf],
    backlog: i32,
) -> Result<Vec<Listener>, String> {
    let mut listeners = Vec::new();
    let result = bind_into(&mut listeners, ports, paths, backlog);
    if result.is_err() {
        remove_socket_files(&listeners);
    }
    result.map(|()| listeners)
}

fn bind_into(
    out: &mut Vec<Listener>,
    ports: &[PortSpec],
    paths: &[PathBuf],
    backlog: i32,
) -> Result<(), String> {
    for p in ports {
        let fd = bind_port(p, backlog).map_err(|e| format!("unable to bind to {}: {e}", p.spec))?;
        let fd = clear_of_placements(fd, ports)
            .map_err(|e| format!("unable to move {}: {e}", p.spec))?;
        out.push(Listener {
            name: p.spec.clone(),
            fd,
            unix_path: None,
        });
    }
    // Only now place sockets: every socket is clear of every target.
    for (p, l) in ports.iter().zip(out.iter_mut()) {
        if let Some(target) = p.fd {
            l.fd = sys::dup2_owned(l.fd.as_fd(), target).map_err(|e| {
                format!(
                    "unable to place {} on descriptor {target}: {}",
                    p.spec,
                    errtext(&e)
                )
            })?;
            original!("socket is duplicated to file descriptor {target}");
        }
    }
    for path in paths {
        if sys::is_socket(path) {
            original!("removing existing socket file:{}", path.display());
            std::fs::remove_file(path).map_err(|e| {
                format!(
                    "unable to remove existing socket file {}: {}",
                    path.display(),
                    errtext(&e)
                )
            })?;
        }
        let fd = bind_unix(path, backlog)
            .map_err(|e| format!("unable to bind to {}: {e}", path.display()))?;
        let fd = clear_of_placements(fd, ports)
            .map_err(|e| format!("unable to move {}: {e}", path.display()))?;
        out.push(Listener {
            name: path.to_string_lossy().into_owned(),
            fd,
            unix_path: Some(path.clone()),
        });
    }
    for l in out.iter() {
        sys::set_cloexec(l.raw(), false)
            .map_err(|e| format!("unable to share {}: {}", l.name, errtext(&e)))?;
    }
    Ok(())
}

/// An io::Error's text without Rust's " (os error N)" suffix.
pub fn errtext(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => sys::strerror(errno),
        None => e.to_string(),
    }
}

fn bind_port(p: &PortSpec, backlog: i32) -> Result<OwnedFd, String> {
    let addr = p.address()?;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = if p.udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let io = |e: std::io::Error| errtext(&e);
    let fd = sys::socket(domain, ty).map_err(io)?;
    sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(io)?;
    if addr.is_ipv6() {
        sys::setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).map_err(io)?;
    }
    sys::bind_inet(fd.as_fd(), &addr).map_err(io)?;
    if !p.udp {
        sys::listen(fd.as_fd(), backlog).map_err(io)?;
    }
    Ok(fd)
}

fn bind_unix(path: &std::path::Path, backlog: i32) -> Result<OwnedFd, String> {
    let io = |e: std::io::Error| errtext(&e);
    let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM).map_err(io)?;
    // World-connectable, as in the original: access is the directory's job.
    let saved = sys::umask(0);
    let bound = sys::bind_unix(fd.as_fd(), path);
    sys::umask(saved);
    bound.map_err(io)?;
    if let Err(e) = sys::listen(fd.as_fd(), backlog) {
        let _ = std::fs::remove_file(path);
        return Err(errtext(&e));
    }
    Ok(fd)
}

/// Removes the unix socket files of `listeners` that are still sockets.
pub fn remove_socket_files(listeners: &[Listener]) {
    for path in listeners.iter().filter_map(|l| l.unix_path.as_ref()) {
        if sys::is_socket(path)
            && let Err(e) = std::fs::remove_file(path)
        {
            warning!("unable to remove {}: {}", path.display(), errtext(&e));
        }
    }
}

/// SERVER_STARTER_PORT: `SPEC=FD` pairs joined by `;`.
pub fn server_starter_port(listeners: &[Listener]) -> String {
    let pairs: Vec<String> = listeners
        .iter()
        .map(|l| format!("{}={}", l.name, l.raw()))
        .collect();
    pairs.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn specs() {
        let p = spec("8080");
        assert_eq!(
            (p.spec.as_str(), p.port, p.udp, p.fd),
            ("8080", 8080, false, None)
        );
        assert_eq!(p.host, Host::Any);
        let p = spec("127.0.0.1:8080=5");
        assert_eq!((p.spec.as_str(), p.fd), ("127.0.0.1:8080", Some(5)));
        let p = spec("[::1]:u443");
        assert_eq!((p.spec.as_str(), p.udp), ("[::1]:443", true));
        assert_eq!(p.host, Host::V6(Ipv6Addr::LOCALHOST));
        let p = spec("u53=0");
        assert_eq!((p.spec.as_str(), p.udp, p.fd), ("53", true, Some(0)));
        assert_eq!(spec("localhost:80").host, Host::V4("localhost".into()));
        assert_eq!(spec(" 80 ").spec, "80");
    }

    #[test]
    fn bad_specs() {
        for (s, why) in [
            ("70000", "range"),
            ("abc", "expected"),
            ("80=x", "expected"),
            (":80", "empty host"),
            ("[zz]:80", "IPv6"),
            ("80=1", "stdout"),
            ("80=99999999", "too large"),
            ("host:", "expected"),
        ] {
            let err = s.parse::<PortSpec>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }
}
