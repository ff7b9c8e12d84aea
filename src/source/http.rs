//! The HTTP source: conditional GETs with ureq (feature `http`).
//!
//! Each pull sends `If-None-Match` with the ETag of the document last
//! applied; a `304 Not Modified` costs no body. Bodies may be gzip-encoded,
//! are read with a size limit, and every request has connect and read
//! timeouts. The ETag is kept only once its document was applied, so a
//! document refused for a signature that had not been published yet is
//! fetched in full again.

use std::io::Read as _;
use std::time::Duration;

use super::{Document, Fetch, Source, SourceError};

pub(crate) const SIGNATURE_HEADER: &str = "x-flagstone-signature";

#[derive(Clone, Debug)]
pub(crate) struct HttpOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) max_body: u64,
    pub(crate) headers: Vec<(String, String)>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            max_body: 16 * 1024 * 1024,
            headers: Vec::new(),
        }
    }
}

pub(crate) struct HttpSource {
    agent: ureq::Agent,
    url: String,
    options: HttpOptions,
    etag: Option<String>,
    pending_etag: Option<String>,
}

impl HttpSource {
    pub(crate) fn new(url: String, options: HttpOptions) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_recv_response(Some(options.read_timeout))
            .timeout_recv_body(Some(options.read_timeout))
            .max_redirects(5)
            .build()
            .new_agent();
        Self { agent, url, options, etag: None, pending_etag: None }
    }

    fn get(
        &self,
        url: &str,
        etag: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, SourceError> {
        let mut request = self.agent.get(url);
        for (name, value) in &self.options.headers {
            request = request.header(name, value);
        }
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        request.call().map_err(|e| error(url, e))
    }

    fn read_body(
        &self,
        url: &str,
        response: &mut ureq::http::Response<ureq::Body>,
    ) -> Result<Vec<u8>, SourceError> {
        let mut body = Vec::new();
        // One byte past the limit tells "at the limit" from "over it".
        let limit = self.options.max_body;
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

    /// The detached signature: the response header, or else `<url>.sig`.
    fn signature(&self, response: &ureq::http::Response<ureq::Body>) -> Option<Vec<u8>> {
        if let Some(value) = response.headers().get(SIGNATURE_HEADER) {
            return Some(value.as_bytes().to_vec());
        }
        let url = format!("{}.sig", self.url);
        let mut sidecar = self.get(&url, None).ok()?;
        if sidecar.status() != 200 {
            return None;
        }
        self.read_body(&url, &mut sidecar).ok()
    }
}

impl Source for HttpSource {
    fn fetch(&mut self) -> Result<Fetch, SourceError> {
        let mut response = self.get(&self.url, self.etag.as_deref())?;
        match response.status().as_u16() {
            304 if self.etag.is_some() => return Ok(Fetch::NotModified),
            200 => {}
            status => {
                return Err(SourceError::status(status, format!("{}: HTTP {status}", self.url)));
            }
        }
        self.pending_etag =
            response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = self.read_body(&self.url, &mut response)?;
        let signature = self.signature(&response);
        Ok(Fetch::Document(Document { body, signature }))
    }

    fn commit(&mut self) {
        // A server that stops sending an ETag gets unconditional GETs again.
        self.etag = self.pending_etag.take();
    }
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
