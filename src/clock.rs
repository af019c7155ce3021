//! Time as start_server reads and writes it: seconds parsed from and
//! printed for people, and instants moved forward without overflow. Pure
//! functions: nothing here reads a clock (`Instant::now` is in `sys`).

use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point in time: CLOCK_MONOTONIC, as a duration since the clock's
/// start (the standard library's Instant reads the same clock, through
/// the vDSO: see `sys::monotonic`). Arithmetic saturates rather than
/// panics.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Instant(Duration);

impl Instant {
    /// The instant a CLOCK_MONOTONIC reading stands for.
    pub const fn from_monotonic(since_start: Duration) -> Instant {
        Instant(since_start)
    }

    /// The CLOCK_MONOTONIC reading this instant is: the same clock after
    /// exec, and the one systemd's MONOTONIC_USEC means.
    pub const fn since_start(&self) -> Duration {
        self.0
    }

    pub fn checked_add(&self, d: Duration) -> Option<Instant> {
        self.0.checked_add(d).map(Instant)
    }

    pub fn checked_sub(&self, d: Duration) -> Option<Instant> {
        self.0.checked_sub(d).map(Instant)
    }

    /// How long after `earlier` this is, if it is not before it.
    pub fn checked_duration_since(&self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0)
    }

    /// How long after `earlier` this is; zero if it is before it.
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The same as `saturating_duration_since` (as the standard
    /// library's does).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        self.0 = self.0.saturating_add(d);
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d))
    }
}

impl Sub for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// `d` after `t`. Durations are capped where they are read (10^9 s at
/// most), far below what would overflow the clock; were one to, it falls
/// due a year on rather than panicking.
pub fn after(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// Seconds as a non-negative decimal number: `1`, `0.25`, `.5`, with up
/// to nine decimals (integer arithmetic: no float parsing in the binary).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let bad = || "expected a non-negative number of seconds".to_string();
    let t = s.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return Err(bad());
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    if secs > 1_000_000_000 {
        return Err("too large (at most 1000000000 seconds)".into());
    }
    let nanos: u32 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    Ok(Duration::new(secs, nanos))
}

/// Seconds as Server::Starter prints them: `5`, or `0.25` for fractions.
pub fn fmt_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
    }
}
