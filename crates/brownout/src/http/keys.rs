//! Keys for per-key limits: a header, the client address, or `x-forwarded-for` behind
//! trusted proxies only.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use brownout_core::ConfigError;
use http::{HeaderName, Request};

/// The value of a request header as a key (e.g. a tenant id); `None` when absent, not
/// visible ASCII, or longer than `max_len` (so a client cannot blow up a keyed map with huge keys).
///
/// ```
/// use brownout::http::HeaderKey;
///
/// let tenant = HeaderKey::new("x-tenant");
/// let req = http::Request::get("/").header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(tenant.key(&req).as_deref(), Some("acme"));
/// ```
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
    max_len: usize,
}

impl HeaderKey {
    /// Keys by header `name`, values up to 128 bytes.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name.
    pub fn new(name: &str) -> HeaderKey {
        HeaderKey {
            name: HeaderName::try_from(name).expect("HeaderKey::new: invalid header name"),
            max_len: 128,
        }
    }

    /// Refuses values longer than `max_len` bytes.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The key of `req`.
    pub fn key<B>(&self, req: &Request<B>) -> Option<String> {
        let value = req.headers().get(&self.name)?;
        if value.len() > self.max_len || value.is_empty() {
            return None;
        }
        value.to_str().ok().map(str::to_owned)
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ConfigError::new(
                "trusted_proxies",
                format!("`{s}` is not an IP address or CIDR network"),
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The client's IP address: the connection's peer address, or — only when that peer is a
/// trusted proxy — the right-most untrusted address of `x-forwarded-for`.
///
/// The peer address is read from the request extensions, where servers put it: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature) or a plain `SocketAddr`.
/// Malformed `x-forwarded-for` values are ignored (the peer address is used), never a panic.
///
/// ```
/// use std::net::SocketAddr;
/// use brownout::http::ClientIp;
///
/// let client_ip = ClientIp::trusting(["10.0.0.0/8"]).unwrap();
/// let mut req = http::Request::get("/")
///     .header("x-forwarded-for", "203.0.113.9, 10.1.2.3")
///     .body(()).unwrap();
/// req.extensions_mut().insert("10.0.0.1:443".parse::<SocketAddr>().unwrap());
/// assert_eq!(client_ip.key(&req), Some("203.0.113.9".parse().unwrap()));
///
/// // From an untrusted peer the header is ignored: anyone can write it.
/// req.extensions_mut().insert("198.51.100.7:5000".parse::<SocketAddr>().unwrap());
/// assert_eq!(client_ip.key(&req), Some("198.51.100.7".parse().unwrap()));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
}

impl ClientIp {
    /// Uses the peer address only; `x-forwarded-for` is never read.
    pub fn peer_only() -> ClientIp {
        ClientIp::default()
    }

    /// Reads `x-forwarded-for` when the peer is inside one of `trusted` (CIDR networks).
    pub fn trusting<I, T>(trusted: I) -> Result<ClientIp, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let trusted = trusted
            .into_iter()
            .map(|net| net.as_ref().parse())
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(ClientIp { trusted })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client address of `req`, or `None` when the server recorded no peer address.
    pub fn key<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = peer_addr(req)?.ip();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let Some(header) = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok())
            .collect::<Option<Vec<_>>>()
        else {
            return Some(peer);
        };
        let mut candidate = peer;
        for entry in header.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return Some(peer); // malformed: trust nothing from the header
            };
            candidate = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(candidate)
    }
}

fn peer_addr<B>(req: &Request<B>) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0);
    }
    req.extensions().get::<SocketAddr>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(peer: &str, xff: &[u8]) -> Request<()> {
        let mut req = Request::new(());
        if let Ok(v) = http::HeaderValue::from_bytes(xff) {
            req.headers_mut().insert("x-forwarded-for", v);
        }
        req.extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
        req
    }

    #[test]
    fn walks_trusted_proxies_from_the_right() {
        let c = ClientIp::trusting(["10.0.0.0/8", "::1"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            c.key(&req("10.0.0.1:1", b"1.1.1.1, 2.2.2.2, 10.9.9.9")),
            Some(ip("2.2.2.2"))
        );
        assert_eq!(c.key(&req("10.0.0.1:1", b"10.2.2.2")), Some(ip("10.2.2.2")));
        assert_eq!(
            c.key(&req("10.0.0.1:1", b"not-an-ip")),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            c.key(&req("[::1]:1", b"2001:db8::1")),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            ClientIp::peer_only().key(&req("10.0.0.1:1", b"1.1.1.1")),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(c.key(&Request::new(())), None);
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<IpNet>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            !"10.0.0.0/8"
                .parse::<IpNet>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert_eq!(
            ClientIp::trusting(["10.0.0.0/x"]).unwrap_err().field(),
            "trusted_proxies"
        );
    }

    proptest! {
        // RELIABILITY #25: malformed x-forwarded-for never panics.
        #[test]
        fn rel_25_malformed_forwarded_for(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let c = ClientIp::trusting(["0.0.0.0/0"]).unwrap();
            prop_assert!(c.key(&req("10.0.0.1:1", &bytes)).is_some());
            let _ = HeaderKey::new("x-forwarded-for").key(&req("10.0.0.1:1", &bytes));
        }
    }
}
