//! Live upgrade: the supervisor's state as text, handed to the next
//! program image across `execve` in an environment variable, with the
//! descriptors it names kept open. Times are absolute CLOCK_MONOTONIC
//! nanoseconds, which mean the same before and after exec.
//!
//! The format is line-based: a magic first line with a version, then one
//! `key value...` line per item; free text (names, paths) is hex-encoded.
//! Anything unexpected makes the whole state refused.

use std::fmt::Write as _;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

use crate::clock::Instant;
use crate::rules::{Exec, Next, Phase, Ready, Role, Shutdown, Slot, Worker};
use crate::sys::Pid;

pub use crate::env::{CHECK_VAR, STATE_VAR};
pub const CHECK_OK: &str = "start_server: upgrade state accepted";
const MAGIC: &str = "start_server-state";
const VERSION: u32 = 1;

/// A file's device and inode numbers.
pub type FileId = (u64, u64);

/// What a handed-over descriptor must refer to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileKind {
    Socket,
    File,
    Pipe,
}

impl FileKind {
    /// Its `S_IFMT` bits, and its name.
    pub fn mode(self) -> (libc::mode_t, &'static str) {
        match self {
            FileKind::Socket => (libc::S_IFSOCK, "socket"),
            FileKind::File => (libc::S_IFREG, "file"),
            FileKind::Pipe => (libc::S_IFIFO, "pipe"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerState {
    pub fd: RawFd,
    pub name: String,
    pub fd_name: String,
    /// The socket file a unix listener bound: any bytes, as the path was
    /// given (not necessarily UTF-8).
    pub unix_path: Option<std::path::PathBuf>,
    /// The socket file's device and inode numbers (absent from the states
    /// of versions that did not record them).
    pub unix_id: Option<FileId>,
}

/// The notification socket handed over: its descriptor, its
/// NOTIFY_SOCKET address, and its file's device and inode numbers when
/// it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyState {
    pub fd: RawFd,
    pub address: String,
    pub id: Option<FileId>,
}

/// An output relay handed over: its worker, its pipe, and the bytes not
/// yet logged.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayState {
    pub pid: i32,
    pub fd: RawFd,
    pub pending: Vec<u8>,
}

/// One reading of both clocks: instants become CLOCK_MONOTONIC
/// nanoseconds, which mean the same after exec, and back.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub ns: i128,
}

impl Clock {
    pub fn read() -> Clock {
        let now = Instant::now();
        Clock {
            now,
            ns: i128::try_from(now.since_start().as_nanos()).unwrap_or(i128::MAX),
        }
    }

    pub fn ns_of(&self, t: Instant) -> i128 {
        // Nanoseconds of a Duration fit an i128 many times over.
        let ns = |d: Duration| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        match t.checked_duration_since(self.now) {
            Some(ahead) => self.ns.saturating_add(ns(ahead)),
            None => self.ns.saturating_sub(ns(self.now.duration_since(t))),
        }
    }

    /// The instant of a CLOCK_MONOTONIC reading; one beyond what an
    /// Instant holds is clamped (the state is validated after).
    pub fn instant_of(&self, ns: i128) -> Instant {
        let gap = ns.saturating_sub(self.ns).unsigned_abs();
        let delta = Duration::from_nanos(u64::try_from(gap).unwrap_or(u64::MAX));
        if ns >= self.ns {
            crate::clock::after(self.now, delta)
        } else {
            self.now.checked_sub(delta).unwrap_or(self.now)
        }
    }
}

/// The supervisor's state: the rules' own (the workers, as the core holds
/// them, and the restart and shutdown state) and the shell's descriptors.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The version of the program that wrote the state (absent from
    /// states of versions that did not say).
    pub program: Option<String>,
    /// The rules' phase, whole.
    pub phase: Phase,
    pub status_written: bool,
    pub listeners: Vec<ListenerState>,
    pub pid_file_fd: Option<RawFd>,
    /// The notification socket: descriptor, address, and its file's
    /// device and inode numbers when it has one.
    pub notify: Option<NotifyState>,
    /// The exec report pipes of workers whose exec is pending.
    pub reports: Vec<(Pid, RawFd)>,
    pub relays: Vec<RelayState>,
    pub logger: Option<i32>,
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i.saturating_add(2))?, 16).ok())
        .collect()
}

/// A file's `DEV:INO`, or `-`.
fn fmt_id(id: Option<(u64, u64)>) -> String {
    id.map_or("-".into(), |(dev, ino)| format!("{dev}:{ino}"))
}

