//! `embtune list [strategies|samplers|losses]`: the registries, from the plugins' own
//! descriptions.

use clap::{Args, ValueEnum};
use embtune_core::registry::{PluginKind, Registration};
#[cfg(feature = "torch")]
use embtune_core::ContrastiveLoss;
use embtune_core::{NegativeSampler, PairStrategy};

/// Arguments of `embtune list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Which registry; all of them when left out.
    pub which: Option<Which>,
    /// Print each plugin's long description and default config too.
    #[arg(long, short)]
    pub long: bool,
}

/// A registry to list.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Strategies,
    Samplers,
    /// Only in builds with the `torch` feature (the default).
    #[cfg(feature = "torch")]
    Losses,
}

/// Prints the chosen registries.
pub fn run(args: ListArgs) -> anyhow::Result<()> {
    // A single registry asked by name gets the long form, like `--long`.
    let long = args.long || args.which.is_some();
    let all = args.which.is_none();
    let mut out = String::new();
    if all || args.which == Some(Which::Strategies) {
        section::<dyn PairStrategy>(&mut out, "strategies", long)?;
    }
    if all || args.which == Some(Which::Samplers) {
        section::<dyn NegativeSampler>(&mut out, "samplers", long)?;
    }
    #[cfg(feature = "torch")]
    if all || args.which == Some(Which::Losses) {
        section::<dyn ContrastiveLoss>(&mut out, "losses", long)?;
    }
    print!("{out}");
    Ok(())
}

fn section<T: PluginKind + ?Sized>(
    out: &mut String,
    title: &str,
    long: bool,
) -> anyhow::Result<()> {
    let entries: &[&Registration<T>] = T::entries()?;
    out.push_str(&format!("{title}:\n"));
    if entries.is_empty() {
        out.push_str("  (none registered)\n");
    }
    let width = entries.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in entries {
        out.push_str(&format!("  {:width$}  {}\n", r.name, r.summary));
        if long {
            for line in r.long_doc.lines() {
                out.push_str(&format!("      {line}\n"));
            }
            out.push_str(&format!("      defaults: {}\n", (r.default_config)()));
        }
    }
    out.push('\n');
    Ok(())
}
