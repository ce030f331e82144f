//! Datastores must not share storage (ARCHITECTURE invariant 14): the start-up sweep and
//! transfers assume each owns its space. Two config entries can name one storage in ways a
//! string comparison misses — a symlinked directory, `a/../b`, a bind mount, or one S3 server
//! as `http://127.0.0.1:9000` and `http://localhost:9000` — so paths are compared as the
//! filesystem resolves them (realpath, then device + inode of every ancestor) and endpoints
//! after normalisation. The identity markers (`datastore::marker`) catch at start-up what
//! config cannot see (another DNS name for the same S3 server).

use super::{Backend, ConfigError, DatastoreConfig, S3Config};
use std::path::{Component, Path, PathBuf};

/// Refuses two datastores whose local directories (file roots, S3 spools) are the same or
/// nest, and two S3 datastores on the same server and bucket whose prefixes nest.
pub(super) fn check(datastores: &[DatastoreConfig]) -> Result<(), ConfigError> {
    for (i, a) in datastores.iter().enumerate() {
        for b in datastores.iter().skip(i + 1) {
            if let (Some(da), Some(db)) = (a.local_dir(), b.local_dir()) {
                if let Some(why) = dirs_overlap(da, db) {
                    return Err(ConfigError::Invalid(format!(
                        "datastores {} and {} share a directory ({} and {}: {why}): each needs its own",
                        a.id,
                        b.id,
                        da.display(),
                        db.display()
                    )));
                }
            }
            if let (Some(Backend::S3(x)), Some(Backend::S3(y))) = (&a.backend, &b.backend) {
                if same_bucket(x, y)
                    && (x.prefix.starts_with(&y.prefix) || y.prefix.starts_with(&x.prefix))
                {
                    return Err(ConfigError::Invalid(format!(
                        "datastores {} and {} share bucket {} on one server ({} and {}, prefixes {:?} and {:?}): give each its own bucket or a prefix the other's does not contain",
                        a.id, b.id, x.bucket, x.endpoint, y.endpoint, x.prefix, y.prefix
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Why directories `a` and `b` are one storage or nest, if they do.
fn dirs_overlap(a: &Path, b: &Path) -> Option<String> {
    let (ra, rb) = (resolved(a), resolved(b));
    if ra.starts_with(&rb) || rb.starts_with(&ra) {
        return Some(format!(
            "they resolve to {} and {}",
            ra.display(),
            rb.display()
        ));
    }
    // A bind mount shows one directory under two unrelated paths: compare the identity of
    // each root with every ancestor of the other.
    for (inner, outer) in [(&ra, &rb), (&rb, &ra)] {
        if let Some(id) = identity(outer) {
            if let Some(same) = inner.ancestors().find(|p| identity(p) == Some(id)) {
                return Some(format!(
                    "{} and {} are the same directory (device and inode)",
                    same.display(),
                    outer.display()
                ));
            }
        }
    }
    None
}

/// `path` as the filesystem resolves it: the longest existing ancestor through realpath
/// (symlinks and `..` resolved), the rest (which does not exist yet) folded lexically.
pub(super) fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let parts: Vec<Component<'_>> = abs.components().collect();
    for split in (1..=parts.len()).rev() {
        let existing: PathBuf = parts[..split].iter().collect();
        if let Ok(mut out) = std::fs::canonicalize(&existing) {
            for c in &parts[split..] {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(n) => out.push(n),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
            return out;
        }
    }
    abs
}

/// Device and inode of an existing directory.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Whether two S3 datastores reach the same bucket of the same server.
fn same_bucket(x: &S3Config, y: &S3Config) -> bool {
    x.bucket == y.bucket && endpoint_key(&x.endpoint) == endpoint_key(&y.endpoint)
}

/// An endpoint as a comparable `host:port/path`: host lowercased (a trailing dot dropped), the
/// port explicit (80/443 by scheme), the path without its trailing slash, and every loopback
/// name (`localhost`, `127.0.0.0/8`, `[::1]`) one host. The scheme is left out: one port
/// speaks one protocol.
pub(super) fn endpoint_key(endpoint: &str) -> String {
    let Ok(url) = reqwest::Url::parse(endpoint.trim()) else {
        return endpoint.trim().trim_end_matches('/').to_ascii_lowercase();
    };
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    let host = if loopback { "loopback".into() } else { host };
    let port = url
        .port_or_known_default()
        .map(|p| p.to_string())
        .unwrap_or_default();
    format!("{host}:{port}{}", url.path().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::endpoint_key;

    #[test]
    fn endpoints_naming_one_server_compare_equal() {
        let same = [
            "http://127.0.0.1:19000",
            "http://localhost:19000/",
            "HTTP://LocalHost:19000",
            "http://[::1]:19000",
            "http://127.0.0.2:19000",
            "http://localhost.:19000//",
        ];
        for e in same {
            assert_eq!(endpoint_key(e), "loopback:19000", "{e}");
        }
        assert_eq!(
            endpoint_key("https://S3.Example.com"),
            endpoint_key("https://s3.example.com:443/")
        );
        assert_eq!(
            endpoint_key("http://s3.example.com"),
            endpoint_key("http://s3.example.com:80")
        );
        assert_ne!(
            endpoint_key("http://localhost:19000"),
            endpoint_key("http://localhost:19001")
        );
        assert_ne!(
            endpoint_key("http://a.example.com"),
            endpoint_key("http://b.example.com")
        );
    }
}
