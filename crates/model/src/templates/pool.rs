//! The pool of templates that automatic grouping clusters: CLIP's 80 ImageNet templates by
//! default, or a user's file with one template per line.

use std::path::Path;

use super::suggest::GroupingError;

/// CLIP's 80 ImageNet prompt templates, as published with CLIP, one per line
/// (`assets/imagenet-templates.txt`): the default pool of `groups suggest` and `--groups auto`,
/// since they cover the photographic, artistic and degraded styles a dataset may hold.
pub const IMAGENET_TEMPLATES: &str = include_str!("../../../../assets/imagenet-templates.txt");

/// The default pool, [`IMAGENET_TEMPLATES`].
pub fn imagenet_templates() -> Vec<String> {
    parse_pool(IMAGENET_TEMPLATES, "built-in ImageNet templates").expect("shipped pool is valid")
}

/// Reads a pool file: one template per line, `{}` standing for the class name; blank lines are
/// skipped and each line's surrounding whitespace is dropped.
pub fn read_pool(path: &Path) -> Result<Vec<String>, GroupingError> {
    let text = std::fs::read_to_string(path).map_err(|source| GroupingError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_pool(&text, &path.display().to_string())
}

/// Parses a pool's text; `origin` names it in errors. An empty pool, or a template without
/// exactly one `{}`, is an error naming the line.
pub fn parse_pool(text: &str, origin: &str) -> Result<Vec<String>, GroupingError> {
    let mut templates = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let template = line.trim();
        if template.is_empty() {
            continue;
        }
        if template.matches("{}").count() != 1 {
            return Err(GroupingError::Placeholder {
                origin: origin.to_string(),
                line: number + 1,
                template: template.to_string(),
            });
        }
        templates.push(template.to_string());
    }
    if templates.is_empty() {
        return Err(GroupingError::EmptyPool {
            origin: origin.to_string(),
        });
    }
    Ok(templates)
}
