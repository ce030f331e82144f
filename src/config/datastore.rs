//! `[[datastores]]`: the common keys, each backend's keys, and their resolution into a
//! [`Backend`] with every default applied.

use super::ConfigError;
use media_ledger_events::DatastoreId;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What a datastore may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreKind {
    /// Uploads to our homeservers.
    LocalMedia,
    /// Media cached from other servers.
    RemoteMedia,
    /// Generated thumbnails.
    Thumbnails,
    /// Everything.
    All,
}

/// The backend of a datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreType {
    /// A local directory.
    File,
    /// An S3-compatible bucket.
    S3,
}

/// When the S3 client adds or checks checksums (`aws-sdk-s3`'s two settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Only when the operation requires it: works with Garage, MinIO, Ceph and older gateways.
    #[default]
    WhenRequired,
    /// Whenever the operation supports it (the SDK's default; streamed uploads become
    /// aws-chunked with a trailing checksum, which Garage rejects).
    WhenSupported,
}

/// `[[datastores]]`: common keys, then the keys of its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Stable id; events refer to it, so never change it once media exists.
    pub id: DatastoreId,
    /// Backend type: `file` or `s3`.
    #[serde(rename = "type")]
    pub kind: DatastoreType,
    /// Kinds it accepts; empty = read-only.
    #[serde(default)]
    pub kinds: Vec<DatastoreKind>,
    /// `file`: the directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `file`: the directory is storage every node of a cluster reaches (NFS, CephFS): the
    /// only kind of file datastore a cluster (`[database] backend = "postgres"`) accepts.
    #[serde(default)]
    pub shared: bool,
    /// `s3`: endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:3900`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `s3`: region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// `s3`: bucket name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// `s3`: access key id; absent = the `AWS_ACCESS_KEY_ID` environment variable.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `s3`: secret; absent = the `AWS_SECRET_ACCESS_KEY` environment variable.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `s3`: path-style addressing (`endpoint/bucket/key`; default true, needed by most
    /// self-hosted servers).
    #[serde(default)]
    pub path_style: Option<bool>,
    /// `s3`: key prefix inside the bucket (default none).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `s3`: checksum calculation on requests (default `when_required`).
    #[serde(default)]
    pub request_checksum_calculation: Option<ChecksumMode>,
    /// `s3`: checksum validation of responses (default `when_required`).
    #[serde(default)]
    pub response_checksum_validation: Option<ChecksumMode>,
    /// `s3`: send each single-request PUT with its SHA-256 (`x-amz-checksum-sha256`), which
    /// the server checks before storing, and let a transfer verify its copy from the stored
    /// checksum (one HEAD) instead of reading it back (default true). A server that does not
    /// return the checksum is read back as before; set false for one that stores the header
    /// without checking it.
    #[serde(default)]
    pub sha256_checksums: Option<bool>,
    /// `s3`: blobs from this size up are sent as multipart uploads (default 16 MiB).
    #[serde(default)]
    pub multipart_threshold_bytes: Option<u64>,
    /// `s3`: multipart part size (default 8 MiB, at least 5 MiB).
    #[serde(default)]
    pub part_size_bytes: Option<u64>,
    /// `s3`: connect timeout (default 5000 ms).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// `s3`: read timeout (default 30000 ms).
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    /// `s3`: local directory where uploads are spooled and hashed before they are sent
    /// (default `<database.path>-spool/<id>`).
    #[serde(default)]
    pub spool_path: Option<PathBuf>,
    /// The resolved backend, filled by validation.
    #[serde(skip)]
    pub backend: Option<Backend>,
}

/// A datastore's backend with every default applied.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local directory.
    File {
        /// The directory.
        path: PathBuf,
    },
    /// An S3 bucket.
    S3(S3Config),
}

