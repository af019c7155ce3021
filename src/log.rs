//! Logging to stderr that never panics and never blocks: one `write(2)`
//! per line (so lines from start_server and its workers, sharing the
//! descriptor, do not mix mid-line), errors ignored (a dead log pipe must
//! not kill a supervisor), and a line dropped rather than waited for when
//! the destination is full (a log command that stops reading must not stop
//! signal handling and reaping). Stderr itself stays blocking: the workers
//! share it.
//!
//! Two kinds of line: those Server::Starter prints, kept word for word
//! because operators grep them ([`original!`]), and our own, which follow
//! one grammar, `start_server: [fatal: |warning: ]what: why` ([`note!`],
//! [`warning!`], [`fatal!`]).

use std::fmt::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use crate::sys;

/// An io::Error's text without Rust's " (os error N)" suffix.
pub fn errtext(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => sys::strerror(errno),
        None => e.to_string(),
    }
}

/// Where lines go: stderr, or the local syslog socket (`-syslog`).
enum Sink {
    Stderr,
    /// A datagram socket connected to /dev/log; the tag is `prog[pid]`.
    Syslog {
        fd: OwnedFd,
        tag: String,
    },
}

static PROG: OnceLock<&'static str> = OnceLock::new();
static SINK: OnceLock<Sink> = OnceLock::new();

/// Sets the program name our own lines start with (once, at start-up).
pub fn set_prog(name: &'static str) {
    let _ = PROG.set(name);
}

/// The program name our own lines start with.
pub fn prog() -> &'static str {
    PROG.get().copied().unwrap_or("start_server")
}

/// Sends every further line to the local syslog socket, if there is one;
/// says so once on stderr where there is none.
pub fn use_syslog() {
    const DEV_LOG: &str = "/dev/log";
    match sys::connect_unix_datagram(std::path::Path::new(DEV_LOG)) {
        Ok(fd) => {
            let tag = format!("{}[{}]", prog(), sys::getpid());
            let _ = SINK.set(Sink::Syslog { fd, tag });
        }
        Err(e) => warning!(
            "no syslog at {DEV_LOG} ({}): logging to stderr",
            errtext(&e)
        ),
    }
}

fn sink() -> &'static Sink {
    SINK.get().unwrap_or(&Sink::Stderr)
}

/// The descriptor lines are written to, for polling.
pub fn sink_fd() -> RawFd {
    match sink() {
        Sink::Stderr => 2,
        Sink::Syslog { fd, .. } => fd.as_raw_fd(),
    }
}

/// Writes one line (without its newline) if the destination takes it now;
/// false when it is full, and nothing was written.
pub fn try_emit(line: &[u8]) -> bool {
    if !sys::writable_now(sink_fd()) {
        return false;
    }
    match sink() {
        Sink::Stderr => {
            let _ = sys::write_parts(2, &capped(line));
        }
        Sink::Syslog { fd, tag } => {
            // RFC 3164: <PRI>TIMESTAMP TAG: MSG, facility user, severity info.
            let mut buf =
                format!("<14>{} {tag}: ", syslog_time(std::time::SystemTime::now())).into_bytes();
            buf.extend_from_slice(line);
            let _ = sys::send(fd.as_raw_fd(), &buf);
        }
    }
    true
}

/// The most a line may take, newline included: a pipe that polls
/// writable takes this much without blocking, and in one piece.
const LINE_MAX: usize = libc::PIPE_BUF;

/// `line` and its newline, cut to LINE_MAX in all with `...` where it is
/// longer: the parts to write in one go, copying nothing.
fn capped(line: &[u8]) -> [&[u8]; 3] {
    const MORE: &[u8] = b"...";
    const KEPT: usize = LINE_MAX - 1 - MORE.len();
    match line.get(..KEPT) {
        Some(kept) if line.len() >= LINE_MAX => [kept, MORE, b"\n"],
        _ => [line, b"", b"\n"],
    }
}

/// Writes complete lines (each ending in a newline) if the destination
/// takes them now: in one write on stderr (the caller keeps the batch
/// within PIPE_BUF, so it is atomic), one datagram per line to syslog.
/// False when the destination is full, and nothing was written.
pub fn try_emit_lines(batch: &[u8]) -> bool {
    match sink() {
        Sink::Stderr => {
            if !sys::writable_now(2) {
                return false;
            }
            let _ = sys::write_all(2, batch);
            true
        }
        Sink::Syslog { .. } => {
            for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if !try_emit(line) {
                    return false;
                }
            }
            true
        }
    }
}

/// `Mmm dd hh:mm:ss` (UTC: no time zone database in a static binary).
// Every value is bounded by the days since 1970 of a u64 of seconds
// (under 2^48) times small constants: nothing overflows an i64.
#[allow(clippy::arithmetic_side_effects)]
fn syslog_time(t: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {day:>2} {:02}:{:02}:{:02}",
        MONTHS.get((month - 1) as usize).unwrap_or(&"???"),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes one line of ours; dropped if the destination is full.
pub fn line(args: fmt::Arguments) {
    let mut s = String::with_capacity(128);
    let _ = s.write_fmt(args);
    try_emit(one_line(&s).as_bytes());
}

/// `text` as one line: control characters (a newline in a value, a
/// worker's terminal escapes) written as `\n`, `\t` or `\xNN`, so that
/// every line says one thing and nothing reaches a terminal raw.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len().saturating_add(8));
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// A line of Server::Starter's, verbatim.
macro_rules! original {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}

/// One of our own informational lines.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!("{}: {}", $crate::log::prog(), format_args!($($arg)*)))
    };
}

/// Trouble start_server survives.
macro_rules! warning {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!("{}: warning: {}", $crate::log::prog(), format_args!($($arg)*)))
    };
}

/// Trouble start_server exits for (the caller exits).
macro_rules! fatal {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!("{}: fatal: {}", $crate::log::prog(), format_args!($($arg)*)))
    };
}

pub(crate) use {fatal, note, original, warning};

#[cfg(test)]
mod tests {
    #[test]
    fn lines_fit_a_pipe_at_once() {
        let capped = |line: &[u8]| super::capped(line).concat();
        assert_eq!(capped(b"short"), b"short\n");
        let long = capped(&[b'x'; 10_000]);
        assert_eq!(long.len(), super::LINE_MAX);
        assert!(long.ends_with(b"...\n") && long.starts_with(b"xxx"));
        let full = capped(&[b'x'; super::LINE_MAX - 1]);
        assert_eq!(full.len(), super::LINE_MAX);
        assert!(full.ends_with(b"xx\n"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::one_line("plain"), "plain");
        assert_eq!(
            super::one_line("a\nb\tc\x1b[31md\u{7f}"),
            "a\\nb\\tc\\x1b[31md\\x7f"
        );
    }

    #[test]
    fn syslog_timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_254_421);
        assert_eq!(super::syslog_time(t), "Nov 21 09:47:01");
        assert_eq!(super::syslog_time(std::time::UNIX_EPOCH), "Jan  1 00:00:00");
    }
}
