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
//! Every pull has a deadline (30 s by default) that covers redirects, the
//! body and the signature; [`Updater::stop`] and drop return within 100 ms
//! whatever a pull is doing, and a pull abandoned that way never applies.
//! The cache file also records what the store decided on its own (a
//! rollback, a guard trip), so a restart does not undo it.
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
//!     .start_and_wait()?; // in async code: .start()?, then updater.ready().await
//! println!("serving {:?} config version {}", updater.serving(), store.version());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `docs/delivery.md` covers signatures and how fast a push reaches a fleet.

mod cache;
#[cfg(feature = "etcd")]
pub(crate) mod etcd;
mod file;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "signing")]
mod signing;

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::xxh3_64;

pub(crate) use cache::write_atomically;

use crate::error::Error;
use crate::observe::{ChangeCause, StoreEvent};
use crate::store::{Decisions, FlagStore};

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
    /// The source's current document: the last pull found it serving.
    Fresh,
    /// An earlier document of the source: the last pull could not reach
    /// the source, or the source's current document was refused.
    Stale,
    /// A decision of this store holds it back from the source's document:
    /// a rollback to an older version, or a guard trip, until a newer
    /// version arrives.
    Held,
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

/// One outcome of the updater, for logs, metrics and alerts. Its store's
/// listeners ([`FlagStore::on_event`]) hear it too, as
/// [`StoreEvent::Update`].
#[derive(Clone, Debug)]
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
    /// serving what it served. Reported once per distinct document.
    Rejected {
        /// Where the document came from.
        origin: Origin,
        /// Why, with the path into the document.
        error: Error,
    },
    /// A document says the serving version with other content: an edit
    /// published without a version bump. Refused (no store applies it);
    /// reported once per distinct document.
    VersionNotBumped {
        /// Where the document came from.
        origin: Origin,
        /// The version it repeats.
        version: u64,
    },
    /// A document's signature is missing, malformed or wrong: refused.
    SignatureRejected {
        /// Where the document came from.
        origin: Origin,
        /// Why.
        reason: SignatureRefused,
    },
    /// The source could not be reached or answered wrongly; the next try is
    /// in `retry_in`.
    SourceError {
        /// What went wrong.
        error: SourceError,
        /// When the updater tries again.
        retry_in: Duration,
    },
    /// The cache file could not be written (or a decision could not be
    /// persisted in it).
    CacheWriteFailed {
        /// Why, naming the file.
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
            UpdateEvent::VersionNotBumped { origin, version } => write!(
                f,
                "refused {origin:?} document: version {version} again with other content; \
                 bump the version to publish a change"
            ),
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
///
/// Each variant says what failed; the detail (where and what in a refused
/// document, the source's own error) is its [`source`](std::error::Error::source),
/// so error reporters that walk the chain print both, once.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// A builder setting is unusable: refused by `start()`, where it was
    /// written, rather than hammering a source or stalling the thread.
    #[error("updater setting `{setting}` {problem}")]
    Setting {
        /// The builder method, e.g. `"interval"`.
        setting: &'static str,
        /// What is wrong with its value.
        problem: SettingProblem,
    },
    /// The builder was given no source.
    #[error("the updater has no source: call .file(..), .http(..) or .etcd(..)")]
    NoSource,
    /// The public key given to the builder is not an Ed25519 public key.
    #[cfg(feature = "signing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
    #[error("the updater's public key is unusable")]
    PublicKey(#[source] crate::signing::SignatureError),
    /// The updater's thread could not be started.
    #[error("cannot spawn the updater thread")]
    Spawn(#[source] Arc<std::io::Error>),
    /// The bootstrap document is invalid.
    #[error("bootstrap document refused")]
    Bootstrap(#[source] Error),
    /// The source could not be reached.
    #[error("source unavailable")]
    Source(#[source] SourceError),
    /// The fetched document was refused.
    #[error("document refused")]
    Rejected(#[source] Error),
    /// The fetched document's signature was refused.
    #[error("signature refused")]
    Signature(#[source] SignatureRefused),
    /// The updater was stopped while the pull ran: nothing was applied.
    #[error("the updater was stopped during the pull; nothing was applied")]
    Stopped,
}

/// What is wrong with an [`UpdaterBuilder`] setting
/// ([`UpdateError::Setting`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum SettingProblem {
    /// A duration over a day.
    OverADay(Duration),
    /// Zero, where only a positive value works.
    Zero,
    /// Not a fraction in `0..=1` (NaN, infinite, negative, above 1).
    NotAFraction(f64),
    /// An empty list, where one entry is needed (etcd's endpoints).
    Empty,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingProblem::OverADay(value) => write!(f, "of {value:?} is over a day"),
            SettingProblem::Zero => f.write_str("must be above zero"),
            SettingProblem::NotAFraction(value) => {
                write!(f, "of {value} is not a fraction in 0..=1")
            }
            SettingProblem::Empty => f.write_str("needs at least one entry"),
        }
    }
}

/// Why a document's signature was refused (feature `signing`): in
/// [`UpdateError::Signature`] and [`UpdateEvent::SignatureRejected`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureRefused {
    /// The document came without a signature.
    #[error("the document is unsigned")]
    Unsigned,
    /// The signature is malformed or does not match the document and key.
    #[cfg(feature = "signing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "signing")))]
    #[error(transparent)]
    Invalid(crate::signing::SignatureError),
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
#[derive(Clone, Debug)]
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
    /// Fetches the current document, giving up at `deadline`.
    fn fetch(&mut self, deadline: Instant) -> Result<Fetch, SourceError>;
    /// Called when the last fetched document was applied or is the one
    /// serving: a conditional source may now ask only for changes.
    fn commit(&mut self) {}
    /// Where the last fetch read the source (etcd: its revision), for a
    /// watch to start after.
    fn position(&self) -> Option<i64> {
        None
    }
    /// A watch that tells when the document changes, for a source that
    /// pushes; `None` for one that is polled.
    fn watcher(&self) -> Option<Box<dyn Watcher>> {
        None
    }
}

/// Waits for a pushing source's document to change, on the updater's
/// thread (outside the lock `refresh_now` takes).
pub(crate) trait Watcher: Send {
    /// Waits about one interval for a change after position `since`.
    fn wait(&mut self, since: i64, stopped: &dyn Fn() -> bool) -> Watched;
}

/// What a wait came to.
// Only the etcd source watches; without it no wait is ever made.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) enum Watched {
    /// The document (or its signature) changed: pull now.
    Changed,
    /// Nothing yet.
    Quiet,
    /// The watch broke, was canceled or stalled: read again and watch anew.
    Lost(SourceError),
}

type Callback = Arc<dyn Fn(&UpdateEvent) + Send + Sync>;

/// The longest interval, backoff, deadline or first wait accepted: longer
/// ones are surely mistakes (`Duration::MAX`), and would overflow waits.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// How much of the documents applied an updater keeps, so that a rollback
/// to one of them can be persisted in the cache (signature and all).
const KEPT_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

/// Configures and starts an [`Updater`].
#[must_use]
pub struct UpdaterBuilder {
    store: Arc<FlagStore>,
    source: Option<SourceSpec>,
    interval: Duration,
    jitter: f64,
    max_backoff: Duration,
    deadline: Duration,
    max_body: u64,
    cache_file: Option<PathBuf>,
    bootstrap: Option<Vec<u8>>,
    on_event: Option<Callback>,
    wait_for_first: Duration,
    #[cfg(feature = "http")]
    http: http::HttpOptions,
    #[cfg(feature = "etcd")]
    etcd_credentials: Option<(String, String)>,
    #[cfg(feature = "signing")]
    public_key: Option<Result<signing::Verifier, crate::signing::SignatureError>>,
}

enum SourceSpec {
    File(PathBuf),
    #[cfg(feature = "http")]
    Http(String),
    #[cfg(feature = "etcd")]
    Etcd {
        endpoints: Vec<String>,
        key: String,
    },
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
    /// document's signature is read from `<path>.sig`. Anything but a
    /// regular file (a FIFO, a device) is refused without blocking.
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

    /// Follow the document at `key` of an etcd cluster, pushed through a
    /// watch (feature `etcd`); its signature is the value at `{key}.sig`.
    /// `endpoints` are the cluster's client URLs
    /// (`["http://127.0.0.1:2379"]`, `https://` too), tried in turn.
    ///
    /// A document and its signature are only ever read together, at one
    /// revision. Every interval the updater also checks the key's revision
    /// cheaply, so a watch that stalled without a word is found and
    /// reconnected; `serving()` says `Stale` while disconnected.
    #[cfg(feature = "etcd")]
    pub fn etcd(
        mut self,
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        key: impl Into<String>,
    ) -> Self {
        let endpoints = endpoints.into_iter().map(Into::into).collect();
        self.source = Some(SourceSpec::Etcd { endpoints, key: key.into() });
        self
    }

    /// The user and password of an etcd cluster with auth enabled (feature
    /// `etcd`); the token is renewed whenever etcd refuses it.
    #[cfg(feature = "etcd")]
    pub fn etcd_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.etcd_credentials = Some((user.into(), password.into()));
        self
    }

    /// The poll interval (default 5 s, at most a day); each wait is
    /// jittered around it. For etcd, the interval of the revision check
    /// that finds a stalled watch.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How far each wait strays from the interval, as a fraction in `0..=1`
    /// (default 0.1: ±10%), so a fleet does not poll in lockstep. Anything
    /// else (NaN included) is refused by [`UpdaterBuilder::start`].
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// The longest wait after repeated failures (default 5 minutes, at most
    /// a day; never below the interval); waits double from the interval
    /// after each failure, with jitter.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// How long one pull may take in all: connecting, redirects, the body,
    /// the signature (default 30 s, at most a day). A pull past it is a
    /// source error, and the store keeps serving.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The largest document accepted, from any source and from the cache
    /// file, after decompression (default 16 MiB).
    pub fn max_body_bytes(mut self, max: u64) -> Self {
        self.max_body = max;
        self
    }

    /// Keep the last applied document here (written atomically, with its
    /// signature and the store's own decisions in one file), and serve it
    /// at start-up until the source delivers. A symlink is written through
    /// to its target.
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

    /// How long [`Updater::ready`] and [`Updater::wait_ready`] wait for the
    /// first fresh document (at most a day; default: do not wait).
    /// [`Updater::serving`] then says whether it came.
    pub fn wait_for_first(mut self, wait: Duration) -> Self {
        self.wait_for_first = wait;
        self
    }

    /// Connect and read timeouts for HTTP (defaults 5 s and 10 s), within
    /// the pull's [deadline](UpdaterBuilder::deadline).
    #[cfg(feature = "http")]
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.http.connect_timeout = connect;
        self.http.read_timeout = read;
        self
    }

    /// Send `Authorization: Bearer <token>` with every HTTP request to the
    /// URL's origin (never after a redirect to another one).
    #[cfg(feature = "http")]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.http.headers.push(("Authorization".to_owned(), format!("Bearer {}", token.into())));
        self
    }

    /// Send an extra header with every HTTP request to the URL's origin
    /// (never after a redirect to another one).
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

    /// The settings, checked: a zero, endless or NaN value is refused here,
    /// where it was written, rather than hammering a source or stalling
    /// the thread later.
    fn check(&self) -> Result<(), UpdateError> {
        let refuse = |setting, problem| Err(UpdateError::Setting { setting, problem });
        let durations = [
            ("interval", self.interval),
            ("max_backoff", self.max_backoff),
            ("deadline", self.deadline),
            ("wait_for_first", self.wait_for_first),
        ];
        for (name, value) in durations {
            if value > LONGEST {
                return refuse(name, SettingProblem::OverADay(value));
            }
        }
        if self.interval.is_zero() {
            return refuse("interval", SettingProblem::Zero);
        }
        if self.deadline.is_zero() {
            return refuse("deadline", SettingProblem::Zero);
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return refuse("jitter", SettingProblem::NotAFraction(self.jitter));
        }
        if self.max_body == 0 {
            return refuse("max_body_bytes", SettingProblem::Zero);
        }
        Ok(())
    }

    /// Serves the cache file or the bootstrap document and starts the
    /// background thread; returns at once (it reads only local files), so
    /// it is safe inside `async` code. Await [`Updater::ready`] (or call
    /// [`Updater::wait_ready`], or start with
    /// [`start_and_wait`](UpdaterBuilder::start_and_wait)) for the first
    /// fresh document.
    pub fn start(self) -> Result<Updater, UpdateError> {
        self.check()?;
        #[cfg(feature = "signing")]
        let verifier = self.public_key.transpose().map_err(UpdateError::PublicKey)?;
        #[cfg(feature = "signing")]
        let signed = verifier.is_some();
        #[cfg(not(feature = "signing"))]
        let signed = false;
        let source: Box<dyn Source> = match self.source {
            None => {
                return Err(UpdateError::NoSource);
            }
            Some(SourceSpec::File(path)) => {
                Box::new(file::FileSource::new(path, self.max_body, signed))
            }
            #[cfg(feature = "http")]
            Some(SourceSpec::Http(url)) => {
                Box::new(http::HttpSource::new(url, self.http, self.max_body, signed))
            }
            #[cfg(feature = "etcd")]
            Some(SourceSpec::Etcd { endpoints, key }) => {
                if endpoints.is_empty() {
                    return Err(UpdateError::Setting {
                        setting: "etcd",
                        problem: SettingProblem::Empty,
                    });
                }
                let options = etcd::EtcdOptions {
                    endpoints,
                    credentials: self.etcd_credentials,
                    connect_timeout: self.http.connect_timeout,
                    request_timeout: self.http.read_timeout,
                    // Values come base64-encoded inside JSON.
                    max_response: self.max_body.saturating_mul(3).saturating_add(64 * 1024),
                };
                Box::new(etcd::EtcdSource::new(options, key, self.interval))
            }
        };
        let events = Events(self.on_event, Some(self.store.clone()));
        let puller = Puller {
            store: self.store.clone(),
            source,
            events: events.clone(),
            last_seen: None,
            failures: 0,
            planned_wait: self.interval,
            rng: seed(),
            interval: self.interval,
            jitter: self.jitter,
            max_backoff: self.max_backoff.max(self.interval),
            deadline: self.deadline,
            #[cfg(feature = "signing")]
            verifier,
        };
        let shared = Arc::new(Shared {
            store: self.store,
            puller: Mutex::new(puller),
            state: Mutex::new(State { origin: None, current: false }),
            fresh: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            cache: Mutex::new(Cache {
                path: self.cache_file,
                max_body: self.max_body,
                kept: VecDeque::new(),
            }),
            control: Control::default(),
            events,
        });

        // Start-up: the cache file, else the bootstrap.
        let origin = if shared.load_cache() {
            Some(Origin::Cache)
        } else if let Some(doc) = &self.bootstrap {
            let version = shared.store.apply_json(doc).map_err(UpdateError::Bootstrap)?;
            shared.lock().last_seen = Some((xxh3_64(doc), Seen::Applied));
            shared.events.emit(&UpdateEvent::Applied { version, origin: Origin::Bootstrap });
            Some(Origin::Bootstrap)
        } else {
            None
        };
        shared.state().origin = origin;

        // Persist the store's own decisions (rollbacks, guard trips) as they
        // are taken, so that a restart takes them up again.
        let listener = {
            let shared = Arc::downgrade(&shared);
            shared_listener(shared)
        };
        let listener = shared.store.subscribe(listener);

        let (done, finished) = mpsc::channel::<()>();
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("flagstone-updater".into())
                .spawn(move || {
                    run(&shared);
                    drop(done);
                })
                .map_err(|e| UpdateError::Spawn(Arc::new(e)))?
        };
        let ready_by = Instant::now() + self.wait_for_first;
        Ok(Updater { shared, thread: Some(thread), finished, listener, ready_by })
    }

    /// [`start`](UpdaterBuilder::start), then blocks until the first fresh
    /// document or [`wait_for_first`](UpdaterBuilder::wait_for_first) has
    /// passed: for programs without an async runtime. Inside `async` code
    /// use `start()` and `updater.ready().await`.
    pub fn start_and_wait(self) -> Result<Updater, UpdateError> {
        let updater = self.start()?;
        updater.wait_ready();
        Ok(updater)
    }
}

