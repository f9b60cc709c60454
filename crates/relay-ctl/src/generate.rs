//! `relayctl completions SHELL` and `relayctl man [--dir DIR]`: shell
//! completion scripts and man pages generated from the clap definitions,
//! so they list exactly the commands and options the parser accepts.

use std::path::PathBuf;

use clap::Args;

use crate::client::CliError;
use crate::output;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `relayctl.1` and a page per subcommand (`relayctl-queue.1`,
    /// `relayctl-queue-list.1`, ...) into this directory instead of
    /// printing `relayctl.1`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub fn completions(mut command: clap::Command, args: &CompletionsArgs) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "relayctl", &mut script);
    output::raw(&script);
    Ok(())
}

/// Prints the top-level man page, or writes every page into `args.dir`.
pub fn man(command: clap::Command, args: &ManArgs) -> Result<(), CliError> {
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| CliError::failed(format!("cannot render the man page: {e}")))?;
            output::raw(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(command, dir).map_err(|e| {
                CliError::failed(format!("cannot write man pages to {}: {e}", dir.display()))
            })?;
        }
    }
    Ok(())
}
