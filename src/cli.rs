//! The start_server command line, in Perl Getopt::Long's syntax:
//! `--name=value`, `--name value`, the single-dash forms `-name=value` and
//! `-name value`, any unique prefix of a name, names in any case. Parsing
//! stops at `--` or at the first word that is not an option: the rest is
//! the server command. Pure: no I/O, no environment access.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::clock::{fmt_secs, parse_seconds};
use crate::config::{
    Config, DEFAULT_READY_TIMEOUT, LogTarget, MAX_WORKERS, Personality, Protocols, Readiness, Rules,
};
use crate::listen::PortSpec;
use crate::sig;

/// What the invocation asks for.
#[derive(Debug)]
pub enum Mode {
    Run(Box<Config>),
    Restart {
        pid_file: PathBuf,
        status_file: PathBuf,
        timeout: Option<Duration>,
    },
    Stop {
        pid_file: PathBuf,
        timeout: Option<Duration>,
    },
    Status {
        pid_file: PathBuf,
        status_file: PathBuf,
    },
    Help,
    Version,
}

/// What the options set: the configuration, and which mode was asked for.
#[derive(Default)]
struct Parsed {
    cfg: Config,
    restart: bool,
    stop: bool,
    status: bool,
    help: bool,
    version: bool,
}

/// An option's value as given, with the readings every option shares.
struct Value<'a> {
    name: &'a str,
    raw: OsString,
}

impl Value<'_> {
    /// The value's text (an error if it is not UTF-8).
    fn text(&self) -> Result<String, String> {
        self.raw
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| format!("invalid --{} value: not valid UTF-8", self.name))
    }

    /// The error for this value: `invalid --NAME value 'VALUE': WHY`.
    fn bad(&self, why: &str) -> String {
        format!(
            "invalid --{} value '{}': {why}",
            self.name,
            self.raw.to_string_lossy()
        )
    }

    /// The value read by `parse`, its error made `bad`.
    fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
        parse(&self.text()?).map_err(|e| self.bad(&e))
    }

    /// A number in Getopt::Long's syntax (`+5`, `1_0`), read by `parse`.
    fn number<T>(&self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
        self.parse(|t| parse(&getopt_number(t)))
    }

    /// A number of workers: 1 to MAX_WORKERS.
    fn workers(&self) -> Result<u32, String> {
        self.number(|s| match parse_count(s)? {
            0 => Err("must be at least 1".into()),
            n if n > MAX_WORKERS => Err(format!("too large (at most {MAX_WORKERS})")),
            n => Ok(n),
        })
    }

    fn seconds(&self) -> Result<Duration, String> {
        self.number(parse_seconds)
    }

    /// A path, which may be any bytes but empty.
    fn path(&self) -> Result<PathBuf, String> {
        nonempty(self.raw.clone()).map_err(|e| self.bad(&e))
    }
}

/// One option of start_server's dialect: its name, what its value stands
/// for (empty for a flag), its help, and what it sets. The parser and
/// the usage text both read this table; its order is the usage's.
struct Opt {
    name: &'static str,
    arg: &'static str,
    help: &'static str,
    set: fn(&mut Parsed, &Value) -> Result<(), String>,
}

/// A setting exported to the workers, as the original exports it: the
/// number it read, not the text given.
fn export_seconds(p: &mut Parsed, v: &Value, name: &'static str) -> Result<(), String> {
    let d = v.seconds()?;
    p.cfg.settings.push((name, fmt_secs(d)));
    Ok(())
}

