//! `examples/axum_service.rs`, run on 127.0.0.1 and asked over real HTTP:
//! routes gated by flags, headers as the context, a push through the file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "../../examples/axum_service.rs"]
mod example;

/// One HTTP/1.1 GET; returns the status and the body.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("the server listens");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_gates_routes_by_flag_and_follows_pushes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("flags.json");
    std::fs::write(&config, example::DEMO).expect("written");
    let (addr, _updater) =
        example::serve(&config, "127.0.0.1:0".parse().expect("addr"), Duration::from_millis(50))
            .await
            .expect("serves");

    let result = tokio::task::spawn_blocking(move || {
        let staff = [("x-tenant-id", "acme-internal")];
        let customer = [("x-tenant-id", "t-104"), ("x-region", "eu-west")];
        assert_eq!(get(addr, "/checkout", &staff), (200, "new checkout (one-page)".to_owned()));
        assert_eq!(get(addr, "/checkout", &customer), (200, "classic checkout".to_owned()));
        assert_eq!(get(addr, "/search", &customer).0, 404);

        // A push: everyone gets the new checkout, search v2 goes live.
        let next = example::DEMO
            .replace(r#""version": 1"#, r#""version": 2"#)
            .replace(r#""stage": "internal""#, r#""stage": "everyone""#)
            .replace(r#""search-v2": { "enabled": false }"#, r#""search-v2": { "enabled": true }"#);
        std::fs::write(&config, next).expect("written");
        let start = Instant::now();
        while get(addr, "/search", &customer).0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(5), "the push never arrived");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(get(addr, "/checkout", &customer), (200, "new checkout (one-page)".to_owned()));
        assert_eq!(get(addr, "/search", &[]), (200, "search v2".to_owned()));

        let (status, metrics) = get(addr, "/metrics", &[]);
        assert_eq!(status, 200);
        assert!(
            metrics.contains(r#"flagstone_outcomes_total{feature_flag_key="new-checkout",stage="internal",outcome="success"} 1"#),
            "{metrics}"
        );
        let search_off = r#"flagstone_evaluations_total{feature_flag_key="search-v2",stage="off",feature_flag_result_variant="",result="off"} "#;
        assert!(metrics.lines().any(|l| l.starts_with(search_off)), "{metrics}");
    })
    .await;
    result.expect("the checks passed");
}
