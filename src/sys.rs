//! Thin, safe wrappers around the system calls start_server needs.
//!
//! This is the only module allowed to use `unsafe`. Every wrapper is named
//! after the call it makes, turns `-1` into `io::Error`, retries on `EINTR`
//! where the call is restartable, and hands descriptors out as `OwnedFd`.
//! The code that runs in a forked child before `execve` lives here too
//! ([`fork_exec`]): a fixed script of async-signal-safe calls that touches
//! only memory prepared before the fork.
//!
//! The two primitives with contracts the compiler cannot check, forking
//! (`fork_raw`) and taking ownership of a descriptor number (`own`), are
//! `unsafe fn`s private to this module. Every public function built on
//! them establishes the contract itself, so no safe caller can break it:
//! the child's fixed script, the single-thread check of [`fork`], and the
//! record of inherited descriptors, each of which [`take_inherited`] hands
//! out once. One function relies on being called early instead:
//! [`close_all_inherited`], which start_server's `run` calls before it
//! opens anything from descriptor 3 up (it checks that descriptor 3 is
//! not one of ours, and falls back to the record when it is).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::wait::Pid;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The text of an errno value, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated string that
    // stays valid at least until the next strerror call; we copy it at once.
    let msg = unsafe { CStr::from_ptr(libc::strerror(errno)) };
    msg.to_string_lossy().into_owned()
}

mod arena;
mod child;
mod clock;
mod fd;
mod inherited;
mod inotify;
mod process;
mod signal;
mod socket;

pub use arena::Arena;
pub use child::*;
pub use fd::*;
pub use inherited::*;
pub use inotify::*;
pub use process::*;
pub use signal::*;
pub use socket::*;
