//! This host's real network addresses, read from the system.
//!
//! Linux exposes them as text under `/proc`, which we parse without any
//! `unsafe` (ADR 005):
//! - IPv4 local addresses are the `/32 host LOCAL` leaves of `/proc/net/fib_trie`;
//!   their interface and prefix come from the directly connected routes of
//!   `/proc/net/route`.
//! - IPv6 addresses, with interface and prefix, are the lines of `/proc/net/if_inet6`
//!   (link-local addresses are left out: they are useless without a zone).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::net::IpNet;

/// One address of one interface of this host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostAddress {
    /// The interface name (`eth0`, `docker0`, `wg0`, ...), empty if unknown.
    pub interface: String,
    /// The address.
    pub ip: IpAddr,
    /// The prefix length of the subnet the interface is on.
    pub prefix: u8,
}

impl HostAddress {
    /// The subnet of the interface this address is on.
    pub fn subnet(&self) -> IpNet {
        // `prefix` is clamped when parsed, so this only fails on hand-made values.
        IpNet::containing(self.ip, self.prefix).unwrap_or_else(|_| {
            IpNet::containing(self.ip, if self.ip.is_ipv4() { 32 } else { 128 })
                .expect("a full-length prefix is valid for its own family")
        })
    }
}

/// What this host is on the network: its name and its addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNetwork {
    /// The host name (the kernel's node name).
    pub hostname: String,
    /// Its addresses, loopback included.
    pub addresses: Vec<HostAddress>,
}

impl HostNetwork {
    /// Reads the host name and addresses of this host. Blocking: call it from
    /// a thread, or use [`HostNetwork::read_async`].
    pub fn read() -> io::Result<HostNetwork> {
        Self::read_from(Path::new("/proc"))
    }

    /// [`HostNetwork::read`] on a blocking thread, for async callers.
    pub async fn read_async() -> io::Result<HostNetwork> {
        blocking::unblock(Self::read).await
    }

    /// Reads the addresses from a `/proc`-like directory (`net/fib_trie`,
    /// `net/route`, `net/if_inet6`); a missing file counts as empty (a host
    /// without IPv6, for instance).
    pub fn read_from(proc_dir: &Path) -> io::Result<HostNetwork> {
        let read = |rel: &str| -> io::Result<String> {
            match std::fs::read_to_string(proc_dir.join(rel)) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", proc_dir.join(rel).display()),
                )),
            }
        };
        let addresses = parse_addresses(
            &read("net/fib_trie")?,
            &read("net/route")?,
            &read("net/if_inet6")?,
        );
        Ok(HostNetwork {
            hostname: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            addresses,
        })
    }

    /// This host's address inside `subnet`, if it has one (loopback last).
    pub fn address_in(&self, subnet: IpNet) -> Option<&HostAddress> {
        self.addresses
            .iter()
            .filter(|a| subnet.contains(a.ip))
            .min_by_key(|a| a.ip.is_loopback())
    }

    /// This host's address on the interface that directly reaches `peer`
    /// (longest matching prefix), if any.
    pub fn address_facing(&self, peer: IpAddr) -> Option<&HostAddress> {
        self.addresses
            .iter()
            .filter(|a| !a.ip.is_loopback() && a.subnet().contains(peer))
            .max_by_key(|a| a.prefix)
    }
}

/// Parses the three `/proc` files into a sorted, de-duplicated address list.
pub fn parse_addresses(fib_trie: &str, route: &str, if_inet6: &str) -> Vec<HostAddress> {
    let routes = parse_routes(route);
    let mut out = BTreeSet::new();
    for ip in parse_fib_trie_locals(fib_trie) {
        let best = routes
            .iter()
            .filter(|(_, net)| net.contains(IpAddr::V4(ip)))
            .max_by_key(|(_, net)| net.prefix());
        let (interface, prefix) = match best {
            Some((iface, net)) => (iface.clone(), net.prefix()),
            None if ip.is_loopback() => ("lo".to_owned(), 8),
            None => (String::new(), 32),
        };
        out.insert(HostAddress {
            interface,
            ip: IpAddr::V4(ip),
            prefix,
        });
    }
    out.extend(parse_if_inet6(if_inet6));
    out.into_iter().collect()
}

