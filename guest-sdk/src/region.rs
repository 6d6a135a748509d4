//! The policy's memory allocator: regions for what one call allocates.
//!
//! A policy call allocates a handful of small blocks (the arguments the host copies in, the
//! key it renders, the rule it returns) and frees them all by the time the host has read the
//! rule. [`Regions`] serves small blocks by bumping a pointer through a 64 KiB chunk and counts
//! the blocks alive in each chunk; a chunk whose count falls to zero is reused from its start.
//! Freeing is a decrement, allocating an add and a compare: a call's allocations cost a few
//! nanoseconds instead of a general-purpose allocator's bookkeeping.
//!
//! A block that outlives its call (the compiled policy, a value kept in a `static`) keeps its
//! chunk from being reused until it is freed; the next blocks go to a fresh chunk. Large blocks
//! (over 4 KiB) and over-aligned ones go to the system allocator.
//!
//! It is the component's global allocator when the crate feature `region-alloc` (on by default)
//! is enabled and the target is single-threaded WebAssembly. A policy that brings its own
//! `#[global_allocator]` turns the feature off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Size and alignment of a chunk (a power of two): a block's chunk is its address rounded down.
const CHUNK: usize = 64 << 10;
/// The largest block served from a chunk.
const SMALL: usize = 4 << 10;
/// The largest alignment served from a chunk.
const ALIGN: usize = 16;
/// Empty chunks kept for reuse; more are returned to the system allocator.
const SPARE: usize = 4;

/// The start of every chunk.
#[repr(C, align(16))]
struct Header {
    /// Blocks alive in this chunk.
    live: Cell<usize>,
    /// The next spare chunk, when this one is spare.
    next_spare: Cell<*mut Header>,
}

const FIRST: usize = std::mem::size_of::<Header>();

/// A region allocator (see the module docs). Not thread-safe: it is installed only on targets
/// without threads.
pub struct Regions {
    /// The chunk blocks are bumped from (null before the first allocation).
    current: Cell<*mut Header>,
    /// Where the next block starts in the current chunk.
    next: Cell<usize>,
    /// Spare (empty) chunks, linked through their headers.
    spare: Cell<*mut Header>,
    spares: Cell<usize>,
}

// SAFETY: `Regions` is only used as the global allocator of single-threaded WebAssembly (see
// `lib.rs`), and by single-threaded unit tests.
unsafe impl Sync for Regions {}

impl Regions {
    /// An allocator with no chunk yet.
    pub const fn new() -> Regions {
        Regions {
            current: Cell::new(ptr::null_mut()),
            next: Cell::new(0),
            spare: Cell::new(ptr::null_mut()),
            spares: Cell::new(0),
        }
    }

    fn chunk_layout() -> Layout {
        // SAFETY: CHUNK is a non-zero power of two.
        unsafe { Layout::from_size_align_unchecked(CHUNK, CHUNK) }
    }

    fn small(layout: &Layout) -> bool {
        layout.size() <= SMALL && layout.align() <= ALIGN
    }

    /// Makes a spare or new chunk current; false when the system has no memory.
    unsafe fn new_chunk(&self) -> bool {
        let spare = self.spare.get();
        let chunk = if spare.is_null() {
            let p = System.alloc(Self::chunk_layout()) as *mut Header;
            if p.is_null() {
                return false;
            }
            p.write(Header {
                live: Cell::new(0),
                next_spare: Cell::new(ptr::null_mut()),
            });
            p
        } else {
            self.spare.set((*spare).next_spare.get());
            self.spares.set(self.spares.get() - 1);
            spare
        };
        self.current.set(chunk);
        self.next.set(chunk as usize + FIRST);
        true
    }

    /// A chunk with no block left that is not current: kept as a spare or given back.
    unsafe fn retire(&self, chunk: *mut Header) {
        if self.spares.get() < SPARE {
            (*chunk).next_spare.set(self.spare.get());
            self.spare.set(chunk);
            self.spares.set(self.spares.get() + 1);
        } else {
            System.dealloc(chunk as *mut u8, Self::chunk_layout());
        }
    }
}

impl Default for Regions {
    fn default() -> Self {
        Regions::new()
    }
}