/// An optional last field `DEV:INO` (absent or `-`: unknown); None when
/// it does not parse.
fn parse_id(field: Option<&&str>) -> Option<Option<(u64, u64)>> {
    match field {
        None | Some(&"-") => Some(None),
        Some(id) => {
            let (dev, ino) = id.split_once(':')?;
            Some(Some((dev.parse().ok()?, ino.parse().ok()?)))
        }
    }
}

/// A worker's role in a `worker` line.
fn role_text(role: Role, clock: &Clock) -> String {
    let ns = |t: Instant| clock.ns_of(t);
    let b = |v: bool| u8::from(v);
    match role {
        Role::Starting {
            restart,
            ready,
            give_up,
        } => {
            let (ready_at, notified) = match ready {
                Ready::After(at) => (Some(ns(at)), false),
                Ready::Awaiting | Ready::Looking { .. } => (None, false),
                Ready::Said => (None, true),
            };
            // A pending look (--readiness=accept) comes last: its
            // next time, its step in ns, whether it warned.
            let look = match ready {
                Ready::Looking { next, step, warned } => {
                    format!(" look {} {} {}", ns(next), step.as_nanos(), b(warned))
                }
                _ => String::new(),
            };
            format!(
                "starting {} {} {} {}{look}",
                b(restart),
                opt(ready_at),
                b(notified),
                opt(give_up.map(ns))
            )
        }
        Role::Current => "current".into(),
        Role::Old {
            signalled, kill_at, ..
        } => {
            format!("old {} {}", b(signalled), opt(kill_at.map(ns)))
        }
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn parse_opt<T: std::str::FromStr>(s: &str) -> Result<Option<T>, ()> {
    if s == "-" {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(|_| ())
    }
}

/// One line of a state text, its fields read by position. Numbers out
/// of their type's range are refused, never wrapped (4294967295 is not
/// pid -1).
struct Line<'a> {
    number: usize,
    text: &'a str,
    fields: Vec<&'a str>,
    clock: &'a Clock,
}

impl Line<'_> {
    fn bad(&self) -> String {
        format!("line {}: \"{}\"", self.number, self.text)
    }

    fn num(&self, i: usize) -> Result<i128, String> {
        self.fields
            .get(i)
            .and_then(|v| v.parse::<i128>().ok())
            .ok_or_else(|| self.bad())
    }

    fn int32(&self, i: usize) -> Result<i32, String> {
        i32::try_from(self.num(i)?).map_err(|_| self.bad())
    }

    fn uint32(&self, i: usize) -> Result<u32, String> {
        u32::try_from(self.num(i)?).map_err(|_| self.bad())
    }

    fn uint64(&self, i: usize) -> Result<u64, String> {
        u64::try_from(self.num(i)?).map_err(|_| self.bad())
    }

    fn flag(&self, i: usize) -> Result<bool, String> {
        match self.fields.get(i) {
            Some(&"0") => Ok(false),
            Some(&"1") => Ok(true),
            _ => Err(self.bad()),
        }
    }

    /// A number, or `-` for none.
    fn maybe(&self, i: usize) -> Result<Option<i128>, String> {
        self.fields
            .get(i)
            .ok_or_else(|| self.bad())
            .and_then(|v| parse_opt::<i128>(v).map_err(|()| self.bad()))
    }

    /// An instant, as CLOCK_MONOTONIC nanoseconds.
    fn at(&self, i: usize) -> Result<Instant, String> {
        Ok(self.clock.instant_of(self.num(i)?))
    }

    fn maybe_at(&self, i: usize) -> Result<Option<Instant>, String> {
        Ok(self.maybe(i)?.map(|ns| self.clock.instant_of(ns)))
    }

    /// Bytes, hex-encoded.
    fn bytes(&self, i: usize) -> Result<Vec<u8>, String> {
        self.fields
            .get(i)
            .and_then(|v| unhex(v))
            .ok_or_else(|| self.bad())
    }

    /// Free text, hex-encoded.
    fn text(&self, i: usize) -> Result<String, String> {
        String::from_utf8(self.bytes(i)?).map_err(|_| self.bad())
    }
}

impl State {
    /// A state with nothing in it yet, as of `clock`.
    fn empty(clock: &Clock) -> State {
        State {
            program: None,
            phase: Phase::new(clock.now),
            status_written: false,
            listeners: Vec::new(),
            pid_file_fd: None,
            notify: None,
            reports: Vec::new(),
            relays: Vec::new(),
            logger: None,
        }
    }

