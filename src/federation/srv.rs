//! SRV look-ups for server discovery (`_matrix-fed._tcp`, then `_matrix._tcp`), behind a
//! trait so the discovery steps can be tested without a DNS server.

use async_trait::async_trait;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Among equal priorities, higher is preferred.
    pub weight: u16,
    /// Port to connect to.
    pub port: u16,
    /// Host to connect to (may end with a dot).
    pub target: String,
}

/// Answers SRV queries; an error or no record is an empty list.
#[async_trait]
pub trait SrvLookup: Send + Sync {
    /// The records of `name` (a fully qualified name ending with a dot).
    async fn srv(&self, name: &str) -> Vec<SrvRecord>;
}

/// The system's resolver (`/etc/resolv.conf`), created on first use.
pub struct SystemDns {
    resolver: tokio::sync::OnceCell<Option<hickory_resolver::TokioAsyncResolver>>,
}

impl SystemDns {
    /// A resolver that reads the system configuration on first use.
    pub fn new() -> Self {
        Self {
            resolver: tokio::sync::OnceCell::new(),
        }
    }
}

impl Default for SystemDns {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl SrvLookup for SystemDns {
    async fn srv(&self, name: &str) -> Vec<SrvRecord> {
        let resolver = self
            .resolver
            .get_or_init(|| async {
                match hickory_resolver::TokioAsyncResolver::tokio_from_system_conf() {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "no DNS resolver for SRV look-ups");
                        None
                    }
                }
            })
            .await;
        let Some(resolver) = resolver else {
            return Vec::new();
        };
        match resolver.srv_lookup(name).await {
            Ok(answer) => answer
                .iter()
                .map(|r| SrvRecord {
                    priority: r.priority(),
                    weight: r.weight(),
                    port: r.port(),
                    target: r.target().to_utf8(),
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The record to use: lowest priority, then highest weight (a deterministic stand-in for the
/// RFC 2782 weighted choice). A target of `.` means "no service".
pub fn pick_srv(records: &[SrvRecord]) -> Option<&SrvRecord> {
    records
        .iter()
        .filter(|r| r.target != "." && !r.target.is_empty())
        .min_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    #[test]
    fn picks_lowest_priority_then_highest_weight() {
        let rs = [
            rec(20, 100, 1, "a."),
            rec(10, 1, 2, "b."),
            rec(10, 50, 3, "c."),
        ];
        assert_eq!(pick_srv(&rs).map(|r| r.port), Some(3));
        assert_eq!(pick_srv(&[rec(0, 0, 1, ".")]), None);
        assert_eq!(pick_srv(&[]), None);
    }
}
