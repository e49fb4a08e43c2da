//! The data-parallel flags shared by `train` and `encode` (`--nproc-per-node`,
//! `--dist-timeout`, `--dist-backend`) and what a rank does before its command's work:
//! pick its device and join the others (embtune_core::dist).

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use embtune_core::dist::{config_hash, Backend, DistEnv, ProcessGroup};
use tch::Device;

/// Data-parallel flags.
#[derive(Args, Debug, Clone)]
pub struct DistArgs {
    /// Data-parallel run on this host: start N processes (ranks) that work together, as
    /// `torchrun --nproc-per-node N` does (CPU: Gloo; CUDA: NCCL, one GPU per rank). Under
    /// torchrun, leave it out: each process reads RANK, WORLD_SIZE, MASTER_ADDR, ... from
    /// the environment.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub nproc_per_node: u16,
    /// Data-parallel runs: seconds a rank waits for the others (rendezvous and every
    /// collective) before failing; rank 0's evaluations and writing count against it.
    #[arg(long, value_name = "SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub dist_timeout: u64,
    /// Data-parallel runs: the communication backend, auto (gloo on cpu, nccl on cuda),
    /// gloo or nccl.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub dist_backend: String,
}

impl DistArgs {
    /// True when this process should start the ranks itself (`--nproc-per-node` > 1 and
    /// not already one of several ranks).
    pub fn launches(&self) -> bool {
        self.nproc_per_node > 1 && std::env::var_os("WORLD_SIZE").is_none()
    }
}

/// The process's place in a data-parallel run (None for one process), from torchrun's
/// variables.
fn dist_env() -> anyhow::Result<Option<DistEnv>> {
    Ok(DistEnv::from_env()?.filter(|e| e.world_size > 1))
}

/// The device of this rank: with several ranks, `--device auto` or `cuda` on a CUDA host
/// is `cuda:LOCAL_RANK` (one GPU per rank), and an explicit `cuda:N` is refused.
fn rank_device(device: Device, flag: &str, dist: Option<&DistEnv>) -> anyhow::Result<Device> {
    let (Some(env), Device::Cuda(_)) = (dist, device) else {
        return Ok(device);
    };
    if flag.starts_with("cuda:") {
        anyhow::bail!(
            "--device {flag} with {} ranks: each rank works on cuda:LOCAL_RANK; pass --device cuda (or auto)",
            env.world_size
        );
    }
    let n = tch::Cuda::device_count().max(0) as usize;
    if env.local_rank >= n {
        anyhow::bail!(
            "LOCAL_RANK={} needs cuda:{} but this host has {n} CUDA device(s); start at most {n} ranks per host, or use --device cpu",
            env.local_rank,
            env.local_rank
        );
    }
    Ok(Device::Cuda(env.local_rank))
}

/// One rank of a data-parallel run: joins the other ranks (Gloo on the CPU, NCCL on CUDA)
/// and checks that they were all started with the same command line and the same `input`
/// file (its size); on a difference every rank stops with the same error.
fn join_ranks(
    env: &DistEnv,
    device: Device,
    args: &DistArgs,
    argv: &[OsString],
    input: &Path,
) -> anyhow::Result<ProcessGroup> {
    let backend = Backend::resolve(&args.dist_backend, device)?;
    let timeout = std::time::Duration::from_secs(args.dist_timeout);
    let pg = ProcessGroup::init(env, backend, timeout)?;
    // What every rank must agree on: the arguments (not the program's path) and the size
    // of the input file.
    let input_len = std::fs::metadata(input).map_or(0, |m| m.len());
    let mut parts: Vec<Vec<u8>> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned().into_bytes())
        .collect();
    parts.push(input_len.to_le_bytes().to_vec());
    if let Err(e) = pg.check_same_config(config_hash(&parts), "flags or data") {
        pg.abandon();
        return Err(e.into());
    }
    Ok(pg)
}

/// Ends a rank's membership after its work: leaves cleanly after success, abandons the
/// group after a failure (peers may be gone).
fn leave<T>(group: Option<ProcessGroup>, result: anyhow::Result<T>) -> anyhow::Result<T> {
    match group {
        Some(g) if result.is_ok() => g.destroy()?,
        Some(g) => g.abandon(),
        None => {}
    }
    result
}

/// How a command with data-parallel flags runs: with `--nproc-per-node N` > 1 (and not
/// already a rank) it starts the N ranks and returns their exit code; otherwise this
/// process picks its device (`device_flag`, per rank), joins the other ranks if torchrun's
/// variables name several, runs `work` and leaves the group. `input` is the data file
/// every rank must agree on.
pub fn run(
    args: &DistArgs,
    device_flag: &str,
    argv: &[OsString],
    input: &Path,
    work: impl FnOnce(Device, Option<&ProcessGroup>) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    if args.launches() {
        return super::launch::launch_train(usize::from(args.nproc_per_node), argv);
    }
    let dist = dist_env()?;
    let device = rank_device(
        super::resolve_device(device_flag)?,
        device_flag,
        dist.as_ref(),
    )?;
    let group = match &dist {
        Some(env) => Some(join_ranks(env, device, args, argv, input)?),
        None => None,
    };
    let result = work(device, group.as_ref());
    leave(group, result)
}
