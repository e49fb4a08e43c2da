//! Data-parallel training across processes: where a process stands ([`DistEnv`], from
//! torchrun's variables), a process group over libtorch's c10d ([`ProcessGroup`]: Gloo on
//! CPU, NCCL on CUDA in builds that have it; csrc/dist.cpp) with the collectives the
//! trainer needs, and [`gather_with_own_grad`], which gives every rank the whole global
//! batch of embeddings while gradients flow to its own rows only.
//!
//! # The gradient math
//!
//! W ranks each embed b rows of every column, N = W·b rows in the global batch; rank r
//! embeds rows R_r = {r·b, ..., r·b+b−1}. Every rank computes the *global* loss L over all N
//! rows (the loss of one process over the whole batch, with its own mean over N) from
//! Ê = cat(sg(E[R_0]), ..., E[R_r], ..., sg(E[R_{W−1}])), where sg(·) are the all-gathered
//! copies without a graph ([`gather_with_own_grad`]). Those copies are constants, so rank r's
//! backward gives
//!
//! ```text
//! g_r = Σ_c Σ_{k ∈ R_r} (∂L/∂E_c[k]) · ∂E_c[k]/∂θ
//! ```
//!
//! where ∂L/∂E_c[k] is the derivative of the global loss (it includes every other rank's
//! anchors pushing row k away as an in-batch negative, since they are in L too). The R_r
//! partition the N rows, so by the chain rule
//!
//! ```text
//! Σ_r g_r = Σ_c Σ_{k=1..N} (∂L/∂E_c[k]) · ∂E_c[k]/∂θ = ∇θ L
//! ```
//!
//! exactly: [`ProcessGroup::all_reduce_sum`] of the per-rank parameter gradients (a SUM,
//! not divided by W) equals the gradient of one process over the whole global batch, up
//! to float summation order. Every rank then holds the same gradient and, stepping the
//! same optimizer from the same parameters, stays in sync.

pub mod env;
mod ffi;

use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
pub use env::{DistEnv, STORE_FD_VAR};

/// The default collective timeout of `embtune train` (`--dist-timeout`): torch's own
/// default (`default_pg_timeout`, 30 minutes), since rank 0's evaluations and checkpoint
/// writing between two collectives count against it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Whether this build has NCCL ("yes") or why not (set by core/build.rs).
const NCCL_BUILD: &str = match option_env!("EMBTUNE_DIST_NCCL_BUILD") {
    Some(s) => s,
    None => "no",
};

/// The communication library of a [`ProcessGroup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors, any host. Always built.
    Gloo,
    /// NCCL: CUDA tensors, one device per rank (`cuda:LOCAL_RANK`). Only in builds with the
    /// CUDA and NCCL headers (core/build.rs).
    Nccl,
}

impl Backend {
    /// Its name in torch: "gloo" or "nccl".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// True when this build can create a group of this backend.
    pub fn is_available(self) -> bool {
        let name = CString::new(self.name()).expect("no NUL in a backend name");
        // Safety: a NUL-terminated string that outlives the call.
        unsafe { ffi::embtune_dist_has_backend(name.as_ptr()) != 0 }
    }

    /// The backend for training on `device`: Gloo on the CPU, NCCL on CUDA (an error in a
    /// build without NCCL, saying why it is missing and what to do).
    pub fn for_device(device: Device) -> Result<Backend> {
        match device {
            Device::Cpu => Ok(Backend::Gloo),
            Device::Cuda(_) => {
                Backend::Nccl.check_available()?;
                Ok(Backend::Nccl)
            }
            other => Err(Error::Invalid(format!(
                "data-parallel training is not supported on device {other:?}; use --device cpu or cuda"
            ))),
        }
    }

