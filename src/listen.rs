//! Listen specs (`--port`, `--path`) and binding them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;

use crate::log::{errtext, original, warning};
use crate::sys;

/// The default listen backlog: what Server::Starter asks for, its C
/// library's SOMAXCONN, which is 4096 in glibc (musl's constant is still
/// 128). The kernel caps it at net.core.somaxconn, so both get the same
/// queue on the same machine.
pub const DEFAULT_BACKLOG: i32 = 4096;

/// The largest descriptor `=FD` may name.
const MAX_PLACEMENT: RawFd = 65535;

#[derive(Debug, Clone, PartialEq)]
pub enum Host {
    /// A bare port: 0.0.0.0, IPv4 only (as Server::Starter does).
    Any,
    /// An IPv4 address or a name resolved to one.
    V4(String),
    V6(Ipv6Addr),
    /// Every address, IPv6 and IPv4 (`[::]` without IPV6_V6ONLY).
    Dual,
    /// A name resolved to its first address, of either family.
    Name(String),
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

/// `[u]DIGITS`, as written: UDP or not, the digits, and the port number.
fn parse_port(s: &str) -> Result<(bool, &str, u16), String> {
    let (udp, digits) = match s.strip_prefix('u') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if !all_digits(digits) {
        return Err(SPEC_FORMS.into());
    }
    let port = digits
        .parse::<u16>()
        .map_err(|_| "port number out of range (0-65535)".to_string())?;
    Ok((udp, digits, port))
}

const SPEC_FORMS: &str = "expected [HOST:][u]PORT[=FD]";

/// The parts of a `--port` value, in the grammar Server::Starter reads:
/// surrounding white space ignored; `[u]PORT` or `HOST:[u]PORT`, where
/// HOST may stand in brackets and is IPv6 when it holds a colon; an
/// optional `=FD`, with white space allowed before the `=` only. The
/// port's digits are kept as written (`059005`): the spec workers see is
/// the one the user gave.
impl FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<PortSpec, String> {
        let s = s.trim_ascii();
        let (main, fd) = match s.rsplit_once('=') {
            Some((main, fd)) => {
                if !all_digits(fd) {
                    return Err(SPEC_FORMS.into());
                }
                let fd: RawFd = fd.parse().unwrap_or(RawFd::MAX);
                match fd {
                    1 | 2 => {
                        return Err(format!(
                            "descriptor {fd} is start_server's own stdout/stderr"
                        ));
                    }
                    _ if fd > MAX_PLACEMENT => return Err(format!("descriptor {fd} is too large")),
                    _ => (main.trim_ascii_end(), Some(fd)),
                }
            }
            None => (s, None),
        };
        let Some((host, port)) = main.rsplit_once(':') else {
            let (udp, digits, port) = parse_port(main)?;
            return Ok(PortSpec {
                spec: digits.to_string(),
                host: Host::Any,
                port,
                udp,
                fd,
            });
        };
        let (udp, digits, port) = parse_port(port.trim_ascii_start())?;
        // An opening bracket and the white space after it; a closing one
        // with white space on either side. Without brackets, white space
        // before the colon belongs to the host (and makes it unresolvable,
        // as in the original).
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.trim_ascii_start(),
            None => host,
        };
        let host = match host.trim_ascii_end().strip_suffix(']') {
            Some(inner) => inner,
            None => host,
        };
        if host.contains(']') {
            return Err(SPEC_FORMS.into());
        }
        if host.is_empty() {
            return Err("empty host".into());
        }
        if host.contains(':') {
            let ip: Ipv6Addr = host
                .parse()
                .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
            return Ok(PortSpec {
                spec: format!("[{host}]:{digits}"),
                host: Host::V6(ip),
                port,
                udp,
                fd,
            });
        }
        Ok(PortSpec {
            spec: format!("{host}:{digits}"),
            host: Host::V4(host.to_string()),
            port,
            udp,
            fd,
        })
    }
}

