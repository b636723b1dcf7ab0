//! What a run reads besides its configuration: its template groups and its training data.

use std::path::Path;

use mocoop_data::{Dataset, Subsample, load_dataset, subsample_classes};
use mocoop_model::templates::{TemplateGroups, TemplateTable};

use crate::TrainError;
use crate::config::{DataConfig, Setting};

/// The template groups for `dataset`: from `groups_file` when given (its section for the
/// dataset, or its only section), else from the built-in table.
pub fn template_groups(
    groups_file: Option<&Path>,
    dataset: &str,
) -> Result<TemplateGroups, TrainError> {
    template_groups_from(groups_file, dataset, false)
}

/// [`template_groups`], the built-in table being the official code's where `official` (Food101's
/// and the ImageNet domain targets' groups as its configurations have them).
pub fn template_groups_from(
    groups_file: Option<&Path>,
    dataset: &str,
    official: bool,
) -> Result<TemplateGroups, TrainError> {
    let table = match groups_file {
        Some(path) => TemplateTable::from_file(path),
        None if official => Ok(TemplateTable::official()),
        None => Ok(TemplateTable::builtin()),
    }
    .map_err(|e| TrainError::Config(e.to_string()))?;
    let names: Vec<String> = table.datasets().map(str::to_string).collect();
    let key = if groups_file.is_some() && names.len() == 1 && !names.contains(&dataset.to_string())
    {
        names[0].clone()
    } else {
        dataset.to_string()
    };
    table.groups(&key).map_err(|e| {
        let hint = if groups_file.is_none() {
            " (pass --groups FILE with template groups for this dataset)"
        } else {
            ""
        };
        TrainError::Config(format!("{e}{hint}"))
    })
}

/// The training data of a run: its few-shot subset, cut to the base classes in base-to-new.
/// Returns the dataset and a note for the user, if any.
pub fn training_data(data: &DataConfig) -> Result<(Dataset, Option<String>), TrainError> {
    let full = load_dataset(&data.dataset, &data.root)?;
    let few = mocoop_data::few_shot(&full, data.shots, data.seed)?;
    let dataset = match data.setting {
        Setting::Base2new => subsample_classes(&few.dataset, Subsample::Base),
        Setting::Fewshot => few.dataset,
    };
    Ok((dataset, few.note))
}
