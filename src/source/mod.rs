//! Delivery: keep a [`FlagStore`] up to date from a file or an HTTP URL.
//!
//! An [`Updater`] runs one background thread (no async runtime) that pulls
//! the config document on an interval, verifies its signature when a public
//! key is configured, applies it with [`FlagStore::apply_json`] (so a bad or
//! stale document never replaces a good one), writes the applied document to
//! a last-known-good cache file, and reports every outcome as an
//! [`UpdateEvent`]. On start-up, before the first fresh document arrives, the
//! store serves the cache file, or else the bootstrap document.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flagstone::{FlagStore, Updater};
//!
//! let store = Arc::new(FlagStore::new());
//! let updater = Updater::builder(store.clone())
//!     .file("/etc/myapp/flags.json")
//!     .interval(Duration::from_secs(5))
//!     .cache_file("/var/cache/myapp/flags.json")
//!     .bootstrap(r#"{ "version": 0 }"#)
//!     .on_event(|e| eprintln!("flags: {e}"))
//!     .wait_for_first(Duration::from_secs(2))
//!     .start()?;
//! println!("serving {:?} config version {}", updater.serving(), store.version());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `docs/delivery.md` covers signatures and how fast a push reaches a fleet.

mod file;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "signing")]
mod signing;

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::Error;
use crate::store::FlagStore;

/// Where a document came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The configured file or URL.
    Source,
    /// The last-known-good cache file.
    Cache,
    /// The bootstrap document built into the service.
    Bootstrap,
}

/// What the store is serving, as far as the updater knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Serving {
    /// A document fetched from the source since start-up.
    Fresh,
    /// The cache file: the source has not delivered yet.
    Cache,
    /// The bootstrap document: no cache, and the source has not delivered.
    Bootstrap,
    /// Nothing: the store is empty (every flag off).
    Nothing,
}

/// Why a document could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    message: String,
    status: Option<u16>,
    timeout: bool,
}

impl SourceError {
    #[cold]
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), status: None, timeout: false }
    }

    #[cold]
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn status(status: u16, message: impl Into<String>) -> Self {
        Self { message: message.into(), status: Some(status), timeout: false }
    }

    #[cold]
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self { message: message.into(), status: None, timeout: true }
    }

    /// The HTTP status, when the server answered with an unexpected one.
    pub fn http_status(&self) -> Option<u16> {
        self.status
    }

    /// Whether the source did not answer in time.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

/// One outcome of the updater, for logs, metrics and alerts.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpdateEvent {
    /// A document was applied; the store serves `version`.
    Applied {
        /// The version now serving.
        version: u64,
        /// Where the document came from.
        origin: Origin,
    },
    /// The source has nothing new (304 Not Modified, or the same document).
    Unchanged,
    /// A document was refused: malformed, invalid or stale. The store keeps
    /// serving what it served.
    Rejected {
        /// Where the document came from.
        origin: Origin,
        /// Why, with the path into the document.
        error: Error,
    },
    /// A document's signature is missing, malformed or wrong: refused.
    SignatureRejected {
        /// Where the document came from.
        origin: Origin,
        /// Why.
        reason: String,
    },
    /// The source could not be reached or answered wrongly; the next try is
    /// in `retry_in`.
    SourceError {
        /// What went wrong.
        error: SourceError,
        /// When the updater tries again.
        retry_in: Duration,
    },
    /// The applied document could not be written to the cache file.
    CacheWriteFailed {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for UpdateEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateEvent::Applied { version, origin } => {
                write!(f, "applied config version {version} from {origin:?}")
            }
            UpdateEvent::Unchanged => f.write_str("unchanged"),
            UpdateEvent::Rejected { origin, error } => {
                write!(f, "rejected {origin:?} document: {error}")
            }
            UpdateEvent::SignatureRejected { origin, reason } => {
                write!(f, "rejected {origin:?} document: bad signature: {reason}")
            }
            UpdateEvent::SourceError { error, retry_in } => {
                write!(f, "source error: {error} (retrying in {retry_in:?})")
            }
            UpdateEvent::CacheWriteFailed { reason } => write!(f, "cache write failed: {reason}"),
        }
    }
}

