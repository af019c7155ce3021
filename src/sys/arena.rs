//! The program's memory allocator: a small arena in static memory, taken
//! from front to back, and the C library's allocator once it is full.
//!
//! Start-up allocates a few hundred small blocks (the options, the
//! environment, the worker's argv and envp) and frees most of them soon
//! after. musl's allocator gives each size class pages of its own, maps
//! and unmaps them as they fill and empty, and faults each one in: for a
//! program that lives a fraction of a millisecond before its first
//! worker, that was a third of start_server's own share of the time to
//! the worker's first instruction. Here the same blocks come one after
//! another from a zeroed static array: a few pages, faulted in once.
//!
//! A freed block is taken back only when it is the last one taken (the
//! common case of a temporary), and the last block grows in place; other
//! freed blocks stay unused. So the arena fills up over the process's
//! life, at most ARENA_SIZE bytes of it, and then every new block comes
//! from the C library, exactly as if the arena were not there. Blocks of
//! more than a quarter of the arena go to the C library at once.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The arena's size: start-up with a usual environment takes about a
/// third of it.
pub const ARENA_SIZE: usize = 64 * 1024;

/// Aligned for any block (blocks are rounded up to their own alignment),
/// not to a page: the arena's first bytes share a page with the other
/// small statics, faulted in anyway.
#[repr(C, align(16))]
struct Space(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the bytes are handed out in disjoint blocks (each range is
// claimed by one successful compare-exchange of USED), and each block is
// accessed only through the pointer its owner got.
unsafe impl Sync for Space {}

static SPACE: Space = Space(UnsafeCell::new([0; ARENA_SIZE]));
/// Bytes of the arena taken, from its start: the next block starts here
/// (rounded up to its alignment).
static USED: AtomicUsize = AtomicUsize::new(0);

/// The global allocator (set in the binary).
pub struct Arena;

fn start() -> *mut u8 {
    SPACE.0.get().cast()
}

/// Where `ptr` lies in the arena, if it does.
fn offset_of(ptr: *mut u8) -> Option<usize> {
    let offset = (ptr as usize).checked_sub(start() as usize)?;
    (offset < ARENA_SIZE).then_some(offset)
}

/// A block for `layout` from the arena, if it fits.
fn take(layout: Layout) -> Option<*mut u8> {
    if layout.size() > ARENA_SIZE / 4 {
        return None;
    }
    let base = start() as usize;
    let mut used = USED.load(Ordering::Relaxed);
    loop {
        // The block's offset: the free space's start, rounded up so that
        // the block's address is a multiple of the alignment.
        let at = base
            .checked_add(used)?
            .checked_next_multiple_of(layout.align())?
            .checked_sub(base)?;
        let end = at.checked_add(layout.size())?;
        if end > ARENA_SIZE {
            return None;
        }
        match USED.compare_exchange_weak(used, end, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(start().wrapping_add(at)),
            Err(now) => used = now,
        }
    }
}

/// Moves the end of the last block, at `offset` and `old` bytes long, so
/// that it is `new` bytes long; false when it is not the last block or
/// does not fit.
fn resize_last(offset: usize, old: usize, new: usize) -> bool {
    let (Some(end), Some(new_end)) = (offset.checked_add(old), offset.checked_add(new)) else {
        return false;
    };
    new_end <= ARENA_SIZE
        && USED
            .compare_exchange(end, new_end, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

// SAFETY: every block handed out is either a fresh, disjoint, suitably
// aligned range of the arena (take) or the C library's; dealloc and
// realloc tell the two apart by address and pass the C library's blocks
// back to it with the layout they were allocated with.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match take(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's layout has a non-zero size.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match offset_of(ptr) {
            // Taken back only when it is the last block; otherwise it
            // stays unused.
            Some(offset) => {
                resize_last(offset, layout.size(), 0);
            }
            // SAFETY: not in the arena, so the C library allocated it,
            // with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(offset) = offset_of(ptr) else {
            // SAFETY: the C library's block, with this layout; the caller
            // guarantees new_size is valid for it.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        if resize_last(offset, layout.size(), new_size) {
            return ptr;
        }
        // SAFETY: the caller guarantees new_size, rounded up to the
        // alignment, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: new_size is not zero (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the bytes copied and do
            // not overlap (the new one is fresh); the old one is freed
            // once, with its own layout.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test binary's own allocator is the C library's: these calls
    // alone use the arena.
    #[test]
    fn blocks_are_disjoint_aligned_and_the_last_one_moves() {
        let a = Arena;
        let l16 = Layout::from_size_align(16, 8).unwrap();
        let l64 = Layout::from_size_align(64, 64).unwrap();
        // SAFETY: every layout has a non-zero size; every block is freed
        // or resized once, with the layout it has, and used within it.
        unsafe {
            let p = a.alloc(l16);
            let q = a.alloc(l64);
            assert!(offset_of(p).is_some() && offset_of(q).is_some());
            assert_eq!(q as usize % 64, 0);
            assert!(q as usize >= p as usize + 16);
            // The last block grows where it is, and its bytes stay.
            q.write_bytes(7, 64);
            let q2 = a.realloc(q, l64, 128);
            assert_eq!(q2, q);
            // Another block does not: it is copied.
            let p2 = a.realloc(p, l16, 32);
            assert_ne!(p2, p);
            assert!(offset_of(p2).is_some());
            // The last block freed is taken back: the next block of its
            // size starts where it did.
            a.dealloc(p2, Layout::from_size_align(32, 8).unwrap());
            let p3 = a.alloc(Layout::from_size_align(32, 8).unwrap());
            assert_eq!(p3, p2);
            assert_eq!(*q2.add(63), 7);
            // Large blocks, and any block once the arena is full, come
            // from the C library, and go back to it.
            let big = Layout::from_size_align(ARENA_SIZE / 2, 8).unwrap();
            let b = a.alloc(big);
            assert!(!b.is_null() && offset_of(b).is_none());
            let b2 = a.realloc(b, big, ARENA_SIZE);
            assert!(!b2.is_null() && offset_of(b2).is_none());
            a.dealloc(b2, Layout::from_size_align(ARENA_SIZE, 8).unwrap());
            let quarter = Layout::from_size_align(ARENA_SIZE / 4, 8).unwrap();
            let mut last = std::ptr::null_mut();
            for _ in 0..5 {
                last = a.alloc(quarter);
                assert!(!last.is_null());
            }
            assert!(offset_of(last).is_none());
            a.dealloc(last, quarter);
        }
    }
}
