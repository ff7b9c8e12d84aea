//! The file source: reads the whole file on every pull.
//!
//! Reading by path follows symlinks at each read, so an edit in place, an
//! atomic rename over the file and a Kubernetes ConfigMap update (a
//! `..data` symlink swapped to a new directory) are all seen. Unchanged
//! content is recognized by its hash in the updater, not by mtime, which
//! renames and symlink swaps do not reliably move.

use std::path::PathBuf;

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
        let body = std::fs::read(&self.path)
            .map_err(|e| SourceError::new(format!("{}: {e}", self.path.display())))?;
        let signature = std::fs::read(sig_path(&self.path)).ok();
        Ok(Fetch::Document(Document { body, signature }))
    }
}
