//! Keep a store in sync with a config file, as a service reading a mounted
//! ConfigMap or a file its deploy tool writes.
//!
//! The example writes the file itself: a first version, an atomic rename to
//! a second, a half-written third (refused: the second keeps serving), then
//! the rest of the third. Each step prints the events and what is served.
//!
//! Run it with `cargo run --example file_watch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstone::{Context, FlagStore, Updater};

fn config(version: u64, percent: u32) -> String {
    format!(
        r#"{{ "version": {version}, "flags": {{ "new-checkout": {{ "enabled": true, "bucket_by": "tenant",
            "stages": [ {{ "name": "ramp", "percent": {percent} }} ], "stage": "ramp" }} }} }}"#
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("flagstone-file-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("flags.json");
    let cache = dir.join("cache").join("flags.json");
    std::fs::create_dir_all(dir.join("cache"))?;
    std::fs::write(&path, config(1, 10))?;

    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .file(&path)
        .interval(Duration::from_millis(100))
        .cache_file(&cache)
        .bootstrap(r#"{ "version": 0 }"#)
        .on_event(|e| println!("  event: {e}"))
        .wait_for_first(Duration::from_secs(2))
        .start_and_wait()?;
    println!("started, serving {:?} version {}", updater.serving(), store.version());

    let exposed = |store: &FlagStore| {
        let ids: Vec<String> = (0..1000).map(|i| format!("tenant-{i}")).collect();
        ids.iter().filter(|t| store.is_enabled("new-checkout", &Context::new().tenant(t))).count()
    };
    let wait_for = |version: u64| {
        let start = Instant::now();
        while store.version() != version && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    println!("v{}: {} of 1000 tenants exposed\n", store.version(), exposed(&store));

    println!("deploy tool renames a new file into place (v2, 50%)");
    let tmp = dir.join("flags.json.tmp");
    std::fs::write(&tmp, config(2, 50))?;
    std::fs::rename(&tmp, &path)?;
    wait_for(2);
    println!("v{}: {} of 1000 tenants exposed\n", store.version(), exposed(&store));

    println!("a writer is caught half-way through v3");
    let v3 = config(3, 100);
    std::fs::write(&path, &v3[..v3.len() / 2])?;
    std::thread::sleep(Duration::from_millis(300));
    println!("still v{}: {} of 1000 tenants exposed\n", store.version(), exposed(&store));

    println!("the write completes");
    std::fs::write(&path, &v3)?;
    wait_for(3);
    println!("v{}: {} of 1000 tenants exposed", store.version(), exposed(&store));
    println!(
        "cache file holds version 3: {}",
        std::fs::read_to_string(&cache)?.contains(r#""version": 3"#)
    );

    updater.stop();
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
