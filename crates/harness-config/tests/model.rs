//! What loaded files mean: the original format, merges, env files, defaults,
//! resolved output, and loading from async code under smol and tokio.

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness_config::{
    Check, Condition, LoadOptions, Network, Project, RestartMode, Target, from_sources, load,
    load_async,
};
use harness_core::{ServiceKind, Signal};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn no_env() -> LoadOptions {
    LoadOptions::default().with_env(Vec::<(String, String)>::new())
}

fn load_files(files: &[PathBuf]) -> Project {
    let opts = LoadOptions {
        files: files.to_vec(),
        ..no_env()
    };
    match load(&opts) {
        Ok(l) => l.project,
        Err(d) => panic!("{d}"),
    }
}

#[test]
fn original_format_means_the_same() {
    let p = load_files(&[examples().join("original-format.yaml")]);
    assert_eq!(p.name.as_str(), "graph-network");
    assert_eq!(p.version.as_deref(), Some("1.0"));
    assert_eq!(p.settings.startup_timeout, Some(Duration::from_secs(60)));
    assert_eq!(
        p.settings.health_check_interval,
        Some(Duration::from_secs(10))
    );

    assert!(matches!(
        p.networks["local"],
        Network::Local { subnet: None }
    ));
    let Network::Lan { subnet, nodes } = &p.networks["office"] else {
        panic!("office is a lan")
    };
    assert_eq!(subnet, "192.168.1.0/24");
    assert_eq!(nodes[0].name.as_deref(), Some("build-box"));
    assert_eq!(nodes[0].ssh_user, "deploy");
    let Network::Wireguard {
        config_path, nodes, ..
    } = &p.networks["mesh"]
    else {
        panic!("mesh is wireguard")
    };
    assert_eq!(
        config_path.as_deref(),
        Some(Path::new("/etc/wireguard/wg0.conf"))
    );
    assert!(nodes[0].package_deploy);

    let db = &p.services["graphdb"];
    assert_eq!(db.kind(), ServiceKind::Docker);
    let Target::Docker(d) = &db.target else {
        panic!()
    };
    assert_eq!(d.image, "neo4j:5");
    assert_eq!(db.ports.len(), 2);
    assert_eq!(
        (db.ports[1].host, db.ports[1].container),
        (Some(7687), 7687)
    );
    assert_eq!(db.primary_port(), Some(7474));
    assert!(
        d.volumes[0].ends_with("examples/data/graphdb:/data"),
        "{:?}",
        d.volumes
    );
    assert_eq!(db.env["NEO4J_AUTH"], "none");
    let probe = db.readiness.as_ref().unwrap();
    assert!(matches!(&probe.check, Check::Http { url, .. } if url == "http://localhost:7474/"));
    assert_eq!(probe.period, Duration::from_secs(5));
    assert_eq!(probe.failure_threshold, 12);
    assert_eq!(probe.timeout, Duration::from_secs(3));
    assert_eq!(probe.initial_delay, Duration::from_secs(10));
    assert_eq!(
        db.liveness, db.readiness,
        "health_check is both readiness and liveness"
    );
    assert_eq!(
        db.shutdown.timeout,
        Duration::from_secs(15),
        "settings default"
    );

    let api = &p.services["api"];
    assert_eq!(api.kind(), ServiceKind::Process);
    assert_eq!(
        api.user.as_deref(),
        Some("harness"),
        "USER unset: the default"
    );
    assert_eq!(api.startup_timeout, Some(Duration::from_secs(30)));
    assert_eq!(api.shutdown.timeout, Duration::from_secs(5));
    assert_eq!(api.shutdown.signal, Signal::TERM);
    let Check::Tcp { port, host } = &api.readiness.as_ref().unwrap().check else {
        panic!()
    };
    assert_eq!((*port, host.as_deref()), (8080, None));
    assert_eq!(
        api.readiness.as_ref().unwrap().timeout,
        Duration::from_secs(2)
    );
    assert_eq!(api.env["GRAPH_URL"], "http://${graphdb.ip}:${graphdb.port}");
    assert_eq!(api.referenced_services().len(), 1);
    assert_eq!(api.dependencies[0].condition, Condition::Healthy);

    let indexer = &p.services["indexer"];
    assert_eq!(indexer.kind(), ServiceKind::Remote);
    assert_eq!(indexer.host(), Some("192.168.1.20"));
    assert_eq!(indexer.network.as_deref(), Some("office"));
    assert!(matches!(&indexer.readiness.as_ref().unwrap().check,
        Check::Exec { command, args } if command == "/opt/indexer/bin/indexer" && args == &["--check"]));

    let edge = &p.services["edge-agent"];
    let Target::Package {
        package,
        version,
        install_path,
        ..
    } = &edge.target
    else {
        panic!()
    };
    assert_eq!(package, "./dist/edge-agent.tar.gz");
    assert_eq!(version.as_deref(), Some("1.4.2"));
    assert_eq!(install_path.as_deref(), Some(Path::new("/opt/edge-agent")));

    let order: Vec<&str> = p.graph().start_order().iter().map(|s| s.as_str()).collect();
    assert_eq!(order, ["graphdb", "api", "edge-agent", "indexer"]);
    assert_eq!(p.graph().stop_order().first().unwrap().as_str(), "indexer");
}