/// Tells the updater of the store's own decisions, without keeping it alive.
fn shared_listener(shared: Weak<Shared>) -> crate::observe::Listener {
    Arc::new(move |event: &StoreEvent| {
        if let StoreEvent::Changed(change) = event
            && matches!(change.cause, ChangeCause::RolledBack | ChangeCause::Guard)
            && let Some(shared) = shared.upgrade()
        {
            shared.persist_decisions();
        }
    })
}

/// Keeps a [`FlagStore`] up to date from a source, on a background thread.
///
/// Dropping the updater (or calling [`Updater::stop`]) ends the thread
/// within 100 ms; the store keeps serving its last config.
pub struct Updater {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread has ended.
    finished: mpsc::Receiver<()>,
    /// The store listener that persists decisions.
    listener: u64,
    /// When [`Updater::ready`] stops waiting for a first fresh document.
    ready_by: Instant,
}

/// The future of [`Updater::ready`]: `true` once a fresh document serves,
/// `false` when `wait_for_first` passed first. Runtime-agnostic: woken by
/// the updater's thread, and by a timer thread for the deadline.
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct Ready<'u> {
    updater: &'u Updater,
    timer: bool,
}

impl std::future::Future for Ready<'_> {
    type Output = bool;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        use std::task::Poll;
        let this = self.get_mut();
        let shared = &this.updater.shared;
        let decided = || {
            if shared.state().fresh() {
                Some(true)
            } else if Instant::now() >= this.updater.ready_by {
                Some(false)
            } else {
                None
            }
        };
        if let Some(done) = decided() {
            return Poll::Ready(done);
        }
        {
            let mut wakers = shared.wakers.lock().unwrap_or_else(|p| p.into_inner());
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        // Fresh between the first look and registering: do not sleep on it.
        if let Some(done) = decided() {
            return Poll::Ready(done);
        }
        if !this.timer {
            this.timer = true;
            let (waker, at) = (cx.waker().clone(), this.updater.ready_by);
            // A thread that exits at the deadline: no runtime's timer needed.
            let _ = thread::Builder::new().name("flagstone-ready".into()).spawn(move || {
                thread::sleep(at.saturating_duration_since(Instant::now()));
                waker.wake();
            });
        }
        Poll::Pending
    }
}

