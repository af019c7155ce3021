//! Relaying a worker's output (socketmaster): its stdout and stderr go
//! into a pipe that the event loop reads, and every line is logged with a
//! `[PID] ` prefix in one write, so that lines of overlapping generations
//! never mix. A last line without newline is still logged; a line longer
//! than LINE_MAX is split. Nothing is read while the log destination is
//! full: the worker waits on its pipe, start_server never waits.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::log;
use crate::sys::{self, Pid};

/// The longest piece of a line logged at once: with its prefix it stays
/// within PIPE_BUF, so that a write of it is atomic and never partial.
const LINE_MAX: usize = 4000;
/// What one write to a pipe may carry and stay atomic.
const PIPE_BUF: usize = 4096;

pub struct Relay {
    pid: Pid,
    fd: OwnedFd,
    /// Bytes read but not yet logged: at most one partial line.
    pending: Vec<u8>,
    eof: bool,
}

impl Relay {
    /// Relays what worker `pid` writes to the pipe `fd` (read end).
    pub fn new(pid: Pid, fd: OwnedFd) -> std::io::Result<Relay> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Relay {
            pid,
            fd,
            pending: Vec::new(),
            eof: false,
        })
    }

    /// A relay handed over by the previous program image.
    pub fn restore(pid: Pid, fd: OwnedFd, pending: Vec<u8>) -> std::io::Result<Relay> {
        let mut relay = Relay::new(pid, fd)?;
        relay.pending = pending;
        Ok(relay)
    }

    /// What a live upgrade must carry: the worker, the pipe, the bytes read
    /// but not yet logged.
    pub fn parts(&self) -> (Pid, std::os::fd::RawFd, &[u8]) {
        (self.pid, self.fd.as_raw_fd(), &self.pending)
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Whether a complete line (or, at end of file, anything) waits to be
    /// logged.
    pub fn has_pending(&self) -> bool {
        self.pending.contains(&b'\n')
            || self.pending.len() >= LINE_MAX
            || (self.eof && !self.pending.is_empty())
    }

    /// Whether everything has been read and logged: the relay can go.
    pub fn done(&self) -> bool {
        self.eof && self.pending.is_empty()
    }

    /// Logs the complete lines pending; then, if all went out, reads once
    /// more. Returns false when the log destination is full.
    pub fn pump(&mut self) -> bool {
        if !self.flush() {
            return false;
        }
        if self.eof {
            return true;
        }
        let mut buf = [0u8; 4096];
        match sys::read(self.fd.as_raw_fd(), &mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self
                .pending
                .extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.eof = true,
        }
        self.flush()
    }

    /// Logs every complete line (and, at end of file, the rest), as many
    /// whole prefixed lines per write as fit in PIPE_BUF; keeps what the
    /// destination does not take now.
    fn flush(&mut self) -> bool {
        let prefix = format!("[{}] ", self.pid).into_bytes();
        loop {
            let mut batch = Vec::new();
            let mut used = 0;
            while let Some((len, skip)) = self.next_line(used) {
                // Lines are at most LINE_MAX (< PIPE_BUF) long: no sum
                // here comes near overflowing.
                let size = batch.len().saturating_add(prefix.len()).saturating_add(len);
                if !batch.is_empty() && size >= PIPE_BUF {
                    break;
                }
                let line = self.pending.get(used..used.saturating_add(len));
                batch.extend_from_slice(&prefix);
                batch.extend_from_slice(line.unwrap_or_default());
                batch.push(b'\n');
                used = used.saturating_add(skip);
            }
            if batch.is_empty() {
                return true;
            }
            if !log::try_emit_lines(&batch) {
                return false;
            }
            self.pending.drain(..used);
        }
    }

    /// The next line to log from `pending[from..]`: its length, and how
    /// much to consume (with its newline).
    fn next_line(&self, from: usize) -> Option<(usize, usize)> {
        let rest = self.pending.get(from..)?;
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= LINE_MAX => Some((i, i.saturating_add(1))),
            _ if rest.len() >= LINE_MAX => Some((LINE_MAX, LINE_MAX)),
            _ if self.eof && !rest.is_empty() => Some((rest.len(), rest.len())),
            _ => None,
        }
    }
}