impl PortSpec {
    /// The address to bind (resolving a host name).
    pub fn address(&self) -> Result<SocketAddr, String> {
        let ip = match &self.host {
            Host::Any => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Host::V6(ip) => IpAddr::V6(*ip),
            Host::Dual => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            Host::Name(name) => (name.as_str(), self.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .map(|a| a.ip())
                .ok_or_else(|| format!("unable to resolve host '{name}'"))?,
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

/// A listening socket, sitting on the descriptor workers will find it on
/// (inherited: not close-on-exec).
#[derive(Debug)]
pub struct Listener {
    /// The spec as workers see it in SERVER_STARTER_PORT (`8080`,
    /// `127.0.0.1:8080`, `/tmp/app.sock`).
    pub name: String,
    /// Its LISTEN_FDNAMES name.
    pub fd_name: String,
    pub fd: OwnedFd,
    /// The socket file to remove at exit: a `--path` we bound ourselves
    /// (an adopted one belongs to whoever passed it to us).
    pub unix_path: Option<SocketFile>,
}

/// A unix socket file start_server created. It is removed at exit only
/// while it is still the one we bound: a file that replaced it (another
/// server's socket, anything else) is left alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketFile {
    pub path: PathBuf,
    /// Its device and inode numbers once bound; unknown (None) in a state
    /// handed over by an older version, when any socket there is ours.
    pub id: Option<(u64, u64)>,
}

impl SocketFile {
    /// The socket just bound at `path`.
    fn bound(path: PathBuf) -> SocketFile {
        let id = socket_file_id(&path);
        SocketFile { path, id }
    }

    /// Removes the file if it is still ours.
    pub fn remove(&self) {
        let now = socket_file_id(&self.path);
        if now.is_none() || (self.id.is_some() && now != self.id) {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            warning!("unable to remove {}: {}", self.path.display(), errtext(&e));
        }
    }
}

/// The device and inode numbers of the socket file at `path`, if there is
/// one (not following a symbolic link).
pub fn socket_file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| (m.dev(), m.ino()))
}

impl Listener {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Descriptor 3 + `i`: where socket `i` goes in systemd's layout.
pub fn nth_fd(i: usize) -> RawFd {
    RawFd::try_from(i).unwrap_or(RawFd::MAX).saturating_add(3)
}

/// Where the sockets go. When explicit `=FD` placements allow it, socket i
/// (ports first, then paths) goes on descriptor 3+i: the layout systemd's
/// LISTEN_FDS needs, and a worker sees the same numbers we hold. Otherwise
/// only the explicit placements are honoured and LISTEN_FDS cannot be
/// offered.
#[derive(Debug)]
pub struct Layout {
    targets: Vec<Option<RawFd>>,
    /// Sockets are on 3, 4, ... in order.
    pub systemd: bool,
}

impl Layout {
    pub fn plan(ports: &[PortSpec], sockets: usize) -> Layout {
        let placed: Vec<Option<RawFd>> = ports
            .iter()
            .map(|p| p.fd)
            .chain(std::iter::repeat(None))
            .take(sockets)
            .collect();
        let systemd = placed
            .iter()
            .enumerate()
            .all(|(i, p)| p.is_none_or(|fd| fd == nth_fd(i)));
        let targets = if systemd {
            (0..sockets).map(|i| Some(nth_fd(i))).collect()
        } else {
            placed
        };
        Layout { targets, systemd }
    }

    /// Moves `fd` above every target if it sits on one, so that placing a
    /// socket cannot clobber it.
    pub fn clear(&self, fd: OwnedFd) -> std::io::Result<OwnedFd> {
        self.clear_for(fd, None)
    }

