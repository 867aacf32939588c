//! Which Web Push endpoints the relay POSTs to: the SSRF guard.
//!
//! A Web Push endpoint is a URL the client chooses, so the relay must not be turned into a
//! tool for reaching its own network. An endpoint is refused unless it is `https://` (or
//! `http://` when the operator allows it), at most [`MAX_ENDPOINT_LEN`] bytes, without
//! credentials or fragment, and every address its host names or resolves to lies outside
//! the loopback, private, link-local, CGNAT, multicast, unique-local, unspecified and other
//! special-purpose ranges (IPv4-mapped, IPv4-compatible and NAT64 forms of IPv4 addresses
//! count as the IPv4 address). The operator's allow-list (`[webpush] allow_hosts`,
//! `allow_networks`) lifts the range rule for the names or networks it lists.
//!
//! Subscribe checks what needs no DNS ([`EndpointPolicy::check_url`]); the sender checks the
//! resolved addresses before every connection ([`EndpointPolicy::check_addr`]) and connects
//! only to the addresses it checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::IpBlock;

/// Longest endpoint accepted at Subscribe, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 1000;

/// Why an endpoint is refused. The texts name the rule, never the endpoint's path (which
/// holds the subscription's secret token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Longer than [`MAX_ENDPOINT_LEN`].
    #[error("must be at most {MAX_ENDPOINT_LEN} bytes (got {0})")]
    TooLong(usize),
    /// Not an absolute URL.
    #[error("is not an absolute URL ({0})")]
    NotUrl(String),
    /// `http://` without the operator's leave, or another scheme.
    #[error("must be an https:// URL (got {0}://){hint}", hint = if .0 == "http" { "; this relay does not allow http ([webpush] allow_http)" } else { "" })]
    Scheme(String),
    /// User name or password in the URL.
    #[error("must not carry a user name or password")]
    Credentials,
    /// A `#fragment`.
    #[error("must not have a #fragment")]
    Fragment,
    /// An address in a refused range.
    #[error(
        "{subject} {kind} address ({ip}); this relay does not push to loopback, private, \
         link-local, CGNAT, multicast, unique-local or other special-purpose addresses \
         unless [webpush] allow_networks or allow_hosts names them"
    )]
    Refused {
        /// "host is a" (an IP literal) or "host resolves to a" (a name).
        subject: &'static str,
        /// The range, e.g. "loopback".
        kind: &'static str,
        /// The refused address.
        ip: IpAddr,
    },
}

/// The operator's rules for Web Push endpoints (`[webpush]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    allow_http: bool,
    allow_hosts: Vec<String>,
    allow_networks: Vec<IpBlock>,
    /// Accept every syntactically valid endpoint (reading back stored registrations).
    any: bool,
}

/// The policy of a relay whose config says nothing: https only, no special addresses.
pub static STRICT: EndpointPolicy = EndpointPolicy::strict();

/// Accepts any well-formed endpoint: for reading back what Subscribe already checked.
pub static ANY: EndpointPolicy = EndpointPolicy {
    allow_http: true,
    allow_hosts: Vec::new(),
    allow_networks: Vec::new(),
    any: true,
};

impl EndpointPolicy {
    /// https only, no special-purpose addresses.
    pub const fn strict() -> Self {
        Self {
            allow_http: false,
            allow_hosts: Vec::new(),
            allow_networks: Vec::new(),
            any: false,
        }
    }

    /// The operator's policy: `allow_http`, host names (matched case-insensitively, exactly)
    /// and networks whose addresses are exempt from the range rule.
    pub fn new(allow_http: bool, allow_hosts: &[String], allow_networks: Vec<IpBlock>) -> Self {
        Self {
            allow_http,
            allow_hosts: allow_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            allow_networks,
            any: false,
        }
    }

