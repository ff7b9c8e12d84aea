//! The file source: reads the whole file on every pull.
//!
//! Reading by path follows symlinks at each read, so an edit in place, an
//! atomic rename over the file and a Kubernetes ConfigMap update (a
//! `..data` symlink swapped to a new directory) are all seen. Unchanged
//! content is recognized by its hash in the updater, not by mtime, which
//! renames and symlink swaps do not reliably move.

use std::path::{Path, PathBuf};

use super::{Document, Fetch, Source, SourceError, sig_path};

pub(crate) struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl Source for FileSource {
    fn fetch(&mut self) -> Result<Fetch, SourceError> {
        read_document(&self.path)
            .map(Fetch::Document)
            .map_err(|e| SourceError::new(format!("{}: {e}", self.path.display())))
    }
}

/// A document from a file, with its signature from the `.sig` sidecar if
/// there is one: the source's format, and the cache file's.
pub(crate) fn read_document(path: &Path) -> std::io::Result<Document> {
    let body = std::fs::read(path)?;
    let signature = std::fs::read(sig_path(path)).ok();
    Ok(Document { body, signature })
}
