//! `flagstone rollout run` end to end, against real servers: etcd, three
//! service processes (each an `Updater` on etcd, serving requests and
//! `/metrics` on loopback), a load generator spreading tenants over the
//! stages, and Prometheus scraping the services every second.
//!
//! Three flags, one controller, one run:
//! - `checkout` is healthy: it advances internal → canary → everyone, each
//!   after its hold, and after each step all three instances serve the
//!   same version;
//! - `search` fails 30% of its canary's requests: the controller steps the
//!   canary back within 15 s, every instance converges, and the audit line
//!   carries the evidence;
//! - `billing`'s canary may only be entered 02:00–05:00 UTC, and the
//!   controller's clock (`--now`) says noon: it holds.
//!
//! The service processes are this test binary run again with
//! `FLAGSTONE_E2E_SERVICE` set (see [`service_process`]).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flagstone::{Context, FlagStore, Outcome, Reason, Updater};

use crate::servers::{Etcd, Process, Prometheus, free_port, wait_for};

const KEY: &str = "/flagstone/e2e/flags.json";
const TENANTS: usize = 400;

const PLAN: &str = r#"{ "version": 1,
  "cohorts": { "staff": { "tenants": ["t-0000", "t-0001"] } },
  "flags": {
    "checkout": { "enabled": true, "bucket_by": "tenant",
      "stages": [ { "name": "internal", "cohorts": ["staff"], "hold": "4s" },
                  { "name": "canary", "percent": 50, "hold": "15s" },
                  { "name": "everyone" } ],
      "stage": "internal",
      "guard": { "holdback": 40, "max_error_ratio": 2.0, "min_units": 30, "window_secs": 30 } },
    "search": { "enabled": true, "bucket_by": "tenant",
      "stages": [ { "name": "internal", "cohorts": ["staff"], "hold": "4s" },
                  { "name": "canary", "percent": 50, "hold": "30s" },
                  { "name": "everyone" } ],
      "stage": "internal",
      "guard": { "holdback": 40, "max_error_ratio": 2.0, "min_units": 30, "window_secs": 30 } },
    "billing": { "enabled": true, "bucket_by": "tenant",
      "stages": [ { "name": "internal", "cohorts": ["staff"], "hold": "4s" },
                  { "name": "canary", "percent": 30,
                    "windows": [ { "from": "02:00", "to": "05:00", "tz": "UTC" } ] } ],
      "stage": "internal",
      "guard": { "max_error_ratio": 2.0, "min_units": 30 } }
  } }"#;

/// A service instance: when `FLAGSTONE_E2E_SERVICE` is set (to `etcd URL`
/// and `port`), an `Updater` on etcd and an HTTP server for `/work` and
/// `/metrics`, until killed. Otherwise it does nothing (it is ignored, so
/// test runs skip it).
#[test]
#[ignore = "a service process of rollout_e2e; run by that test"]
fn service_process() {
    let Ok(spec) = std::env::var("FLAGSTONE_E2E_SERVICE") else { return };
    let (etcd, port) = spec.split_once(' ').expect("URL PORT");
    let store = Arc::new(FlagStore::new());
    let _updater = Updater::builder(store.clone())
        .etcd([etcd.to_owned()], KEY)
        .interval(Duration::from_secs(1))
        .wait_for_first(Duration::from_secs(10))
        .start_and_wait()
        .expect("updater");
    let listener =
        TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("bind");
    let requests = Arc::new(AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let (store, requests) = (store.clone(), requests.clone());
        std::thread::spawn(move || serve(stream, &store, &requests));
    }
}

/// One request: `GET /metrics`, or `GET /work?tenant=T` (checks the three
/// flags, fails 30% of `search`'s canary requests and 1% of the rest, and
/// records each outcome).
fn serve(mut stream: TcpStream, store: &FlagStore, requests: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/metrics" {
        (200, store.metrics().to_prometheus())
    } else if let Some(tenant) = path.strip_prefix("/work?tenant=") {
        let ctx = Context::new().tenant(tenant);
        let mut failed = false;
        for flag in ["checkout", "search", "billing"] {
            let n = requests.fetch_add(1, Ordering::Relaxed);
            // A fixed, well-spread sequence: the fault rate, not luck.
            let draw = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as f64 / (1u64 << 24) as f64;
            let rate = match (flag, store.evaluate(flag, &ctx).reason) {
                ("search", Reason::Stage { name: "canary", .. }) => 0.30,
                _ => 0.01,
            };
            let outcome = if draw < rate { Outcome::Error } else { Outcome::Success };
            failed |= draw < rate;
            store.record(flag, &ctx, outcome);
        }
        (if failed { 500 } else { 200 }, String::new())
    } else if path == "/version" {
        (200, store.version().to_string())
    } else {
        (404, String::new())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        flagstone::PROMETHEUS_CONTENT_TYPE,
        body.len()
    );
}

fn get(url: &str) -> Option<String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

