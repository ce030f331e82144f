//! Where a server is and whether we may talk to it: pins, IP literals and explicit ports,
//! `/.well-known/matrix/server`, SRV (`_matrix-fed._tcp`, then `_matrix._tcp`), port 8448;
//! and the rule that a server that is not pinned must resolve only to public addresses.

use super::client::{Client, RemoteError, Resolved};
use super::srv::pick_srv;
use media_ledger_events::ServerName;
use std::net::IpAddr;
use std::time::Duration;

/// Whether an address may be fetched from without a pin.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 192 && o[1] == 0 && o[2] == 2)
                || (o[0] == 192 && o[1] == 88 && o[2] == 99)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || (o[0] == 198 && o[1] == 51 && o[2] == 100)
                || (o[0] == 203 && o[1] == 0 && o[2] == 113)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if s[0] == 0x2002 {
                // 6to4: the IPv4 address is in segments 1 and 2.
                let v4 = std::net::Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 (64:ff9b::/96 carries an IPv4 address; 64:ff9b:1::/48 is local use).
                if s[2] == 1 {
                    return false;
                }
                let v4 = std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0))
        }
    }
}

pub(super) fn host_port(server: &ServerName) -> (String, Option<u16>) {
    let s = server.as_str();
    let host = server.host().to_owned();
    let port = s
        .strip_prefix(&host)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|p| p.parse().ok());
    (host, port)
}

fn is_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

fn direct(host: &str, port: Option<u16>) -> Resolved {
    Resolved {
        base: format!("https://{host}:{}", port.unwrap_or(8448)),
        pinned: false,
        connect_host: None,
    }
}

impl Client {
    /// Where `server` is (spec "Resolving server names"): from the cache, else discovered.
    /// Discovery does not fill the cache; [`Self::remember`] does once a server answered
    /// there, so names that lead nowhere (a forged X-Matrix origin) are not kept.
    pub async fn resolve(&self, server: &ServerName) -> Result<Resolved, RemoteError> {
        if let Some(base) = self.config.pins.get(server.as_str()) {
            return Ok(Resolved {
                base: base.trim_end_matches('/').to_owned(),
                pinned: true,
                connect_host: None,
            });
        }
        if let Some(r) = self.cache.get(server) {
            return Ok(r);
        }
        let (host, port) = host_port(server);
        let resolved = if is_literal(&host) || port.is_some() {
            direct(&host, port)
        } else {
            match self.well_known(&host).await {
                Some(delegated) => {
                    let (dh, dport) = host_port(&delegated);
                    if is_literal(&dh) || dport.is_some() {
                        direct(&dh, dport)
                    } else {
                        self.srv_or_default(&dh).await
                    }
                }
                None => self.srv_or_default(&host).await,
            }
        };
        Ok(resolved)
    }

    /// Keeps `resolved` as where `server` is, for an hour (a pinned one needs no entry).
    pub(super) fn remember(&self, server: &ServerName, resolved: Resolved) {
        if !resolved.pinned {
            self.cache.insert(server.clone(), resolved);
        }
    }

    /// How many resolutions are cached (for tests of the bound).
    pub fn cached_resolutions(&self) -> usize {
        self.cache.len()
    }

    /// `_matrix-fed._tcp.<host>`, then the deprecated `_matrix._tcp.<host>`, else port 8448.
    /// An SRV answer keeps `host` in the URL (Host header and certificate) and connects to
    /// the record's target.
    async fn srv_or_default(&self, host: &str) -> Resolved {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let records = self.dns.srv(&format!("{service}.{host}.")).await;
            if let Some(best) = pick_srv(&records) {
                return Resolved {
                    base: format!("https://{host}:{}", best.port),
                    pinned: false,
                    connect_host: Some(best.target.trim_end_matches('.').to_owned()),
                };
            }
        }
        direct(host, None)
    }

    /// The `m.server` of `host`'s `/.well-known/matrix/server`, if it answers one.
    pub(super) async fn well_known(&self, host: &str) -> Option<ServerName> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let http = self.http_for(&url, false, None).await.ok()?;
        let resp = http.get(&url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v = super::client::capped_json(resp, super::client::MAX_JSON_BYTES)
            .await
            .ok()?;
        ServerName::parse_strict(v.get("m.server")?.as_str()?).ok()
    }

    /// The HTTP client for `url`: the shared one for a pinned server; otherwise one that
    /// connects only to the addresses just checked (so a DNS answer that changes after the
    /// check cannot point the request at a private address).
    pub(super) async fn http_for(
        &self,
        url: &str,
        pinned: bool,
        connect_host: Option<&str>,
    ) -> Result<reqwest::Client, RemoteError> {
        if pinned {
            return Ok(self.http.clone());
        }
        let (host, addrs) = self.check_url(url, connect_host).await?;
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| RemoteError::Failed(format!("building a client: {e}")))
    }

    /// Refuses a URL whose host resolves to a non-public address; returns the host and the
    /// checked socket addresses.
    pub(super) async fn check_url(
        &self,
        url: &str,
        connect_host: Option<&str>,
    ) -> Result<(String, Vec<std::net::SocketAddr>), RemoteError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| RemoteError::Failed(format!("bad URL {url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| RemoteError::Failed(format!("URL without host: {url}")))?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // An SRV target: connect there, keep the URL's host for Host and TLS.
        let lookup = connect_host.unwrap_or(bare);
        let addrs = resolve_checked(lookup, port, is_public).await?;
        Ok((bare.to_owned(), addrs))
    }
}