    /// Whether `http://` endpoints are accepted.
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    /// Checks what needs no DNS: length, scheme, shape, and the address of an IP-literal
    /// host. Returns the parsed URL.
    pub fn check_url(&self, endpoint: &str) -> Result<reqwest::Url, EndpointError> {
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(EndpointError::TooLong(endpoint.len()));
        }
        let url = reqwest::Url::parse(endpoint).map_err(|e| EndpointError::NotUrl(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(EndpointError::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(EndpointError::Fragment);
        }
        match url.host() {
            None => return Err(EndpointError::NotUrl("no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check_literal(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_literal(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Whether `host` (a name, as in the URL) is exempt by `allow_hosts`.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Checks an address that `host` resolved to.
    pub fn check_addr(&self, host: &str, ip: IpAddr) -> Result<(), EndpointError> {
        if self.any || self.host_allowed(host) {
            return Ok(());
        }
        self.check_ip(ip, "host resolves to a")
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), EndpointError> {
        if self.any || self.host_allowed(&ip.to_string()) {
            return Ok(());
        }
        self.check_ip(ip, "host is a")
    }

    fn check_ip(&self, ip: IpAddr, subject: &'static str) -> Result<(), EndpointError> {
        if self.allow_networks.iter().any(|b| b.contains(ip)) {
            return Ok(());
        }
        match special_range(ip) {
            Some(kind) => Err(EndpointError::Refused { subject, kind, ip }),
            None => Ok(()),
        }
    }
}

/// The special-purpose range `ip` lies in, if any (RFC 6890 and its updates): what a push
/// service on the public Internet never uses.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => "unspecified (\"this network\")",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "CGNAT (shared address space)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ => return None,
    };
    Some(kind)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // Forms that carry an IPv4 address reach that address: judge it as IPv4.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let seg = ip.segments();
    let embedded = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..6] == [0; 6] {
        // :: and ::1 first; the rest of ::/96 is IPv4-compatible (deprecated).
        return match ip {
            Ipv6Addr::UNSPECIFIED => Some("unspecified"),
            Ipv6Addr::LOCALHOST => Some("loopback"),
            _ => special_v4(embedded).or(Some("IPv4-compatible")),
        };
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (RFC 6052): the gateway forwards to the embedded address.
        return special_v4(embedded);
    }
    let kind = match seg[0] {
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xfc00..=0xfdff => "unique-local",
        0xff00..=0xffff => "multicast",
        0x0100 if seg[1..4] == [0, 0, 0] => "discard-only",
        0x2001 if seg[1] == 0x0db8 => "documentation",
        0x2001 if seg[1] < 0x0200 => "IETF protocol assignment",
        // 6to4: the relay router forwards to the embedded IPv4 address.
        0x2002 => {
            let v4 = Ipv4Addr::new(
                (seg[1] >> 8) as u8,
                seg[1] as u8,
                (seg[2] >> 8) as u8,
                seg[2] as u8,
            );
            return special_v4(v4);
        }
        _ => return None,
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_recognised() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("CGNAT (shared address space)")),
            ("100.128.0.1", None),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("0.0.0.0", Some("unspecified (\"this network\")")),
            ("8.8.8.8", None),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("64:ff9b::a00:1", Some("private")),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::", Some("loopback")),
            ("2001:db8::1", Some("documentation")),
            ("2606:4700::1111", None),
        ];
        for (addr, want) in cases {
            assert_eq!(special_range(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn urls_are_checked_without_dns() {
        let p = EndpointPolicy::strict();
        let err = |u: &str| p.check_url(u).unwrap_err().to_string();
        assert!(p.check_url("https://push.example.com/wpush/v2/abc").is_ok());
        assert!(p.check_url("https://8.8.8.8/x").is_ok());
        assert_eq!(
            err("http://push.example.com/x"),
            "must be an https:// URL (got http://); this relay does not allow http ([webpush] allow_http)"
        );
        assert_eq!(
            err("ftp://push.example.com/x"),
            "must be an https:// URL (got ftp://)"
        );
        assert!(err("https://127.0.0.1:8443/x").starts_with("host is a loopback address (127.0.0.1);"));
        assert!(err("https://10.0.0.1/x").starts_with("host is a private address (10.0.0.1);"));
        assert!(err("https://[::1]/x").starts_with("host is a loopback address (::1);"));
        assert!(
            err("https://169.254.169.254/latest")
                .starts_with("host is a link-local address (169.254.169.254);")
        );
        assert!(
            err("https://[::ffff:7f00:1]/x").starts_with("host is a loopback address (::ffff:127.0.0.1);")
        );
        assert!(err("https://2130706433/x").starts_with("host is a loopback address (127.0.0.1);"));
        assert!(err("https://0x7f.1/x").starts_with("host is a loopback address"));
        assert_eq!(
            err("https://u:p@push.example.com/x"),
            "must not carry a user name or password"
        );
        assert_eq!(err("https://push.example.com/x#f"), "must not have a #fragment");
        assert!(err("not a url").starts_with("is not an absolute URL"));
        let long = format!("https://push.example.com/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert_eq!(
            err(&long),
            format!("must be at most 1000 bytes (got {})", long.len())
        );
        // Exactly at the limit is fine.
        let edge = format!("https://p.example/{}", "a".repeat(MAX_ENDPOINT_LEN - 18));
        assert_eq!(edge.len(), MAX_ENDPOINT_LEN);
        assert!(p.check_url(&edge).is_ok());
    }

    #[test]
    fn the_allow_list_lifts_the_range_rule() {
        let nets = vec![IpBlock::parse("127.0.0.1/32").unwrap()];
        let p = EndpointPolicy::new(true, &["Push.Internal.".to_owned()], nets);
        assert!(p.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(p.check_url("https://127.0.0.2/x").is_err());
        assert!(p.check_addr("localhost", ip("127.0.0.1")).is_ok());
        assert!(p.check_addr("localhost", ip("::1")).is_err());
        assert!(p.check_addr("push.internal", ip("10.1.1.1")).is_ok());
        assert!(p.check_addr("PUSH.internal.", ip("192.168.0.1")).is_ok());
        let e = p
            .check_addr("other.example", ip("10.1.1.1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("host resolves to a private address (10.1.1.1);"),
            "{e}"
        );
        assert!(STRICT.check_addr("localhost", ip("127.0.0.1")).is_err());
        assert!(ANY.check_url("http://127.0.0.1/x").is_ok());
    }
}
