//! Publishing: put a document (and its signature) where updaters pick it
//! up, so that no reader ever sees one document beside another's
//! signature, and of two publishers racing exactly one wins.
//!
//! [`publish`] validates the document, refuses a version that is not newer
//! than the one published, and writes with a compare-and-swap on what it
//! read: the loser gets an error that says which version got there first.
//! Targets:
//!
//! - [`Etcd`] (feature `etcd`): the document at a key, its signature at
//!   `{key}.sig`, written in one transaction that compares the key's
//!   `mod_revision`.
//! - [`Directory`]: a directory a file source (or a static web server)
//!   reads. Each version goes into a directory of its own under
//!   `.flagstone/`, claimed atomically, and a `current` symlink is swapped
//!   to it; `flags.json` and `flags.json.sig` are links through `current`.
//!   The updater's file source reads the signature beside the file the
//!   document path resolves to, so the two always come from one version.
//!
//! ```no_run
//! use flagstone::publish::{Directory, publish};
//!
//! let document = std::fs::read("flags.json")?;
//! let receipt = publish(&mut Directory::new("/srv/flags"), &document, None)?;
//! println!("published version {} ({})", receipt.version, receipt.position);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// What a target holds now.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Published {
    /// The document, exactly as published.
    pub document: Vec<u8>,
    /// Its signature, when it has one.
    pub signature: Option<Vec<u8>>,
    /// The position to compare against when writing over it: etcd's
    /// `mod_revision` of the key, a directory's sequence number; 0 when
    /// nothing is published.
    pub position: i64,
}

impl Published {
    /// The document's `version`, when it has one.
    pub fn version(&self) -> Option<u64> {
        document_version(&self.document)
    }
}

/// A successful publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The version published.
    pub version: u64,
    /// Where it stands: etcd's revision of the write, a directory's
    /// sequence number.
    pub position: i64,
}

/// Why a document was not published.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    kind: Kind,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Invalid,
    Stale,
    Conflict,
    TooLarge,
    Target,
}

impl PublishError {
    #[cold]
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The document is not a valid config.
    pub fn is_invalid(&self) -> bool {
        self.kind == Kind::Invalid
    }

    /// Its version is not newer than the one published: updaters would
    /// refuse it.
    pub fn is_stale(&self) -> bool {
        self.kind == Kind::Stale
    }

    /// Another publisher wrote between this one's read and its write.
    pub fn is_conflict(&self) -> bool {
        self.kind == Kind::Conflict
    }

    /// Over what the target takes (etcd's 1.5 MiB request limit).
    pub fn is_too_large(&self) -> bool {
        self.kind == Kind::TooLarge
    }
}

/// A place documents are published to.
pub trait Target: fmt::Debug {
    /// What is published now; `None` when nothing is.
    fn read(&mut self) -> Result<Option<Published>, PublishError>;
    /// Writes `document` and `signature` if nothing was published since a
    /// read returned `position`; the new position. Losing to another
    /// writer is an [`is_conflict`](PublishError::is_conflict) error.
    fn write(
        &mut self,
        document: &[u8],
        signature: Option<&[u8]>,
        position: i64,
    ) -> Result<i64, PublishError>;
    /// Where, in words: `etcd key /flags at http://…`, `directory /srv/flags`.
    fn describe(&self) -> String;
}

/// Publishes a document with its (already computed) signature: validated,
/// newer than what the target holds, written only over what was read.
///
/// A lost race re-reads the target to say which version got there first.
pub fn publish(
    target: &mut dyn Target,
    document: &[u8],
    signature: Option<&str>,
) -> Result<Receipt, PublishError> {
    let current = target.read()?;
    publish_over(target, current.as_ref(), document, signature)
}

