//! A fleet following etcd: N updaters (threads, each with its own store)
//! watch one key while versions are published, and the example prints how
//! long each version took to reach every instance.
//!
//! ```sh
//! cargo run --release --features etcd,signing --example etcd_fleet -- --instances 500 --versions 20
//! cargo run --release --features etcd,signing --example etcd_fleet -- --etcd http://127.0.0.1:2379
//! ```
//!
//! Without `--etcd`, it starts an etcd of its own (Debian's `etcd-server`)
//! on free loopback ports with a temporary data directory, and stops it at
//! the end.

use std::error::Error;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagstone::observe::StoreEvent;
use flagstone::publish::{self, Etcd};
use flagstone::signing::SigningKey;
use flagstone::{FlagStore, Updater};

const KEY: &str = "/flagstone/fleet/flags.json";

/// An etcd this example started; killed on drop.
struct OwnEtcd {
    child: Child,
    _dir: std::path::PathBuf,
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn free_port() -> Result<u16, Box<dyn Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_etcd() -> Result<(String, OwnEtcd), Box<dyn Error>> {
    let (client, peer) = (free_port()?, free_port()?);
    let dir = std::env::temp_dir().join(format!("flagstone-fleet-{}", std::process::id()));
    let (url, peer_url) =
        (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
    let child = Command::new("etcd")
        .args(["--name", "fleet", "--data-dir"])
        .arg(&dir)
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("fleet={peer_url}"), "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start etcd (install etcd-server, or pass --etcd URL): {e}"))?;
    let etcd = OwnEtcd { child, _dir: dir };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .new_agent();
    let started = Instant::now();
    while agent.get(&format!("{url}/health")).call().is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("etcd did not get ready".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((url, etcd))
}

fn doc(version: u64) -> String {
    format!(
        r#"{{ "version": {version}, "flags": {{ "checkout": {{ "enabled": true,
        "stages": [ {{ "name": "canary", "percent": {} }} ], "stage": "canary" }} }} }}"#,
        version % 100
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let instances: usize = arg("--instances").map_or(Ok(50), |n| n.parse())?;
    let versions: u64 = arg("--versions").map_or(Ok(20), |n| n.parse())?;
    let (url, _own) = match arg("--etcd") {
        Some(url) => (url, None),
        None => {
            let (url, own) = start_etcd()?;
            (url, Some(own))
        }
    };

    // Signed, as a production fleet would be.
    let key = SigningKey::generate()?;
    let public = key.public_key().to_base64();
    let mut target = Etcd::new([url.clone()], KEY);
    // Start above whatever a reused etcd holds.
    let base = publish::Target::read(&mut target)?.and_then(|p| p.version()).unwrap_or(0);
    let first = doc(base + 1);
    publish::publish(&mut target, first.as_bytes(), Some(&key.sign(first.as_bytes())))?;

    let applied: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut fleet = Vec::new();
    for _ in 0..instances {
        let store = Arc::new(FlagStore::new());
        let sink = applied.clone();
        store.on_event(move |e| {
            if let StoreEvent::Changed(c) = e {
                sink.lock().map(|mut a| a.push((c.to, Instant::now()))).ok();
            }
        });
        let updater = Updater::builder(store.clone())
            .etcd([url.clone()], KEY)
            .public_key_base64(&public)
            .interval(Duration::from_secs(5))
            .start()?;
        fleet.push((store, updater));
    }
    let started = Instant::now();
    while !fleet.iter().all(|(s, _)| s.version() == base + 1) {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the fleet did not start".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{instances} instances follow etcd key {KEY} at {url}");

    let mut delays = Vec::new();
    let mut lasts = Vec::new();
    for version in base + 2..=base + versions {
        let text = doc(version);
        let signature = key.sign(text.as_bytes());
        publish::publish(&mut target, text.as_bytes(), Some(&signature))?;
        let published = Instant::now();
        while !fleet.iter().all(|(s, _)| s.version() >= version) {
            if published.elapsed() > Duration::from_secs(30) {
                return Err(format!("version {version} did not reach every instance").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Listeners record just after the swap: give the last a moment.
        std::thread::sleep(Duration::from_millis(20));
        let applied = applied.lock().map_err(|_| "poisoned")?;
        let these: Vec<Duration> = applied
            .iter()
            .filter(|(v, _)| *v == version)
            .map(|(_, t)| t.saturating_duration_since(published))
            .collect();
        lasts.push(these.iter().max().copied().unwrap_or_default());
        delays.extend(these);
    }
    delays.sort();
    lasts.sort();
    println!(
        "{} versions x {instances} instances: propagation median {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
        versions - 1,
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or_default()
    );
    println!(
        "time until the last instance had each version: median {:.1?}, max {:.1?}",
        percentile(&lasts, 0.5),
        lasts.last().copied().unwrap_or_default()
    );
    Ok(())
}
