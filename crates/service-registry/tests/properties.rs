//! Properties over random input: allocation never hands out a duplicate or an
//! excluded address, whatever the subnet and the sequence of requests; decoding
//! never panics on any bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;
use service_registry::{IpNet, IpPool, RegistrySnapshot, store};

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8),
    Release(u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>().prop_map(|o| Op::Allocate(o % 40)),
            1 => any::<u8>().prop_map(|o| Op::Release(o % 40)),
        ],
        0..200,
    )
}

fn subnet() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 24u8..=32).prop_map(|(a, p)| IpNet::containing(
            IpAddr::from(a.to_be_bytes()),
            p
        )
        .unwrap()),
        (any::<u128>(), 120u8..=128).prop_map(|(a, p)| IpNet::containing(
            IpAddr::from(a.to_be_bytes()),
            p
        )
        .unwrap()),
    ]
}

proptest! {
    #[test]
    fn allocation_is_unique_and_never_hands_out_excluded_addresses(
        net in subnet(),
        with_gateway in any::<bool>(),
        ops in ops(),
    ) {
        let mut pool = if with_gateway {
            IpPool::new("p", net, None).unwrap()
        } else {
            IpPool::without_gateway("p", net)
        };
        let usable = pool.usable();
        let mut model: BTreeMap<String, IpAddr> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Allocate(o) => {
                    let owner = format!("o{o}");
                    match pool.allocate(&owner) {
                        Ok(ip) => {
                            if let Some(prev) = model.get(&owner) {
                                prop_assert_eq!(*prev, ip, "an owner keeps its address");
                            }
                            model.insert(owner, ip);
                        }
                        Err(_) => prop_assert_eq!(model.len() as u128, usable, "full only when full"),
                    }
                }
                Op::Release(o) => {
                    let owner = format!("o{o}");
                    prop_assert_eq!(pool.release(&owner), model.remove(&owner));
                }
            }
            let ips: BTreeSet<IpAddr> = model.values().copied().collect();
            prop_assert_eq!(ips.len(), model.len(), "no duplicates");
            for ip in &ips {
                prop_assert!(net.contains(*ip));
                prop_assert!(Some(*ip) != pool.gateway());
                if net.is_ipv4() && net.prefix() <= 30 {
                    prop_assert!(*ip != net.network() && Some(*ip) != net.broadcast());
                }
            }
        }
        // What is persisted reads back the same.
        let back: IpPool = serde_json::from_str(&serde_json::to_string(&pool).unwrap()).unwrap();
        prop_assert_eq!(back, pool);
    }

    #[test]
    fn decoding_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = store::decode::<RegistrySnapshot>(&bytes);
    }

    #[test]
    fn parsing_any_subnet_text_never_panics(s in "[0-9a-f:./]{0,45}") {
        if let Ok(net) = s.parse::<IpNet>() {
            prop_assert_eq!(net.to_string().parse::<IpNet>().unwrap(), net);
        }
    }
}

#[test]
fn a_snapshot_with_misfiled_entries_is_rejected() {
    let f = store::StateFile::new("x");
    let mut snap = RegistrySnapshot::default();
    let e = service_registry::ServiceEntry::new(
        harness_core::ServiceName::new("web").unwrap(),
        harness_core::ServiceKind::Process,
        service_registry::Location::LocalHost,
    );
    snap.entries
        .insert(harness_core::ServiceName::new("db").unwrap(), e);
    let bytes = f.encode(&snap).unwrap();
    let err = store::decode::<RegistrySnapshot>(&bytes).unwrap_err();
    assert!(err.contains("filed as `db` is named `web`"), "{err}");
}
