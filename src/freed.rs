//! The unit tests' allocator: the system's, except that while a test
//! watches for some bytes on its thread, every block freed or moved there
//! is searched for them first. It shows a secret left behind in memory
//! given back unwiped, which no assertion on a value can.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// The bytes watched for on this thread, if any.
    static WATCHED: Cell<Option<&'static [u8]>> = const { Cell::new(None) };
    /// Whether a block freed or moved since the watch began held them.
    static SEEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` watching for `needle`; whether any block freed or moved
/// (reallocated) on this thread meanwhile still held it.
pub fn left_behind(needle: &'static [u8], f: impl FnOnce()) -> bool {
    WATCHED.set(Some(needle));
    SEEN.set(false);
    f();
    WATCHED.set(None);
    SEEN.get()
}

fn search(p: *mut u8, size: usize) {
    // `try_with`: a thread's locals may be gone while it frees its last.
    let _ = WATCHED.try_with(|w| {
        if let Some(needle) = w.get() {
            // SAFETY: `p` points at `size` bytes the caller allocated and
            // is now handing back, still mapped until `System` frees them.
            // Some may never have been written (spare capacity): reading
            // those is what this test-only allocator is for, and their
            // values only ever meet a comparison.
            let block = unsafe { std::slice::from_raw_parts(p, size) };
            if block.windows(needle.len()).any(|b| b == needle) {
                SEEN.set(true);
            }
        }
    });
}

pub struct Watching;

// SAFETY: every call is passed on to `System` unchanged.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        search(p, layout.size());
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        search(p, layout.size());
        unsafe { System.realloc(p, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;
