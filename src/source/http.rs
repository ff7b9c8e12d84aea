//! The HTTP source: conditional GETs with ureq (feature `http`).
//!
//! Each pull sends `If-None-Match` with the ETag of the document last
//! applied; a `304 Not Modified` costs no body. Bodies may be gzip-encoded
//! and are read with a size limit. The whole pull (redirects, the body, the
//! signature sidecar) runs against one deadline. The ETag is kept only once
//! its document was applied, so a document refused for a signature that had
//! not been published yet is fetched in full again.
//!
//! Redirects are followed here, not by ureq, so that credentials and custom
//! headers go only to the origin they were configured for: a redirect to
//! another scheme, host or port drops them for the rest of the pull.

use std::io::Read as _;
use std::time::{Duration, Instant};

use super::{Document, Fetch, Source, SourceError};

pub(crate) const SIGNATURE_HEADER: &str = "x-flagstone-signature";

/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 5;

#[derive(Clone, Debug)]
pub(crate) struct HttpOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) headers: Vec<(String, String)>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            headers: Vec::new(),
        }
    }
}

pub(crate) struct HttpSource {
    agent: ureq::Agent,
    url: String,
    options: HttpOptions,
    max_body: u64,
    /// Whether to look for a signature (only when a public key is set).
    signed: bool,
    etag: Option<String>,
    pending_etag: Option<String>,
}

impl HttpSource {
    pub(crate) fn new(url: String, options: HttpOptions, max_body: u64, signed: bool) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_recv_response(Some(options.read_timeout))
            .timeout_recv_body(Some(options.read_timeout))
            .max_redirects(0)
            .build()
            .new_agent();
        Self { agent, url, options, max_body, signed, etag: None, pending_etag: None }
    }

    /// A GET, following redirects within `deadline`; the configured headers
    /// go only to the configured URL's origin.
    fn get(
        &self,
        url: &str,
        etag: Option<&str>,
        deadline: Instant,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), SourceError> {
        let origin = origin(&self.url);
        let mut url = url.to_owned();
        let mut trusted = origin.is_some() && origin == self::origin(&url);
        for _ in 0..=MAX_REDIRECTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SourceError::timeout(format!("{url}: the pull's deadline passed")));
            }
            let mut request = self.agent.get(&url).config().timeout_global(Some(left)).build();
            if trusted {
                for (name, value) in &self.options.headers {
                    request = request.header(name, value);
                }
            }
            if let Some(etag) = etag {
                request = request.header("If-None-Match", etag);
            }
            let response = request.call().map_err(|e| error(&url, e))?;
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok((url, response));
            }
            let Some(location) = response.headers().get("location").and_then(|v| v.to_str().ok())
            else {
                return Err(SourceError::status(
                    status,
                    format!("{url}: HTTP {status} without a Location"),
                ));
            };
            let next = resolve(&url, location);
            // Once the pull left its origin, nothing secret follows it, even
            // back.
            trusted = trusted && self::origin(&next) == origin;
            url = next;
        }
        Err(SourceError::new(format!("{}: more than {MAX_REDIRECTS} redirects", self.url)))
    }

    fn read_body(
        &self,
        url: &str,
        response: &mut ureq::http::Response<ureq::Body>,
        limit: u64,
    ) -> Result<Vec<u8>, SourceError> {
        let mut body = Vec::new();
        // One byte past the limit tells "at the limit" from "over it".
        let mut reader = response.body_mut().with_config().limit(limit.saturating_add(1)).reader();
        reader.read_to_end(&mut body).map_err(|e| {
            match e.into_inner().and_then(|e| e.downcast::<ureq::Error>().ok()) {
                Some(e) => error(url, *e),
                None => SourceError::new(format!("{url}: the body could not be read completely")),
            }
        })?;
        if body.len() as u64 > limit {
            return Err(SourceError::new(format!(
                "{url}: the body is over the limit of {limit} bytes"
            )));
        }
        Ok(body)
    }

    /// The detached signature: the response header, or else the sidecar at
    /// the document's path plus `.sig` (the query string kept after it, so
    /// presigned URLs work).
    fn signature(
        &self,
        response: &ureq::http::Response<ureq::Body>,
        deadline: Instant,
    ) -> Option<Vec<u8>> {
        if let Some(value) = response.headers().get(SIGNATURE_HEADER) {
            return Some(value.as_bytes().to_vec());
        }
        let url = sidecar_url(&self.url);
        let (url, mut sidecar) = self.get(&url, None, deadline).ok()?;
        if sidecar.status() != 200 {
            return None;
        }
        self.read_body(&url, &mut sidecar, super::file::SIGNATURE_LIMIT).ok()
    }
}

