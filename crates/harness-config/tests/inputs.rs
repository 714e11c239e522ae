//! Configuration inputs that are not ordinary files: devices, FIFOs, huge files.
//! Each is refused with an error naming the file, without blocking or reading it all.

use std::path::Path;

use harness_config::tree::MAX_ALIAS_EVENTS;
use harness_config::{Diagnostics, LoadOptions, MAX_CONFIG_BYTES, from_sources, load};

fn messages(d: &Diagnostics) -> String {
    d.errors()
        .map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `file` (a `.env` or not beside it), expecting failure; asserts that the
/// errors name the file and contain `expect`.
fn assert_refused(file: &Path, expect: &str) {
    let err = load(&LoadOptions::files([file]).with_env([("X", "1")])).unwrap_err();
    let msg = messages(&err);
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(name.as_ref()), "{msg}");
    assert!(msg.contains(expect), "{msg}");
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from(0o600)).expect("mkfifo");
}

fn service_with_env_file(env_file: &Path) -> String {
    format!(
        "name: shop\nservices:\n  web:\n    binary: sleep\n    env_file: {}\n",
        env_file.display()
    )
}

#[test]
fn dev_zero_as_the_configuration_is_refused_naming_it() {
    let err = load(&LoadOptions::files(["/dev/zero"])).unwrap_err();
    let msg = messages(&err);
    assert!(msg.contains("/dev/zero"), "{msg}");
    assert!(
        msg.contains("character device, not a regular file"),
        "{msg}"
    );
}

#[test]
fn a_symlink_to_dev_zero_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("services.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    assert_refused(&link, "not a regular file");
}

#[test]
fn a_fifo_as_the_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("services.yaml");
    mkfifo(&fifo);
    assert_refused(&fifo, "FIFO, not a regular file");
}

#[test]
fn an_oversized_configuration_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    let mut text = "name: shop\nservices:\n  web:\n    binary: sleep\n".to_owned();
    while (text.len() as u64) <= MAX_CONFIG_BYTES {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&file, &text).unwrap();
    assert_refused(&file, "larger than the limit");
}

#[test]
fn env_files_that_are_fifos_devices_or_oversized_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("app.env");
    mkfifo(&fifo);
    let big = dir.path().join("big.env");
    std::fs::write(&big, "A=1\n".repeat(MAX_CONFIG_BYTES as usize / 4 + 1)).unwrap();
    for (env_file, expect) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "character device"),
        (big.as_path(), "larger than the limit"),
    ] {
        let cfg = dir.path().join("services.yaml");
        std::fs::write(&cfg, service_with_env_file(env_file)).unwrap();
        let err = load(&LoadOptions::files([&cfg]).with_env([("X", "1")])).unwrap_err();
        let msg = messages(&err);
        assert!(msg.contains(&env_file.display().to_string()), "{msg}");
        assert!(msg.contains(expect), "{msg}");
        // The error points at the `env_file:` line of services.yaml.
        let e = err.errors().next().unwrap();
        assert_eq!(e.location.as_ref().unwrap().line, 5, "{e:?}");
    }
}

#[test]
fn a_dotenv_that_is_a_fifo_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join(".env"));
    let cfg = dir.path().join("services.yaml");
    std::fs::write(&cfg, "name: shop\nservices:\n  web:\n    binary: sleep\n").unwrap();
    let err = load(&LoadOptions::files([&cfg]).with_env([("X", "1")])).unwrap_err();
    let msg = messages(&err);
    assert!(msg.contains(".env") && msg.contains("FIFO"), "{msg}");
}

/// Ten anchors, each a list of ten aliases of the one before: 10^12 nodes if expanded.
fn alias_bomb() -> String {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            std::iter::repeat_n(prev.as_str(), 10)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text
}

#[test]
fn an_alias_bomb_is_refused_with_a_located_error_naming_the_limit() {
    let err = from_sources(&[("bomb.yaml", &alias_bomb())], &LoadOptions::default()).unwrap_err();
    let errors: Vec<_> = err.errors().collect();
    assert_eq!(errors.len(), 1, "{err}");
    let e = errors[0];
    assert!(
        e.message.contains(&format!(
            "aliases expand to more than {MAX_ALIAS_EVENTS} YAML events"
        )),
        "{e:?}"
    );
    assert!(e.hint.as_deref().unwrap_or("").contains("aliases"), "{e:?}");
    let loc = e.location.as_ref().expect("located");
    assert!(loc.file.ends_with("bomb.yaml") && loc.line > 1, "{loc:?}");
}

#[test]
fn a_thousand_services_sharing_defaults_through_an_alias_load() {
    let mut text = String::from(
        "name: shop\nx-defaults: &defaults\n  binary: sleep\n  args: [\"300\"]\n  restart: on-failure\n  env: { A: \"1\", B: \"2\", C: \"3\", D: \"4\" }\nservices:\n",
    );
    for i in 0..1000 {
        text.push_str(&format!("  s{i}:\n    <<: *defaults\n"));
    }
    let loaded = from_sources(&[("services.yaml", &text)], &LoadOptions::default())
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(loaded.project.services.len(), 1000);
}
