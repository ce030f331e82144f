//! Operator messages about the configured homeservers' client-server API (`cs_api`): the
//! start-up check (run in the background, never failing start-up) that says, per homeserver,
//! that it has no `cs_api` (so only static tokens work there), that `cs_api` cannot be reached
//! (with the error's whole cause chain: a TLS failure says which), answers `versions` badly,
//! or serves another `server_name` than the configured `name`; and [`error_chain`], the cause
//! chain of an error for log lines.

use crate::config::{Config, HomeserverConfig};
use crate::error::ApiError;
use media_ledger_events::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// The answer when a request to homeserver `hs` could not be sent: a fixed 503 message for the
/// client, the error with its whole cause chain (a TLS failure says why) for the log.
pub fn unreachable(hs: &ServerName, e: &reqwest::Error) -> ApiError {
    ApiError::unavailable(
        "the homeserver cannot be reached",
        format_args!("homeserver {hs} unreachable: {}", error_chain(e)),
    )
}

/// An error and its sources, `: `-separated (reqwest's own text is only "error sending
/// request for url (…)"; the cause — refused, DNS, certificate — is in its sources). A source
/// whose text its parent already shows is left out.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What the check found for one homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// All is well (logged at INFO).
    Fine(String),
    /// The operator should act (logged at WARN).
    Problem(String),
}

/// The message for a homeserver without `cs_api`.
pub fn no_cs_api(hs: &HomeserverConfig) -> Finding {
    Finding::Problem(format!(
        "homeserver {}: no cs_api configured, so its access tokens cannot be checked: only the static tokens of [auth] (and the shared secret) are accepted there, every other token is answered 401 M_UNKNOWN_TOKEN; set cs_api to the homeserver's client-server API base URL (e.g. \"http://127.0.0.1:8008\")",
        hs.name
    ))
}

/// The message for a whoami answer naming a user of another server than the homeserver's
/// configured `name` (logged by `auth` on each such token, which it refuses).
pub fn name_mismatch(hs: &HomeserverConfig, user: &str, server_name: &str) -> String {
    format!(
        "homeserver {name}: whoami on its cs_api {cs_api} answered {user}, a user of {server_name}: the token is refused (401). If {server_name} is that homeserver's server_name, configure name = \"{server_name}\" (the server name in its MXC URIs, and the Host clients use); else point cs_api at the homeserver of {name}",
        name = hs.name,
        cs_api = hs.cs_api.as_deref().unwrap_or("(none)"),
    )
}

/// Checks one homeserver's `cs_api`: `GET /_matrix/client/versions` must answer 200; then, when
/// the homeserver publishes `GET /_matrix/key/v2/server` there (Synapse does on its client
/// listener by default), its `server_name` must be the configured `name`.
pub async fn check(client: &reqwest::Client, hs: &HomeserverConfig) -> Finding {
    let Some(cs_api) = &hs.cs_api else {
        return no_cs_api(hs);
    };
    let base = cs_api.trim_end_matches('/');
    let url = format!("{base}/_matrix/client/versions");
    let resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return Finding::Problem(format!(
                "homeserver {}: cs_api {cs_api} cannot be reached (GET {url}: {}); its users' access tokens are answered 503 until it can",
                hs.name,
                error_chain(&e)
            ))
        }
    };
    if !resp.status().is_success() {
        return Finding::Problem(format!(
            "homeserver {}: GET {url} answered {}: is cs_api the base URL of the homeserver's client-server API (without /_matrix)?",
            hs.name,
            resp.status()
        ));
    }
    let key_url = format!("{base}/_matrix/key/v2/server");
    let served_name = match client.get(&key_url).send().await {
        Ok(r) if r.status().is_success() => {
            crate::federation::client::capped_json(r, crate::federation::client::MAX_JSON_BYTES)
                .await
                .ok()
                .and_then(|v| v["server_name"].as_str().map(str::to_owned))
        }
        _ => None,
    };
    match served_name {
        Some(other) if !other.eq_ignore_ascii_case(hs.name.as_str()) => Finding::Problem(format!(
            "homeserver {name}: cs_api {cs_api} is the homeserver of server_name {other}, not {name}: every token will resolve to a user @…:{other} and be refused (401). Configure name = \"{other}\", or point cs_api at the homeserver of {name}",
            name = hs.name
        )),
        Some(_) => Finding::Fine(format!(
            "homeserver {}: cs_api {cs_api} reachable, server_name matches",
            hs.name
        )),
        None => Finding::Fine(format!("homeserver {}: cs_api {cs_api} reachable", hs.name)),
    }
}