impl fmt::Debug for Updater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updater").field("serving", &self.serving()).finish_non_exhaustive()
    }
}

impl Updater {
    /// Resolves when the first fresh document serves (`true`) or
    /// `wait_for_first` has passed (`false`); never blocks the thread that
    /// polls it. `wait_for_first` unset: resolves at once.
    ///
    /// Which calls block: [`UpdaterBuilder::start`] reads only local files
    /// (cache, bootstrap) and returns; `ready` does not block;
    /// [`Updater::wait_ready`] and [`UpdaterBuilder::start_and_wait`] block up
    /// to `wait_for_first`; [`Updater::refresh_now`] does a pull on the
    /// caller's thread (up to the deadline; in async code, run it with your
    /// runtime's `spawn_blocking`); [`Updater::stop`] and drop return within
    /// 100 ms.
    pub fn ready(&self) -> Ready<'_> {
        Ready { updater: self, timer: false }
    }

    /// Blocks until the first fresh document serves (`true`) or
    /// `wait_for_first` has passed (`false`). Not for async code: see
    /// [`Updater::ready`].
    pub fn wait_ready(&self) -> bool {
        let state = self.shared.state();
        let left = self.ready_by.saturating_duration_since(Instant::now());
        match self.shared.fresh.wait_timeout_while(state, left, |s| !s.fresh()) {
            Ok((state, _)) => state.fresh(),
            Err(poisoned) => poisoned.into_inner().0.fresh(),
        }
    }

    /// Starts configuring an updater for `store`.
    pub fn builder(store: Arc<FlagStore>) -> UpdaterBuilder {
        UpdaterBuilder {
            store,
            source: None,
            interval: Duration::from_secs(5),
            jitter: 0.1,
            max_backoff: Duration::from_secs(300),
            deadline: Duration::from_secs(30),
            max_body: 16 * 1024 * 1024,
            cache_file: None,
            bootstrap: None,
            on_event: None,
            wait_for_first: Duration::ZERO,
            #[cfg(feature = "http")]
            http: http::HttpOptions::default(),
            #[cfg(feature = "etcd")]
            etcd_credentials: None,
            #[cfg(feature = "signing")]
            public_key: None,
        }
    }

    /// Pulls once, now, on the caller's thread (waiting for a pull the
    /// thread has under way, if any). A document refused before is refused
    /// again, every time, until the source has another one.
    pub fn refresh_now(&self) -> Result<Refreshed, UpdateError> {
        self.shared.pull(true)
    }

    /// What the store is serving: fresh, stale, held by a local decision,
    /// the cache, the bootstrap, or nothing.
    pub fn serving(&self) -> Serving {
        let origin = self.shared.state().origin;
        let held = || {
            let decided = self.shared.store.decisions();
            decided.serving < decided.newest || !decided.trips.is_empty()
        };
        match origin {
            None => Serving::Nothing,
            Some(_) if held() => Serving::Held,
            Some(Origin::Cache) => Serving::Cache,
            Some(Origin::Bootstrap) => Serving::Bootstrap,
            Some(Origin::Source) if self.shared.state().current => Serving::Fresh,
            Some(Origin::Source) => Serving::Stale,
        }
    }

    /// Stops the background thread: returns within 100 ms. A pull under
    /// way is abandoned (it finishes on its own, within its deadline, and
    /// applies nothing).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.store.unsubscribe(self.listener);
        self.shared.control.stop();
        self.shared.wake_ready();
        let Some(thread) = self.thread.take() else { return };
        match self.finished.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                let _ = thread.join();
            }
            // Busy in a pull: it ends on its own, and applies nothing.
            Err(RecvTimeoutError::Timeout) => drop(thread),
        }
    }
}