impl Source for HttpSource {
    fn fetch(&mut self, deadline: Instant) -> Result<Fetch, SourceError> {
        let (url, mut response) = self.get(&self.url, self.etag.as_deref(), deadline)?;
        match response.status().as_u16() {
            304 if self.etag.is_some() => return Ok(Fetch::NotModified),
            200 => {}
            status => {
                return Err(SourceError::status(status, format!("{url}: HTTP {status}")));
            }
        }
        self.pending_etag =
            response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = self.read_body(&url, &mut response, self.max_body)?;
        let signature = if self.signed { self.signature(&response, deadline) } else { None };
        Ok(Fetch::Document(Document { body, signature }))
    }

    fn commit(&mut self) {
        // A server that stops sending an ETag gets unconditional GETs again.
        self.etag = self.pending_etag.take();
    }
}

/// `scheme://authority` of an absolute URL, lowercased, with the default
/// port made explicit; `None` for anything else.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in the authority are not part of the origin.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_ascii_lowercase();
    let has_port =
        host_port.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            && !host_port.ends_with(']');
    let host_port = match (has_port, scheme.as_str()) {
        (true, _) => host_port,
        (false, "http") => format!("{host_port}:80"),
        (false, "https") => format!("{host_port}:443"),
        (false, _) => host_port,
    };
    Some(format!("{scheme}://{host_port}"))
}

/// Resolves a `Location` against the URL that answered with it.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(network) = location.strip_prefix("//") {
        return format!("{scheme}://{network}");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    // Relative to the base's directory.
    let path = rest[authority.len()..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    format!("{scheme}://{authority}{dir}/{location}")
}

/// The signature sidecar of a document URL: `.sig` on the path, the query
/// string kept.
fn sidecar_url(url: &str) -> String {
    let split = url.find(['?', '#']).unwrap_or(url.len());
    let (path, query) = url.split_at(split);
    format!("{path}.sig{query}")
}

fn error(url: &str, e: ureq::Error) -> SourceError {
    match e {
        ureq::Error::Timeout(t) => SourceError::timeout(format!("{url}: timed out ({t})")),
        ureq::Error::BodyExceedsLimit(limit) => SourceError::new(format!(
            "{url}: the body is over the limit of {} bytes",
            limit.saturating_sub(1)
        )),
        other => SourceError::new(format!("{url}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(origin("http://Example.com/a"), Some("http://example.com:80".into()));
        assert_eq!(origin("http://example.com:80/b?x"), origin("http://example.com/c"));
        assert_ne!(origin("https://example.com/a"), origin("http://example.com/a"));
        assert_ne!(origin("http://example.com:8080/"), origin("http://example.com/"));
        assert_eq!(origin("http://user:pw@h:1/"), Some("http://h:1".into()));
        assert_eq!(origin("http://[::1]/"), Some("http://[::1]:80".into()));
        assert_eq!(origin("/relative"), None);
    }

    #[test]
    fn locations_resolve_against_the_url_that_sent_them() {
        let base = "http://a.test:8/dir/flags.json?x=1";
        assert_eq!(resolve(base, "https://b.test/f"), "https://b.test/f");
        assert_eq!(resolve(base, "//c.test/f"), "http://c.test/f");
        assert_eq!(resolve(base, "/other"), "http://a.test:8/other");
        assert_eq!(resolve(base, "next.json"), "http://a.test:8/dir/next.json");
    }

    #[test]
    fn the_sidecar_of_a_presigned_url_keeps_its_query() {
        assert_eq!(
            sidecar_url("https://s3.test/b/flags.json?X-Amz-Signature=abc"),
            "https://s3.test/b/flags.json.sig?X-Amz-Signature=abc"
        );
        assert_eq!(sidecar_url("http://h/flags.json"), "http://h/flags.json.sig");
    }
}
