//! The `mocoop` command line.
fn main() {}