/// The addresses of `host` (a name or an IP literal) at `port`, all of which `permitted`
/// accepts, else `Forbidden`: the one address rule of every outgoing fetch (federation and
/// link previews). The caller connects to exactly these addresses (`resolve_to_addrs`), so a
/// DNS answer that changes after the check cannot point the request elsewhere.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    permitted: impl Fn(IpAddr) -> bool,
) -> Result<Vec<std::net::SocketAddr>, RemoteError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| RemoteError::Failed(format!("cannot resolve {bare}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() || addrs.iter().any(|ip| !permitted(*ip)) {
        return Err(RemoteError::Forbidden(format!(
            "{bare} resolves to a private or reserved address"
        )));
    }
    Ok(addrs
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::client::filename_of;
    use super::super::srv::{SrvLookup, SrvRecord};
    use super::*;
    use std::collections::HashMap;

    /// Answers from a table; records every query.
    struct FakeDns(
        HashMap<String, Vec<SrvRecord>>,
        parking_lot::Mutex<Vec<String>>,
    );

    #[async_trait::async_trait]
    impl SrvLookup for FakeDns {
        async fn srv(&self, name: &str) -> Vec<SrvRecord> {
            self.1.lock().push(name.to_owned());
            self.0.get(name).cloned().unwrap_or_default()
        }
    }

    fn client(answers: &[(&str, u16, &str)]) -> Client {
        let mut table: HashMap<String, Vec<SrvRecord>> = HashMap::new();
        for (name, port, target) in answers {
            table
                .entry((*name).to_owned())
                .or_default()
                .push(SrvRecord {
                    priority: 10,
                    weight: 5,
                    port: *port,
                    target: (*target).to_owned(),
                });
        }
        let key = super::super::keys::SigningKey::from_seed("t", [7; 32]).unwrap();
        let config = crate::config::FederationConfig {
            connect_timeout_ms: 200,
            timeout_ms: 500,
            ..Default::default()
        };
        Client::new(
            config,
            super::super::keyfile::Keyring::single(std::sync::Arc::new(key)),
        )
        .with_dns(Box::new(FakeDns(
            table,
            parking_lot::Mutex::new(Vec::new()),
        )))
    }

    // `.invalid` never resolves, so the well-known step finds nothing (RFC 6761).
    #[tokio::test]
    async fn discovery_steps() {
        let c = client(&[
            ("_matrix-fed._tcp.fed.invalid.", 8449, "target.invalid."),
            ("_matrix._tcp.old.invalid.", 9000, "legacy.invalid."),
        ]);
        let r = c.resolve(&"fed.invalid".parse().unwrap()).await.unwrap();
        assert_eq!(
            (r.base.as_str(), r.connect_host.as_deref()),
            ("https://fed.invalid:8449", Some("target.invalid"))
        );
        let r = c.resolve(&"old.invalid".parse().unwrap()).await.unwrap();
        assert_eq!(
            (r.base.as_str(), r.connect_host.as_deref()),
            ("https://old.invalid:9000", Some("legacy.invalid"))
        );
        let r = c.resolve(&"plain.invalid".parse().unwrap()).await.unwrap();
        assert_eq!(
            (r.base.as_str(), r.connect_host),
            ("https://plain.invalid:8448", None)
        );
        // An explicit port or an IP literal skips well-known and SRV.
        let r = c
            .resolve(&"fed.invalid:1234".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (r.base.as_str(), r.connect_host),
            ("https://fed.invalid:1234", None)
        );
        let r = c.resolve(&"[2001:db8::1]".parse().unwrap()).await.unwrap();
        assert_eq!(r.base, "https://[2001:db8::1]:8448");
        assert!(!r.pinned);
    }

    // A forged X-Matrix origin leads nowhere: nothing about it is kept.
    #[tokio::test]
    async fn failed_resolutions_are_not_cached() {
        let c = client(&[]);
        for i in 0..5 {
            let server: ServerName = format!("forged-{i}.invalid").parse().unwrap();
            assert!(c.server_keys(&server).await.is_err());
        }
        assert_eq!(c.cached_resolutions(), 0);
        assert!(c.keys.is_empty());
    }

    #[test]
    fn address_rules() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2002:7f00:1::",
            "2002:0a00:0001::",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "2002:0101:0101::",
        ] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn filenames() {
        assert_eq!(
            filename_of("inline; filename=\"a.png\"").as_deref(),
            Some("a.png")
        );
        assert_eq!(
            filename_of("attachment; filename*=utf-8''na%C3%AFve.pdf").as_deref(),
            Some("naïve.pdf")
        );
        assert_eq!(filename_of("inline"), None);
    }

    #[test]
    fn ports() {
        assert_eq!(
            host_port(&"a.example:8448".parse().unwrap()),
            ("a.example".into(), Some(8448))
        );
        assert_eq!(
            host_port(&"a.example".parse().unwrap()),
            ("a.example".into(), None)
        );
        assert_eq!(
            host_port(&"[::1]:80".parse().unwrap()),
            ("[::1]".into(), Some(80))
        );
    }
}
