//! Readers never see a torn or stale-after-fresh config while a writer swaps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use flagstone::{Context, FlagStore};

/// Version `v` turns on exactly the flags `f0..f{v % 8}`: a reader that sees
/// any other pattern saw half of one config and half of another.
fn config(v: u64) -> String {
    let flags: Vec<String> =
        (0..8).map(|i| format!(r#""f{i}":{{"enabled":{}}}"#, i <= v % 8)).collect();
    format!(r#"{{"version":{v},"flags":{{{}}}}}"#, flags.join(","))
}

#[test]
fn snapshots_are_consistent_and_versions_never_go_back_while_swapping() {
    let store = Arc::new(FlagStore::from_json(config(1)).expect("valid"));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            thread::spawn(move || {
                let handles: Vec<_> = (0..8).map(|i| store.handle(&format!("f{i}"))).collect();
                let ctx = Context::new().user("u");
                let mut last = 0;
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) || reads < 1_000 {
                    let snap = store.snapshot();
                    let v = snap.version();
                    assert!(v >= last, "version went back from {last} to {v}");
                    last = v;
                    for (i, h) in handles.iter().enumerate() {
                        let expected = i as u64 <= v % 8;
                        assert_eq!(h.is_enabled_in(&snap, &ctx), expected, "v{v} f{i}");
                        assert_eq!(snap.is_enabled(&format!("f{i}"), &ctx), expected, "v{v} f{i}");
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for v in 2..=2_000 {
        store.apply_json(config(v)).expect("valid");
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader panicked") >= 1_000);
    }
    assert_eq!(store.version(), 2_000);
}

/// Regression guard: a rejected push racing with readers must never be
/// visible, not even briefly.
#[test]
fn rejected_pushes_are_never_visible_to_concurrent_readers() {
    let store = Arc::new(FlagStore::from_json(config(8)).expect("valid"));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                assert_eq!(store.version(), 8);
                assert!(store.is_enabled("f0", &Context::new()));
            }
        })
    };
    for v in 0..500u64 {
        let bad = if v % 2 == 0 { config(v % 9) } else { config(9 + v).replace("true", "1") };
        assert!(store.apply_json(bad).is_err());
    }
    done.store(true, Ordering::Relaxed);
    reader.join().expect("reader saw a rejected config");
}
