//! `mocoop groups suggest`: template groups for a dataset that has none made by hand. A template
//! pool is clustered by CLIP's class-averaged text features (mocoop-model's
//! `templates::suggest`) and written as the groups file `train --groups` reads; `train --groups
//! auto` does the same inline through [`suggest_groups`] and [`write_run_groups`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use mocoop_model::atomic::write_atomic;
use mocoop_model::templates::pool::{imagenet_templates, read_pool};
use mocoop_model::templates::suggest::{
    GroupCount, GroupingError, Suggestion, class_averaged_features, suggest,
};

use crate::class_names::parse_class_names;
use crate::device::{OnBackend, dispatch};
use crate::model_args::{LoadedClip, ModelArgs};

/// The file `train --groups auto` writes its groups to, in the run directory.
pub const RUN_GROUPS_FILE: &str = "groups.toml";

/// How a groups file's header names the default template pool.
const DEFAULT_POOL: &str = "CLIP's 80 ImageNet templates";

/// Class names listed in a groups file's header before "…".
const NAMES_SHOWN: usize = 6;

/// Template-group chores.
#[derive(Debug, clap::Args)]
pub struct GroupsArgs {
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GroupsCommand {
    /// Suggest template groups (experts) for class names: cluster a template pool by the CLIP
    /// text features of its templates averaged over the classes, and write the groups file
    /// `train --groups` reads.
    Suggest(SuggestArgs),
}

impl GroupsArgs {
    /// Runs the subcommand on the device it names.
    pub fn start(self) -> Result<()> {
        match self.command {
            GroupsCommand::Suggest(args) => dispatch(&args.model.device.clone(), args),
        }
    }
}

/// The arguments of `groups suggest`.
#[derive(Debug, clap::Args)]
pub struct SuggestArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Class names, comma-separated ("cat,dog"), or @FILE with one name per line: each template
    /// is averaged over them.
    #[arg(long, value_name = "NAMES|@FILE")]
    classes: String,
    /// The template pool: a file with one template per line, `{}` for the class name [default:
    /// CLIP's 80 ImageNet templates].
    #[arg(long, value_name = "FILE")]
    templates: Option<PathBuf>,
    /// How many groups (experts): a number, or auto for the best mean silhouette of 2 to 20.
    #[arg(long, value_name = "K|auto", default_value = "auto")]
    groups: GroupCount,
    /// The file's section: the dataset name (`train` also reads a file's only section for any
    /// --dataset).
    #[arg(long, default_value = "custom")]
    section: String,
    /// Write the groups file here instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl OnBackend for SuggestArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let classes = parse_class_names(&self.classes)?;
        if classes.is_empty() {
            return Err(GroupingError::NoClasses.into());
        }
        let (pool, origin) = match &self.templates {
            Some(path) => (read_pool(path)?, path.display().to_string()),
            None => (imagenet_templates(), DEFAULT_POOL.into()),
        };
        // A bad count fails before the model loads.
        self.groups.check(pool.len())?;
        let model = self.model.load::<B::InnerBackend>(&device)?;
        let suggestion = suggest_groups(&model, &classes, &pool, self.groups, &device)?;
        let notes = header_notes(&self.model.checkpoint.weights, &classes, &origin);
        let text = suggestion.to_toml(&self.section, &notes);
        match &self.out {
            Some(path) => {
                write_atomic(path, text.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!(
                    "wrote {} groups of {} templates to {}",
                    suggestion.groups.len(),
                    pool.len(),
                    path.display()
                );
            }
            None => print!("{text}"),
        }
        Ok(())
    }
}

/// Groups `pool` for `classes` with `model`, showing the encoding's progress on stderr.
pub fn suggest_groups<B: Backend>(
    model: &LoadedClip<B>,
    classes: &[String],
    pool: &[String],
    count: GroupCount,
    device: &B::Device,
) -> Result<Suggestion> {
    let bar = indicatif::ProgressBar::new(pool.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("encoding templates {bar:30} {pos}/{len}")
            .expect("valid template"),
    );
    let features = class_averaged_features(
        &model.clip,
        &model.tokenizer,
        pool,
        classes,
        device,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    Ok(suggest(pool, &features, count)?)
}

/// The header lines that say what was clustered.
fn header_notes(weights: &Path, classes: &[String], origin: &str) -> Vec<String> {
    let mut shown = classes[..classes.len().min(NAMES_SHOWN)].join(", ");
    if classes.len() > NAMES_SHOWN {
        shown.push_str(", …");
    }
    vec![
        format!("CLIP: {}", weights.display()),
        format!("classes: {} ({shown})", classes.len()),
        format!("templates: {origin}"),
    ]
}

/// Where `train --groups auto` is to write its groups, and for what.
pub struct RunGroups<'a> {
    /// The run directory.
    pub run: &'a Path,
    /// The run's method (an existing run of another method is refused, as `train` refuses it).
    pub method: mocoop_train::config::Method,
    /// Whether an existing run is to be replaced.
    pub overwrite: bool,
    /// The dataset: the file's section.
    pub dataset: &'a str,
    /// The CLIP checkpoint, for the header.
    pub weights: &'a Path,
}

/// `train --groups auto`: suggests groups of the default pool for the dataset's class names
/// (`auto` count) and writes them to `RUN/groups.toml`, whose absolute path the run then records
/// as its groups file, so that resuming and evaluating it read the same groups. Nothing is
/// written where `train` would refuse the run directory.
pub fn write_run_groups<B: Backend>(
    model: &LoadedClip<B>,
    classes: &[String],
    target: &RunGroups<'_>,
    device: &B::Device,
) -> Result<(PathBuf, Suggestion)> {
    mocoop_train::run::check_target(target.run, target.method, target.overwrite)?;
    let pool = imagenet_templates();
    let suggestion = suggest_groups(model, classes, &pool, GroupCount::Auto, device)?;
    let run = target.run;
    let path = std::path::absolute(run.join(RUN_GROUPS_FILE))
        .with_context(|| format!("locating {}", run.display()))?;
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let mut notes = vec![format!(
        "Written by `train --groups auto` for dataset {}.",
        target.dataset
    )];
    notes.extend(header_notes(target.weights, classes, DEFAULT_POOL));
    let text = suggestion.to_toml(target.dataset, &notes);
    write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, suggestion))
}
