//! Which client a request counts against, for rate limiting.
//!
//! The socket peer is the client unless it is one of our own reverse proxies
//! (`rate_limits.trusted_proxies`). Only then is `X-Forwarded-For` read, right to left, skipping
//! hops inside the trusted ranges: the first address outside them is the client. Everything left
//! of that is whatever the client chose to send and is never believed. An entry that does not
//! parse stops the walk, and the request counts against the last trusted hop: a broken proxy
//! then makes its clients share one bucket, which is safe, instead of letting a client pick its
//! own key.
//!
//! IPv6 clients are keyed by their /64: one subscriber usually holds a whole /64 and could
//! otherwise rotate through 2^64 addresses to escape any per-address limit. IPv4-mapped IPv6
//! addresses (`::ffff:203.0.113.7`, as a dual-stack socket reports IPv4 peers) count as IPv4.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::HeaderName;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How many `X-Forwarded-For` entries are examined at most; real proxy chains are short.
const MAX_HOPS: usize = 16;

/// The rate-limiting identity of a client: a full IPv4 address or an IPv6 /64.
///
/// A client IP address is not personal data that DESIGN.md requires us to hide, so `Display`
/// shows it and logs may carry it; it must still never become a metric label (unbounded
/// cardinality).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key for a client at `ip`: IPv4 as is, IPv6 truncated to its /64.
    pub fn from_ip(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V6(v6) => Self(IpAddr::V6(Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            ))),
            v4 => Self(v4),
        }
    }

    /// The IPv4 address, or the first address of the IPv6 /64.
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

/// `203.0.113.7` or `2001:db8:1:2::/64`.
impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The address ranges of our own reverse proxies and load balancers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A `rate_limits.trusted_proxies` entry that is neither an address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range like 10.0.0.0/8 or ::1/128")]
pub struct InvalidProxyRange(String);

