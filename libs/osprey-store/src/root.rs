use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use osprey_core::{Error, ErrorKind, Result};
use url::Url;

use crate::error::from_object_store;

/// In-process `memory://NAME` roots, shared by every [`Root::open`] of the
/// same name so that a coordinator and in-process workers see one store.
static MEMORY_ROOTS: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> = LazyLock::new(Default::default);

/// Whether a put-if-absent created the object or found one already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds our bytes.
    Created,
    /// An object was already there; it was left untouched.
    AlreadyExists,
}

/// One listed object, keyed relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// An Osprey root: an object store and a prefix inside it.
///
/// Keys passed to its methods are relative to the root (`templates/…`).
#[derive(Debug, Clone)]
pub struct Root {
    /// The store, unprefixed, so DataFusion can use it with full URLs.
    store: Arc<dyn ObjectStore>,
    /// `scheme://authority/` of the store, e.g. `s3://bucket/` or `file:///`.
    base_url: Url,
    /// The root's prefix inside the store (empty for the store's top).
    prefix: Path,
    /// The URL the root was opened from, for messages.
    display: String,
}

impl Root {
    /// Opens a root from a URL: `file:///abs/dir`, a plain local path,
    /// `memory://NAME` or `s3://bucket/prefix`.
    ///
    /// S3 reads the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for
    /// S3-compatible servers). Put-if-absent uses conditional writes
    /// (`If-None-Match`), which AWS S3 and most compatible servers support.
    pub fn open(url: &str) -> Result<Root> {
        Self::open_with(url, &[])
    }

    /// Like [`Root::open`], with extra S3 settings that override the
    /// environment, as `object_store` config keys (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`, …).
    pub fn open_with(url: &str, s3_options: &[(&str, &str)]) -> Result<Root> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::invalid("root URL is empty"));
        }
        let Some((scheme, _)) = url.split_once("://") else {
            return Self::open_local(std::path::Path::new(url), url);
        };
        let parsed =
            Url::parse(url).map_err(|e| Error::invalid(format!("root URL `{url}` is not a valid URL: {e}")))?;
        match scheme {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|_| Error::invalid(format!("URI `{url}` is not a valid file URI")))?;
                Self::open_local(&path, url)
            }
            "memory" => {
                let name = parsed.host_str().unwrap_or("default").to_string();
                let store = MEMORY_ROOTS.lock().unwrap().entry(name.clone()).or_default().clone();
                Ok(Root {
                    store,
                    base_url: Url::parse(&format!("memory://{name}/")).expect("valid memory URL"),
                    prefix: Path::from(parsed.path().trim_matches('/')),
                    display: url.to_string(),
                })
            }
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| Error::invalid(format!("S3 URL `{url}` has no bucket")))?
                    .to_string();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    builder = builder.with_region("us-east-1");
                }
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")) {
                    builder = builder
                        .with_endpoint(&endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                for (key, value) in s3_options {
                    let key = key.parse().map_err(|e| Error::invalid(format!("unknown S3 option `{key}`: {e}")))?;
                    builder = builder.with_config(key, *value);
                }
                let conditional = match std::env::var("OSPREY_S3_CONDITIONAL_PUT").as_deref() {
                    Ok("disabled") => S3ConditionalPut::Disabled,
                    _ => S3ConditionalPut::ETagMatch,
                };
                let store = builder
                    .with_conditional_put(conditional)
                    .build()
                    .map_err(|e| Error::invalid(format!("cannot open S3 root `{url}`: {e}")))?;
                Ok(Root {
                    store: Arc::new(store),
                    base_url: Url::parse(&format!("s3://{bucket}/")).expect("valid S3 URL"),
                    prefix: Path::from(parsed.path().trim_matches('/')),
                    display: url.to_string(),
                })
            }
            other => Err(Error::invalid(format!(
                "unsupported root URL scheme `{other}://` in `{url}` (use file://, memory:// or s3://)"
            ))),
        }
    }

    fn open_local(dir: &std::path::Path, display: &str) -> Result<Root> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(ErrorKind::Storage, format!("cannot create root directory `{}`: {e}", dir.display()))
        })?;
        let dir = dir.canonicalize().map_err(|e| {
            Error::new(ErrorKind::Storage, format!("cannot resolve root directory `{}`: {e}", dir.display()))
        })?;
        let prefix = Path::from_filesystem_path(&dir)
            .map_err(|e| Error::invalid(format!("root directory `{}` is not usable: {e}", dir.display())))?;
        Ok(Root {
            store: Arc::new(LocalFileSystem::new()),
            base_url: Url::parse("file:///").expect("valid file URL"),
            prefix,
            display: display.to_string(),
        })
    }

    /// The URL this root was opened from.
    pub fn url(&self) -> &str {
        &self.display
    }

    /// The folder of a root on the local file system (none for S3 and memory roots).
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        (self.base_url.scheme() == "file").then(|| std::path::PathBuf::from(format!("/{}", self.prefix)))
    }

    /// The unprefixed store and the `scheme://authority/` URL to register it
    /// under (for DataFusion's object store registry).
    pub fn store(&self) -> (Url, Arc<dyn ObjectStore>) {
        (self.base_url.clone(), self.store.clone())
    }

    /// The full URL of `key` (a file or, with a trailing `/`, a folder).
    pub fn url_of(&self, key: &str) -> String {
        let full = self.path(key);
        let mut s = format!("{}{}", self.base_url, full);
        if key.ends_with('/') && !s.ends_with('/') {
            s.push('/');
        }
        s
    }

    fn path(&self, key: &str) -> Path {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(key.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(rest) => rest.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
            None => path.to_string(),
        }
    }

    /// Writes `bytes` at `key`, replacing what was there. Writes are atomic:
    /// readers see the old object or the new one, never a part.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| from_object_store(e, &self.url_of(key)))?;
        Ok(())
    }

    /// Writes `bytes` at `key` unless an object is already there.
    pub async fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.path(key), PutPayload::from_bytes(bytes), opts).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(from_object_store(e, &self.url_of(key))),
        }
    }

    /// Reads the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let what = self.url_of(key);
        let res = self.store.get(&self.path(key)).await.map_err(|e| from_object_store(e, &what))?;
        res.bytes().await.map_err(|e| from_object_store(e, &what))
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(from_object_store(e, &self.url_of(key))),
        }
    }

    /// Deletes `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(from_object_store(e, &self.url_of(key))),
        }
    }

    /// Every object under the folder `prefix` (recursively), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = self.path(prefix);
        let mut out: Vec<ObjectInfo> = self
            .store
            .list(Some(&path))
            .map_ok(|meta| ObjectInfo { key: self.relative(&meta.location), size: meta.size })
            .try_collect()
            .await
            .map_err(|e| from_object_store(e, &self.url_of(prefix)))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every object whose key matches the glob `pattern` (`*` stays within a
    /// folder, `**` crosses folders), sorted by key.
    pub async fn glob(&self, pattern: &str) -> Result<Vec<ObjectInfo>> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::invalid(format!("invalid glob `{pattern}`: {e}")))?
            .compile_matcher();
        // List only below the longest folder that has no glob characters.
        let literal_end = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
        let folder = pattern[..literal_end].rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        let mut objects = self.list(folder).await?;
        objects.retain(|o| glob.is_match(&o.key));
        Ok(objects)
    }
}
