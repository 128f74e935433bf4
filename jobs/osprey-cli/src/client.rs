//! The CLI's side of the REST API: where a command runs (a local root or a
//! server), and an HTTP client whose errors tell the user what to do.

use std::path::Path;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use osprey_core::{Error, ErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where a command runs: `--root` (in this process) or `--server` (over REST).
/// An explicit `--root` wins, then `--server`/`OSPREY_SERVER`, then `OSPREY_ROOT`.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Root URL for local mode: a folder, file:///…, memory://NAME or
    /// s3://bucket/prefix [env: OSPREY_ROOT, used when no server is given].
    #[arg(long)]
    pub root: Option<String>,
    /// An Osprey server (`osprey serve` or `osprey coordinator`), e.g. http://127.0.0.1:8080.
    #[arg(long, env = "OSPREY_SERVER")]
    pub server: Option<String>,
    /// API key for --server.
    #[arg(long, env = "OSPREY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// A resolved [`Target`].
pub enum Mode {
    /// In this process, over a root URL.
    Local(String),
    /// Over REST.
    Remote(Client),
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

impl Target {
    /// Local for an explicit `--root`, else the server when one is given,
    /// else `OSPREY_ROOT`; an error naming both otherwise.
    pub fn mode(&self) -> anyhow::Result<Mode> {
        if let Some(root) = non_empty(self.root.clone()) {
            return Ok(Mode::Local(root));
        }
        if let Some(server) = non_empty(self.server.clone()) {
            return Ok(Mode::Remote(Client::new(&server, self.api_key.clone())?));
        }
        match non_empty(std::env::var("OSPREY_ROOT").ok()) {
            Some(root) => Ok(Mode::Local(root)),
            None => Err(Error::invalid(
                "no root or server: pass --root DIR (or set OSPREY_ROOT) to work on a root in this process, \
                 or --server URL (or set OSPREY_SERVER) to use a running Osprey server",
            )
            .into()),
        }
    }

    /// For commands that only exist over REST.
    pub fn client(&self, what: &str) -> anyhow::Result<Client> {
        match self.mode() {
            Ok(Mode::Remote(c)) => Ok(c),
            _ => Err(Error::invalid(format!(
                "{what} needs a server: pass --server URL or set OSPREY_SERVER (start one with `osprey serve --root DIR`)"
            ))
            .into()),
        }
    }
}

/// A REST client of one server.
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// `Accept` value for SQL answers as an Arrow IPC stream.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Client {
    /// A client of `server` (`http://host:port`, with or without a trailing `/`).
    pub fn new(server: &str, key: Option<String>) -> anyhow::Result<Client> {
        let base = server.trim().trim_end_matches('/').to_string();
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        reqwest::Url::parse(&base).map_err(|e| Error::invalid(format!("server `{server}` is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok(Client { base, key: key.filter(|k| !k.trim().is_empty()), http })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Sends `req`; a non-2xx answer becomes an error built from the server's
    /// JSON error body, with a hint for the common causes.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<osprey_api::ErrorBody>(&body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| body.trim().chars().take(300).collect());
        let (kind, hint) = match status.as_u16() {
            401 if self.key.is_none() => (
                ErrorKind::Forbidden,
                "; pass --api-key KEY or set OSPREY_API_KEY (a key from the server's OSPREY_API_KEYS)",
            ),
            401 => (ErrorKind::Forbidden, "; check --api-key / OSPREY_API_KEY against the server's OSPREY_API_KEYS"),
            403 => (ErrorKind::Forbidden, ""),
            404 if message.contains("gallery") => (ErrorKind::NotFound, "; `osprey gallery list` shows the galleries"),
            404 => (ErrorKind::NotFound, ""),
            409 => (ErrorKind::AlreadyExists, ""),
            400..=499 => (ErrorKind::InvalidInput, ""),
            _ => (ErrorKind::Internal, ""),
        };
        Err(Error::new(kind, format!("{} (HTTP {}): {message}{hint}", self.base, status.as_u16())).into())
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let what = if e.is_connect() {
            format!(
                "cannot reach the Osprey server at {}: is it running? (start one with `osprey serve --root DIR`, \
                 or set --server / OSPREY_SERVER)",
                self.base
            )
        } else if e.is_timeout() {
            format!("the Osprey server at {} did not answer in time", self.base)
        } else {
            format!("request to {} failed", self.base)
        };
        // The transport error's own chain (e.g. "Connection refused") follows.
        Error::new(ErrorKind::Storage, format!("{what}: {}", error_chain(&e))).into()
    }

    /// `GET path` → JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(self.send(self.request(reqwest::Method::GET, path)).await?).await
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.json(self.send(self.request(reqwest::Method::POST, path).json(body)).await?).await
    }

    /// `DELETE path` → JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(self.send(self.request(reqwest::Method::DELETE, path)).await?).await
    }

    async fn json<T: DeserializeOwned>(&self, response: reqwest::Response) -> anyhow::Result<T> {
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!("{} answered something that is not Osprey's API: {e}", self.base)).into()
        })
    }

    /// `POST /v1/sql`, read back as Arrow record batches (the same values as a local query).
    pub async fn sql(&self, query: &str) -> anyhow::Result<Vec<RecordBatch>> {
        let req = self
            .request(reqwest::Method::POST, "/v1/sql")
            .header(reqwest::header::ACCEPT, ARROW_STREAM)
            .json(&osprey_api::SqlRequest { query: query.to_string() });
        let bytes = self.send(req).await?.bytes().await.map_err(|e| self.transport_error(e))?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| Error::internal(format!("Arrow stream from {}: {e}", self.base)))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::internal(format!("Arrow stream from {}: {e}", self.base)))?;
        Ok(batches)
    }

    /// `POST /v1/search` with an image: every face in it is searched.
    pub async fn search_image(
        &self,
        image: &Path,
        gallery: &str,
        k: usize,
        threshold: Option<f32>,
        fpir: Option<f64>,
        weights: Option<&str>,
    ) -> anyhow::Result<osprey_api::SearchResponse> {
        let bytes = tokio::fs::read(image)
            .await
            .map_err(|e| Error::invalid(format!("cannot read `{}`: {e}", image.display())))?;
        let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let mut form = reqwest::multipart::Form::new()
            .part("image", reqwest::multipart::Part::bytes(bytes).file_name(name))
            .text("gallery", gallery.to_string())
            .text("k", k.to_string());
        if let Some(t) = threshold {
            form = form.text("threshold", t.to_string());
        }
        if let Some(f) = fpir {
            form = form.text("fpir", f.to_string());
        }
        if let Some(w) = weights {
            form = form.text("weights", w.to_string());
        }
        let req = self.request(reqwest::Method::POST, "/v1/search").multipart(form);
        self.json(self.send(req).await?).await
    }
}

/// `e` and its sources, joined by ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
