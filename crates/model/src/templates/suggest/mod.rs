//! Automatic template groups: a dataset without hand-made groups gets them by clustering a pool
//! of templates by what CLIP makes of them.
//!
//! Each template is encoded filled with every class name; the mean of those features, normalised,
//! is the template's class-averaged feature. The templates are clustered on the cosine similarity
//! of those features ([`cluster`](super::cluster), average linkage), into a given number of groups
//! or the number with the best mean silhouette. Each group starts with its medoid, the template
//! that then initialises its soft prompt.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

use super::cluster::{Similarity, best_k, cohesion, medoid, merge_order, partition, silhouettes};
use super::{TemplateError, TemplateGroups};
use crate::clip::Clip;
use crate::prompt::{HardPrompts, PromptError};
use crate::tokenizer::ClipTokenizer;

/// The most groups `auto` considers: the most experts a published configuration uses (ImageNet's
/// 20); every step encodes experts × classes prompts, so more groups cost in proportion.
pub const AUTO_MAX_GROUPS: usize = 20;

/// Texts encoded per call while computing the class-averaged features (progress is reported
/// after each call).
const TEXTS_PER_CALL: usize = 256;

/// Automatic grouping cannot proceed with its inputs.
#[derive(Debug, thiserror::Error)]
pub enum GroupingError {
    /// A pool file could not be read.
    #[error("cannot read templates {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The pool holds no template.
    #[error("{origin} holds no templates (one per line, `{{}}` for the class name)")]
    EmptyPool {
        /// The file (or "built-in").
        origin: String,
    },
    /// A template of the pool does not have exactly one `{}`.
    #[error("{origin} line {line}: template '{template}' must contain exactly one '{{}}'")]
    Placeholder {
        /// The file.
        origin: String,
        /// Its 1-based line.
        line: usize,
        /// The template.
        template: String,
    },
    /// Fewer than one group was asked for.
    #[error("the number of groups must be at least 1 (got {0})")]
    NoGroups(usize),
    /// More groups than templates were asked for.
    #[error("cannot make {groups} groups from {templates} templates (at most one per template)")]
    TooManyGroups {
        /// Groups asked for.
        groups: usize,
        /// Templates in the pool.
        templates: usize,
    },
    /// No class names to fill the templates with.
    #[error("no class names: the templates are averaged over the classes, give at least one")]
    NoClasses,
    /// Features and templates do not match, or a feature is not finite.
    #[error("template features: {0}")]
    Features(String),
    /// Encoding the prompts failed (e.g. a class name too long for the context).
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The suggested groups are not valid groups (cannot happen for a valid pool).
    #[error(transparent)]
    Groups(#[from] TemplateError),
}

/// How many groups to make: a number, or `auto` (the best mean silhouette over
/// `2..=`[`AUTO_MAX_GROUPS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCount {
    /// The number with the best mean silhouette.
    Auto,
    /// This many.
    Fixed(usize),
}

impl FromStr for GroupCount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let k: usize = s
            .parse()
            .map_err(|_| format!("expected a number of groups or 'auto', got '{s}'"))?;
        Self::Fixed(k)
            .check(usize::MAX)
            .map_err(|e| e.to_string())?;
        Ok(Self::Fixed(k))
    }
}

impl fmt::Display for GroupCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(k) => write!(f, "{k}"),
        }
    }
}

impl GroupCount {
    /// Checks a fixed count against the pool size, so that a bad count fails before encoding.
    pub fn check(self, templates: usize) -> Result<(), GroupingError> {
        match self {
            Self::Fixed(0) => Err(GroupingError::NoGroups(0)),
            Self::Fixed(groups) if groups > templates => {
                Err(GroupingError::TooManyGroups { groups, templates })
            }
            _ => Ok(()),
        }
    }
}

/// One suggested group.
#[derive(Debug, Clone, PartialEq)]
pub struct SuggestedGroup {
    /// The templates, the medoid first, then the others in pool order.
    pub templates: Vec<String>,
    /// Mean similarity between its members (`None` for a group of one).
    pub cohesion: Option<f64>,
}

/// Suggested groups and how they were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The groups, in pool order of their first member.
    pub groups: Vec<SuggestedGroup>,
    /// What was asked for.
    pub asked: GroupCount,
    /// The mean silhouette of each number of groups considered (for `auto`; empty otherwise).
    pub silhouettes: Vec<(usize, f64)>,
    /// How many templates were clustered.
    pub templates: usize,
}

impl Suggestion {
    /// The groups as a run reads them.
    pub fn template_groups(&self, name: &str) -> Result<TemplateGroups, GroupingError> {
        let groups = self.groups.iter().map(|g| g.templates.clone()).collect();
        Ok(TemplateGroups::new(name, groups)?)
    }
}

/// Groups `templates` by their class-averaged features (`features[t]`, L2-normalised).
pub fn suggest(
    templates: &[String],
    features: &[Vec<f32>],
    count: GroupCount,
) -> Result<Suggestion, GroupingError> {
    if templates.is_empty() {
        return Err(GroupingError::EmptyPool {
            origin: "the template pool".into(),
        });
    }
    count.check(templates.len())?;
    if features.len() != templates.len() || features.iter().flatten().any(|v| !v.is_finite()) {
        return Err(GroupingError::Features(format!(
            "{} finite feature rows expected, one per template",
            templates.len()
        )));
    }
    let sim = Similarity::of_unit_rows(features);
    let merges = merge_order(&sim);
    let n = templates.len();
    let (k, scores) = match count {
        GroupCount::Fixed(k) => (k, Vec::new()),
        GroupCount::Auto => {
            let scores = silhouettes(&sim, &merges, AUTO_MAX_GROUPS);
            // Fewer than three templates leave no number to compare: one group each.
            (best_k(&scores).unwrap_or(n), scores)
        }
    };
    let groups = partition(n, &merges, k)
        .into_iter()
        .map(|members| {
            let first = medoid(&sim, &members);
            let order =
                std::iter::once(first).chain(members.iter().copied().filter(|&t| t != first));
            SuggestedGroup {
                templates: order.map(|t| templates[t].clone()).collect(),
                cohesion: cohesion(&sim, &members),
            }
        })
        .collect();
    Ok(Suggestion {
        groups,
        asked: count,
        silhouettes: scores,
        templates: n,
    })
}

/// The class-averaged feature of every template: `normalize(mean_c h[t, c])`, with `h[t, c]` the
/// normalised text feature of template `t` filled with class `c`. `progress(done, total)` is
/// called after each batch of templates, for long encodes.
pub fn class_averaged_features<B: Backend>(
    clip: &Clip<B>,
    tokenizer: &ClipTokenizer,
    templates: &[String],
    classnames: &[String],
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f32>>, GroupingError> {
    if classnames.is_empty() {
        return Err(GroupingError::NoClasses);
    }
    let per_call = (TEXTS_PER_CALL / classnames.len()).max(1);
    let mut rows = Vec::with_capacity(templates.len());
    for chunk in templates.chunks(per_call) {
        // One group per template: the class-agnostic prototype of a group of one template is
        // exactly its class-averaged feature.
        let groups: Vec<Vec<String>> = chunk.iter().map(|t| vec![t.clone()]).collect();
        let hard = HardPrompts::from_groups(clip, tokenizer, &groups, classnames, device)?;
        let means = hard.class_agnostic_prototypes();
        let d = means.dims()[1];
        let flat = means
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| GroupingError::Features(format!("reading features: {e:?}")))?;
        rows.extend(flat.chunks(d).map(<[f32]>::to_vec));
        progress(rows.len(), templates.len());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
