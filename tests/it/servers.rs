//! Real servers for the tests that need them (etcd, Prometheus), from
//! Debian's packages: started on free loopback ports in a temporary
//! directory, stopped (with everything they started) when dropped, even
//! when a test fails. A test that finds the server not installed prints
//! `SKIPPED <name>` and passes.

// Without etcd and the CLI, only the HTTP tests use this module.
#![cfg_attr(not(all(feature = "etcd", feature = "cli")), allow(dead_code))]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first of `names` found on the usual paths or `PATH`.
pub fn find(names: &[&str]) -> Option<PathBuf> {
    let dirs = ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        dirs.iter()
            .map(PathBuf::from)
            .chain(std::env::split_paths(&path))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Polls `ready` until it says yes or `limit` passes.
pub fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ready()
}

/// An HTTP GET on loopback with a timeout: the status, or `None`.
pub fn http_status(url: &str, timeout: Duration) -> Option<u16> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    agent.get(url).call().ok().map(|r| r.status().as_u16())
}

/// A child process killed and reaped on drop. Its output goes to a log
/// file, never to the test binary's stdout (which a lingering child would
/// hold open).
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(program: &Path, args: &[String], log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        Self { child: Some(child), log }
    }

    /// Takes charge of a child started elsewhere, logging to `log`.
    pub fn adopt(child: Child, log: PathBuf) -> Self {
        Self { child: Some(child), log }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single-member etcd on loopback, with its data in a temporary
/// directory.
pub struct Etcd {
    pub binary: PathBuf,
    pub url: String,
    pub dir: tempfile::TempDir,
    peer: u16,
    process: Option<Process>,
}

impl Etcd {
    /// Starts etcd, or prints `SKIPPED <test>` and returns `None` when it is
    /// not installed (`.ci/run` installs Debian's etcd-server).
    pub fn start(test: &str) -> Option<Self> {
        let Some(binary) = find(&["etcd"]) else {
            println!("SKIPPED {test}: etcd is not installed (.ci/run installs etcd-server)");
            return None;
        };
        let (client, peer) = (free_port(), free_port());
        let dir = tempfile::tempdir().expect("temp dir");
        let mut etcd =
            Self { binary, url: format!("http://127.0.0.1:{client}"), dir, peer, process: None };
        etcd.up();
        Some(etcd)
    }

    /// Starts (or restarts) the member on its ports and data.
    pub fn up(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let data = self.dir.path().join("data");
        let args: Vec<String> = [
            "--name",
            "t",
            "--data-dir",
            &data.display().to_string(),
            "--listen-client-urls",
            &self.url,
            "--advertise-client-urls",
            &self.url,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("t={peer}"),
            "--experimental-watch-progress-notify-interval",
            "1s",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.path().join(format!("etcd-{n}.log"));
        self.process = Some(Process::spawn(&self.binary, &args, log));
        let health = format!("{}/health", self.url);
        let ready = wait_for(Duration::from_secs(20), || {
            http_status(&health, Duration::from_millis(500)) == Some(200)
        });
        let log = self.process.as_ref().map(Process::log_text).unwrap_or_default();
        assert!(ready, "etcd is ready on {}:\n{log}", self.url);
    }

    /// Kills the member (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// `etcdctl` against this member.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let etcdctl = find(&["etcdctl"]).expect("etcdctl is installed with etcd");
        Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .args(args)
            .output()
            .expect("etcdctl runs")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Prometheus server on loopback scraping `targets` every second, its
/// config and data in a temporary directory.
pub struct Prometheus {
    pub url: String,
    // Stopped before its directory is removed (fields drop in order).
    process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`) as job
    /// `flagstone`, or prints `SKIPPED <test>` and returns `None` when it is
    /// not installed (`.ci/run` installs Debian's prometheus).
    pub fn start(test: &str, targets: &[String]) -> Option<Self> {
        let Some(binary) = find(&["prometheus"]) else {
            println!("SKIPPED {test}: prometheus is not installed (.ci/run installs it)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let listed: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: flagstone\n    static_configs:\n      - targets: [{}]\n",
            listed.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("config");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let args = vec![
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--web.console.templates={}", dir.path().join("consoles").display()),
            format!("--web.console.libraries={}", dir.path().join("console_libraries").display()),
        ];
        let process = Process::spawn(&binary, &args, dir.path().join("prometheus.log"));
        let ready = wait_for(Duration::from_secs(30), || {
            http_status(&format!("{url}/-/ready"), Duration::from_millis(500)) == Some(200)
        });
        assert!(ready, "prometheus is ready on {url}:\n{}", process.log_text());
        Some(Self { url, process, _dir: dir })
    }

    /// One instant query's first value, if any.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let mut response =
            agent.get(&format!("{}/api/v1/query", self.url)).query("query", promql).call().ok()?;
        let text = response.body_mut().read_to_string().ok()?;
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}
