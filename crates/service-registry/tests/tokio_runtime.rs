//! A representative subset under tokio: the registry needs no smol.

use harness_core::{ServiceKind, ServiceName, ServiceState};
use service_registry::{IpPool, LoadSource, Location, Registry, RegistryEvent, ServiceEntry};

fn entry(n: &str) -> ServiceEntry {
    ServiceEntry::new(
        ServiceName::new(n).unwrap(),
        ServiceKind::Process,
        Location::LocalHost,
    )
    .with_ports([80])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_subscribe_allocate_under_tokio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    let (r, _) = Registry::open(&path).await.unwrap();
    let mut sub = r.subscribe();
    let listener = tokio::spawn(async move {
        use futures_lite::StreamExt;
        let mut names = Vec::new();
        while names.len() < 3 {
            // Consumed as a stream here; `recv` elsewhere.
            if let Some(RegistryEvent::Upserted { entry, .. }) = sub.next().await {
                names.push(entry.name.to_string());
            }
        }
        names
    });
    r.define_pool(IpPool::new("mesh", "10.200.0.0/29".parse().unwrap(), None).unwrap())
        .await
        .unwrap();
    for n in ["a", "b", "c"] {
        r.upsert(entry(n)).await.unwrap();
    }
    let ip = r
        .allocate("mesh", &ServiceName::new("b").unwrap())
        .await
        .unwrap();
    r.set_state("a", ServiceState::Healthy).await.unwrap();
    let names = tokio::time::timeout(std::time::Duration::from_secs(30), listener)
        .await
        .expect("events arrive within 30 s")
        .unwrap();
    assert_eq!(names, ["a", "b", "c"]);
    drop(r);

    let (r, report) = Registry::open(&path).await.unwrap();
    assert_eq!(report.source, LoadSource::Primary);
    assert_eq!(r.get("a").unwrap().state, ServiceState::Healthy);
    assert_eq!(r.pool("mesh").unwrap().get("b"), Some(ip));
}

#[tokio::test]
async fn host_addresses_under_tokio() {
    let host = service_registry::HostNetwork::read_async().await.unwrap();
    assert!(host.addresses.iter().any(|a| a.ip.is_loopback()));
}
