//! GPU memory as libtorch's caching allocator counts it: the figures PyTorch reports as
//! `torch.cuda.memory_allocated()`, `max_memory_allocated()`, `memory_reserved()` and
//! `max_memory_reserved()` (all pools), read through c10's `DeviceAllocator` interface
//! (csrc/device_mem.cpp), since tch exposes none of them. `embtune train` reports the peak
//! so that its figure compares one to one with sentence-transformers' on the same GPU.

use std::ffi::{c_char, c_int, CStr};

extern "C" {
    fn embtune_cuda_memory_stats(
        device: c_int,
        out: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn embtune_cuda_reset_peak(device: c_int, err: *mut c_char, err_len: usize) -> c_int;
}

/// Bytes held by the caching allocator of one CUDA device (all pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    /// Bytes in live tensors now (`torch.cuda.memory_allocated`).
    pub allocated: i64,
    /// Most bytes ever in live tensors since start or the last reset
    /// (`torch.cuda.max_memory_allocated`).
    pub peak_allocated: i64,
    /// Bytes the allocator holds from the driver now, cached included
    /// (`torch.cuda.memory_reserved`).
    pub reserved: i64,
    /// Most bytes ever held from the driver (`torch.cuda.max_memory_reserved`).
    pub peak_reserved: i64,
}

const GIB: f64 = (1u64 << 30) as f64;

impl CudaMemory {
    /// `peak_allocated` in GiB.
    pub fn peak_allocated_gib(&self) -> f64 {
        self.peak_allocated as f64 / GIB
    }
    /// `peak_reserved` in GiB.
    pub fn peak_reserved_gib(&self) -> f64 {
        self.peak_reserved as f64 / GIB
    }
}

fn message(buf: &[c_char]) -> String {
    // SAFETY: the C side always writes a NUL-terminated string into the buffer (snprintf),
    // and the buffer starts zeroed.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The allocator's figures for CUDA device `device`. An error (one line from libtorch) when
/// this libtorch has no CUDA allocator, CUDA was never used in this process, or the device
/// index is out of range.
pub fn cuda_memory(device: usize) -> Result<CudaMemory, String> {
    let mut out = [0i64; 4];
    let mut err = [0 as c_char; 512];
    // SAFETY: `out` has the 4 slots the C side fills, `err` its stated length; the C side
    // catches every C++ exception.
    let rc = unsafe {
        embtune_cuda_memory_stats(
            device as c_int,
            out.as_mut_ptr(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        return Err(message(&err));
    }
    Ok(CudaMemory {
        allocated: out[0],
        peak_allocated: out[1],
        reserved: out[2],
        peak_reserved: out[3],
    })
}

/// Resets the peaks of `device` to the current values (`torch.cuda.reset_peak_memory_stats`).
pub fn reset_cuda_peak(device: usize) -> Result<(), String> {
    let mut err = [0 as c_char; 512];
    // SAFETY: as in `cuda_memory`.
    let rc = unsafe { embtune_cuda_reset_peak(device as c_int, err.as_mut_ptr(), err.len()) };
    if rc != 0 {
        return Err(message(&err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a CUDA device (CI, this machine) the call answers with an error line, never
    /// a crash or an abort; with one, the figures move as a tensor is made and dropped.
    #[test]
    fn answers_on_any_machine_and_tracks_a_tensor_on_cuda() {
        if !tch::Cuda::is_available() {
            let e = cuda_memory(0).unwrap_err();
            assert!(!e.trim().is_empty(), "an empty error message");
            eprintln!("no CUDA device; cuda_memory(0) says: {e}");
            assert!(reset_cuda_peak(0).is_err());
            return;
        }
        let dev = tch::Device::Cuda(0);
        let _warm = tch::Tensor::zeros([1], (tch::Kind::Float, dev));
        reset_cuda_peak(0).unwrap();
        let before = cuda_memory(0).unwrap();
        let t = tch::Tensor::zeros([64, 1024, 1024], (tch::Kind::Float, dev)); // 256 MiB
        let during = cuda_memory(0).unwrap();
        assert!(
            during.allocated - before.allocated >= 256 << 20,
            "{before:?} {during:?}"
        );
        drop(t);
        let after = cuda_memory(0).unwrap();
        assert!(after.allocated < during.allocated);
        assert!(after.peak_allocated >= during.allocated);
        assert!(after.peak_reserved >= after.peak_allocated);
    }
}
