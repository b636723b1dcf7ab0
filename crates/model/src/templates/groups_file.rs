//! Suggested groups written as a template-groups file: the format `train --groups` reads
//! ([`TemplateTable::parse`](super::TemplateTable::parse)), with how each group was formed in
//! comments for the person who reviews it.

use std::fmt::Write;

use super::suggest::{GroupCount, Suggestion};

/// Silhouette figures per comment line.
const SCORES_PER_LINE: usize = 8;

impl Suggestion {
    /// The groups as one `[section]` of a template-groups TOML file. `notes` become comment
    /// lines of the header (what was clustered: weights, classes, pool); each group is preceded
    /// by a comment with its size and cohesion. The same suggestion always gives the same text.
    pub fn to_toml(&self, section: &str, notes: &[String]) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: &str| {
            let _ = writeln!(out, "{}", format!("# {text}").trim_end());
        };
        line(
            &mut out,
            "Template groups suggested by `mocoop groups suggest`: the templates clustered by the",
        );
        line(
            &mut out,
            "cosine similarity of their class-averaged CLIP text features (average linkage).",
        );
        line(
            &mut out,
            "Each group's first template is its medoid (it initialises the group's soft prompt);",
        );
        line(
            &mut out,
            "cohesion is the mean similarity between the group's templates.",
        );
        for note in notes {
            line(&mut out, note);
        }
        line(&mut out, &self.count_line());
        for chunk in self.silhouettes.chunks(SCORES_PER_LINE) {
            let scores: Vec<String> = chunk.iter().map(|(k, s)| format!("{k}: {s:.4}")).collect();
            line(
                &mut out,
                &format!("  silhouette by K  {}", scores.join(", ")),
            );
        }
        let _ = writeln!(out, "\n[{}]\ngroups = [", toml_key(section));
        for (g, group) in self.groups.iter().enumerate() {
            let cohesion = match group.cohesion {
                Some(c) => format!("cohesion {c:.4}"),
                None => "a single template".into(),
            };
            let n = group.templates.len();
            let _ = writeln!(out, "  # group {}: {n} template(s), {cohesion}", g + 1);
            let quoted: Vec<String> = group.templates.iter().map(|t| toml_string(t)).collect();
            let _ = writeln!(out, "  [{}],", quoted.join(", "));
        }
        out.push_str("]\n");
        out
    }

    /// The header line saying how many groups there are and why.
    fn count_line(&self) -> String {
        let k = self.groups.len();
        let n = self.templates;
        match self.asked {
            GroupCount::Fixed(_) => format!("{k} groups of {n} templates, as asked."),
            GroupCount::Auto => match self.silhouettes.iter().find(|(c, _)| *c == k) {
                Some((_, s)) => format!(
                    "{k} groups of {n} templates: the best mean silhouette ({s:.4}) of K = 2..{}.",
                    self.silhouettes.last().map_or(k, |(c, _)| *c)
                ),
                None => format!("{k} groups of {n} templates: too few templates to compare K."),
            },
        }
    }
}

/// A TOML basic string (quotes and escapes as TOML needs them).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A section name as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        toml_string(name)
    }
}
