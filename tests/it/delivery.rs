//! Delivery from files: edits, atomic renames, ConfigMap symlink swaps,
//! half-written files, start-up from cache or bootstrap, and the updater
//! thread's life.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagstone::{FlagStore, Refreshed, Serving, UpdateEvent, Updater};

/// Every event's text, in order.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    pub fn record(&self) -> impl Fn(&UpdateEvent) + Send + Sync + 'static {
        let log = self.0.clone();
        move |e| log.lock().expect("events").push(e.to_string())
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().expect("events").clone()
    }

    pub fn last(&self) -> String {
        self.all().last().cloned().unwrap_or_default()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.all().iter().any(|e| e.contains(needle))
    }
}

pub fn doc(version: u64) -> String {
    format!(
        r#"{{ "version": {version}, "flags": {{ "f": {{ "enabled": true }}, "v{version}": {{ "enabled": true }} }} }}"#
    )
}

/// Writes through a temp file and a rename, as a deploy tool does.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

pub fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

/// The document a cache file holds.
pub fn cached_document(cache: &Path) -> String {
    let envelope: serde_json::Value =
        serde_json::from_slice(&fs::read(cache).expect("cache written")).expect("an envelope");
    envelope["document"].as_str().expect("a document").to_owned()
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn updater(store: &Arc<FlagStore>, path: &Path, events: &Events) -> flagstone::UpdaterBuilder {
    Updater::builder(store.clone())
        .file(path)
        .interval(Duration::from_secs(3600))
        .on_event(events.record())
        .wait_for_first(Duration::from_secs(5))
}

/// A config file holding `doc(version)`, watched by a started updater that
/// polls only when told to.
struct Watched {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Arc<FlagStore>,
    events: Events,
    updater: Updater,
}

fn watched(version: u64) -> Watched {
    let dir = dir();
    let path = dir.path().join("flags.json");
    fs::write(&path, doc(version)).expect("write");
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater = updater(&store, &path, &events).start_and_wait().expect("start");
    Watched { dir, path, store, events, updater }
}

#[test]
fn file_edits_and_atomic_renames_are_applied() {
    let Watched { dir: _dir, path, store, events, updater } = watched(1);
    assert_eq!(updater.serving(), Serving::Fresh);
    assert_eq!(store.version(), 1);

    fs::write(&path, doc(2)).expect("edit in place");
    assert_eq!(updater.refresh_now().expect("refresh"), Refreshed::Applied(2));
    write_atomically(&path, &doc(3));
    assert_eq!(updater.refresh_now().expect("refresh"), Refreshed::Applied(3));
    assert_eq!(updater.refresh_now().expect("refresh"), Refreshed::Unchanged);
    assert_eq!(events.last(), "unchanged");
}

#[test]
fn configmap_symlink_swaps_are_applied() {
    // Kubernetes mounts a ConfigMap as flags.json -> ..data/flags.json, with
    // ..data -> ..2026_11_22_1 swapped atomically to a new directory.
    let dir = dir();
    let root = dir.path();
    let publish = |name: &str, text: &str| {
        let version_dir = root.join(name);
        fs::create_dir(&version_dir).expect("dir");
        fs::write(version_dir.join("flags.json"), text).expect("write");
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(name, &tmp).expect("symlink");
        fs::rename(&tmp, root.join("..data")).expect("swap");
    };
    publish("..2026_11_22_1", &doc(1));
    std::os::unix::fs::symlink("..data/flags.json", root.join("flags.json")).expect("symlink");
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater =
        updater(&store, &root.join("flags.json"), &events).start_and_wait().expect("start");
    assert_eq!(store.version(), 1);
    publish("..2026_11_22_2", &doc(2));
    assert_eq!(updater.refresh_now().expect("refresh"), Refreshed::Applied(2));
}

#[test]
fn a_half_written_file_is_refused_and_the_next_good_write_applied() {
    let Watched { dir: _dir, path, store, events, updater } = watched(1);
    let full = doc(2);
    fs::write(&path, &full[..full.len() / 2]).expect("half a write");
    let err = updater.refresh_now().expect_err("half a document");
    assert!(matches!(err, flagstone::UpdateError::Rejected(ref e) if e.is_invalid()), "{err}");
    assert!(
        events.last().starts_with("rejected Source document: invalid config"),
        "{}",
        events.last()
    );
    assert_eq!(store.version(), 1);
    // The same half-document again is refused again, but not re-reported.
    let before = events.all().len();
    let again = updater.refresh_now().expect_err("same bytes");
    assert!(matches!(again, flagstone::UpdateError::Rejected(ref e) if e.is_invalid()), "{again}");
    assert_eq!(events.all().len(), before);
    fs::write(&path, &full).expect("the rest of the write");
    assert_eq!(updater.refresh_now().expect("refresh"), Refreshed::Applied(2));
}

#[test]
fn the_serving_version_in_other_bytes_is_unchanged_not_stale() {
    let Watched { dir: _dir, path, events, updater, .. } = watched(1);
    fs::write(&path, format!("{}\n\n", doc(1))).expect("re-serialized");
    assert_eq!(updater.refresh_now().expect("same version"), Refreshed::Unchanged);
    assert_eq!(events.last(), "unchanged");
    assert!(!events.contains("rejected"), "{:?}", events.all());
}

/// Issue 18, item 1: an edit published without a version bump is not
/// "unchanged" but a refusal, loud and once per distinct document.
#[test]
fn an_edit_without_a_version_bump_is_a_refusal_reported_once() {
    let Watched { dir: _dir, path, store, events, updater } = watched(2);
    let edited =
        r#"{ "version": 2, "flags": { "f": { "enabled": false }, "v2": { "enabled": true } } }"#;
    fs::write(&path, edited).expect("edit, version kept");
    for _ in 0..3 {
        let err = updater.refresh_now().expect_err("refused every time");
        assert!(
            matches!(err, flagstone::UpdateError::Rejected(ref e) if e.is_same_version()),
            "{err}"
        );
        assert!(chain(&err).contains("bump the version"), "{}", chain(&err));
    }
    let loud: Vec<String> =
        events.all().into_iter().filter(|e| e.contains("again with other content")).collect();
    assert_eq!(loud.len(), 1, "reported once: {:?}", events.all());
    assert!(store.is_enabled("f", &flagstone::Context::new()), "version 2 as first applied serves");
    assert_ne!(updater.serving(), Serving::Fresh);
    // The fix: the same edit with a bump applies.
    fs::write(&path, edited.replace("\"version\": 2", "\"version\": 3")).expect("bump");
    assert_eq!(updater.refresh_now().expect("applied"), Refreshed::Applied(3));
}

/// An error and its sources, as a reporter that walks the chain prints it.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        text.push_str(": ");
        text.push_str(&source.to_string());
        next = source.source();
    }
    text
}

