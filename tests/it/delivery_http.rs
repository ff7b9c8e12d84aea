//! Delivery over HTTP, against real sockets on 127.0.0.1: a test server of
//! our own that misbehaves on command, and a real nginx.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flagstone::{FlagStore, Refreshed, Serving, UpdateError, Updater};

use super::delivery::chain;

use crate::delivery::{Events, doc, wait_until, write_atomically};

/// How the test server answers.
#[derive(Clone, Debug)]
enum Mode {
    /// 200 with the document (304 when the ETag matches).
    Serve,
    /// This status, with a short body.
    Status(u16),
    /// Accept, read the request, and say nothing for this long.
    Hang(Duration),
    /// Promise the whole document, send half, close.
    CloseMidBody,
    /// After a pause, `302 Found` to this location.
    Redirect(Duration, String),
    /// After a pause, serve as `Serve` does.
    Slow(Duration),
}

#[derive(Debug)]
struct State {
    mode: Mode,
    body: Vec<u8>,
    etag: Option<String>,
    gzip: bool,
    signature: Option<String>,
    sidecar: Option<Vec<u8>>,
    requests: Vec<String>,
}

struct TestServer {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl TestServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Serve,
            body: Vec::new(),
            etag: None,
            gzip: false,
            signature: None,
            sidecar: None,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    thread::spawn(move || handle(stream, &state));
                }
            });
        }
        Self { url: format!("http://127.0.0.1:{port}/flags.json"), state, stop, port }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().expect("state"));
    }

    fn serve(&self, body: &str, etag: Option<&str>) {
        self.set(|s| {
            s.mode = Mode::Serve;
            s.body = body.as_bytes().to_vec();
            s.etag = etag.map(str::to_owned);
        });
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().expect("state").requests.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let header = |name: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_owned())
    };
    let (if_none_match, authorization) = (header("if-none-match"), header("authorization"));
    let api_key = header("x-api-key");
    let (mode, body, etag, gzip, signature, sidecar) = {
        let mut s = state.lock().expect("state");
        s.requests.push(format!(
            "{path} if-none-match={} auth={} x-api-key={}",
            if_none_match.clone().unwrap_or_default(),
            authorization.unwrap_or_default(),
            api_key.unwrap_or_default()
        ));
        (
            s.mode.clone(),
            s.body.clone(),
            s.etag.clone(),
            s.gzip,
            s.signature.clone(),
            s.sidecar.clone(),
        )
    };
    if path.split('?').next().is_some_and(|p| p.ends_with(".sig")) {
        match sidecar {
            Some(sig) => respond(&mut stream, "200 OK", &[], &sig),
            None => respond(&mut stream, "404 Not Found", &[], b"no signature"),
        }
        return;
    }
    let mode = match mode {
        Mode::Slow(pause) => {
            thread::sleep(pause);
            Mode::Serve
        }
        Mode::Redirect(pause, location) => {
            thread::sleep(pause);
            respond(&mut stream, "302 Found", &[format!("Location: {location}")], b"");
            return;
        }
        mode => mode,
    };
    match mode {
        Mode::Serve => {
            if etag.is_some() && etag == if_none_match {
                respond(&mut stream, "304 Not Modified", &[], b"");
                return;
            }
            let mut headers = Vec::new();
            if let Some(etag) = etag {
                headers.push(format!("ETag: {etag}"));
            }
            if let Some(sig) = signature {
                headers.push(format!("X-Flagstone-Signature: {sig}"));
            }
            let body = if gzip {
                headers.push("Content-Encoding: gzip".to_owned());
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&body).expect("gzip");
                encoder.finish().expect("gzip")
            } else {
                body
            };
            respond(&mut stream, "200 OK", &headers, &body);
        }
        Mode::Status(code) => respond(&mut stream, &format!("{code} Oops"), &[], b"server trouble"),
        Mode::Hang(d) => thread::sleep(d),
        Mode::Redirect(..) | Mode::Slow(_) => {}
        Mode::CloseMidBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..body.len() / 2]);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[String], body: &[u8]) {
    let mut out =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(body);
}

/// Puts the test server into a failure mode.
type Fault = Box<dyn Fn(&TestServer)>;

