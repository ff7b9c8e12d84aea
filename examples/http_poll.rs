//! Poll a config over HTTP, as every instance of a fleet does from a static
//! host or a CDN.
//!
//! With a URL argument it polls that URL until interrupted:
//! `cargo run --features http --example http_poll -- https://cdn.example.com/flags.json`.
//! Without one it runs a small static host on 127.0.0.1 (ETag and 304, like
//! nginx or a CDN edge), publishes three versions and a broken one, and shows
//! what the instance sees.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstone::{FlagStore, Updater};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(FlagStore::new());
    if let Some(url) = std::env::args().nth(1) {
        let _updater = Updater::builder(store.clone())
            .http(url)
            .interval(Duration::from_secs(5))
            .on_event(|e| println!("{e}"))
            .start()?;
        loop {
            std::thread::park();
        }
    }

    let published = Arc::new(Mutex::new(String::new()));
    let url = static_host(published.clone())?;
    let publish = |version: u64, body: &str, what: &str| {
        *published.lock().unwrap_or_else(|p| p.into_inner()) =
            body.replace("VERSION", &version.to_string());
        println!("\npublished {what}");
    };
    let good = r#"{ "version": VERSION, "flags": { "dark-mode": { "enabled": true } } }"#;
    publish(1, good, "version 1");

    let updater = Updater::builder(store.clone())
        .http(&url)
        .interval(Duration::from_millis(200))
        .on_event(|e| println!("  event: {e}"))
        .wait_for_first(Duration::from_secs(2))
        .start_and_wait()?;
    println!("polling {url}: serving {:?}, version {}", updater.serving(), store.version());
    std::thread::sleep(Duration::from_millis(500)); // a few 304s

    publish(2, good, "version 2");
    std::thread::sleep(Duration::from_millis(500));
    publish(
        3,
        r#"{ "version": VERSION, "flags": { "dark-mode": { "enabled": "oops" } } }"#,
        "a broken version 3",
    );
    std::thread::sleep(Duration::from_millis(500));
    println!("  still serving version {}", store.version());
    publish(4, good, "version 4");
    std::thread::sleep(Duration::from_millis(500));
    println!("\nserving version {}", store.version());
    Ok(())
}

/// A static host for one document: ETag from the content, 304 on a match.
fn static_host(document: Arc<Mutex<String>>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/flags.json", listener.local_addr()?);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..n]).to_ascii_lowercase();
            let body = document.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let etag = format!("\"{:x}\"", xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
            let response = if request.contains(&format!("if-none-match: {etag}")) {
                "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_owned()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(url)
}