#[rustfmt::skip]
const OPTIONS: &[Opt] = &[
    Opt { name: "port", arg: "[HOST:][u]PORT[=FD]",
        help: "TCP (u: UDP) socket to bind; [V6ADDR]:PORT\nfor IPv6; =FD places it on that descriptor",
        set: |p, v| { p.cfg.ports.push(v.parse(str::parse)?); Ok(()) } },
    Opt { name: "path", arg: "PATH", help: "unix socket to bind",
        set: |p, v| { p.cfg.paths.push(v.path().map_err(|_| v.bad("empty path"))?); Ok(()) } },
    Opt { name: "dir", arg: "DIR", help: "directory the server starts in",
        set: |p, v| { p.cfg.dir = Some(v.raw.clone().into()); Ok(()) } },
    Opt { name: "interval", arg: "SECONDS",
        help: "how long a new server must live to count\nas started (default 1)",
        set: |p, v| { p.cfg.rules.interval = v.seconds()?; Ok(()) } },
    Opt { name: "signal-on-hup", arg: "SIG", help: "sent to old servers after a restart (TERM)",
        set: |p, v| { p.cfg.rules.signal_on_hup = v.parse(parse_signal)?; Ok(()) } },
    Opt { name: "signal-on-term", arg: "SIG", help: "sent to servers on SIGTERM (TERM)",
        set: |p, v| { p.cfg.rules.signal_on_term = v.parse(parse_signal)?; Ok(()) } },
    Opt { name: "pid-file", arg: "FILE", help: "write and lock start_server's pid",
        set: |p, v| { p.cfg.pid_file = Some(v.path()?); Ok(()) } },
    Opt { name: "status-file", arg: "FILE", help: "write GEN:PID of every live server",
        set: |p, v| { p.cfg.status_file = Some(v.path()?); Ok(()) } },
    Opt { name: "envdir", arg: "DIR",
        help: "read NAME=first-line variables from DIR's\nfiles before every start (env ENVDIR)",
        set: |p, v| { p.cfg.envdir = Some(v.path()?); Ok(()) } },
    Opt { name: "log-file", arg: "FILE|'| CMD'", help: "append output to FILE, or pipe it to CMD",
        set: |p, v| {
            p.cfg.log_file = Some(parse_log_target(v.raw.clone()).map_err(|e| v.bad(&e))?);
            Ok(())
        } },
    Opt { name: "daemonize", arg: "", help: "run in the background (needs --log-file)",
        set: |p, _| { p.cfg.daemonize = true; Ok(()) } },
    Opt { name: "enable-auto-restart", arg: "",
        help: "restart periodically (env ENABLE_AUTO_RESTART)",
        set: |p, _| { p.cfg.settings.push(("ENABLE_AUTO_RESTART", "1".into())); Ok(()) } },
    Opt { name: "auto-restart-interval", arg: "S", help: "period of automatic restarts (360)",
        set: |p, v| export_seconds(p, v, "AUTO_RESTART_INTERVAL") },
    Opt { name: "kill-old-delay", arg: "SECONDS",
        help: "wait before signalling old servers (0;\n5 with auto-restart) (env KILL_OLD_DELAY)",
        set: |p, v| export_seconds(p, v, "KILL_OLD_DELAY") },
    Opt { name: "backlog", arg: "N", help: "listen backlog (SOMAXCONN)",
        set: |p, v| { p.cfg.backlog = Some(v.number(parse_backlog)?); Ok(()) } },
    Opt { name: "stop-timeout", arg: "SECONDS",
        help: "on shutdown, SIGKILL servers still alive\nafter this long (default: wait for them)",
        set: |p, v| { p.cfg.rules.stop_timeout = Some(v.seconds()?); Ok(()) } },
    Opt { name: "drain-timeout", arg: "SECONDS",
        help: "SIGKILL old servers still alive this long\nafter --signal-on-hup (default: wait)",
        set: |p, v| { p.cfg.rules.drain_timeout = Some(v.seconds()?); Ok(()) } },
    Opt { name: "shutdown-delay", arg: "SECONDS",
        help: "on TERM/INT/QUIT, keep serving this long\nbefore signalling the servers (0)",
        set: |p, v| { p.cfg.rules.shutdown_delay = v.seconds()?; Ok(()) } },
    Opt { name: "start-retries", arg: "N",
        help: "give up after N+1 failed starts in a row\n(default: retry forever)",
        set: |p, v| { p.cfg.rules.start_retries = Some(v.number(parse_count)?); Ok(()) } },
    Opt { name: "signal-group", arg: "", help: "signal each server's whole process group",
        set: |p, _| { p.cfg.signal_group = true; Ok(()) } },
    Opt { name: "readiness", arg: "MODE",
        help: "a new server is up after --interval, or:\nnotify: when it sends READY=1 on\nNOTIFY_SOCKET; accept: when it waits on a\nsocket; einhorn: when it sends worker:ack",
        set: |p, v| { p.cfg.rules.readiness = v.parse(parse_readiness)?; Ok(()) } },
    Opt { name: "ready-timeout", arg: "SECONDS",
        help: "with a --readiness mode: kill a server not\nready by then and retry (default 60)",
        set: |p, v| { p.cfg.rules.ready_timeout = Some(v.number(parse_ready_timeout)?); Ok(()) } },
    Opt { name: "workers", arg: "N",
        help: "run N servers per generation on the same\nsockets (default: one)",
        set: |p, v| { p.cfg.rules.workers = Some(v.workers()?); Ok(()) } },
    Opt { name: "max-surge", arg: "S",
        help: "with --workers: start at most S new servers\nat once in a restart (default: N)",
        set: |p, v| { p.cfg.rules.max_surge = Some(v.workers()?); Ok(()) } },
    Opt { name: "forward", arg: "SIG,...",
        help: "pass these signals on to the current servers\n(not HUP INT TERM QUIT USR2 CHLD)",
        set: |p, v| { p.cfg.rules.forward.extend(v.parse(parse_forward)?); Ok(()) } },
    Opt { name: "watch", arg: "PATH",
        help: "restart when PATH (a file, a directory, a\nmounted ConfigMap) changes; repeatable",
        set: |p, v| { p.cfg.watch.push(v.path()?); Ok(()) } },
    Opt { name: "watch-delay", arg: "SECONDS",
        help: "restart once a watched path is quiet this\nlong after a change (0.5)",
        set: |p, v| { p.cfg.rules.watch_delay = v.seconds()?; Ok(()) } },
    Opt { name: "pdeathsig", arg: "SIG",
        help: "each server gets SIG if start_server dies\n(killed; a live upgrade is no death)",
        set: |p, v| { p.cfg.pdeathsig = Some(v.parse(parse_signal)?.number); Ok(()) } },
    Opt { name: "protocols", arg: "LIST",
        help: "fd-passing variables servers get: any of\nserver-starter,systemd,einhorn (all)",
        set: |p, v| { p.cfg.protocols = v.parse(parse_protocols)?; Ok(()) } },
    Opt { name: "fd-names", arg: "NAME:NAME...", help: "LISTEN_FDNAMES names, in socket order",
        set: |p, v| { p.cfg.fd_names = v.parse(parse_fd_names)?; Ok(()) } },
    Opt { name: "user", arg: "LOGIN", help: "run servers as this user (root only)",
        set: |p, v| { p.cfg.user = Some(v.parse(parse_user)?); Ok(()) } },
    Opt { name: "restart", arg: "", help: "tell a running start_server to restart",
        set: |p, _| { p.restart = true; Ok(()) } },
    Opt { name: "stop", arg: "", help: "tell a running start_server to stop",
        set: |p, _| { p.stop = true; Ok(()) } },
    Opt { name: "timeout", arg: "SECONDS",
        help: "--restart and --stop fail after this long\n(default: wait as long as it takes)",
        set: |p, v| { p.cfg.timeout = Some(v.seconds()?); Ok(()) } },
    Opt { name: "status", arg: "",
        help: "print start_server's pid and its workers;\nexit 0 if one serves, 1 if start_server is\nnot running, 2 if it runs but none serves",
        set: |p, _| { p.status = true; Ok(()) } },
    Opt { name: "help", arg: "", help: "print this help",
        set: |p, _| { p.help = true; Ok(()) } },
    Opt { name: "version", arg: "", help: "print the version",
        set: |p, _| { p.version = true; Ok(()) } },
];

