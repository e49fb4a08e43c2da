//! Memory helpers for the big, randomly accessed buffers of data generation.
//!
//! Negative sampling reads anchors at random places of a table that can be hundreds of
//! megabytes. With 4 KiB pages nearly every such read misses the TLB as well as the cache,
//! and on a virtual machine a TLB miss walks two page tables. Linux's transparent huge
//! pages (2 MiB) remove most of those walks and cut page faults 512-fold, but many systems
//! (including Debian and Ubuntu defaults) only give them to regions that ask with
//! `madvise(MADV_HUGEPAGE)`. [`advise_huge`] asks, for a vector's spare capacity, before
//! the first write touches it. Elsewhere it does nothing. [`prefetch`] starts loading
//! memory that a loop will read a few iterations later.

/// Regions smaller than this are left alone (a huge page is 2 MiB).
const MIN_BYTES: usize = 4 << 20;

/// Asks the kernel to back the spare capacity of `v` with huge pages. Call right after
/// `Vec::with_capacity` (pages already touched keep their size). A hint only: failures
/// are ignored and the contents are never changed.
pub fn advise_huge<T>(v: &mut Vec<T>) {
    advise_huge_slice(v.spare_capacity_mut());
}

/// Like [`advise_huge`] for memory that is allocated but not yet touched, such as a
/// `vec![0u8; n]` (large zeroed allocations come fresh from the kernel).
pub fn advise_huge_slice<T>(s: &mut [T]) {
    let bytes = std::mem::size_of_val(s);
    if bytes >= MIN_BYTES {
        advise_range(s.as_mut_ptr() as usize, bytes);
    }
}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, len: usize) {
    const PAGE: usize = 4096;
    let begin = (start + PAGE - 1) & !(PAGE - 1);
    let end = (start + len) & !(PAGE - 1);
    if end <= begin {
        return;
    }
    // SAFETY: the range lies inside one live allocation owned by the caller's vector
    // (rounded inwards to whole pages); MADV_HUGEPAGE only changes how the kernel backs
    // those pages, never their contents or validity.
    unsafe {
        libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _len: usize) {}

/// Asks the CPU to start loading the `len` bytes at `p`: the first lines and the last
/// (the boundary check of a slice reads the byte after the end). A hint: never faults,
/// and `p` is never dereferenced here.
#[inline]
pub fn prefetch(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = p as *const i8;
        // SAFETY: prefetching never faults and reads nothing into the program; the
        // addresses are computed with wrapping arithmetic.
        unsafe {
            _mm_prefetch(p, _MM_HINT_T0);
            if len > 64 {
                _mm_prefetch(p.wrapping_add(64), _MM_HINT_T0);
            }
            if len > 128 {
                _mm_prefetch(p.wrapping_add(128), _MM_HINT_T0);
            }
            _mm_prefetch(p.wrapping_add(len), _MM_HINT_T0);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Keeps large freed blocks in the process heap instead of returning them to the kernel
/// (glibc's defaults: blocks over 32 MiB always come from `mmap` and go back with
/// `munmap`). Tensor work allocates and frees the same large activation buffers at every
/// layer of every batch; with the defaults each of them is faulted in, zeroed by the
/// kernel and unmapped again. Called once before encoding or training; the price is that
/// the process keeps its peak heap until it exits. Does nothing outside glibc Linux.
pub fn keep_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before the tensor work
    // starts, with documented parameter values.
    unsafe {
        // No mmap'd blocks at all (the threshold cannot be raised past 32 MiB), and no
        // trimming of the heap's top.
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advising_keeps_contents_and_tolerates_small_vectors() {
        let mut small: Vec<u8> = Vec::with_capacity(10);
        advise_huge(&mut small);
        small.extend_from_slice(b"abc");
        assert_eq!(small, b"abc");
        let mut big: Vec<u64> = Vec::with_capacity(2 << 20);
        advise_huge(&mut big);
        big.extend(0..(2u64 << 20));
        assert_eq!(big[12345], 12345);
        assert_eq!(big.len(), 2 << 20);
    }
}