impl Drop for Updater {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether the updater was stopped, and how its thread is woken.
///
/// A pull checks `stopped` and applies while holding the lock, so once
/// [`Control::stop`] returns no pull can apply any more.
#[derive(Default)]
struct Control {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self) {
        *self.lock() = true;
        self.wake.notify_all();
    }

    fn stopped(&self) -> bool {
        *self.lock()
    }

    /// Waits `wait`, or until stopped; whether stopped.
    fn sleep(&self, wait: Duration) -> bool {
        let stopped = self.lock();
        match self.wake.wait_timeout_while(stopped, wait, |s| !*s) {
            Ok((stopped, _)) => *stopped,
            Err(poisoned) => *poisoned.into_inner().0,
        }
    }
}

/// What the updater installed, as [`Updater::serving`] reads it.
#[derive(Clone, Copy)]
struct State {
    /// Where the serving document came from.
    origin: Option<Origin>,
    /// Whether the last pull found the source's current document serving.
    current: bool,
}

impl State {
    fn fresh(&self) -> bool {
        self.origin == Some(Origin::Source) && self.current
    }
}

struct Shared {
    store: Arc<FlagStore>,
    puller: Mutex<Puller>,
    state: Mutex<State>,
    fresh: Condvar,
    /// Tasks awaiting [`Updater::ready`], woken with `fresh`.
    wakers: Mutex<Vec<std::task::Waker>>,
    cache: Mutex<Cache>,
    control: Control,
    events: Events,
}