/// Checks every homeserver and logs what it finds (spawned at start-up).
pub async fn check_all(config: Arc<Config>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    for hs in &config.homeservers {
        match check(&client, hs).await {
            Finding::Fine(m) => tracing::info!("{m}"),
            Finding::Problem(m) => tracing::warn!("{m}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hs(name: &str, cs_api: Option<String>) -> HomeserverConfig {
        HomeserverConfig {
            name: media_ledger_events::ServerName::parse_strict(name).unwrap(),
            cs_api,
            default: true,
            read_through: None,
            hosts: Vec::new(),
        }
    }

    /// A loopback server answering every connection with `answer(path)`, plain HTTP.
    async fn serve(answer: fn(&str) -> String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let _ = s.write_all(answer(&path).as_bytes()).await;
                });
            }
        });
        format!("127.0.0.1:{}", addr.port())
    }

    fn json(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[test]
    fn no_cs_api_says_only_static_tokens_work() {
        let Finding::Problem(m) = no_cs_api(&hs("hs.test", None)) else {
            panic!("not a problem")
        };
        assert!(m.contains("hs.test") && m.contains("no cs_api"), "{m}");
        assert!(m.contains("static tokens") && m.contains("401"), "{m}");
    }

    #[test]
    fn a_name_mismatch_names_both_servers() {
        let m = name_mismatch(
            &hs("media.test", Some("http://127.0.0.1:8008".into())),
            "@alice:real.test",
            "real.test",
        );
        assert!(m.contains("media.test") && m.contains("real.test"), "{m}");
        assert!(m.contains("name = \"real.test\""), "{m}");
    }

    #[tokio::test]
    async fn a_tls_failure_says_its_cause() {
        // https:// to a plain HTTP server: the TLS handshake fails.
        let addr = serve(|_| json("{}")).await;
        let f = check(&client(), &hs("hs.test", Some(format!("https://{addr}")))).await;
        let Finding::Problem(m) = f else {
            panic!("not a problem: {f:?}")
        };
        assert!(m.contains("cannot be reached"), "{m}");
        // More than reqwest's "error sending request for url (…)": rustls's cause follows.
        let lower = m.to_ascii_lowercase();
        assert!(
            [
                "corrupt message",
                "invalidcontenttype",
                "tls",
                "handshake",
                "certificate"
            ]
            .iter()
            .any(|w| lower.contains(w)),
            "no TLS cause in: {m}"
        );
    }

    #[tokio::test]
    async fn unreachable_not_a_homeserver_and_another_server_name_are_problems() {
        // Nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let f = check(
            &client(),
            &hs("hs.test", Some(format!("http://127.0.0.1:{port}"))),
        )
        .await;
        let Finding::Problem(m) = f else {
            panic!("{f:?}")
        };
        assert!(
            m.contains("cannot be reached") && m.contains("onnection refused"),
            "{m}"
        );

        let addr = serve(|_| {
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()
        })
        .await;
        let f = check(&client(), &hs("hs.test", Some(format!("http://{addr}/")))).await;
        let Finding::Problem(m) = f else {
            panic!("{f:?}")
        };
        assert!(m.contains("404") && m.contains("base URL"), "{m}");

        let addr = serve(|path| {
            if path.starts_with("/_matrix/key/v2/server") {
                json(r#"{"server_name":"real.test"}"#)
            } else {
                json(r#"{"versions":["v1.11"]}"#)
            }
        })
        .await;
        let f = check(&client(), &hs("media.test", Some(format!("http://{addr}")))).await;
        let Finding::Problem(m) = f else {
            panic!("{f:?}")
        };
        assert!(m.contains("media.test") && m.contains("real.test"), "{m}");

        let f = check(&client(), &hs("real.test", Some(format!("http://{addr}")))).await;
        assert!(matches!(f, Finding::Fine(_)), "{f:?}");
    }
}
