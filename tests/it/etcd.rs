//! Fleet delivery through a real etcd (Debian's etcd-server on loopback):
//! updaters follow pushes, survive etcd crashes and compaction, refuse
//! forged and replayed documents, start without etcd, and authenticate;
//! `flagstone publish` publishes, and of two racing publishers one wins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagstone::observe::StoreEvent;
use flagstone::{FlagStore, Serving, Updater};

use crate::delivery::Events;
use crate::servers::{Etcd, wait_for};

const KEY: &str = "/flagstone/test/flags.json";

fn doc(version: u64) -> String {
    format!(
        r#"{{ "version": {version}, "flags": {{ "f": {{ "enabled": true }}, "v{version}": {{ "enabled": true }} }} }}"#
    )
}

fn flagstone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagstone")).args(args).output().expect("the CLI runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Keys made with `flagstone keygen` in `dir`: the private key file and the
/// public key.
fn keys(dir: &Path, name: &str) -> (PathBuf, String) {
    let base = dir.join(name);
    let out = flagstone(&["keygen", "--out", base.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key");
    (dir.join(format!("{name}.key")), public.trim().to_owned())
}

/// Publishes `doc(version)` with the CLI.
fn publish(etcd: &Etcd, dir: &Path, version: u64, key: Option<&Path>, extra: &[&str]) -> Output {
    let file = dir.join(format!("v{version}.json"));
    std::fs::write(&file, doc(version)).expect("write");
    let mut args =
        vec!["publish", file.to_str().expect("utf-8"), "--etcd", &etcd.url, "--key", KEY];
    if let Some(key) = key {
        args.extend(["--sign", key.to_str().expect("utf-8")]);
    }
    args.extend(extra);
    flagstone(&args)
}

/// One instance of a fleet: a store, its updater, and every version it
/// applied with when.
struct Instance {
    store: Arc<FlagStore>,
    updater: Updater,
    applied: Arc<Mutex<Vec<(u64, Instant)>>>,
    events: Events,
}

fn instance(
    etcd: &Etcd,
    public: Option<&str>,
    build: impl FnOnce(flagstone::UpdaterBuilder) -> flagstone::UpdaterBuilder,
) -> Instance {
    let store = Arc::new(FlagStore::new());
    let applied = Arc::new(Mutex::new(Vec::new()));
    let sink = applied.clone();
    store.on_event(move |e| {
        if let StoreEvent::Changed(c) = e {
            sink.lock().expect("not poisoned").push((c.to, Instant::now()));
        }
    });
    let events = Events::default();
    let mut builder = Updater::builder(store.clone())
        .etcd([etcd.url.clone()], KEY)
        .interval(Duration::from_secs(1))
        .on_event(events.record());
    if let Some(public) = public {
        builder = builder.public_key_base64(public);
    }
    let updater = build(builder).start_and_wait().expect("start");
    Instance { store, updater, applied, events }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[test]
fn a_fleet_of_fifty_follows_twenty_signed_versions_and_never_goes_back() {
    let Some(etcd) =
        Etcd::start("a_fleet_of_fifty_follows_twenty_signed_versions_and_never_goes_back")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (key, public) = keys(dir.path(), "release");
    let out = publish(&etcd, dir.path(), 1, Some(&key), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let fleet: Vec<Instance> = (0..50)
        .map(|_| instance(&etcd, Some(&public), |b| b.wait_for_first(Duration::from_secs(10))))
        .collect();
    assert!(fleet.iter().all(|i| i.store.version() == 1 && i.updater.serving() == Serving::Fresh));

    let mut delays = Vec::new();
    let mut publishing = Duration::ZERO;
    for version in 2..=20 {
        let started = Instant::now();
        let out = publish(&etcd, dir.path(), version, Some(&key), &[]);
        // The write is committed when the CLI exits: propagation counts from there.
        let published = Instant::now();
        publishing += published - started;
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(&format!("published version {version}")), "{}", text(&out));
        let applied = |i: &Instance| {
            i.applied.lock().expect("not poisoned").iter().any(|(v, _)| *v == version)
        };
        let all = wait_for(Duration::from_secs(10), || fleet.iter().all(applied));
        assert!(all, "version {version} reached every instance");
        for i in &fleet {
            let applied = i.applied.lock().expect("not poisoned");
            let at = applied.iter().find(|(v, _)| *v == version).map(|(_, t)| *t).expect("applied");
            delays.push(at.saturating_duration_since(published));
        }
    }
    for i in &fleet {
        let versions: Vec<u64> =
            i.applied.lock().expect("not poisoned").iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "never backwards: {versions:?}");
    }
    delays.sort();
    println!(
        "etcd: 50 instances, 19 signed versions: propagation median {:?}, p99 {:?}, max {:?} \
         (from the end of `flagstone publish`, which took {:?} a run; a debug build)",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or_default(),
        publishing / 19
    );
}

#[test]
fn an_etcd_crash_loses_nothing_and_every_instance_converges() {
    let Some(mut etcd) = Etcd::start("an_etcd_crash_loses_nothing_and_every_instance_converges")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    assert!(publish(&etcd, dir.path(), 1, None, &[]).status.success());
    let fleet: Vec<Instance> = (0..5)
        .map(|_| instance(&etcd, None, |b| b.wait_for_first(Duration::from_secs(10))))
        .collect();
    for version in 2..=3 {
        assert!(publish(&etcd, dir.path(), version, None, &[]).status.success());
    }
    assert!(wait_for(Duration::from_secs(10), || fleet.iter().all(|i| i.store.version() == 3)));

    etcd.kill();
    assert!(
        wait_for(Duration::from_secs(10), || fleet
            .iter()
            .all(|i| i.updater.serving() == Serving::Stale)),
        "disconnected instances say they are stale"
    );
    assert!(fleet.iter().all(|i| i.store.version() == 3), "the last good config keeps serving");
    let refused = publish(&etcd, dir.path(), 4, None, &[]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "publishing to a dead etcd fails: {}",
        text(&refused)
    );

    etcd.up();
    for version in 4..=6 {
        let out = publish(&etcd, dir.path(), version, None, &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        wait_for(Duration::from_secs(20), || fleet.iter().all(|i| i.store.version() == 6)),
        "{:?}",
        fleet.iter().map(|i| i.store.version()).collect::<Vec<_>>()
    );
    assert!(wait_for(Duration::from_secs(5), || fleet
        .iter()
        .all(|i| i.updater.serving() == Serving::Fresh)));
}

#[test]
fn a_watch_behind_a_compaction_reads_again_and_resumes() {
    let Some(etcd) = Etcd::start("a_watch_behind_a_compaction_reads_again_and_resumes") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    assert!(publish(&etcd, dir.path(), 1, None, &[]).status.success());
    // A slow listener holds the updater's thread after it applies version
    // 1 until versions have moved on and been compacted away, so its watch
    // starts from a revision that is gone. (Released by the test, not by a
    // timer: a loaded machine may take seconds to publish.)
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(Some(released));
    let events = Events::default();
    let record = events.record();
    let store = Arc::new(FlagStore::new());
    let _updater = Updater::builder(store.clone())
        .etcd([etcd.url.clone()], KEY)
        .interval(Duration::from_secs(1))
        .on_event(move |e| {
            record(e);
            if matches!(e, flagstone::UpdateEvent::Applied { version: 1, .. })
                && let Some(gate) = released.lock().expect("not poisoned").take()
            {
                let _ = gate.recv_timeout(Duration::from_secs(30));
            }
        })
        .start()
        .expect("start");
    assert!(wait_for(Duration::from_secs(10), || store.version() == 1), "{:?}", events.all());
    for version in 2..=5 {
        assert!(publish(&etcd, dir.path(), version, None, &[]).status.success());
    }
    let status = etcd.etcdctl(&["endpoint", "status", "--write-out=json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status");
    let revision = status[0]["Status"]["header"]["revision"].as_i64().expect("revision");
    let compacted = etcd.etcdctl(&["compaction", &revision.to_string()]);
    assert!(compacted.status.success(), "{}", text(&compacted));
    let _ = release.send(());
    assert!(wait_for(Duration::from_secs(15), || store.version() == 5), "{:?}", events.all());
    assert!(
        events.contains("compacted"),
        "the watch was canceled for the compaction: {:?}",
        events.all()
    );
    assert!(publish(&etcd, dir.path(), 6, None, &[]).status.success());
    assert!(wait_for(Duration::from_secs(10), || store.version() == 6), "the watch resumed");
    println!("events around the compaction: {:?}", events.all());
}

#[test]
fn forged_and_replayed_documents_are_refused_everywhere() {
    let Some(etcd) = Etcd::start("forged_and_replayed_documents_are_refused_everywhere") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (key, public) = keys(dir.path(), "release");
    let (forger, _) = keys(dir.path(), "forger");
    assert!(publish(&etcd, dir.path(), 1, Some(&key), &[]).status.success());
    assert!(publish(&etcd, dir.path(), 2, Some(&key), &[]).status.success());
    let fleet: Vec<Instance> = (0..5)
        .map(|_| instance(&etcd, Some(&public), |b| b.wait_for_first(Duration::from_secs(10))))
        .collect();
    assert!(fleet.iter().all(|i| i.store.version() == 2));

    // Signed with another key: refused, version 2 serves.
    assert!(publish(&etcd, dir.path(), 3, Some(&forger), &[]).status.success());
    assert!(wait_for(Duration::from_secs(10), || fleet
        .iter()
        .all(|i| i.events.contains("bad signature: the signature does not match"))));
    assert!(fleet.iter().all(|i| i.store.version() == 2 && i.updater.serving() == Serving::Stale));

    // Version 1, validly signed, written back by hand: refused as stale.
    let old = doc(1);
    let signature = {
        let out = flagstone(&[
            "sign",
            dir.path().join("v1.json").to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        std::fs::read_to_string(dir.path().join("v1.json.sig")).expect("sig")
    };
    assert!(etcd.etcdctl(&["put", KEY, &old]).status.success());
    assert!(etcd.etcdctl(&["put", &format!("{KEY}.sig"), signature.trim()]).status.success());
    assert!(wait_for(Duration::from_secs(10), || fleet
        .iter()
        .all(|i| i.events.contains("stale config: version 1"))));
    assert!(fleet.iter().all(|i| i.store.version() == 2));

    // And `flagstone publish` refuses a version not newer than etcd's.
    let out = publish(&etcd, dir.path(), 1, Some(&key), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("version 1 is not newer than version 1"), "{}", text(&out));
}

#[test]
fn with_etcd_down_at_start_the_cache_or_bootstrap_serves_until_it_is_up() {
    let Some(mut etcd) =
        Etcd::start("with_etcd_down_at_start_the_cache_or_bootstrap_serves_until_it_is_up")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let cache = dir.path().join("cache.json");
    assert!(publish(&etcd, dir.path(), 3, None, &[]).status.success());
    {
        let first =
            instance(&etcd, None, |b| b.cache_file(&cache).wait_for_first(Duration::from_secs(10)));
        assert_eq!(first.store.version(), 3);
    }
    etcd.kill();
    let from_cache = instance(&etcd, None, |b| b.cache_file(&cache).bootstrap(doc(1)));
    assert_eq!((from_cache.store.version(), from_cache.updater.serving()), (3, Serving::Cache));
    let from_bootstrap = instance(&etcd, None, |b| b.bootstrap(doc(1)));
    assert_eq!(
        (from_bootstrap.store.version(), from_bootstrap.updater.serving()),
        (1, Serving::Bootstrap)
    );
    assert!(
        from_bootstrap.events.contains("etcd unreachable")
            || wait_for(Duration::from_secs(5), || from_bootstrap
                .events
                .contains("etcd unreachable"))
    );

    etcd.up();
    assert!(publish(&etcd, dir.path(), 4, None, &[]).status.success());
    for i in [&from_cache, &from_bootstrap] {
        assert!(
            wait_for(Duration::from_secs(20), || i.store.version() == 4),
            "{:?}",
            i.events.all()
        );
        assert!(wait_for(Duration::from_secs(5), || i.updater.serving() == Serving::Fresh));
    }
}

#[test]
fn with_auth_enabled_updaters_authenticate_and_of_two_racing_publishers_one_wins() {
    let Some(etcd) = Etcd::start(
        "with_auth_enabled_updaters_authenticate_and_of_two_racing_publishers_one_wins",
    ) else {
        return;
    };
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "add", "app:apppw"],
        vec!["role", "add", "flags"],
        vec!["role", "grant-permission", "flags", "--prefix=true", "readwrite", "/flagstone/"],
        vec!["user", "grant-role", "app", "flags"],
        vec!["auth", "enable"],
    ] {
        let out = etcd.etcdctl(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let dir = tempfile::tempdir().expect("dir");
    let creds = ["--user", "app", "--password", "apppw"];
    let out = publish(&etcd, dir.path(), 1, None, &[]);
    assert_eq!(out.status.code(), Some(1), "without credentials: {}", text(&out));
    let out = publish(&etcd, dir.path(), 1, None, &creds);
    assert!(out.status.success(), "{}", text(&out));

    let i = instance(&etcd, None, |b| {
        b.etcd_credentials("app", "apppw").wait_for_first(Duration::from_secs(10))
    });
    assert_eq!(i.store.version(), 1, "{:?}", i.events.all());
    let denied = instance(&etcd, None, |b| {
        b.etcd_credentials("app", "wrong").wait_for_first(Duration::from_millis(500))
    });
    assert_eq!(denied.updater.serving(), Serving::Nothing);
    assert!(
        wait_for(Duration::from_secs(5), || denied.events.contains("authenticating as \"app\"")),
        "{:?}",
        denied.events.all()
    );

    // Two publishers, two different documents of version 2, at once.
    let racer = |name: &str| {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, doc(2).replace("\"f\"", &format!("\"{name}\""))).expect("write");
        Command::new(env!("CARGO_BIN_EXE_flagstone"))
            .args(["publish", file.to_str().expect("utf-8"), "--etcd", &etcd.url, "--key", KEY])
            .args(creds)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs")
    };
    let (a, b) = (racer("a"), racer("b"));
    let outcomes = [a.wait_with_output().expect("a"), b.wait_with_output().expect("b")];
    let winners = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1, "exactly one wins: {:?}", outcomes.iter().map(text).collect::<Vec<_>>());
    let loser = outcomes.iter().find(|o| !o.status.success()).expect("a loser");
    assert_eq!(loser.status.code(), Some(1));
    let said = text(loser);
    assert!(said.contains("version 2"), "the loser says which version got there: {said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(wait_for(Duration::from_secs(10), || i.store.version() == 2));
}

#[test]
fn a_document_over_etcds_limit_is_refused_with_a_way_out() {
    let Some(etcd) = Etcd::start("a_document_over_etcds_limit_is_refused_with_a_way_out") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let names: Vec<String> = (0..120_000).map(|i| format!("\"tenant-{i:07}\"")).collect();
    let big = format!(
        r#"{{ "version": 1, "cohorts": {{ "big": {{ "tenants": [{}] }} }}, "flags": {{ "f": {{ "enabled": true }} }} }}"#,
        names.join(",")
    );
    let file = dir.path().join("big.json");
    std::fs::write(&file, &big).expect("write");
    let out =
        flagstone(&["publish", file.to_str().expect("utf-8"), "--etcd", &etcd.url, "--key", KEY]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains("over etcd's request limit") && said.contains("HTTP/CDN source"),
        "{said}"
    );
}