fn stage_of(etcd: &Etcd, flag: &str) -> (u64, String, bool) {
    let out = etcd.etcdctl(&["get", KEY, "--print-value-only"]);
    let config = flagstone::config::Config::from_json(&out.stdout).expect("valid config in etcd");
    let f = &config.flags[flag];
    (config.version, f.stage.clone().unwrap_or_default(), f.enabled)
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_controller_advances_and_steps_back_stages_for_the_whole_fleet() {
    let test = "the_controller_advances_and_steps_back_stages_for_the_whole_fleet";
    let Some(etcd) = Etcd::start(test) else { return };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let Some(prometheus) = Prometheus::start(test, &targets) else { return };
    let dir = tempfile::tempdir().expect("dir");
    let plan = dir.path().join("flags.json");
    std::fs::write(&plan, PLAN).expect("plan");
    let published = std::process::Command::new(env!("CARGO_BIN_EXE_flagstone"))
        .args(["publish", &plan.display().to_string(), "--etcd", &etcd.url, "--key", KEY])
        .output()
        .expect("publish runs");
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));

    let me = std::env::current_exe().expect("test binary");
    let services: Vec<Process> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let log = dir.path().join(format!("service-{i}.log"));
            let out = std::fs::File::create(&log).expect("log");
            let child = std::process::Command::new(&me)
                .args(["rollout_e2e::service_process", "--exact", "--ignored", "--nocapture"])
                .env("FLAGSTONE_E2E_SERVICE", format!("{} {port}", etcd.url))
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out)
                .spawn()
                .expect("service starts");
            Process::adopt(child, log)
        })
        .collect();
    let up = wait_for(Duration::from_secs(20), || {
        ports.iter().all(|p| get(&format!("http://127.0.0.1:{p}/version")).as_deref() == Some("1"))
    });
    assert!(up, "services serve version 1:\n{}", services[0].log_text());

    // The load generator: two threads, every tenant in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|g| {
            let (stop, ports) = (stop.clone(), ports.clone());
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(2)))
                    .build()
                    .new_agent();
                let mut i = g;
                while !stop.load(Ordering::Relaxed) {
                    // Tenant affinity, as a balancer hashing on the tenant
                    // does: a tenant's requests all reach one instance, so
                    // its outcomes add up there.
                    let t = i % TENANTS;
                    let port = ports[t % 3];
                    let tenant = format!("t-{t:04}");
                    let _ =
                        agent.get(&format!("http://127.0.0.1:{port}/work?tenant={tenant}")).call();
                    i += 2;
                }
            })
        })
        .collect();
    // Every version each instance serves, as it comes.
    let served: Arc<std::sync::Mutex<Vec<Vec<u64>>>> = Arc::default();
    let watcher = {
        let (stop, ports, served) = (stop.clone(), ports.clone(), served.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (i, p) in ports.iter().enumerate() {
                    if let Some(v) = get(&format!("http://127.0.0.1:{p}/version"))
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        let mut served = served.lock().expect("not poisoned");
                        served.resize(ports.len(), Vec::new());
                        if served[i].last() != Some(&v) {
                            served[i].push(v);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Prometheus scrapes all three (its first scrape takes about 6 s).
    let scraped = wait_for(Duration::from_secs(30), || {
        prometheus.value("count(flagstone_config_version == 1)") == Some(3.0)
    });
    assert!(scraped, "prometheus scrapes the services:\n{}", prometheus.log_text());
    std::thread::sleep(Duration::from_secs(3));
    let rate = prometheus.value("sum(rate(flagstone_outcomes_total[3s]))").unwrap_or(0.0) / 3.0;
    println!("load: {rate:.0} requests a second over {TENANTS} tenants");

    let audit = dir.path().join("audit.jsonl");
    let controller_log = dir.path().join("controller.log");
    let controller = Process::spawn(
        Path::new(env!("CARGO_BIN_EXE_flagstone")),
        &[
            "rollout",
            "run",
            "--etcd",
            &etcd.url,
            "--key",
            KEY,
            "--prometheus",
            &prometheus.url,
            "--interval",
            "1",
            "--max-age",
            "10",
            "--audit",
            &audit.display().to_string(),
            "--now",
            "2026-12-01T12:00:00Z",
        ]
        .map(str::to_owned),
        controller_log.clone(),
    );
    let started = Instant::now();
    let diagnose = || {
        format!(
            "controller:\n{}\naudit:\n{:#?}\nservice 0:\n{}",
            std::fs::read_to_string(&controller_log).unwrap_or_default(),
            audit_lines(&audit),
            services[0].log_text()
        )
    };

    // search: into its canary, then back within 15 s of the fault.
    let canary = wait_for(Duration::from_secs(40), || stage_of(&etcd, "search").1 == "canary")
        || audit_lines(&audit).iter().any(|l| l["flag"] == "search" && l["to"] == "canary");
    assert!(canary, "search enters its canary: {}", diagnose());
    let entered = Instant::now();
    let back = wait_for(Duration::from_secs(30), || {
        audit_lines(&audit).iter().any(|l| l["flag"] == "search" && l["action"] == "step_back")
    });
    assert!(back, "search's canary is stepped back: {}", diagnose());
    let took = entered.elapsed();
    println!("search stepped back {:.1}s after its canary was entered", took.as_secs_f64());
    assert!(took <= Duration::from_secs(15), "{took:?}: {}", diagnose());
    let lines = audit_lines(&audit);
    let step = lines
        .iter()
        .find(|l| l["flag"] == "search" && l["action"] == "step_back")
        .expect("step back line");
    println!("audit: {step}");
    assert_eq!(step["from"], "canary");
    assert_eq!(step["to"], "internal");
    assert!(step["evidence"].is_object() && step["why"].as_str().is_some(), "{step}");

    // checkout: everyone, after both holds, in order.
    let done = wait_for(Duration::from_secs(60), || stage_of(&etcd, "checkout").1 == "everyone");
    assert!(done, "checkout reaches everyone: {}", diagnose());
    println!(
        "checkout reached everyone {:.1}s after the controller started",
        started.elapsed().as_secs_f64()
    );
    let lines = audit_lines(&audit);
    let checkout: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["flag"] == "checkout")
        .map(|l| (l["from"].as_str().unwrap_or(""), l["to"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(checkout, [("internal", "canary"), ("canary", "everyone")], "{}", diagnose());
    let advance = lines
        .iter()
        .find(|l| l["flag"] == "checkout" && l["to"] == "everyone")
        .expect("advance line");
    assert!(
        advance["why"].as_str().is_some_and(|w| w.contains("not worse than control")),
        "the canary was tested before everyone: {advance}"
    );

    // All three instances converge on the newest version.
    let (version, _, _) = stage_of(&etcd, "checkout");
    let converged = wait_for(Duration::from_secs(10), || {
        ports
            .iter()
            .all(|p| get(&format!("http://127.0.0.1:{p}/version")) == Some(version.to_string()))
    });
    assert!(converged, "every instance serves version {version}");
    let seen = wait_for(Duration::from_secs(10), || {
        prometheus.value("min(flagstone_config_version)") == Some(version as f64)
    });
    assert!(seen, "prometheus sees version {version} everywhere");

    // billing: its canary's window is closed at the controller's noon.
    assert_eq!(stage_of(&etcd, "billing").1, "internal");
    assert!(
        std::fs::read_to_string(&controller_log)
            .unwrap_or_default()
            .contains("canary is outside its windows (next opens 2026-12-02T02:00:00Z)"),
        "{}",
        diagnose()
    );
    assert!(!lines.iter().any(|l| l["flag"] == "billing"), "billing never moved");

    // `rollout status` reads the same sources.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_flagstone"))
        .args([
            "rollout",
            "status",
            "--etcd",
            &etcd.url,
            "--key",
            KEY,
            "--prometheus",
            &prometheus.url,
            "--now",
            "2026-12-01T12:05:00Z",
        ])
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&status.stdout);
    println!("{text}");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("search\n  stage     internal"), "{text}");
    assert!(text.contains("canary failed before"), "{text}");

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagstone"))
            .args(args)
            .output()
            .expect("flagstone runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let sources = ["--etcd", &etcd.url, "--key", KEY, "--prometheus", &prometheus.url];
    let (code, json, _) = cli(&[&["rollout", "status", "--json"][..], &sources].concat());
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    let flags = json["flags"].as_array().expect("flags");
    assert_eq!(flags.len(), 3);
    assert!(flags.iter().any(|f| f["flag"] == "checkout" && f["stage"] == "everyone"));
    let (code, markdown, _) =
        cli(&[&["rollout", "status", "--format", "markdown"][..], &sources].concat());
    assert_eq!(code, Some(0));
    println!("{markdown}");
    assert!(markdown.starts_with("| flag | stage |"), "{markdown}");
    assert_eq!(markdown.lines().count(), 5, "{markdown}");
    // One dry round: nothing to do, a line per flag, exit 0.
    let (code, once, _) = cli(&[&["rollout", "run", "--once", "--dry-run"][..], &sources].concat());
    assert_eq!(code, Some(0));
    assert_eq!(once.lines().count(), 3, "{once}");
    // Prometheus unreachable: exit 1, saying which and why.
    let down = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(&[
        "rollout",
        "run",
        "--once",
        "--etcd",
        &etcd.url,
        "--key",
        KEY,
        "--prometheus",
        &down,
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("reading evidence from Prometheus at {down}")), "{err}");

    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.join();
    }
    let _ = watcher.join();
    // Each instance served every version the controller published, in
    // order: the fleet moved together, step by step.
    let published: Vec<u64> = (1..=version).collect();
    for (i, versions) in served.lock().expect("not poisoned").iter().enumerate() {
        println!("instance {i} served versions {versions:?}");
        assert_eq!(versions, &published, "instance {i}");
    }
    drop(controller);
    drop(services);
}
