//! `certs` command-line entry point: parse the arguments, run the command, map the outcome to an
//! exit code (0 success, 1 error, 2 usage error).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints usage errors and exits with 2 (0 for --help / --version).
    let cli = certs::cli::Cli::parse();
    match certs::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` keeps the whole cause chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
