//! Writes the fixture report (a synthetic 7-site study run through the real stats, models and
//! federation code) into a directory: `cargo run -p report --example fixture -- DIR`. Used by
//! `scripts/render_check.sh` and handy for looking at the report by hand.

#[path = "../tests/common/fixture.rs"]
mod fixture;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cargo run -p report --example fixture -- OUT_DIR");
        return ExitCode::from(2);
    };
    let partial = std::env::args().nth(2).as_deref() == Some("--partial");
    let study = if partial {
        fixture::partial_report()
    } else {
        fixture::fixture_report()
    };
    match report::write_report(&study, &dir) {
        Ok(w) => {
            println!("wrote {} files to {}", w.files.len(), w.out_dir.display());
            for n in &w.not_rendered {
                println!("not rendered: {}: {}", n.part, n.reason);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
