//! `host:` on a docker service places its container on a node's engine.

use harness_config::{Diagnostics, LoadOptions, Loaded, Target, from_sources};

fn load(yaml: &str) -> Result<Loaded, Diagnostics> {
    from_sources(&[("services.yaml", yaml)], &LoadOptions::default())
}

const NETWORKS: &str = "networks:\n  home:\n    type: local\n  lan:\n    type: lan\n    subnet: 10.1.0.0/16\n    nodes: [{host: 10.1.0.9, name: nas, ssh_user: me}]\n";

#[test]
fn a_docker_service_with_a_host_runs_on_that_node() {
    let yaml = format!(
        "{NETWORKS}services:\n  db:\n    image: postgres:16\n    host: nas\n    ports: [5432]\n  cache:\n    image: redis:7\n    ports: [5432]\n"
    );
    let p = load(&yaml).unwrap().project;
    let db = &p.services["db"];
    assert_eq!(db.host(), Some("nas"));
    let Target::Docker(d) = &db.target else {
        panic!("db is a docker service: {db:?}")
    };
    assert_eq!(d.host.as_deref(), Some("nas"));
    assert_eq!(db.network.as_deref(), Some("lan"));
    // Without a host: this machine's engine, on the local network. The same
    // host port on two machines is no conflict.
    let cache = &p.services["cache"];
    assert_eq!(cache.host(), None);
    assert_eq!(cache.network.as_deref(), Some("home"));
}

#[test]
fn the_host_of_a_docker_service_must_be_a_node() {
    let yaml = format!("{NETWORKS}services:\n  db:\n    image: postgres:16\n    host: nsa\n");
    let d = load(&yaml).unwrap_err();
    let e: Vec<_> = d.errors().collect();
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].message.contains("host `nsa` is not a node"),
        "{:?}",
        e[0]
    );
}
