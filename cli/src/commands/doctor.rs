//! `embtune doctor`: what this binary runs on, in one screen.

use clap::Args;
use embtune_core::default_model;

/// Arguments of `embtune doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Exit non-zero when the default model is missing or does not verify.
    #[arg(long)]
    pub strict: bool,
}

/// Prints the report.
pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let built = env!("EMBTUNE_TORCH_VERSION");
    println!("embtune         {}", embtune_core::VERSION);
    println!("torch (built)   {built}");
    match loaded_torch_dir() {
        Some(dir) => {
            let v = torch_version_at(&dir).unwrap_or_else(|| "unknown".into());
            println!("torch (loaded)  {v} from {}", dir.display());
            if v != "unknown" && base(&v) != base(built) {
                anyhow::bail!(
                    "libtorch {v} is loaded but embtune was built against {built}; rebuild with `make build` (or `source scripts/env.sh && cargo build --release -p embtune-torch`)"
                );
            }
        }
        None => println!("torch (loaded)  {}", env!("EMBTUNE_TORCH_LIB")),
    }
    let cuda = tch::Cuda::is_available();
    println!("cuda available  {cuda}");
    println!("cuda devices    {}", tch::Cuda::device_count());
    println!(
        "cudnn           {}",
        if tch::Cuda::cudnn_is_available() {
            "available"
        } else {
            "not available"
        }
    );
    println!("threads         {}", tch::get_num_threads());
    println!(
        "architectures   {} (config.json model_type)",
        embtune_core::models::SUPPORTED_MODEL_TYPES.join(", ")
    );
    let hub = embtune_core::hub::HubConfig::from_env();
    println!(
        "hf cache        {} (from {}{})",
        hub.cache.display(),
        hub.cache_from,
        if hub.offline {
            "; HF_HUB_OFFLINE: no downloads"
        } else {
            ""
        }
    );
    println!(
        "hf endpoint     {} ({})",
        hub.endpoint,
        if hub.token.is_some() {
            "token set"
        } else {
            "no token"
        }
    );
    let dir = default_model::default_model_dir();
    match default_model::verify_default_model(&dir) {
        Ok(()) => println!("default model   {} (verified)", dir.display()),
        Err(e) => {
            println!("default model   {} (NOT OK: {e})", dir.display());
            if args.strict {
                anyhow::bail!("{e}");
            }
        }
    }
    Ok(())
}

fn base(v: &str) -> &str {
    v.split('+').next().unwrap_or(v)
}

/// The folder of the libtorch this process loaded, from /proc/self/maps.
fn loaded_torch_dir() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("/libtorch_cpu.so"))?;
    let path = std::path::Path::new(line.split_whitespace().last()?);
    Some(path.parent()?.parent()?.to_path_buf())
}

fn torch_version_at(torch_dir: &std::path::Path) -> Option<String> {
    let s = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    s.lines()
        .find(|l| l.starts_with("__version__"))
        .and_then(|l| l.split(['\'', '"']).nth(1).map(str::to_string))
}
