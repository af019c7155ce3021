use std::net::TcpListener;
use std::os::fd::AsRawFd;

use super::*;

fn me() -> Pid {
    std::process::id() as Pid
}

#[test]
fn link_targets_and_epoll_lines() {
    assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
    assert_eq!(socket_inode(b"pipe:[12345]"), None);
    assert_eq!(socket_inode(b"socket:[x]"), None);
    let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                tfd:        7 events:       19 data:                7  pos:0 ino:2b2d sdev:8\n";
    assert!(epoll_reads(info, &[0x2b2d]));
    assert!(!epoll_reads(info, &[0x2b2e]));
    // Registered for output only: not a wait for connections.
    let out = "tfd:        7 events:        4 data:                7  pos:0 ino:2b2d sdev:8\n";
    assert!(!epoll_reads(out, &[0x2b2d]));
}

#[test]
fn syscall_lines() {
    let accept = libc::SYS_accept4;
    assert!(blocked_on(
        me(),
        &format!("{accept} 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffc 0x7f"),
        &[3]
    ));
    assert!(!blocked_on(
        me(),
        &format!("{accept} 0x4 0x0 0x0 0x0 0x0 0x0 0x7ffc 0x7f"),
        &[3]
    ));
    assert!(!blocked_on(me(), "running", &[3]));
    assert!(!blocked_on(me(), "-1 0x7ffc 0x7f", &[3]));
    // The pollfd array and the fd_set are read from the process's memory.
    let fds = [
        libc::pollfd {
            fd: 9,
            events: libc::POLLOUT,
            revents: 0,
        },
        libc::pollfd {
            fd: 5,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ppoll = libc::SYS_ppoll;
    let line = format!(
        "{ppoll} {:#x} 0x2 0x0 0x0 0x8 0x0 0x1 0x2",
        fds.as_ptr() as usize
    );
    assert!(blocked_on(me(), &line, &[5]));
    assert!(!blocked_on(me(), &line, &[9]));
    let mut set = [0u8; 128];
    set[0] |= 1 << 6;
    let pselect = libc::SYS_pselect6;
    let line = format!(
        "{pselect} 0x7 {:#x} 0x0 0x0 0x0 0x0 0x1 0x2",
        set.as_ptr() as usize
    );
    assert!(blocked_on(me(), &line, &[6]));
    assert!(!blocked_on(me(), &line, &[5]));
    // Beyond nfds: not asked for.
    let line = format!(
        "{pselect} 0x6 {:#x} 0x0 0x0 0x0 0x0 0x1 0x2",
        set.as_ptr() as usize
    );
    assert!(!blocked_on(me(), &line, &[6]));
}

/// A real wait in this process: a thread blocked in accept. (Epoll sets
/// are seen in the tests with real servers: uvicorn, node, Go, h2o.)
#[test]
fn a_blocked_accept_shows() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ino = sys::inode(listener.as_raw_fd()).unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_ino = sys::inode(other.as_raw_fd()).unwrap();
    assert_eq!(in_process(me(), &[ino]), Ok(Found::Nothing));
    let addr = listener.local_addr().unwrap();
    let waiter = std::thread::spawn(move || listener.accept().map(drop));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_process(me(), &[ino]) != Ok(Found::Waiting) {
        assert!(
            std::time::Instant::now() < deadline,
            "the blocked accept never showed"
        );
        std::thread::yield_now();
    }
    assert_eq!(in_process(me(), &[other_ino]), Ok(Found::Nothing));
    std::net::TcpStream::connect(addr).unwrap();
    waiter.join().unwrap().unwrap();
    assert_eq!(
        look(me(), &[]),
        Seen::Unseen("there is no listening socket to wait on".into())
    );
}