/// Publishes a document over what was read earlier (`over`, `None` for an
/// empty target): it is written only if the target still holds exactly
/// that, so a decision made on what was read never lands on anything else.
/// Validated and checked newer, as [`publish`] does.
pub fn publish_over(
    target: &mut dyn Target,
    over: Option<&Published>,
    document: &[u8],
    signature: Option<&str>,
) -> Result<Receipt, PublishError> {
    let config = Config::from_json(document)
        .map_err(|e| PublishError::new(Kind::Invalid, format!("not a valid config: {e}")))?;
    let (position, there) = match over {
        Some(published) => (published.position, published.version()),
        None => (0, None),
    };
    if let Some(there) = there
        && config.version <= there
    {
        return Err(PublishError::new(
            Kind::Stale,
            format!(
                "version {} is not newer than version {there} at {}: updaters would refuse it",
                config.version,
                target.describe()
            ),
        ));
    }
    match target.write(document, signature.map(str::as_bytes), position) {
        Ok(position) => Ok(Receipt { version: config.version, position }),
        Err(e) if e.is_conflict() => {
            let winner = target.read().ok().flatten().and_then(|p| p.version());
            let winner = winner.map_or("another version".to_owned(), |v| format!("version {v}"));
            Err(PublishError::new(
                Kind::Conflict,
                format!(
                    "another publisher got there first: {winner} was published at {} \
                     while this one was being written; read it and publish again",
                    target.describe()
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// The `version` of a document, read without validating the rest.
fn document_version(document: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u64,
    }
    let document = document.strip_prefix(b"\xef\xbb\xbf").unwrap_or(document);
    serde_json::from_slice::<Versioned>(document).ok().map(|v| v.version)
}

/// An etcd key (feature `etcd`): the document at `key`, its signature at
/// `{key}.sig`.
#[cfg(feature = "etcd")]
pub struct Etcd {
    client: crate::source::etcd::Etcd,
    key: String,
    max_bytes: usize,
}

#[cfg(feature = "etcd")]
impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd").field("key", &self.key).finish_non_exhaustive()
    }
}

/// etcd's default request limit (`--max-request-bytes`), which a
/// transaction of document and signature must fit in.
#[cfg(feature = "etcd")]
pub const ETCD_MAX_REQUEST_BYTES: usize = 1_572_864;

#[cfg(feature = "etcd")]
impl Etcd {
    /// The key `key` of the cluster at `endpoints` (client URLs, tried in
    /// turn).
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        key: impl Into<String>,
    ) -> Self {
        let options = crate::source::etcd::EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            credentials: None,
            connect_timeout: std::time::Duration::from_secs(5),
            request_timeout: std::time::Duration::from_secs(10),
            max_response: 64 * 1024 * 1024,
        };
        Self {
            client: crate::source::etcd::Etcd::new(options),
            key: key.into(),
            max_bytes: ETCD_MAX_REQUEST_BYTES,
        }
    }

    /// A user and password, for a cluster with auth enabled.
    #[must_use]
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let mut options = self.client.options().clone();
        options.credentials = Some((user.into(), password.into()));
        self.client = crate::source::etcd::Etcd::new(options);
        self
    }

    /// The largest document and signature accepted together (default
    /// [`ETCD_MAX_REQUEST_BYTES`]; raise it with the cluster's
    /// `--max-request-bytes`).
    #[must_use]
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    fn deadline() -> std::time::Instant {
        std::time::Instant::now() + std::time::Duration::from_secs(30)
    }

    fn error(&self, e: crate::source::etcd::EtcdError) -> PublishError {
        PublishError::new(Kind::Target, format!("etcd key {}: {e}", self.key))
    }
}

#[cfg(feature = "etcd")]
impl Target for Etcd {
    fn read(&mut self) -> Result<Option<Published>, PublishError> {
        let pair = self.client.read_pair(&self.key, Self::deadline()).map_err(|e| self.error(e))?;
        Ok(pair.document.map(|document| Published {
            document: document.value,
            signature: pair.signature.map(|s| s.value),
            position: document.mod_revision,
        }))
    }

    fn write(
        &mut self,
        document: &[u8],
        signature: Option<&[u8]>,
        position: i64,
    ) -> Result<i64, PublishError> {
        // The transaction carries both values, base64 inside protobuf's own
        // framing; a little room for the keys and the compare.
        let size = document.len() + signature.map_or(0, <[u8]>::len) + 2 * self.key.len() + 256;
        if size > self.max_bytes {
            return Err(PublishError::new(
                Kind::TooLarge,
                format!(
                    "the document is {} bytes: over etcd's request limit of {} bytes \
                     (--max-request-bytes); serve it from a file or an HTTP/CDN source instead",
                    document.len(),
                    self.max_bytes
                ),
            ));
        }
        let written = self
            .client
            .write_pair(&self.key, document, signature, position, Self::deadline())
            .map_err(|e| self.error(e))?;
        match written {
            crate::source::etcd::Written::At(revision) => Ok(revision),
            crate::source::etcd::Written::Lost => {
                Err(PublishError::new(Kind::Conflict, "the key changed since it was read"))
            }
        }
    }

    fn describe(&self) -> String {
        format!("etcd key {}", self.key)
    }
}

/// A directory that file sources (or a static web server) read: see the
/// module docs for its layout.
#[derive(Debug)]
pub struct Directory {
    dir: PathBuf,
    file_name: String,
    /// How many versions to keep on disk (a reader that resolved an older
    /// link a moment ago can still open its files).
    keep: usize,
}

/// The directory of a [`Directory`]'s versions.
const VERSIONS: &str = ".flagstone";