/// Everything an S3 datastore needs.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Key prefix.
    pub prefix: String,
    /// Request checksums.
    pub request_checksum_calculation: ChecksumMode,
    /// Response checksums.
    pub response_checksum_validation: ChecksumMode,
    /// PUTs carry their SHA-256 and copies are verified from it.
    pub sha256_checksums: bool,
    /// Multipart from this size up.
    pub multipart_threshold_bytes: u64,
    /// Part size.
    pub part_size_bytes: u64,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Read timeout.
    pub read_timeout_ms: u64,
    /// Local spool directory.
    pub spool_path: PathBuf,
}

impl DatastoreConfig {
    pub(super) fn resolve(&mut self, database: &Path) -> Result<(), ConfigError> {
        let id = self.id.clone();
        let missing =
            |key: &str| ConfigError::Invalid(format!("datastore {id}: `{key}` is required"));
        let s3_keys = [
            ("endpoint", self.endpoint.is_some()),
            ("bucket", self.bucket.is_some()),
            ("region", self.region.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("path_style", self.path_style.is_some()),
            ("prefix", self.prefix.is_some()),
            ("sha256_checksums", self.sha256_checksums.is_some()),
            ("spool_path", self.spool_path.is_some()),
        ];
        self.backend = Some(match self.kind {
            DatastoreType::File => {
                if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Invalid(format!(
                        "datastore {id}: `{key}` applies to type = \"s3\" only"
                    )));
                }
                Backend::File {
                    path: self.path.clone().ok_or_else(|| missing("path"))?,
                }
            }
            DatastoreType::S3 => {
                if self.path.is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "datastore {id}: `path` applies to type = \"file\" only (use spool_path)"
                    )));
                }
                let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let prefix = self.prefix.clone().unwrap_or_default();
                if prefix.starts_with('/') {
                    return Err(ConfigError::Invalid(format!(
                        "datastore {id}: prefix must not start with /"
                    )));
                }
                let mut spool_default = database.as_os_str().to_owned();
                spool_default.push("-spool");
                Backend::S3(S3Config {
                    endpoint: self.endpoint.clone().ok_or_else(|| missing("endpoint"))?,
                    region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
                    bucket: self.bucket.clone().ok_or_else(|| missing("bucket"))?,
                    access_key_id: self
                        .access_key_id
                        .clone()
                        .or_else(|| env("AWS_ACCESS_KEY_ID"))
                        .ok_or_else(|| missing("access_key_id (or AWS_ACCESS_KEY_ID)"))?,
                    secret_access_key: self
                        .secret_access_key
                        .clone()
                        .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
                        .ok_or_else(|| missing("secret_access_key (or AWS_SECRET_ACCESS_KEY)"))?,
                    path_style: self.path_style.unwrap_or(true),
                    prefix,
                    request_checksum_calculation: self
                        .request_checksum_calculation
                        .unwrap_or_default(),
                    response_checksum_validation: self
                        .response_checksum_validation
                        .unwrap_or_default(),
                    multipart_threshold_bytes: self.multipart_threshold_bytes.unwrap_or(16 << 20),
                    part_size_bytes: self.part_size_bytes.unwrap_or(8 << 20).max(5 << 20),
                    connect_timeout_ms: self.connect_timeout_ms.unwrap_or(5_000),
                    read_timeout_ms: self.read_timeout_ms.unwrap_or(30_000),
                    sha256_checksums: self.sha256_checksums.unwrap_or(true),
                    spool_path: self
                        .spool_path
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(spool_default).join(id.as_str())),
                })
            }
        });
        Ok(())
    }

    /// The directory this datastore owns on local disk (a file datastore's root, an S3
    /// datastore's spool).
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.backend {
            Some(Backend::File { path }) => Some(path),
            Some(Backend::S3(s3)) => Some(&s3.spool_path),
            None => None,
        }
    }
}

impl DatastoreConfig {
    /// Whether new blobs of `kind` may be written here.
    pub fn accepts(&self, kind: DatastoreKind) -> bool {
        self.kinds
            .iter()
            .any(|k| *k == kind || *k == DatastoreKind::All)
    }
}
