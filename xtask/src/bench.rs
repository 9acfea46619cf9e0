//! `cargo xtask bench`: load and process-model benchmarks (see issue: benchmarks).

use anyhow::{bail, Result};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Seconds of measured load per run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    bail!("cargo xtask bench is not implemented yet ({args:?})")
}