const USAGE_HEAD: &str = "\
Usage: start_server [options] -- server-prog server-arg1 server-arg2 ...
       start_server --restart --pid-file=FILE --status-file=FILE
       start_server --stop --pid-file=FILE
       start_server --status --pid-file=FILE --status-file=FILE

A superdaemon for hot-deploying server programs: binds the sockets, runs
the server with them inherited, and on SIGHUP starts a new generation and
gracefully stops the old one once the new one is up.

Options (any unique prefix works; -name works like --name):
";

const USAGE_TAIL: &str = "
See start_server(1) for signals, files and the environment.
";

/// The help text: every option of the table, its help in a column.
pub fn usage() -> String {
    const COLUMN: usize = 31;
    let mut text = USAGE_HEAD.to_string();
    for opt in OPTIONS {
        let mut left = format!("  --{}", opt.name);
        if !opt.arg.is_empty() {
            left.push('=');
            left.push_str(opt.arg);
        }
        for (i, line) in opt.help.lines().enumerate() {
            let width = if i == 0 { left.len() } else { 0 };
            if i == 0 {
                text.push_str(&left);
            }
            text.extend(std::iter::repeat_n(
                ' ',
                COLUMN.saturating_sub(width).max(2),
            ));
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(USAGE_TAIL);
    text
}

/// Neither Getopt::Long (without bundling) nor Go's flag package reads
/// single-dash letters as a cluster: `-port=80` is the option `port` with
/// the value `80`. lexopt sees the letter `p` and the rest.
/// lexopt's errors for `next` and `raw_args`: only a value attached to
/// an option and left unread, which never happens here (every option's
/// value is read where the option is). Not lexopt's text, which would
/// bring in the whole of OsStr's debug formatting for it.
fn unread(_: lexopt::Error) -> String {
    "an option's value was left unread".to_string()
}

fn single_dash(c: char, parser: &mut lexopt::Parser) -> (String, Option<OsString>) {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let rest = parser.optional_value().unwrap_or_default();
    let mut word = c.to_string().into_bytes();
    word.extend_from_slice(rest.as_bytes());
    // Split as bytes: the value keeps whatever bytes it has (a path need
    // not be UTF-8); only the name is read as text.
    match word.iter().position(|&b| b == b'=') {
        Some(i) => {
            let value = word.split_off(i.saturating_add(1));
            word.truncate(i);
            (
                String::from_utf8_lossy(&word).into_owned(),
                Some(OsString::from_vec(value)),
            )
        }
        None => (String::from_utf8_lossy(&word).into_owned(), None),
    }
}

/// An exact name or a unique prefix of one, in any case.
fn lookup(name: &str) -> Result<&'static Opt, String> {
    let name = name.to_ascii_lowercase();
    if let Some(found) = OPTIONS.iter().find(|o| o.name == name) {
        return Ok(found);
    }
    // `--status` is known by its whole name alone: its prefixes stay
    // `--status-file`'s, as in the original.
    let matches: Vec<&Opt> = OPTIONS
        .iter()
        .filter(|o| o.name.starts_with(&name) && o.name != "status")
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("unknown option '{name}' (see --help)")),
        many => {
            let names: Vec<_> = many.iter().map(|o| o.name).collect();
            Err(format!(
                "option '{name}' is ambiguous ({})",
                names.join(", ")
            ))
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Mode, String> {
    let mut parser = lexopt::Parser::from_args(args);
    // `-p=80` must reach us as "p=80", not as "p" with value "80".
    parser.set_short_equals(false);
    let mut p = Parsed::default();
    loop {
        // `--` ends the options here rather than in lexopt, so that a
        // `+word` after it is never read as an option.
        if let Some(mut raw) = parser.try_raw_args()
            && raw.next_if(|a| a == "--").is_some()
        {
            p.cfg.command.extend(raw);
            break;
        }
        let Some(arg) = parser.next().map_err(unread)? else {
            break;
        };
        let (word, attached) = match arg {
            Long(name) => {
                let name = name.to_string();
                (name, parser.optional_value())
            }
            Short(c) => single_dash(c, &mut parser),
            // Getopt::Long also takes `+name` for an option.
            Value(v) if plus_option(&v).is_some() => {
                let word = plus_option(&v).unwrap_or_default();
                match word.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(OsString::from(v))),
                    None => (word, None),
                }
            }
            Value(v) => {
                p.cfg.command.push(v);
                p.cfg.command.extend(parser.raw_args().map_err(unread)?);
                break;
            }
        };
        let mut opt = lookup(&word)?;
        // In the original, `--status` is a prefix of `--status-file`: with a
        // value attached it still is; alone, it is the client mode.
        if opt.name == "status" && attached.is_some() {
            opt = lookup("status-file")?;
        }
        let raw = match (!opt.arg.is_empty(), attached) {
            (true, Some(v)) => v,
            (true, None) => parser
                .value()
                .map_err(|_| format!("option '--{}' needs a value", opt.name))?,
            (false, Some(_)) => return Err(format!("option '--{}' takes no value", opt.name)),
            (false, None) => OsString::new(),
        };
        (opt.set)(
            &mut p,
            &Value {
                name: opt.name,
                raw,
            },
        )?;
    }
    mode_of(p)
}

