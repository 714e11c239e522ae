//! End-to-end tests of the verbs that need no daemon: `validate`, `config`, `config schema`,
//! `graph`, `env`, `completions`, and usage errors. They run the built `harness` binary.

mod support;

use support::Env;

const STACK: &str = r#"version: "1.0"
name: shop
services:
  migrate:
    type: process
    job: true
    binary: sh
    args: ["-c", "echo migrated"]
  db:
    type: process
    binary: sleep
    args: ["300"]
    health_check:
      tcp: { port: 15432 }
  api:
    type: process
    binary: sleep
    args: ["300"]
    env:
      DB_URL: "postgres://${db.host}:${db.port}/shop"
      MODE: "${SHOP_MODE:-dev}"
    dependencies:
      db: { condition: healthy }
      migrate: { condition: completed_successfully }
"#;

#[test]
fn validate_prints_a_summary_and_exits_0() {
    let env = Env::new();
    env.write("services.yaml", STACK);
    let r = env.run(&["validate"]).ok();
    assert!(r.stdout.contains("shop"), "{}", r.stdout);
    assert!(r.stdout.contains("3 services"), "{}", r.stdout);

    let r = env.run(&["validate", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["services"], 3);
}

#[test]
fn validate_points_at_file_line_and_column() {
    let env = Env::new();
    // `dependencies: [dbb]` is on line 7; the name starts at column 20.
    env.write(
        "broken.yaml",
        "version: \"1.0\"\nname: shop\nservices:\n  db:\n    binary: sleep\n  api:\n    dependencies: [dbb]\n    binary: sleep\n",
    );
    let r = env.run(&["-f", "broken.yaml", "validate"]).expect_code(3);
    assert!(
        r.stderr.contains("broken.yaml:7:"),
        "no file:line in:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains('^'), "no caret in:\n{}", r.stderr);
    assert!(r.stderr.contains("dbb"), "{}", r.stderr);
    assert!(
        r.stderr.contains("did you mean") || r.stderr.contains("db"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let env = Env::new();
    env.write(
        "services.yaml",
        "name: shop\nservices:\n  a:\n    binary: sleep\n    dependencies: [nope]\n  b:\n    binary: sleep\n    restart: sometimes\n",
    );
    let r = env.run(&["validate"]).expect_code(3);
    assert!(r.stderr.contains("services.yaml:5:"), "{}", r.stderr);
    assert!(r.stderr.contains("services.yaml:8:"), "{}", r.stderr);
}

#[test]
fn a_missing_file_is_a_config_error_naming_it() {
    let env = Env::new();
    let r = env.run(&["validate"]).expect_code(3);
    assert!(r.stderr.contains("services.yaml"), "{}", r.stderr);
    let r = env.run(&["-f", "nope.yaml", "config"]).expect_code(3);
    assert!(r.stderr.contains("nope.yaml"), "{}", r.stderr);
}

fn mkfifo(path: &std::path::Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_as_the_configuration_fails_at_once_naming_it() {
    let env = Env::new();
    mkfifo(&env.dir.path().join("services.yaml"));
    // Before, `validate` waited forever for a writer; the deadline catches that.
    let r = env
        .run_within(&["validate"], std::time::Duration::from_secs(10))
        .expect_code(3);
    assert!(r.stderr.contains("services.yaml"), "{}", r.stderr);
    assert!(
        r.stderr.contains("FIFO, not a regular file"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_fifo_as_an_env_file_fails_at_once_naming_it() {
    let env = Env::new();
    mkfifo(&env.dir.path().join("app.env"));
    env.write(
        "services.yaml",
        "name: shop\nservices:\n  web:\n    binary: sleep\n    env_file: app.env\n",
    );
    let r = env
        .run_within(&["validate"], std::time::Duration::from_secs(10))
        .expect_code(3);
    assert!(r.stderr.contains("app.env"), "{}", r.stderr);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    assert!(r.stderr.contains("services.yaml:5:"), "{}", r.stderr);
}

#[test]
fn dev_zero_as_the_configuration_fails_naming_it() {
    let env = Env::new();
    let r = env
        .run_within(
            &["-f", "/dev/zero", "validate"],
            std::time::Duration::from_secs(10),
        )
        .expect_code(3);
    assert!(r.stderr.contains("/dev/zero"), "{}", r.stderr);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
}

#[test]
fn override_files_merge_in_order() {
    let env = Env::new();
    env.write("services.yaml", STACK);
    env.write("override.yaml", "services:\n  db:\n    args: [\"600\"]\n");
    // -f before and after the verb both count, in order.
    let r = env
        .run(&[
            "-f",
            "services.yaml",
            "config",
            "--format",
            "json",
            "-f",
            "override.yaml",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let db = &v["services"]["db"];
    assert_eq!(
        db["target"]["args"],
        serde_json::json!(["300", "600"]),
        "lists append: {db}"
    );
}

#[test]
fn config_prints_the_resolved_model_as_yaml_or_json() {
    let env = Env::new();
    env.write("services.yaml", STACK);
    let r = env.run(&["config", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["name"], "shop");
    // Environment interpolation happened; service references are kept for start time.
    let api_env = &v["services"]["api"]["env"];
    assert_eq!(api_env["MODE"], "dev");
    assert!(api_env["DB_URL"].as_str().unwrap().contains("${db.host}"));

    let r = env
        .cmd(&["config"])
        .env("SHOP_MODE", "prod")
        .output()
        .unwrap();
    assert!(r.status.success());
    let yaml = String::from_utf8_lossy(&r.stdout);
    assert!(yaml.contains("prod"), "{yaml}");
    assert!(yaml.contains("migrate"), "{yaml}");
}

#[test]
fn config_schema_is_a_json_schema() {
    let env = Env::new();
    let r = env.run(&["config", "schema"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v.get("$schema").is_some() || v.get("properties").is_some(),
        "{v}"
    );
    assert!(r.stdout.contains("services"));
}

#[test]
fn graph_in_every_format() {
    let env = Env::new();
    env.write("services.yaml", STACK);
    let text = env.run(&["graph"]).ok().stdout;
    let api = text.lines().position(|l| l.starts_with("api")).unwrap();
    let db = text.lines().position(|l| l.starts_with("db")).unwrap();
    assert!(db < api, "start order:\n{text}");
    assert!(text.contains("needs"), "{text}");

    let dot = env.run(&["graph", "--format", "dot"]).ok().stdout;
    assert!(
        dot.contains("\"api\" -> \"db\" [label=\"healthy\"]"),
        "{dot}"
    );

    let mermaid = env.run(&["graph", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");

    let json = env.run(&["graph", "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let edges = v["edges"].as_array().unwrap();
    assert!(edges.iter().any(|e| e["from"] == "api"
        && e["to"] == "migrate"
        && e["condition"] == "completed_successfully"));
}

#[test]
fn env_shows_the_resolved_environment() {
    let env = Env::new();
    env.write("services.yaml", STACK);
    let r = env.run(&["env", "api"]).ok();
    assert!(r.stdout.contains("MODE=dev"), "{}", r.stdout);
    assert!(r.stdout.contains("HARNESS_SERVICE=api"), "{}", r.stdout);
    assert!(
        r.stdout.contains("DB_URL=postgres://127.0.0.1:15432/shop")
            || r.stdout.contains("DB_URL=postgres://localhost:15432/shop"),
        "{}",
        r.stdout
    );
    let r = env.run(&["env", "api", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["MODE"], "dev");

    let r = env.run(&["env", "nope"]).expect_code(2);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
}

#[test]
fn completions_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let r = env.run(&["completions", shell]).ok();
        assert!(r.stdout.contains("harness"), "{shell}");
        assert!(r.stdout.contains("validate"), "{shell}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.run(&["frobnicate"]).expect_code(2);
    env.run(&["start"]).expect_code(2);
    env.run(&["graph", "--format", "png"]).expect_code(2);
    let r = env.run(&["up", "--timeout", "soon"]).expect_code(2);
    assert!(r.stderr.contains("--timeout"), "{}", r.stderr);
    env.run(&["--help"]).ok();
}

#[test]
fn status_without_a_daemon_exits_4() {
    let env = Env::new();
    let r = env.run(&["status"]).expect_code(4);
    assert!(r.stderr.contains("daemon"), "{}", r.stderr);
    // No daemon was started by a read command.
    assert!(env.daemon_pid().is_none());
}

#[test]
fn empty_or_service_less_files_exit_3_with_a_location() {
    let env = Env::new();
    for (name, text, at, msg) in [
        ("empty.yaml", "", "empty.yaml:1:1", "the file is empty"),
        (
            "comments.yaml",
            "# later\n",
            "comments.yaml:1:1",
            "the file holds no configuration",
        ),
        (
            "none.yaml",
            "name: shop\nservices: {}\n",
            "none.yaml:2:1",
            "the project has no services",
        ),
        (
            "nul.yaml",
            "name: shop\nservices:\n  a:\n    binary: sh\0\n",
            "nul.yaml:4:15",
            "the file holds a NUL byte",
        ),
    ] {
        env.write(name, text);
        let r = env.run(&["-f", name, "validate"]).expect_code(3);
        assert!(r.stderr.contains(at), "{name}: no {at} in:\n{}", r.stderr);
        assert!(
            r.stderr.contains(msg),
            "{name}: no {msg:?} in:\n{}",
            r.stderr
        );
        assert!(!r.stdout.contains("valid"), "{name}: {}", r.stdout);
    }
}

#[test]
fn unset_variables_warn_unless_strict() {
    let env = Env::new();
    env.write(
        "services.yaml",
        "name: shop\nservices:\n  a:\n    binary: sh\n    env:\n      X: ${HARNESS_TEST_SURELY_UNSET}\n",
    );
    let r = env.run(&["validate"]).ok();
    assert!(
        r.stderr
            .contains("variable `HARNESS_TEST_SURELY_UNSET` is not set; using an empty string"),
        "{}",
        r.stderr
    );
    let r = env.run(&["config", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"]["a"]["env"]["X"], "");

    let r = env.run(&["--strict-env", "validate"]).expect_code(3);
    assert!(
        r.stderr.contains("services.yaml:6:10")
            && r.stderr
                .contains("variable `HARNESS_TEST_SURELY_UNSET` is not set")
            && !r.stderr.contains("using an empty string"),
        "{}",
        r.stderr
    );
    let r = env
        .cmd(&["validate"])
        .env("HARNESS_STRICT_ENV", "1")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(3), "{r:?}");
}

#[test]
fn a_free_text_name_validates() {
    let env = Env::new();
    env.write(
        "services.yaml",
        "version: \"1.0\"\nname: \"Environment Resolution Test\"\nservices:\n  a:\n    binary: sh\n",
    );
    let r = env.run(&["validate", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["project"], "environment-resolution-test");
}
