//! The worker's environment, built explicitly for every spawn (we never
//! mutate our own): start_server's environment at start-up, the settings
//! given as options, the envdir read afresh, then the protocol variables.
//! Also the run-time settings Server::Starter takes from the environment.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::clock::{fmt_secs, parse_seconds};
use crate::config::{DEFAULT_AUTO_RESTART_INTERVAL, Protocols, Settings};
use crate::listen::Listener;
use crate::sys::EnvString;

/// One variable of an environment.
#[derive(Clone)]
pub enum Var {
    /// A string of the environment start_server was given: a worker gets
    /// the very string, uncopied.
    Given(EnvString),
    /// A variable set here.
    Set(OsString, OsString),
}

impl Var {
    pub fn new(name: impl Into<OsString>, value: impl Into<OsString>) -> Var {
        Var::Set(name.into(), value.into())
    }

    pub fn name(&self) -> &OsStr {
        match self {
            Var::Given(s) => OsStr::from_bytes(s.name()),
            Var::Set(name, _) => name,
        }
    }

    pub fn value(&self) -> &OsStr {
        match self {
            Var::Given(s) => OsStr::from_bytes(s.value()),
            Var::Set(_, value) => value,
        }
    }
}

/// Equal when their names and values are, whichever kind they are.
impl PartialEq for Var {
    fn eq(&self, other: &Var) -> bool {
        self.name() == other.name() && self.value() == other.value()
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}={:?}", self.name(), self.value())
    }
}

/// Variables in order; a later entry wins.
pub type Vars = Vec<Var>;

/// The environment start_server was given, in order, each string that
/// has a name.
pub fn given() -> Vars {
    let strings = crate::sys::environment();
    let mut vars = Vars::with_capacity(strings.len());
    vars.extend(strings.into_iter().map(Var::Given));
    vars
}

/// start_server's own environment, read once at start-up, in two parts:
/// what it passes on to the workers, and the variables that speak to
/// start_server itself ([`CONSUMED`]), which never reach a worker. Each
/// name appears once in each, its first entry kept: what getenv(3)
/// finds.
pub struct Environment {
    pub passed: Vars,
    pub handed: Vars,
}

impl Environment {
    pub fn read() -> Environment {
        let given = crate::sys::environment();
        let mut passed = Vars::with_capacity(given.len());
        let mut handed = Vars::new();
        for s in given {
            match is_consumed(OsStr::from_bytes(s.name())) {
                true => handed.push(Var::Given(s)),
                false => passed.push(Var::Given(s)),
            }
        }
        Environment {
            passed: dedup(passed),
            handed: dedup(handed),
        }
    }

    /// A variable handed to start_server itself.
    pub fn handed(&self, name: &str) -> Option<&OsStr> {
        get(&self.handed, name)
    }
}

/// Looks `name` up, the last entry winning.
pub fn get<'a>(vars: &'a Vars, name: &str) -> Option<&'a OsStr> {
    vars.iter().rev().find(|v| v.name() == name).map(Var::value)
}

/// Sets `name`, replacing any earlier entry.
pub fn set(vars: &mut Vars, name: &str, value: impl Into<OsString>) {
    vars.retain(|v| v.name() != name);
    vars.push(Var::new(name, value));
}

/// Sets every variable of `over` in `vars`, in order: a name never
/// appears twice, and `over` wins (the envdir over the inherited
/// environment).
pub fn overlay(vars: &mut Vars, over: &Vars) {
    for var in over {
        vars.retain(|v| v.name() != var.name());
        vars.push(var.clone());
    }
}

/// An environment given as a base and the variables set over it (each
/// name once in `over`): a program gets the base's variables that `over`
/// does not name, in their order, then `over`'s. Composing it copies
/// nothing.
#[derive(Clone, Copy)]
pub struct Layered<'a> {
    pub base: &'a Vars,
    pub over: &'a Vars,
}