/// Issue 18, item 7: an update error says what failed and keeps the
/// detail as its source, typed, never as a string inside the variant.
#[test]
fn update_errors_keep_their_cause_as_a_typed_source() {
    use std::error::Error as _;
    let Watched { dir: _dir, path, updater, .. } = watched(2);
    fs::write(&path, r#"{ "version": 3, "flags": { "f": { "enabled": "yes" } } }"#).expect("write");
    let err = updater.refresh_now().expect_err("invalid");
    assert_eq!(err.to_string(), "document refused");
    let source = err.source().expect("the refusal's cause");
    let config = source.downcast_ref::<flagstone::Error>().expect("a flagstone::Error");
    assert_eq!(config.kind(), flagstone::ErrorKind::Invalid);
    assert!(chain(&err).contains("flags.f.enabled"), "{}", chain(&err));

    fs::remove_file(&path).expect("removed");
    let err = updater.refresh_now().expect_err("unreachable");
    assert!(err.source().is_some_and(|s| s.is::<flagstone::SourceError>()), "{err}");

    let err = Updater::builder(Arc::new(FlagStore::new()))
        .file(&path)
        .jitter(2.0)
        .start()
        .expect_err("jitter");
    assert!(matches!(
        err,
        flagstone::UpdateError::Setting {
            setting: "jitter",
            problem: flagstone::SettingProblem::NotAFraction(j)
        } if j == 2.0
    ));
}

#[test]
fn an_older_version_is_refused_as_stale() {
    let Watched { dir: _dir, path, store, updater, .. } = watched(5);
    fs::write(&path, doc(4)).expect("write");
    let err = updater.refresh_now().expect_err("stale");
    assert!(matches!(err, flagstone::UpdateError::Rejected(ref e) if e.is_stale()), "{err}");
    assert_eq!(store.version(), 5);
}

#[test]
fn start_up_serves_the_cache_when_the_source_is_down_else_the_bootstrap() {
    let dir = dir();
    let (source, cache) = (dir.path().join("missing.json"), dir.path().join("cache.json"));
    // An instance starting up: a new store, the same files.
    let boot = |wait: Duration| {
        let (store, events) = (Arc::new(FlagStore::new()), Events::default());
        let updater = Updater::builder(store.clone())
            .file(&source)
            .cache_file(&cache)
            .bootstrap(doc(0))
            .on_event(events.record())
            .wait_for_first(wait)
            .interval(Duration::from_secs(3600))
            .start_and_wait()
            .expect("start");
        (store, events, updater)
    };

    // No cache, no source: the bootstrap.
    let (store, events, updater) = boot(Duration::from_millis(200));
    assert_eq!(updater.serving(), Serving::Bootstrap);
    assert_eq!(store.version(), 0);
    assert!(events.contains("applied config version 0 from Bootstrap"));
    assert!(
        wait_until(Duration::from_secs(2), || events.contains("source error")),
        "{:?}",
        events.all()
    );
    assert!(!cache.exists(), "only an applied source document is cached");
    drop(updater);

    // The source comes up: applied and cached.
    fs::write(&source, doc(3)).expect("write");
    let (_, _, updater) = boot(Duration::from_secs(5));
    assert_eq!(updater.serving(), Serving::Fresh);
    assert_eq!(cached_document(&cache), doc(3));
    drop(updater);

    // The source is down again: the cache, not the bootstrap.
    fs::remove_file(&source).expect("remove");
    let (store, events, updater) = boot(Duration::from_millis(200));
    assert_eq!(updater.serving(), Serving::Cache);
    assert_eq!(store.version(), 3);
    assert!(events.contains("applied config version 3 from Cache"));
}

#[test]
fn a_corrupt_cache_falls_back_to_the_bootstrap() {
    let dir = dir();
    let cache = dir.path().join("cache.json");
    fs::write(&cache, "{ \"version\": 9, ").expect("write");
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater = Updater::builder(store.clone())
        .file(dir.path().join("missing.json"))
        .cache_file(&cache)
        .bootstrap(doc(0))
        .on_event(events.record())
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    assert_eq!(updater.serving(), Serving::Bootstrap);
    assert!(events.contains("rejected Cache document"), "{:?}", events.all());
}

#[test]
fn a_bad_bootstrap_or_no_source_is_a_start_error() {
    let store = Arc::new(FlagStore::new());
    let err = Updater::builder(store.clone()).start_and_wait().expect_err("no source");
    assert!(matches!(err, flagstone::UpdateError::NoSource), "{err}");
    assert!(err.to_string().contains("no source"), "{err}");
    let err = Updater::builder(store)
        .file("/nonexistent")
        .bootstrap("{")
        .start_and_wait()
        .expect_err("bad bootstrap");
    assert!(matches!(err, flagstone::UpdateError::Bootstrap(_)), "{err}");
}

#[test]
fn the_thread_polls_on_its_own_and_stops_promptly() {
    let dir = dir();
    let path = dir.path().join("flags.json");
    fs::write(&path, doc(1)).expect("write");
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .file(&path)
        .interval(Duration::from_millis(50))
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start");
    write_atomically(&path, &doc(2));
    assert!(
        wait_until(Duration::from_secs(5), || store.version() == 2),
        "picked up without refresh_now"
    );

    let slow = Updater::builder(store.clone())
        .file(&path)
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    let start = Instant::now();
    drop(slow);
    updater.stop();
    assert!(start.elapsed() < Duration::from_secs(1), "stopped in {:?}", start.elapsed());
}

/// Runs `f` on another thread and says whether it ended within `limit`: a
/// call that would block forever fails the test instead of hanging it.
fn ends_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_refused_document_is_never_reported_as_fresh() {
    let dir = dir();
    let path = dir.path().join("flags.json");
    fs::write(&path, "{ \"version\": 2, \"flags\": { \"x\": {} } }").expect("write");
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater = Updater::builder(store.clone())
        .file(&path)
        .bootstrap(doc(1))
        .interval(Duration::from_secs(3600))
        .on_event(events.record())
        .wait_for_first(Duration::from_millis(300))
        .start_and_wait()
        .expect("start");
    assert_eq!(updater.serving(), flagstone::Serving::Bootstrap);
    for _ in 0..3 {
        let err = updater.refresh_now().expect_err("refused every time");
        assert!(matches!(err, flagstone::UpdateError::Rejected(ref e) if e.is_invalid()), "{err}");
        assert_eq!(updater.serving(), flagstone::Serving::Bootstrap);
    }
    let reported = events.all().iter().filter(|e| e.starts_with("rejected Source")).count();
    assert_eq!(reported, 1, "reported once: {:?}", events.all());
    // A good document later: fresh.
    fs::write(&path, doc(3)).expect("write");
    assert_eq!(updater.refresh_now().expect("good"), Refreshed::Applied(3));
    assert_eq!(updater.serving(), flagstone::Serving::Fresh);
    // Then a bad one: the store serves 3, but not fresh any more.
    fs::write(&path, "{ \"version\": 4, \"flags\": { \"x\": {} } }").expect("write");
    assert!(updater.refresh_now().is_err());
    assert_eq!(updater.serving(), flagstone::Serving::Stale);
    assert_eq!(store.version(), 3);
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_device_as_the_source_is_refused_without_blocking() {
    let dir = dir();
    let fifo = dir.path().join("flags.json");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    for source in [fifo, std::path::PathBuf::from("/dev/zero")] {
        let store = Arc::new(FlagStore::new());
        let shown = source.display().to_string();
        let outcome = ends_within(Duration::from_secs(5), move || {
            let updater = Updater::builder(store)
                .file(&source)
                .interval(Duration::from_secs(3600))
                .start_and_wait()
                .expect("start");
            updater.refresh_now().map_err(|e| chain(&e))
        });
        let outcome = outcome.unwrap_or_else(|| panic!("{shown}: the pull blocked"));
        let err = outcome.expect_err("refused");
        assert!(err.contains("not a regular file"), "{shown}: {err}");
    }
}

#[cfg(all(unix, feature = "signing"))]
#[test]
fn a_fifo_as_the_signature_sidecar_is_refused_without_blocking() {
    let dir = dir();
    let path = dir.path().join("flags.json");
    fs::write(&path, doc(1)).expect("write");
    let made = std::process::Command::new("mkfifo").arg(dir.path().join("flags.json.sig")).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let store = Arc::new(FlagStore::new());
    let outcome = ends_within(Duration::from_secs(5), move || {
        let updater = Updater::builder(store)
            .file(&path)
            .public_key(&[
                0x3b, 0x6a, 0x27, 0xbc, 0xce, 0xb6, 0xa4, 0x2d, 0x62, 0xa3, 0xa8, 0xd0, 0x2a, 0x6f,
                0x0d, 0x73, 0x65, 0x32, 0x15, 0x77, 0x1d, 0xe2, 0x43, 0xa6, 0x3a, 0xc0, 0x48, 0xa1,
                0x8b, 0x59, 0xda, 0x29,
            ])
            .interval(Duration::from_secs(3600))
            .start_and_wait()
            .expect("start");
        updater.refresh_now()
    });
    let err = outcome.expect("the pull did not block").expect_err("unsigned");
    assert!(
        matches!(err, flagstone::UpdateError::Signature(flagstone::SignatureRefused::Unsigned)),
        "{err}"
    );
    assert_eq!(chain(&err), "signature refused: the document is unsigned");
}

#[test]
fn max_body_bytes_limits_files_and_the_cache() {
    let dir = dir();
    let (path, cache) = (dir.path().join("flags.json"), dir.path().join("cache.json"));
    let big = format!("{}{}", doc(5), " ".repeat(4096));
    fs::write(&path, &big).expect("write");
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .file(&path)
        .max_body_bytes(1024)
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    let err = updater.refresh_now().expect_err("over the limit");
    assert!(chain(&err).contains("over the limit of 1024 bytes"), "{}", chain(&err));
    drop(updater);

    // A cache written with a larger limit is refused under a smaller one.
    fs::write(&path, &big).expect("write");
    let updater = Updater::builder(Arc::new(FlagStore::new()))
        .file(&path)
        .cache_file(&cache)
        .interval(Duration::from_secs(3600))
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start");
    assert_eq!(updater.serving(), flagstone::Serving::Fresh);
    drop(updater);
    fs::remove_file(&path).expect("source down");
    let updater = Updater::builder(Arc::new(FlagStore::new()))
        .file(&path)
        .cache_file(&cache)
        .max_body_bytes(1024)
        .bootstrap(doc(0))
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    assert_eq!(updater.serving(), flagstone::Serving::Bootstrap);
}

#[test]
fn builder_values_that_would_panic_or_hammer_are_refused() {
    let store = Arc::new(FlagStore::new());
    let builder = || Updater::builder(store.clone()).file("/nonexistent");
    let refused = [
        ("interval", builder().interval(Duration::MAX)),
        ("interval", builder().interval(Duration::ZERO)),
        ("jitter", builder().jitter(f64::NAN)),
        ("jitter", builder().jitter(f64::INFINITY)),
        ("jitter", builder().jitter(-0.5)),
        ("max_backoff", builder().max_backoff(Duration::MAX)),
        ("deadline", builder().deadline(Duration::ZERO)),
        ("wait_for_first", builder().wait_for_first(Duration::MAX)),
        ("max_body_bytes", builder().max_body_bytes(0)),
    ];
    for (what, b) in refused {
        let err = b.start_and_wait().expect_err(what);
        assert!(
            matches!(err, flagstone::UpdateError::Setting { setting, .. } if setting == what),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
}

#[test]
fn a_cache_file_that_is_a_symlink_is_written_through_to_its_target() {
    let dir = dir();
    let (path, target, link) = (
        dir.path().join("flags.json"),
        dir.path().join("volume.json"),
        dir.path().join("cache.json"),
    );
    fs::write(&path, doc(2)).expect("write");
    fs::write(&target, "").expect("write");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let _updater = Updater::builder(Arc::new(FlagStore::new()))
        .file(&path)
        .cache_file(&link)
        .interval(Duration::from_secs(3600))
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start");
    assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink(), "still a link");
    assert_eq!(cached_document(&target), doc(2));
}

#[test]
fn a_failed_cache_write_names_the_file() {
    let dir = dir();
    let path = dir.path().join("flags.json");
    fs::write(&path, doc(2)).expect("write");
    let cache = dir.path().join("no-such-dir").join("cache.json");
    let events = Events::default();
    let _updater = Updater::builder(Arc::new(FlagStore::new()))
        .file(&path)
        .cache_file(&cache)
        .on_event(events.record())
        .interval(Duration::from_secs(3600))
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start");
    let failed = events.all().into_iter().find(|e| e.starts_with("cache write failed"));
    let failed = failed.expect("reported");
    assert!(failed.contains(&cache.display().to_string()), "{failed}");
}

/// A guarded flag: its canary can be tripped by a test.
fn guarded_doc(version: u64) -> String {
    format!(
        r#"{{ "version": {version}, "flags": {{ "f": {{ "enabled": true,
            "stages": [ {{ "name": "internal", "cohorts": [] , "percent": 1 }}, {{ "name": "canary", "percent": 50 }} ],
            "stage": "canary",
            "guard": {{ "max_error_ratio": 2.0, "min_units": 50, "window_secs": 60 }} }} }} }}"#
    )
}

