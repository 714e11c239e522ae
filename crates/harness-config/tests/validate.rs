//! Validation that explains: every error with file:line:column, caret and hint.

use harness_config::{Diagnostics, LoadOptions, Loaded, from_sources};

fn opts() -> LoadOptions {
    LoadOptions::default().with_env([("HOME_PORT", "8080"), ("EMPTY", "")])
}

fn load(yaml: &str) -> Result<Loaded, Diagnostics> {
    from_sources(&[("services.yaml", yaml)], &opts())
}

/// (line, column, message, hint) of every error.
fn errors(yaml: &str) -> Vec<(u32, u32, String, String)> {
    match load(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(d) => d
            .errors()
            .map(|e| {
                let loc = e.location.as_ref().expect("every error has a location");
                (
                    loc.line,
                    loc.column,
                    e.message.clone(),
                    e.hint.clone().unwrap_or_default(),
                )
            })
            .collect(),
    }
}

fn one_error(yaml: &str) -> (u32, u32, String, String) {
    let mut e = errors(yaml);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.remove(0)
}

#[test]
fn unknown_dependency_with_did_you_mean() {
    let (line, col, msg, hint) = one_error(
        "services:\n  db:\n    binary: db\n  api:\n    binary: api\n    dependencies: [dbb]\n",
    );
    assert_eq!((line, col), (6, 20));
    assert_eq!(msg, "service `api` depends on `dbb`, which is not defined");
    assert_eq!(hint, "did you mean `db`?");
}

#[test]
fn cycle_prints_its_path() {
    let (line, _, msg, _) = one_error(
        "services:\n  a:\n    binary: a\n    dependencies: [b]\n  b:\n    binary: b\n    dependencies: [c]\n  c:\n    binary: c\n    dependencies: [a]\n",
    );
    assert_eq!(msg, "dependency cycle: a -> b -> c -> a");
    assert_eq!(line, 4);
}

#[test]
fn healthy_without_health_check() {
    let (line, col, msg, hint) = one_error(
        "services:\n  db:\n    binary: db\n  api:\n    binary: api\n    dependencies:\n      db:\n        condition: healthy\n",
    );
    assert_eq!((line, col), (8, 20));
    assert!(msg.contains("no health check"), "{msg}");
    assert!(hint.contains("health_check"), "{hint}");
}

