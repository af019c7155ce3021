//! inotify: changes to files and directories, as events on a descriptor
//! read in the event loop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{cstring, cvt};

/// A non-blocking, close-on-exec inotify instance.
pub fn inotify() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags only.
    let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    // SAFETY: inotify_init1 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `path` (following a symbolic link) for the events in `mask`,
/// added to those already watched for on the same file; its watch
/// descriptor (the same for the same file).
pub fn add_watch(fd: &OwnedFd, path: &Path, mask: u32) -> io::Result<i32> {
    let path = cstring(path.as_os_str())?;
    let mask = mask | libc::IN_MASK_ADD;
    // SAFETY: path is a valid NUL-terminated string.
    cvt(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

/// Stops a watch (one whose file is gone is already stopped: an error
/// here means nothing).
pub fn rm_watch(fd: &OwnedFd, wd: i32) {
    // SAFETY: inotify_rm_watch takes numbers only.
    unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
}

/// One event: the watch it came from, what happened, and the name in a
/// watched directory it concerns (empty for the watched file itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub name: Vec<u8>,
}

/// The events pending, without blocking (none when none are). Not
/// inlined: its buffer would otherwise sit in the event loop's frame.
#[inline(never)]
pub fn read_events(fd: &OwnedFd) -> Vec<Event> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut buf = [0u8; 4096];
    let mut events = Vec::new();
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            return events;
        };
        let mut at: usize = 0;
        while let Some(head) = buf.get(at..at.saturating_add(HEADER)).filter(|_| at < n) {
            // The header's fields, read by their offsets: wd, mask,
            // cookie, len (four 32-bit values, native-endian).
            let field = |range: std::ops::Range<usize>| {
                let mut b = [0u8; 4];
                b.copy_from_slice(head.get(range).unwrap_or(&[0; 4]));
                b
            };
            let wd = i32::from_ne_bytes(field(0..4));
            let mask = u32::from_ne_bytes(field(4..8));
            let len = u32::from_ne_bytes(field(12..16)) as usize;
            let start = at.saturating_add(HEADER);
            let name = buf
                .get(start..start.saturating_add(len))
                .unwrap_or_default();
            let name = name.split(|&b| b == 0).next().unwrap_or_default().to_vec();
            events.push(Event { wd, mask, name });
            at = start.saturating_add(len);
        }
        if n == 0 {
            return events;
        }
    }
}
