//! The allocator of the `iscsi-bench` binary: every allocation of a page or more starts
//! on a page boundary, as fio page-aligns its I/O memory (`iomem_align`'s default).
//!
//! Why: `O_DIRECT` wants memory aligned to the file's direct-I/O memory alignment (512
//! bytes on ext4 and tmpfs here, often a page), and an I/O buffer is a `Vec<u8>`, which
//! `malloc` aligns to 16 bytes only (and past a page header for large blocks). The io_uring
//! engine then reads and writes through an aligned bounce buffer and copies every byte
//! once (`EngineCounters::bytes_copied`): a 4 KiB copy per I/O, 128 KiB per 128 KiB read.
//! With this allocator the buffers the engine hands out are aligned and nothing is copied.
//!
//! Sound because [`GlobalAlloc`] gets the same layout at `dealloc` and `realloc` as at
//! `alloc`: the same rule maps it to the same page-aligned layout each time. Small
//! allocations (the many short strings and nodes) keep `malloc`'s packing.

use std::alloc::{GlobalAlloc, Layout, System};

/// The alignment given to allocations of at least this many bytes.
pub const PAGE_BYTES: usize = 4096;

/// See the module docs.
pub struct PageAlignedLarge;

/// `layout`, aligned to a page when it is a page or larger.
fn widened(layout: Layout) -> Layout {
    if layout.size() >= PAGE_BYTES && layout.align() < PAGE_BYTES {
        // Only a size within a page of isize::MAX is refused; it keeps its own layout.
        Layout::from_size_align(layout.size(), PAGE_BYTES).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every method forwards to `System` with `widened(layout)`, a valid layout at least
// as large and as aligned as the one asked for; `dealloc` and `realloc` are given the same
// layout the block was allocated with (GlobalAlloc's contract), so `widened` maps them to
// the layout `System` allocated it with.
unsafe impl GlobalAlloc for PageAlignedLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `widened` keeps a non-zero size (see above).
        unsafe { System.alloc(widened(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(widened(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout`, so from `System` with
        // `widened(layout)`.
        unsafe { System.dealloc(ptr, widened(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        // SAFETY: GlobalAlloc's contract: `new_size`, rounded up to `layout.align()`, does
        // not overflow isize.
        let new = widened(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            // SAFETY: same alignment on both sides: `System.realloc` keeps it.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // The block crosses the page threshold: move it to a block of the new alignment.
        // SAFETY: `new` is a valid non-zero layout; the copy is within both blocks; `ptr`
        // was allocated by `System` with `old`.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_or_more_is_page_aligned_and_less_keeps_its_alignment() {
        let page = widened(Layout::from_size_align(4096, 1).unwrap());
        assert_eq!((page.size(), page.align()), (4096, 4096));
        let large = widened(Layout::from_size_align(131_072, 8).unwrap());
        assert_eq!((large.size(), large.align()), (131_072, 4096));
        let small = widened(Layout::from_size_align(4095, 8).unwrap());
        assert_eq!((small.size(), small.align()), (4095, 8));
        let already = widened(Layout::from_size_align(8192, 65_536).unwrap());
        assert_eq!(already.align(), 65_536);
    }

    #[test]
    fn blocks_that_grow_and_shrink_across_a_page_keep_their_bytes_and_alignment() {
        let alloc = PageAlignedLarge;
        let small = Layout::from_size_align(100, 1).unwrap();
        // SAFETY: each pointer is used within the size it was last (re)allocated with and
        // freed once with the layout it has then.
        unsafe {
            let p = alloc.alloc(small);
            assert!(!p.is_null());
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            let grown = alloc.realloc(p, small, 10_000);
            assert!(!grown.is_null());
            assert!((grown as usize).is_multiple_of(PAGE_BYTES));
            assert!((0..100).all(|i| *grown.add(i) == i as u8));
            let big = Layout::from_size_align(10_000, 1).unwrap();
            let shrunk = alloc.realloc(grown, big, 50);
            assert!(!shrunk.is_null());
            assert!((0..50).all(|i| *shrunk.add(i) == i as u8));
            alloc.dealloc(shrunk, Layout::from_size_align(50, 1).unwrap());
        }
        let buffer = {
            let layout = Layout::from_size_align(8192, 1).unwrap();
            // SAFETY: allocated and freed with the same layout.
            unsafe {
                let p = alloc.alloc_zeroed(layout);
                let aligned = (p as usize).is_multiple_of(PAGE_BYTES);
                let zeroed = (0..8192).all(|i| *p.add(i) == 0);
                alloc.dealloc(p, layout);
                (aligned, zeroed)
            }
        };
        assert_eq!(buffer, (true, true));
    }
}
