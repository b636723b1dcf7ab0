//! Reports of runs, demos and protocol grids: figures ([`plots`]) and one self-contained HTML page
//! ([`html`]) beside each Markdown summary.

pub mod curves;
pub mod demo;
pub mod font;
pub mod html;
pub mod plots;
pub mod routing;
pub mod run;
pub mod table;

pub mod protocol;
#[cfg(test)]
mod tests;
