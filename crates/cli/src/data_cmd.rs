//! `mocoop data check`: verifies a dataset on disk before anyone trains on it.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Dataset chores.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DataCommand {
    /// Count images per split and class, list missing or undecodable files, and report what is
    /// wrong in one readable report (exit status non-zero if anything is).
    Check {
        /// Dataset name (imagenet, caltech101, oxford_pets, stanford_cars, oxford_flowers, food101,
        /// fgvc_aircraft, sun397, dtd, eurosat, ucf101, imagenet_v2, imagenet_sketch, imagenet_a,
        /// imagenet_r, imagefolder, list).
        #[arg(long)]
        dataset: String,
        /// The data root holding the dataset's CoOp folder (or the dataset folder itself).
        #[arg(long)]
        root: PathBuf,
    },
}

impl DataArgs {
    /// Runs the chosen chore.
    pub fn run(self) -> Result<()> {
        match self.command {
            DataCommand::Check { dataset, root } => {
                let report = mocoop_data::check_dataset(&dataset, &root);
                println!("{report}");
                if !report.is_ok() {
                    bail!(
                        "dataset '{dataset}' at {} has problems (see above)",
                        root.display()
                    );
                }
                Ok(())
            }
        }
    }
}
