//! `embtune list [strategies|samplers|losses]`: the registries, from the plugins' own
//! descriptions. The same output with or without libtorch: the losses are listed from
//! their torch-free descriptions ([`registry::loss_infos`]).

use clap::{Args, ValueEnum};
use embtune_core::registry::{self, PluginInfo};
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
    /// Pair strategies (`gen --strategy`).
    Strategies,
    /// Negative samplers (`gen --sampler`).
    Samplers,
    /// Contrastive losses (`train --loss`).
    Losses,
}

/// Prints the chosen registries.
pub fn run(args: ListArgs) -> anyhow::Result<()> {
    // A single registry asked by name gets the long form, like `--long`.
    let long = args.long || args.which.is_some();
    let all = args.which.is_none();
    let mut out = String::new();
    if all || args.which == Some(Which::Strategies) {
        section(
            &mut out,
            "strategies",
            &registry::infos::<dyn PairStrategy>()?,
            long,
        );
    }
    if all || args.which == Some(Which::Samplers) {
        section(
            &mut out,
            "samplers",
            &registry::infos::<dyn NegativeSampler>()?,
            long,
        );
    }
    if all || args.which == Some(Which::Losses) {
        section(&mut out, "losses", &registry::loss_infos()?, long);
    }
    print!("{out}");
    Ok(())
}

fn section(out: &mut String, title: &str, entries: &[PluginInfo], long: bool) {
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
}
