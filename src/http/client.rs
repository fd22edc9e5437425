//! Who a request comes from. The address decides the per-address caps (live
//! sockets, failed log-ins), so behind a load balancer it must be the
//! client's, not the balancer's: a balancer listed with `--trusted-proxy`
//! may name the client in `X-Forwarded-For`, and nobody else may.
//!
//! The header is read from the right: each hop appends the address it was
//! called from, so the rightmost entry not itself a trusted proxy is the
//! first address no trusted party vouches for beyond: the client. Entries to
//! its left were written by the client and are ignored.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::config::WebArgs;
use crate::graphql::ClientAddr;

/// A network whose hosts are trusted proxies: `10.0.0.0/8`, `fd00::/8`, or
/// one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    prefix: u8,
}

impl ProxyNet {
    /// Whether `ip` is in this network. An IPv4 address mapped into IPv6
    /// (`::ffff:10.0.0.1`) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(net.to_bits().into(), ip.to_bits().into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(net.to_bits(), ip.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let host_bits = bits - u32::from(prefix);
    host_bits >= bits || (a >> host_bits) == (b >> host_bits)
}

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr =
            addr.parse().map_err(|_| format!("`{s}` is not an IP address or network (like 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length after `/` must be a number from 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy,
/// then the rightmost address in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[ProxyNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    // Every X-Forwarded-For line, in order, as one list.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        // A hop that is not an address ends what can be believed.
        let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// Middleware: puts the request's [`ClientAddr`] in its extensions, for the
/// handlers that apply per-address limits.
pub async fn resolve(State(web): State<Arc<WebArgs>>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = client_ip(peer, req.headers(), &web.trusted_proxies);
    req.extensions_mut().insert(ClientAddr(client));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ProxyNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let net: ProxyNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6 is the IPv4 address");
        assert!("0.0.0.0/0".parse::<ProxyNet>().unwrap().contains(ip("203.0.113.9")));
        assert!("fd00::/8".parse::<ProxyNet>().unwrap().contains(ip("fd12::1")));
        assert!("::1".parse::<ProxyNet>().unwrap().contains(ip("::1")));
        assert!(!"::1".parse::<ProxyNet>().unwrap().contains(ip("127.0.0.1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "proxy.local", "10.0.0.1/x", ""] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(Some(ip("203.0.113.7")), &xff(&["198.51.100.1"]), &trusted);
        assert_eq!(got, Some(ip("203.0.113.7")));
        let none = client_ip(Some(ip("10.0.0.2")), &xff(&["198.51.100.1"]), &[]);
        assert_eq!(none, Some(ip("10.0.0.2")), "no proxy is trusted by default");
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1"]);
        // The client forged the first entry; the balancer appended the real one.
        let headers = xff(&["1.2.3.4, 198.51.100.20", "192.168.1.1"]);
        assert_eq!(client_ip(Some(ip("10.0.0.5")), &headers, &trusted), Some(ip("198.51.100.20")));
        // Only trusted hops: the leftmost of them.
        assert_eq!(client_ip(Some(ip("10.0.0.5")), &xff(&["10.9.9.9"]), &trusted), Some(ip("10.9.9.9")));
        // No header: the proxy itself.
        assert_eq!(client_ip(Some(ip("10.0.0.5")), &HeaderMap::new(), &trusted), Some(ip("10.0.0.5")));
        // Garbage stops the walk at what was believed so far.
        assert_eq!(client_ip(Some(ip("10.0.0.5")), &xff(&["198.51.100.20, junk"]), &trusted), Some(ip("10.0.0.5")));
    }
}
