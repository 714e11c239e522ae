//! Handing out addresses inside a subnet.
//!
//! An [`IpPool`] is pure data (it is persisted with the registry): which
//! address belongs to which owner. An owner asking again gets the same address,
//! so addresses are stable across restarts as long as the pool is persisted;
//! the network address, the IPv4 broadcast address, the gateway and any
//! reserved address are never handed out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::net::IpNet;

/// Why an address could not be allocated or reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every usable address of the subnet is taken.
    #[error(
        "subnet {subnet} of pool `{pool}` is full: all {usable} usable addresses are allocated"
    )]
    Full {
        /// The pool name.
        pool: String,
        /// Its subnet.
        subnet: IpNet,
        /// How many addresses it can hand out.
        usable: u128,
    },
    /// A requested address lies outside the subnet.
    #[error("address {ip} is outside subnet {subnet} of pool `{pool}`")]
    OutsideSubnet {
        /// The pool name.
        pool: String,
        /// Its subnet.
        subnet: IpNet,
        /// The address.
        ip: IpAddr,
    },
    /// A requested address is the network, broadcast, gateway or a reserved address.
    #[error("address {ip} of pool `{pool}` is not assignable ({why})")]
    NotAssignable {
        /// The pool name.
        pool: String,
        /// The address.
        ip: IpAddr,
        /// Which kind of address it is.
        why: &'static str,
    },
    /// A requested address already belongs to another owner.
    #[error("address {ip} of pool `{pool}` already belongs to `{owner}`")]
    Taken {
        /// The pool name.
        pool: String,
        /// The address.
        ip: IpAddr,
        /// Its current owner.
        owner: String,
    },
    /// The gateway given for a pool lies outside its subnet.
    #[error("gateway {gateway} of pool `{pool}` is outside its subnet {subnet}")]
    GatewayOutside {
        /// The pool name.
        pool: String,
        /// Its subnet.
        subnet: IpNet,
        /// The gateway.
        gateway: IpAddr,
    },
}

/// The addresses of one subnet and who holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolData", into = "PoolData")]
pub struct IpPool {
    name: String,
    subnet: IpNet,
    gateway: Option<IpAddr>,
    reserved: BTreeSet<IpAddr>,
    /// owner -> address.
    assigned: BTreeMap<String, IpAddr>,
    /// address -> owner (index of `assigned`).
    owners: BTreeMap<IpAddr, String>,
    /// Offsets of the gateway, reserved and assigned addresses (index).
    used: BTreeSet<u128>,
}

/// The persisted form of a pool: indexes are rebuilt, and checked, on load.
#[derive(Serialize, Deserialize)]
struct PoolData {
    name: String,
    subnet: IpNet,
    gateway: Option<IpAddr>,
    #[serde(default)]
    reserved: BTreeSet<IpAddr>,
    #[serde(default)]
    assigned: BTreeMap<String, IpAddr>,
}

impl TryFrom<PoolData> for IpPool {
    type Error = AllocError;
    fn try_from(d: PoolData) -> Result<IpPool, AllocError> {
        let mut pool = IpPool::without_gateway(d.name, d.subnet);
        if let Some(g) = d.gateway {
            if !d.subnet.contains(g) {
                return Err(AllocError::GatewayOutside {
                    pool: pool.name,
                    subnet: d.subnet,
                    gateway: g,
                });
            }
            pool.set_gateway(g);
        }
        for ip in d.reserved {
            pool.reserve(ip)?;
        }
        for (owner, ip) in d.assigned {
            pool.assign(&owner, ip)?;
        }
        Ok(pool)
    }
}

impl From<IpPool> for PoolData {
    fn from(p: IpPool) -> PoolData {
        PoolData {
            name: p.name,
            subnet: p.subnet,
            gateway: p.gateway,
            reserved: p.reserved,
            assigned: p.assigned,
        }
    }
}