#[test]
fn decisions_are_not_undone_by_a_restart() {
    let dir = dir();
    let (path, cache) = (dir.path().join("flags.json"), dir.path().join("cache.json"));
    let boot = |store: Arc<FlagStore>| {
        Updater::builder(store)
            .file(&path)
            .cache_file(&cache)
            .bootstrap(doc(0))
            .interval(Duration::from_secs(3600))
            .wait_for_first(Duration::from_millis(300))
            .start_and_wait()
            .expect("start")
    };

    // A rollback from 2 to 1, then a restart with the source still at 2.
    fs::write(&path, doc(1)).expect("write");
    let store = Arc::new(FlagStore::new());
    let updater = boot(store.clone());
    fs::write(&path, doc(2)).expect("write");
    assert_eq!(updater.refresh_now().expect("v2"), Refreshed::Applied(2));
    store.rollback().expect("back to 1");
    assert_eq!(updater.serving(), flagstone::Serving::Held);
    drop(updater);
    let store = Arc::new(FlagStore::new());
    let updater = boot(store.clone());
    assert_eq!(store.version(), 1, "the rollback holds across the restart");
    assert_eq!(updater.serving(), flagstone::Serving::Held);
    assert!(chain(&updater.refresh_now().expect_err("2 is refused")).contains("stale"));
    fs::write(&path, doc(3)).expect("write");
    assert_eq!(updater.refresh_now().expect("a newer version"), Refreshed::Applied(3));
    assert_eq!(updater.serving(), flagstone::Serving::Fresh);
    drop(updater);

    // A guard trip on version 4, then a restart with the source at 4.
    fs::write(&path, guarded_doc(4)).expect("write");
    let clock = Arc::new(flagstone::ManualClock::new(1_800_000_000_000));
    let store = Arc::new(FlagStore::new().with_clock(clock.clone()).with_manual_guard_checks());
    let updater = boot(store.clone());
    assert_eq!(store.version(), 4);
    for i in 0..5_000 {
        // 300 users, 16 requests each.
        let user = format!("u-{}", i % 300);
        let ctx = flagstone::Context::new().user(&user);
        let canary = store.evaluate("f", &ctx).reason.label() == "canary";
        let outcome = if canary || i % 50 == 0 {
            flagstone::Outcome::Error
        } else {
            flagstone::Outcome::Success
        };
        store.record("f", &ctx, outcome);
        clock.advance(Duration::from_millis(2));
        if i % 100 == 0 {
            store.check_guards();
        }
    }
    let stepped = |store: &FlagStore| {
        (0..200).all(|i| {
            store.evaluate("f", &flagstone::Context::new().user(&format!("u-{i}"))).reason.label()
                != "canary"
        })
    };
    assert!(stepped(&store), "the guard stepped the canary back");
    assert_eq!(updater.serving(), flagstone::Serving::Held);
    drop(updater);
    let store = Arc::new(FlagStore::new());
    let updater = boot(store.clone());
    assert_eq!(store.version(), 4);
    assert!(stepped(&store), "the trip holds across the restart");
    assert_eq!(updater.serving(), flagstone::Serving::Held);
}