impl Directory {
    /// The directory `dir`, publishing `flags.json`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), file_name: "flags.json".to_owned(), keep: 4 }
    }

    /// The file name to publish as (default `flags.json`).
    #[must_use]
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = name.into();
        self
    }

    fn versions(&self) -> PathBuf {
        self.dir.join(VERSIONS)
    }

    fn error(&self, what: &str, path: &Path, e: std::io::Error) -> PublishError {
        PublishError::new(Kind::Target, format!("{what} {}: {e}", path.display()))
    }

    /// The sequence numbers claimed so far, from the names of the version
    /// directories (`v00000042`).
    fn claimed(&self) -> Result<Vec<i64>, PublishError> {
        let versions = self.versions();
        let entries = match std::fs::read_dir(&versions) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error("cannot read", &versions, e)),
        };
        let mut claimed: Vec<i64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
            .collect();
        claimed.sort_unstable();
        Ok(claimed)
    }

    /// Links `target` at `link` atomically (a temporary link renamed over).
    #[cfg(unix)]
    fn link(&self, target: &Path, link: &Path) -> Result<(), PublishError> {
        let tmp = link.with_file_name(format!(
            ".{}.tmp-{}",
            link.file_name().and_then(|n| n.to_str()).unwrap_or("link"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| self.error("cannot link", &tmp, e))?;
        std::fs::rename(&tmp, link).map_err(|e| self.error("cannot swap", link, e))
    }
}

impl Target for Directory {
    fn read(&mut self) -> Result<Option<Published>, PublishError> {
        let position = self.claimed()?.last().copied().unwrap_or(0);
        let path = self.dir.join(&self.file_name);
        let document = match std::fs::read(&path) {
            Ok(document) => document,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((position > 0).then(|| Published { position, ..Published::default() }));
            }
            Err(e) => return Err(self.error("cannot read", &path, e)),
        };
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        let signature = std::fs::read(crate::source::sig_path(&real)).ok();
        Ok(Some(Published { document, signature, position }))
    }

    #[cfg(unix)]
    fn write(
        &mut self,
        document: &[u8],
        signature: Option<&[u8]>,
        position: i64,
    ) -> Result<i64, PublishError> {
        let versions = self.versions();
        std::fs::create_dir_all(&versions)
            .map_err(|e| self.error("cannot create", &versions, e))?;
        // The claim: creating a directory is atomic, so of two publishers
        // that read the same position, one creates it and the other fails.
        let next = position + 1;
        let name = format!("v{next:08}");
        let claim = versions.join(&name);
        match std::fs::create_dir(&claim) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(PublishError::new(
                    Kind::Conflict,
                    "the directory changed since it was read",
                ));
            }
            Err(e) => return Err(self.error("cannot create", &claim, e)),
        }
        if self.claimed()?.last().is_some_and(|&last| last > next) {
            return Err(PublishError::new(
                Kind::Conflict,
                "the directory changed since it was read",
            ));
        }
        let file = claim.join(&self.file_name);
        let sig = crate::source::sig_path(&file);
        crate::source::write_atomically(&file, document)
            .map_err(|e| self.error("cannot write", &file, e))?;
        if let Some(signature) = signature {
            crate::source::write_atomically(&sig, signature)
                .map_err(|e| self.error("cannot write", &sig, e))?;
        }
        // Readers see the new version from this rename on, whole.
        self.link(Path::new(&name), &versions.join("current"))?;
        let current = Path::new(VERSIONS).join("current");
        let doc_link = self.dir.join(&self.file_name);
        self.link(&current.join(&self.file_name), &doc_link)?;
        let sig_name = format!("{}.sig", self.file_name);
        self.link(&current.join(&sig_name), &self.dir.join(&sig_name))?;
        // Old versions, past the few a reader may still be opening.
        for old in self.claimed()?.iter().rev().skip(self.keep) {
            let _ = std::fs::remove_dir_all(versions.join(format!("v{old:08}")));
        }
        Ok(next)
    }

    #[cfg(not(unix))]
    fn write(&mut self, _: &[u8], _: Option<&[u8]>, _: i64) -> Result<i64, PublishError> {
        Err(PublishError::new(Kind::Target, "publishing to a directory needs symlinks (unix)"))
    }

    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn doc(version: u64) -> String {
        format!(r#"{{ "version": {version}, "flags": {{ "f": {{ "enabled": true }} }} }}"#)
    }

    #[test]
    fn a_directory_publishes_versions_whole_and_refuses_stale_ones() {
        let dir = std::env::temp_dir().join(format!("flagstone-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut target = Directory::new(&dir);
        for version in 1..=6 {
            let receipt =
                publish(&mut target, doc(version).as_bytes(), Some("c2ln")).expect("published");
            assert_eq!(receipt.version, version);
            assert_eq!(
                std::fs::read_to_string(dir.join("flags.json")).expect("read"),
                doc(version)
            );
            assert_eq!(std::fs::read(dir.join("flags.json.sig")).expect("read"), b"c2ln");
        }
        let err = publish(&mut target, doc(6).as_bytes(), None).expect_err("stale");
        assert!(err.is_stale(), "{err}");
        assert!(publish(&mut target, b"{", None).expect_err("invalid").is_invalid());
        assert_eq!(target.claimed().expect("read").len(), 4, "old versions pruned");

        // Two publishers that read the same position: one wins.
        let mut other = Directory::new(&dir);
        let seen = other.read().expect("read").expect("published").position;
        publish(&mut target, doc(7).as_bytes(), None).expect("first");
        let err = other.write(doc(8).as_bytes(), None, seen).expect_err("second");
        assert!(err.is_conflict(), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
