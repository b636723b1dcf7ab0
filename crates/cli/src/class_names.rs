//! Class names as the commands take them: comma-separated on the command line, or `@FILE` with
//! one name per line; read in one place so that `classify` and `groups suggest` agree.

use anyhow::{Context, Result};

/// The names of `spec` ("cat,dog" or "@names.txt"), trimmed, blank entries dropped. How many
/// are needed is the caller's to check.
pub fn parse_class_names(spec: &str) -> Result<Vec<String>> {
    let text;
    let (entries, separator) = match spec.strip_prefix('@') {
        Some(file) => {
            text = std::fs::read_to_string(file)
                .with_context(|| format!("reading class names from {file}"))?;
            (text.as_str(), '\n')
        }
        None => (spec, ','),
    };
    Ok(entries
        .split(separator)
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_line_or_a_file() {
        assert_eq!(parse_class_names(" cat, ,dog ").unwrap(), ["cat", "dog"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("names.txt");
        std::fs::write(&file, "red circle\r\n\nblue, star\n").unwrap();
        let spec = format!("@{}", file.display());
        assert_eq!(
            parse_class_names(&spec).unwrap(),
            ["red circle", "blue, star"]
        );
        let missing = parse_class_names("@/nonexistent/names.txt").unwrap_err();
        assert!(
            format!("{missing:#}").contains("reading class names"),
            "{missing:#}"
        );
    }
}
