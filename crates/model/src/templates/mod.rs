//! Hard-prompt templates grouped by meaning, per dataset: the data MoCoOp's experts are built from.
//!
//! The shipped table (`assets/template-groups.toml`) holds the published configuration's groups for
//! the CoOp benchmark datasets; users may pass their own file in the same format for a custom dataset.
//! A dataset without hand-made groups can have them suggested: [`suggest`] clusters a template
//! [`pool`] by CLIP's class-averaged text features ([`cluster`] holds the clustering itself) and
//! [`Suggestion::to_toml`](suggest::Suggestion::to_toml) writes the result in this module's file
//! format.

pub mod cluster;
mod groups_file;
pub mod pool;
pub mod suggest;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The template-group table shipped with the binary.
pub const BUILTIN_GROUPS: &str = include_str!("../../../../assets/template-groups.toml");

/// The official MoCoOp code's groups where they differ from [`BUILTIN_GROUPS`] (Food101, the
/// ImageNet domain-shift targets).
pub const OFFICIAL_GROUPS: &str = include_str!("../../../../assets/template-groups-official.toml");

/// A template-group file or its contents is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read template groups {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed.
    #[error("template groups {origin}: {message}")]
    Parse {
        /// The file (or "built-in").
        origin: String,
        /// The parser's message, with position.
        message: String,
    },
    /// A dataset section is absent.
    #[error("no template groups for dataset '{name}' in {origin} (available: {available})")]
    UnknownDataset {
        /// The requested section.
        name: String,
        /// The file (or "built-in").
        origin: String,
        /// Comma-separated sections present.
        available: String,
    },
    /// A group or template is not usable.
    #[error("template groups for '{name}': {message}")]
    Invalid {
        /// The dataset section.
        name: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
struct Section {
    groups: Vec<Vec<String>>,
}

/// Template groups for every dataset of one file.
#[derive(Debug, Clone)]
pub struct TemplateTable {
    origin: String,
    datasets: BTreeMap<String, Vec<Vec<String>>>,
}

impl TemplateTable {
    /// The shipped table.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_GROUPS, "built-in template groups").expect("shipped table is valid")
    }

    /// The shipped table with the official code's sections in place of its own
    /// ([`OFFICIAL_GROUPS`]).
    pub fn official() -> Self {
        let mut table = Self::builtin();
        let official = Self::parse(OFFICIAL_GROUPS, "official template groups")
            .expect("shipped table is valid");
        table.datasets.extend(official.datasets);
        table.origin = "built-in template groups (official code's)".into();
        table
    }

    /// Reads a user's table (same format as the shipped one).
    pub fn from_file(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a table from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TemplateError> {
        let raw: BTreeMap<String, Section> =
            toml::from_str(text).map_err(|e| TemplateError::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        let datasets = raw.into_iter().map(|(k, v)| (k, v.groups)).collect();
        Ok(Self {
            origin: origin.to_string(),
            datasets,
        })
    }

    /// Dataset names with groups in this table.
    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        self.datasets.keys().map(String::as_str)
    }

    /// The validated groups of one dataset. ImageNet's domain-shift targets share ImageNet's groups.
    pub fn groups(&self, dataset: &str) -> Result<TemplateGroups, TemplateError> {
        let key = match dataset {
            "imagenet_v2" | "imagenet_sketch" | "imagenet_a" | "imagenet_r"
                if !self.datasets.contains_key(dataset) =>
            {
                "imagenet"
            }
            other => other,
        };
        let groups = self
            .datasets
            .get(key)
            .ok_or_else(|| TemplateError::UnknownDataset {
                name: dataset.to_string(),
                origin: self.origin.clone(),
                available: self.datasets.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        TemplateGroups::new(dataset, groups.clone())
    }
}

/// The template groups of one dataset: one group per expert, the first template of each group
/// initialising its soft prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateGroups {
    groups: Vec<Vec<String>>,
}

impl TemplateGroups {
    /// Validates groups: at least one non-empty group, each template with exactly one `{}`.
    pub fn new(name: &str, groups: Vec<Vec<String>>) -> Result<Self, TemplateError> {
        let invalid = |message: String| TemplateError::Invalid {
            name: name.to_string(),
            message,
        };
        if groups.is_empty() {
            return Err(invalid("no groups".into()));
        }
        for (g, group) in groups.iter().enumerate() {
            if group.is_empty() {
                return Err(invalid(format!("group {g} is empty")));
            }
            for template in group {
                if template.matches("{}").count() != 1 {
                    return Err(invalid(format!(
                        "template '{template}' (group {g}) must contain exactly one '{{}}'"
                    )));
                }
            }
        }
        Ok(Self { groups })
    }

    /// The groups, in order.
    pub fn groups(&self) -> &[Vec<String>] {
        &self.groups
    }

    /// Every template of every group, in order (for a plain zero-shot ensemble).
    pub fn all_templates(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flatten().map(String::as_str)
    }
}

/// Fills a template's `{}` with a class name.
pub fn fill(template: &str, classname: &str) -> String {
    template.replacen("{}", classname, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_table_differs_only_where_the_official_configurations_do() {
        let (official, builtin) = (TemplateTable::official(), TemplateTable::builtin());
        let food = official.groups("food101").unwrap();
        assert_eq!(food.groups()[0], vec!["a photo of a  {}.".to_string()]);
        let target = official.groups("imagenet_a").unwrap();
        assert_eq!(target.groups().len(), 16);
        assert_eq!(target.all_templates().count(), 22);
        assert_eq!(builtin.groups("imagenet_a").unwrap().groups().len(), 20);
        assert_eq!(official.groups("imagenet").unwrap().groups().len(), 20);
        assert_eq!(
            official.groups("dtd").unwrap(),
            builtin.groups("dtd").unwrap()
        );
    }

    #[test]
    fn builtin_table_shapes() {
        // That every benchmark dataset and domain target has groups is checked against the
        // dataset registry's lists (mocoop-data's `layouts` tests).
        let table = TemplateTable::builtin();
        assert_eq!(table.groups("imagenet").unwrap().groups().len(), 20);
        assert_eq!(table.groups("dtd").unwrap().groups()[0][0], "{} texture.");
    }

    #[test]
    fn bad_tables_are_clear_errors() {
        let err = TemplateTable::parse("[x]\ngroups = [[\"no placeholder\"]]", "t.toml")
            .unwrap()
            .groups("x")
            .unwrap_err();
        assert!(err.to_string().contains("exactly one '{}'"), "{err}");
        let err = TemplateTable::parse("[x]\ngroups = [[", "t.toml").unwrap_err();
        assert!(err.to_string().contains("t.toml"), "{err}");
        let err = TemplateTable::builtin().groups("mnist").unwrap_err();
        assert!(err.to_string().contains("available"), "{err}");
    }

    #[test]
    fn fill_replaces_the_placeholder() {
        assert_eq!(fill("a photo of a {}.", "cat"), "a photo of a cat.");
    }
}
