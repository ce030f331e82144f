//! Who is asking, and for which host, behind a reverse proxy.
//!
//! The TCP peer is the client unless it is one of `server.trusted_proxies`; only then are
//! `X-Forwarded-For` (the client: the rightmost address that is not itself a trusted proxy),
//! `X-Forwarded-Host` (the host the client asked for; its last value, the one the proxy next
//! to us set) and `X-Forwarded-Proto` believed. From any other peer those headers are ignored,
//! so a client cannot choose its logged address or its homeserver by sending them.
//!
//! The middleware ([`forwarded`]) puts the result ([`ClientInfo`]) in the request's extensions
//! (the extractors pick the homeserver by its `host`) and in the request's span (`client`,
//! `host`; the extractors add `user`), so every log line of the request carries them. A host
//! that names no homeserver is logged (WARN the first time per host, at most
//! [`MAX_WARNED_HOSTS`] remembered) and, with `server.refuse_unknown_hosts`, answered 400
//! `M_UNRECOGNIZED` instead of going to the default homeserver (`/healthz` and `/metrics`, for
//! probes, are never refused).

use crate::config::{Config, IpNet};
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// How many distinct unknown hosts are remembered (each warned once); past it they are logged
/// at DEBUG only, so a client inventing hosts cannot grow memory or flood the log.
pub const MAX_WARNED_HOSTS: usize = 256;

/// The client and host of a request, as far as they can be trusted.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address: the peer, or what a trusted proxy forwarded.
    pub client: Option<IpAddr>,
    /// The host the request is for: `Host`, or a trusted proxy's `X-Forwarded-Host`.
    pub host: Option<String>,
    /// `http` or `https` as a trusted proxy said (`X-Forwarded-Proto`); none otherwise.
    pub proto: Option<String>,
}

/// What the middleware needs: the trusted proxies, the host rules, the hosts warned about.
pub struct HostCheck {
    config: Arc<Config>,
    warned: Mutex<HashSet<String>>,
}