#[test]
fn one_line_summary() {
    let opts = LoadOptions {
        files: vec![examples().join("original-format.yaml")],
        ..no_env()
    };
    let loaded = load(&opts).unwrap();
    assert_eq!(
        loaded.summary(),
        "project graph-network: 4 services (1 docker, 1 package, 1 process, 1 remote), 3 networks, no warnings"
    );
}

#[test]
fn new_features_are_modelled() {
    let p = load_files(&[examples().join("web-stack.yaml")]);
    let pg = &p.services["postgres"];
    assert_eq!(pg.shutdown.signal, Signal::INT);
    assert_eq!(pg.shutdown.timeout, Duration::from_secs(30));
    assert_eq!(pg.env["LOG_FORMAT"], "json", "merge key from an x- anchor");
    assert_eq!(pg.ports[0].host, Some(5432));
    let Target::Docker(d) = &pg.target else {
        panic!()
    };
    assert_eq!(d.resources.cpus, Some(1.5));
    assert_eq!(d.resources.memory, Some(1 << 30));
    let pg_ready = pg.readiness.as_ref().unwrap();
    assert_eq!(pg_ready.period, Duration::from_secs(1));
    assert_eq!(pg_ready.start_interval, None);
    assert_eq!(
        pg_ready.period_until_passed(),
        Duration::from_millis(500),
        "no start_interval: every 500 ms until the first pass, the period after"
    );
    let mut quick = pg_ready.clone();
    quick.period = Duration::from_millis(200);
    assert_eq!(
        quick.period_until_passed(),
        Duration::from_millis(200),
        "a period shorter than the default start interval is kept until the first pass too"
    );
    assert!(pg.liveness.is_none());

    let migrate = &p.services["migrate"];
    assert!(migrate.job);
    assert_eq!(migrate.restart.mode, RestartMode::OnFailure);
    assert!(migrate.is_success_code(3));

    let api = &p.services["api"];
    let Target::Docker(d) = &api.target else {
        panic!()
    };
    assert_eq!(d.image, "harness-web-stack-api:latest");
    let build = d.build.as_ref().unwrap();
    assert!(build.context.ends_with("examples/api"));
    assert_eq!(build.args["RUST_VERSION"], "1.90");
    assert!(d.security.read_only && d.security.no_new_privileges);
    assert_eq!(d.security.cap_drop, ["ALL"]);
    assert_eq!(api.restart.mode, RestartMode::Always);
    assert_eq!(api.restart.max_restarts, Some(10));
    assert_eq!(api.restart.backoff.initial, Duration::from_millis(500));
    assert_eq!(api.restart.backoff.reset_after, Duration::from_secs(120));
    let api_ready = api.readiness.as_ref().unwrap();
    assert!(matches!(
        api_ready.check,
        Check::Http {
            expected_status: Some(200),
            ..
        }
    ));
    assert_eq!(api_ready.start_interval, Some(Duration::from_millis(250)));
    assert_eq!(api_ready.period_until_passed(), Duration::from_millis(250));
    assert_eq!(api_ready.period, Duration::from_secs(2));
    let conds: Vec<String> = p
        .graph()
        .dependencies("api")
        .iter()
        .map(|d| format!("{}={}", d.service, d.condition))
        .collect();
    assert_eq!(
        conds,
        ["postgres=healthy", "migrate=completed_successfully"]
    );
    assert!(!api.env_file[0].required);

    let worker = &p.services["worker"];
    assert_eq!(worker.env["WORKER_THREADS"], "4");
    assert_eq!(worker.env["VERBOSE"], "true");
    let Condition::LogReady { pattern } = &worker.dependencies[0].condition else {
        panic!()
    };
    assert!(pattern.is_match("api listening on 0.0.0.0:8080"));
    assert!(matches!(
        worker.liveness.as_ref().unwrap().check,
        Check::LogLine { .. }
    ));
    assert!(worker.working_dir.as_ref().unwrap().is_absolute());
}