fn start(server: &TestServer, store: &Arc<FlagStore>, events: &Events) -> Updater {
    Updater::builder(store.clone())
        .http(&server.url)
        .interval(Duration::from_secs(3600))
        .timeouts(Duration::from_secs(1), Duration::from_millis(300))
        .max_body_bytes(64 * 1024)
        .bearer_token("s3cret")
        .on_event(events.record())
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start")
}

#[test]
fn every_fault_keeps_the_last_good_config_says_why_and_recovers() {
    let server = TestServer::start();
    server.serve(&doc(1), Some("\"v1\""));
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater = start(&server, &store, &events);
    assert_eq!(updater.serving(), Serving::Fresh);
    assert_eq!(store.version(), 1);

    // Conditional GET: the ETag comes back, and 304 costs nothing.
    assert_eq!(updater.refresh_now().expect("304"), Refreshed::Unchanged);
    let last = server.requests().last().cloned().unwrap_or_default();
    assert!(last.contains("if-none-match=\"v1\"") && last.contains("auth=Bearer s3cret"), "{last}");

    let mut version = 1;
    let faults: Vec<(&str, Fault, &str)> = vec![
        ("500", Box::new(|s| s.set(|s| s.mode = Mode::Status(500))), "HTTP 500"),
        ("503", Box::new(|s| s.set(|s| s.mode = Mode::Status(503))), "HTTP 503"),
        ("hang", Box::new(|s| s.set(|s| s.mode = Mode::Hang(Duration::from_secs(2)))), "timed out"),
        (
            "close mid-body",
            Box::new(|s| {
                s.set(|s| {
                    s.mode = Mode::CloseMidBody;
                    s.body = doc(99).into_bytes();
                    s.etag = None;
                })
            }),
            "source error",
        ),
        (
            "garbage",
            Box::new(|s| s.serve("<html>502 Bad Gateway</html>", Some("\"g\""))),
            "rejected Source document: invalid config",
        ),
        ("truncated", Box::new(|s| s.serve(&doc(98)[..30], Some("\"t\""))), "EOF while parsing"),
        (
            "over the limit",
            Box::new(|s| {
                let padded = format!("{}{}", doc(97), " ".repeat(70 * 1024));
                s.serve(&padded, Some("\"big\""));
            }),
            "over the limit",
        ),
        (
            "older version",
            Box::new(|s| s.serve(&doc(0), Some("\"old\""))),
            "stale config: version 0",
        ),
    ];
    for (name, fault, expected) in faults {
        fault(&server);
        let err = updater.refresh_now().expect_err(name);
        assert_eq!(store.version(), version, "{name}: the last good config keeps serving");
        // Source errors are reported by the thread's loop; refresh_now
        // returns them, rejections are also events.
        let said = format!("{err} | {}", events.last());
        assert!(said.contains(expected), "{name}: {said}");
        if name == "hang" {
            assert!(matches!(err, UpdateError::Source(ref e) if e.is_timeout()), "{err}");
        }
        if name == "500" {
            assert!(
                matches!(err, UpdateError::Source(ref e) if e.http_status() == Some(500)),
                "{err}"
            );
        }

        // Recovery: the next good document is applied.
        version += 1;
        server.serve(&doc(version), Some(&format!("\"v{version}\"")));
        assert_eq!(
            updater.refresh_now().expect(name),
            Refreshed::Applied(version),
            "{name}: recovered"
        );
    }

    // A server that drops the ETag: full bodies, recognized as unchanged.
    server.serve(&doc(version), None);
    assert_eq!(updater.refresh_now().expect("no etag"), Refreshed::Unchanged);
    assert_eq!(updater.refresh_now().expect("no etag"), Refreshed::Unchanged);
    assert!(
        server.requests().last().is_some_and(|r| r.contains("if-none-match= ")),
        "no stale ETag sent"
    );
    version += 1;
    server.serve(&doc(version), None);
    assert_eq!(updater.refresh_now().expect("new body"), Refreshed::Applied(version));
}

