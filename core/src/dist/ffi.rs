//! The C functions of csrc/dist.cpp (c10d's TCPStore, ProcessGroupGloo and, in builds with
//! EMBTUNE_DIST_NCCL, ProcessGroupNCCL) and the one helper that calls them: [`call`] turns
//! the caller's error buffer into an [`Error`].

use std::ffi::{c_char, c_int, c_void, CStr};

use crate::error::{Error, Result};

extern "C" {
    pub fn embtune_dist_has_backend(backend: *const c_char) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn embtune_dist_init(
        backend: *const c_char,
        host: *const c_char,
        port: c_int,
        host_store: c_int,
        listen_fd: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        device: c_int,
        timeout_s: f64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn embtune_dist_all_reduce_sum(
        group: *mut c_void,
        t: *const torch_sys::C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn embtune_dist_all_gather(
        group: *mut c_void,
        input: *const torch_sys::C_tensor,
        output: *const torch_sys::C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn embtune_dist_broadcast(
        group: *mut c_void,
        t: *const torch_sys::C_tensor,
        root: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn embtune_dist_barrier(group: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn embtune_dist_destroy(group: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn embtune_dist_abandon(group: *mut c_void);
}

/// Size of the error buffer handed to the C side: c10d's messages can be long (they name
/// addresses, keys and the collective's description); [`call`] keeps the first line.
const ERR_LEN: usize = 2048;

/// Runs `f` with an error buffer; a non-zero return becomes [`Error::Torch`] with the
/// buffer's first line (csrc/dist.cpp prefixes it with "distributed <op> (rank r of w,
/// backend) failed: ").
pub fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut err = vec![0 as c_char; ERR_LEN];
    let rc = f(err.as_mut_ptr(), err.len());
    if rc == 0 {
        return Ok(());
    }
    // Safety: the C side writes a NUL-terminated string (snprintf) into the zeroed buffer.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
    let msg = crate::error::one_line(&msg);
    Err(Error::Torch(if msg.is_empty() {
        "distributed operation failed without a message".to_string()
    } else {
        msg
    }))
}