impl TrustedProxies {
    /// No trusted proxies: `X-Forwarded-For` is ignored and the socket peer is the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parse entries like `10.0.0.0/8`, `::1/128` or a bare address `127.0.0.1`.
    pub fn parse<S: AsRef<str>>(
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, InvalidProxyRange> {
        entries
            .into_iter()
            .map(|entry| parse_range(entry.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

fn parse_range(entry: &str) -> Result<IpNet, InvalidProxyRange> {
    let text = entry.trim();
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| InvalidProxyRange(text.to_owned()))?;
    // Peers are compared as IPv4 when they are IPv4-mapped, so a mapped range must be too.
    if let IpNet::V6(v6) = net
        && let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96)
        && let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return Ok(IpNet::V4(mapped));
    }
    Ok(net.trunc())
}

/// A list of strings, or one comma-separated string (handy in an environment variable:
/// `RELIEFLINE_RATE_LIMITS__TRUSTED_PROXIES=10.0.0.0/8,::1`).
impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entries {
            List(Vec<String>),
            Text(String),
        }
        let parsed = match Entries::deserialize(deserializer)? {
            Entries::List(list) => Self::parse(list),
            Entries::Text(text) => Self::parse(text.split(',').filter(|s| !s.trim().is_empty())),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// The key a request counts against. See the module documentation for the rules.
pub fn client_key(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientKey {
    let mut client = canonical(peer.ip());
    if !trusted.contains(client) {
        return ClientKey::from_ip(client);
    }
    let mut hops = 0;
    'walk: for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else { break };
        for entry in text.rsplit(',') {
            hops += 1;
            if hops > MAX_HOPS {
                break 'walk;
            }
            let Some(ip) = parse_forwarded_entry(entry) else {
                break 'walk;
            };
            client = ip;
            if !trusted.contains(ip) {
                break 'walk;
            }
        }
    }
    ClientKey::from_ip(client)
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:443`) or in brackets or quotes as some proxies write it.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let text = entry.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<Ipv6Addr>().ok())
        .map(|v6| canonical(IpAddr::V6(v6)))
}

/// IPv4-mapped IPv6 addresses as the IPv4 addresses they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(ip, |v4: Ipv4Addr| IpAddr::V4(v4)),
        v4 => v4,
    }
}

/// Extractor: the [`ClientKey`] of the request, from the socket peer and trusted proxies.
pub struct Client(pub ClientKey);

impl axum::extract::FromRequestParts<crate::app::AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::app::AppState,
    ) -> Result<Self, Self::Rejection> {
        // The accept loop always records the peer; a request built in-process has none.
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
        Ok(Self(client_key(
            peer,
            &parts.headers,
            &state.config.rate_limits.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40_000)
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn key(ip: &str) -> ClientKey {
        ClientKey::from_ip(ip.parse().unwrap())
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let headers = xff(&["198.51.100.1"]);
        assert_eq!(
            client_key(peer("203.0.113.7"), &headers, &TrustedProxies::none()),
            key("203.0.113.7")
        );
        // A peer outside the trusted ranges cannot choose its key either.
        assert_eq!(
            client_key(peer("203.0.113.7"), &headers, &proxies(&["10.0.0.0/8"])),
            key("203.0.113.7")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "::1/128", "127.0.0.1"]);
        let cases = [
            // proxy appended the client
            (vec!["198.51.100.1"], "198.51.100.1"),
            // the client sent a forged entry; the proxy appended the real one
            (vec!["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
            // two proxy layers, both trusted
            (vec!["1.2.3.4, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),
            // several header lines read as one list
            (vec!["1.2.3.4", "198.51.100.1, 10.1.2.3"], "198.51.100.1"),
            // ports, brackets and quotes as some proxies write them
            (vec!["198.51.100.1:5123"], "198.51.100.1"),
            (vec!["\"[2001:db8::7]:443\""], "2001:db8::"),
            (vec!["[2001:db8::7]"], "2001:db8::"),
            (vec!["::ffff:198.51.100.1"], "198.51.100.1"),
        ];
        for (values, expected) in cases {
            assert_eq!(
                client_key(peer("10.0.0.2"), &xff(&values), &trusted),
                key(expected),
                "{values:?}"
            );
        }
    }

    #[test]
    fn malformed_or_missing_entries_fall_back_to_the_last_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let cases = [
            (vec![], "10.0.0.2"),
            (vec![""], "10.0.0.2"),
            (vec!["unknown"], "10.0.0.2"),
            (vec!["198.51.100.1, garbage"], "10.0.0.2"),
            (vec!["198.51.100.1, garbage, 10.9.9.9"], "10.9.9.9"),
            (vec!["198.51.100.1,,10.9.9.9"], "10.9.9.9"),
            // every hop trusted: the request came from inside
            (vec!["10.3.3.3, 10.9.9.9"], "10.3.3.3"),
        ];
        for (values, expected) in cases {
            assert_eq!(
                client_key(peer("10.0.0.2"), &xff(&values), &trusted),
                key(expected),
                "{values:?}"
            );
        }
        let long_chain = vec!["10.0.0.1"; 40].join(",") + ",198.51.100.1";
        assert_eq!(
            client_key(peer("10.0.0.2"), &xff(&[&long_chain]), &trusted),
            key("198.51.100.1")
        );
        let forged_tail = "198.51.100.1,".to_owned() + &vec!["10.0.0.1"; 40].join(",");
        assert_eq!(
            client_key(peer("10.0.0.2"), &xff(&[&forged_tail]), &trusted),
            key("10.0.0.1"),
            "the walk is bounded"
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        let none = TrustedProxies::none();
        let a = client_key(peer("2001:db8:1:2::1"), &HeaderMap::new(), &none);
        let b = client_key(
            peer("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            &HeaderMap::new(),
            &none,
        );
        let other = client_key(peer("2001:db8:1:3::1"), &HeaderMap::new(), &none);
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("203.0.113.7").to_string(), "203.0.113.7");
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let mapped = client_key(
            peer("::ffff:203.0.113.7"),
            &HeaderMap::new(),
            &TrustedProxies::none(),
        );
        assert_eq!(mapped, key("203.0.113.7"));
        let trusted = proxies(&["127.0.0.1"]);
        assert_eq!(
            client_key(peer("::ffff:127.0.0.1"), &xff(&["198.51.100.1"]), &trusted),
            key("198.51.100.1")
        );
        let mapped_range = proxies(&["::ffff:10.0.0.0/104"]);
        assert!(mapped_range.contains("10.200.0.1".parse().unwrap()));
    }

    #[test]
    fn trusted_ranges_parse_from_config_text() {
        let trusted = proxies(&["10.0.0.0/8", " ::1/128 ", "127.0.0.1", "192.168.1.77/24"]);
        assert!(trusted.contains("10.255.0.1".parse().unwrap()));
        assert!(trusted.contains("::1".parse().unwrap()));
        assert!(trusted.contains("127.0.0.1".parse().unwrap()));
        assert!(!trusted.contains("127.0.0.2".parse().unwrap()));
        assert!(trusted.contains("192.168.1.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "localhost", "", "10.0.0"] {
            let err = TrustedProxies::parse([bad]).unwrap_err();
            assert!(err.to_string().contains("CIDR"), "{bad}: {err}");
        }
    }

    #[test]
    fn deserialises_from_a_list_or_a_comma_separated_string() {
        let list: TrustedProxies = serde_json::from_str(r#"["10.0.0.0/8", "::1"]"#).unwrap();
        let text: TrustedProxies = serde_json::from_str(r#""10.0.0.0/8, ::1""#).unwrap();
        assert_eq!(list, text);
        let empty: TrustedProxies = serde_json::from_str(r#""""#).unwrap();
        assert!(empty.is_empty());
        let err = serde_json::from_str::<TrustedProxies>(r#"["10.0.0.0/8", "nope"]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`"), "{err}");
    }
}
