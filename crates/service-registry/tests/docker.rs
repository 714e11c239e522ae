//! Resolution against the real Docker engine: the endpoints `resolve` gives
//! are connected to, from this host and from inside containers.
//!
//! Skips with a printed reason when Docker is missing, unless
//! `HARNESS_REQUIRE_DOCKER=1`, where a missing engine fails the test.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use harness_core::{ServiceKind, ServiceName};
use service_registry::{
    HostNetwork, Location, Network, NetworkKind, NetworkTopology, PublishedPort, ServiceEntry,
    resolve,
};

const IMAGE: &str = "harness-test/busybox:latest";
const DEADLINE: Duration = Duration::from_secs(30);

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `true` if the test can run; panics under `HARNESS_REQUIRE_DOCKER=1` when it cannot.
fn docker_available() -> bool {
    let why = match docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE]) {
        Ok(_) => return true,
        Err(e) => e,
    };
    let msg = format!(
        "skipping: Docker or the image {IMAGE} is not available ({why}); build it with docker-test-env/build.sh"
    );
    if std::env::var("HARNESS_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("HARNESS_REQUIRE_DOCKER=1 but {msg}");
    }
    eprintln!("{msg}");
    false
}

/// Removes the containers and the network it names, also when the test fails.
struct Cleanup {
    network: String,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

fn container_ip(name: &str) -> IpAddr {
    docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])
    .unwrap()
    .parse()
    .unwrap()
}

/// Sends an HTTP request from inside `container` to `host:port`; true on an HTTP answer.
fn http_from_container(container: &str, host: &str, port: u16) -> bool {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port} | head -n 1");
    docker(&["exec", container, "sh", "-c", &script]).is_ok_and(|out| out.starts_with("HTTP/1"))
}

fn http_from_here(ip: IpAddr, port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1")
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn resolved_endpoints_are_reachable_on_a_real_docker_network() {
    if !docker_available() {
        return;
    }
    let tag = format!("hreg-{}-{}", std::process::id(), fastrand_suffix());
    let mut cleanup = Cleanup {
        network: tag.clone(),
        containers: Vec::new(),
    };
    docker(&["network", "create", &tag]).unwrap();
    let ipam = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        &tag,
    ])
    .unwrap();
    let (subnet, gateway) = ipam.split_once(' ').expect("subnet and gateway");
    let gateway: IpAddr = gateway.parse().unwrap();

    // This host's real addresses include the bridge's gateway, in the network's subnet.
    let host = HostNetwork::read().unwrap();
    let topology = NetworkTopology::new(host).with_network(Network {
        name: tag.clone(),
        kind: NetworkKind::Docker {
            subnet: Some(subnet.parse().unwrap()),
            gateway: Some(gateway),
        },
    });
    assert_eq!(
        topology.host_address_in(&tag),
        Some(gateway),
        "{topology:#?}"
    );

    // A container provider with a published port, and a client container on the same network.
    let web = format!("{tag}-web");
    let client = format!("{tag}-client");
    cleanup.containers.extend([web.clone(), client.clone()]);
    docker(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &tag,
        "-p",
        "8080",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/",
    ])
    .unwrap();
    docker(&[
        "run",
        "-d",
        "--name",
        &client,
        "--network",
        &tag,
        IMAGE,
        "sleep",
        "600",
    ])
    .unwrap();
    let host_port: u16 = docker(&["port", &web, "8080/tcp"])
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("a published host port");

    let web_entry = ServiceEntry::new(
        ServiceName::new("web").unwrap(),
        ServiceKind::Docker,
        Location::DockerNetwork {
            network: tag.clone(),
            container_ip: container_ip(&web),
            published: vec![PublishedPort {
                host: host_port,
                container: 8080,
            }],
        },
    )
    .with_ports([8080])
    .with_hostname(web.clone());
    let client_location = Location::DockerNetwork {
        network: tag.clone(),
        container_ip: container_ip(&client),
        published: vec![],
    };

    // From this host: loopback + published port.
    let ep = resolve(&topology, &web_entry, &Location::LocalHost).unwrap();
    assert_eq!(
        (ep.ip, ep.port),
        (IpAddr::from([127, 0, 0, 1]), Some(host_port))
    );
    eventually("web answers on its published port", || {
        http_from_here(ep.ip, host_port)
    });

    // From a container on the same network: container address and name, container port.
    let ep = resolve(&topology, &web_entry, &client_location).unwrap();
    assert_eq!(ep.port, Some(8080));
    assert!(http_from_container(&client, &ep.ip.to_string(), 8080));
    assert!(http_from_container(&client, &ep.host, 8080));

    // A local process provider seen from the container: the bridge gateway.
    let listener = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let local_entry = ServiceEntry::new(
        ServiceName::new("api").unwrap(),
        ServiceKind::Process,
        Location::LocalHost,
    )
    .with_ports([port]);
    let ep = resolve(&topology, &local_entry, &client_location).unwrap();
    assert_eq!(ep.ip, gateway);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = String::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_string(&mut line);
        line
    });
    let script = format!("echo hello-from-container | nc -w 5 {} {}", ep.ip, port);
    docker(&["exec", &client, "sh", "-c", &script]).unwrap();
    assert_eq!(server.join().unwrap().trim(), "hello-from-container");
}

fn fastrand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u32
}
