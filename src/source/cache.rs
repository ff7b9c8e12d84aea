//! The last-known-good cache: one file that holds the serving document, its
//! signature and what the store decided on its own, replaced atomically.
//!
//! One file, not a document and a `.sig` beside it: two renames leave a
//! window (a crash, a full disk) in which the new document sits beside the
//! old signature, and a restart would refuse both good versions. With one
//! file, a crash at any point leaves the old envelope or the new one.
//!
//! ```json
//! { "flagstone_cache": 1, "newest": 8, "trips": { "search-v2": "internal" },
//!   "signature": "base64...", "document": "{ \"version\": 7, ... }" }
//! ```
//!
//! `newest` and `trips` are the store's local decisions (a rollback to an
//! older version, guard trips on the serving one): a restart takes them up
//! again, so the source's document of that version does not undo them. A
//! file that is not an envelope is read as a bare document with a `.sig`
//! sidecar, the format of earlier releases.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Document, file, sig_path};
use crate::store::Decisions;

/// The envelope's format number.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    flagstone_cache: u32,
    #[serde(default)]
    newest: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    trips: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    document: String,
}

/// What a cache file held.
pub(crate) struct Cached {
    pub(crate) document: Document,
    /// The version the document says it is, and the store's decisions on it.
    pub(crate) newest: u64,
    pub(crate) trips: BTreeMap<String, Option<String>>,
}

/// Reads a cache file, of at most `limit` bytes of document.
pub(crate) fn read(path: &Path, limit: u64) -> Result<Cached, String> {
    // An envelope escapes the document: allow for it, and for the signature.
    let bytes = file::read_regular(path, limit.saturating_mul(2).saturating_add(4096))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match serde_json::from_slice::<Envelope>(&bytes) {
        Ok(envelope) if envelope.flagstone_cache == FORMAT => {
            if envelope.document.len() as u64 > limit {
                return Err(format!(
                    "{}: the document is over the limit of {limit} bytes",
                    path.display()
                ));
            }
            Ok(Cached {
                document: Document {
                    body: envelope.document.into_bytes(),
                    signature: envelope.signature.map(String::into_bytes),
                },
                newest: envelope.newest,
                trips: envelope.trips,
            })
        }
        Ok(envelope) => Err(format!(
            "{}: cache format {} is not one this build reads ({FORMAT})",
            path.display(),
            envelope.flagstone_cache
        )),
        // Not an envelope: a bare document, as earlier releases wrote.
        Err(_) => {
            if bytes.len() as u64 > limit {
                return Err(format!(
                    "{}: the document is over the limit of {limit} bytes",
                    path.display()
                ));
            }
            let signature = file::read_regular(&sig_path(path), file::SIGNATURE_LIMIT).ok();
            Ok(Cached {
                document: Document { body: bytes, signature },
                newest: 0,
                trips: BTreeMap::new(),
            })
        }
    }
}

/// Writes the serving document, its signature and the store's decisions as
/// one envelope, atomically. The error names the file that failed.
pub(crate) fn write(path: &Path, document: &Document, decisions: &Decisions) -> Result<(), String> {
    let text = String::from_utf8(document.body.clone())
        .map_err(|_| format!("{}: the document is not UTF-8", path.display()))?;
    let envelope = Envelope {
        flagstone_cache: FORMAT,
        newest: decisions.newest,
        trips: decisions.trips.clone(),
        signature: document.signature.as_deref().and_then(super::signature_text),
        document: text,
    };
    let bytes = serde_json::to_vec(&envelope).map_err(|e| format!("{}: {e}", path.display()))?;
    let target = resolve_symlinks(path);
    write_atomically(&target, &bytes).map_err(|e| format!("{}: {e}", target.display()))
}

/// The file a path names, following symlinks (a cache file may be a link
/// into a mounted volume: the write must replace the target, not the link).
fn resolve_symlinks(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    // A bound, so that a symlink loop ends; the rename then fails with ELOOP.
    for _ in 0..40 {
        match fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Err(_) => break,
        }
    }
    path
}

/// Temp file, fsync, rename, fsync of the directory: a crash leaves the old
/// file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads at most `limit` bytes of a reader, failing past it.
pub(crate) fn read_limited(reader: impl std::io::Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    // One byte past the limit tells "at the limit" from "over it".
    reader.take(limit.saturating_add(1)).read_to_end(&mut body)?;
    if body.len() as u64 > limit {
        return Err(std::io::Error::other(format!("over the limit of {limit} bytes")));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions(newest: u64) -> Decisions {
        Decisions { serving: newest, newest, trips: BTreeMap::new() }
    }

    #[test]
    fn atomic_writes_replace_the_whole_file() {
        let dir = tempfile_dir("atomic");
        let path = dir.join("cache.json");
        write_atomically(&path, b"first").expect("write");
        write_atomically(&path, b"second").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let leftovers = fs::read_dir(&dir).expect("dir").count();
        assert_eq!(leftovers, 1, "no temp files left behind");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_envelope_reads_back_as_written() {
        let dir = tempfile_dir("envelope");
        let path = dir.join("cache.json");
        let doc = Document { body: b"{ \"version\": 3 }\n".to_vec(), signature: None };
        let mut decided = decisions(4);
        decided.trips.insert("f".into(), Some("internal".into()));
        write(&path, &doc, &decided).expect("write");
        let cached = read(&path, 1024).expect("read");
        assert_eq!(cached.document.body, doc.body);
        assert_eq!((cached.newest, cached.trips), (4, decided.trips));
        assert!(read(&path, 4).is_err(), "the limit holds for the document");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flagstone-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