/// `+name` or `+name=value`: the option name and what follows, when the
/// word is one (a `+` then a letter).
fn plus_option(word: &std::ffi::OsStr) -> Option<String> {
    let rest = word.to_str()?.strip_prefix('+')?;
    rest.starts_with(|c: char| c.is_ascii_alphabetic())
        .then(|| rest.to_string())
}

/// A number in Getopt::Long's syntax, which the original's numeric
/// options take: an optional `+`, and `_` between digits (`+5`, `1_000`),
/// made plain. Anything else is returned as it is, for the caller to
/// reject.
fn getopt_number(s: &str) -> String {
    let body = s.strip_prefix('+').unwrap_or(s);
    let numeric = body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_' || b == b'.');
    if numeric {
        body.replace('_', "")
    } else {
        s.to_string()
    }
}

/// Two sockets cannot share one descriptor.
fn check_placements(ports: &[PortSpec]) -> Result<(), String> {
    for (i, a) in ports.iter().enumerate() {
        if let Some(fd) = a.fd
            && let Some(b) = ports.iter().take(i).find(|b| b.fd == Some(fd))
        {
            return Err(format!(
                "invalid --port value '{}': descriptor {fd} is already taken by '{}'",
                a.spec, b.spec
            ));
        }
    }
    Ok(())
}

fn parse_readiness(s: &str) -> Result<Readiness, String> {
    Readiness::parse(s).ok_or_else(|| format!("expected {READINESS_NAMES}"))
}

/// The modes, as the refusal of another lists them.
const READINESS_NAMES: &str = "'interval', 'notify', 'accept' or 'einhorn'";

fn parse_user(s: &str) -> Result<String, String> {
    match s.is_empty() {
        true => Err("empty user name".into()),
        false => Ok(s.to_string()),
    }
}

fn nonempty(raw: OsString) -> Result<PathBuf, String> {
    if raw.is_empty() {
        Err("empty path".into())
    } else {
        Ok(raw.into())
    }
}

/// No unix socket path twice (the second bind would remove the first's
/// socket file), written the same or not.
fn check_paths(paths: &[PathBuf]) -> Result<(), String> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for p in paths {
        let absolute = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let normal: PathBuf = absolute.components().collect();
        if seen.contains(&normal) {
            return Err(format!("--path {} is given twice", p.display()));
        }
        seen.push(normal);
    }
    Ok(())
}

/// A count: a non-negative whole number.
fn parse_count(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a non-negative whole number".into());
    }
    t.parse()
        .map_err(|_| format!("too large (at most {})", u32::MAX))
}

/// How long a worker may take to say READY=1: more than nothing (at 0
/// every worker would be killed as it starts).
fn parse_ready_timeout(s: &str) -> Result<Duration, String> {
    match parse_seconds(s)? {
        t if t.is_zero() => Err("must be more than 0".into()),
        t => Ok(t),
    }
}

fn parse_protocols(s: &str) -> Result<Protocols, String> {
    let mut p = Protocols {
        server_starter: false,
        systemd: false,
        einhorn: false,
    };
    for word in s.split(',').map(str::trim) {
        match word {
            "server-starter" => p.server_starter = true,
            "systemd" => p.systemd = true,
            "einhorn" => p.einhorn = true,
            "none" => {}
            _ => {
                return Err(format!(
                    "unknown protocol '{word}' (server-starter, systemd, einhorn, none)"
                ));
            }
        }
    }
    Ok(p)
}

/// LISTEN_FDNAMES names: printable ASCII but ':', 1 to 255 characters.
fn parse_fd_names(s: &str) -> Result<Vec<String>, String> {
    s.split(':')
        .map(|name| {
            let ok =
                !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic());
            if ok {
                Ok(name.to_string())
            } else {
                Err(format!(
                    "'{name}' is not a valid name (1-255 printable characters, no ':' or space)"
                ))
            }
        })
        .collect()
}

fn parse_signal(s: &str) -> Result<sig::Signal, String> {
    sig::Signal::parse(s).ok_or_else(|| "no such signal".to_string())
}

/// Signals to pass on: any but those start_server acts on, and those no
/// process can catch.
fn parse_forward(s: &str) -> Result<Vec<i32>, String> {
    s.split(',')
        .map(|name| {
            let sig = sig::parse(name).ok_or_else(|| format!("no such signal '{name}'"))?;
            match sig {
                sig::HUP | sig::INT | sig::TERM | sig::QUIT | sig::CHLD | libc::SIGUSR2 => {
                    Err(format!("start_server acts on {} itself", sig::name(sig)))
                }
                sig::KILL | libc::SIGSTOP => Err(format!("{} cannot be caught", sig::name(sig))),
                sig => Ok(sig),
            }
        })
        .collect()
}