    pub fn encode(&self, clock: &Clock) -> String {
        let ns = |t: Instant| clock.ns_of(t);
        let mut out = format!("{MAGIC} {VERSION}\n");
        let b = |v: bool| u8::from(v);
        if let Some(v) = &self.program {
            let _ = writeln!(out, "program {}", hex(v.as_bytes()));
        }
        let _ = writeln!(out, "generation {}", self.phase.generation);
        let first = self.phase.slots.first().copied().unwrap_or(Slot::IDLE);
        let _ = writeln!(out, "failures {}", first.failures);
        let _ = writeln!(
            out,
            "flags {} {} {}",
            b(self.phase.pending_restart),
            b(self.phase.ever_started),
            b(self.status_written)
        );
        let _ = writeln!(out, "last_restart {}", ns(self.phase.last_restart));
        // The first slot's retry and the kill-old delay as a state of one
        // slot says them; `slot` and `place` lines below say the rest.
        let retry = match first.next {
            Next::RetryAt { at, restart, .. } => Some((at, restart)),
            _ => None,
        };
        let _ = writeln!(
            out,
            "retry {} {}",
            opt(retry.map(|(at, _)| ns(at))),
            b(retry.is_some_and(|(_, restart)| restart))
        );
        let kill_old_at = self
            .phase
            .workers
            .iter()
            .filter_map(|w| match w.role {
                Role::Old { signal_at, .. } => signal_at,
                _ => None,
            })
            .min();
        let _ = writeln!(out, "kill_old_at {}", opt(kill_old_at.map(ns)));
        self.encode_shutdown(&mut out, clock);
        let _ = writeln!(out, "forwarded {}", opt(self.phase.forwarded));
        // A restart a watched path's change has due (a line a reader
        // without --watch refuses).
        if let Some(at) = self.phase.watch_at {
            let _ = writeln!(out, "watch_at {}", ns(at));
        }
        let p = &self.phase;
        let _ = writeln!(
            out,
            "outcome {} {} {}",
            b(p.killed_at_shutdown),
            b(p.gave_up),
            p.restarts_given_up
        );
        for l in &self.listeners {
            let _ = writeln!(
                out,
                "listener {} {} {} {} {}",
                l.fd,
                hex(l.name.as_bytes()),
                hex(l.fd_name.as_bytes()),
                l.unix_path
                    .as_ref()
                    .map_or("-".into(), |p| hex(p.as_os_str().as_bytes())),
                fmt_id(l.unix_id)
            );
        }
        if let Some(fd) = self.pid_file_fd {
            let _ = writeln!(out, "pid_file {fd}");
        }
        if let Some(n) = &self.notify {
            let _ = writeln!(
                out,
                "notify {} {} {}",
                n.fd,
                hex(n.address.as_bytes()),
                fmt_id(n.id)
            );
        }
        for w in &self.phase.workers {
            let role = role_text(w.role, clock);
            let report = self.reports.iter().find(|(p, _)| *p == w.pid);
            let exec = match (w.exec, report) {
                (Exec::Pending, Some((_, fd))) => format!("pending {fd}"),
                (Exec::Pending | Exec::Done, _) => "done -".into(),
                (Exec::Failed, _) => "failed -".into(),
            };
            let _ = writeln!(
                out,
                "worker {} {} {} {exec} {role}",
                w.pid,
                w.generation,
                ns(w.spawned)
            );
        }
        self.encode_places(&mut out, clock);
        for r in &self.relays {
            let _ = writeln!(out, "relay {} {} {}", r.pid, r.fd, hex(&r.pending));
        }
        if let Some(pid) = self.logger {
            let _ = writeln!(out, "logger {pid}");
        }
        out += "end\n";
        out
    }

    /// Where a shutdown stands, in `stopping` (and `delaying` or
    /// `sweeping`) lines.
    fn encode_shutdown(&self, out: &mut String, clock: &Clock) {
        let ns = |t: Instant| clock.ns_of(t);
        let b = |v: bool| u8::from(v);
        match self.phase.shutdown {
            Shutdown::Running => *out += "stopping - -\n",
            Shutdown::Stopping { kill_at } => {
                let _ = writeln!(out, "stopping 1 {}", opt(kill_at.map(ns)));
            }
            Shutdown::Killed => *out += "stopping 1 -\n",
            // Written after a line an older reader understands: one that
            // does not know these lines refuses the state.
            Shutdown::Delaying { sig, until } => {
                let _ = write!(out, "stopping - -\ndelaying {sig} {}\n", ns(until));
            }
            Shutdown::Sweeping { at, killed, code } => {
                let _ = write!(
                    out,
                    "stopping 1 -\nsweeping {} {} {code}\n",
                    ns(at),
                    b(killed)
                );
            }
        }
    }