impl IpPool {
    /// A pool over `subnet`. With `gateway: None` the first host address
    /// (e.g. `.1`) is taken as the gateway, as Docker and most setups do; the
    /// gateway is never handed out.
    pub fn new(
        name: impl Into<String>,
        subnet: IpNet,
        gateway: Option<IpAddr>,
    ) -> Result<IpPool, AllocError> {
        let mut pool = IpPool::without_gateway(name, subnet);
        let gateway = match gateway {
            Some(g) if !subnet.contains(g) => {
                return Err(AllocError::GatewayOutside {
                    pool: pool.name,
                    subnet,
                    gateway: g,
                });
            }
            Some(g) => Some(g),
            None if has_network_and_broadcast(subnet) || !subnet.is_ipv4() => subnet.nth(1),
            None => None,
        };
        if let Some(g) = gateway {
            pool.set_gateway(g);
        }
        Ok(pool)
    }

    /// A pool with no gateway at all (e.g. a WireGuard mesh, where every peer is equal).
    pub fn without_gateway(name: impl Into<String>, subnet: IpNet) -> IpPool {
        IpPool {
            name: name.into(),
            subnet,
            gateway: None,
            reserved: BTreeSet::new(),
            assigned: BTreeMap::new(),
            owners: BTreeMap::new(),
            used: BTreeSet::new(),
        }
    }

    fn set_gateway(&mut self, g: IpAddr) {
        self.gateway = Some(g);
        if let Some(off) = self.subnet.offset_of(g) {
            self.used.insert(off);
        }
    }

    /// The pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    /// The gateway, never handed out.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    /// Marks `ip` as never to be handed out (e.g. an address a node already uses).
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        self.check_assignable(ip)?;
        if let Some(owner) = self.owner_of(ip) {
            return Err(AllocError::Taken {
                pool: self.name.clone(),
                ip,
                owner: owner.to_owned(),
            });
        }
        self.reserved.insert(ip);
        self.used.extend(self.subnet.offset_of(ip));
        Ok(())
    }

    /// The address `owner` holds, if any.
    pub fn get(&self, owner: &str) -> Option<IpAddr> {
        self.assigned.get(owner).copied()
    }

    /// Who holds `ip`, if anyone.
    pub fn owner_of(&self, ip: IpAddr) -> Option<&str> {
        self.owners.get(&ip).map(String::as_str)
    }

    /// Every (owner, address) pair, ordered by owner.
    pub fn assignments(&self) -> impl Iterator<Item = (&str, IpAddr)> {
        self.assigned.iter().map(|(o, a)| (o.as_str(), *a))
    }

    /// How many addresses this pool can hand out in total.
    pub fn usable(&self) -> u128 {
        let (first, last) = self.assignable_range();
        let excluded: BTreeSet<u128> = self
            .reserved
            .iter()
            .chain(self.gateway.iter())
            .filter_map(|ip| self.subnet.offset_of(*ip))
            .filter(|off| (first..=last).contains(off))
            .collect();
        (last - first).saturating_add(1) - excluded.len() as u128
    }

    /// The address of `owner`: the one it already holds, or the lowest free one.
    pub fn allocate(&mut self, owner: &str) -> Result<IpAddr, AllocError> {
        if let Some(ip) = self.get(owner) {
            return Ok(ip);
        }
        let (first, last) = self.assignable_range();
        // Walk the used offsets in order: the first gap is the lowest free address.
        let mut candidate = first;
        for off in self.used.range(first..) {
            if *off != candidate {
                break;
            }
            candidate = candidate.saturating_add(1);
        }
        if candidate > last {
            return Err(AllocError::Full {
                pool: self.name.clone(),
                subnet: self.subnet,
                usable: self.usable(),
            });
        }
        let ip = self
            .subnet
            .nth(candidate)
            .expect("candidate lies within the assignable range of the subnet");
        self.insert(owner, ip);
        Ok(ip)
    }

    /// Gives `owner` exactly `ip` (e.g. an address fixed in the configuration).
    /// Asking again for the same pair is fine.
    pub fn assign(&mut self, owner: &str, ip: IpAddr) -> Result<(), AllocError> {
        self.check_assignable(ip)?;
        if self.reserved.contains(&ip) {
            return Err(AllocError::NotAssignable {
                pool: self.name.clone(),
                ip,
                why: "reserved",
            });
        }
        match self.owner_of(ip) {
            Some(o) if o == owner => return Ok(()),
            Some(o) => {
                return Err(AllocError::Taken {
                    pool: self.name.clone(),
                    ip,
                    owner: o.to_owned(),
                });
            }
            None => {}
        }
        self.release(owner);
        self.insert(owner, ip);
        Ok(())
    }

    /// Frees the address of `owner`; returns it if it held one.
    pub fn release(&mut self, owner: &str) -> Option<IpAddr> {
        let ip = self.assigned.remove(owner)?;
        self.owners.remove(&ip);
        if let Some(off) = self.subnet.offset_of(ip) {
            self.used.remove(&off);
        }
        Some(ip)
    }

    fn insert(&mut self, owner: &str, ip: IpAddr) {
        self.assigned.insert(owner.to_owned(), ip);
        self.owners.insert(ip, owner.to_owned());
        self.used.extend(self.subnet.offset_of(ip));
    }

    /// The first and last offsets that may ever be handed out.
    fn assignable_range(&self) -> (u128, u128) {
        let last = self.subnet.last_offset();
        if has_network_and_broadcast(self.subnet) {
            (1, last - 1)
        } else if self.subnet.is_ipv4() {
            (0, last)
        } else if last == 0 {
            // A single IPv6 address (/128): it is the host itself.
            (0, 0)
        } else {
            (1, last)
        }
    }

    fn check_assignable(&self, ip: IpAddr) -> Result<(), AllocError> {
        let Some(off) = self.subnet.offset_of(ip) else {
            return Err(AllocError::OutsideSubnet {
                pool: self.name.clone(),
                subnet: self.subnet,
                ip,
            });
        };
        let (first, last) = self.assignable_range();
        let why = if off < first {
            Some("network address")
        } else if off > last {
            Some("broadcast address")
        } else if Some(ip) == self.gateway {
            Some("gateway")
        } else {
            None
        };
        match why {
            Some(why) => Err(AllocError::NotAssignable {
                pool: self.name.clone(),
                ip,
                why,
            }),
            None => Ok(()),
        }
    }
}