impl<'a> Layered<'a> {
    pub fn get(&self, name: &str) -> Option<&'a OsStr> {
        get(self.over, name).or_else(|| get(self.base, name))
    }

    /// Every variable, in the order the program gets them.
    pub fn iter(&self) -> impl Iterator<Item = &'a Var> + use<'a> {
        let over = NameSet::of(self.over);
        self.base
            .iter()
            .filter(move |v| !over.contains(v.name()))
            .chain(self.over)
    }
}

/// One entry per name, the first kept where it stands: what getenv(3)
/// saw in the environment we were given.
pub fn dedup(mut vars: Vars) -> Vars {
    let mut names = NameSet::with_capacity(vars.len());
    let keep: Vec<bool> = vars.iter().map(|v| names.insert(v.name())).collect();
    let mut keep = keep.into_iter();
    vars.retain(|_| keep.next().unwrap_or(true));
    vars
}

/// A set of names, made to tell quickly whether a name is in it (every
/// variable of every worker's environment is looked up in one). Most
/// names that are not are told apart by one bit of a 256-bit filter,
/// most others by a word of their length and first bytes; only names
/// alike in both are compared in full.
struct NameSet<'a> {
    filter: [u64; 4],
    names: Vec<(u64, &'a OsStr)>,
}

impl<'a> NameSet<'a> {
    fn with_capacity(n: usize) -> NameSet<'a> {
        NameSet {
            filter: [0; 4],
            names: Vec::with_capacity(n),
        }
    }

    /// The names of `vars`.
    fn of(vars: &'a Vars) -> NameSet<'a> {
        let mut set = NameSet::with_capacity(vars.len());
        for v in vars {
            set.insert(v.name());
        }
        set
    }

    /// The filter's word and bit for a name's word.
    fn bit(word: u64) -> (usize, u64) {
        let h = word.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_shr(56);
        (h.wrapping_shr(6) as usize, 1u64.wrapping_shl(h as u32))
    }

    fn find(&self, name: &OsStr, word: u64) -> bool {
        let (i, bit) = Self::bit(word);
        self.filter.get(i).is_some_and(|f| f & bit != 0)
            && self.names.iter().any(|&(w, n)| w == word && n == name)
    }

    fn contains(&self, name: &OsStr) -> bool {
        self.find(name, name_word(name))
    }

    /// Adds `name`; false when it was there already.
    fn insert(&mut self, name: &'a OsStr) -> bool {
        let word = name_word(name);
        if self.find(name, word) {
            return false;
        }
        let (i, bit) = Self::bit(word);
        if let Some(f) = self.filter.get_mut(i) {
            *f |= bit;
        }
        self.names.push((word, name));
        true
    }
}

/// A name's length and first six bytes in one word: equal names have
/// equal words.
fn name_word(name: &OsStr) -> u64 {
    let bytes = name.as_bytes();
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX).min(0xffff);
    let mut w = len.wrapping_shl(48);
    for (i, &b) in (0u32..).zip(bytes.iter().take(6)) {
        w |= u64::from(b).wrapping_shl(i.wrapping_mul(8));
    }
    w
}

/// The variable a live upgrade's state travels in (see `upgrade`).
pub const STATE_VAR: &str = "START_SERVER_STATE";
/// Set (to anything) to ask a program whether it would take the state in
/// STATE_VAR: it prints `upgrade::CHECK_OK` and exits 0 if so.
pub const CHECK_VAR: &str = "START_SERVER_UPGRADE_CHECK";

/// The value to give LISTEN_PID in a worker's environment: the child
/// replaces it with its own pid after fork (`spawn`), in as many digits.
pub const PID_PLACEHOLDER: &str = "0000000000";

/// Variables that describe descriptors or a notification socket handed to
/// start_server itself: consumed at start-up, never passed on stale.
pub const CONSUMED: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "EINHORN_FDS",
    "EINHORN_FD_COUNT",
    STATE_VAR,
    CHECK_VAR,
];

