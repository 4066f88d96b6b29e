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
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    || e.downcast_ref::<lmzip::Error>()
                        .is_some_and(|l| l.is_io_kind(std::io::ErrorKind::BrokenPipe))
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("lmzip: {err:#}");
            ExitCode::from(1)
        }
    }
}
