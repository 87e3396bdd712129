//! The `planrun` command line.
fn main() {}
