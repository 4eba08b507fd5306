//! The `mandate` command (being written).
fn main() {}
