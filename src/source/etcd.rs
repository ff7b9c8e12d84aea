//! The etcd source (feature `etcd`): the document is the value at a key of
//! an etcd v3 cluster, its signature the value at `{key}.sig`, and changes
//! are pushed through a watch. Spoken over etcd's JSON gateway with ureq:
//! no async runtime, no gRPC stack.
//!
//! - **Read**: one transaction of two ranges, so the document and its
//!   signature always come from the same revision (a pair written by one
//!   transaction is never seen half-old). Reads are linearizable.
//! - **Watch**: from the read's revision + 1, on the key and its sidecar,
//!   with progress notifications. An event triggers a new read (events are
//!   triggers, the read is the truth). A cancel (compaction, auth), the
//!   end of the stream or an error loses the watch: the updater reads
//!   again and watches from there.
//! - **Stalls**: every interval the watcher checks the keys' revisions
//!   cheaply; a change the watch did not deliver, seen twice, or (when the
//!   server sends progress notifications) two intervals of silence, is a
//!   stalled watch: reported, and reconnected.
//! - **Endpoints**: tried in turn; an endpoint that cannot be reached, or
//!   has no quorum, gives way to the next.
//! - **Auth**: with credentials, a token from `/v3/auth/authenticate`,
//!   renewed when refused.
//!
//! The same client publishes ([`crate::publish`]): a transaction that
//! writes document and signature only if the key's `mod_revision` is the
//! one the publisher read.

use std::io::{BufRead as _, BufReader, Read as _};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{Document, Fetch, Source, SourceError, Watched, Watcher};

/// Why a call to etcd failed.
#[derive(Clone, Debug)]
pub(crate) enum EtcdError {
    /// No endpoint answered (connection refused, timed out, no quorum).
    Unreachable(String),
    /// etcd answered with an error: its gRPC code and message.
    Refused { code: i64, message: String },
    /// An answer that is not what etcd sends.
    Malformed(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable(why) => write!(f, "etcd unreachable: {why}"),
            EtcdError::Refused { code, message } => {
                write!(f, "etcd refused (code {code}): {message}")
            }
            EtcdError::Malformed(why) => write!(f, "etcd answered oddly: {why}"),
        }
    }
}

impl EtcdError {
    fn timeout(&self) -> bool {
        matches!(self, EtcdError::Unreachable(why) if why.contains("timed out") || why.contains("deadline"))
    }
}

impl From<EtcdError> for SourceError {
    fn from(e: EtcdError) -> Self {
        if e.timeout() {
            SourceError::timeout(e.to_string())
        } else {
            SourceError::new(e.to_string())
        }
    }
}

/// A key and value as etcd stores them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    pub(crate) mod_revision: i64,
}

/// A document and its signature, read at one revision.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pair {
    /// The store's revision of the read.
    pub(crate) revision: i64,
    pub(crate) document: Option<Entry>,
    pub(crate) signature: Option<Entry>,
}

/// How a compare-and-swap write of a pair ended.
#[derive(Clone, Debug)]
pub(crate) enum Written {
    /// Written at this revision.
    At(i64),
    /// Someone else wrote the key since it was read.
    Lost,
}

/// The connection settings of a client.
#[derive(Clone, Debug)]
pub(crate) struct EtcdOptions {
    pub(crate) endpoints: Vec<String>,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) connect_timeout: Duration,
    /// The most a unary call may take (within a caller's deadline).
    pub(crate) request_timeout: Duration,
    /// The largest response read, in bytes.
    pub(crate) max_response: u64,
}

/// A client of etcd's v3 JSON gateway.
pub(crate) struct Etcd {
    agent: ureq::Agent,
    options: EtcdOptions,
    /// The endpoint in use.
    at: usize,
    token: Option<String>,
}

fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn decode(value: &Value) -> Result<Vec<u8>, EtcdError> {
    match value.as_str() {
        // An empty value is left out of etcd's answers.
        None => Ok(Vec::new()),
        Some(text) => STANDARD
            .decode(text)
            .map_err(|e| EtcdError::Malformed(format!("a value is not base64: {e}"))),
    }
}