#[test]
fn gzip_bodies_are_decoded() {
    let server = TestServer::start();
    server.serve(&doc(1), Some("\"a\""));
    server.set(|s| s.gzip = true);
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let _updater = start(&server, &store, &events);
    assert_eq!(store.version(), 1, "{:?}", events.all());
}

#[test]
fn source_errors_back_off_and_are_reported_by_the_thread() {
    let server = TestServer::start();
    server.set(|s| s.mode = Mode::Status(500));
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let updater = Updater::builder(store.clone())
        .http(&server.url)
        .interval(Duration::from_millis(20))
        .jitter(0.0)
        .bootstrap(doc(0))
        .on_event(events.record())
        .start_and_wait()
        .expect("start");
    assert!(wait_until(Duration::from_secs(5), || events
        .all()
        .iter()
        .filter(|e| e.contains("HTTP 500"))
        .count()
        >= 4));
    let retries: Vec<String> =
        events.all().into_iter().filter(|e| e.contains("HTTP 500")).take(4).collect();
    for (i, expected) in ["20ms", "40ms", "80ms", "160ms"].iter().enumerate() {
        assert!(retries[i].contains(&format!("retrying in {expected}")), "{retries:?}");
    }
    assert_eq!(updater.serving(), Serving::Bootstrap);
    server.serve(&doc(1), Some("\"1\""));
    assert!(wait_until(Duration::from_secs(5), || store.version() == 1), "recovers after backoff");
    assert!(wait_until(Duration::from_secs(1), || updater.serving() == Serving::Fresh));
}

#[cfg(feature = "signing")]
mod signed {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn sign(doc: &str) -> String {
        STANDARD.encode(key().sign(doc.as_bytes()).to_bytes())
    }

    fn signed_updater(server: &TestServer, store: &Arc<FlagStore>, events: &Events) -> Updater {
        Updater::builder(store.clone())
            .http(&server.url)
            .interval(Duration::from_secs(3600))
            .public_key_base64(&STANDARD.encode(key().verifying_key().to_bytes()))
            .bootstrap(doc(0))
            .on_event(events.record())
            .start_and_wait()
            .expect("start")
    }

    #[test]
    fn only_validly_signed_documents_are_applied() {
        let server = TestServer::start();
        let (store, events) = (Arc::new(FlagStore::new()), Events::default());
        let updater = signed_updater(&server, &store, &events);
        // The thread's first pull (of the server's empty body) runs on its
        // own; let it end before the documents below are served, or it
        // could apply one of them before the refresh that should.
        assert!(
            wait_until(Duration::from_secs(10), || events.contains("rejected Source document")),
            "{:?}",
            events.all()
        );

        server.serve(&doc(1), None);
        let err = updater.refresh_now().expect_err("unsigned");
        assert!(chain(&err).contains("unsigned"), "{err}");
        assert!(
            events.last().contains("bad signature: the document is unsigned"),
            "{}",
            events.last()
        );

        let forged =
            STANDARD.encode(SigningKey::from_bytes(&[8u8; 32]).sign(doc(1).as_bytes()).to_bytes());
        server.set(|s| s.signature = Some(forged));
        let forged = updater.refresh_now().expect_err("forged");
        assert!(chain(&forged).contains("does not match"), "{}", chain(&forged));

        let good = sign(&doc(1));
        server.set(|s| s.signature = Some(good[..40].to_owned()));
        assert!(updater.refresh_now().is_err(), "truncated signature");

        // A truncated document with the full document's signature.
        server.set(|s| {
            s.signature = Some(good.clone());
            s.body.truncate(20);
        });
        assert!(
            chain(&updater.refresh_now().expect_err("truncated doc")).contains("does not match")
        );
        assert_eq!(store.version(), 0, "nothing unsigned, forged or truncated got in");

        server.serve(&doc(1), Some("\"1\""));
        server.set(|s| s.signature = Some(good.clone()));
        assert_eq!(updater.refresh_now().expect("signed"), Refreshed::Applied(1));

        // The signature can also come from a sidecar at <url>.sig.
        server.serve(&doc(2), Some("\"2\""));
        server.set(|s| {
            s.signature = None;
            s.sidecar = Some(sign(&doc(2)).into_bytes());
        });
        assert_eq!(updater.refresh_now().expect("sidecar"), Refreshed::Applied(2));

        // A valid old signed document, replayed: refused by the version check.
        server.serve(&doc(1), Some("\"1\""));
        server.set(|s| s.signature = Some(good));
        let err = updater.refresh_now().expect_err("replay");
        assert!(matches!(err, UpdateError::Rejected(ref e) if e.is_stale()), "{err}");
        assert_eq!(store.version(), 2);
    }

