//! The harness daemon: keeps a project's services up between CLI calls and survives its own restart.

fn main() {}
