//! The signing key file and which key signs for which homeserver.
//!
//! The file is in Synapse's format (signedjson's `write_signing_keys`): one line per key,
//! `ed25519 <version> <unpadded base64 of the 32-byte seed>\n`, blank lines skipped. As in
//! Synapse, the first key signs and every key of the file is the server's. Remote servers verify
//! our X-Matrix requests with the keys the *homeserver* publishes, so our key must be one of
//! them: either media-ledger's line is appended to Synapse's `signing_key_path` file
//! ([`SigningKey::synapse_line`], `media-ledger keys print`), or media-ledger signs with
//! Synapse's own key ([`import`], `media-ledger keys import`, or `signing_key_path` pointing at
//! Synapse's file).
//!
//! - [`SigningKey::load_or_generate`]: a key at start-up (a missing file is generated).
//! - [`Keyring`]: one key per homeserver (`federation.signing_key_paths`, falling back to
//!   `federation.signing_key_path`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use media_ledger_events::ServerName;
use rand::Rng as _;

use super::keys::{is_valid_version, SigningKey, B64, ED25519};
use super::FederationError;
use crate::config::Config;

impl SigningKey {
    /// Loads the key from `path` (Synapse's signing key file format: the first key of the
    /// file), or, when there is no file there, generates a new key with a random version
    /// `a_XXXX` and writes it there, creating the parent directories, with permissions 0600 on
    /// Unix.
    ///
    /// A file that exists but holds no key, or a line that is not a well-formed
    /// `ed25519 <version> <seed>`, is refused, never overwritten.
    pub fn load_or_generate(path: &Path) -> Result<Self, FederationError> {
        match std::fs::read_to_string(path) {
            Ok(text) => first_key(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::generate_into(path),
            Err(e) => Err(FederationError::Key(format!(
                "cannot read signing key file {}: {e}",
                path.display()
            ))),
        }
    }

    /// The key's line in Synapse's signing key file format, newline included:
    /// `ed25519 <version> <unpadded base64 of the seed>\n`. Appended to the homeserver's
    /// `signing_key_path` file, it makes the homeserver publish this key.
    pub fn synapse_line(&self) -> String {
        format!("{ED25519} {} {}\n", self.version(), B64.encode(self.seed()))
    }

    /// Generates a new key and writes it to `path`, which did not exist.
    fn generate_into(path: &Path) -> Result<Self, FederationError> {
        let mut rng = rand::rng();
        // Synapse's style of version: `a_` and four random letters or digits.
        let mut version = String::from("a_");
        version.extend(
            (&mut rng)
                .sample_iter(rand::distr::Alphanumeric)
                .take(4)
                .map(char::from),
        );
        let key = Self::from_seed(&version, rng.random())?;
        match write_key_file(path, &key, false) {
            Ok(()) => {}
            Err(WriteError::Exists) => {
                // Someone else wrote one first: theirs is the key.
                let text = std::fs::read_to_string(path).map_err(|e| {
                    FederationError::Key(format!(
                        "cannot read signing key file {}: {e}",
                        path.display()
                    ))
                })?;
                return first_key(path, &text);
            }
            Err(WriteError::Io(e)) => return Err(e),
        }
        tracing::info!(
            path = %path.display(),
            key_id = key.key_id(),
            "generated a new server signing key"
        );
        Ok(key)
    }
}

/// Every key of a key file's content `text` read from `path` (named in the error messages), in
/// file order; at least one.
pub fn parse_key_file(path: &Path, text: &str) -> Result<Vec<SigningKey>, FederationError> {
    let refuse = |why: String| {
        FederationError::Key(format!(
            "signing key file {} is malformed: {why} (expected lines \
             `ed25519 <version> <unpadded base64 of the 32-byte seed>`, as Synapse writes)",
            path.display()
        ))
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let n = n + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [algorithm, version, seed] = fields.as_slice() else {
            return Err(refuse(format!(
                "line {n} has {} fields, not 3",
                fields.len()
            )));
        };
        if *algorithm != ED25519 {
            return Err(refuse(format!(
                "line {n}: algorithm {algorithm:?} is not \"{ED25519}\""
            )));
        }
        if !is_valid_version(version) {
            return Err(refuse(format!(
                "line {n}: version {version:?} is not made of [A-Za-z0-9_]"
            )));
        }
        let seed = B64
            .decode(seed)
            .map_err(|e| refuse(format!("line {n}: the seed is not base64: {e}")))?;
        let seed: [u8; 32] = seed.try_into().map_err(|seed: Vec<u8>| {
            refuse(format!(
                "line {n}: the seed is {} bytes, not 32",
                seed.len()
            ))
        })?;
        keys.push(SigningKey::from_seed(version, seed)?);
    }
    if keys.is_empty() {
        return Err(refuse("it holds no key".to_owned()));
    }
    Ok(keys)
}

/// The key that signs: the first of the file, as in Synapse.
fn first_key(path: &Path, text: &str) -> Result<SigningKey, FederationError> {
    let mut keys = parse_key_file(path, text)?;
    if keys.len() > 1 {
        tracing::debug!(
            path = %path.display(),
            keys = keys.len(),
            "signing key file holds several keys; the first signs, as in Synapse"
        );
    }
    Ok(keys.swap_remove(0))
}

/// What [`import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The key file now holds the imported key.
    Written,
    /// It held exactly that key already; nothing was written.
    Unchanged,
}