/// Why the updater could not start, or a synchronous refresh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The builder was given no source, or an unusable setting.
    #[error("updater misconfigured: {0}")]
    Config(String),
    /// The bootstrap document is invalid.
    #[error("bootstrap document: {0}")]
    Bootstrap(Error),
    /// The source could not be reached.
    #[error("source: {0}")]
    Source(SourceError),
    /// The fetched document was refused.
    #[error("document refused: {0}")]
    Rejected(Error),
    /// The fetched document's signature was refused.
    #[error("signature refused: {0}")]
    Signature(String),
}

/// What a successful [`Updater::refresh_now`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refreshed {
    /// A new version was applied.
    Applied(u64),
    /// The source had nothing new.
    Unchanged,
}

/// A fetched document and its detached signature, if the source has one.
pub(crate) struct Document {
    pub(crate) body: Vec<u8>,
    pub(crate) signature: Option<Vec<u8>>,
}

pub(crate) enum Fetch {
    /// Only a conditional source (HTTP) can tell "not modified" without a body.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    NotModified,
    Document(Document),
}

/// A place documents come from.
pub(crate) trait Source: Send {
    fn fetch(&mut self) -> Result<Fetch, SourceError>;
    /// Called when the last fetched document was applied or is the one
    /// serving: a conditional source may now ask only for changes.
    fn commit(&mut self) {}
}

type Callback = Arc<dyn Fn(&UpdateEvent) + Send + Sync>;

/// Configures and starts an [`Updater`].
#[must_use]
pub struct UpdaterBuilder {
    store: Arc<FlagStore>,
    source: Option<SourceSpec>,
    interval: Duration,
    jitter: f64,
    max_backoff: Duration,
    cache_file: Option<PathBuf>,
    bootstrap: Option<Vec<u8>>,
    on_event: Option<Callback>,
    wait_for_first: Duration,
    #[cfg(feature = "http")]
    http: http::HttpOptions,
    #[cfg(feature = "signing")]
    public_key: Option<Result<signing::Verifier, String>>,
}

enum SourceSpec {
    File(PathBuf),
    #[cfg(feature = "http")]
    Http(String),
}

impl fmt::Debug for UpdaterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdaterBuilder")
            .field("interval", &self.interval)
            .field("cache_file", &self.cache_file)
            .finish_non_exhaustive()
    }
}

