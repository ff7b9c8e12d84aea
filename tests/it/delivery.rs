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
    let updater = updater(&store, &path, &events).start().expect("start");
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
    let updater = updater(&store, &root.join("flags.json"), &events).start().expect("start");
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
    // The same half-document again is not re-reported.
    let before = events.all().len();
    assert_eq!(updater.refresh_now().expect("same bytes"), Refreshed::Unchanged);
    assert_eq!(events.all().len(), before + 1);
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
            .start()
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
    assert_eq!(fs::read_to_string(&cache).expect("cache written"), doc(3));
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
        .start()
        .expect("start");
    assert_eq!(updater.serving(), Serving::Bootstrap);
    assert!(events.contains("rejected Cache document"), "{:?}", events.all());
}

#[test]
fn a_bad_bootstrap_or_no_source_is_a_start_error() {
    let store = Arc::new(FlagStore::new());
    let err = Updater::builder(store.clone()).start().expect_err("no source");
    assert!(err.to_string().contains("no source"), "{err}");
    let err = Updater::builder(store)
        .file("/nonexistent")
        .bootstrap("{")
        .start()
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
        .start()
        .expect("start");
    write_atomically(&path, &doc(2));
    assert!(
        wait_until(Duration::from_secs(5), || store.version() == 2),
        "picked up without refresh_now"
    );

    let slow = Updater::builder(store.clone())
        .file(&path)
        .interval(Duration::from_secs(3600))
        .start()
        .expect("start");
    let start = Instant::now();
    drop(slow);
    updater.stop();
    assert!(start.elapsed() < Duration::from_secs(1), "stopped in {:?}", start.elapsed());
}
