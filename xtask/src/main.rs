//! Developer chores: `cargo xtask …`.
fn main() {}