impl UpdaterBuilder {
    /// Pull the document from a file. Edits, atomic renames and
    /// Kubernetes-style ConfigMap symlink swaps are all picked up; a signed
    /// document's signature is read from `<path>.sig`.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(SourceSpec::File(path.into()));
        self
    }

    /// Pull the document from an HTTP(S) URL with conditional GETs (feature
    /// `http`).
    #[cfg(feature = "http")]
    pub fn http(mut self, url: impl Into<String>) -> Self {
        self.source = Some(SourceSpec::Http(url.into()));
        self
    }

    /// The poll interval (default 5 s); each wait is jittered around it.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How far each wait strays from the interval, as a fraction (default
    /// 0.1: ±10%), so a fleet does not poll in lockstep.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The longest wait after repeated failures (default 5 minutes); waits
    /// double from the interval after each failure, with jitter.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Keep the last applied document here (written atomically), and serve it
    /// at start-up until the source delivers.
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// The document to serve at start-up when there is no usable cache file.
    /// It is not signature-checked: it ships with the service.
    pub fn bootstrap(mut self, json: impl Into<Vec<u8>>) -> Self {
        self.bootstrap = Some(json.into());
        self
    }

    /// Called for every [`UpdateEvent`], on the updater's thread (or the
    /// caller's, for [`Updater::refresh_now`]). Keep it quick.
    pub fn on_event(mut self, f: impl Fn(&UpdateEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// Let [`UpdaterBuilder::start`] wait up to this long for the first fresh
    /// document (default: do not wait). [`Updater::serving`] then says
    /// whether it came.
    pub fn wait_for_first(mut self, wait: Duration) -> Self {
        self.wait_for_first = wait;
        self
    }

    /// Connect and read timeouts for HTTP (defaults 5 s and 10 s).
    #[cfg(feature = "http")]
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.http.connect_timeout = connect;
        self.http.read_timeout = read;
        self
    }

    /// The largest HTTP body accepted, after decompression (default 16 MiB).
    #[cfg(feature = "http")]
    pub fn max_body_bytes(mut self, max: u64) -> Self {
        self.http.max_body = max;
        self
    }

    /// Send `Authorization: Bearer <token>` with every HTTP request.
    #[cfg(feature = "http")]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.http.headers.push(("Authorization".to_owned(), format!("Bearer {}", token.into())));
        self
    }

    /// Send an extra header with every HTTP request.
    #[cfg(feature = "http")]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.http.headers.push((name.into(), value.into()));
        self
    }

    /// Accept only documents with a valid detached Ed25519 signature by this
    /// public key (32 bytes; feature `signing`).
    #[cfg(feature = "signing")]
    pub fn public_key(mut self, key: &[u8]) -> Self {
        self.public_key = Some(signing::Verifier::new(key));
        self
    }

    /// [`UpdaterBuilder::public_key`], with the key in standard base64.
    #[cfg(feature = "signing")]
    pub fn public_key_base64(mut self, key: &str) -> Self {
        self.public_key = Some(signing::Verifier::from_base64(key));
        self
    }

    /// Serves the cache file or the bootstrap document, starts the background
    /// thread, and waits for a first fresh document if asked to.
    pub fn start(self) -> Result<Updater, UpdateError> {
        let source: Box<dyn Source> = match self.source {
            None => {
                return Err(UpdateError::Config("no source: call .file(..) or .http(..)".into()));
            }
            Some(SourceSpec::File(path)) => Box::new(file::FileSource::new(path)),
            #[cfg(feature = "http")]
            Some(SourceSpec::Http(url)) => Box::new(http::HttpSource::new(url, self.http)),
        };
        if self.interval.is_zero() {
            return Err(UpdateError::Config("the interval must be longer than zero".into()));
        }
        #[cfg(feature = "signing")]
        let verifier = self.public_key.transpose().map_err(UpdateError::Config)?;
        let puller = Puller {
            store: self.store,
            source,
            cache_file: self.cache_file,
            on_event: self.on_event,
            last_seen: None,
            failures: 0,
            planned_wait: self.interval,
            rng: seed(),
            interval: self.interval,
            jitter: self.jitter,
            max_backoff: self.max_backoff.max(self.interval),
            #[cfg(feature = "signing")]
            verifier,
        };
        let shared = Arc::new(Shared {
            puller: Mutex::new(puller),
            serving: Mutex::new(Serving::Nothing),
            fresh: Condvar::new(),
        });

        // Start-up: the cache file, else the bootstrap.
        {
            let mut puller = shared.lock();
            let mut serving = Serving::Nothing;
            if puller.load_cache() {
                serving = Serving::Cache;
            } else if let Some(doc) = &self.bootstrap {
                puller.adopt(doc, Origin::Bootstrap).map_err(UpdateError::Bootstrap)?;
                serving = Serving::Bootstrap;
            }
            *shared.serving_lock() = serving;
        }

        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("flagstone-updater".into())
                .spawn(move || run(&shared, &stopped))
                .map_err(|e| UpdateError::Config(format!("cannot spawn the updater thread: {e}")))?
        };
        if !self.wait_for_first.is_zero() {
            let serving = shared.serving_lock();
            let _ = shared
                .fresh
                .wait_timeout_while(serving, self.wait_for_first, |s| *s != Serving::Fresh)
                .map_err(|_| UpdateError::Config("the updater panicked".into()))?;
        }
        Ok(Updater { shared, stop: Some(stop), thread: Some(thread) })
    }
}

/// Keeps a [`FlagStore`] up to date from a source, on a background thread.
///
/// Dropping the updater (or calling [`Updater::stop`]) ends the thread
/// promptly; the store keeps serving its last config.
pub struct Updater {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Updater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updater").field("serving", &self.serving()).finish_non_exhaustive()
    }
}

impl Updater {
    /// Starts configuring an updater for `store`.
    pub fn builder(store: Arc<FlagStore>) -> UpdaterBuilder {
        UpdaterBuilder {
            store,
            source: None,
            interval: Duration::from_secs(5),
            jitter: 0.1,
            max_backoff: Duration::from_secs(300),
            cache_file: None,
            bootstrap: None,
            on_event: None,
            wait_for_first: Duration::ZERO,
            #[cfg(feature = "http")]
            http: http::HttpOptions::default(),
            #[cfg(feature = "signing")]
            public_key: None,
        }
    }

    /// Pulls once, now, on the caller's thread.
    pub fn refresh_now(&self) -> Result<Refreshed, UpdateError> {
        let outcome = self.shared.lock().pull();
        if matches!(outcome, Ok(Refreshed::Applied(_)) | Ok(Refreshed::Unchanged)) {
            self.shared.mark_fresh();
        }
        outcome
    }

