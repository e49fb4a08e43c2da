//! `embtune doctor`: what this binary runs on and where its pieces are, in one screen:
//! versions, devices, the libtorch folder (and how it is found: the rpath recorded at build
//! time, or LD_LIBRARY_PATH), both binaries, the models folder with the setting that chose
//! it, and whether the default model verifies.

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
    // Where this installation's pieces are.
    let lib = match loaded_torch_dir() {
        Some(d) => d.join("lib").display().to_string(),
        None => env!("EMBTUNE_TORCH_LIB").to_string(),
    };
    let ld = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty());
    println!(
        "libtorch        {lib} (rpath {}{})",
        env!("EMBTUNE_TORCH_LIB"),
        if ld.is_some() {
            "; LD_LIBRARY_PATH is set and searched first"
        } else {
            ""
        }
    );
    match std::env::current_exe() {
        Ok(p) => println!("embtune-torch   {}", p.display()),
        Err(e) => println!("embtune-torch   unknown ({e})"),
    }
    if let Some(front) = std::env::var_os("EMBTUNE_FRONT_END") {
        println!("front end       {}", std::path::Path::new(&front).display());
    }
    let models = default_model::ModelsDir::from_env();
    println!(
        "models folder   {} (from {})",
        models.path.display(),
        models.from
    );
    let dir = models.path.join(default_model::DEFAULT_MODEL_NAME);
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
