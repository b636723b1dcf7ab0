//! The `mocoop` command line: zero-shot CLIP and mixture-of-prompts learning on CPU, WGPU or CUDA.

mod classify;
mod data_cmd;
mod device;
mod embed;
mod model_args;

use clap::{Parser, Subcommand};

use crate::device::dispatch;

/// Prompt learning for CLIP (MoCoOp, CoOp, zero-shot), in Rust on Burn.
#[derive(Debug, Parser)]
#[command(name = "mocoop", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print CLIP embeddings of images and texts as JSON.
    Embed(embed::EmbedArgs),
    /// Zero-shot classify images or folders of images.
    Classify(classify::ClassifyArgs),
    /// Dataset chores: `data check` verifies a dataset on disk.
    Data(data_cmd::DataArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => dispatch(&args.device().clone(), args),
        Command::Classify(args) => dispatch(&args.device().clone(), args),
        Command::Data(args) => args.run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
