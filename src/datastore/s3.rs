//! The `s3` datastore: an S3-compatible bucket (AWS, Garage, MinIO, Ceph, s3s-fs).
//!
//! Keys: `<prefix><hh>/<hh>/<sha256 hex>`. Uploads are spooled to a local directory first (to
//! be hashed), then sent with one `PutObject` below the multipart threshold, or as a multipart
//! upload read part by part from the spool file, so memory never holds the whole blob.
//! `commit` returns only after S3 acknowledged the object.

use super::{BlobStream, Datastore, DatastoreError, Listing, MARKER_NAME};
use crate::config::{ChecksumMode, S3Config};
use async_trait::async_trait;
use aws_sdk_s3::config::{
    timeout::TimeoutConfig, BehaviorVersion, Builder, Credentials, Region,
    RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures_util::StreamExt;
use media_ledger_events::{BlobLocation, DatastoreId, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::io::ReaderStream;

/// A datastore in an S3 bucket.
pub struct S3Datastore {
    id: DatastoreId,
    client: Client,
    bucket: String,
    prefix: String,
    uri: String,
    spool: PathBuf,
    multipart_threshold_bytes: u64,
    part_size_bytes: u64,
    sha256_checksums: bool,
}

/// A SHA-256 as S3's `x-amz-checksum-sha256` spells it.
fn checksum_of(sha: &Sha256) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(sha.0)
}

fn backend(context: &str, e: impl std::fmt::Display) -> DatastoreError {
    DatastoreError::Backend {
        context: context.to_owned(),
        message: e.to_string(),
    }
}

fn sdk<E: std::error::Error + 'static, R: std::fmt::Debug>(
    context: &str,
) -> impl FnOnce(SdkError<E, R>) -> DatastoreError + '_ {
    move |e| backend(context, DisplayErrorContext(&e))
}

impl S3Datastore {
    /// Builds the client (no request is made until first use).
    pub fn open(id: DatastoreId, c: &S3Config, spool: &Path) -> Result<Self, DatastoreError> {
        std::fs::create_dir_all(spool)
            .map_err(DatastoreError::io(format!("creating {}", spool.display())))?;
        let checksum_req = match c.request_checksum_calculation {
            ChecksumMode::WhenRequired => RequestChecksumCalculation::WhenRequired,
            ChecksumMode::WhenSupported => RequestChecksumCalculation::WhenSupported,
        };
        let checksum_resp = match c.response_checksum_validation {
            ChecksumMode::WhenRequired => ResponseChecksumValidation::WhenRequired,
            ChecksumMode::WhenSupported => ResponseChecksumValidation::WhenSupported,
        };
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
            .read_timeout(Duration::from_millis(c.read_timeout_ms))
            .build();
        let conf = Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .endpoint_url(&c.endpoint)
            .force_path_style(c.path_style)
            .credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "media-ledger-config",
            ))
            .request_checksum_calculation(checksum_req)
            .response_checksum_validation(checksum_resp)
            .timeout_config(timeouts)
            .build();
        let host = c
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&c.endpoint)
            .trim_end_matches('/');
        Ok(Self {
            id,
            client: Client::from_conf(conf),
            bucket: c.bucket.clone(),
            prefix: c.prefix.clone(),
            uri: format!("s3://{host}/{}", c.bucket),
            spool: spool.to_owned(),
            multipart_threshold_bytes: c.multipart_threshold_bytes,
            part_size_bytes: c.part_size_bytes.max(5 << 20),
            sha256_checksums: c.sha256_checksums,
        })
    }

    fn key(&self, location: &BlobLocation) -> String {
        format!("{}{}", self.prefix, location.as_str())
    }

    async fn key_size(&self, key: &str) -> Result<Option<u64>, DatastoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(
                h.content_length()
                    .and_then(|l| u64::try_from(l).ok())
                    .unwrap_or(0),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(backend("checking an object", DisplayErrorContext(&e))),
        }
    }

    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), DatastoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk("starting a multipart upload"))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| backend("starting a multipart upload", "no upload id"))?
            .to_owned();
        let result = self.upload_parts(key, &upload_id, path, size).await;
        match result {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(sdk("completing a multipart upload"))?;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(error = %DisplayErrorContext(&abort), "cannot abort a multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, DatastoreError> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = self.part_size_bytes.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| backend("reading a spool file", e))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(i64::try_from(len).unwrap_or(i64::MAX))
                .body(body)
                .send()
                .await
                .map_err(sdk("uploading a part"))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        Ok(parts)
    }
}

#[async_trait]
impl Datastore for S3Datastore {
    fn id(&self) -> &DatastoreId {
        &self.id
    }

