//! Sending one webhook without becoming an SSRF hole: the host is resolved once, every address
//! must be public (or explicitly allowed), and the request goes only to the address that was
//! checked (no second lookup, so DNS rebinding has no window). No redirects, no proxy, a
//! timeout, and the response body is not read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

use super::{WebhookSecret, is_public_ip, parse_url};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer.
    Delivered(u16),
    /// 410 Gone: the receiver asks us to stop.
    Gone,
    /// Any other answer or a network error; retry later (after `retry_after` if given).
    Failed { status: Option<u16>, reason: String, retry_after: Option<Duration> },
    /// The destination is not allowed (private address, bad URL): never retried.
    Refused(String),
}

/// Why a URL's host may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No address to call: no host or port, or the name does not resolve.
    #[error("{0}")]
    Unresolved(String),
    /// An address the host resolves to is neither public nor allowed.
    #[error("{host} resolves to {ip}, which is not a public address")]
    NotPublic { host: String, ip: IpAddr },
}

/// Resolves `url`'s host once and returns the one address to connect to (pin it: no second
/// lookup, so DNS rebinding has no window). Every address must be public or one of `allowed`
/// (exact `ip:port`), not just the first: an attacker controls the answer's order. Webhooks
/// and URL imports both call through this.
pub async fn checked_address(
    url: &Url,
    allowed: &[SocketAddr],
) -> Result<SocketAddr, AddressError> {
    let port = url.port_or_known_default().ok_or(AddressError::Unresolved("no port".into()))?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| AddressError::Unresolved(format!("cannot resolve {name}: {e}")))?
            .collect(),
        None => return Err(AddressError::Unresolved("no host".into())),
    };
    let permitted = |addr: &SocketAddr| is_public_ip(addr.ip()) || allowed.contains(addr);
    if let Some(bad) = addrs.iter().find(|a| !permitted(a)) {
        let host = url.host_str().unwrap_or_default().to_owned();
        return Err(AddressError::NotPublic { host, ip: bad.ip() });
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| AddressError::Unresolved("the host resolves to no address".into()))
}

/// Sends webhooks.
#[derive(Debug, Clone)]
pub struct Deliverer {
    /// Exact socket addresses allowed although not public (tests, single-host setups).
    pub allowed: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl Deliverer {
    /// Resolves and checks the destination; returns the URL and the one address to connect to.
    pub async fn destination(&self, raw: &str) -> Result<(Url, SocketAddr), String> {
        let url = parse_url(raw).map_err(|e| e.to_string())?;
        let addr = checked_address(&url, &self.allowed).await.map_err(|e| e.to_string())?;
        Ok((url, addr))
    }

    /// Sends `body` signed with `secret` as message `id`.
    pub async fn send(
        &self,
        raw_url: &str,
        id: &str,
        body: &[u8],
        secret: &WebhookSecret,
    ) -> Delivery {
        let (url, addr) = match self.destination(raw_url).await {
            Ok(ok) => ok,
            Err(reason) => return Delivery::Refused(reason),
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)));
        if let Some(Host::Domain(name)) = url.host() {
            // Connect to the checked address only.
            builder = builder.resolve(name, addr);
        }
        let client = match builder.build() {
            Ok(client) => client,
            Err(e) => {
                return Delivery::Failed { status: None, reason: e.to_string(), retry_after: None };
            }
        };
        let timestamp = crate::jobs::now_ms() as i64 / 1000;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "tcoder-webhooks")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", secret.sign(id, timestamp, body))
            .body(body.to_vec())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                Delivery::Delivered(response.status().as_u16())
            }
            Ok(response) if response.status() == reqwest::StatusCode::GONE => Delivery::Gone,
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let status = response.status().as_u16();
                let reason = if response.status().is_redirection() {
                    "redirects are not followed".to_owned()
                } else {
                    format!("HTTP {status}")
                };
                Delivery::Failed { status: Some(status), reason, retry_after }
            }
            Err(e) => Delivery::Failed { status: None, reason: e.to_string(), retry_after: None },
        }
    }
}
