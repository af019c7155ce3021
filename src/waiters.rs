//! Whether a new worker waits on the listening sockets, as the kernel
//! shows it in /proc (`--readiness=accept`): the server needs no change.
//!
//! A process of the worker's tree (the worker and its descendants, any of
//! their threads) waits on a socket when:
//! - one of its epoll sets holds the socket for reading
//!   (`/proc/PID/fdinfo/EPFD` lists `tfd: N events: E ... ino: INODE`);
//!   this is how event loops wait (asyncio, libuv, Go, h2o);
//! - a thread is blocked in accept/accept4 on it, or in a read of it
//!   (recvfrom, recvmsg, recvmmsg, read: a UDP server), as
//!   `/proc/PID/task/TID/syscall` shows the call and its arguments;
//! - a thread is blocked in poll/ppoll or select/pselect6 with it among the
//!   descriptors read for input: the pollfd array or fd_set is read from
//!   the process's memory (process_vm_readv).
//!
//! Sockets are recognised by inode, so a dup counts. Only the worker's own
//! tree is looked at: old generations have the same sockets registered.
//!
//! What cannot be seen: a process whose /proc entries we may not read
//! (`hidepid`, another user without CAP_SYS_PTRACE, a non-dumpable
//! process), a /proc of another pid namespace or none at all, and waits
//! the kernel does not show this way (io_uring, a busy loop on a
//! non-blocking socket between calls). Those are said, never guessed.

use std::io;
use std::os::unix::ffi::OsStrExt;

use crate::log::errtext;
use crate::procs;
use crate::rules::Seen;
use crate::sys::{self, Pid};

/// Processes of one tree looked at, at most.
const TREE_MAX: usize = 4096;
/// Entries of a pollfd array read, at most.
const POLLFDS_MAX: usize = 4096;
/// Bits of an fd_set read, at most.
const FDSET_BITS_MAX: usize = 65536;

/// What one process shows.
#[derive(Debug, PartialEq)]
enum Found {
    Waiting,
    Nothing,
    /// Nothing, but it has an io_uring, whose waits do not show.
    IoUring,
}

/// Looks whether a process of `worker`'s tree waits on one of the sockets
/// with these inode numbers.
#[inline(never)]
pub fn look(worker: Pid, sockets: &[u64]) -> Seen {
    if sockets.is_empty() {
        return Seen::Unseen("there is no listening socket to wait on".into());
    }
    if !std::path::Path::new("/proc/self").exists() {
        return Seen::Unseen("/proc is not mounted".into());
    }
    if !procs::proc_is_ours() {
        return Seen::Unseen("/proc shows another pid namespace".into());
    }
    if !std::path::Path::new(&format!("/proc/{worker}")).exists() {
        return Seen::Unseen(format!(
            "/proc/{worker} is hidden (/proc mounted with hidepid?)"
        ));
    }
    let mut unseen = None;
    let mut uring = None;
    for pid in tree(worker) {
        match in_process(pid, sockets) {
            Ok(Found::Waiting) => return Seen::Waiting,
            Ok(Found::IoUring) => {
                uring.get_or_insert(pid);
            }
            Ok(Found::Nothing) => {}
            Err(why) => {
                unseen.get_or_insert(why);
            }
        }
    }
    match (unseen, uring) {
        (Some(why), _) => Seen::Unseen(why),
        (None, Some(pid)) => Seen::Unseen(format!(
            "process {pid} uses io_uring, whose waits /proc does not show"
        )),
        (None, None) => Seen::NotYet,
    }
}

/// `root` and its descendants, from each thread's `children` list; the
/// whole of /proc is read only where the kernel has no such list.
fn tree(root: Pid) -> Vec<Pid> {
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&pid) = out.get(i) {
        i = i.saturating_add(1);
        let tasks = format!("/proc/{pid}/task");
        let Ok(dir) = std::fs::read_dir(&tasks) else {
            continue;
        };
        for task in dir.flatten() {
            let text = match std::fs::read_to_string(task.path().join("children")) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound && pid == root => {
                    let mut all = vec![root];
                    all.extend(procs::descendants(root, &[]));
                    return all;
                }
                Err(_) => continue,
            };
            for child in text.split_whitespace().filter_map(|c| c.parse().ok()) {
                if out.len() < TREE_MAX && !out.contains(&child) {
                    out.push(child);
                }
            }
        }
    }
    out
}

/// Whether process `pid` waits on one of `sockets`; why it cannot be
/// seen. A process that has ended meanwhile shows nothing.
fn in_process(pid: Pid, sockets: &[u64]) -> Result<Found, String> {
    let gone_or = |path: &str, e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Ok(Found::Nothing),
        _ => Err(format!("unable to read {path}: {}", errtext(&e))),
    };
    let fd_dir = format!("/proc/{pid}/fd");
    let entries = match std::fs::read_dir(&fd_dir) {
        Ok(d) => d,
        Err(e) => return gone_or(&fd_dir, e),
    };
    let mut ours = Vec::new();
    let mut epolls = Vec::new();
    let mut uring = false;
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let target = match std::fs::read_link(entry.path()) {
            Ok(target) => target,
            // Closed meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                let path = entry.path();
                return Err(format!(
                    "unable to read {}: {}",
                    path.display(),
                    errtext(&e)
                ));
            }
        };
        match target.as_os_str().as_bytes() {
            b"anon_inode:[eventpoll]" => epolls.push(fd),
            b"anon_inode:[io_uring]" => uring = true,
            t => {
                if socket_inode(t).is_some_and(|ino| sockets.contains(&ino)) {
                    ours.push(fd);
                }
            }
        }
    }
    for epfd in epolls {
        let path = format!("/proc/{pid}/fdinfo/{epfd}");
        match std::fs::read_to_string(&path) {
            Ok(info) if epoll_reads(&info, sockets) => return Ok(Found::Waiting),
            Ok(_) => {}
            Err(e) => return gone_or(&path, e),
        }
    }
    if !ours.is_empty() {
        let tasks = format!("/proc/{pid}/task");
        let dir = match std::fs::read_dir(&tasks) {
            Ok(d) => d,
            Err(e) => return gone_or(&tasks, e),
        };
        for task in dir.flatten() {
            let path = task.path().join("syscall");
            match std::fs::read_to_string(&path) {
                Ok(text) if blocked_on(pid, &text, &ours) => return Ok(Found::Waiting),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(format!(
                        "unable to read {}: {}",
                        path.display(),
                        errtext(&e)
                    ));
                }
            }
        }
    }
    Ok(if uring {
        Found::IoUring
    } else {
        Found::Nothing
    })
}