    /// With several slots (or a worker off the first place), each slot
    /// and each worker's place: lines a reader of one slot refuses.
    fn encode_places(&self, out: &mut String, clock: &Clock) {
        let ns = |t: Instant| clock.ns_of(t);
        let b = |v: bool| u8::from(v);
        let placed = self.phase.slots.len() > 1
            || self
                .phase
                .workers
                .iter()
                .any(|w| (w.slot, w.index) != (0, 0));
        if !placed {
            return;
        }
        for (i, slot) in self.phase.slots.iter().enumerate() {
            let (kind, at, generation, restart) = match slot.next {
                Next::Nothing => ("-", None, 0, false),
                Next::Queued {
                    generation,
                    restart,
                } => ("queued", None, generation, restart),
                Next::RetryAt {
                    at,
                    generation,
                    restart,
                } => ("retry", Some(ns(at)), generation, restart),
            };
            let _ = writeln!(
                out,
                "slot {i} {} {kind} {} {generation} {}",
                slot.failures,
                opt(at),
                b(restart)
            );
        }
        for w in &self.phase.workers {
            let signal_at = match w.role {
                Role::Old { signal_at, .. } => signal_at,
                _ => None,
            };
            let _ = writeln!(
                out,
                "place {} {} {} {}",
                w.pid,
                w.slot,
                w.index,
                opt(signal_at.map(ns))
            );
        }
    }

    /// Checks what can be checked without looking at processes and
    /// descriptors: every pid names an ordinary process (above 1: never
    /// init, a process group or every process), every descriptor is past
    /// stdio and named once, and the workers' roles hang together.
    pub fn validate(&self) -> Result<(), String> {
        let pids = self
            .phase
            .workers
            .iter()
            .map(|w| ("worker", w.pid))
            .chain(self.relays.iter().map(|r| ("relay", r.pid)))
            .chain(self.logger.map(|p| ("log command", p)));
        for (what, pid) in pids {
            if pid <= 1 {
                return Err(format!("{what} pid {pid} is not a child's"));
            }
        }
        for (i, w) in self.phase.workers.iter().enumerate() {
            if self.phase.workers.iter().take(i).any(|v| v.pid == w.pid) {
                return Err(format!("worker pid {} is named twice", w.pid));
            }
            if w.generation == 0 || w.generation > self.phase.generation {
                return Err(format!(
                    "worker {} has generation {}, beyond {}",
                    w.pid, w.generation, self.phase.generation
                ));
            }
        }
        // Between 1 and MAX_WORKERS slots, as read.
        let slots = self.phase.slots.len();
        let mut starting = vec![false; slots];
        for w in &self.phase.workers {
            let Some(seen) = starting.get_mut(w.slot as usize) else {
                return Err(format!(
                    "worker {} is in slot {}, of {slots}",
                    w.pid, w.slot
                ));
            };
            if matches!(w.role, Role::Starting { .. }) && std::mem::replace(seen, true) {
                return Err(format!("two workers starting in slot {}", w.slot));
            }
        }
        let fds = self.descriptors();
        for (i, &(what, fd, _)) in fds.iter().enumerate() {
            if fd < 3 {
                return Err(format!("{what} descriptor {fd} is stdio's"));
            }
            if fds.iter().take(i).any(|&(_, other, _)| other == fd) {
                return Err(format!("descriptor {fd} is named twice"));
            }
        }
        Ok(())
    }

    /// Every descriptor the state names: what it is for, its number, and
    /// the kind of file it must be.
    pub fn descriptors(&self) -> Vec<(&'static str, RawFd, FileKind)> {
        let exec = self
            .reports
            .iter()
            .map(|&(_, fd)| ("exec report", fd, FileKind::Pipe));
        self.listeners
            .iter()
            .map(|l| ("listener", l.fd, FileKind::Socket))
            .chain(self.pid_file_fd.map(|fd| ("pid file", fd, FileKind::File)))
            .chain(
                self.notify
                    .as_ref()
                    .map(|n| ("notify", n.fd, FileKind::Socket)),
            )
            .chain(exec)
            .chain(
                self.relays
                    .iter()
                    .map(|r| ("output relay", r.fd, FileKind::Pipe)),
            )
            .collect()
    }