/// Whether `name` is one of the variables start_server consumes.
pub fn is_consumed(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    // Most names are passed over at their first byte (a test keeps this
    // in step with CONSUMED).
    if !matches!(bytes.first(), Some(b'L' | b'N' | b'W' | b'E' | b'S')) {
        return false;
    }
    CONSUMED.iter().any(|c| c.as_bytes() == bytes) || bytes.starts_with(b"EINHORN_FD_")
}

/// Adds the fd-passing variables for `listeners`: every protocol
/// `protocols` enables, where it applies. SERVER_STARTER_PORT is set even
/// with no socket (as in the original); the others only with sockets, and
/// LISTEN_FDS only when the sockets sit on 3, 4, ... (`systemd_layout`).
/// LISTEN_PID holds a placeholder the child replaces with its own pid.
pub fn add_protocol_vars(
    vars: &mut Vars,
    listeners: &[Listener],
    protocols: Protocols,
    systemd_layout: bool,
    generation: u64,
) {
    if protocols.server_starter {
        let pairs: Vec<String> = listeners
            .iter()
            .map(|l| format!("{}={}", l.name, l.raw()))
            .collect();
        set(vars, "SERVER_STARTER_PORT", pairs.join(";"));
        set(vars, "SERVER_STARTER_GENERATION", generation.to_string());
    }
    if listeners.is_empty() {
        return;
    }
    if protocols.systemd && systemd_layout {
        set(vars, "LISTEN_FDS", listeners.len().to_string());
        set(vars, "LISTEN_PID", PID_PLACEHOLDER);
        let names: Vec<&str> = listeners.iter().map(|l| l.fd_name.as_str()).collect();
        set(vars, "LISTEN_FDNAMES", names.join(":"));
    }
    if protocols.einhorn {
        set(vars, "EINHORN_FD_COUNT", listeners.len().to_string());
        for (i, l) in listeners.iter().enumerate() {
            set(vars, &format!("EINHORN_FD_{i}"), l.raw().to_string());
        }
        let fds: Vec<String> = listeners.iter().map(|l| l.raw().to_string()).collect();
        set(vars, "EINHORN_FDS", fds.join(" "));
    }
}

/// The longest `NAME=value` string the kernel passes to a program
/// (MAX_ARG_STRLEN, with its NUL): a longer one fails every exec.
pub const ARG_STRLEN_MAX: usize = 128 * 1024;

/// Reads a daemontools-style environment directory: every regular file
/// (or symlink to one) whose name does not start with `.` gives
/// `NAME=its first line`. Files that cannot be read, are empty, or have
/// unusable names are skipped, as in the original. Nothing blocks and
/// nothing is read without bound: a FIFO or a device is skipped, and a
/// first line too long to pass to a program is left out and reported.
/// A missing directory gives nothing. Returns the variables and the
/// problems found.
pub fn read_envdir(dir: &Path) -> (Vars, Vec<String>) {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (Vars::new(), problems);
    };
    let mut vars: Vars = Vars::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let bytes = name.as_bytes();
        if bytes.starts_with(b".") || bytes.contains(&b'=') || bytes.contains(&0) {
            continue;
        }
        match first_line(
            &entry.path(),
            ARG_STRLEN_MAX.saturating_sub(bytes.len().saturating_add(2)),
        ) {
            Ok(Some(line)) => vars.push(Var::Set(name, OsStr::from_bytes(&line).to_owned())),
            Ok(None) => {}
            Err(why) => problems.push(format!("{}: {why}", name.to_string_lossy())),
        }
    }
    vars.sort_by(|a, b| a.name().cmp(b.name()));
    (vars, problems)
}