    /// `name` ("auto", "gloo" or "nccl") for training on `device`: "auto" is
    /// [`Self::for_device`]; NCCL on the CPU, or in a build without it, is an error.
    pub fn resolve(name: &str, device: Device) -> Result<Backend> {
        let backend = match name {
            "auto" => return Backend::for_device(device),
            "gloo" => Backend::Gloo,
            "nccl" => Backend::Nccl,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown distributed backend '{other}'; use auto, gloo or nccl"
                )))
            }
        };
        backend.check_available()?;
        if backend == Backend::Nccl && device == Device::Cpu {
            return Err(Error::Invalid(
                "the nccl backend needs CUDA tensors but training is on the CPU; use gloo, or train on --device cuda".into(),
            ));
        }
        if backend == Backend::Gloo && device != Device::Cpu {
            return Err(Error::Invalid(format!(
                "the gloo backend takes CPU tensors but training is on {device:?}; use nccl (or auto), or train on --device cpu"
            )));
        }
        Ok(backend)
    }

    fn check_available(self) -> Result<()> {
        if self.is_available() {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "this embtune-torch was built without the {} backend ({}); rebuild with the CUDA and NCCL headers (see core/build.rs: pip install nvidia-cuda-crt and nvidia-cuda-cccl into the torch venv, or set CUDA_HOME) or train on --device cpu with gloo",
            self.name(),
            NCCL_BUILD.strip_prefix("no: ").unwrap_or(NCCL_BUILD)
        )))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// This process's membership in a group of `world_size` processes (c10d's
/// ProcessGroupGloo or ProcessGroupNCCL behind a TCPStore rendezvous), with the
/// collectives of data-parallel training. Every rank must call the same collectives in the
/// same order with tensors of the same shape and dtype; a rank that does not answer within
/// the group's timeout makes the others' call fail with an error that says so.
///
/// `Send` (a rank may move it to another thread) but not `Sync`: one thread at a time
/// issues its collectives. After a failed collective the group is unusable: later calls
/// fail at once and dropping it abandons it (it does not wait for peers that may be gone).
/// Dropping a healthy group leaves it cleanly (c10d's shutdown).
pub struct ProcessGroup {
    handle: *mut c_void,
    rank: usize,
    world_size: usize,
    backend: Backend,
    device: Device,
    timeout: Duration,
    broken: Cell<bool>,
}

