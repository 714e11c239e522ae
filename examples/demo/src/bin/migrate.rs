//! `demo-migrate`: the one-shot migration job of the demo stack.
//!
//! Brings the data directory to the current schema version, one step at a time, and exits 0.
//! The API depends on it completing successfully.

use std::time::Duration;

use harness_demo::{SCHEMA_VERSION, data_dir};

const STEPS: [&str; 3] = [
    "create table items",
    "seed the catalogue",
    "add a counter for processed jobs",
];

fn main() {
    let dir = data_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let version_file = dir.join("schema_version");
    let current: u32 = std::fs::read_to_string(&version_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    println!("schema at version {current}, target {SCHEMA_VERSION}");
    for (i, step) in STEPS.iter().enumerate() {
        let version = i as u32 + 1;
        if version <= current {
            continue;
        }
        println!("migration {version:03}: {step} ...");
        // Pretend the step does real work, so the progress view has something to show.
        std::thread::sleep(Duration::from_millis(300));
        if version == 2
            && let Err(e) = std::fs::write(dir.join("items"), "anvil\nrocket skates\nbird seed\n")
        {
            eprintln!("migration {version:03} failed: {e}");
            std::process::exit(1);
        }
        if let Err(e) = std::fs::write(&version_file, format!("{version}\n")) {
            eprintln!("migration {version:03} failed: {e}");
            std::process::exit(1);
        }
    }
    println!("schema is up to date (version {SCHEMA_VERSION})");
}