    /// The same for socket `own`'s descriptor, left where it is when it
    /// already sits on that socket's own target (no other socket's).
    pub fn clear_for(&self, fd: OwnedFd, own: Option<usize>) -> std::io::Result<OwnedFd> {
        let target = own.and_then(|i| self.targets.get(i).copied().flatten());
        if target == Some(fd.as_raw_fd()) {
            return Ok(fd);
        }
        let targets: Vec<RawFd> = self.targets.iter().flatten().copied().collect();
        match targets.iter().max() {
            Some(&max) if targets.contains(&fd.as_raw_fd()) => {
                sys::dup_above(fd.as_raw_fd(), max.saturating_add(1))
            }
            _ => Ok(fd),
        }
    }
}

/// A socket passed to us by systemd-style socket activation.
#[derive(Debug)]
pub struct Inherited {
    fd: OwnedFd,
    addr: sys::LocalAddr,
    udp: bool,
    /// Its LISTEN_FDNAMES name, if one was given.
    fd_name: Option<String>,
}

impl Inherited {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The spec a socket at this address would have been given with.
    fn spec(&self) -> String {
        match &self.addr {
            sys::LocalAddr::Inet(a) if a.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => {
                a.port().to_string()
            }
            sys::LocalAddr::Inet(SocketAddr::V4(a)) => a.to_string(),
            sys::LocalAddr::Inet(SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
            sys::LocalAddr::Unix(Some(path)) => path.to_string_lossy().into_owned(),
            _ => format!("fd{}", self.fd.as_raw_fd()),
        }
    }
}

/// The sockets LISTEN_FDS passes to this process, if LISTEN_PID names
/// it. Descriptors that are not sockets are reported and left alone.
pub fn inherited(
    listen_fds: Option<&str>,
    listen_pid: Option<&str>,
    names: Option<&str>,
) -> Vec<Inherited> {
    let (Some(fds), Some(pid)) = (listen_fds, listen_pid) else {
        return Vec::new();
    };
    if pid.trim().parse::<sys::Pid>().ok() != Some(sys::getpid()) {
        return Vec::new();
    }
    let Ok(count) = fds.trim().parse::<RawFd>() else {
        warning!("ignoring LISTEN_FDS={fds}: not a number");
        return Vec::new();
    };
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    let mut out = Vec::new();
    for (i, fd) in (3..count.clamp(0, 1024).saturating_add(3)).enumerate() {
        let (owned, ty) = match sys::take_inherited_socket(fd) {
            Ok(socket) => socket,
            Err(e) => {
                warning!(
                    "ignoring inherited descriptor {fd} (LISTEN_FDS): not a socket ({})",
                    errtext(&e)
                );
                continue;
            }
        };
        let addr = sys::local_addr(fd).unwrap_or(sys::LocalAddr::Other);
        let fd_name = names
            .get(i)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string());
        out.push(Inherited {
            fd: owned,
            addr,
            udp: ty == libc::SOCK_DGRAM,
            fd_name,
        });
    }
    out
}

/// The sockets to listen on, in order, and where each must be placed.
pub struct Sockets<'a> {
    pub ports: &'a [PortSpec],
    pub paths: &'a [PathBuf],
    /// Descriptors already open on a socket (socketmaster's `fd://N`).
    pub open_fds: &'a [RawFd],
    pub backlog: i32,
    pub fd_names: &'a [String],
}

/// Takes every `--port` and `--path` from the inherited sockets when one
/// matches, binds the others, or adopts all inherited sockets when no
/// spec is given; then places them as `layout` says. On failure, removes
/// the socket files it created and says which spec failed and why.
pub fn open_all(
    s: &Sockets,
    layout: &Layout,
    inherited: Vec<Inherited>,
) -> Result<Vec<Listener>, String> {
    let mut listeners = Vec::new();
    let result = open_into(&mut listeners, s, layout, inherited);
    if result.is_err() {
        remove_socket_files(&listeners);
    }
    result.map(|()| listeners)
}

/// The LISTEN_FDNAMES name derived from a spec: the spec, with `:`
/// (systemd's separator) turned into `_`.
fn derived_fd_name(spec: &str) -> String {
    let name: String = spec
        .chars()
        .map(|c| {
            if c == ':' || !c.is_ascii_graphic() {
                '_'
            } else {
                c
            }
        })
        .collect();
    name.chars().take(255).collect()
}

fn open_into(
    out: &mut Vec<Listener>,
    s: &Sockets,
    layout: &Layout,
    mut inherited: Vec<Inherited>,
) -> Result<(), String> {
    let clear = |fd: OwnedFd, own: usize, what: &str| {
        layout
            .clear_for(fd, Some(own))
            .map_err(|e| format!("unable to move {what}: {}", errtext(&e)))
    };
    let take = |inherited: &mut Vec<Inherited>, want: &sys::LocalAddr, udp: bool| {
        let i = inherited
            .iter()
            .position(|h| &h.addr == want && h.udp == udp)?;
        Some(inherited.remove(i))
    };
    if s.ports.is_empty() && s.paths.is_empty() && s.open_fds.is_empty() {
        for h in inherited.drain(..) {
            let name = h.spec();
            let fd_name = h.fd_name.clone().unwrap_or_else(|| derived_fd_name(&name));
            out.push(Listener {
                name,
                fd_name,
                fd: clear(h.fd, out.len(), "an inherited socket")?,
                unix_path: None,
            });
        }
    }
    for p in s.ports {
        let addr = p
            .address()
            .map_err(|e| format!("unable to bind to {}: {e}", p.spec))?;
        let (fd, fd_name) = match take(&mut inherited, &sys::LocalAddr::Inet(addr), p.udp) {
            Some(h) => (h.fd, h.fd_name),
            None => (
                bind_port(addr, p.udp, p.host != Host::Dual, s.backlog)
                    .map_err(|e| format!("unable to bind to {}: {e}", p.spec))?,
                None,
            ),
        };
        out.push(Listener {
            name: p.spec.clone(),
            fd_name: fd_name.unwrap_or_else(|| derived_fd_name(&p.spec)),
            fd: clear(fd, out.len(), &p.spec)?,
            unix_path: None,
        });
        // Said here, before any --path is handled, as the original does;
        // the socket reaches that descriptor once all are bound.
        if let Some(target) = p.fd {
            original!("socket is duplicated to file descriptor {target}");
        }
    }
    for path in s.paths {
        let (fd, fd_name, ours) = match take(
            &mut inherited,
            &sys::LocalAddr::Unix(Some(path.clone())),
            false,
        ) {
            Some(h) => (h.fd, h.fd_name, false),
            None => (bind_path(path, s.backlog)?, None, true),
        };
        let name = path.to_string_lossy().into_owned();
        out.push(Listener {
            fd_name: fd_name.unwrap_or_else(|| derived_fd_name(&name)),
            name,
            fd: clear(fd, out.len(), &path.to_string_lossy())?,
            unix_path: ours.then(|| SocketFile::bound(path.clone())),
        });
    }
    for &fd in s.open_fds {
        let name = format!("fd://{fd}");
        // A socket LISTEN_FDS passed us is already ours: one owner.
        let owned =
            match inherited.iter().position(|h| h.fd.as_raw_fd() == fd) {
                Some(i) => inherited.remove(i).fd,
                None => sys::take_inherited_socket(fd)
                    .map_err(|_| {
                        format!(
                            "invalid -listen value '{name}': descriptor {fd} is not an open socket"
                        )
                    })?
                    .0,
            };
        out.push(Listener {
            fd_name: derived_fd_name(&name),
            name,
            fd: clear(owned, out.len(), "an open socket")?,
            unix_path: None,
        });
    }
    for h in inherited {
        warning!(
            "ignoring inherited socket {} on descriptor {}: it matches no --port or --path",
            h.spec(),
            h.fd.as_raw_fd()
        );
    }
    for (i, name) in s.fd_names.iter().enumerate() {
        if let Some(l) = out.get_mut(i) {
            l.fd_name = name.clone();
        }
    }
    place(out, layout)
}

/// A unix socket bound at `path`: a stale socket file there is removed
/// first, never a live server's (the original takes it over).
fn bind_path(path: &std::path::Path, backlog: i32) -> Result<OwnedFd, String> {
    let shown = path.display();
    if socket_file_id(path).is_some() {
        if in_use(path) {
            return Err(format!("{shown} is in use by another server"));
        }
        original!("removing existing socket file:{shown}");
        std::fs::remove_file(path).map_err(|e| {
            format!(
                "unable to remove existing socket file {shown}: {}",
                errtext(&e)
            )
        })?;
    }
    bind_unix(path, backlog).map_err(|e| format!("unable to bind to {shown}: {e}"))
}

/// Moves every socket (each clear of every target) to the descriptor
/// the layout gives it, and lets the workers inherit it.
fn place(out: &mut [Listener], layout: &Layout) -> Result<(), String> {
    for (i, l) in out.iter_mut().enumerate() {
        let Some(target) = layout.targets.get(i).copied().flatten() else {
            continue;
        };
        if l.raw() != target {
            l.fd = sys::dup2_owned(l.fd.as_fd(), target).map_err(|e| {
                format!(
                    "unable to place {} on descriptor {target}: {}",
                    l.name,
                    errtext(&e)
                )
            })?;
        }
    }
    for l in out.iter() {
        sys::set_cloexec(l.raw(), false)
            .map_err(|e| format!("unable to share {}: {}", l.name, errtext(&e)))?;
    }
    Ok(())
}

fn bind_port(addr: SocketAddr, udp: bool, v6only: bool, backlog: i32) -> Result<OwnedFd, String> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let ty = if udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let io = |e: std::io::Error| errtext(&e);
    let fd = sys::socket(domain, ty).map_err(io)?;
    sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(io)?;
    if addr.is_ipv6() {
        sys::setsockopt_int(
            fd.as_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(v6only),
        )
        .map_err(io)?;
    }
    sys::bind_inet(fd.as_fd(), &addr).map_err(io)?;
    if !udp {
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

/// Removes the unix socket files of `listeners` that are still ours.
pub fn remove_socket_files(listeners: &[Listener]) {
    for file in listeners.iter().filter_map(|l| l.unix_path.as_ref()) {
        file.remove();
    }
}

/// Whether a server accepts connections on the unix socket at `path`:
/// it takes one, or its queue is full (EAGAIN), or it is a datagram
/// socket that someone has bound (EPROTOTYPE). A stale file refuses.
fn in_use(path: &std::path::Path) -> bool {
    match sys::connect_unix_stream(path) {
        Ok(_) => true,
        Err(e) => matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EPROTOTYPE)),
    }
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
        // The original's other forms: an IPv4 host in brackets, a lone
        // bracket, an unbracketed IPv6 address, white space around the
        // parts, and digits kept as written.
        for (given, shown, host) in [
            (
                "[127.0.0.1]:80",
                "127.0.0.1:80",
                Host::V4("127.0.0.1".into()),
            ),
            (
                "[127.0.0.1:80",
                "127.0.0.1:80",
                Host::V4("127.0.0.1".into()),
            ),
            (
                "127.0.0.1]:80",
                "127.0.0.1:80",
                Host::V4("127.0.0.1".into()),
            ),
            (
                "[localhost]:80",
                "localhost:80",
                Host::V4("localhost".into()),
            ),
            ("::1:80", "[::1]:80", Host::V6(Ipv6Addr::LOCALHOST)),
            ("[ ::1] : 80", "[::1]:80", Host::V6(Ipv6Addr::LOCALHOST)),
            ("[0:0::1]:80", "[0:0::1]:80", Host::V6(Ipv6Addr::LOCALHOST)),
            ("059005", "059005", Host::Any),
            (
                "127.0.0.1:0080",
                "127.0.0.1:0080",
                Host::V4("127.0.0.1".into()),
            ),
        ] {
            let p = spec(given);
            assert_eq!((p.spec.as_str(), &p.host), (shown, &host), "{given}");
        }
        assert_eq!(spec("059005").port, 59005);
        let p = spec(" u80 =5 ");
        assert_eq!((p.spec.as_str(), p.udp, p.fd), ("80", true, Some(5)));
        // White space before the colon stays in the host, as in the
        // original (where it then fails to resolve).
        assert_eq!(spec("127.0.0.1 :80").spec, "127.0.0.1 :80");
    }

    #[test]
    fn bad_specs() {
        for (s, why) in [
            ("70000", "range"),
            ("abc", "expected"),
            ("80=x", "expected"),
            (":80", "empty host"),
            ("[zz:1]:80", "IPv6"),
            ("[::1 ]:80", "IPv6"),
            ("[]:80", "empty host"),
            ("80= 5", "expected"),
            ("u 80", "expected"),
            ("[a]b]:80", "expected"),
            ("80=1", "stdout"),
            ("80=99999999", "too large"),
            ("host:", "expected"),
        ] {
            let err = s.parse::<PortSpec>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }
}