// Safety: the handle is owned by this value alone, and c10d's process groups may be used
// from any thread (one at a time: the group is not Sync).
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("backend", &self.backend)
            .field("device", &self.device)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group `env` describes: connects to (rank 0: hosts, unless torchrun's
    /// agent does) the rendezvous store at `MASTER_ADDR:MASTER_PORT`, then builds the
    /// `backend`'s group (NCCL on `cuda:LOCAL_RANK`). Blocks until every rank has joined,
    /// or fails after `timeout`, which also bounds every later collective.
    pub fn init(env: &DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        backend.check_available()?;
        if timeout.is_zero() {
            return Err(Error::Invalid(
                "the distributed timeout must be positive; pass --dist-timeout SECS (e.g. 1800)"
                    .into(),
            ));
        }
        let device = match backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => {
                let n = tch::Cuda::device_count().max(0) as usize;
                if env.local_rank >= n {
                    return Err(Error::Invalid(format!(
                        "LOCAL_RANK={} needs cuda:{} but this host has {n} CUDA device(s); start at most {n} processes per host with nccl",
                        env.local_rank, env.local_rank
                    )));
                }
                Device::Cuda(env.local_rank)
            }
        };
        let to_c = |what: &str, s: &str| {
            CString::new(s).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte")))
        };
        let host = to_c("MASTER_ADDR", &env.master_addr)?;
        let prefix = to_c("the store prefix", &env.store_prefix())?;
        let name = to_c("the backend", backend.name())?;
        let mut handle: *mut c_void = std::ptr::null_mut();
        let device_index = match device {
            Device::Cuda(i) => i as i32,
            _ => -1,
        };
        ffi::call(|err, len| {
            // Safety: every pointer outlives the call; `handle` receives a group or stays
            // null on failure.
            unsafe {
                ffi::embtune_dist_init(
                    name.as_ptr(),
                    host.as_ptr(),
                    i32::from(env.master_port),
                    i32::from(env.hosts_store()),
                    env.listen_fd.unwrap_or(-1),
                    prefix.as_ptr(),
                    env.rank as i32,
                    env.world_size as i32,
                    device_index,
                    timeout.as_secs_f64(),
                    &mut handle,
                    err,
                    len,
                )
            }
        })?;
        if handle.is_null() {
            return Err(Error::Torch(
                "distributed init returned no process group".into(),
            ));
        }
        Ok(ProcessGroup {
            handle,
            rank: env.rank,
            world_size: env.world_size,
            backend,
            device,
            timeout,
            broken: Cell::new(false),
        })
    }

    /// This process's rank, `0..world_size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Processes in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The device of the tensors its collectives take: the CPU for Gloo, `cuda:LOCAL_RANK`
    /// for NCCL.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The timeout of every collective.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one collective through the C side; a failure marks the group broken.
    fn collective(
        &self,
        op: &str,
        f: impl FnOnce(*mut c_void, *mut std::ffi::c_char, usize) -> std::ffi::c_int,
    ) -> Result<()> {
        if self.broken.get() {
            return Err(Error::Invalid(format!(
                "distributed {op} (rank {} of {}): the process group failed earlier and cannot be used; see the first error",
                self.rank, self.world_size
            )));
        }
        let r = ffi::call(|err, len| f(self.handle, err, len));
        if r.is_err() {
            self.broken.set(true);
        }
        r
    }

    /// Checks that `t` can take part in a collective here: on the group's device.
    fn check_device(&self, op: &str, t: &Tensor) -> Result<()> {
        let d = t.device();
        let ok = match self.backend {
            Backend::Gloo => d == Device::Cpu,
            Backend::Nccl => d == self.device,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "distributed {op}: the tensor is on {d:?} but the {} group's tensors are on {:?}; move it there first",
                self.backend, self.device
            )))
        }
    }

    /// Sums `t` over all ranks in place: every rank ends with the same sum. `t` must be
    /// dense and contiguous (e.g. the flat gradient buffer), on [`Self::device`], with the
    /// same shape and dtype on every rank.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.check_device("all_reduce", t)?;
        if !t.is_contiguous() {
            return Err(Error::Invalid(
                "distributed all_reduce: the tensor must be contiguous (it is summed in place)"
                    .into(),
            ));
        }
        // Safety: `t` is a live at::Tensor (tch's C_tensor) for the whole call.
        self.collective("all_reduce", |g, e, l| unsafe {
            ffi::embtune_dist_all_reduce_sum(g, t.as_ptr(), e, l)
        })
    }

    /// Every rank's `t` concatenated along dim 0 in rank order: `(world·B, ...)` for `t`
    /// of shape `(B, ...)` (a 0-d `t` gives `(world)`). The same shape and dtype on every
    /// rank. The result has no autograd graph (see [`gather_with_own_grad`]).
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        self.check_device("all_gather", t)?;
        // A 0-d tensor travels as one row (c10d chunks the output into rows).
        let input = match t.dim() {
            0 => t.detach().reshape([1]),
            _ => t.detach().contiguous(),
        };
        let mut shape = input.size();
        shape[0] *= self.world_size as i64;
        let output = Tensor::f_empty(shape.as_slice(), (input.kind(), input.device()))?;
        // Safety: both are live at::Tensors for the whole call; `output` has the shape the
        // C side checks.
        self.collective("all_gather", |g, e, l| unsafe {
            ffi::embtune_dist_all_gather(g, input.as_ptr(), output.as_ptr(), e, l)
        })?;
        Ok(output)
    }

    /// Overwrites `t` on every rank with rank `root`'s `t` (initial parameters, e.g. fresh
    /// LoRA matrices). `t`: dense, contiguous, on [`Self::device`].
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(Error::Invalid(format!(
                "distributed broadcast: root {root} is not a rank of a group of {}",
                self.world_size
            )));
        }
        self.check_device("broadcast", t)?;
        if !t.is_contiguous() {
            return Err(Error::Invalid(
                "distributed broadcast: the tensor must be contiguous (it is overwritten in place)"
                    .into(),
            ));
        }
        // Safety: `t` is a live at::Tensor for the whole call.
        self.collective("broadcast", |g, e, l| unsafe {
            ffi::embtune_dist_broadcast(g, t.as_ptr(), root as i32, e, l)
        })
    }

    /// Returns once every rank has called it (or fails after the timeout).
    pub fn barrier(&self) -> Result<()> {
        // Safety: the handle is live.
        self.collective("barrier", |g, e, l| unsafe {
            ffi::embtune_dist_barrier(g, e, l)
        })
    }

    /// Every rank's `bytes`, indexed by rank (lengths may differ between ranks): two
    /// all-gathers, of the lengths, then of the bytes padded to the longest.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let len = Tensor::from_slice(&[bytes.len() as i64]).to_device(self.device);
        let lens = Vec::<i64>::try_from(self.all_gather(&len)?.to_device(Device::Cpu))?;
        let longest = lens.iter().copied().max().unwrap_or(0).max(0) as usize;
        if longest == 0 {
            return Ok(vec![Vec::new(); self.world_size]);
        }
        let mut padded = bytes.to_vec();
        padded.resize(longest, 0);
        let t = Tensor::from_slice(&padded).to_device(self.device);
        let all = Vec::<u8>::try_from(self.all_gather(&t)?.to_device(Device::Cpu))?;
        Ok(all
            .chunks(longest)
            .zip(&lens)
            .map(|(chunk, &n)| chunk[..n as usize].to_vec())
            .collect())
    }

    /// Checks that every rank was started with the same configuration: `hash` (e.g.
    /// [`config_hash`] of the command line and the data) is compared with rank 0's, and on
    /// a difference every rank returns the same one-line error naming the ranks that
    /// differ, with `what` saying what the hash covers (e.g. "flags or data").
    pub fn check_same_config(&self, hash: u64, what: &str) -> Result<()> {
        let t = Tensor::from_slice(&[hash as i64]).to_device(self.device);
        let all = Vec::<i64>::try_from(self.all_gather(&t)?.to_device(Device::Cpu))?;
        let all: Vec<u64> = all.into_iter().map(|h| h as u64).collect();
        match config_mismatch(&all, what) {
            None => Ok(()),
            Some(msg) => Err(Error::Invalid(msg)),
        }
    }

    /// Leaves the group cleanly, waiting for the other ranks' outstanding work (what
    /// dropping a healthy group does), and reports a failure.
    pub fn destroy(mut self) -> Result<()> {
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        if self.broken.get() {
            // Safety: the handle came from embtune_dist_init and is not used again.
            unsafe { ffi::embtune_dist_abandon(handle) };
            return Ok(());
        }
        // Safety: as above; embtune_dist_destroy frees it.
        ffi::call(|err, len| unsafe { ffi::embtune_dist_destroy(handle, err, len) })
    }

    /// Leaves the group without waiting for anyone (after an error, when peers may be gone
    /// or stuck): aborts what it can and leaks the rest until the process exits.
    pub fn abandon(mut self) {
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        // Safety: the handle came from embtune_dist_init and is not used again.
        unsafe { ffi::embtune_dist_abandon(handle) };
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.handle.is_null() {
            return;
        }
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        // Safety: the handle came from embtune_dist_init and is not used again.
        unsafe {
            if self.broken.get() || std::thread::panicking() {
                ffi::embtune_dist_abandon(handle);
            } else {
                let mut err = [0 as std::ffi::c_char; 256];
                let _ = ffi::embtune_dist_destroy(handle, err.as_mut_ptr(), err.len());
            }
        }
    }
}