#[cfg(all(feature = "signing", unix))]
#[test]
fn a_reader_never_pairs_a_document_with_another_versions_signature() {
    use flagstone::publish::{Directory, publish};
    use flagstone::signing::SigningKey;
    let dir = dir();
    let site = dir.path().join("site");
    let key = SigningKey::generate().expect("key");
    let first = doc(1);
    publish(&mut Directory::new(&site), first.as_bytes(), Some(&key.sign(first.as_bytes())))
        .expect("published");
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater = Updater::builder(store.clone())
        .file(site.join("flags.json"))
        .public_key_base64(&key.public_key().to_base64())
        .interval(Duration::from_secs(3600))
        .on_event(events.record())
        .start_and_wait()
        .expect("start");
    let publisher = {
        let site = site.clone();
        std::thread::spawn(move || {
            let mut target = Directory::new(&site);
            for version in 2..=150 {
                let text = doc(version);
                publish(&mut target, text.as_bytes(), Some(&key.sign(text.as_bytes())))
                    .expect("published");
            }
        })
    };
    let mut pulls = 0;
    while !publisher.is_finished() {
        let _ = updater.refresh_now();
        pulls += 1;
    }
    publisher.join().expect("publisher");
    let _ = updater.refresh_now();
    assert_eq!(store.version(), 150);
    let mismatched: Vec<String> =
        events.all().into_iter().filter(|e| e.contains("signature")).collect();
    println!("{pulls} pulls during 149 publications");
    assert!(
        mismatched.is_empty(),
        "a document was read beside another's signature: {mismatched:?}"
    );
}

