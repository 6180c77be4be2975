//! `broker`: the Aidants Connect service and its operator commands.

mod cli;
mod demo;
mod devclock;
mod keys;
mod settings;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = cli::run(args);
    std::process::exit(code);
}