    #[test]
    fn signed_files_carry_a_sidecar() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("flags.json");
        std::fs::write(&path, doc(1)).expect("write");
        let store = Arc::new(FlagStore::new());
        let updater = Updater::builder(store.clone())
            .file(&path)
            .interval(Duration::from_secs(3600))
            .public_key(&key().verifying_key().to_bytes())
            .start_and_wait()
            .expect("start");
        assert!(updater.refresh_now().is_err(), "no .sig yet");
        std::fs::write(dir.path().join("flags.json.sig"), sign(&doc(1))).expect("write");
        // The background thread's first pull may race this one and apply it.
        let refreshed = updater.refresh_now().expect("signed");
        assert!(matches!(refreshed, Refreshed::Applied(1) | Refreshed::Unchanged), "{refreshed:?}");
        assert_eq!(store.version(), 1);
        let err = Updater::builder(store)
            .file(&path)
            .public_key(&[1, 2, 3])
            .start_and_wait()
            .expect_err("bad key");
        assert!(matches!(err, UpdateError::PublicKey(_)), "{err}");
        assert!(chain(&err).contains("32 bytes"), "{}", chain(&err));
    }
}

/// A real nginx on 127.0.0.1 serving the file from a temp directory, as a
/// static host would: a change reaches the store within two poll intervals.
#[test]
fn nginx_end_to_end() {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
    else {
        println!(
            "SKIPPED nginx_end_to_end: nginx is not installed (.ci/run installs it with apt-get)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path();
    let www = root.join("www");
    std::fs::create_dir(&www).expect("www");
    for tmp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir(root.join(tmp)).expect("tmp");
    }
    // The workers may run as another user: let them read the files.
    use std::os::unix::fs::PermissionsExt as _;
    for p in [root, &www] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let r = root.display();
    let conf = format!(
        "worker_processes 1; pid {r}/nginx.pid; error_log {r}/error.log;
         events {{ worker_connections 64; }}
         http {{
           access_log off;
           client_body_temp_path {r}/client_body; proxy_temp_path {r}/proxy;
           fastcgi_temp_path {r}/fastcgi; uwsgi_temp_path {r}/uwsgi; scgi_temp_path {r}/scgi;
           server {{ listen 127.0.0.1:{port}; root {r}/www; }}
         }}"
    );
    std::fs::write(root.join("nginx.conf"), conf).expect("conf");
    let file = www.join("flags.json");
    write_atomically(&file, &doc(1));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    // Stopped with `nginx -s stop`, which takes its workers down too: a
    // SIGKILL to the master would orphan them, and they would hold this test
    // binary's stdout open (so stdio is not inherited either).
    struct Nginx {
        child: std::process::Child,
        args: Vec<String>,
        binary: std::path::PathBuf,
    }
    impl Drop for Nginx {
        fn drop(&mut self) {
            let stopped = std::process::Command::new(&self.binary)
                .args(&self.args)
                .args(["-s", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if !stopped.is_ok_and(|s| s.success()) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
    let args: Vec<String> = vec![
        "-p".into(),
        r.to_string(),
        "-c".into(),
        format!("{r}/nginx.conf"),
        "-e".into(),
        format!("{r}/error.log"),
    ];
    let _nginx = Nginx {
        child: std::process::Command::new(nginx)
            .args(&args)
            .args(["-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx starts"),
        args,
        binary: nginx.to_path_buf(),
    };
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "nginx listens: {}",
        std::fs::read_to_string(root.join("error.log")).unwrap_or_default()
    );

    let interval = Duration::from_millis(300);
    let (store, events) = (Arc::new(FlagStore::new()), Events::default());
    let _updater = Updater::builder(store.clone())
        .http(format!("http://127.0.0.1:{port}/flags.json"))
        .interval(interval)
        .jitter(0.1)
        .on_event(events.record())
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start");
    assert_eq!(store.version(), 1, "{:?}", events.all());
    assert!(
        wait_until(Duration::from_secs(3), || events.contains("unchanged")),
        "nginx answers 304 to the ETag"
    );

    let changed = Instant::now();
    let mut v2 = doc(2);
    v2.push_str("\n\n"); // a different size too, whatever the mtime resolution
    write_atomically(&file, &v2);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // Two intervals, stretched by the jitter, plus time to fetch and apply.
    let budget = interval.mul_f64(2.0 * 1.1) + Duration::from_millis(250);
    assert!(
        wait_until(budget, || store.version() == 2),
        "not seen within {budget:?}: {:?}",
        events.all()
    );
    println!(
        "nginx: a change reached the store in {:?} (interval {interval:?})",
        changed.elapsed()
    );
}

#[test]
fn a_pull_has_one_deadline_across_redirects() {
    // Each hop answers a redirect after 1 s: five of them would take 5 s,
    // well within a 2 s read timeout each; the pull's deadline is 2 s.
    let server = TestServer::start();
    let back = server.url.clone();
    server.set(|s| s.mode = Mode::Redirect(Duration::from_secs(1), back));
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store)
        .http(&server.url)
        .interval(Duration::from_secs(3600))
        .timeouts(Duration::from_secs(2), Duration::from_secs(2))
        .deadline(Duration::from_secs(2))
        .start_and_wait()
        .expect("start");
    // The background thread's first pull is under way; wait for it.
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let err = updater.refresh_now().expect_err("deadline");
    let took = started.elapsed();
    println!("a redirect loop under a 2 s deadline gave up after {took:?}: {err}");
    assert!(matches!(err, UpdateError::Source(ref e) if e.is_timeout()), "{err}");
    // The thread's pull (at most 2 s) then this one (at most 2 s).
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn stop_and_drop_return_at_once_and_an_abandoned_pull_never_applies() {
    let server = TestServer::start();
    server.serve(&doc(1), Some("\"1\""));
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .http(&server.url)
        .interval(Duration::from_millis(20))
        .jitter(0.0)
        .wait_for_first(Duration::from_secs(5))
        .start_and_wait()
        .expect("start");
    assert_eq!(store.version(), 1);
    // The next pull waits 1.5 s for its answer, then gets version 2.
    server.serve(&doc(2), Some("\"2\""));
    server.set(|s| s.mode = Mode::Slow(Duration::from_millis(1_500)));
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    updater.stop();
    let took = started.elapsed();
    println!("stop() during a pull returned in {took:?}");
    assert!(took < Duration::from_millis(500), "stop took {took:?}");
    thread::sleep(Duration::from_millis(2_000));
    assert_eq!(store.version(), 1, "the abandoned pull applied nothing");

    // Drop, likewise, with a hanging server.
    server.set(|s| s.mode = Mode::Hang(Duration::from_secs(10)));
    let updater = Updater::builder(store.clone())
        .http(&server.url)
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drop(updater);
    assert!(started.elapsed() < Duration::from_millis(500), "drop took {:?}", started.elapsed());
}

#[test]
fn credentials_and_custom_headers_never_follow_a_redirect_to_another_origin() {
    let (a, b) = (TestServer::start(), TestServer::start());
    b.serve(&doc(1), None);
    let target = b.url.clone();
    a.set(|s| s.mode = Mode::Redirect(Duration::ZERO, target));
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .http(&a.url)
        .bearer_token("s3cret")
        .header("X-Api-Key", "k3y")
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    // start_and_wait returns once the thread's first pull applied it.
    let refreshed = updater.refresh_now().expect("followed");
    assert!(matches!(refreshed, Refreshed::Applied(1) | Refreshed::Unchanged), "{refreshed:?}");
    assert_eq!(store.version(), 1);
    assert!(
        a.requests()
            .iter()
            .all(|r| r.contains("auth=Bearer s3cret") && r.contains("x-api-key=k3y"))
    );
    let at_b = b.requests();
    assert!(!at_b.is_empty());
    for r in &at_b {
        assert!(r.contains("auth= ") && r.ends_with("x-api-key="), "leaked to another origin: {r}");
    }
}

#[test]
fn the_sidecar_of_a_presigned_url_is_on_its_path_and_only_fetched_when_signing() {
    let server = TestServer::start();
    server.serve(&doc(1), None);
    let url = format!("{}?X-Amz-Signature=abc", server.url);
    let store = Arc::new(FlagStore::new());
    let updater = Updater::builder(store.clone())
        .http(&url)
        .interval(Duration::from_secs(3600))
        .start_and_wait()
        .expect("start");
    // start_and_wait returns once the thread's first pull applied it.
    let refreshed = updater.refresh_now().expect("unsigned");
    assert!(matches!(refreshed, Refreshed::Applied(1) | Refreshed::Unchanged), "{refreshed:?}");
    assert_eq!(store.version(), 1);
    assert!(
        server.requests().iter().all(|r| !r.contains(".sig")),
        "no sidecar without a public key: {:?}",
        server.requests()
    );
    #[cfg(feature = "signing")]
    {
        let store = Arc::new(FlagStore::new());
        let updater = Updater::builder(store)
            .http(&url)
            .interval(Duration::from_secs(3600))
            .public_key(&[
                0x3b, 0x6a, 0x27, 0xbc, 0xce, 0xb6, 0xa4, 0x2d, 0x62, 0xa3, 0xa8, 0xd0, 0x2a, 0x6f,
                0x0d, 0x73, 0x65, 0x32, 0x15, 0x77, 0x1d, 0xe2, 0x43, 0xa6, 0x3a, 0xc0, 0x48, 0xa1,
                0x8b, 0x59, 0xda, 0x29,
            ])
            .start_and_wait()
            .expect("start");
        let _ = updater.refresh_now();
        let sidecar: Vec<String> =
            server.requests().into_iter().filter(|r| r.contains(".sig")).collect();
        assert!(
            sidecar.iter().any(|r| r.starts_with("/flags.json.sig?X-Amz-Signature=abc ")),
            "{sidecar:?}"
        );
    }
}

/// Issue 18, item 4: `start()` returns at once even with `wait_for_first`
/// and a source that never answers; `ready()` resolves on a current-thread
/// runtime without blocking it (a task beside it keeps ticking), `false`
/// when `wait_for_first` passes and `true` once a document serves.
#[test]
fn start_returns_at_once_and_ready_never_blocks_the_runtime() {
    use std::sync::atomic::AtomicU32;
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/flags.json", silent.local_addr().expect("addr"));
    // Holds what it accepts until the test is done with it.
    silent.set_nonblocking(true).expect("nonblocking");
    let done = Arc::new(AtomicBool::new(false));
    let held = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = silent.accept() {
                    kept.push(stream);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let store = Arc::new(FlagStore::new());
    let started = std::time::Instant::now();
    let updater = Updater::builder(store.clone())
        .http(url)
        .interval(Duration::from_secs(3600))
        .wait_for_first(Duration::from_millis(800))
        .start()
        .expect("start");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "start blocked {:?}",
        started.elapsed()
    );
    let ticks = Arc::new(AtomicU32::new(0));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let fresh = runtime.block_on(async {
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let fresh = updater.ready().await;
        ticker.abort();
        fresh
    });
    let waited = started.elapsed();
    assert!(!fresh, "nothing came");
    assert!(waited >= Duration::from_millis(750) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(ticks.load(Ordering::Relaxed) >= 10, "the runtime kept running: {ticks:?}");
    drop(updater);
    done.store(true, Ordering::Relaxed);
    let _ = held.join();

    // With a document: ready() resolves true as soon as it serves.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("flags.json");
    std::fs::write(&path, r#"{ "version": 3 }"#).expect("write");
    let updater = Updater::builder(store.clone())
        .file(&path)
        .wait_for_first(Duration::from_secs(10))
        .start()
        .expect("start");
    let started = std::time::Instant::now();
    assert!(runtime.block_on(updater.ready()));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(store.version(), 3);
}
