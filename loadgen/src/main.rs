//! The `corekv-loadgen` binary: flags → [`corekv_loadgen::run`] → the report on
//! stdout (and as JSON with `--json`). Exit status: 0 if every message was
//! answered, every reply matched and (increments) the counter checked out; 1 if
//! the run found errors; 2 if it could not run at all (bad flags, no io_uring,
//! a placement the key space cannot satisfy, unwritable `--json` path).

#![deny(unsafe_code)]

use anyhow::{Context, Result};
use clap::Parser;
use corekv_loadgen::{Args, Config, Report};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(report) => {
            let expected = report
                .messages_expected
                .map_or(String::new(), |n| format!(" of {n}"));
            let counter = match report
                .increments
                .as_ref()
                .and_then(|i| i.counter.problem.as_ref())
            {
                Some(problem) => format!("; counter not verified: {problem}"),
                None => String::new(),
            };
            eprintln!(
                "corekv-loadgen: FAILED: {} errors, {}{expected} messages answered{counter}",
                report.errors, report.messages
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("corekv-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<Report> {
    let args = Args::parse();
    let config = Config::from_args(&args)?;
    corekv::sys::raise_nofile_limit();
    let report = corekv_loadgen::run(&config)?;
    print!("{}", report.to_text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
    }
    Ok(report)
}