unsafe impl GlobalAlloc for Regions {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::small(&layout) {
            return System.alloc(layout);
        }
        let align = layout.align() - 1;
        let mut chunk = self.current.get();
        let mut start = (self.next.get() + align) & !align;
        if chunk.is_null() || start + layout.size() > chunk as usize + CHUNK {
            if !self.new_chunk() {
                return ptr::null_mut();
            }
            chunk = self.current.get();
            start = (self.next.get() + align) & !align;
        }
        self.next.set(start + layout.size());
        (*chunk).live.set((*chunk).live.get() + 1);
        start as *mut u8
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !Self::small(&layout) {
            return System.dealloc(block, layout);
        }
        let chunk = (block as usize & !(CHUNK - 1)) as *mut Header;
        let live = (*chunk).live.get() - 1;
        (*chunk).live.set(live);
        if live == 0 {
            if chunk == self.current.get() {
                self.next.set(chunk as usize + FIRST);
            } else {
                self.retire(chunk);
            }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The last block of the current chunk grows or shrinks in place.
        if Self::small(&layout)
            && new_size <= SMALL
            && block as usize + layout.size() == self.next.get()
            && block as usize + new_size <= self.current.get() as usize + CHUNK
        {
            self.next.set(block as usize + new_size);
            return block;
        }
        // SAFETY: as `GlobalAlloc::realloc`'s contract requires of the caller.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            ptr::copy_nonoverlapping(block, new, layout.size().min(new_size));
            self.dealloc(block, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random sequence (xorshift), so the test is the same on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    /// Many blocks of many sizes, freed and grown in random order: every block keeps its bytes,
    /// no two live blocks overlap, and chunks are reused.
    #[test]
    fn blocks_keep_their_bytes_and_chunks_are_reused() {
        let regions = Regions::new();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let sizes = [1, 7, 16, 24, 100, 1000, 4096, 5000, 70_000];
        for round in 0..20_000u32 {
            if live.is_empty() || rng.next(3) > 0 && live.len() < 500 {
                let size = sizes[rng.next(sizes.len())];
                let align = [1, 2, 8, 16, 64][rng.next(5)];
                let layout = Layout::from_size_align(size, align).unwrap();
                let p = unsafe { regions.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                let tag = round as u8;
                unsafe { ptr::write_bytes(p, tag, size) };
                live.push((p, layout, tag));
            } else {
                let i = rng.next(live.len());
                let (p, layout, tag) = live.swap_remove(i);
                let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
                assert!(
                    bytes.iter().all(|&b| b == tag),
                    "block {p:?} was overwritten"
                );
                if rng.next(4) == 0 {
                    let new_size = sizes[rng.next(sizes.len())];
                    let q = unsafe { regions.realloc(p, layout, new_size) };
                    let kept = layout.size().min(new_size);
                    let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
                    assert!(bytes.iter().all(|&b| b == tag), "realloc lost bytes");
                    let layout = Layout::from_size_align(new_size, layout.align()).unwrap();
                    unsafe { ptr::write_bytes(q, tag, new_size) };
                    live.push((q, layout, tag));
                } else {
                    unsafe { regions.dealloc(p, layout) };
                }
            }
        }
        for (p, layout, tag) in live.drain(..) {
            let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
            assert!(bytes.iter().all(|&b| b == tag));
            unsafe { regions.dealloc(p, layout) };
        }
        // Everything freed: the current chunk starts over and at most SPARE chunks are kept.
        let current = regions.current.get();
        assert_eq!(regions.next.get(), current as usize + FIRST);
        assert_eq!(unsafe { (*current).live.get() }, 0);
        assert!(regions.spares.get() <= SPARE);
    }

    /// A call's blocks, all freed, leave the chunk to be reused from its start; a block that
    /// outlives the call sends the next calls to another chunk.
    #[test]
    fn a_call_reuses_its_chunk_unless_a_block_outlives_it() {
        let regions = Regions::new();
        let small = Layout::from_size_align(32, 8).unwrap();
        let call = |keep: bool| unsafe {
            let a = regions.alloc(small);
            let b = regions.alloc(small);
            regions.dealloc(a, small);
            if !keep {
                regions.dealloc(b, small);
            }
            (a, b)
        };
        let (first, _) = call(false);
        let (again, _) = call(false);
        assert_eq!(first, again, "an emptied chunk starts over");
        let (_, kept) = call(true);
        let (after, _) = call(false);
        assert!(after > kept, "a live block is never handed out again");
        unsafe { regions.dealloc(kept, small) };
    }
}
