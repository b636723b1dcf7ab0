//! The `mocoop` command line: zero-shot CLIP and mixture-of-prompts learning on CPU, WGPU or CUDA.

mod bench_cmd;
mod class_names;
mod classify;
mod data_cmd;
mod demo_cmd;
mod device;
mod embed;
mod eval_cmd;
mod grid_progress;
mod groups_cmd;
mod inspect_cmd;
mod interrupt;
mod model_args;
mod pretrain_cmd;
mod protocol_cmd;
mod report;
mod train_cmd;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::device::{dispatch, dispatch_all};

/// mimalloc instead of the system allocator: the backends allocate and free large tensor buffers at
/// a high rate, and with glibc's malloc image encoding ran ~30% slower once text encoding had run in
/// the same process (`mocoop bench`, infer-cached 56.6 vs 77 images/s; peak RSS ~15% higher).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prompt learning for CLIP (MoCoOp, CoOp, zero-shot), in Rust on Burn.
#[derive(Debug, Parser)]
#[command(name = "mocoop", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run zero-shot CLIP, CoOp and MoCoOp base-to-new on a generated world, no download needed.
    Demo(demo_cmd::DemoArgs),
    /// Print CLIP embeddings of images and texts as JSON.
    Embed(embed::EmbedArgs),
    /// Zero-shot classify images or folders of images.
    Classify(classify::ClassifyArgs),
    /// Dataset chores: `data check` verifies a dataset on disk.
    Data(data_cmd::DataArgs),
    /// Template groups: `groups suggest` clusters a template pool into groups (experts) for a
    /// dataset without hand-made ones.
    Groups(groups_cmd::GroupsArgs),
    /// Pretrain a small CLIP on the generated shape world (no download) and save it.
    Pretrain(pretrain_cmd::PretrainArgs),
    /// Train MoCoOp or CoOp prompts (or evaluate zero-shot CLIP) on a dataset into a run directory.
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a run directory on a test split (its own dataset or another one).
    Eval(eval_cmd::EvalArgs),
    /// Show a run: settings, accuracy, parameters, checkpoint digest, and the words nearest to
    /// each learned context vector.
    Inspect(inspect_cmd::InspectArgs),
    /// Run a protocol grid (base2new, fewshot, domain, cross-dataset) and write its results table.
    Protocol(Box<protocol_cmd::ProtocolArgs>),
    /// Measure training and inference throughput and peak memory on a random-weight CLIP.
    Bench(bench_cmd::BenchArgs),
}

/// The arguments of `subcommand` that were typed on the command line (not defaults, not groups).
fn given(matches: &clap::ArgMatches, subcommand: &str) -> Vec<String> {
    let command = Cli::command();
    let (Some(sub), Some(definition)) = (
        matches.subcommand_matches(subcommand),
        command.find_subcommand(subcommand),
    ) else {
        return Vec::new();
    };
    definition
        .get_arguments()
        .map(|arg| arg.get_id().as_str())
        .filter(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &mut cli.command {
        Command::Train(args) => args.flags.given = given(&matches, "train"),
        Command::Protocol(args) => args.flags.given = given(&matches, "protocol"),
        _ => {}
    }
    let result = match cli.command {
        Command::Demo(args) => dispatch(&args.device().clone(), args),
        Command::Embed(args) => dispatch(&args.device().clone(), args),
        Command::Classify(args) => dispatch(&args.device().clone(), args),
        Command::Data(args) => args.run(),
        Command::Groups(args) => args.start(),
        Command::Pretrain(args) => dispatch(&args.device().clone(), args),
        Command::Train(args) => dispatch_all(&args.devices().clone(), *args),
        Command::Eval(args) => dispatch(&args.device().clone(), args),
        Command::Inspect(args) => dispatch(&args.device().clone(), args),
        Command::Protocol(args) => protocol_cmd::start(*args),
        Command::Bench(args) => args.run(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            match error.downcast_ref::<mocoop_train::TrainError>() {
                Some(mocoop_train::TrainError::Interrupted { .. }) => {
                    std::process::ExitCode::from(interrupt::INTERRUPTED_EXIT)
                }
                _ => std::process::ExitCode::FAILURE,
            }
        }
    }
}