/// An int64 of etcd's JSON: a string, or absent for 0.
fn int(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key range a watch on `key` and `{key}.sig` covers: `key` up to and
/// including `{key}.sig` (keys sorting in between are filtered out).
fn watched_range(key: &str) -> (String, String) {
    let mut end = format!("{key}.sig").into_bytes();
    end.push(0);
    (encode(key.as_bytes()), encode(&end))
}

impl Etcd {
    pub(crate) fn new(options: EtcdOptions) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .max_redirects(0)
            .build()
            .new_agent();
        Self { agent, options, at: 0, token: None }
    }

    pub(crate) fn options(&self) -> &EtcdOptions {
        &self.options
    }

    fn endpoint(&self) -> &str {
        let endpoints = &self.options.endpoints;
        endpoints.get(self.at % endpoints.len().max(1)).map_or("", |e| e.trim_end_matches('/'))
    }

    fn next_endpoint(&mut self) {
        self.at = (self.at + 1) % self.options.endpoints.len().max(1);
    }

    /// One POST to the endpoint in use.
    fn post(&self, path: &str, body: &Value, deadline: Instant) -> Result<(u16, Value), EtcdError> {
        let left =
            deadline.saturating_duration_since(Instant::now()).min(self.options.request_timeout);
        if left.is_zero() {
            return Err(EtcdError::Unreachable("the pull's deadline passed".into()));
        }
        let url = format!("{}{path}", self.endpoint());
        let mut request = self.agent.post(&url).config().timeout_global(Some(left)).build();
        if let Some(token) = &self.token {
            request = request.header("Authorization", token);
        }
        let bytes = serde_json::to_vec(body).map_err(|e| EtcdError::Malformed(e.to_string()))?;
        let mut response = request
            .header("Content-Type", "application/json")
            .send(&bytes[..])
            .map_err(|e| EtcdError::Unreachable(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let mut text = Vec::new();
        response
            .body_mut()
            .with_config()
            .limit(self.options.max_response)
            .reader()
            .read_to_end(&mut text)
            .map_err(|e| EtcdError::Unreachable(format!("{url}: reading the answer: {e}")))?;
        let value = serde_json::from_slice(&text).map_err(|_| {
            EtcdError::Malformed(format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&text)
            ))
        })?;
        Ok((status, value))
    }

    /// A call, failing over across endpoints, authenticating when refused
    /// for want of a valid token.
    pub(crate) fn call(
        &mut self,
        path: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, EtcdError> {
        if self.options.credentials.is_some() && self.token.is_none() {
            self.authenticate(deadline)?;
        }
        let mut last = EtcdError::Unreachable("no endpoint".into());
        let mut renewed = false;
        let mut tries = 0;
        while tries < self.options.endpoints.len().max(1) {
            match self.post(path, body, deadline) {
                Ok((200, value)) => return Ok(value),
                Ok((_, value)) => {
                    let code = int(&value["code"]);
                    let message = value["message"].as_str().unwrap_or_default().to_owned();
                    // 16: an invalid or expired token; 3 "user name is empty":
                    // none. Authenticate once and try again.
                    let auth = code == 16 || message.contains("user name is empty");
                    if auth && self.options.credentials.is_some() && !renewed {
                        renewed = true;
                        self.authenticate(deadline)?;
                        continue;
                    }
                    // 14: unavailable (no leader, no quorum): another member may do.
                    if code == 14 {
                        last = EtcdError::Unreachable(format!("{}: {message}", self.endpoint()));
                        self.next_endpoint();
                        tries += 1;
                        continue;
                    }
                    return Err(EtcdError::Refused { code, message });
                }
                Err(e @ EtcdError::Unreachable(_)) => {
                    last = e;
                    self.next_endpoint();
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Gets a token for the configured user.
    fn authenticate(&mut self, deadline: Instant) -> Result<(), EtcdError> {
        let Some((name, password)) = self.options.credentials.clone() else { return Ok(()) };
        self.token = None;
        let mut tries = 0;
        loop {
            match self.post(
                "/v3/auth/authenticate",
                &json!({ "name": name, "password": password }),
                deadline,
            ) {
                Ok((200, value)) => {
                    let token = value["token"].as_str().ok_or_else(|| {
                        EtcdError::Malformed("authenticate answered without a token".into())
                    })?;
                    self.token = Some(token.to_owned());
                    return Ok(());
                }
                Ok((_, value)) => {
                    return Err(EtcdError::Refused {
                        code: int(&value["code"]),
                        message: format!(
                            "authenticating as {name:?}: {}",
                            value["message"].as_str().unwrap_or_default()
                        ),
                    });
                }
                Err(e) => {
                    tries += 1;
                    if tries >= self.options.endpoints.len().max(1) {
                        return Err(e);
                    }
                    self.next_endpoint();
                }
            }
        }
    }

    /// Reads `key` and `{key}.sig` at one revision.
    pub(crate) fn read_pair(&mut self, key: &str, deadline: Instant) -> Result<Pair, EtcdError> {
        let sig = format!("{key}.sig");
        let body = json!({ "success": [
            { "request_range": { "key": encode(key.as_bytes()) } },
            { "request_range": { "key": encode(sig.as_bytes()) } },
        ] });
        let answer = self.call("/v3/kv/txn", &body, deadline)?;
        pair(&answer, &answer["responses"])
    }

    /// The `mod_revision`s of `key` and `{key}.sig` (0 when absent), read
    /// without their values.
    pub(crate) fn revisions(
        &mut self,
        key: &str,
        deadline: Instant,
    ) -> Result<(i64, i64), EtcdError> {
        let sig = format!("{key}.sig");
        let body = json!({ "success": [
            { "request_range": { "key": encode(key.as_bytes()), "keys_only": true } },
            { "request_range": { "key": encode(sig.as_bytes()), "keys_only": true } },
        ] });
        let answer = self.call("/v3/kv/txn", &body, deadline)?;
        let revision =
            |i: usize| int(&answer["responses"][i]["response_range"]["kvs"][0]["mod_revision"]);
        Ok((revision(0), revision(1)))
    }

    /// Writes `document` at `key` and `signature` at `{key}.sig` (deleting
    /// a stale one when there is none) in one transaction, if `key`'s
    /// `mod_revision` is still `expected` (0: the key is absent).
    pub(crate) fn write_pair(
        &mut self,
        key: &str,
        document: &[u8],
        signature: Option<&[u8]>,
        expected: i64,
        deadline: Instant,
    ) -> Result<Written, EtcdError> {
        let sig = format!("{key}.sig");
        let (key64, sig64) = (encode(key.as_bytes()), encode(sig.as_bytes()));
        let second = match signature {
            Some(signature) => {
                json!({ "request_put": { "key": sig64, "value": encode(signature) } })
            }
            None => json!({ "request_delete_range": { "key": sig64 } }),
        };
        // `target` must be given: without it etcd compares the version and
        // ignores `mod_revision`.
        let body = json!({
            "compare": [ { "key": key64, "target": "MOD", "result": "EQUAL", "mod_revision": expected.to_string() } ],
            "success": [ { "request_put": { "key": key64, "value": encode(document) } }, second ],
        });
        let answer = self.call("/v3/kv/txn", &body, deadline)?;
        // A failed compare is HTTP 200 without `succeeded`.
        if answer["succeeded"].as_bool() == Some(true) {
            Ok(Written::At(int(&answer["header"]["revision"])))
        } else {
            Ok(Written::Lost)
        }
    }

    /// Opens a watch on `key` and `{key}.sig` from `revision`; reads time
    /// out after `read_timeout` without a message.
    fn watch(
        &mut self,
        key: &str,
        revision: i64,
        read_timeout: Duration,
    ) -> Result<Stream, EtcdError> {
        if self.options.credentials.is_some() && self.token.is_none() {
            self.authenticate(Instant::now() + self.options.request_timeout)?;
        }
        let (key64, end64) = watched_range(key);
        let body = json!({ "create_request": {
            "key": key64, "range_end": end64, "start_revision": revision.to_string(), "progress_notify": true } });
        let bytes = serde_json::to_vec(&body).map_err(|e| EtcdError::Malformed(e.to_string()))?;
        let url = format!("{}/v3/watch", self.endpoint());
        // A watch is a long stream: no total timeout, only one per read.
        let mut request =
            self.agent.post(&url).config().timeout_per_read(Some(read_timeout)).build();
        if let Some(token) = &self.token {
            request = request.header("Authorization", token);
        }
        let response = request
            .header("Content-Type", "application/json")
            .send(&bytes[..])
            .map_err(|e| EtcdError::Unreachable(format!("{url}: {e}")))?;
        if response.status().as_u16() != 200 {
            return Err(EtcdError::Refused {
                code: 0,
                message: format!("{url}: HTTP {} for a watch", response.status()),
            });
        }
        let reader =
            BufReader::new(response.into_body().into_with_config().limit(u64::MAX).reader());
        Ok(Stream {
            reader,
            key: key.to_owned(),
            max_line: self.options.max_response,
            pending: Vec::new(),
        })
    }
}

/// The pair in the two range answers of a transaction.
fn pair(answer: &Value, responses: &Value) -> Result<Pair, EtcdError> {
    if !answer["header"].is_object() {
        return Err(EtcdError::Malformed(format!("no header in {answer}")));
    }
    let entry = |i: usize| -> Result<Option<Entry>, EtcdError> {
        let kv = &responses[i]["response_range"]["kvs"][0];
        if kv.is_null() {
            return Ok(None);
        }
        Ok(Some(Entry { value: decode(&kv["value"])?, mod_revision: int(&kv["mod_revision"]) }))
    };
    Ok(Pair {
        revision: int(&answer["header"]["revision"]),
        document: entry(0)?,
        signature: entry(1)?,
    })
}

/// An open watch stream: one JSON message a line.
struct Stream {
    reader: BufReader<ureq::BodyReader<'static>>,
    key: String,
    max_line: u64,
    /// A message read in part when a read timed out.
    pending: Vec<u8>,
}

/// One message of a watch stream.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    Created,
    /// A progress notification: nothing changed up to this revision.
    Progress(i64),
    /// Events; `changed` when one is on the key or its sidecar.
    Events {
        changed: bool,
    },
    /// The watch was canceled: why.
    Canceled(String),
}

impl Stream {
    /// The next message; `Err` when the stream ended, broke, or said
    /// nothing for the read timeout (`Ok(None)`).
    fn next(&mut self) -> Result<Option<Message>, EtcdError> {
        let room = self.max_line.saturating_sub(self.pending.len() as u64);
        let read = (&mut self.reader).take(room).read_until(b'\n', &mut self.pending);
        match read {
            Ok(0) if self.pending.is_empty() => {
                Err(EtcdError::Unreachable("the watch stream ended".into()))
            }
            Ok(_)
                if !self.pending.ends_with(b"\n")
                    && (self.pending.len() as u64) < self.max_line =>
            {
                // The last message, without its newline (etcd's closing
                // error), then the end.
                let line = std::mem::take(&mut self.pending);
                parse(&line, &self.key).map(Some)
            }
            Ok(_) => {
                let line = std::mem::take(&mut self.pending);
                if !line.ends_with(b"\n") {
                    return Err(EtcdError::Malformed(format!(
                        "a watch message over {} bytes",
                        self.max_line
                    )));
                }
                parse(&line, &self.key).map(Some)
            }
            // A per-read timeout (ureq reports it as `Other`, "timeout: per
            // read"): the stream goes on; what was read of a message waits.
            Err(e) if e.to_string().contains("timeout") => Ok(None),
            Err(e) => Err(EtcdError::Unreachable(format!("the watch stream broke: {e}"))),
        }
    }
}

fn parse(line: &[u8], key: &str) -> Result<Message, EtcdError> {
    let value: Value = serde_json::from_slice(line).map_err(|_| {
        EtcdError::Malformed(format!("a watch message: {}", String::from_utf8_lossy(line)))
    })?;
    if let Some(error) = value.get("error") {
        return Err(EtcdError::Unreachable(format!("the watch stream closed: {error}")));
    }
    let result = &value["result"];
    if result["canceled"].as_bool() == Some(true) {
        let compact = int(&result["compact_revision"]);
        let reason = match result["cancel_reason"].as_str() {
            Some(reason) => reason.to_owned(),
            None if compact > 0 => format!("revisions up to {compact} were compacted"),
            None => "canceled".to_owned(),
        };
        return Ok(Message::Canceled(reason));
    }
    if let Some(events) = result["events"].as_array() {
        let sig = format!("{key}.sig");
        let changed = events.iter().any(|event| {
            let name = decode(&event["kv"]["key"]).unwrap_or_default();
            name == key.as_bytes() || name == sig.as_bytes()
        });
        return Ok(Message::Events { changed });
    }
    if result["created"].as_bool() == Some(true) {
        return Ok(Message::Created);
    }
    Ok(Message::Progress(int(&result["header"]["revision"])))
}

/// The updater's source: reads pairs.
pub(crate) struct EtcdSource {
    client: Etcd,
    key: String,
    /// The revision of the last read, the watch's starting point.
    revision: Option<i64>,
    interval: Duration,
}

impl EtcdSource {
    pub(crate) fn new(options: EtcdOptions, key: String, interval: Duration) -> Self {
        Self { client: Etcd::new(options), key, revision: None, interval }
    }
}

impl Source for EtcdSource {
    fn fetch(&mut self, deadline: Instant) -> Result<Fetch, SourceError> {
        let pair = self.client.read_pair(&self.key, deadline)?;
        self.revision = Some(pair.revision);
        let Some(document) = pair.document else {
            return Err(SourceError::new(format!(
                "etcd has no document at {:?} (yet): publish one with `flagstone publish`",
                self.key
            )));
        };
        Ok(Fetch::Document(Document {
            body: document.value,
            signature: pair.signature.map(|s| s.value),
        }))
    }

    fn position(&self) -> Option<i64> {
        self.revision
    }

    fn watcher(&self) -> Option<Box<dyn Watcher>> {
        Some(Box::new(EtcdWatcher {
            client: Etcd::new(self.client.options().clone()),
            key: self.key.clone(),
            interval: self.interval,
            stream: None,
        }))
    }
}

/// The watch, owned by the updater's thread.
struct EtcdWatcher {
    client: Etcd,
    key: String,
    interval: Duration,
    stream: Option<Open>,
}

/// A stream and what it has said.
struct Open {
    stream: Stream,
    /// The revision the stream was opened after.
    since: i64,
    last_message: Instant,
    last_check: Instant,
    progress_seen: bool,
    /// A change the watch has not delivered, seen by the last check.
    suspect: Option<i64>,
}

impl Watcher for EtcdWatcher {
    fn wait(&mut self, since: i64, stopped: &dyn Fn() -> bool) -> Watched {
        // A read at a newer revision than the stream's start: the stream
        // may already have delivered what led to it, or not; start afresh
        // from the read, which is the truth.
        if self.stream.as_ref().is_some_and(|open| open.since != since) {
            self.stream = None;
        }
        let read_timeout = self.interval.min(Duration::from_secs(1)).max(Duration::from_millis(50));
        if self.stream.is_none() {
            match self.client.watch(&self.key, since + 1, read_timeout) {
                Ok(stream) => {
                    let now = Instant::now();
                    self.stream = Some(Open {
                        stream,
                        since,
                        last_message: now,
                        last_check: now,
                        progress_seen: false,
                        suspect: None,
                    });
                }
                Err(e) => return Watched::Lost(e.into()),
            }
        }
        let started = Instant::now();
        while started.elapsed() < self.interval {
            if stopped() {
                return Watched::Quiet;
            }
            let Some(open) = self.stream.as_mut() else { return Watched::Quiet };
            match open.stream.next() {
                Ok(Some(Message::Events { changed: true })) => return Watched::Changed,
                Ok(Some(Message::Canceled(reason))) => {
                    self.stream = None;
                    // A token refused (it expired, or auth was turned on):
                    // a fresh one for the next watch.
                    if reason.contains("auth") || reason.contains("user name") {
                        self.client.token = None;
                    }
                    return Watched::Lost(SourceError::new(format!(
                        "etcd watch canceled: {reason}"
                    )));
                }
                Ok(Some(Message::Progress(_))) => {
                    open.last_message = Instant::now();
                    open.progress_seen = true;
                }
                Ok(Some(_)) => open.last_message = Instant::now(),
                Ok(None) => {}
                Err(e) => {
                    self.stream = None;
                    return Watched::Lost(e.into());
                }
            }
            if let Some(lost) = self.check_stall() {
                self.stream = None;
                return Watched::Lost(lost);
            }
        }
        Watched::Quiet
    }
}

impl EtcdWatcher {
    /// Once an interval: whether the watch has stalled.
    fn check_stall(&mut self) -> Option<SourceError> {
        let interval = self.interval;
        let open = self.stream.as_mut()?;
        if open.progress_seen && open.last_message.elapsed() > 2 * interval {
            return Some(SourceError::new(format!(
                "etcd watch stalled: no event and no progress notification for {:?}",
                open.last_message.elapsed()
            )));
        }
        if open.last_check.elapsed() < interval {
            return None;
        }
        open.last_check = Instant::now();
        let since = open.since;
        let deadline = Instant::now() + interval.max(Duration::from_secs(1));
        let (document, signature) = match self.client.revisions(&self.key, deadline) {
            Ok(revisions) => revisions,
            Err(e) => return Some(e.into()),
        };
        let open = self.stream.as_mut()?;
        let newest = document.max(signature);
        if newest <= since {
            open.suspect = None;
            return None;
        }
        // Written after the read, and not delivered: once may be an event
        // on its way, twice is a stalled watch.
        if open.suspect == Some(newest) {
            return Some(SourceError::new(format!(
                "etcd watch stalled: revision {newest} of {:?} was not delivered",
                self.key
            )));
        }
        open.suspect = Some(newest);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_messages_parse_as_etcd_3_4_sends_them() {
        let key = "/flags";
        let created = br#"{"result":{"header":{"revision":"10"},"created":true}}"#;
        assert_eq!(parse(created, key).expect("ok"), Message::Created);
        let progress = br#"{"result":{"header":{"cluster_id":"1","revision":"12"}}}"#;
        assert_eq!(parse(progress, key).expect("ok"), Message::Progress(12));
        let ours = format!(
            r#"{{"result":{{"header":{{"revision":"13"}},"events":[{{"kv":{{"key":"{}","mod_revision":"13"}}}}]}}}}"#,
            encode(b"/flags.sig")
        );
        assert_eq!(parse(ours.as_bytes(), key).expect("ok"), Message::Events { changed: true });
        let between = format!(
            r#"{{"result":{{"events":[{{"type":"DELETE","kv":{{"key":"{}"}}}}]}}}}"#,
            encode(b"/flags.a")
        );
        assert_eq!(parse(between.as_bytes(), key).expect("ok"), Message::Events { changed: false });
        let compacted = br#"{"result":{"header":{},"canceled":true,"compact_revision":"12"}}"#;
        assert!(
            matches!(parse(compacted, key), Ok(Message::Canceled(r)) if r.contains("compacted"))
        );
        let closing =
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing"}}"#;
        assert!(parse(closing, key).is_err());
    }

    #[test]
    fn the_watched_range_ends_just_past_the_sidecar() {
        let (key, end) = watched_range("/f");
        assert_eq!(STANDARD.decode(key).expect("b64"), b"/f");
        assert_eq!(STANDARD.decode(end).expect("b64"), b"/f.sig\0");
    }
}