impl HostCheck {
    /// The check of `config`.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self {
            config,
            warned: Mutex::new(HashSet::new()),
        })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.config
            .server
            .trusted_proxies
            .iter()
            .any(|n: &IpNet| n.contains(ip))
    }

    /// The client and host of a request from `peer` with `headers`.
    pub fn client_info(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientInfo {
        let host = header_str(headers, header::HOST.as_str()).map(str::to_owned);
        let Some(peer) = peer.filter(|p| self.trusted(*p)) else {
            return ClientInfo {
                client: peer,
                host,
                proto: None,
            };
        };
        // Rightmost first: each proxy appends the address it saw; the first one that is not a
        // trusted proxy is the client. An entry that is not an address ends the walk (what is
        // left of it was written by the client).
        let mut client = peer;
        if let Some(xff) = all_values(headers, "x-forwarded-for") {
            for hop in xff.rsplit(',') {
                match parse_hop(hop) {
                    Some(ip) => {
                        client = ip;
                        if !self.trusted(ip) {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        let last = |name: &str| {
            all_values(headers, name).and_then(|v| {
                v.rsplit(',')
                    .map(str::trim)
                    .find(|s| !s.is_empty())
                    .map(str::to_owned)
            })
        };
        ClientInfo {
            client: Some(client),
            host: last("x-forwarded-host").or(host),
            proto: last("x-forwarded-proto")
                .map(|p| p.to_ascii_lowercase())
                .filter(|p| p == "http" || p == "https"),
        }
    }

    /// Logs an unknown host (WARN once per host); whether it is refused.
    fn unknown_host(&self, host: Option<&str>) -> bool {
        let shown = host.unwrap_or("(none)");
        let first = {
            let mut warned = self.warned.lock();
            warned.len() < MAX_WARNED_HOSTS && warned.insert(shown.to_ascii_lowercase())
        };
        let refuse = self.config.server.refuse_unknown_hosts;
        if first {
            tracing::warn!(
                host = %shown,
                "a request for a host that names no homeserver (no [[homeservers]] name or hosts): {}",
                if refuse { "refused (server.refuse_unknown_hosts)" } else { "served as the default homeserver's" }
            );
        } else {
            tracing::debug!(host = %shown, refused = refuse, "request for an unknown host");
        }
        refuse
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every value of a (possibly repeated) header, joined by commas; none if absent or not text.
fn all_values(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    (!values.is_empty()).then(|| values.join(","))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

/// The middleware: [`ClientInfo`] into the extensions and the span; unknown hosts logged, and
/// refused when configured.
pub async fn forwarded(
    axum::extract::State(check): axum::extract::State<Arc<HostCheck>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let info = check.client_info(peer, req.headers());
    let span = tracing::Span::current();
    if let Some(c) = info.client {
        span.record("client", tracing::field::display(c));
    }
    if let Some(h) = &info.host {
        span.record("host", tracing::field::display(h));
    }
    let known = info
        .host
        .as_deref()
        .is_some_and(|h| check.config.homeserver_named(h).is_some());
    let probe = matches!(req.uri().path(), "/healthz" | "/metrics");
    if !known && !probe && check.unknown_host(info.host.as_deref()) {
        return ApiError::UnknownHost(info.host.unwrap_or_default()).into_response();
    }
    req.extensions_mut().insert(info);
    next.run(req).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(trusted: &[&str]) -> Arc<HostCheck> {
        let mut config = crate::config::Config::parse(
            "[server]\nbind = \"127.0.0.1:0\"\n[database]\npath = \"/tmp/x\"\n\
             [[homeservers]]\nname = \"hs.test\"\n\
             [[datastores]]\nid = \"f\"\ntype = \"file\"\npath = \"/tmp/x-media\"\nkinds = [\"all\"]\n",
        )
        .unwrap();
        config.server.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
        HostCheck::new(Arc::new(config))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let c = check(&["10.0.0.0/8", "::1"]);
        let h = headers(&[
            ("host", "proxy.internal"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-host", "hs.test"),
            ("x-forwarded-proto", "HTTPS"),
        ]);
        // From a stranger: the peer and its Host, nothing forwarded.
        let i = c.client_info(Some(ip("198.51.100.1")), &h);
        assert_eq!(i.client, Some(ip("198.51.100.1")));
        assert_eq!(i.host.as_deref(), Some("proxy.internal"));
        assert_eq!(i.proto, None);
        // From a trusted proxy: the rightmost untrusted hop (not the client-written 6.6.6.6).
        for peer in ["10.9.9.9", "::1", "::ffff:10.0.0.1"] {
            let i = c.client_info(Some(ip(peer)), &h);
            assert_eq!(i.client, Some(ip("203.0.113.7")), "{peer}");
            assert_eq!(i.host.as_deref(), Some("hs.test"));
            assert_eq!(i.proto.as_deref(), Some("https"));
        }
        // A garbage hop ends the walk at the last good one; ports are tolerated.
        let h = headers(&[("x-forwarded-for", "junk, [2001:db8::1]:443, 10.0.0.2:80")]);
        let i = c.client_info(Some(ip("10.0.0.1")), &h);
        assert_eq!(i.client, Some(ip("2001:db8::1")));
        let h = headers(&[("x-forwarded-for", "junk")]);
        assert_eq!(
            c.client_info(Some(ip("10.0.0.1")), &h).client,
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn ip_blocks() {
        let n: IpNet = "192.168.0.0/16".parse().unwrap();
        assert!(n.contains(ip("192.168.255.1")));
        assert!(!n.contains(ip("192.169.0.1")));
        assert!(!n.contains(ip("::1")));
        let all: IpNet = "::/0".parse().unwrap();
        assert!(all.contains(ip("2001:db8::1")));
        let any4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(any4.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("example.org".parse::<IpNet>().is_err());
    }
}
