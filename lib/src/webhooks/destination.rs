//! Where a webhook may be sent. A user-supplied URL must never make tcoder call into its own
//! network (Redis, NATS, Fly's 6PN `fdaa::/16`, cloud metadata at 169.254.169.254): literal
//! addresses are checked when the job is created, and every resolved address again at send time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("scheme must be https (or http)")]
    Scheme,
    #[error("URLs with user names or passwords are not allowed")]
    Credentials,
    #[error("{0} is not a public address")]
    NotPublic(String),
}

/// Parses and checks a webhook URL. Non-public hosts are refused unless the URL names one of
/// `allowed` (`[webhooks] allowed`: a literal ip:port, or `localhost` with a loopback entry's
/// port) — the same list the dispatcher delivers to.
pub fn check_url(raw: &str, allowed: &[SocketAddr]) -> Result<Url, DestinationError> {
    let url = parse_url(raw)?;
    let port = url.port_or_known_default().unwrap_or(0);
    let listed = |ip: IpAddr| allowed.contains(&SocketAddr::new(ip, port));
    match url.host() {
        Some(Host::Ipv4(ip)) if listed(IpAddr::V4(ip)) => return Ok(url),
        Some(Host::Ipv6(ip)) if listed(IpAddr::V6(ip)) => return Ok(url),
        Some(Host::Domain("localhost"))
            if allowed.iter().any(|a| a.ip().is_loopback() && a.port() == port) =>
        {
            return Ok(url);
        }
        _ => {}
    }
    match url.host() {
        None => Err(DestinationError::Invalid("no host".to_owned())),
        Some(Host::Ipv4(ip)) if !is_public_ip(IpAddr::V4(ip)) => {
            Err(DestinationError::NotPublic(ip.to_string()))
        }
        Some(Host::Ipv6(ip)) if !is_public_ip(IpAddr::V6(ip)) => {
            Err(DestinationError::NotPublic(ip.to_string()))
        }
        Some(Host::Domain(name)) if is_internal_name(name) => {
            Err(DestinationError::NotPublic(name.to_owned()))
        }
        Some(_) => Ok(url),
    }
}

/// Parses a webhook URL: http(s), no credentials in it. Says nothing about where it points.
pub fn parse_url(raw: &str) -> Result<Url, DestinationError> {
    let url = Url::parse(raw).map_err(|e| DestinationError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(DestinationError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DestinationError::Credentials);
    }
    Ok(url)
}

fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || [".localhost", ".internal", ".local"].iter().any(|s| name.ends_with(s))
}

/// Whether an address is reachable on the public internet (and so safe to call).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped / -compatible and NAT64 addresses carry an IPv4 address: judge that.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7 (includes Fly's fdaa::/16)
        || (first & 0xffc0) == 0xfe80 // link local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible / reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_destinations_are_refused() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://169.254.169.254/latest/meta-data",
            "http://[fdaa::3]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://10.1.2.3/",
            "http://100.64.0.1/",
            "http://localhost/",
            "http://redis.internal/",
            "http://0.0.0.0/",
        ] {
            assert!(check_url(url, &[]).is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn public_destinations_and_schemes() {
        assert!(check_url("https://example.com/hooks/tcoder", &[]).is_ok());
        assert!(check_url("https://93.184.216.34/x", &[]).is_ok());
        assert_eq!(check_url("ftp://example.com/", &[]), Err(DestinationError::Scheme));
        assert_eq!(check_url("https://u:p@example.com/", &[]), Err(DestinationError::Credentials));
        // Exactly the allowed ip:port (and localhost for a loopback entry), nothing else.
        let allowed = ["127.0.0.1:9".parse().unwrap()];
        assert!(check_url("http://127.0.0.1:9/", &allowed).is_ok());
        assert!(check_url("http://localhost:9/hook", &allowed).is_ok());
        assert!(check_url("http://127.0.0.1:10/", &allowed).is_err());
        assert!(check_url("http://10.0.0.1:9/", &allowed).is_err());
    }
}
