//! The `lmzip` command: a thin shell over the library (see `cli`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // Usage errors found after parsing (e.g. -o with several inputs): clap prints
            // them with the usage line and exits 2, like its own.
            if let Some(usage) = err.downcast_ref::<clap::Error>() {
                usage.exit();
            }
            // A closed pipe (`lmzip -dc x.lmz | head`) is the reader's choice, not an error.
            if cli::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("lmzip: {err:#}");
            ExitCode::from(1)
        }
    }
}
