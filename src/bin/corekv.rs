//! `corekv`: the command-line client. Parses flags with clap (usage errors exit
//! 2), runs [`corekv::cli::run`], prints any error on stderr as
//! `corekv <subcommand>: <message>` and exits with the status docs/cli.md lists.

#![deny(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use corekv::cli::{self, args::Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(cli::ERROR_EXIT_CODE)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    let status = cli::run(
        cli,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
    .with_context(|| format!("corekv {}", cli.command.name()))?;
    Ok(status.exit_code())
}
