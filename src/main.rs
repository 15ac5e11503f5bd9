//! `gptdash`: parse arguments, load settings, run a command. Nothing else lives here.
use std::process::ExitCode;

use clap::Parser;
use gptdash::cli::{self, Cli, Command};

fn main() -> ExitCode {
    gptdash::device::keep_freed_memory();
    let args = Cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<gptdash::interrupt::Interrupted>() {
            // The command said what it saved; exit 128 + the signal's number.
            Some(stopped) => {
                eprintln!("{stopped}");
                ExitCode::from(stopped.exit_code())
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn run(args: Cli) -> anyhow::Result<()> {
    let settings = cli::load_settings(args.config.as_ref())?;
    match args.command {
        Some(Command::Train(train)) => cli::train::run(&train, settings),
        Some(Command::Generate(generate)) => cli::generate::run(&generate, settings),
        Some(Command::Bench(bench)) => cli::bench::run(&bench),
        Some(Command::Data(args)) => cli::data::run(&args, settings),
        Some(Command::Export(args)) => cli::export::run(&args),
        Some(Command::Finetune(args)) => cli::finetune::run(&args, settings),
        Some(Command::Classify(args)) => cli::finetune::classify(&args, settings),
        Some(Command::Inspect(args)) => cli::inspect::run(&args, settings),
        Some(Command::Watch(args)) => {
            let source = gptdash::watch::Source::parse(&args.source);
            source.check()?;
            gptdash::tui::run(settings, Some(source))
        }
        Some(Command::Tui) | None => gptdash::tui::run(settings, None),
    }
}