    fn type_name(&self) -> &'static str {
        "s3"
    }

    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn spool_dir(&self) -> &Path {
        &self.spool
    }

    fn spool_needs_sync(&self) -> bool {
        false
    }

    async fn commit(&self, spooled: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
        let location = self.put_from(spooled, sha).await?;
        if let Err(e) = tokio::fs::remove_file(spooled).await {
            tracing::warn!(path = %spooled.display(), error = %e, "cannot remove a spool file");
        }
        Ok(location)
    }

    async fn put_from(&self, path: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
        let location = super::content_location(sha)?;
        let key = self.key(&location);
        let size = tokio::fs::metadata(path)
            .await
            .map_err(DatastoreError::io("reading a file to store"))?
            .len();
        // Always PUT: keys are content-addressed, so overwriting is safe, and an object of
        // the right size is not proof of the right bytes.
        if size >= self.multipart_threshold_bytes {
            self.put_multipart(&key, path, size).await?;
        } else {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| backend("reading a file to store", e))?;
            // With its SHA-256 the server refuses bytes that arrive damaged (BadDigest) and
            // keeps the checksum, from which a transfer verifies its copy.
            let checksum = self.sha256_checksums.then(|| checksum_of(sha));
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                .set_checksum_sha256(checksum)
                .body(body)
                .send()
                .await
                .map_err(sdk("storing an object"))?;
        }
        Ok(location)
    }

    async fn size_of(&self, location: &BlobLocation) -> Result<Option<u64>, DatastoreError> {
        self.key_size(&self.key(location)).await
    }

    async fn vouches_for(
        &self,
        location: &BlobLocation,
        sha: &Sha256,
        size: u64,
    ) -> Result<Option<bool>, DatastoreError> {
        if !self.sha256_checksums {
            return Ok(None);
        }
        let head = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(location))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(h) => h,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                return Ok(Some(false))
            }
            Err(e) => return Err(backend("checking an object", DisplayErrorContext(&e))),
        };
        if head.content_length().and_then(|l| u64::try_from(l).ok()) != Some(size) {
            return Ok(Some(false));
        }
        // A multipart object's checksum is of its parts ("…-N"), and an object written
        // without one has none: neither says anything about the whole, so the caller reads.
        Ok(match head.checksum_sha256() {
            Some(c) if !c.contains('-') => Some(c == checksum_of(sha)),
            _ => None,
        })
    }

    async fn open(
        &self,
        location: &BlobLocation,
        offset: u64,
        len: u64,
    ) -> Result<BlobStream, DatastoreError> {
        if len == 0 {
            if !self.exists(location).await? {
                return Err(DatastoreError::Missing(location.clone()));
            }
            return Ok(futures_util::stream::empty().boxed());
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(location))
            .range(range)
            .send()
            .await;
        match out {
            Ok(o) => Ok(ReaderStream::with_capacity(o.body.into_async_read(), 256 * 1024).boxed()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(DatastoreError::Missing(location.clone()))
            }
            Err(e) => Err(backend("reading an object", DisplayErrorContext(&e))),
        }
    }

    async fn list(&self) -> Result<Listing, DatastoreError> {
        let mut listing = Listing::default();
        let mut spool = tokio::fs::read_dir(&self.spool)
            .await
            .map_err(DatastoreError::io("listing the spool"))?;
        while let Some(e) = spool
            .next_entry()
            .await
            .map_err(DatastoreError::io("listing the spool"))?
        {
            listing.temp_files.push(e.path());
        }
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(sdk("listing objects"))?;
            for obj in page.contents() {
                let Some(rest) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                if let Some((loc, sha)) = super::parse_content_location(rest) {
                    listing.blobs.push((loc, sha));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(listing)
    }

    async fn delete(&self, location: &BlobLocation) -> Result<(), DatastoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(location))
            .send()
            .await
            .map_err(sdk("deleting an object"))?;
        Ok(())
    }

    async fn read_marker(&self) -> Result<Option<String>, DatastoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{MARKER_NAME}", self.prefix))
            .range("bytes=0-1023")
            .send()
            .await;
        match out {
            Ok(o) => {
                let bytes = o
                    .body
                    .collect()
                    .await
                    .map_err(|e| backend("reading the identity marker", e))?
                    .into_bytes();
                Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(backend(
                "reading the identity marker",
                DisplayErrorContext(&e),
            )),
        }
    }

    async fn write_marker(&self) -> Result<(), DatastoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{MARKER_NAME}", self.prefix))
            .body(ByteStream::from(format!("{}\n", self.id).into_bytes()))
            .send()
            .await
            .map_err(sdk("writing the identity marker"))?;
        Ok(())
    }
}
