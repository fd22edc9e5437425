//! How the server holds memory: its allocator, and the memory it gives back
//! to the system on purpose.
//!
//! **The allocator** ([`Allocator`]) is mimalloc (see Cargo.toml: it keeps
//! idle WebSockets small), except for blocks of [`FRESH_FROM`] bytes or
//! more, which are mapped from the system for each allocation and unmapped
//! when freed. The reason is the embedded store's write buffer (SurrealKV's
//! memtable, `--db-memtable-mb`): it is one zeroed block, and its pages
//! should become resident only as writes fill it. mimalloc zeroes a block
//! it hands out again with `memset`, so a buffer that lands in memory used
//! before is resident whole from its first write (the tests below show
//! it): with the default 256 MiB buffer, 256 MiB at once. A fresh mapping
//! is zero without being touched. (The soak's steps of about 20 MB with
//! 8 MiB buffers, first taken for this, came from transparent huge pages:
//! see below.)
//!
//! **Giving back.** mimalloc returns a page a thread freed to the system
//! only at that thread's next call into the allocator, a second after the
//! free (its purge delay). A thread that goes quiet after a burst keeps what
//! it freed resident: after the fuzz test's requests (tests/api/fuzz.rs) the
//! server stayed 10-30 MB above what it had in use, differently each run.
//! So, while the server runs, one task has the allocator give back
//! everything freed, every second.
//!
//! **No transparent huge pages.** mimalloc asks the kernel for huge pages on
//! its arenas (`madvise(MADV_HUGEPAGE)`), and Linux's khugepaged, whenever
//! its scan comes round, fills a 2 MiB range that has even one page in use
//! into a whole huge page (with the common `max_ptes_none` of 511). What
//! mimalloc gave back comes back resident, in steps of 2 MiB, at times no
//! request explains. In the middle of a fuzz test run (tests/api/fuzz.rs)
//! the server's RSS was 98 MB, of which about 35 MB anonymous and 22.5 MB
//! huge pages, and its anonymous memory at rest wandered over 13 MB from
//! reading to reading. With huge pages off for the process, the anonymous
//! memory at rest was 16.5-19.7 MB, and ten readings of the total spanned
//! 9-12 MB. So the server turns them off for itself
//! ([`no_transparent_huge_pages`]), which also covers the store's memory.

use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

use mimalloc::MiMalloc;

/// How often the server gives back what the allocator holds freed.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// Blocks this large or larger are mapped fresh from the system (the
/// smallest write buffer the store accepts is 4 MiB).
pub const FRESH_FROM: usize = 4 << 20;

/// The largest alignment a fresh mapping gives (a page); a block that asks
/// for more goes to mimalloc, whatever its size.
const PAGE: usize = 4096;

/// The server's global allocator: mimalloc, with large blocks mapped fresh
/// from the system (see the module doc). The binary and the examples that
/// run a server declare it as their `#[global_allocator]`.
pub struct Allocator;

/// Whether a block of `layout` is mapped fresh rather than taken from
/// mimalloc. Decided by the layout alone, so that freeing a block finds the
/// same answer as allocating it did.
fn fresh(layout: Layout) -> bool {
    cfg!(unix) && layout.size() >= FRESH_FROM && layout.align() <= PAGE
}

// SAFETY: every block is returned by the allocator that handed it out:
// `fresh` sends a layout to the same one on allocation and on free, and a
// reallocation that crosses between them moves the contents.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if fresh(layout) { map(layout.size()) } else { unsafe { MiMalloc.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // A fresh mapping reads as zeroes until it is written.
        if fresh(layout) { map(layout.size()) } else { unsafe { MiMalloc.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a block of this layout was made by `map` (see `fresh`),
        // and the caller is done with it.
        if fresh(layout) { unsafe { unmap(ptr, layout.size()) } } else { unsafe { MiMalloc.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !fresh(layout) && !fresh(new_layout) {
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // Across the two, or between two mappings: move.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// A fresh private mapping of `size` bytes, or null.
#[cfg(unix)]
#[allow(unsafe_code)]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED { std::ptr::null_mut() } else { ptr.cast() }
}

/// Unmaps a block made by [`map`].
///
/// # Safety
/// `ptr` and `size` must be those of a mapping `map` made, and nothing may
/// use it any more.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: the caller's guarantee.
    unsafe { libc::munmap(ptr.cast(), size) };
}

#[cfg(not(unix))]
fn map(_: usize) -> *mut u8 {
    unreachable!("`fresh` is false off unix")
}

#[cfg(not(unix))]
#[allow(unsafe_code)]
unsafe fn unmap(_: *mut u8, _: usize) {
    unreachable!("`fresh` is false off unix")
}

/// The task that gives back freed memory; it stops when this is dropped.
pub struct GivingBack(tokio::task::JoinHandle<()>);

impl Drop for GivingBack {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns transparent huge pages off for this whole process, on Linux
/// (elsewhere it does nothing); the server calls it as it starts serving.
/// See the module doc for why.
#[allow(unsafe_code)]
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and sets a flag of
        // this process; no memory is touched.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "could not turn transparent huge pages off; resident memory may be higher");
        }
    }
}

/// Gives back what the allocator holds freed every [`GIVE_BACK_EVERY`]
/// until the returned guard is dropped. With another global allocator (the
/// test binaries, `--features system-allocator`) it costs one call a second
/// into mimalloc's unused heap.
pub fn give_back_freed_regularly() -> GivingBack {
    GivingBack(tokio::spawn(async {
        let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            give_back_freed();
        }
    }))
}

