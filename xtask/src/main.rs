//! Project automation. Run with `cargo xtask <command>`:
//!
//! - `ci`: what `.ci/run` runs (fmt check, clippy with `-D warnings`, the test suite).
//! - `certs`: a throwaway CA and a `localhost`/`127.0.0.1` certificate in `certs/`.
//! - `bench`: load benchmarks of the example servers against peers, in interleaved rounds, and
//!   process-model costs.
//! - `connmem`: memory (PSS) of the server tree per idle keep-alive connection.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod chaos;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "prefork project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run what CI runs: `bash .ci/run`.
    Ci,
    /// Write a throwaway CA and a localhost certificate into certs/ (git-ignored).
    Certs {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Load benchmarks of the example servers against peers (benches/peers/), in rounds.
    Bench(bench::BenchArgs),
    /// Fault scenarios under load, counted: what each promise loses (target/chaos/).
    Chaos(chaos::ChaosArgs),
    /// Memory (PSS) of the server tree per idle keep-alive connection, at fixed counts.
    Connmem(bench::connmem::ConnmemArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Ci => run(Command::new("bash")
            .arg(".ci/run")
            .current_dir(project_root())),
        Cmd::Certs { out } => certs(&project_root().join(out)),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Chaos(args) => chaos::run(args),
        Cmd::Connmem(args) => bench::connmem::run(args),
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo that runs us (`$CARGO`), not whatever `cargo` is first on PATH.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn certs(out: &Path) -> Result<()> {
    let certs = prefork_testutil::TestCerts::generate();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (cert, key) = certs.write_to(out);
    let ca = out.join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).with_context(|| format!("writing {}", ca.display()))?;
    println!(
        "wrote {}, {} and {}",
        ca.display(),
        cert.display(),
        key.display()
    );
    println!("try:");
    println!(
        "  cargo run -p prefork-axum --example axum_hello -- --addr 127.0.0.1:8443 --cert {} --key {}",
        cert.display(),
        key.display()
    );
    println!("  curl --cacert {} https://localhost:8443/", ca.display());
    Ok(())
}
