//! CIDR subnets: `10.0.0.0/24`, `fd00::/64`.
//!
//! A tiny type of our own: parse, print, contain, and walk the addresses of a
//! subnet as integer offsets (IPv4 and IPv6 alike, using `u128`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a subnet string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subnet `{input}`: {why} (write e.g. `10.0.0.0/24` or `fd00::/64`)")]
pub struct NetError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// An IPv4 or IPv6 subnet: a network address and a prefix length.
///
/// The address is always the network address (host bits zero); parsing
/// `10.0.0.7/24` is an error rather than a silent truncation, because a typo
/// in a subnet is better reported than guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A subnet from a network address and a prefix length. Fails when the
    /// prefix is too long for the family or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, NetError> {
        let err = |why| NetError {
            input: format!("{addr}/{prefix}"),
            why,
        };
        if prefix > max_prefix(addr) {
            return Err(err("the prefix length is too long for the address family"));
        }
        let net = IpNet { addr, prefix };
        if to_bits(addr) & !net.mask_bits() != 0 {
            return Err(err("host bits are set: use the network address"));
        }
        Ok(net)
    }

    /// The subnet of `prefix` bits that contains `addr` (host bits cleared).
    pub fn containing(addr: IpAddr, prefix: u8) -> Result<IpNet, NetError> {
        if prefix > max_prefix(addr) {
            return Err(NetError {
                input: format!("{addr}/{prefix}"),
                why: "the prefix length is too long for the address family",
            });
        }
        let mut net = IpNet { addr, prefix };
        net.addr = from_bits(addr, to_bits(addr) & net.mask_bits());
        Ok(net)
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True for an IPv4 subnet.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The number of host bits (32 or 128 minus the prefix).
    pub fn host_bits(&self) -> u32 {
        u32::from(max_prefix(self.addr) - self.prefix)
    }

    /// The IPv4 broadcast address (all host bits set); `None` for IPv6, which has none.
    pub fn broadcast(&self) -> Option<IpAddr> {
        match self.addr {
            IpAddr::V4(_) => Some(from_bits(
                self.addr,
                to_bits(self.addr) | !self.mask_bits() & u128::from(u32::MAX),
            )),
            IpAddr::V6(_) => None,
        }
    }

    /// True if `ip` lies in this subnet (same family, same network bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && to_bits(ip) & self.mask_bits() == to_bits(self.addr)
    }

    /// The address at `offset` from the network address, if it lies inside the subnet.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        if self.host_bits() < 128 && offset >> self.host_bits() != 0 {
            return None;
        }
        Some(from_bits(self.addr, to_bits(self.addr) | offset))
    }

    /// The offset of `ip` from the network address, if it lies inside the subnet.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        self.contains(ip)
            .then(|| to_bits(ip) & !self.mask_bits() & family_mask(ip))
    }

    /// The largest offset inside the subnet (the broadcast offset for IPv4).
    pub fn last_offset(&self) -> u128 {
        if self.host_bits() >= 128 {
            u128::MAX
        } else {
            (1u128 << self.host_bits()) - 1
        }
    }

    fn mask_bits(&self) -> u128 {
        let bits = u32::from(max_prefix(self.addr));
        let host = bits - u32::from(self.prefix);
        let all = family_mask(self.addr);
        if host >= 128 {
            0
        } else {
            (all >> host << host) & all
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn family_mask(addr: IpAddr) -> u128 {
    if addr.is_ipv4() {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    }
}

fn to_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        // Callers keep IPv4 values within 32 bits; masking makes that explicit.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((bits & u128::from(u32::MAX)) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NetError {
            input: s.to_owned(),
            why,
        };
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| err("missing `/prefix`"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| err("the prefix length is not a number"))?;
        IpNet::new(addr, prefix).map_err(|e| err(e.why))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "10.0.0.0/24",
            "0.0.0.0/0",
            "192.168.1.7/32",
            "fd00::/64",
            "::/0",
        ] {
            assert_eq!(s.parse::<IpNet>().unwrap().to_string(), s);
        }
        for s in [
            "10.0.0.1/24",
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/x",
        ] {
            assert!(s.parse::<IpNet>().is_err(), "{s}");
        }
    }

    #[test]
    fn containment_and_offsets() {
        let n: IpNet = "10.1.2.0/24".parse().unwrap();
        assert!(n.contains(ip("10.1.2.0")));
        assert!(n.contains(ip("10.1.2.255")));
        assert!(!n.contains(ip("10.1.3.0")));
        assert!(!n.contains(ip("::1")));
        assert_eq!(n.broadcast(), Some(ip("10.1.2.255")));
        assert_eq!(n.nth(1), Some(ip("10.1.2.1")));
        assert_eq!(n.nth(256), None);
        assert_eq!(n.offset_of(ip("10.1.2.9")), Some(9));
        assert_eq!(n.last_offset(), 255);

        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        assert_eq!(all.last_offset(), u128::from(u32::MAX));

        let v6: IpNet = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains(ip("fd00:1::abcd")));
        assert!(!v6.contains(ip("fd00:2::1")));
        assert_eq!(v6.broadcast(), None);
        assert_eq!(v6.nth(5), Some(ip("fd00:1::5")));
        let any6: IpNet = "::/0".parse().unwrap();
        assert!(any6.contains(ip("fe80::1")));
        assert_eq!(any6.last_offset(), u128::MAX);

        assert_eq!(
            IpNet::containing(ip("172.18.3.4"), 16).unwrap().to_string(),
            "172.18.0.0/16"
        );
    }
}