#[cfg(feature = "signing")]
mod signed_cache {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn sign(doc: &str) -> String {
        STANDARD.encode(SigningKey::from_bytes(&[7u8; 32]).sign(doc.as_bytes()).to_bytes())
    }

    #[test]
    fn the_signed_cache_keeps_a_document_and_its_signature_together() {
        let dir = dir();
        let (path, cache) = (dir.path().join("flags.json"), dir.path().join("cache.json"));
        let public = SigningKey::from_bytes(&[7u8; 32]).verifying_key().to_bytes();
        let publish = |version: u64| {
            fs::write(&path, doc(version)).expect("write");
            fs::write(dir.path().join("flags.json.sig"), sign(&doc(version))).expect("write");
        };
        let boot = || {
            Updater::builder(Arc::new(FlagStore::new()))
                .file(&path)
                .cache_file(&cache)
                .public_key(&public)
                .bootstrap(doc(1))
                .interval(Duration::from_secs(3600))
                .wait_for_first(Duration::from_millis(300))
                .start_and_wait()
                .expect("start")
        };
        publish(4);
        let updater = boot();
        assert_eq!(updater.serving(), flagstone::Serving::Fresh);
        // A signature beside the cache file can no longer be replaced
        // separately: a write that failed there kept a new document beside
        // an old signature.
        fs::create_dir(dir.path().join("cache.json.sig")).expect("a directory in the way");
        publish(6);
        assert_eq!(updater.refresh_now().expect("v6"), Refreshed::Applied(6));
        drop(updater);
        fs::remove_file(&path).expect("source down");
        let updater = boot();
        assert_eq!(updater.serving(), flagstone::Serving::Cache, "the cached pair verifies");
    }
}

