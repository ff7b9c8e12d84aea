//! The file source: reads the whole file on every pull.
//!
//! Reading by path follows symlinks at each read, so an edit in place, an
//! atomic rename over the file and a Kubernetes ConfigMap update (a
//! `..data` symlink swapped to a new directory) are all seen. Unchanged
//! content is recognized by its hash in the updater, not by mtime, which
//! renames and symlink swaps do not reliably move.
//!
//! Only a regular file is read: a FIFO, a device (`/dev/zero`) or a
//! directory is refused without blocking, and a file over the body limit
//! is refused without being read whole.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{Document, Fetch, Source, SourceError, sig_path};

/// The largest signature sidecar read: a signature is 88 bytes of base64.
pub(crate) const SIGNATURE_LIMIT: u64 = 4096;

pub(crate) struct FileSource {
    path: PathBuf,
    max_body: u64,
    /// Whether to read the `.sig` sidecar (only when a public key is set).
    signed: bool,
}

impl FileSource {
    pub(crate) fn new(path: PathBuf, max_body: u64, signed: bool) -> Self {
        Self { path, max_body, signed }
    }
}

impl Source for FileSource {
    fn fetch(&mut self, _deadline: std::time::Instant) -> Result<Fetch, SourceError> {
        // The signature is read beside the file the path resolves to, so a
        // symlink swapped between the two reads (a ConfigMap, `flagstone
        // publish --to`) cannot pair one version's document with another's
        // signature; beside the path itself for a plain layout.
        let real = if self.signed { std::fs::canonicalize(&self.path).ok() } else { None };
        let read_from = real.as_deref().unwrap_or(&self.path);
        let body = read_regular(read_from, self.max_body)
            .map_err(|e| SourceError::new(format!("{}: {e}", self.path.display())))?;
        let signature = if self.signed {
            read_regular(&sig_path(read_from), SIGNATURE_LIMIT)
                .or_else(|_| read_regular(&sig_path(&self.path), SIGNATURE_LIMIT))
                .ok()
        } else {
            None
        };
        Ok(Fetch::Document(Document { body, signature }))
    }
}

/// Reads a regular file of at most `limit` bytes; anything else is an
/// error, and opening never blocks (a FIFO without a writer would).
pub(crate) fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_nonblocking(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a directory" } else { "not a regular file" };
        return Err(std::io::Error::other(format!("{kind}: only regular files are read")));
    }
    if meta.len() > limit {
        return Err(std::io::Error::other(format!(
            "{} bytes, over the limit of {limit} bytes",
            meta.len()
        )));
    }
    // The file may grow between the check and the read: the read has its
    // own limit.
    super::cache::read_limited(file, limit)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).open(path)
}
