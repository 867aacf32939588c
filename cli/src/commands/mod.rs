//! The commands, one module per group.

mod account;
mod config;
mod contacts;
mod link;
mod messages;
mod push;
mod wait;

use clap::CommandFactory;

use crate::{
    args::{Cli, Command},
    error::CliError,
    session::Session,
};

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = cli.command {
        // Into memory first: clap_complete panics on a write error (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "tidings", &mut script);
        return std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
            .map_err(CliError::io("cannot write the completion script"));
    }
    let session = Session::new(&cli.global)?;
    let result = match cli.command {
        Command::Account { action } => account::run(&session, action).await,
        Command::Send(args) => messages::send(&session, args).await,
        Command::Listen(args) => messages::listen(&session, args).await,
        Command::Link { action } => link::run(&session, action).await,
        Command::Contacts(args) => contacts::run(&session, args.action.unwrap_or_default()).await,
        Command::Profile { action } => config::profile(&session, action.unwrap_or_default()).await,
        Command::Settings { action } => config::settings(&session, action.unwrap_or_default()).await,
        Command::Push { action } => push::run(&session, action).await,
        // Handled above, without a session.
        Command::Completions { .. } => Ok(()),
    };
    session.finish(&result);
    result
}
