//! Registry costs, each next to a bare baseline measured in the same run:
//! - `resolve` vs building the endpoint by hand;
//! - an in-memory `upsert` vs a `BTreeMap` insert under a mutex;
//! - a persisted `upsert` vs the bare durable write of the same bytes
//!   (write + fsync + rename + directory fsync);
//! - allocating a whole /24 vs inserting 253 addresses in a `HashSet`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use harness_core::{Endpoint, ServiceKind, ServiceName};
use service_registry::{
    HostAddress, HostNetwork, IpPool, Location, NetworkTopology, PublishedPort, Registry,
    ServiceEntry, StateFile, resolve,
};

fn entry(n: &str) -> ServiceEntry {
    ServiceEntry::new(
        ServiceName::new(n).unwrap(),
        ServiceKind::Docker,
        Location::DockerNetwork {
            network: "app".into(),
            container_ip: "172.20.0.5".parse().unwrap(),
            published: vec![PublishedPort {
                host: 15432,
                container: 5432,
            }],
        },
    )
    .with_ports([5432])
}

fn resolution(c: &mut Criterion) {
    let topology = NetworkTopology::new(HostNetwork {
        hostname: "ctl".into(),
        addresses: vec![HostAddress {
            interface: "eth0".into(),
            ip: "192.168.1.10".parse().unwrap(),
            prefix: 24,
        }],
    });
    let db = entry("db");
    let consumer = Location::LanNode {
        node: "n1".into(),
        address: "192.168.1.21".parse().unwrap(),
    };
    let mut g = c.benchmark_group("resolve");
    g.bench_function("baseline_endpoint_by_hand", |b| {
        b.iter(|| {
            black_box(Endpoint {
                ip: black_box(IpAddr::from([192, 168, 1, 10])),
                port: Some(15432),
                host: "ctl".to_owned(),
            })
        })
    });
    g.bench_function("resolve_docker_from_lan", |b| {
        b.iter(|| black_box(resolve(&topology, black_box(&db), black_box(&consumer))))
    });
    g.finish();
}

fn upserts(c: &mut Criterion) {
    let mut g = c.benchmark_group("upsert_in_memory_50_services");
    let names: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    let base: Mutex<BTreeMap<String, ServiceEntry>> = Mutex::new(BTreeMap::new());
    let registry = Registry::in_memory();
    for n in &names {
        base.lock().unwrap().insert(n.clone(), entry(n));
        smol::block_on(registry.upsert(entry(n))).unwrap();
    }
    let e = entry("s7");
    g.bench_function("baseline_btreemap_insert", |b| {
        b.iter(|| {
            base.lock()
                .unwrap()
                .insert("s7".to_owned(), black_box(e.clone()))
        })
    });
    g.bench_function("registry_upsert", |b| {
        b.iter(|| smol::block_on(registry.upsert(black_box(e.clone()))).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("upsert_persisted_50_services");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = smol::block_on(Registry::open(dir.path().join("r.json"))).unwrap();
    for n in &names {
        smol::block_on(registry.upsert(entry(n))).unwrap();
    }
    let bytes = StateFile::new("x").encode(&registry.snapshot()).unwrap();
    let bare = dir.path().join("bare.json");
    let bare_tmp = dir.path().join("bare.json.tmp");
    g.bench_function("baseline_write_fsync_rename", |b| {
        b.iter(|| {
            let mut f = File::create(&bare_tmp).unwrap();
            f.write_all(&bytes).unwrap();
            f.sync_all().unwrap();
            fs::rename(&bare_tmp, &bare).unwrap();
            File::open(dir.path()).unwrap().sync_all().unwrap();
        })
    });
    g.bench_function("registry_upsert", |b| {
        b.iter(|| smol::block_on(registry.upsert(black_box(e.clone()))).unwrap())
    });
    g.finish();

    // Sixteen writers at once (services changing state together): group commit
    // shares fsyncs between them. Baseline: sixteen bare durable writes.
    let mut g = c.benchmark_group("upsert_persisted_burst_of_16");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("baseline_16_write_fsync_rename", |b| {
        b.iter(|| {
            for _ in 0..16 {
                let mut f = File::create(&bare_tmp).unwrap();
                f.write_all(&bytes).unwrap();
                f.sync_all().unwrap();
                fs::rename(&bare_tmp, &bare).unwrap();
                File::open(dir.path()).unwrap().sync_all().unwrap();
            }
        })
    });
    g.bench_function("registry_16_concurrent_upserts", |b| {
        b.iter(|| {
            smol::block_on(async {
                let tasks: Vec<_> = (0..16)
                    .map(|i| {
                        let r = registry.clone();
                        let e = entry(&format!("s{i}"));
                        smol::spawn(async move { r.upsert(e).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

fn allocation(c: &mut Criterion) {
    let mut g = c.benchmark_group("allocate_whole_slash_24");
    let owners: Vec<String> = (0..253).map(|i| format!("svc{i}")).collect();
    let subnet = "10.0.0.0/24".parse().unwrap();
    g.bench_function("baseline_hashset_253", |b| {
        b.iter(|| {
            let mut set = HashSet::new();
            for i in 2..255u8 {
                set.insert(IpAddr::from([10, 0, 0, i]));
            }
            black_box(set)
        })
    });
    g.bench_function("ip_pool_253", |b| {
        b.iter(|| {
            let mut p = IpPool::new("p", subnet, None).unwrap();
            for o in &owners {
                p.allocate(o).unwrap();
            }
            black_box(p)
        })
    });
    g.finish();
}

mod group {
    // criterion's macro makes an undocumented `pub fn`; a private module keeps it internal.
    use super::{allocation, resolution, upserts};
    criterion::criterion_group!(benches, resolution, upserts, allocation);
}
criterion_main!(group::benches);