/// The inode of a `socket:[N]` link target.
fn socket_inode(target: &[u8]) -> Option<u64> {
    let n = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// Whether an epoll set's fdinfo holds one of `sockets` for reading:
/// lines `tfd: 3 events: 19 data: ... pos:0 ino:1a2b sdev:8`.
fn epoll_reads(info: &str, sockets: &[u64]) -> bool {
    info.lines().filter(|l| l.starts_with("tfd:")).any(|line| {
        let field = |name: &str| {
            let mut words = line.split_whitespace();
            words.find(|w| w.starts_with(name)).and_then(|w| {
                let v = w.strip_prefix(name).filter(|v| !v.is_empty());
                v.or_else(|| words.next())
            })
        };
        let hex = |v: Option<&str>| v.and_then(|v| u64::from_str_radix(v, 16).ok());
        let events = hex(field("events:")).unwrap_or(0);
        let ino = hex(field("ino:"));
        events & libc::EPOLLIN as u64 != 0 && ino.is_some_and(|i| sockets.contains(&i))
    })
}

/// The calls that wait for one descriptor, given as their first argument.
const ONE_FD: &[libc::c_long] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_recvmmsg,
    libc::SYS_read,
];
/// The calls that wait for a pollfd array (pointer, count).
const POLL: &[libc::c_long] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    libc::SYS_ppoll,
];
/// The calls that wait for fd_sets (count, read set, ...).
const SELECT: &[libc::c_long] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    libc::SYS_pselect6,
];

/// Whether a thread whose `/proc/.../syscall` reads `text` is blocked
/// waiting to read one of descriptors `fds` of process `pid`.
fn blocked_on(pid: Pid, text: &str, fds: &[i32]) -> bool {
    let mut words = text.split_whitespace();
    // "running", or -1 (not in a system call): nothing to see.
    let Some(nr) = words.next().and_then(|n| n.parse::<libc::c_long>().ok()) else {
        return false;
    };
    let args: Vec<u64> = words
        .take(6)
        .filter_map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok())
        .collect();
    let (Some(&a1), Some(&a2)) = (args.first(), args.get(1)) else {
        return false;
    };
    if ONE_FD.contains(&nr) {
        return i32::try_from(a1).is_ok_and(|fd| fds.contains(&fd));
    }
    if POLL.contains(&nr) {
        return polls_for_input(pid, a1, a2, fds);
    }
    if SELECT.contains(&nr) {
        return selects_for_input(pid, a1, a2, fds);
    }
    false
}

/// Whether the pollfd array at `addr` (`count` entries) in process `pid`
/// asks for input on one of `fds`.
fn polls_for_input(pid: Pid, addr: u64, count: u64, fds: &[i32]) -> bool {
    const ENTRY: usize = std::mem::size_of::<libc::pollfd>();
    let count = usize::try_from(count).unwrap_or(0).min(POLLFDS_MAX);
    let mut buf = vec![0u8; count.saturating_mul(ENTRY)];
    let Ok(n) = read_memory(pid, addr, &mut buf) else {
        return false;
    };
    buf.get(..n)
        .unwrap_or_default()
        .chunks_exact(ENTRY)
        .any(|e| match *e {
            [f0, f1, f2, f3, e0, e1, ..] => {
                let fd = i32::from_ne_bytes([f0, f1, f2, f3]);
                let events = i16::from_ne_bytes([e0, e1]);
                events & libc::POLLIN != 0 && fds.contains(&fd)
            }
            _ => false,
        })
}

/// Whether the read fd_set at `addr`, of `nfds` descriptors, in process
/// `pid` holds one of `fds`.
fn selects_for_input(pid: Pid, nfds: u64, addr: u64, fds: &[i32]) -> bool {
    if addr == 0 {
        return false;
    }
    let bits = usize::try_from(nfds).unwrap_or(0).min(FDSET_BITS_MAX);
    let mut buf = vec![0u8; bits.div_ceil(8)];
    let Ok(n) = read_memory(pid, addr, &mut buf) else {
        return false;
    };
    let set = buf.get(..n).unwrap_or_default();
    fds.iter().any(|&fd| {
        usize::try_from(fd)
            .is_ok_and(|fd| fd < bits && set.get(fd / 8).is_some_and(|b| b & (1 << (fd % 8)) != 0))
    })
}

fn read_memory(pid: Pid, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let addr = usize::try_from(addr).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?;
    sys::read_process_memory(pid, addr, buf)
}

#[cfg(test)]
mod tests;