/// Makes the signing key of the Synapse key file `from` (its first key, the one Synapse signs
/// with) the only key of our key file `to`, written as a new file (0600) put in place by a
/// rename. A `to` holding another key (or something unreadable) is replaced only with
/// `replace`: remote servers that cached the old key still accept it until it expires, but
/// media-ledger stops signing with it.
///
/// `from` and `to` naming the same file (`signing_key_path` pointing at Synapse's key file) is
/// refused: the import would rewrite Synapse's file with only its first key.
///
/// Returns the imported key, how many keys `from` held, and what was done.
pub fn import(
    from: &Path,
    to: &Path,
    replace: bool,
) -> Result<(SigningKey, usize, Imported), FederationError> {
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(from), std::fs::canonicalize(to)) {
        if a == b {
            return Err(FederationError::Key(format!(
                "{} is already the key file media-ledger signs with (signing_key_path): \
                 nothing to import, and importing would rewrite it with only its first key",
                from.display()
            )));
        }
    }
    let text = std::fs::read_to_string(from).map_err(|e| {
        FederationError::Key(format!("cannot read key file {}: {e}", from.display()))
    })?;
    let mut keys = parse_key_file(from, &text)?;
    let count = keys.len();
    let key = keys.swap_remove(0);
    let existing = match std::fs::read_to_string(to) {
        Ok(text) => Some(parse_key_file(to, &text).map_err(|e| e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("cannot read {}: {e}", to.display()))),
    };
    match existing {
        None => {}
        Some(Ok(ours)) if ours.len() == 1 && same_key(&ours[0], &key) => {
            return Ok((key, count, Imported::Unchanged))
        }
        Some(found) if !replace => {
            let holds = match found {
                Ok(ours) => format!(
                    "holds the key {} (public key {})",
                    ours[0].key_id(),
                    ours[0].public_key_base64()
                ),
                Err(why) => format!("cannot be used ({why})"),
            };
            return Err(FederationError::Key(format!(
                "{} already exists and {holds}: media-ledger would stop signing with it; \
                 pass --force to replace it with {} of {}",
                to.display(),
                key.key_id(),
                from.display()
            )));
        }
        Some(_) => {}
    }
    write_key_file(to, &key, true).map_err(|e| match e {
        WriteError::Io(e) => e,
        WriteError::Exists => FederationError::Key(format!("{} exists", to.display())),
    })?;
    Ok((key, count, Imported::Written))
}

fn same_key(a: &SigningKey, b: &SigningKey) -> bool {
    a.key_id() == b.key_id() && a.public_key_base64() == b.public_key_base64()
}

enum WriteError {
    /// `path` exists and replacing was not asked for.
    Exists,
    Io(FederationError),
}

/// Writes `key` as the only line of the key file `path`: a temporary file beside it (0600,
/// fsynced), then linked into place (`replace` false: a file that appeared meanwhile is never
/// overwritten) or renamed over it (`replace` true), then the directory fsynced. No reader ever
/// sees a half-written key.
fn write_key_file(path: &Path, key: &SigningKey, replace: bool) -> Result<(), WriteError> {
    let io_error = |what: &str, e: std::io::Error| {
        WriteError::Io(FederationError::Key(format!(
            "cannot {what} {}: {e}",
            path.display()
        )))
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)
            .map_err(|e| io_error("create the directory of signing key file", e))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "signing.key".to_owned());
    let tmp = path.with_file_name(format!(
        ".{file_name}.{:016x}.tmp",
        rand::rng().random::<u64>()
    ));
    if let Err(e) = write_new_private_file(&tmp, key.synapse_line().as_bytes()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("write signing key file", e));
    }
    let placed = if replace {
        std::fs::rename(&tmp, path)
    } else {
        match std::fs::hard_link(&tmp, path) {
            // A file system without hard links: rename instead.
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => std::fs::rename(&tmp, path),
            other => other,
        }
    };
    let _ = std::fs::remove_file(&tmp);
    match placed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(WriteError::Exists),
        Err(e) => return Err(io_error("write signing key file", e)),
    }
    if let Some(parent) = parent {
        // Make the new directory entry durable; not every platform can open a directory.
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Creates `path` (which must not exist) readable and writable by its owner only, writes
/// `bytes` and flushes them to disk.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Our signing key per homeserver: each homeserver's key file
/// ([`Config::signing_key_path_for`]), a file shared by several homeservers loaded once.
#[derive(Debug, Clone)]
pub struct Keyring {
    by_server: HashMap<ServerName, Arc<SigningKey>>,
    /// The default homeserver's key, for a name that is not one of ours.
    default: Arc<SigningKey>,
}

impl Keyring {
    /// One key for every homeserver.
    pub fn single(key: Arc<SigningKey>) -> Self {
        Self {
            by_server: HashMap::new(),
            default: key,
        }
    }

    /// Loads (or generates) each homeserver's key file.
    pub fn load(config: &Config) -> Result<Self, FederationError> {
        let mut by_path: HashMap<PathBuf, Arc<SigningKey>> = HashMap::new();
        let mut by_server = HashMap::new();
        for hs in &config.homeservers {
            let path = config.signing_key_path_for(&hs.name);
            let key = match by_path.get(&path) {
                Some(key) => key.clone(),
                None => {
                    let key = Arc::new(SigningKey::load_or_generate(&path)?);
                    by_path.insert(path, key.clone());
                    key
                }
            };
            by_server.insert(hs.name.clone(), key);
        }
        let default_name = &config.homeserver_for(None).name;
        let default = match by_server.get(default_name) {
            Some(key) => key.clone(),
            None => Arc::new(SigningKey::load_or_generate(&config.signing_key_path())?),
        };
        Ok(Self { by_server, default })
    }

    /// The key that signs for our homeserver `server`.
    pub fn for_server(&self, server: &ServerName) -> &SigningKey {
        self.by_server.get(server).unwrap_or(&self.default)
    }
}

#[cfg(test)]
#[path = "keyfile_tests.rs"]
mod tests;
