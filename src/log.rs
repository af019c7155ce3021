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

/// The program name our own lines start with.
pub fn prog() -> &'static str {
    "start_server"
}

/// Writes one line to stderr.
pub fn line(args: fmt::Arguments) {
    let mut s = String::with_capacity(128);
    let _ = s.write_fmt(args);
    s.push('\n');
    if crate::sys::writable_now(2) {
        let _ = crate::sys::write_all(2, s.as_bytes());
    }
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
