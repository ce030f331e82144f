//! Media: the command side of uploads ([`write`]) and the read side every handler and service
//! reads media through ([`read`]: the record, waiting on pending async uploads or fetching
//! remote media, where a blob is, opening or checking it). What both sides and the other
//! writers of blobs (remote media, thumbnails) share lives here: new media ids and the choice
//! of a datastore for new bytes.

pub mod read;
pub mod spool;
pub mod write;

pub use read::MediaReader;
pub use spool::Spool;
pub use write::{
    drain, quarantined_error, refuse_quarantined, MediaService, UploadMeta, DRAIN_MAX_BYTES,
};

use crate::config::DatastoreKind;
use crate::datastore::{Datastore, Datastores};
use crate::error::ApiError;
use crate::ledger::Ledger;
use media_ledger_events::MediaId;
use media_ledger_projections::datastore_sizes;
use media_ledger_projections::names;
use rand::distr::{Alphanumeric, SampleString};
use std::sync::Arc;

/// Length of generated media ids.
pub const MEDIA_ID_LEN: usize = 32;

/// A fresh random media id.
pub fn new_media_id() -> Result<MediaId, ApiError> {
    Alphanumeric
        .sample_string(&mut rand::rng(), MEDIA_ID_LEN)
        .parse()
        .map_err(ApiError::internal)
}

/// Among the datastores accepting `kind`, the one holding the fewest bytes (running figures
/// of `datastore_sizes`).
pub fn pick_datastore(
    ledger: &Ledger,
    datastores: &Datastores,
    kind: DatastoreKind,
) -> Result<Arc<dyn Datastore>, ApiError> {
    let sizes = ledger.view(names::DATASTORE_SIZES)?;
    datastores
        .pick(kind, |id| {
            datastore_sizes::totals(&sizes, id).map(|t| t.total_bytes)
        })?
        .cloned()
        .ok_or_else(|| {
            let what = match kind {
                DatastoreKind::LocalMedia => "local media",
                DatastoreKind::RemoteMedia => "remote media",
                DatastoreKind::Thumbnails => "thumbnails",
                DatastoreKind::All => "anything",
            };
            ApiError::unavailable(
                "no datastore accepts this kind of media",
                format!("no datastore accepts {what}"),
            )
        })
}
