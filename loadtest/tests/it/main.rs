//! Integration tests of sluice-loadtest against in-process fake servers (`fake.rs`), plus the
//! built binary's exit codes. One test binary so they share one build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod binary;
mod encoding;
mod engine;
mod fake;
mod scenario;
mod split;

use clap::Parser;
use sluice_loadtest::app::{self, Verdict};
use sluice_loadtest::cli::Cli;
use sluice_loadtest::report::Report;
use sluice_loadtest::settings::Settings;

/// Settings from flags, as the binary would parse them.
pub fn settings(args: &[&str]) -> Settings {
    let argv = std::iter::once("sluice-loadtest").chain(args.iter().copied());
    Settings::from_cli(Cli::try_parse_from(argv).unwrap()).unwrap()
}

/// Runs the load test in this process.
pub async fn run(args: &[&str]) -> (Report, Verdict) {
    app::execute(&settings(args)).await.unwrap()
}

/// The repository file at `rel` (from the workspace root).
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
