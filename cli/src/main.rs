//! `tidings`: a terminal client for a tidings relay, on the client library device-link.
//! `tidings --help` lists the commands, where the state key lives and the exit codes.

mod args;
mod commands;
mod error;
mod ohttp;
mod output;
mod phrase;
mod prompt;
mod qr;
mod session;
mod state_dir;
mod state_key;
mod until;

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;

use crate::error::CliError;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<CliError>().map_or(1, |e| e.class().code());
            // One line, whatever the causes said.
            let message = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("tidings: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(commands::run(cli));
    // A prompt still reading stdin (after Ctrl-C) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(result?)
}