#[test]
fn conditions_on_jobs_that_can_never_hold() {
    let e = errors(
        "services:\n  migrate:\n    binary: m\n    job: true\n    health_check: {tcp: 1}\n  api:\n    binary: api\n    dependencies:\n      migrate: {condition: healthy}\n  web:\n    binary: w\n    dependencies:\n      api: {condition: completed_successfully}\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].2.contains("one-shot job"), "{e:#?}");
    assert!(e[1].2.contains("not a one-shot job"), "{e:#?}");
    assert!(e[1].3.contains("job: true"), "{e:#?}");
}

#[test]
fn default_conditions() {
    let p = load(
        "services:\n  db:\n    binary: db\n    health_check: {tcp: 5432}\n  cache:\n    binary: c\n  migrate:\n    binary: m\n    job: true\n  api:\n    binary: api\n    dependencies: [db, cache, migrate]\n",
    )
    .unwrap()
    .project;
    let deps = p.graph().dependencies("api");
    let conds: Vec<String> = deps.iter().map(|d| d.condition.to_string()).collect();
    assert_eq!(conds, ["healthy", "started", "completed_successfully"]);
}

#[test]
fn log_ready_needs_a_valid_pattern() {
    let e = errors(
        "services:\n  a:\n    binary: a\n  b:\n    binary: b\n    dependencies:\n      a: {condition: log_ready}\n  c:\n    binary: c\n    dependencies:\n      a: {condition: log_ready, pattern: \"(unclosed\"}\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].2.contains("needs a `pattern`"));
    assert!(e[1].2.contains("invalid regex"));
    assert_eq!(e[1].0, 11);
}

#[test]
fn undefined_networks_and_nodes() {
    let e = errors(
        "networks:\n  lan1:\n    type: lan\n    subnet: 10.0.0.0/24\n    nodes:\n      - {host: 10.0.0.5, name: box, ssh_user: u}\nservices:\n  a:\n    binary: a\n    network: lan2\n  b:\n    type: remote\n    network: lan1\n    host: bax\n    binary: b\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (10, 14));
    assert!(e[0].2.contains("`lan2`, which is not defined"));
    assert_eq!(e[0].3, "did you mean `lan1`?");
    assert_eq!(e[1].0, 14);
    assert!(
        e[1].2
            .contains("host `bax` is not a node of network `lan1`")
    );
    assert_eq!(e[1].3, "did you mean `box`?");
}

#[test]
fn reference_to_unknown_service() {
    let (line, col, msg, hint) = one_error(
        "services:\n  db:\n    binary: db\n  api:\n    binary: api\n    env:\n      URL: http://${dbx.ip}:${db.port}\n",
    );
    assert_eq!((line, col), (7, 12));
    assert!(msg.contains("`${dbx.ip}` names service `dbx`"), "{msg}");
    assert_eq!(hint, "did you mean `db`?");
}

#[test]
fn references_only_in_template_fields() {
    let (line, _, msg, _) =
        one_error("services:\n  db:\n    binary: db\n  api:\n    binary: /bin/${db.host}\n");
    assert_eq!(line, 5);
    assert!(msg.contains("cannot hold a service reference"), "{msg}");
}

#[test]
fn duplicate_host_ports() {
    let e = errors(
        "services:\n  a:\n    image: x\n    ports: [\"8080:80\"]\n  b:\n    image: y\n    ports:\n      - 9000:90\n      - \"8080:81\"\n  c:\n    binary: c\n    ports: [9000]\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(e[0].0, 9);
    assert!(
        e[0].2.contains("8080") && e[0].2.contains("service `a`"),
        "{e:#?}"
    );
    assert!(e[1].2.contains("9000"), "{e:#?}");
}

#[test]
fn bad_durations_and_wrong_types_all_at_once() {
    let e = errors(
        "services:\n  a:\n    binary: a\n    startup_timeout: 5 minutes\n  b:\n    binary: [b]\n  c:\n    binary: c\n    health_check: {tcp: 80, interval: -1}\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (4, 22));
    assert!(e[0].2.contains("invalid duration"), "{e:#?}");
    assert_eq!(e[1].0, 6);
    assert!(e[1].2.contains("expected a string, found a list"), "{e:#?}");
    assert_eq!(e[2].0, 9);
    assert!(e[2].2.contains("negative"), "{e:#?}");
}

#[test]
fn unknown_keys_are_errors_with_suggestions() {
    let e = errors(
        "servces: {}\nservices:\n  a:\n    binary: a\n    helth_check: {tcp: 1}\n    x-note: ignored\n    restart:\n      mode: always\n      backof: {}\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (1, 1));
    assert_eq!(e[0].3, "did you mean `services`?");
    assert_eq!((e[1].0, e[1].1), (5, 5));
    assert_eq!(e[1].3, "did you mean `health_check`?");
    assert_eq!(e[2].0, 9);
    assert_eq!(e[2].3, "did you mean `backoff`?");
}

#[test]
fn keys_of_another_service_type() {
    let (line, col, msg, hint) =
        one_error("services:\n  a:\n    type: process\n    binary: a\n    image: nginx\n");
    assert_eq!((line, col), (5, 5));
    assert_eq!(msg, "`image` is not a key of a process service");
    assert_eq!(hint, "remove it, or use `type: docker`");
}

#[test]
fn missing_required_fields() {
    let e = errors(
        "networks:\n  l:\n    type: lan\nservices:\n  a:\n    type: docker\n  r:\n    type: remote\n    binary: x\n",
    );
    let msgs: Vec<&str> = e.iter().map(|e| e.2.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("needs a `subnet`")),
        "{e:#?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("needs `image` or `build`")),
        "{e:#?}"
    );
    assert!(msgs.iter().any(|m| m.contains("needs `host`")), "{e:#?}");
}

#[test]
fn invalid_yaml_is_located() {
    let e = errors("services:\n  a:\n    binary: [a\n  b: 1\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].2.starts_with("invalid YAML"), "{e:#?}");
    assert!(e[0].0 >= 3, "{e:#?}");
}

#[test]
fn diagnostics_render_with_caret() {
    let d = load(
        "services:\n  db:\n    binary: db\n  api:\n    binary: api\n    dependencies: [dbb]\n",
    )
    .unwrap_err();
    let text = d.to_string();
    let expected = "error: service `api` depends on `dbb`, which is not defined\n \
                    --> services.yaml:6:20\n  \
                    |\n\
                    6 |     dependencies: [dbb]\n  \
                    |                    ^^^\n  \
                    = hint: did you mean `db`?\n\
                    \n\
                    1 error\n";
    assert_eq!(text, expected);
    assert!(d.render(true).contains('\x1b'));
}

#[test]
fn unset_variable_is_a_warning_by_default_and_an_error_when_strict() {
    let yaml = "services:\n  a:\n    binary: a\n    env:\n      X: ${NOT_SET_ANYWHERE}\n      Y: a-$NOT_SET_EITHER-b\n";
    // Default, as docker compose: a warning each, and an empty string.
    let loaded = load(yaml).expect("unset variables are warnings by default");
    let warnings: Vec<(u32, u32, &str)> = loaded
        .warnings
        .items
        .iter()
        .map(|w| {
            let loc = w.location.as_ref().expect("warnings are located");
            (loc.line, loc.column, w.message.as_str())
        })
        .collect();
    assert_eq!(
        warnings,
        [
            (
                5,
                10,
                "variable `NOT_SET_ANYWHERE` is not set; using an empty string"
            ),
            (
                6,
                10,
                "variable `NOT_SET_EITHER` is not set; using an empty string"
            ),
        ]
    );
    assert_eq!(loaded.project.services["a"].env["X"], "");
    assert_eq!(loaded.project.services["a"].env["Y"], "a--b");

    // Strict by option.
    let strict = LoadOptions {
        strict_env: true,
        ..opts()
    };
    let e = from_sources(&[("services.yaml", yaml)], &strict).unwrap_err();
    let msgs: Vec<&str> = e.errors().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "variable `NOT_SET_ANYWHERE` is not set",
            "variable `NOT_SET_EITHER` is not set"
        ]
    );

    // Strict by HARNESS_STRICT_ENV among the variables (what the daemon gets from its client).
    for on in ["1", "true", "YES", "on"] {
        let by_var = LoadOptions::default().with_env([("HARNESS_STRICT_ENV", on)]);
        let e = from_sources(&[("services.yaml", yaml)], &by_var).unwrap_err();
        assert_eq!(e.errors().count(), 2, "HARNESS_STRICT_ENV={on}");
    }
    for off in ["0", "", "false", "no"] {
        let by_var = LoadOptions::default().with_env([("HARNESS_STRICT_ENV", off)]);
        let loaded = from_sources(&[("services.yaml", yaml)], &by_var)
            .unwrap_or_else(|e| panic!("HARNESS_STRICT_ENV={off:?} is not strict: {e}"));
        assert_eq!(loaded.warnings.items.len(), 2);
    }

    // `${X:?message}` is an error either way.
    let (_, _, msg, _) = one_error(
        "services:\n  a:\n    binary: a\n    env:\n      X: ${NOPE:?set NOPE to the token}\n",
    );
    assert!(msg.contains("set NOPE to the token"), "{msg}");
}

#[test]
fn empty_and_comment_only_files_are_located_errors() {
    for (text, msg) in [
        ("", "the file is empty"),
        ("  \n\n\t\n", "the file is empty"),
        (
            "# nothing here yet\n\n# still nothing\n",
            "the file holds no configuration (only comments or a null document)",
        ),
        (
            "---\n...\n",
            "the file holds no configuration (only comments or a null document)",
        ),
    ] {
        assert_one_error_at(text, (1, 1), msg);
    }
}

/// Asserts that `text` has exactly one error, `msg` at (line, column) `at`.
fn assert_one_error_at(text: &str, at: (u32, u32), msg: &str) {
    let (line, col, m, _) = one_error(text);
    assert_eq!((line, col, m.as_str()), (at.0, at.1, msg), "for {text:?}");
}

#[test]
fn a_project_without_services_is_a_located_error() {
    for (text, at) in [
        ("name: shop\nservices: {}\n", (2, 1)),
        ("name: shop\nservices:\n", (2, 1)),
        ("name: shop\ndescription: nothing\n", (1, 1)),
        ("# a comment\nname: shop\nnetworks: {}\n", (2, 1)),
    ] {
        assert_one_error_at(text, at, "the project has no services");
    }
    // Services in an override file are enough.
    let loaded = from_sources(
        &[
            ("services.yaml", "name: shop\n"),
            ("override.yaml", "services:\n  a:\n    binary: a\n"),
        ],
        &opts(),
    )
    .expect("the merged project has a service");
    assert_eq!(loaded.project.services.len(), 1);
}

#[test]
fn a_nul_byte_is_a_located_error() {
    for (text, at) in [
        ("\0", (1, 1)),
        (
            "services:\n  a:\n    binary: a\0\n  b:\n    binary: b\n",
            (3, 14),
        ),
        (
            "name: caf\u{e9}\0\nservices:\n  a:\n    binary: a\n",
            (1, 11),
        ),
        ("services:\n  a:\n    binary: a\n\0\0\0", (4, 1)),
    ] {
        assert_one_error_at(text, at, "the file holds a NUL byte");
    }
}

#[test]
fn interpolation_types_and_escapes() {
    let p = load(
        "services:\n  a:\n    binary: a\n    args: [\"$$HOME\", \"${EMPTY:-dflt}\", \"${HOME_PORT}\"]\n    health_check:\n      tcp: ${HOME_PORT}\n    env:\n      P: ${HOME_PORT}\n",
    )
    .unwrap()
    .project;
    let a = &p.services["a"];
    let harness_config::Target::Process { args, .. } = &a.target else {
        panic!()
    };
    // Templates keep `$$`; expanding them yields the literal.
    assert_eq!(args[0], "$$HOME");
    assert_eq!(
        harness_config::expand_refs(&args[0], |_| None).unwrap(),
        "$HOME"
    );
    assert_eq!(args[1], "dflt");
    assert_eq!(args[2], "8080");
    assert_eq!(a.primary_port(), Some(8080));
    assert_eq!(a.env["P"], "8080");
}

#[test]
fn network_may_be_left_out_when_unambiguous() {
    let p = load(
        "networks:\n  home:\n    type: local\n  lan:\n    type: lan\n    subnet: 10.1.0.0/16\n    nodes: [{host: 10.1.0.9, name: nas, ssh_user: me}]\nservices:\n  a:\n    binary: a\n  r:\n    type: remote\n    host: nas\n    binary: r\n",
    )
    .unwrap()
    .project;
    assert_eq!(p.services["a"].network.as_deref(), Some("home"));
    assert_eq!(p.services["r"].network.as_deref(), Some("lan"));
    let p = load("services:\n  a:\n    binary: a\n").unwrap().project;
    assert_eq!(p.services["a"].network, None);
}

#[test]
fn job_with_restart_always_is_an_error() {
    let (_, _, msg, _) =
        one_error("services:\n  j:\n    binary: j\n    job: true\n    restart: always\n");
    assert!(msg.contains("never complete"), "{msg}");
}

#[test]
fn start_interval_must_be_positive() {
    let e = errors(
        "services:\n  a:\n    binary: a\n    readiness: {tcp: 1, start_interval: 0}\n  b:\n    binary: b\n    liveness:\n      tcp: 2\n      start_interval: -1\n  c:\n    binary: c\n    health_check: {tcp: 3, start_interval: 0ms}\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (4, 41), "{e:#?}");
    assert!(e[0].2.contains("start interval cannot be 0"), "{e:#?}");
    assert!(e[0].3.contains("start_interval"), "{e:#?}");
    assert_eq!((e[1].0, e[1].1), (9, 23), "{e:#?}");
    assert!(e[1].2.contains("negative"), "{e:#?}");
    assert_eq!(e[2].0, 12, "{e:#?}");
    assert!(e[2].2.contains("start interval cannot be 0"), "{e:#?}");
}

#[test]
fn start_interval_defaults_to_the_shorter_of_half_a_second_and_the_period() {
    let loaded = load(
        "settings: {health_check_interval: 4s}\nservices:\n  a:\n    binary: a\n    readiness: {tcp: 1, start_interval: 1.5s, interval: 30s}\n  b:\n    binary: b\n    readiness: {tcp: 2}\n",
    )
    .unwrap();
    let ready = |s: &str| loaded.project.services[s].readiness.clone().unwrap();
    let a = ready("a");
    assert_eq!(
        a.start_interval,
        Some(std::time::Duration::from_millis(1500))
    );
    assert_eq!(a.period, std::time::Duration::from_secs(30));
    assert_eq!(
        a.period_until_passed(),
        std::time::Duration::from_millis(1500)
    );
    let b = ready("b");
    assert_eq!(b.start_interval, None);
    assert_eq!(b.period, std::time::Duration::from_secs(4));
    assert_eq!(
        b.period_until_passed(),
        harness_config::model::DEFAULT_START_INTERVAL
    );
}

#[test]
fn probes_need_exactly_one_check() {
    let e = errors(
        "services:\n  a:\n    binary: a\n    readiness: {period: 1s}\n  b:\n    binary: b\n    liveness: {tcp: 1, http: \"http://x\"}\n  c:\n    binary: c\n    readiness: {http: \"ftp://x\"}\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].2.contains("does not say what to check"));
    assert!(e[1].2.contains("more than one check"));
    assert!(e[2].2.contains("not an http(s) URL"));
}

#[test]
fn errors_in_several_files_name_their_file() {
    let d = from_sources(
        &[
            ("base.yaml", "services:\n  a:\n    binary: a\n"),
            (
                "override.yaml",
                "services:\n  a:\n    dependencies: [zzz]\n",
            ),
        ],
        &opts(),
    )
    .unwrap_err();
    let e = d.errors().next().unwrap();
    assert_eq!(
        e.location.as_ref().unwrap().to_string(),
        "override.yaml:3:20"
    );
}

#[test]
fn type_errors_use_yaml_words() {
    let e = errors(
        "services:\n  a: 5\n  b:\n    binary: b\n    success_exit_codes: [x]\n  c:\n    binary: c\n    args: {a: 1}\n",
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!(e[0].2, "expected a map of keys, found integer `5`");
    assert_eq!(e[1].2, "expected a whole number, found string \"x\"");
    assert_eq!(e[2].2, "expected a list, found a map");
}

#[test]
fn cycles_are_reported_next_to_other_errors() {
    let e = errors(
        "services:\n  a:\n    binary: a\n    startup_timeout: 10 sec\n  b:\n    binary: b\n    dependencies: [c]\n  c:\n    binary: c\n    dependencies: [b]\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        e[0].2,
        "invalid duration `10 sec`: unknown unit (use ms, s, m, h or d)"
    );
    assert!(e[0].3.starts_with("write e.g. `10`"), "{e:#?}");
    assert_eq!(e[1].2, "dependency cycle: b -> c -> b");
    assert_eq!(e[1].0, 7);
}

#[test]
fn errors_inside_one_service_do_not_hide_its_other_errors() {
    let e = errors(
        "services:\n  db:\n    image: postgres\n  api:\n    binary: ./api\n    helth_check: {tcp: 80}\n    env:\n      URL: http://${dbb.host}\n    dependencies:\n      db: {condition: healthy}\n      cache: {}\n  web:\n    binary: w\n    dependencies:\n      api: {condition: healthy}\n",
    );
    let msgs: Vec<&str> = e.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "unknown key `helth_check`",
            "`${dbb.host}` names service `dbb`, which is not defined",
            "`db` has no health check, so `healthy` can never hold",
            "service `api` depends on `cache`, which is not defined",
        ],
        "{e:#?}"
    );
}

#[test]
fn a_broken_probe_is_reported_once() {
    let e = errors("services:\n  a:\n    binary: a\n    health_check:\n      tcp: {port: http}\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].0, 5);
}

#[test]
fn port_reference_to_a_portless_service_warns() {
    let loaded = load(
        "services:\n  db:\n    binary: db\n  api:\n    binary: api\n    args: [\"--db\", \"${db.host}:${db.port}\"]\n",
    )
    .unwrap();
    let w = &loaded.warnings.items;
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(w[0].message, "`${db.port}`: service `db` declares no port");
    assert_eq!(w[0].location.as_ref().unwrap().line, 6);
}

#[test]
fn an_empty_file_on_disk_is_reported_at_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    std::fs::write(&file, "").unwrap();
    let e = harness_config::load(&LoadOptions::files([&file])).unwrap_err();
    let d = e.errors().next().expect("one error");
    let loc = d.location.as_ref().expect("located");
    assert_eq!(
        (loc.file.as_path(), loc.line, loc.column),
        (file.as_path(), 1, 1)
    );
    assert_eq!(d.message, "the file is empty");
    assert!(
        e.render(false).contains(&format!("{}:1:1", file.display())),
        "{}",
        e.render(false)
    );
}

#[test]
fn referenced_variables_are_listed_and_others_are_not() {
    let opts = LoadOptions::default().with_env([
        ("PORT", "8080"),
        ("SECRET_TOKEN", "hunter2"),
        ("HARNESS_STRICT_ENV", "0"),
    ]);
    let yaml = "name: x\nservices:\n  api:\n    type: process\n    binary: sh\n    \
                args: [-c, 'echo ${PORT} $$LITERAL ${MISSING:-d}']\n";
    let loaded = from_sources(&[("services.yaml", yaml)], &opts).unwrap();
    let names: Vec<&str> = loaded.referenced_vars.iter().map(String::as_str).collect();
    assert_eq!(names, ["HARNESS_STRICT_ENV", "MISSING", "PORT"]);
}
