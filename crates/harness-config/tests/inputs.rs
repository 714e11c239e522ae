//! Configuration inputs that are not ordinary files: devices, FIFOs, huge files.
//! Each is refused with an error naming the file, without blocking or reading it all.

use std::path::Path;

use harness_config::{Diagnostics, LoadOptions, MAX_CONFIG_BYTES, load};

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