/// The first line of the regular file at `path`, if it has one that is at
/// most `max` bytes (and holds no NUL). Opened without waiting (a FIFO
/// opens at once, and is then not a regular file).
fn first_line(path: &Path, max: usize) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return Ok(None);
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let mut content = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if file.take(limit).read_to_end(&mut content).is_err() || content.is_empty() {
        return Ok(None);
    }
    let line = match content.iter().position(|&b| b == b'\n') {
        Some(end) => content.get(..end).unwrap_or_default(),
        None => &content[..],
    };
    if line.len() > max {
        return Err(format!(
            "its first line is longer than {max} bytes, too long to pass to a program: left out"
        ));
    }
    if line.contains(&0) {
        return Ok(None);
    }
    Ok(Some(line.to_vec()))
}

impl Settings {
    /// Reads the settings from `vars`. A value that does not parse is
    /// reported in the returned list and its default used.
    pub fn from_vars(vars: &Vars) -> (Settings, Vec<String>) {
        let mut problems = Vec::new();
        let text = |name: &str| get(vars, name).map(|v| v.to_string_lossy().into_owned());
        // Perl truth: unset, empty and "0" are false.
        let auto_restart = text("ENABLE_AUTO_RESTART").is_some_and(|v| !v.is_empty() && v != "0");
        let mut seconds = |name: &str| -> Option<(Duration, String)> {
            let v = text(name)?;
            match parse_seconds(&v) {
                Ok(d) => Some((d, v)),
                Err(why) => {
                    problems.push(format!("invalid {name} value '{v}': {why}"));
                    None
                }
            }
        };
        let default = |d: Duration| (d, fmt_secs(d));
        let (auto_restart_interval, auto_restart_interval_shown) = seconds("AUTO_RESTART_INTERVAL")
            .filter(|(d, _)| !d.is_zero())
            .unwrap_or_else(|| default(DEFAULT_AUTO_RESTART_INTERVAL));
        let (kill_old_delay, kill_old_delay_shown) =
            seconds("KILL_OLD_DELAY").unwrap_or_else(|| {
                default(if auto_restart {
                    Duration::from_secs(5)
                } else {
                    Duration::ZERO
                })
            });
        let settings = Settings {
            auto_restart,
            auto_restart_interval,
            auto_restart_interval_shown,
            kill_old_delay,
            kill_old_delay_shown,
        };
        (settings, problems)
    }
}