/// Issue 18, item 6: one subscription, `store.on_event`, hears the updater's
/// events beside the store's own; `UpdaterBuilder::on_event` still works.
#[test]
fn the_store_subscription_hears_the_updater_too() {
    let dir = dir();
    let path = dir.path().join("flags.json");
    fs::write(&path, doc(1)).expect("write");
    let store = Arc::new(FlagStore::new());
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = heard.clone();
    store.on_event(move |e| {
        let line = match e {
            flagstone::StoreEvent::Update(u) => format!("update: {u}"),
            flagstone::StoreEvent::Changed(c) => format!("changed to {}", c.to),
            other => format!("{other:?}"),
        };
        sink.lock().expect("not poisoned").push(line);
    });
    let events = Events::default();
    let updater = updater(&store, &path, &events).start_and_wait().expect("start");
    fs::write(&path, "{ \"version\": 2, \"flags\": { \"x\": {} } }").expect("bad");
    assert!(updater.refresh_now().is_err());
    let heard = heard.lock().expect("not poisoned").clone();
    assert!(heard.iter().any(|l| l == "changed to 1"), "{heard:?}");
    assert!(heard.iter().any(|l| l.starts_with("update: applied config version 1")), "{heard:?}");
    assert!(heard.iter().any(|l| l.starts_with("update: rejected Source document")), "{heard:?}");
    assert!(events.contains("rejected Source document"), "the builder's callback too");
}