    /// Parses a state, or says what is wrong with it; times are read
    /// against `clock`.
    pub fn decode(text: &str, clock: &Clock) -> Result<State, String> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let version = first
            .strip_prefix(MAGIC)
            .map(str::trim)
            .ok_or("not a start_server state (foreign)")?;
        if version != VERSION.to_string() {
            return Err(format!(
                "state version {version}, this program reads version {VERSION}"
            ));
        }
        let mut s = State::empty(clock);
        let mut ended = false;
        // The kill-old delay as a state of one slot says it: every old
        // worker still serving gets its signal then, unless its `place`
        // line says otherwise.
        let mut kill_old_at = None;
        let mut placed = Vec::new();
        for (n, text) in lines.enumerate() {
            let line = Line {
                number: n.saturating_add(2),
                text,
                fields: text.split(' ').collect(),
                clock,
            };
            match line.fields.first().copied() {
                Some("kill_old_at") => kill_old_at = line.maybe_at(1)?,
                Some("place") => placed.push(s.read_place(&line)?),
                _ => ended = s.read(&line)?,
            }
        }
        if !ended {
            return Err("truncated (no end line)".into());
        }
        for w in &mut s.phase.workers {
            if let Role::Old {
                signalled: false,
                signal_at,
                ..
            } = &mut w.role
                && !placed.contains(&w.pid)
            {
                *signal_at = kill_old_at;
            }
        }
        Ok(s)
    }

    /// Takes in one line; whether it was the end line.
    fn read(&mut self, l: &Line) -> Result<bool, String> {
        match l.fields.first().copied().unwrap_or_default() {
            "program" => self.program = Some(l.text(1)?),
            "generation" => self.phase.generation = l.uint64(1)?,
            "failures" => {
                let failures = l.uint32(1)?;
                self.first_slot(|s| s.failures = failures);
            }
            "flags" => {
                (
                    self.phase.pending_restart,
                    self.phase.ever_started,
                    self.status_written,
                ) = (l.flag(1)?, l.flag(2)?, l.flag(3)?)
            }
            "last_restart" => self.phase.last_restart = l.at(1)?,
            "retry" => {
                let generation = self.phase.generation;
                let next = match l.maybe_at(1)? {
                    Some(at) => Next::RetryAt {
                        at,
                        generation,
                        restart: l.flag(2)?,
                    },
                    None => Next::Nothing,
                };
                self.first_slot(|s| s.next = next);
            }
            "slot" => self.read_slot(l)?,
            "watch_at" => self.phase.watch_at = Some(l.at(1)?),
            "stopping" => {
                self.phase.shutdown = match l.fields.get(1) == Some(&"1") {
                    true => Shutdown::Stopping {
                        kill_at: l.maybe_at(2)?,
                    },
                    false => Shutdown::Running,
                }
            }
            "delaying" => {
                self.phase.shutdown = Shutdown::Delaying {
                    sig: l.int32(1)?,
                    until: l.at(2)?,
                }
            }
            "sweeping" => {
                self.phase.shutdown = Shutdown::Sweeping {
                    at: l.at(1)?,
                    killed: l.flag(2)?,
                    code: l.int32(3)?,
                }
            }
            "outcome" => {
                let p = &mut self.phase;
                (p.killed_at_shutdown, p.gave_up, p.restarts_given_up) =
                    (l.flag(1)?, l.flag(2)?, l.uint64(3)?)
            }
            "forwarded" => {
                self.phase.forwarded = l
                    .maybe(1)?
                    .map(|v| i32::try_from(v).map_err(|_| l.bad()))
                    .transpose()?
            }
            "listener" => self.listeners.push(ListenerState {
                fd: l.int32(1)?,
                name: l.text(2)?,
                fd_name: l.text(3)?,
                unix_path: Some(l.bytes(4)?)
                    .filter(|p| !p.is_empty())
                    .map(|p| std::ffi::OsString::from_vec(p).into()),
                unix_id: parse_id(l.fields.get(5)).ok_or_else(|| l.bad())?,
            }),
            "pid_file" => self.pid_file_fd = Some(l.int32(1)?),
            "notify" => {
                let id = parse_id(l.fields.get(3)).ok_or_else(|| l.bad())?;
                self.notify = Some(NotifyState {
                    fd: l.int32(1)?,
                    address: l.text(2)?,
                    id,
                })
            }
            "worker" => {
                let worker = self.read_worker(l)?;
                self.phase.workers.push(worker);
            }
            "relay" => self.relays.push(RelayState {
                pid: l.int32(1)?,
                fd: l.int32(2)?,
                pending: l.bytes(3)?,
            }),
            "logger" => self.logger = Some(l.int32(1)?),
            "end" => return Ok(true),
            _ => return Err(l.bad()),
        }
        Ok(false)
    }

    /// Changes the first slot, which `failures` and `retry` lines speak
    /// of (a state of one slot).
    fn first_slot(&mut self, change: impl FnOnce(&mut Slot)) {
        if self.phase.slots.is_empty() {
            self.phase.slots.push(Slot::IDLE);
        }
        if let Some(slot) = self.phase.slots.first_mut() {
            change(slot);
        }
    }

    /// A `slot I FAILURES NEXT AT GEN RESTART` line: the slots come in
    /// order, and replace what `failures` and `retry` said of the first.
    fn read_slot(&mut self, l: &Line) -> Result<(), String> {
        let i = l.uint32(1)? as usize;
        if i == 0 {
            self.phase.slots.clear();
        }
        if i != self.phase.slots.len() || i >= crate::config::MAX_WORKERS as usize {
            return Err(l.bad());
        }
        let (generation, restart) = (l.uint64(5)?, l.flag(6)?);
        let next = match l.fields.get(3) {
            Some(&"-") => Next::Nothing,
            Some(&"queued") => Next::Queued {
                generation,
                restart,
            },
            Some(&"retry") => Next::RetryAt {
                at: l.at(4)?,
                generation,
                restart,
            },
            _ => return Err(l.bad()),
        };
        self.phase.slots.push(Slot {
            failures: l.uint32(2)?,
            next,
        });
        Ok(())
    }

    /// A `place PID SLOT INDEX SIGNAL_AT` line, after its worker's: the
    /// worker's slot, index, and when it gets --signal-on-hup.
    fn read_place(&mut self, l: &Line) -> Result<Pid, String> {
        let pid = l.int32(1)?;
        let (slot, index, at) = (l.uint32(2)?, l.uint32(3)?, l.maybe_at(4)?);
        let w = self
            .phase
            .workers
            .iter_mut()
            .find(|w| w.pid == pid)
            .ok_or_else(|| l.bad())?;
        (w.slot, w.index) = (slot, index);
        if let Role::Old { signal_at, .. } = &mut w.role {
            *signal_at = at;
        }
        Ok(pid)
    }

    /// A `worker` line: `worker PID GEN SPAWNED EXEC [REPORT] ROLE ...`.
    fn read_worker(&mut self, l: &Line) -> Result<Worker, String> {
        let pid = l.int32(1)?;
        let exec = match l.fields.get(4) {
            Some(&"pending") => {
                self.reports.push((pid, l.int32(5)?));
                Exec::Pending
            }
            Some(&"done") => Exec::Done,
            Some(&"failed") => Exec::Failed,
            _ => return Err(l.bad()),
        };
        let role = match l.fields.get(6) {
            Some(&"starting") => Role::Starting {
                restart: l.flag(7)?,
                ready: match (l.maybe_at(8)?, l.fields.get(11)) {
                    (Some(t), _) => Ready::After(t),
                    (None, _) if l.flag(9)? => Ready::Said,
                    (None, Some(&"look")) => Ready::Looking {
                        next: l.at(12)?,
                        step: Duration::from_nanos(l.uint64(13)?),
                        warned: l.flag(14)?,
                    },
                    (None, _) => Ready::Awaiting,
                },
                give_up: l.maybe_at(10)?,
            },
            Some(&"current") => Role::Current,
            // The drain deadline is absent from older states.
            Some(&"old") => Role::Old {
                signalled: l.flag(7)?,
                signal_at: None,
                kill_at: match l.fields.get(8) {
                    None => None,
                    Some(_) => l.maybe_at(8)?,
                },
            },
            _ => return Err(l.bad()),
        };
        Ok(Worker {
            pid,
            generation: l.uint64(2)?,
            slot: 0,
            index: 0,
            spawned: l.at(3)?,
            role,
            exec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed reading of the clocks: encoding and decoding with it are
    /// exact inverses.
    fn clock() -> Clock {
        Clock {
            now: Instant::now(),
            ns: 1_000_000_000_000,
        }
    }

    /// A state with a bit of everything, read with `c`.
    fn sample(c: &Clock) -> State {
        let t = |secs: u64| c.now + Duration::from_secs(secs);
        State {
            program: Some("0.1.0".into()),
            phase: Phase {
                generation: 7,
                slots: vec![Slot {
                    failures: 2,
                    next: Next::RetryAt {
                        at: t(5),
                        generation: 7,
                        restart: true,
                    },
                }],
                pending_restart: true,
                watch_at: Some(t(3)),
                ever_started: true,
                last_restart: c.now - Duration::from_secs(3),
                shutdown: Shutdown::Stopping {
                    kill_at: Some(t(9)),
                },
                forwarded: Some(15),
                killed_at_shutdown: true,
                gave_up: false,
                restarts_given_up: 3,
                workers: vec![
                    Worker {
                        pid: 100,
                        generation: 6,
                        slot: 0,
                        index: 0,
                        spawned: t(1),
                        role: Role::Starting {
                            restart: true,
                            ready: Ready::Awaiting,
                            give_up: Some(t(99)),
                        },
                        exec: Exec::Pending,
                    },
                    Worker {
                        pid: 101,
                        generation: 7,
                        slot: 0,
                        index: 0,
                        spawned: t(2),
                        role: Role::Current,
                        exec: Exec::Done,
                    },
                    Worker {
                        pid: 99,
                        generation: 5,
                        slot: 0,
                        index: 0,
                        spawned: c.now,
                        role: Role::Old {
                            signalled: true,
                            signal_at: None,
                            kill_at: Some(t(4)),
                        },
                        exec: Exec::Done,
                    },
                ],
            },
            status_written: true,
            listeners: vec![ListenerState {
                fd: 3,
                name: "127.0.0.1:80".into(),
                fd_name: "web".into(),
                // Not UTF-8: a path is bytes.
                unix_path: Some(std::ffi::OsStr::from_bytes(b"/tmp/a b\xff.sock").into()),
                unix_id: Some((2049, 1234567)),
            }],
            pid_file_fd: Some(9),
            notify: Some(NotifyState {
                fd: 10,
                address: "/run/start_server.1.0/notify".into(),
                id: Some((5, 6)),
            }),
            reports: vec![(100, 11)],
            relays: vec![RelayState {
                pid: 100,
                fd: 12,
                pending: b"partial".to_vec(),
            }],
            logger: Some(42),
        }
    }

    #[test]
    fn round_trip() {
        let c = clock();
        let t = |secs: u64| c.now + Duration::from_secs(secs);
        let s = sample(&c);
        assert_eq!(s.validate(), Ok(()));
        let text = s.encode(&c);
        assert_eq!(State::decode(&text, &c), Ok(s.clone()));
        // A state from a version that did not record the socket file's
        // identity still reads.
        let older = text.replace(" 2049:1234567\n", "\n");
        assert_eq!(
            State::decode(&older, &c).unwrap().listeners[0].unix_id,
            None
        );
        // A worker starting on --interval keeps its instant.
        let mut s2 = s.clone();
        s2.phase.workers[0].role = Role::Starting {
            restart: false,
            ready: Ready::After(t(4)),
            give_up: None,
        };
        assert_eq!(State::decode(&s2.encode(&c), &c), Ok(s2.clone()));
        // A pending look (--readiness=accept) resumes where it was.
        s2.phase.workers[0].role = Role::Starting {
            restart: true,
            ready: Ready::Looking {
                next: t(5),
                step: Duration::from_millis(8),
                warned: true,
            },
            give_up: Some(t(60)),
        };
        assert_eq!(State::decode(&s2.encode(&c), &c), Ok(s2));
    }

    #[test]
    fn slots_and_places_round_trip() {
        let c = clock();
        let t = |secs: u64| c.now + Duration::from_secs(secs);
        // An old worker awaiting the kill-old delay keeps it, as one slot's
        // state says it (no `place` line, which a reader of one slot
        // would refuse).
        let mut s3 = sample(&c);
        s3.phase.workers[2].role = Role::Old {
            signalled: false,
            signal_at: Some(t(4)),
            kill_at: None,
        };
        let text = s3.encode(&c);
        assert!(
            !text.contains("\nplace ") && !text.contains("\nslot "),
            "{text}"
        );
        assert_eq!(State::decode(&text, &c), Ok(s3.clone()));
        // Several slots (--workers): each slot's next worker and failures,
        // each worker's slot, index and signal time.
        let mut s4 = s3.clone();
        s4.phase.slots = vec![
            s3.phase.slots[0],
            Slot {
                failures: 0,
                next: Next::Queued {
                    generation: 7,
                    restart: true,
                },
            },
            Slot::IDLE,
        ];
        (s4.phase.workers[1].slot, s4.phase.workers[1].index) = (2, 3);
        s4.phase.workers.push(Worker {
            pid: 98,
            generation: 5,
            slot: 1,
            index: 1,
            spawned: c.now,
            role: Role::Old {
                signalled: false,
                signal_at: Some(t(8)),
                kill_at: None,
            },
            exec: Exec::Done,
        });
        assert_eq!(s4.validate(), Ok(()));
        let text = s4.encode(&c);
        assert!(text.contains("\nslot 1 0 queued - 7 1\n"), "{text}");
        assert_eq!(State::decode(&text, &c), Ok(s4.clone()));
        // A worker beyond the slots, or two starting in one, is refused.
        let mut bad = s4.clone();
        bad.phase.workers[1].slot = 3;
        assert!(bad.validate().unwrap_err().contains("slot 3, of 3"));
        let mut bad = s4;
        bad.phase.workers[1].role = bad.phase.workers[0].role;
        bad.phase.workers[1].slot = 0;
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("two workers starting in slot 0")
        );
    }

    /// The state text the released build of commit 4ef4b72 wrote, kept
    /// as it came out of the live upgrade: start_server on a TCP port and
    /// a unix socket with a pid file, HUP, then SIGUSR2 during the
    /// kill-old delay (30 s), into a script that saved START_SERVER_STATE.
    /// When the format changes, the previous format's fixture stays and
    /// this test keeps reading it.
    const RELEASED: &str = include_str!("../tests/fixtures/state-0.1.0-4ef4b72.txt");

    #[test]
    fn a_state_written_by_the_previous_release_reads() {
        let c = Clock {
            now: Instant::now(),
            ns: 615_108_204_985,
        };
        let s = State::decode(RELEASED, &c).unwrap();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.program.as_deref(), Some("0.1.0"));
        assert_eq!((s.phase.generation, s.phase.slots.len()), (2, 1));
        assert_eq!(s.phase.slots[0], Slot::IDLE);
        assert!(s.phase.ever_started && s.status_written && !s.phase.pending_restart);
        // Read at the moment of the last restart: the kill-old delay ends
        // 30 s later.
        assert_eq!(s.phase.last_restart, c.now);
        let awaiting = Role::Old {
            signalled: false,
            signal_at: Some(c.now + Duration::from_secs(30)),
            kill_at: None,
        };
        assert_eq!(s.phase.shutdown, Shutdown::Running);
        let listeners: Vec<(RawFd, &str, Option<&std::path::Path>)> = s
            .listeners
            .iter()
            .map(|l| (l.fd, l.name.as_str(), l.unix_path.as_deref()))
            .collect();
        let sock = "/tmp/tmp.lKHyQKwhpu/s.sock";
        let sock_path = std::path::Path::new(sock);
        assert_eq!(
            listeners,
            [(3, "127.0.0.1:41234", None), (4, sock, Some(sock_path))]
        );
        assert_eq!(s.listeners[0].fd_name, "127.0.0.1_41234");
        assert_eq!(s.listeners[1].unix_id, Some((65024, 10_011_115)));
        assert_eq!(s.pid_file_fd, Some(5));
        let workers: Vec<(Pid, u64, &Role)> = s
            .phase
            .workers
            .iter()
            .map(|w| (w.pid, w.generation, &w.role))
            .collect();
        assert_eq!(workers, [(9162, 1, &awaiting), (9163, 2, &Role::Current)]);
        assert!(s.phase.workers.iter().all(|w| w.exec == Exec::Done));
        // What this build writes of it reads back the same.
        assert_eq!(State::decode(&s.encode(&c), &c), Ok(s));
    }

    #[test]
    fn refuses_states_that_would_harm() {
        let worker = |pid: i32, report: Option<RawFd>| {
            format!(
                "worker {pid} 1 0 {} current\n",
                match report {
                    Some(fd) => format!("pending {fd}"),
                    None => "done -".into(),
                }
            )
        };
        let state = |body: &str| format!("start_server-state 1\ngeneration 1\n{body}end\n");
        for (body, why) in [
            (worker(-1, None), "worker pid -1"),
            (worker(0, None), "worker pid 0"),
            (worker(1, None), "worker pid 1"),
            (
                format!("{}{}", worker(50, None), worker(50, None)),
                "named twice",
            ),
            (
                format!("listener 5 2d 2d -\n{}", worker(50, Some(5))),
                "descriptor 5 is named twice",
            ),
            ("listener 2 2d 2d -\n".into(), "stdio"),
            ("relay 1 9 -\n".into(), "relay pid 1"),
            ("logger -5\n".into(), "log command pid -5"),
        ] {
            let decoded = State::decode(&state(&body), &clock()).unwrap();
            let err = decoded.validate().unwrap_err();
            assert!(err.contains(why), "{body:?}: {err}");
        }
        // Out of range is unreadable, not wrapped.
        for body in [
            "worker 4294967295 1 0 done - current\n",
            "listener 4294967299 2d 2d -\n",
            "generation -1\n",
        ] {
            assert!(State::decode(&state(body), &clock()).is_err(), "{body}");
        }
        assert_eq!(
            State::decode(&state(&worker(50, Some(7))), &clock())
                .unwrap()
                .validate(),
            Ok(())
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(
            State::decode("hello", &clock())
                .unwrap_err()
                .contains("foreign")
        );
        assert!(
            State::decode("start_server-state 99\nend\n", &clock())
                .unwrap_err()
                .contains("version 99")
        );
        assert!(
            State::decode("start_server-state 1\ngeneration x\nend\n", &clock())
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            State::decode("start_server-state 1\ngeneration 1\n", &clock())
                .unwrap_err()
                .contains("truncated")
        );
        assert!(State::decode("start_server-state 1\nbogus 1\nend\n", &clock()).is_err());
    }
}