/// The error of [`ProcessGroup::check_same_config`] for the hashes of every rank (`all[r]`
/// is rank r's), or None when they all equal rank 0's.
fn config_mismatch(all: &[u64], what: &str) -> Option<String> {
    let first = *all.first()?;
    let differ: Vec<usize> = (1..all.len()).filter(|&r| all[r] != first).collect();
    if differ.is_empty() {
        return None;
    }
    let (who, verb) = match differ.as_slice() {
        [r] => (format!("rank {r}"), "was"),
        many => (
            format!(
                "ranks {}",
                many.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "were",
        ),
    };
    let hashes: Vec<String> = differ
        .iter()
        .take(4)
        .map(|&r| format!("rank {r}: {:016x}", all[r]))
        .collect();
    Some(format!(
        "{who} {verb} started with different {what} than rank 0: configuration hash {} vs rank 0: {first:016x}; start every rank with the same command and files",
        hashes.join(", ")
    ))
}

/// A stable 64-bit hash of `parts` (each length-prefixed, so ["ab", "c"] and ["a", "bc"]
/// differ): the first 8 bytes of their SHA-256, the same on every host, for
/// [`ProcessGroup::check_same_config`].
pub fn config_hash<I, P>(parts: I) -> u64
where
    I: IntoIterator<Item = P>,
    P: AsRef<[u8]>,
{
    let mut h = Sha256::new();
    for p in parts {
        let p = p.as_ref();
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("a SHA-256 has 32 bytes"))
}

/// This rank's rows `local (b, ...)`, with their autograd graph, inside every rank's rows:
/// `(world·b, ...)` in rank order, where the other ranks' rows are all-gathered copies
/// without a graph. Every rank must pass the same shape and dtype. A loss over the result
/// backpropagates into `local` only; summing the resulting parameter gradients over the
/// ranks ([`ProcessGroup::all_reduce_sum`]) gives the gradient of the same loss computed by
/// one process over all `world·b` rows (see the module docs for why). With a group of one
/// the result is `local` itself.
pub fn gather_with_own_grad(pg: &ProcessGroup, local: &Tensor) -> Result<Tensor> {
    let Some(&b) = local.size().first() else {
        return Err(Error::Invalid(
            "gather_with_own_grad needs rows: a tensor of at least one dimension".into(),
        ));
    };
    let parts = vec![b as usize; pg.world_size()];
    gather_parts_with_own_grad(pg, local, &parts)
}

/// [`gather_with_own_grad`] for parts of different sizes (the last micro-batch of an epoch
/// split over the ranks): `parts[q]` is rank q's row count, the same list on every rank,
/// and `local` has `parts[rank]` rows (possibly none). Each part travels padded to the
/// largest; the result has `Σ parts` rows in rank order.
pub fn gather_parts_with_own_grad(
    pg: &ProcessGroup,
    local: &Tensor,
    parts: &[usize],
) -> Result<Tensor> {
    let size = local.size();
    let (rank, world) = (pg.rank(), pg.world_size());
    if size.is_empty() || parts.len() != world || size[0] as usize != parts[rank] {
        return Err(Error::Invalid(format!(
            "distributed gather: rank {rank} holds {size:?} but its part is {:?} of {parts:?}; every rank must pass its own rows and the same parts",
            parts.get(rank)
        )));
    }
    if world == 1 {
        return Ok(local.shallow_clone());
    }
    let longest = *parts.iter().max().expect("world >= 1") as i64;
    let padded = if size[0] < longest {
        let mut pad = size.clone();
        pad[0] = longest - size[0];
        let zeros = Tensor::f_zeros(pad.as_slice(), (local.kind(), local.device()))?;
        Tensor::f_cat(&[local.detach(), zeros], 0)?
    } else {
        local.detach()
    };
    let gathered = pg.all_gather(&padded)?; // (world·longest, ...), no graph
    let mut pieces = Vec::with_capacity(world);
    for (q, &n) in parts.iter().enumerate() {
        if q == rank {
            pieces.push(local.shallow_clone());
        } else if n > 0 {
            pieces.push(gathered.narrow(0, q as i64 * longest, n as i64));
        }
    }
    Ok(Tensor::f_cat(&pieces, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_mismatch_names_the_ranks_that_differ() {
        assert_eq!(config_mismatch(&[7, 7, 7], "flags or data"), None);
        let m = config_mismatch(&[7, 8, 7], "flags or data").unwrap();
        assert!(
            m.starts_with("rank 1 was started with different flags or data than rank 0: ")
                && m.ends_with("; start every rank with the same command and files"),
            "{m}"
        );
        let m = config_mismatch(&[7, 8, 9, 7], "flags").unwrap();
        assert!(
            m.starts_with("ranks 1, 2 were started with different flags"),
            "{m}"
        );
    }

    #[test]
    fn config_hash_separates_parts() {
        assert_ne!(config_hash(["ab", "c"]), config_hash(["a", "bc"]));
        assert_eq!(config_hash(["x"]), config_hash([b"x".to_vec()]));
    }

    #[test]
    fn gloo_is_always_built_and_nccl_on_cpu_is_refused() {
        assert!(Backend::Gloo.is_available());
        assert_eq!(Backend::for_device(Device::Cpu).unwrap(), Backend::Gloo);
        assert_eq!(
            Backend::resolve("auto", Device::Cpu).unwrap(),
            Backend::Gloo
        );
        let e = Backend::resolve("nccl", Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nccl") && !e.contains('\n'), "{e}");
        let e = Backend::resolve("mpi", Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown distributed backend 'mpi'"), "{e}");
        if !Backend::Nccl.is_available() {
            let e = Backend::for_device(Device::Cuda(0))
                .unwrap_err()
                .to_string();
            assert!(e.contains("built without the nccl backend"), "{e}");
        }
    }
}