fn parse_backlog(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i64>() {
        // Server::Starter treats 0 as "the default".
        Ok(0) => Ok(crate::listen::DEFAULT_BACKLOG),
        Ok(n) if (1..=i32::MAX as i64).contains(&n) => Ok(n as i32),
        Ok(_) => Err("expected a positive number".into()),
        Err(_) => Err("expected a number".into()),
    }
}

fn parse_log_target(raw: OsString) -> Result<LogTarget, String> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = raw.as_bytes();
    let trimmed = bytes.trim_ascii_start();
    if let Some(cmd) = trimmed.strip_prefix(b"|") {
        let cmd = cmd.trim_ascii();
        if cmd.is_empty() {
            return Err("empty log command".into());
        }
        return Ok(LogTarget::Command(OsString::from_vec(cmd.to_vec())));
    }
    if bytes.is_empty() {
        return Err("empty path".into());
    }
    Ok(LogTarget::File(raw.into()))
}

/// The mode the options ask for, and a check of what it needs.
fn mode_of(p: Parsed) -> Result<Mode, String> {
    let Parsed {
        cfg,
        restart,
        stop,
        status,
        help,
        version,
    } = p;
    if help {
        return Ok(Mode::Help);
    }
    if version {
        return Ok(Mode::Version);
    }
    if restart {
        return match (cfg.pid_file, cfg.status_file) {
            (Some(pid_file), Some(status_file)) => Ok(Mode::Restart {
                pid_file,
                status_file,
                timeout: cfg.timeout,
            }),
            _ => Err(
                "--restart option requires --pid-file and --status-file to be set as well".into(),
            ),
        };
    }
    if status {
        return match (cfg.pid_file, cfg.status_file) {
            (Some(pid_file), Some(status_file)) => Ok(Mode::Status {
                pid_file,
                status_file,
            }),
            _ => Err(
                "--status option requires --pid-file and --status-file to be set as well".into(),
            ),
        };
    }
    if stop {
        return match cfg.pid_file {
            Some(pid_file) => Ok(Mode::Stop {
                pid_file,
                timeout: cfg.timeout,
            }),
            None => Err("--stop option requires --pid-file to be set as well".into()),
        };
    }
    if cfg.daemonize && cfg.log_file.is_none() {
        return Err("--daemonize requires --log-file (there would be nowhere to log)".into());
    }
    if cfg.command.is_empty() {
        return Err("server program not specified".into());
    }
    check_placements(&cfg.ports)?;
    check_paths(&cfg.paths)?;
    if cfg.rules.readiness == Readiness::Einhorn && !cfg.protocols.einhorn {
        return Err(
            "--readiness=einhorn needs the einhorn protocol (add einhorn to --protocols)".into(),
        );
    }
    match (cfg.rules.workers, cfg.rules.max_surge) {
        (None, Some(_)) => return Err("--max-surge needs --workers".into()),
        (Some(n), Some(s)) if s > n => {
            return Err(format!(
                "invalid --max-surge value '{s}': above --workers ({n})"
            ));
        }
        _ => {}
    }
    let sockets = cfg.ports.len().saturating_add(cfg.paths.len());
    if cfg.fd_names.len() > sockets && sockets > 0 {
        return Err(format!(
            "invalid --fd-names value: {} names for {sockets} socket(s)",
            cfg.fd_names.len()
        ));
    }
    Ok(run_mode(cfg))
}

/// The configuration both dialects end with: the policy of its
/// personality, and a ready timeout only where readiness is by
/// notification.
fn run_mode(mut cfg: Config) -> Mode {
    cfg.rules.policy = cfg.personality.policy();
    cfg.rules.ready_timeout = match cfg.rules.readiness {
        Readiness::Interval => None,
        _ => Some(cfg.rules.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT)),
    };
    Mode::Run(Box::new(cfg))
}