/// Variables from `NAME, VALUE` pairs, for tests.
#[cfg(test)]
pub fn vars(pairs: &[(&str, &str)]) -> Vars {
    pairs.iter().map(|(k, v)| Var::new(*k, *v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_overrides() {
        let (s, p) = Settings::from_vars(&vars(&[]));
        assert!(!s.auto_restart && p.is_empty());
        assert_eq!(s.kill_old_delay, Duration::ZERO);
        let (s, _) = Settings::from_vars(&vars(&[("ENABLE_AUTO_RESTART", "1")]));
        assert!(s.auto_restart);
        assert_eq!(s.kill_old_delay, Duration::from_secs(5));
        assert_eq!(s.auto_restart_interval, DEFAULT_AUTO_RESTART_INTERVAL);
        let (s, _) = Settings::from_vars(&vars(&[
            ("ENABLE_AUTO_RESTART", "0"),
            ("KILL_OLD_DELAY", "2"),
        ]));
        assert!(!s.auto_restart);
        assert_eq!(s.kill_old_delay, Duration::from_secs(2));
        let (s, _) = Settings::from_vars(&vars(&[
            ("KILL_OLD_DELAY", "01"),
            ("AUTO_RESTART_INTERVAL", "0600"),
        ]));
        assert_eq!(s.kill_old_delay, Duration::from_secs(1));
        assert_eq!(s.kill_old_delay_shown, "01");
        assert_eq!(s.auto_restart_interval_shown, "0600");
        let (s, p) =
            Settings::from_vars(&vars(&[("KILL_OLD_DELAY", "2"), ("KILL_OLD_DELAY", "x")]));
        assert_eq!(s.kill_old_delay, Duration::ZERO);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("KILL_OLD_DELAY"));
    }

    #[test]
    fn consumed_names_start_with_the_letters_looked_at_first() {
        for name in CONSUMED {
            assert!(b"LNWES".contains(&name.as_bytes()[0]), "{name}");
            assert!(is_consumed(OsStr::new(name)), "{name}");
        }
        assert!(is_consumed(OsStr::new("EINHORN_FD_3")));
        assert!(!is_consumed(OsStr::new("PATH")));
        assert!(!is_consumed(OsStr::new("LISTEN")));
    }

    #[test]
    fn names_appear_once() {
        let mut v = dedup(vars(&[("PATH", "/a"), ("X", "1"), ("PATH", "/b")]));
        assert_eq!(v, vars(&[("PATH", "/a"), ("X", "1")]));
        let several = [("A", "1"), ("B", "1"), ("A", "2"), ("C", "1"), ("B", "2")];
        let kept = [("A", "1"), ("B", "1"), ("C", "1")];
        assert_eq!(dedup(vars(&several)), vars(&kept));
        // Names alike in length and first bytes are still told apart.
        let alike = [("SERVER_1", "a"), ("SERVER_2", "b"), ("SERVER_1", "c")];
        assert_eq!(
            dedup(vars(&alike)),
            vars(&[("SERVER_1", "a"), ("SERVER_2", "b")])
        );
        // Enough names that the filter's bits collide: each is still told
        // apart from the others, and found again.
        let names: Vec<String> = (0..600).map(|i| format!("VARIABLE_{i}")).collect();
        let mut many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "first")).collect();
        many.extend(names.iter().step_by(7).map(|n| (n.as_str(), "again")));
        let kept = dedup(vars(&many));
        assert_eq!(kept.len(), names.len());
        assert!(kept.iter().all(|v| v.value() == "first"));
        overlay(&mut v, &vars(&[("PATH", "/env"), ("Y", "2")]));
        assert_eq!(v, vars(&[("X", "1"), ("PATH", "/env"), ("Y", "2")]));
    }

    #[test]
    fn layered_is_the_base_with_the_over_set_on_it() {
        let base = vars(&[("PATH", "/a"), ("X", "1"), ("HOME", "/h"), ("Y", "2")]);
        let over = vars(&[("Y", "3"), ("NEW", "n"), ("PATH", "/b")]);
        let mut expected = base.clone();
        overlay(&mut expected, &over);
        let layered = Layered {
            base: &base,
            over: &over,
        };
        let got: Vars = layered.iter().cloned().collect();
        assert_eq!(got, expected);
        assert_eq!(layered.get("PATH"), Some(OsStr::new("/b")));
        assert_eq!(layered.get("HOME"), Some(OsStr::new("/h")));
        assert_eq!(layered.get("NONE"), None);
    }

    #[test]
    fn seconds_text() {
        assert_eq!(fmt_secs(Duration::from_secs(360)), "360");
        assert_eq!(fmt_secs(Duration::from_millis(250)), "0.25");
    }

    #[test]
    fn envdir() {
        let dir = std::env::temp_dir().join(format!("ss-envdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("A"), "one\ntwo\n").unwrap();
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        std::fs::write(dir.join("EMPTY"), "").unwrap();
        std::fs::write(dir.join("BLANK"), "\n").unwrap();
        std::fs::write(dir.join("LONG"), vec![b'x'; 200 * 1024]).unwrap();
        std::fs::write(dir.join("FITS"), vec![b'y'; ARG_STRLEN_MAX - 6]).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("ZERO")).unwrap();
        std::os::unix::fs::symlink("A", dir.join("LINKED")).unwrap();
        let (v, problems) = read_envdir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let fits = "y".repeat(ARG_STRLEN_MAX - 6);
        assert_eq!(
            v,
            vars(&[
                ("A", "one"),
                ("BLANK", ""),
                ("FITS", &fits),
                ("LINKED", "one")
            ])
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("LONG: its first line is longer than"),
            "{problems:?}"
        );
        assert!(read_envdir(Path::new("/nonexistent/dir")).0.is_empty());
    }
}