#[test]
fn override_files_merge() {
    let p = load_files(&[
        examples().join("web-stack.yaml"),
        examples().join("web-stack.override.yaml"),
    ]);
    assert_eq!(p.name.as_str(), "web-stack-dev", "scalars replace");
    let api = &p.services["api"];
    assert_eq!(api.env["RUST_LOG"], "debug", "maps merge by key");
    assert_eq!(api.env["LOG_FORMAT"], "json", "base keys stay");
    assert_eq!(api.ports.len(), 2, "lists append");
    assert_eq!(api.env_file.len(), 2);
    let Target::Docker(d) = &api.target else {
        panic!()
    };
    assert!(!d.security.read_only, "a boolean can be set back to false");
    assert!(d.security.no_new_privileges);
    assert_eq!(p.services["worker"].env["WORKER_THREADS"], "1");
    assert_eq!(p.files.len(), 2);
}

#[test]
fn dependency_lists_merge_and_conditions_override() {
    let p = from_sources(
        &[
            (
                "a.yaml",
                "services:\n  db:\n    binary: db\n    health_check: {tcp: 1}\n  c:\n    binary: c\n  api:\n    binary: api\n    dependencies: [db]\n",
            ),
            (
                "b.yaml",
                "services:\n  api:\n    dependencies:\n      db: {condition: started}\n      c: {}\n",
            ),
        ],
        &no_env(),
    )
    .unwrap()
    .project;
    let conds: Vec<String> = p
        .graph()
        .dependencies("api")
        .iter()
        .map(|d| format!("{}={}", d.service, d.condition))
        .collect();
    assert_eq!(conds, ["db=started", "c=started"]);
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let d = tempfile::Builder::new()
            .prefix("harness-config-test")
            .tempdir()
            .unwrap();
        TempDir(d.keep())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn files_env_files_and_dotenv() {
    let dir = TempDir::new();
    let d = &dir.0;
    std::fs::write(
        d.join(".env"),
        "# defaults\nAPP_PORT=7000\nexport NAME=from-dotenv\n",
    )
    .unwrap();
    std::fs::write(
        d.join("app.env"),
        "A=1\nQUOTED=\"x y\"\nLITERAL='$HOME'\nB=2 # comment\n",
    )
    .unwrap();
    std::fs::write(
        d.join("services.yaml"),
        "name: ${NAME}\nservices:\n  app:\n    binary: ./app\n    working_dir: sub\n    env_file: [app.env, {path: missing.env, required: false}]\n    env:\n      B: override\n      PORT: ${APP_PORT}\n    ports: [\"${APP_PORT}\"]\n",
    )
    .unwrap();
    let opts = LoadOptions {
        project_dir: Some(d.clone()),
        ..LoadOptions::default().with_env([("APP_PORT", "7100")])
    };
    let p = load(&opts).unwrap().project;
    assert_eq!(p.name.as_str(), "from-dotenv");
    let app = &p.services["app"];
    assert_eq!(app.env["A"], "1");
    assert_eq!(app.env["QUOTED"], "x y");
    assert_eq!(
        app.env["LITERAL"], "$$HOME",
        "a literal `$` is escaped in templates"
    );
    assert_eq!(app.env["B"], "override");
    assert_eq!(app.env["PORT"], "7100", "the environment wins over .env");
    assert_eq!(app.primary_port(), Some(7100));
    assert_eq!(app.working_dir.as_deref(), Some(d.join("sub").as_path()));
    assert_eq!(app.env_file.len(), 2);
    let Target::Process { binary, .. } = &app.target else {
        panic!()
    };
    assert_eq!(binary, "./app");
}

#[test]
fn missing_files_and_env_files_are_reported() {
    let dir = TempDir::new();
    let d = &dir.0;
    let opts = LoadOptions {
        files: vec![d.join("nope.yaml")],
        ..no_env()
    };
    let err = load(&opts).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot read"), "{text}");
    assert!(text.contains("nope.yaml"), "{text}");

    std::fs::write(
        d.join("services.yaml"),
        "services:\n  app:\n    binary: app\n    env_file: gone.env\n",
    )
    .unwrap();
    let opts = LoadOptions {
        project_dir: Some(d.clone()),
        ..no_env()
    };
    let err = load(&opts).unwrap_err();
    let e = err.errors().next().unwrap();
    assert!(e.message.contains("gone.env"), "{err}");
    assert_eq!(e.location.as_ref().unwrap().line, 4);
}

#[test]
fn project_name_from_directory_and_options() {
    let p = from_sources(
        &[("s.yaml", "services:\n  a:\n    binary: a\n")],
        &LoadOptions {
            project_dir: Some(PathBuf::from("/srv/My Shop")),
            ..no_env()
        },
    )
    .unwrap()
    .project;
    assert_eq!(p.name.as_str(), "my-shop");
    let p = from_sources(
        &[("s.yaml", "name: x\nservices:\n  a:\n    binary: a\n")],
        &LoadOptions {
            project_name: Some("override".into()),
            ..no_env()
        },
    )
    .unwrap()
    .project;
    assert_eq!(p.name.as_str(), "override");
}

#[test]
fn resolved_model_round_trips() {
    let p = load_files(&[examples().join("web-stack.yaml")]);
    let json = p.to_json();
    let back: Project = serde_json::from_str(&json).unwrap();
    assert_eq!(back.services, p.services);
    assert_eq!(back.graph().start_order(), p.graph().start_order());
    let yaml = p.to_yaml();
    assert!(yaml.contains("web-stack"), "{yaml}");
    let from_yaml: Project = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(from_yaml.services, p.services);
    assert_eq!(
        p.to_json_value()["services"]["api"]["restart"]["mode"],
        "always"
    );
}

#[test]
fn x_keys_are_ignored_everywhere() {
    let p = from_sources(
        &[(
            "s.yaml",
            "x-top: {anything: [1, 2]}\nservices:\n  a:\n    x-owner: team-a\n    binary: a\n    restart:\n      x-why: flaky\n      mode: always\n",
        )],
        &no_env(),
    )
    .unwrap()
    .project;
    assert_eq!(p.services["a"].restart.mode, RestartMode::Always);
}

fn corpus_opts() -> LoadOptions {
    LoadOptions {
        files: vec![examples().join("jobs-and-logs.yaml")],
        ..no_env()
    }
}

#[test]
fn loads_under_smol() {
    let loaded = smol::block_on(load_async(corpus_opts())).unwrap();
    assert_eq!(loaded.project.name.as_str(), "pipeline");
    let order: Vec<&str> = loaded
        .project
        .graph()
        .start_order()
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(order, ["fetch", "transform", "report"]);
}

#[tokio::test]
async fn loads_under_tokio() {
    let loaded = load_async(corpus_opts()).await.unwrap();
    let report = &loaded.project.services["report"];
    assert_eq!(report.restart.mode, RestartMode::No);
    assert_eq!(report.shutdown.timeout, Duration::from_secs(2));
    let Target::Process { args, .. } = &report.target else {
        panic!()
    };
    assert_eq!(
        harness_config::expand_refs(&args[1], |_| None).unwrap(),
        "echo report for ${HOSTNAME:-here}; exec sleep 3600"
    );
}

#[test]
fn resolved_dependencies_read_like_the_file() {
    let p = load_files(&[examples().join("web-stack.yaml")]);
    let v = p.to_json_value();
    assert_eq!(
        v["services"]["worker"]["dependencies"][0],
        serde_json::json!({"service": "api", "condition": "log_ready", "pattern": "listening on .*:8080"})
    );
    assert_eq!(
        v["services"]["api"]["dependencies"][0],
        serde_json::json!({"service": "postgres", "condition": "healthy"})
    );
}

#[test]
fn default_file_is_found_in_the_project_dir() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("services.yml"),
        "name: found\nservices:\n  a:\n    binary: a\n",
    )
    .unwrap();
    let opts = LoadOptions {
        project_dir: Some(dir.0.clone()),
        ..no_env()
    };
    let p = load(&opts).unwrap().project;
    assert_eq!(p.name.as_str(), "found");
    assert_eq!(p.files, [dir.0.join("services.yml")]);
}
