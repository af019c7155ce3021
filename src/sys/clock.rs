//! The clock: CLOCK_MONOTONIC, read with the system call.
#![allow(unsafe_code)]

use super::*;

impl crate::clock::Instant {
    /// Now (see `monotonic`).
    pub fn now() -> crate::clock::Instant {
        crate::clock::Instant::from_monotonic(monotonic())
    }
}

/// CLOCK_MONOTONIC, read with the system call itself. The C library's
/// clock_gettime answers from the vDSO, without a system call, but its
/// first call in a process looks the vDSO's function up and faults its
/// pages in, which costs more (about 7 us) than a hundred system calls:
/// a supervisor reads the clock a few times per event, and once before
/// its first worker.
fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer for the call; CLOCK_MONOTONIC
    // always exists, so the call cannot fail and ts is always written.
    unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC as libc::c_long,
            &raw mut ts,
        )
    };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos.min(999_999_999))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_the_c_librarys_monotonic_clock() {
        let read = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: ts is a valid out-pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let before = read();
        let ours = super::monotonic();
        let after = read();
        assert!(
            before <= ours && ours <= after,
            "{before:?} {ours:?} {after:?}"
        );
    }
}
