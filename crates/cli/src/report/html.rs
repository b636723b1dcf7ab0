//! `report.html`: one self-contained page (styles inline, figures as `data:` URIs), readable
//! offline and sent as a single file.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;

use super::plots::Figure;
use super::table::Table;

/// A page being built, section by section.
#[derive(Debug, Clone)]
pub struct Page {
    title: String,
    body: String,
}

/// The page's style sheet: readable type, tables with lines, figures scaled to the page.
const STYLE: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:1100px;\
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.3em .7em;\
text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}\
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}\
figcaption{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:1em;overflow:auto;\
font-size:.85em}code{background:#f3f3f3}";

impl Page {
    /// An empty page whose title (and first heading) is `title`.
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            body: format!("<h1>{}</h1>\n", escape(title)),
        }
    }

    /// A section heading.
    pub fn heading(&mut self, text: &str) {
        self.body.push_str(&format!("<h2>{}</h2>\n", escape(text)));
    }

    /// A paragraph of plain text.
    pub fn paragraph(&mut self, text: &str) {
        self.body.push_str(&format!("<p>{}</p>\n", escape(text)));
    }

    /// A table.
    pub fn table(&mut self, table: &Table) {
        let row = |tag: &str, cells: &[String]| {
            let cells: String = cells
                .iter()
                .map(|c| format!("<{tag}>{}</{tag}>", escape(c)))
                .collect();
            format!("<tr>{cells}</tr>\n")
        };
        self.body.push_str("<table>\n<thead>");
        self.body.push_str(&row("th", &table.header));
        self.body.push_str("</thead>\n<tbody>\n");
        for r in &table.rows {
            self.body.push_str(&row("td", r));
        }
        self.body.push_str("</tbody>\n</table>\n");
    }

    /// A figure, its PNG inlined, with a caption.
    pub fn figure(&mut self, figure: &Figure, caption: &str) {
        let data = base64::engine::general_purpose::STANDARD.encode(&figure.png);
        let (w, h) = figure.size;
        self.body.push_str(&format!(
            "<figure><img alt=\"{alt}\" width=\"{w}\" height=\"{h}\" \
             src=\"data:image/png;base64,{data}\"><figcaption>{alt}</figcaption></figure>\n",
            alt = escape(caption)
        ));
    }

    /// Preformatted text (the run's configuration as JSON).
    pub fn code(&mut self, text: &str) {
        self.body
            .push_str(&format!("<pre><code>{}</code></pre>\n", escape(text)));
    }

    /// The whole document.
    pub fn render(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
            escape(&self.title),
            self.body
        )
    }

    /// Writes the document to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.render()).with_context(|| format!("writing {}", path.display()))
    }
}

/// `text` with HTML's special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
