//! QuickJS's allocator: Rust's global allocator under the script's heap limit.
//!
//! QuickJS's own memory limit refuses an allocation before the allocator sees it, and keeps
//! refusing while the heap stays full, including the allocations of the `InternalError: out of
//! memory` it then tries to throw. When those fail too, QuickJS throws `null`, and a run ends with
//! "uncaught exception: null". This allocator enforces the limit itself and, after refusing
//! once, lets a small reserve through, so that the error object (with its stack) can be built
//! and the script can catch it. It also remembers that it refused, so that a `null` thrown
//! anyway can still be reported as what it is.

use std::cell::Cell;
use std::rc::Rc;

use rquickjs::allocator::{Allocator, RustAllocator};

/// Bytes allowed past the limit once it has been hit: enough for an error object, its message
/// and its stack trace, while the script unwinds.
pub const RESERVE: usize = 1 << 20;

/// How much of the heap is in use, shared between the allocator (owned by QuickJS) and the
/// code that reports errors.
#[derive(Debug)]
pub struct HeapMeter {
    limit: usize,
    used: Cell<usize>,
    /// Whether an allocation is being refused right now: set by a refusal, cleared once the heap
    /// is back under the limit. While it is set, the reserve is open.
    refusing: Cell<bool>,
    /// Whether an allocation was ever refused.
    refused: Cell<bool>,
}

impl HeapMeter {
    /// A meter for a heap of at most `limit` bytes.
    pub fn new(limit: usize) -> Rc<HeapMeter> {
        Rc::new(HeapMeter {
            limit,
            used: Cell::new(0),
            refusing: Cell::new(false),
            refused: Cell::new(false),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether QuickJS was ever refused memory: a `null` exception then means out of memory.
    pub fn ever_refused(&self) -> bool {
        self.refused.get()
    }

    /// Whether `grow` more bytes may be allocated. A refusal opens the reserve.
    fn admit(&self, grow: usize) -> bool {
        let wanted = self.used.get().saturating_add(grow);
        if wanted <= self.limit {
            return true;
        }
        if self.refusing.get() && wanted <= self.limit.saturating_add(RESERVE) {
            return true;
        }
        self.refusing.set(true);
        self.refused.set(true);
        false
    }

    fn add(&self, bytes: usize) {
        self.used.set(self.used.get().saturating_add(bytes));
    }

    fn sub(&self, bytes: usize) {
        let used = self.used.get().saturating_sub(bytes);
        self.used.set(used);
        if used <= self.limit {
            self.refusing.set(false);
        }
    }
}

/// [`RustAllocator`] that counts what it hands out against a [`HeapMeter`].
pub struct HeapAllocator {
    meter: Rc<HeapMeter>,
}

impl HeapAllocator {
    /// An allocator counting against `meter`.
    pub fn new(meter: Rc<HeapMeter>) -> HeapAllocator {
        HeapAllocator { meter }
    }
}

#[allow(unsafe_code)]
// SAFETY: every allocation is made, resized and freed by `RustAllocator`, which upholds the
// trait's contract; this wrapper only refuses some requests (returning null, which the contract
// allows) and reads sizes through `RustAllocator::usable_size` of pointers it allocated.
unsafe impl Allocator for HeapAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.meter.admit(size) {
            return std::ptr::null_mut();
        }
        let ptr = RustAllocator.alloc(size);
        if !ptr.is_null() {
            // SAFETY: `ptr` was just allocated by `RustAllocator`.
            self.meter.add(unsafe { RustAllocator::usable_size(ptr) });
        }
        ptr
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if !self.meter.admit(total) {
            return std::ptr::null_mut();
        }
        let ptr = RustAllocator.calloc(count, size);
        if !ptr.is_null() {
            // SAFETY: `ptr` was just allocated by `RustAllocator`.
            self.meter.add(unsafe { RustAllocator::usable_size(ptr) });
        }
        ptr
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        // SAFETY: the caller passes a pointer this allocator (that is, `RustAllocator`) allocated.
        unsafe {
            self.meter.sub(RustAllocator::usable_size(ptr));
            RustAllocator.dealloc(ptr);
        }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a pointer this allocator (that is, `RustAllocator`) allocated.
        let old = unsafe { RustAllocator::usable_size(ptr) };
        if new_size > old && !self.meter.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above; on failure the old block is left as it was, and still counted.
        let moved = unsafe { RustAllocator.realloc(ptr, new_size) };
        if !moved.is_null() {
            self.meter.sub(old);
            // SAFETY: `moved` was just allocated by `RustAllocator`.
            self.meter.add(unsafe { RustAllocator::usable_size(moved) });
        }
        moved
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        // SAFETY: the caller passes a pointer this allocator (that is, `RustAllocator`) allocated.
        unsafe { RustAllocator::usable_size(ptr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_opens_after_a_refusal_and_closes_under_the_limit() {
        let meter = HeapMeter::new(1000);
        let mut heap = HeapAllocator::new(meter.clone());
        let a = heap.alloc(800);
        assert!(!a.is_null());
        assert!(heap.alloc(400).is_null(), "over the limit");
        assert!(meter.ever_refused());
        let b = heap.alloc(400);
        assert!(!b.is_null(), "the reserve is open after a refusal");
        assert!(heap.alloc(2 * RESERVE).is_null(), "but it is not unlimited");
        // SAFETY: both pointers come from `heap`.
        #[allow(unsafe_code)]
        unsafe {
            heap.dealloc(b);
            heap.dealloc(a);
        }
        let c = heap.alloc(900);
        assert!(!c.is_null());
        assert!(
            heap.alloc(400).is_null(),
            "the reserve closed under the limit"
        );
        // SAFETY: `c` comes from `heap`.
        #[allow(unsafe_code)]
        unsafe {
            heap.dealloc(c);
        }
    }
}
