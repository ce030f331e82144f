//! Where a server is and whether we may talk to it: pins, IP literals and explicit ports,
//! `/.well-known/matrix/server`, port 8448; and the rule that a server that is not pinned must
//! resolve only to public addresses.

use super::client::{Client, RemoteError, Resolved};
use media_ledger_events::ServerName;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
                || (o[0] == 198 && (18..20).contains(&o[1])))
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
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
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

impl Client {
    /// Where `server` is.
    pub async fn resolve(&self, server: &ServerName) -> Result<Resolved, RemoteError> {
        if let Some(base) = self.config.pins.get(server.as_str()) {
            return Ok(Resolved {
                base: base.trim_end_matches('/').to_owned(),
                pinned: true,
            });
        }
        if let Some((r, at)) = self.cache.lock().get(server) {
            if at.elapsed() < Duration::from_secs(3600) {
                return Ok(r.clone());
            }
        }
        let (host, port) = host_port(server);
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        let resolved = if literal || port.is_some() {
            Resolved {
                base: format!("https://{}", server.as_str()),
                pinned: false,
            }
        } else {
            match self.well_known(&host).await {
                Some(delegated) => Resolved {
                    base: delegated,
                    pinned: false,
                },
                None => Resolved {
                    base: format!("https://{host}:8448"),
                    pinned: false,
                },
            }
        };
        self.cache
            .lock()
            .insert(server.clone(), (resolved.clone(), Instant::now()));
        Ok(resolved)
    }

    pub(super) async fn well_known(&self, host: &str) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let http = self.http_for(&url, false).await.ok()?;
        let resp = http.get(&url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let v: serde_json::Value = resp.json().await.ok()?;
        let target: ServerName = v.get("m.server")?.as_str()?.parse().ok()?;
        let (h, port) = host_port(&target);
        Some(match port {
            Some(p) => format!("https://{h}:{p}"),
            None => format!("https://{h}:8448"),
        })
    }

    /// The HTTP client for `url`: the shared one for a pinned server; otherwise one that
    /// connects only to the addresses just checked (so a DNS answer that changes after the
    /// check cannot point the request at a private address).
    pub(super) async fn http_for(
        &self,
        url: &str,
        pinned: bool,
    ) -> Result<reqwest::Client, RemoteError> {
        if pinned {
            return Ok(self.http.clone());
        }
        let (host, addrs) = self.check_url(url).await?;
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
    ) -> Result<(String, Vec<std::net::SocketAddr>), RemoteError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| RemoteError::Failed(format!("bad URL {url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| RemoteError::Failed(format!("URL without host: {url}")))?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| RemoteError::Failed(format!("cannot resolve {bare}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() || addrs.iter().any(|ip| !is_public(*ip)) {
            return Err(RemoteError::Forbidden(format!(
                "{bare} resolves to a private or reserved address"
            )));
        }
        Ok((
            bare.to_owned(),
            addrs
                .into_iter()
                .map(|ip| std::net::SocketAddr::new(ip, port))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::filename_of;
    use super::*;

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