    /// What the store is serving: fresh, the cache, the bootstrap, or nothing.
    pub fn serving(&self) -> Serving {
        *self.shared.serving_lock()
    }

    /// Stops the background thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Updater {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    puller: Mutex<Puller>,
    serving: Mutex<Serving>,
    fresh: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Puller> {
        self.puller.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn serving_lock(&self) -> MutexGuard<'_, Serving> {
        self.serving.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn mark_fresh(&self) {
        *self.serving_lock() = Serving::Fresh;
        self.fresh.notify_all();
    }
}

fn run(shared: &Shared, stopped: &mpsc::Receiver<()>) {
    loop {
        let (outcome, wait) = {
            let mut puller = shared.lock();
            let outcome = puller.pull();
            (outcome, puller.planned_wait)
        };
        if outcome.is_ok() {
            shared.mark_fresh();
        }
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The state of pulling: the source, what was last seen, and the failures
/// that set the backoff.
struct Puller {
    store: Arc<FlagStore>,
    source: Box<dyn Source>,
    cache_file: Option<PathBuf>,
    on_event: Option<Callback>,
    /// The hash of the last document applied or refused for its content, so
    /// the same bytes are neither applied nor reported twice.
    last_seen: Option<u64>,
    failures: u32,
    /// When the thread pulls next, planned by the last pull.
    planned_wait: Duration,
    rng: u64,
    interval: Duration,
    jitter: f64,
    max_backoff: Duration,
    #[cfg(feature = "signing")]
    verifier: Option<signing::Verifier>,
}

impl Puller {
    fn emit(&self, event: &UpdateEvent) {
        #[cfg(feature = "tracing")]
        match event {
            UpdateEvent::Applied { .. } => tracing::info!(target: "flagstone", "{event}"),
            UpdateEvent::Unchanged => tracing::trace!(target: "flagstone", "{event}"),
            _ => tracing::warn!(target: "flagstone", "{event}"),
        }
        if let Some(f) = &self.on_event {
            f(event);
        }
    }

    /// Fetches, verifies and applies once.
    fn pull(&mut self) -> Result<Refreshed, UpdateError> {
        let outcome = self.pull_once();
        self.planned_wait = self.next_wait(outcome.is_ok());
        if let Err(UpdateError::Source(error)) = &outcome {
            self.emit(&UpdateEvent::SourceError {
                error: error.clone(),
                retry_in: self.planned_wait,
            });
        }
        outcome
    }

    fn pull_once(&mut self) -> Result<Refreshed, UpdateError> {
        let document = match self.source.fetch() {
            Ok(Fetch::NotModified) => {
                self.failures = 0;
                self.emit(&UpdateEvent::Unchanged);
                return Ok(Refreshed::Unchanged);
            }
            Ok(Fetch::Document(document)) => document,
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                return Err(UpdateError::Source(error));
            }
        };
        self.failures = 0;
        let hash = xxh3_64(&document.body);
        if self.last_seen == Some(hash) {
            self.source.commit();
            self.emit(&UpdateEvent::Unchanged);
            return Ok(Refreshed::Unchanged);
        }
        // A signature can lag its document (a sidecar published second), so a
        // refusal is not remembered: the next pull checks again.
        if let Err(reason) = self.verify(&document) {
            self.emit(&UpdateEvent::SignatureRejected {
                origin: Origin::Source,
                reason: reason.clone(),
            });
            return Err(UpdateError::Signature(reason));
        }
        self.last_seen = Some(hash);
        match self.store.apply_json(&document.body) {
            Ok(version) => {
                self.source.commit();
                self.emit(&UpdateEvent::Applied { version, origin: Origin::Source });
                self.write_cache(&document);
                Ok(Refreshed::Applied(version))
            }
            Err(error) if error.stale_version() == Some(self.store.version()) => {
                // The serving version, in other bytes (re-serialized, or
                // served from a cache before the source caught up).
                self.source.commit();
                self.emit(&UpdateEvent::Unchanged);
                Ok(Refreshed::Unchanged)
            }
            Err(error) => {
                self.emit(&UpdateEvent::Rejected { origin: Origin::Source, error: error.clone() });
                Err(UpdateError::Rejected(error))
            }
        }
    }

    #[cfg(feature = "signing")]
    fn verify(&self, document: &Document) -> Result<(), String> {
        match &self.verifier {
            Some(v) => v.verify(&document.body, document.signature.as_deref()),
            None => Ok(()),
        }
    }

    #[cfg(not(feature = "signing"))]
    fn verify(&self, _: &Document) -> Result<(), String> {
        Ok(())
    }

    /// Serves the cache file, if there is a valid one.
    fn load_cache(&mut self) -> bool {
        let Some(path) = &self.cache_file else { return false };
        let Ok(document) = file::read_document(path) else { return false };
        if let Err(reason) = self.verify(&document) {
            self.emit(&UpdateEvent::SignatureRejected { origin: Origin::Cache, reason });
            return false;
        }
        match self.adopt(&document.body, Origin::Cache) {
            Ok(_) => true,
            Err(error) => {
                self.emit(&UpdateEvent::Rejected { origin: Origin::Cache, error });
                false
            }
        }
    }

    /// Applies a start-up document (cache or bootstrap): on success the store
    /// serves it, its bytes count as seen, and an `Applied` event says where
    /// it came from.
    fn adopt(&mut self, body: &[u8], origin: Origin) -> Result<u64, Error> {
        let version = self.store.apply_json(body)?;
        self.last_seen = Some(xxh3_64(body));
        self.emit(&UpdateEvent::Applied { version, origin });
        Ok(version)
    }

    /// Writes the applied document to the cache file: temp file, fsync,
    /// rename, so a crash leaves the old cache or the new one, never half.
    fn write_cache(&self, document: &Document) {
        let Some(path) = &self.cache_file else { return };
        let result =
            write_atomically(path, &document.body).and_then(|()| match &document.signature {
                Some(sig) => write_atomically(&sig_path(path), sig),
                None => match fs::remove_file(sig_path(path)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            });
        if let Err(e) = result {
            self.emit(&UpdateEvent::CacheWriteFailed {
                reason: format!("{}: {e}", path.display()),
            });
        }
    }

    /// The wait before the next pull: the interval, jittered; after failures,
    /// an exponential backoff, jittered, capped at `max_backoff`.
    fn next_wait(&mut self, ok: bool) -> Duration {
        let base = if ok || self.failures == 0 {
            self.interval
        } else {
            let factor = 2u32.saturating_pow(self.failures.saturating_sub(1).min(20));
            self.interval.saturating_mul(factor).min(self.max_backoff)
        };
        if self.jitter == 0.0 {
            return base;
        }
        let spread = 1.0 + self.jitter * (2.0 * self.random() - 1.0);
        base.mul_f64(spread.max(0.0))
    }

    /// A number in `0.0..1.0` from xorshift64*: jitter needs spread, not
    /// secrecy.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A per-process, per-updater seed, so instances of a fleet draw different
/// jitter.
fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let address = std::ptr::addr_of!(local) as u64;
    xxh3_64(
        &[nanos.to_le_bytes(), u64::from(std::process::id()).to_le_bytes(), address.to_le_bytes()]
            .concat(),
    ) | 1
}

pub(crate) fn sig_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn puller(interval: Duration, jitter: f64) -> Puller {
        Puller {
            store: Arc::new(FlagStore::new()),
            source: Box::new(file::FileSource::new(PathBuf::from("/nonexistent"))),
            cache_file: None,
            on_event: None,
            last_seen: None,
            failures: 0,
            planned_wait: interval,
            rng: seed(),
            interval,
            jitter,
            max_backoff: Duration::from_secs(60),
            #[cfg(feature = "signing")]
            verifier: None,
        }
    }

    #[test]
    fn waits_are_jittered_around_the_interval() {
        let mut p = puller(Duration::from_secs(10), 0.1);
        let waits: Vec<Duration> = (0..1000).map(|_| p.next_wait(true)).collect();
        assert!(waits.iter().all(|w| (9.0..=11.0).contains(&w.as_secs_f64())));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 900, "jitter spreads the waits");
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let mut p = puller(Duration::from_secs(1), 0.0);
        let mut waits = Vec::new();
        for failures in 1..=10 {
            p.failures = failures;
            waits.push(p.next_wait(false).as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(p.next_wait(true).as_secs(), 1, "success resets to the interval");
    }

    #[test]
    fn atomic_writes_replace_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("flagstone-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("cache.json");
        write_atomically(&path, b"first").expect("write");
        write_atomically(&path, b"second").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let leftovers = fs::read_dir(&dir).expect("dir").count();
        assert_eq!(leftovers, 1, "no temp files left behind");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