/// The `/32 host LOCAL` leaves of `/proc/net/fib_trie`.
fn parse_fib_trie_locals(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("|--") {
            leaf = rest.trim().parse().ok();
        } else if t.starts_with('/') {
            let mut parts = t.split_whitespace();
            let (len, _scope, kind) = (parts.next(), parts.next(), parts.next());
            if let (Some("/32"), Some("LOCAL"), Some(ip)) = (len, kind, leaf) {
                out.insert(ip);
            }
        } else {
            leaf = None;
        }
    }
    out
}

/// Directly connected IPv4 routes (gateway 0.0.0.0) of `/proc/net/route`: (interface, subnet).
fn parse_routes(text: &str) -> Vec<(String, IpNet)> {
    let hex_ip = |h: &str| -> Option<Ipv4Addr> {
        // The kernel prints the address as a native-endian u32.
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Some(mask)) =
            (hex_ip(cols[1]), hex_ip(cols[2]), hex_ip(cols[7]))
        else {
            continue;
        };
        if !gw.is_unspecified() || dest.is_unspecified() {
            continue;
        }
        let prefix = u32::from(mask).count_ones() as u8;
        if let Ok(net) = IpNet::containing(IpAddr::V4(dest), prefix) {
            out.push((cols[0].to_owned(), net));
        }
    }
    out
}

/// Lines of `/proc/net/if_inet6`: `addr ifindex prefix scope flags name`, all hex.
fn parse_if_inet6(text: &str) -> Vec<HostAddress> {
    const SCOPE_LINK: u32 = 0x20;
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || cols[0].len() != 32 {
            continue;
        }
        let (Ok(bits), Ok(prefix), Ok(scope)) = (
            u128::from_str_radix(cols[0], 16),
            u8::from_str_radix(cols[2], 16),
            u32::from_str_radix(cols[3], 16),
        ) else {
            continue;
        };
        if scope == SCOPE_LINK || prefix > 128 {
            continue;
        }
        out.push(HostAddress {
            interface: cols[5].to_owned(),
            ip: IpAddr::V6(Ipv6Addr::from(bits)),
            prefix,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.168.1.0/24 2 0 2
           |-- 192.168.1.0
              /24 link UNICAST
           |-- 192.168.1.17
              /32 host LOCAL
        |-- 192.168.1.255
           /32 link BROADCAST
     |-- 10.100.0.1
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 127.0.0.1
              /32 host LOCAL
";

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wg0\t0000640A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
garbage line
";

    const IF_INET6: &str = "00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000042f4fffe0c2247 05 40 20 80  docker0
fd000000000000000000000000000002 04 40 00 82     eth0
";

    #[test]
    fn parses_proc_text() {
        if !cfg!(target_endian = "little") {
            return; // the fixture's route table is little-endian
        }
        let got = parse_addresses(FIB_TRIE, ROUTE, IF_INET6);
        let show: Vec<String> = got
            .iter()
            .map(|a| format!("{} {}/{}", a.interface, a.ip, a.prefix))
            .collect();
        assert_eq!(
            show,
            [
                "eth0 192.168.1.17/24",
                "eth0 fd00::2/64",
                "lo 127.0.0.1/8",
                "lo ::1/128",
                "wg0 10.100.0.1/24",
            ]
        );
        let host = HostNetwork {
            hostname: "h".into(),
            addresses: got,
        };
        let lan: IpNet = "192.168.1.0/24".parse().unwrap();
        assert_eq!(host.address_in(lan).unwrap().ip.to_string(), "192.168.1.17");
        assert_eq!(
            host.address_facing("10.100.0.9".parse().unwrap())
                .unwrap()
                .interface,
            "wg0"
        );
        assert!(host.address_facing("8.8.8.8".parse().unwrap()).is_none());
    }

    #[test]
    fn reads_this_hosts_real_addresses() {
        let host = HostNetwork::read().unwrap();
        assert!(!host.hostname.is_empty());
        let lo = host
            .addresses
            .iter()
            .find(|a| a.ip == IpAddr::from([127, 0, 0, 1]))
            .expect("every Linux host has 127.0.0.1");
        assert_eq!(lo.interface, "lo");
        assert_eq!(lo.prefix, 8);
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "",
            "\n\n",
            "|-- 999.1.1.1\n /32 host LOCAL",
            "/32 host LOCAL",
        ] {
            let _ = parse_addresses(text, text, text);
        }
        assert!(parse_addresses("", "x\ny y y y y y y y", "zz 01 ff 00 00 lo").is_empty());
    }
}