/// The cache file and the applied documents kept for it.
struct Cache {
    path: Option<PathBuf>,
    max_body: u64,
    /// Documents applied from the source (and the cache), oldest first,
    /// within [`KEPT_DOCUMENT_BYTES`].
    kept: VecDeque<(u64, Arc<Document>)>,
}

#[derive(Clone)]
struct Events(Option<Callback>, Option<Arc<FlagStore>>);

impl Events {
    fn emit(&self, event: &UpdateEvent) {
        #[cfg(feature = "tracing")]
        match event {
            UpdateEvent::Applied { .. } => tracing::info!(target: "flagstone", "{event}"),
            UpdateEvent::Unchanged => tracing::trace!(target: "flagstone", "{event}"),
            _ => tracing::warn!(target: "flagstone", "{event}"),
        }
        if let Some(f) = &self.0 {
            f(event);
        }
        // One subscription, `store.on_event`, hears the updater too.
        if let Some(store) = &self.1 {
            store.tell_update(event);
        }
    }
}

impl Shared {
    /// Wakes the tasks awaiting [`Updater::ready`] to look again.
    fn wake_ready(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Puller> {
        self.puller.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One pull: fetch, verify, apply (unless stopped meanwhile), cache.
    fn pull(&self, asked: bool) -> Result<Refreshed, UpdateError> {
        let mut puller = self.lock();
        let outcome = puller.pull(asked, &self.control);
        let applied = match &outcome {
            Ok(Pulled::Applied(version, document)) => Some((*version, document.clone())),
            _ => None,
        };
        drop(puller);
        // Cached before anyone hears of it: a caller that saw the update
        // may read the cache file.
        if let Some((version, document)) = applied {
            self.cache_applied(version, document);
        }
        {
            let mut state = self.state();
            match &outcome {
                Ok(_) => {
                    state.origin = Some(Origin::Source);
                    state.current = true;
                }
                Err(UpdateError::Stopped) => {}
                Err(_) => state.current = false,
            }
        }
        self.fresh.notify_all();
        self.wake_ready();
        outcome.map(|pulled| match pulled {
            Pulled::Applied(version, _) => Refreshed::Applied(version),
            Pulled::Unchanged => Refreshed::Unchanged,
        })
    }

    /// Serves the cache file, if there is a valid one, with the decisions
    /// recorded in it.
    fn load_cache(&self) -> bool {
        let mut cache = self.cache();
        let Some(path) = cache.path.clone() else { return false };
        let Ok(cached) = cache::read(&path, cache.max_body) else { return false };
        let mut puller = self.lock();
        if let Err(reason) = puller.verify(&cached.document) {
            self.events.emit(&UpdateEvent::SignatureRejected { origin: Origin::Cache, reason });
            return false;
        }
        match self.store.apply_json(&cached.document.body) {
            Ok(version) => {
                self.store.restore(&Decisions {
                    serving: version,
                    newest: cached.newest,
                    trips: cached.trips,
                });
                puller.last_seen = Some((xxh3_64(&cached.document.body), Seen::Applied));
                cache.keep(version, Arc::new(cached.document));
                self.events.emit(&UpdateEvent::Applied { version, origin: Origin::Cache });
                true
            }
            Err(error) => {
                self.events.emit(&UpdateEvent::Rejected { origin: Origin::Cache, error });
                false
            }
        }
    }

    /// Writes a document just applied from the source to the cache file.
    fn cache_applied(&self, version: u64, document: Arc<Document>) {
        let mut cache = self.cache();
        cache.keep(version, document.clone());
        let decided = self.store.decisions();
        // A decision taken since (a rollback racing the apply) is
        // persisted by its own event.
        if decided.serving == version {
            cache.write(&document, &decided, &self.events);
        }
    }

    /// Persists the store's decisions: the serving document, kept from when
    /// it was applied, with the newest version seen and the guard trips.
    fn persist_decisions(&self) {
        let cache = self.cache();
        if cache.path.is_none() {
            return;
        }
        let decided = self.store.decisions();
        let kept = cache.kept.iter().rev().find(|(v, _)| *v == decided.serving);
        match kept {
            Some((_, document)) => cache.write(document, &decided, &self.events),
            None => self.events.emit(&UpdateEvent::CacheWriteFailed {
                reason: format!(
                    "the decision to serve version {} cannot be persisted: its document is \
                     not kept (only documents applied by this updater are)",
                    decided.serving
                ),
            }),
        }
    }
}

impl Cache {
    fn keep(&mut self, version: u64, document: Arc<Document>) {
        self.kept.retain(|(v, _)| *v != version);
        self.kept.push_back((version, document));
        let mut bytes: usize = self.kept.iter().map(|(_, d)| d.body.len()).sum();
        while self.kept.len() > crate::HISTORY
            || (bytes > KEPT_DOCUMENT_BYTES && self.kept.len() > 1)
        {
            if let Some((_, dropped)) = self.kept.pop_front() {
                bytes -= dropped.body.len();
            }
        }
    }

    fn write(&self, document: &Document, decided: &Decisions, events: &Events) {
        let Some(path) = &self.path else { return };
        if let Err(reason) = cache::write(path, document, decided) {
            events.emit(&UpdateEvent::CacheWriteFailed { reason });
        }
    }
}

/// The updater's thread: pull, then wait for the next pull. A polled
/// source waits out the (jittered) interval; a pushing one waits on its
/// watch, and after losing it reads again at once, then backs off if it
/// keeps losing it.
fn run(shared: &Shared) {
    let mut watcher = shared.lock().source.watcher();
    let mut losses = 0u32;
    loop {
        let pulled = shared.pull(false);
        let (wait, interval, position) = {
            let puller = shared.lock();
            (puller.planned_wait, puller.interval, puller.source.position())
        };
        let reached = !matches!(pulled, Err(UpdateError::Source(_)));
        match (watcher.as_mut(), position) {
            (Some(watcher), Some(since)) if reached => loop {
                match watcher.wait(since, &|| shared.control.stopped()) {
                    Watched::Changed => {
                        losses = 0;
                        break;
                    }
                    Watched::Quiet if shared.control.stopped() => return,
                    Watched::Quiet => {}
                    Watched::Lost(error) => {
                        // Lost: not serving the source's current document
                        // as far as anyone knows, until the next read.
                        shared.state().current = false;
                        let retry_in = (interval / 10)
                            .saturating_mul(2u32.saturating_pow(losses.min(10)))
                            .min(shared.lock().max_backoff);
                        let retry_in = if losses == 0 { Duration::ZERO } else { retry_in };
                        losses = losses.saturating_add(1);
                        shared.events.emit(&UpdateEvent::SourceError { error, retry_in });
                        if shared.control.sleep(retry_in) {
                            return;
                        }
                        break;
                    }
                }
            },
            _ => {
                if shared.control.sleep(wait) {
                    return;
                }
            }
        }
        if shared.control.stopped() {
            return;
        }
    }
}

/// What a pull came to.
enum Pulled {
    Applied(u64, Arc<Document>),
    Unchanged,
}

/// What became of a document, by the hash of its bytes.
enum Seen {
    Applied,
    Refused(UpdateError),
}

/// The state of pulling: the source, what was last seen, and the failures
/// that set the backoff.
struct Puller {
    store: Arc<FlagStore>,
    source: Box<dyn Source>,
    events: Events,
    /// The hash of the last document applied or refused for its content,
    /// and what became of it: the same bytes are neither applied nor
    /// reported twice, and a refusal stays a refusal.
    last_seen: Option<(u64, Seen)>,
    failures: u32,
    /// When the thread pulls next, planned by the last pull.
    planned_wait: Duration,
    rng: u64,
    interval: Duration,
    jitter: f64,
    max_backoff: Duration,
    deadline: Duration,
    #[cfg(feature = "signing")]
    verifier: Option<signing::Verifier>,
}

impl Puller {
    /// Fetches, verifies and applies once. `asked`: for a caller, who hears
    /// a refusal every time; the thread reports one once.
    fn pull(&mut self, asked: bool, control: &Control) -> Result<Pulled, UpdateError> {
        let outcome = self.pull_once(asked, control);
        self.planned_wait = self.next_wait(outcome.is_ok());
        if let Err(UpdateError::Source(error)) = &outcome {
            self.events.emit(&UpdateEvent::SourceError {
                error: error.clone(),
                retry_in: self.planned_wait,
            });
        }
        outcome
    }

    fn pull_once(&mut self, asked: bool, control: &Control) -> Result<Pulled, UpdateError> {
        let deadline = Instant::now() + self.deadline;
        let document = match self.source.fetch(deadline) {
            Ok(Fetch::NotModified) => {
                self.failures = 0;
                self.events.emit(&UpdateEvent::Unchanged);
                return Ok(Pulled::Unchanged);
            }
            Ok(Fetch::Document(document)) => document,
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                return Err(UpdateError::Source(error));
            }
        };
        self.failures = 0;
        let hash = xxh3_64(&document.body);
        match &self.last_seen {
            Some((seen, Seen::Applied)) if *seen == hash => {
                self.source.commit();
                self.events.emit(&UpdateEvent::Unchanged);
                return Ok(Pulled::Unchanged);
            }
            Some((seen, Seen::Refused(error))) if *seen == hash => {
                let _ = asked; // Reported when first seen; the state says it still holds.
                return Err(error.clone());
            }
            _ => {}
        }
        // A signature can lag its document (a sidecar published second), so a
        // refusal is not remembered: the next pull checks again.
        if let Err(reason) = self.verify(&document) {
            self.events.emit(&UpdateEvent::SignatureRejected {
                origin: Origin::Source,
                reason: reason.clone(),
            });
            return Err(UpdateError::Signature(reason));
        }
        // Checked and applied under the stop lock: once `stop` returned,
        // nothing applies.
        let stopped = control.lock();
        if *stopped {
            return Err(UpdateError::Stopped);
        }
        let applied = self.store.apply_json(&document.body);
        drop(stopped);
        match applied {
            Ok(version) => {
                self.last_seen = Some((hash, Seen::Applied));
                self.source.commit();
                self.events.emit(&UpdateEvent::Applied { version, origin: Origin::Source });
                Ok(Pulled::Applied(version, Arc::new(document)))
            }
            Err(error) if error.is_same_version() => {
                // An edit without a version bump: loud, once per document.
                let refused = UpdateError::Rejected(error.clone());
                self.last_seen = Some((hash, Seen::Refused(refused.clone())));
                self.events.emit(&UpdateEvent::VersionNotBumped {
                    origin: Origin::Source,
                    version: self.store.version(),
                });
                Err(refused)
            }
            Err(error)
                if matches!(error.kind(), crate::ErrorKind::Stale { offered, .. }
                    if offered == self.store.version()) =>
            {
                // The serving version, in other bytes (re-serialized, or
                // served from a cache before the source caught up).
                self.last_seen = Some((hash, Seen::Applied));
                self.source.commit();
                self.events.emit(&UpdateEvent::Unchanged);
                Ok(Pulled::Unchanged)
            }
            Err(error) => {
                let refused = UpdateError::Rejected(error.clone());
                self.last_seen = Some((hash, Seen::Refused(refused.clone())));
                self.events.emit(&UpdateEvent::Rejected { origin: Origin::Source, error });
                Err(refused)
            }
        }
    }

    #[cfg(feature = "signing")]
    fn verify(&self, document: &Document) -> Result<(), SignatureRefused> {
        match &self.verifier {
            Some(v) => v.verify(&document.body, document.signature.as_deref()),
            None => Ok(()),
        }
    }

    #[cfg(not(feature = "signing"))]
    fn verify(&self, _: &Document) -> Result<(), SignatureRefused> {
        Ok(())
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
        Duration::try_from_secs_f64(base.as_secs_f64() * spread).unwrap_or(base)
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

/// A signature as text for the cache: base64 as published, or raw bytes
/// encoded.
fn signature_text(signature: &[u8]) -> Option<String> {
    match std::str::from_utf8(signature) {
        Ok(text) => Some(text.trim().to_owned()),
        #[cfg(feature = "signing")]
        Err(_) => Some(signing::encode(signature)),
        #[cfg(not(feature = "signing"))]
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puller(interval: Duration, jitter: f64) -> Puller {
        Puller {
            store: Arc::new(FlagStore::new()),
            source: Box::new(file::FileSource::new(PathBuf::from("/nonexistent"), 1024, false)),
            events: Events(None, None),
            last_seen: None,
            failures: 0,
            planned_wait: interval,
            rng: seed(),
            interval,
            jitter,
            max_backoff: Duration::from_secs(60),
            deadline: Duration::from_secs(30),
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
}