/// Parses socketmaster's command line, in Go `flag` syntax: `-name=value`,
/// `-name value`, `--name=value`; booleans as `-syslog` or `-syslog=true`;
/// names exact. Flags end at `--` or at the first other word: the rest are
/// the command's arguments.
pub fn parse_socketmaster(args: impl IntoIterator<Item = OsString>) -> Result<Mode, String> {
    let mut parser = lexopt::Parser::from_args(args);
    parser.set_short_equals(false);
    let mut cfg = Config {
        personality: Personality::Socketmaster,
        rules: Rules {
            interval: Duration::from_millis(3000),
            ..Rules::default()
        },
        protocols: Protocols::default(),
        ..Config::default()
    };
    let mut listen: Option<String> = None;
    let mut command: Option<OsString> = None;
    let mut rest: Vec<OsString> = Vec::new();
    while let Some(arg) = parser.next().map_err(unread)? {
        let (name, attached) = match arg {
            Long(name) => (name.to_string(), parser.optional_value()),
            Short(c) => single_dash(c, &mut parser),
            Value(v) => {
                rest.push(v);
                rest.extend(parser.raw_args().map_err(unread)?);
                break;
            }
        };
        let value = |parser: &mut lexopt::Parser| -> Result<String, String> {
            let raw = match attached.clone() {
                Some(v) => v,
                None => parser
                    .value()
                    .map_err(|_| format!("flag needs an argument: -{name}"))?,
            };
            raw.into_string()
                .map_err(|_| format!("invalid value for -{name}: not valid UTF-8"))
        };
        match name.as_str() {
            "h" | "help" => return Ok(Mode::Help),
            "listen" => listen = Some(value(&mut parser)?),
            "command" => command = Some(value(&mut parser)?.into()),
            "start" => {
                let v = value(&mut parser)?;
                let ms: u64 = v.trim().parse().map_err(|_| {
                    format!(
                        "invalid value \"{v}\" for flag -start: expected milliseconds, 0 or more"
                    )
                })?;
                cfg.rules.interval = Duration::from_millis(ms);
            }
            "syslog" => {
                cfg.syslog = match attached
                    .as_ref()
                    .map(|v| v.to_string_lossy().into_owned())
                    .as_deref()
                {
                    None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
                    Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
                    Some(v) => return Err(format!("invalid boolean value \"{v}\" for -syslog")),
                }
            }
            "user" => cfg.user = Some(value(&mut parser)?).filter(|u| !u.is_empty()),
            "readiness" => {
                let v = value(&mut parser)?;
                cfg.rules.readiness = Readiness::parse(&v).ok_or_else(|| {
                    format!(
                        "invalid value \"{v}\" for flag -readiness: {}",
                        READINESS_NAMES.replace('\'', "")
                    )
                })?;
            }
            "ready-timeout" => {
                let v = value(&mut parser)?;
                cfg.rules.ready_timeout =
                    Some(parse_ready_timeout(&v).map_err(|e| {
                        format!("invalid value \"{v}\" for flag -ready-timeout: {e}")
                    })?);
            }
            other => return Err(format!("flag provided but not defined: -{other}")),
        }
    }
    let Some(command) = command else {
        return Err("-command is required (see -h)".into());
    };
    cfg.command = std::iter::once(command).chain(rest).collect();
    let uri = listen.unwrap_or_else(|| "tcp://:8080".to_string());
    match parse_listen_uri(&uri).map_err(|e| format!("invalid -listen value '{uri}': {e}"))? {
        Listen::Port(p) => cfg.ports.push(p),
        Listen::Path(p) => cfg.paths.push(p),
        Listen::Fd(fd) => cfg.open_fds.push(fd),
    }
    Ok(run_mode(cfg))
}

/// Where a `-listen` URI says to listen.
#[derive(Debug, PartialEq)]
pub enum Listen {
    Port(PortSpec),
    Path(PathBuf),
    Fd(std::os::fd::RawFd),
}

/// `tcp://HOST:PORT` (both IP versions when HOST is empty), `tcp4://`,
/// `tcp6://`, `unix:///path`, `fd://N`.
pub fn parse_listen_uri(uri: &str) -> Result<Listen, String> {
    use crate::listen::Host;
    let (scheme, rest) = uri.split_once("://").ok_or("expected SCHEME://ADDRESS")?;
    match scheme {
        "unix" => {
            if !rest.starts_with('/') {
                return Err("expected unix:///absolute/path".into());
            }
            Ok(Listen::Path(rest.into()))
        }
        "fd" => rest
            .parse()
            .ok()
            .filter(|fd| *fd >= 0)
            .map(Listen::Fd)
            .ok_or_else(|| "expected fd://N, a descriptor number".into()),
        "tcp" | "tcp4" | "tcp6" => {
            let (host, port) = rest.rsplit_once(':').ok_or("expected HOST:PORT")?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("'{port}' is not a port number (0-65535)"))?;
            let bare = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let v6 = bare.parse::<std::net::Ipv6Addr>().ok();
            let host = match (scheme, bare.is_empty(), v6) {
                ("tcp", true, _) => Host::Dual,
                ("tcp4", true, _) => Host::Any,
                ("tcp6", true, _) => Host::V6(std::net::Ipv6Addr::UNSPECIFIED),
                ("tcp" | "tcp6", false, Some(ip)) => Host::V6(ip),
                ("tcp4", false, Some(_)) => return Err("an IPv6 address in a tcp4:// URI".into()),
                ("tcp6", false, None) => return Err(format!("'{bare}' is not an IPv6 address")),
                ("tcp4", false, None) => Host::V4(bare.to_string()),
                _ => Host::Name(bare.to_string()),
            };
            Ok(Listen::Port(PortSpec {
                spec: uri.to_string(),
                host,
                port,
                udp: false,
                fd: None,
            }))
        }
        other => Err(format!(
            "unknown scheme '{other}' (tcp, tcp4, tcp6, unix, fd)"
        )),
    }
}

pub const SOCKETMASTER_USAGE: &str = "\
Usage: socketmaster [-listen=URI] -command=PATH [-start=MILLIS] [-syslog] [-user=LOGIN] [-- ARGS...]