#[allow(unsafe_code)]
fn give_back_freed() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any
    // thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(all(test, unix))]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off_for_the_process_after_the_call() {
        no_transparent_huge_pages();
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
    }

    const BIG: usize = 8 << 20;

    /// How many of the pages of `len` bytes at `ptr` are resident.
    fn resident_pages(ptr: *mut u8, len: usize) -> usize {
        let pages = len.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: `ptr` is page-aligned (both allocators align blocks this
        // large to a page) and `vec` has a byte per page.
        let rc = unsafe { libc::mincore(ptr.cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore failed");
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// Allocates a big zeroed block, writes it all, frees it, and allocates
    /// another: how many of the second one's pages are resident before
    /// anything is written to it.
    fn resident_after_reuse(alloc: &dyn GlobalAlloc) -> usize {
        let layout = Layout::from_size_align(BIG, PAGE).expect("layout");
        unsafe {
            let first = alloc.alloc_zeroed(layout);
            assert!(!first.is_null());
            std::ptr::write_bytes(first, 1, BIG);
            alloc.dealloc(first, layout);
            let second = alloc.alloc_zeroed(layout);
            assert!(!second.is_null());
            let slice = std::slice::from_raw_parts(second, BIG);
            let resident = resident_pages(second, BIG);
            assert!(slice.iter().step_by(PAGE / 2).all(|b| *b == 0), "a zeroed block reads as zeroes");
            alloc.dealloc(second, layout);
            resident
        }
    }

    /// The store's write buffer is a big zeroed block; it must not be made
    /// resident before the writes that fill it.
    #[test]
    fn a_big_zeroed_block_is_resident_only_where_written_even_after_reuse() {
        let pages = BIG / PAGE;
        let resident = resident_after_reuse(&Allocator);
        assert!(resident < pages / 16, "{resident} of {pages} pages resident before any write");
    }

    /// What `Allocator` is for: mimalloc zeroes a reused block by writing it.
    #[test]
    fn mimalloc_alone_makes_a_reused_zeroed_block_resident() {
        let pages = BIG / PAGE;
        let resident = resident_after_reuse(&MiMalloc);
        assert!(resident > pages / 2, "only {resident} of {pages} pages resident: mimalloc changed");
    }

    /// Growing and shrinking across the threshold keeps the contents, and
    /// alignments beyond a page go to mimalloc.
    #[test]
    fn reallocation_across_the_threshold_keeps_the_contents() {
        let small = Layout::from_size_align(FRESH_FROM / 2, 8).expect("layout");
        unsafe {
            let p = Allocator.alloc(small);
            for i in 0..small.size() {
                *p.add(i) = (i % 251) as u8;
            }
            let grown = Allocator.realloc(p, small, FRESH_FROM * 2);
            assert!(!grown.is_null());
            assert!((0..small.size()).all(|i| *grown.add(i) == (i % 251) as u8));
            let big = Layout::from_size_align(FRESH_FROM * 2, 8).expect("layout");
            let bigger = Allocator.realloc(grown, big, FRESH_FROM * 3);
            assert!((0..small.size()).all(|i| *bigger.add(i) == (i % 251) as u8));
            let bigger_layout = Layout::from_size_align(FRESH_FROM * 3, 8).expect("layout");
            let shrunk = Allocator.realloc(bigger, bigger_layout, 1024);
            assert!((0..1024).all(|i| *shrunk.add(i) == (i % 251) as u8));
            Allocator.dealloc(shrunk, Layout::from_size_align(1024, 8).expect("layout"));

            let aligned = Layout::from_size_align(FRESH_FROM, 2 * PAGE).expect("layout");
            let p = Allocator.alloc(aligned);
            assert_eq!(p as usize % (2 * PAGE), 0);
            Allocator.dealloc(p, aligned);
        }
    }
}