/// IPv4 subnets up to /30 have a network and a broadcast address; /31 and /32 do not (RFC 3021).
fn has_network_and_broadcast(subnet: IpNet) -> bool {
    subnet.is_ipv4() && subnet.prefix() <= 30
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn pool(s: &str) -> IpPool {
        IpPool::new("net", s.parse().unwrap(), None).unwrap()
    }

    #[test]
    fn a_whole_slash_24_without_duplicates_then_full() {
        let mut p = pool("10.20.30.0/24");
        assert_eq!(p.usable(), 253);
        let mut seen = HashSet::new();
        for i in 0..253 {
            let ip = p.allocate(&format!("svc{i}")).unwrap();
            assert!(seen.insert(ip), "duplicate {ip}");
            let s = ip.to_string();
            assert!(
                !["10.20.30.0", "10.20.30.1", "10.20.30.255"].contains(&s.as_str()),
                "handed out {s}"
            );
        }
        let err = p.allocate("one-too-many").unwrap_err();
        assert!(matches!(err, AllocError::Full { usable: 253, .. }), "{err}");
        assert!(err.to_string().contains("10.20.30.0/24"), "{err}");
        // Asking again for an existing owner still works when full.
        assert_eq!(p.allocate("svc7").unwrap(), p.get("svc7").unwrap());
        // Releasing one makes exactly that one free again.
        let freed = p.release("svc100").unwrap();
        assert_eq!(p.allocate("late").unwrap(), freed);
    }

    #[test]
    fn same_owner_same_address_and_lowest_free_first() {
        let mut p = pool("192.168.50.0/29");
        let a = p.allocate("a").unwrap();
        assert_eq!(a.to_string(), "192.168.50.2");
        assert_eq!(p.allocate("a").unwrap(), a);
        let b = p.allocate("b").unwrap();
        assert_eq!(b.to_string(), "192.168.50.3");
        p.release("a");
        assert_eq!(p.allocate("c").unwrap(), a);
        // Survives a JSON round trip unchanged (that is what persistence stores).
        let back: IpPool = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn explicit_gateway_reservations_and_assignments() {
        let mut p = IpPool::new(
            "n",
            "10.9.0.0/30".parse().unwrap(),
            Some("10.9.0.2".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(p.usable(), 1);
        assert_eq!(p.allocate("x").unwrap().to_string(), "10.9.0.1");
        assert!(matches!(p.allocate("y"), Err(AllocError::Full { .. })));

        let mut p = pool("10.8.0.0/24");
        let ten = "10.8.0.10".parse().unwrap();
        p.assign("db", ten).unwrap();
        p.assign("db", ten).unwrap();
        assert!(matches!(
            p.assign("web", ten),
            Err(AllocError::Taken { .. })
        ));
        assert!(matches!(
            p.assign("web", "10.8.0.255".parse().unwrap()),
            Err(AllocError::NotAssignable {
                why: "broadcast address",
                ..
            })
        ));
        assert!(matches!(
            p.assign("web", "10.8.0.1".parse().unwrap()),
            Err(AllocError::NotAssignable { why: "gateway", .. })
        ));
        assert!(matches!(
            p.assign("web", "10.9.0.5".parse().unwrap()),
            Err(AllocError::OutsideSubnet { .. })
        ));
        p.reserve("10.8.0.2".parse().unwrap()).unwrap();
        assert_eq!(p.allocate("web").unwrap().to_string(), "10.8.0.3");
        assert!(
            IpPool::new(
                "n",
                "10.8.0.0/24".parse().unwrap(),
                Some("10.7.0.1".parse().unwrap())
            )
            .is_err()
        );
    }

    #[test]
    fn a_tampered_persisted_pool_is_rejected() {
        let mut p = pool("10.6.0.0/24");
        p.allocate("a").unwrap();
        let mut j = serde_json::to_value(&p).unwrap();
        j["assigned"]["b"] = j["assigned"]["a"].clone();
        let e = serde_json::from_value::<IpPool>(j).unwrap_err().to_string();
        assert!(e.contains("already belongs to `a`"), "{e}");
        let mut j = serde_json::to_value(&p).unwrap();
        j["assigned"]["c"] = "10.7.0.9".into();
        assert!(serde_json::from_value::<IpPool>(j).is_err());
        let mut j = serde_json::to_value(&p).unwrap();
        j["gateway"] = "10.9.9.9".into();
        assert!(serde_json::from_value::<IpPool>(j).is_err());
    }

    #[test]
    fn reassigning_an_owner_frees_its_old_address() {
        let mut p = pool("10.6.0.0/29");
        let old = p.allocate("a").unwrap();
        p.assign("a", "10.6.0.6".parse().unwrap()).unwrap();
        assert_eq!(p.owner_of(old), None);
        assert_eq!(p.allocate("b").unwrap(), old);
    }

    #[test]
    fn tiny_and_ipv6_subnets() {
        let mut p = IpPool::without_gateway("p2p", "10.0.0.0/31".parse().unwrap());
        assert_eq!(p.usable(), 2);
        p.allocate("a").unwrap();
        p.allocate("b").unwrap();
        assert!(p.allocate("c").is_err());

        let mut p = IpPool::without_gateway("one", "10.0.0.5/32".parse().unwrap());
        assert_eq!(p.allocate("a").unwrap().to_string(), "10.0.0.5");
        assert!(p.allocate("b").is_err());

        let mut p = pool("fd00:10::/64");
        assert_eq!(p.gateway().unwrap().to_string(), "fd00:10::1");
        assert_eq!(p.allocate("a").unwrap().to_string(), "fd00:10::2");
        assert_eq!(p.allocate("b").unwrap().to_string(), "fd00:10::3");

        let mut p = IpPool::without_gateway("mesh", "fd00:20::/126".parse().unwrap());
        assert_eq!(p.usable(), 3);
        for o in ["a", "b", "c"] {
            p.allocate(o).unwrap();
        }
        assert!(p.allocate("d").is_err());
    }
}
