//! The harness command-line interface.

fn main() {}