Runs PATH with the listening socket on descriptor 3 (EINHORN_FDS=3); on
SIGHUP starts a new one, waits -start milliseconds, then sends SIGTERM to
the others. Forwards SIGINT, SIGTERM and SIGQUIT; exits when no worker is
left. SIGUSR1 upgrades socketmaster itself in place.

  -listen=URI        tcp://HOST:PORT, tcp4://, tcp6://, unix:///path, fd://N
                     (default tcp://:8080)
  -command=PATH      the program to run, looked up in PATH
  -start=MILLIS      how long a new worker must run before the old ones
                     are stopped (default 3000)
  -readiness=MODE    stop the old ones when the new one is ready: notify
                     (it sends READY=1), accept (it waits on the socket),
                     einhorn (it sends worker:ack)
  -ready-timeout=S   with a MODE: kill a worker not ready by then (60)
  -syslog            log to the local syslog instead of stderr
  -user=LOGIN        run workers as this user (root only)

See start_server(1), section SOCKETMASTER.
";

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is the one list of options: each is in the usage text
    /// and in the manual, and its name takes no prefix of another's.
    #[test]
    fn every_option_is_in_the_usage_and_the_manual() {
        let usage = usage();
        let manual = include_str!("../man/start_server.1");
        for opt in OPTIONS {
            assert!(usage.contains(&format!("  --{}", opt.name)), "{}", opt.name);
            let man = format!("\\-\\-{}", opt.name.replace('-', "\\-"));
            assert!(
                manual.contains(&man),
                "{} ({man}) not in the manual",
                opt.name
            );
            assert_eq!(lookup(opt.name).map(|o| o.name), Ok(opt.name));
        }
        assert!(usage.ends_with("See start_server(1) for signals, files and the environment.\n"));
    }

    fn run(args: &[&str]) -> Result<Box<Config>, String> {
        match parse(args.iter().map(OsString::from))? {
            Mode::Run(cfg) => Ok(cfg),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn getopt_long_forms() {
        for args in [
            &["--port=80", "cmd"][..],
            &["--port", "80", "cmd"],
            &["-port=80", "cmd"],
            &["-port", "80", "cmd"],
            &["--po=80", "cmd"],
            &["-PORT", "80", "cmd"],
        ] {
            let cfg = run(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cfg.ports.len(), 1, "{args:?}");
            assert_eq!(cfg.ports[0].spec, "80");
            assert_eq!(cfg.command, ["cmd"]);
        }
    }

    #[test]
    fn getopt_long_plus_options_and_numbers() {
        let cfg = run(&[
            "+port=8080",
            "+interval",
            "+0",
            "--backlog=1_0",
            "--kill-old-delay=0_1",
            "--auto-restart-interval=+06",
            "cmd",
        ])
        .unwrap();
        assert_eq!(cfg.ports[0].spec, "8080");
        assert_eq!(cfg.rules.interval, Duration::ZERO);
        assert_eq!(cfg.backlog, Some(10));
        // The original exports the number, not the text.
        assert_eq!(
            cfg.settings,
            [
                ("KILL_OLD_DELAY", "1".to_string()),
                ("AUTO_RESTART_INTERVAL", "6".to_string())
            ]
        );
        assert_eq!(
            run(&["--interval=0_1", "x"]).unwrap().rules.interval,
            Duration::from_secs(1)
        );
        assert_eq!(run(&["--", "+port=1"]).unwrap().command, ["+port=1"]);
        assert_eq!(
            run(&["srv", "+port=1"]).unwrap().command,
            ["srv", "+port=1"]
        );
        assert!(
            run(&["+bogus", "x"])
                .unwrap_err()
                .contains("unknown option")
        );
        for bad in [
            "--interval=+",
            "--interval=_",
            "--interval=1+1",
            "--backlog=+-1",
        ] {
            assert!(parse([bad, "x"].map(OsString::from)).is_err(), "{bad}");
        }
    }

    #[test]
    fn stops_at_the_command() {
        let cfg = run(&["--port", "80", "plackup", "-s", "Starlet"]).unwrap();
        assert_eq!(cfg.command, ["plackup", "-s", "Starlet"]);
        let cfg = run(&["--interval=2", "--", "--weird", "-x"]).unwrap();
        assert_eq!(cfg.command, ["--weird", "-x"]);
        assert_eq!(cfg.rules.interval, Duration::from_secs(2));
    }

    #[test]
    fn repeats_and_prefixes() {
        let cfg = run(&[
            "--port=80",
            "--port=[::1]:81",
            "--path=/s",
            "--path",
            "/t",
            "--stat=f",
            "x",
        ])
        .unwrap();
        assert_eq!(cfg.ports.len(), 2);
        assert_eq!(cfg.paths.len(), 2);
        assert_eq!(cfg.status_file, Some("f".into()));
        // `--status` alone is the client mode; with a value, or shorter,
        // it is `--status-file`, as in the original.
        for form in ["--status=g", "--statu=g"] {
            assert_eq!(run(&[form, "x"]).unwrap().status_file, Some("g".into()));
        }
        assert!(matches!(
            parse(["--status", "--pid-file=p", "--status-file=s"].map(OsString::from)),
            Ok(Mode::Status { .. })
        ));
        let err = parse(["--status", "--pid-file=p"].map(OsString::from)).unwrap_err();
        assert!(
            err.contains("--status option requires --pid-file and --status-file"),
            "{err}"
        );
        // A value given with one dash keeps its bytes.
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"-pid-file=/tmp/\xe9").to_owned();
        match parse([raw, "x".into()]) {
            Ok(Mode::Run(cfg)) => {
                assert_eq!(cfg.pid_file.unwrap().as_os_str().as_bytes(), b"/tmp/\xe9")
            }
            other => panic!("{other:?}"),
        }
        let err = run(&["--s=1", "x"]).unwrap_err();
        assert!(err.contains("ambiguous"), "{err}");
        assert!(err.contains("status-file"), "{err}");
        let err = run(&["-p=1", "x"]).unwrap_err();
        assert!(err.contains("ambiguous"), "{err}");
        assert!(run(&["-i=0.5", "x"]).unwrap().rules.interval == Duration::from_millis(500));
    }

    #[test]
    fn bad_values() {
        for (args, needle) in [
            (&["--port=70000", "x"][..], "70000"),
            (&["--port=abc", "x"], "abc"),
            (&["--interval=abc", "x"], "abc"),
            (&["--interval=-1", "x"], "-1"),
            (&["--signal-on-hup=NOSUCH", "x"], "NOSUCH"),
            (&["--backlog=-1", "x"], "-1"),
            (&["--daemonize", "x"], "--log-file"),
            (&["--bogus", "x"], "bogus"),
            (&["--daemonize=1", "x"], "takes no value"),
            (&["--port"], "needs a value"),
            (&[], "server program not specified"),
            (&["--port=80=5", "--port=81=5", "x"], "descriptor 5"),
            (&["--restart", "--pid-file=p"], "--status-file"),
            (&["--stop"], "--pid-file"),
            (
                &["--protocols=systemd,bogus", "x"],
                "unknown protocol 'bogus'",
            ),
            (&["--fd-names=a:b", "--port=1", "x"], "2 names for 1 socket"),
            (&["--fd-names=a b", "x"], "'a b' is not a valid name"),
            (&["--fd-names=a::b", "x"], "'' is not a valid name"),
            (
                &["--readiness=soon", "x"],
                "expected 'interval', 'notify', 'accept' or 'einhorn'",
            ),
            (&["--ready-timeout=0", "x"], "must be more than 0"),
            (
                &["--workers=0", "x"],
                "invalid --workers value '0': must be at least 1",
            ),
            (&["--workers=-1", "x"], "invalid --workers value '-1'"),
            (&["--workers=abc", "x"], "invalid --workers value 'abc'"),
            (&["--workers=1025", "x"], "too large (at most 1024)"),
            (
                &["--workers=2", "--max-surge=0", "x"],
                "invalid --max-surge value '0'",
            ),
            (
                &["--workers=2", "--max-surge=3", "x"],
                "invalid --max-surge value '3': above --workers (2)",
            ),
            (&["--max-surge=1", "x"], "--max-surge needs --workers"),
            (
                &["--forward=TTIN,HUP", "x"],
                "invalid --forward value 'TTIN,HUP': start_server acts on HUP itself",
            ),
            (&["--forward=NOSUCH", "x"], "no such signal 'NOSUCH'"),
            (&["--forward=KILL", "x"], "KILL cannot be caught"),
            (&["--forward=", "x"], "no such signal ''"),
            (&["--watch=", "x"], "invalid --watch value '': empty path"),
            (
                &["--watch-delay=-1", "x"],
                "invalid --watch-delay value '-1'",
            ),
            (
                &["--pdeathsig=0", "x"],
                "invalid --pdeathsig value '0': no such signal",
            ),
        ] {
            let err = parse(args.iter().map(OsString::from)).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn settings_and_modes() {
        let cfg = run(&["--enable-auto-restart", "--kill-old-delay=0.5", "x"]).unwrap();
        assert_eq!(
            cfg.settings,
            [
                ("ENABLE_AUTO_RESTART", "1".to_string()),
                ("KILL_OLD_DELAY", "0.5".to_string())
            ]
        );
        assert!(matches!(parse(["--help".into()]), Ok(Mode::Help)));
        assert!(matches!(parse(["-h".into()]), Ok(Mode::Help)));
        assert!(matches!(parse(["--vers".into()]), Ok(Mode::Version)));
        let log = run(&["--log-file", " | cat -u ", "--daemonize", "x"]).unwrap();
        assert_eq!(log.log_file, Some(LogTarget::Command("cat -u".into())));
    }

    #[test]
    fn socketmaster_flags() {
        let sm = |args: &[&str]| match parse_socketmaster(args.iter().map(OsString::from)) {
            Ok(Mode::Run(cfg)) => Ok(cfg),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let cfg = sm(&[
            "-listen=tcp4://127.0.0.1:99",
            "--command",
            "srv",
            "-start",
            "0",
            "-syslog",
            "--",
            "-a",
        ])
        .unwrap();
        assert_eq!(cfg.command, ["srv", "-a"]);
        assert_eq!(cfg.rules.interval, Duration::ZERO);
        assert!(cfg.syslog);
        assert_eq!(cfg.ports[0].spec, "tcp4://127.0.0.1:99");
        let cfg = sm(&["-command=srv"]).unwrap();
        assert_eq!(cfg.ports[0].host, crate::listen::Host::Dual);
        assert_eq!(cfg.rules.interval, Duration::from_millis(3000));
        assert!(!sm(&["-command=srv", "-syslog=false"]).unwrap().syslog);
        for (args, needle) in [
            (
                &["-listen=udp://:1", "-command=x"][..],
                "unknown scheme 'udp'",
            ),
            (&["-listen=tcp//:1", "-command=x"], "SCHEME://"),
            (&["-listen=tcp://:99999", "-command=x"], "not a port number"),
            (&["-listen=fd://x", "-command=x"], "fd://N"),
            (
                &["-listen=tcp6://1.2.3.4:80", "-command=x"],
                "not an IPv6 address",
            ),
            (&["-start=-1", "-command=x"], "-start"),
            (
                &["-bogus", "-command=x"],
                "flag provided but not defined: -bogus",
            ),
            (&["-listen=unix://rel", "-command=x"], "absolute"),
            (&["-start=5"], "-command is required"),
            (
                &["-ready-timeout=0", "-command=x"],
                "invalid value \"0\" for flag -ready-timeout: must be more than 0",
            ),
            (
                &["-readiness=soon", "-command=x"],
                "invalid value \"soon\" for flag -readiness: interval, notify, accept or einhorn",
            ),
        ] {
            let err = sm(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert!(matches!(parse_socketmaster(["-h".into()]), Ok(Mode::Help)));
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(parse_seconds(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("2."), Ok(Duration::from_secs(2)));
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "inf",
            "nan",
            "1.2.3",
            "abc",
            "+1",
            "0.0000000001",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
