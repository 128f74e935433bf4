//! Gallery snapshots on the object store: the FAISS index, its id map and the
//! manifest. The manifest is written last and names the snapshot version, so
//! a reader never sees a half-written gallery.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use bytes::Bytes;
use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{Root, decode_parquet, encode_parquet, layout};

use crate::gallery::{Gallery, GalleryManifest, IndexFile, chrono_now_ms};
use crate::ids::IdMap;
use crate::vectors::VectorStore;

fn index_key(gallery: &str, version: &str) -> String {
    format!("{}/index/{version}.faiss", layout::gallery_dir(gallery))
}

fn ids_key(gallery: &str, version: &str) -> String {
    format!("{}/index/{version}.ids.parquet", layout::gallery_dir(gallery))
}

fn ids_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("faiss_id", DataType::Int64, false),
        Field::new("template_id", DataType::Utf8, true),
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("hidden", DataType::Boolean, false),
    ]))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupt, format!("gallery snapshot `{what}` is unreadable: {e}"))
}

/// A gallery snapshot taken in memory and on local disk, to be written to
/// the object store ([`SnapshotWrite::write`]) without the gallery: what
/// [`Gallery::prepare_save`] leaves to do, so that a caller holding the
/// gallery behind a lock can release it before the slow part (the uploads).
/// Snapshots of one gallery must be written in the order they were
/// prepared; the caller serialises them.
pub struct SnapshotWrite {
    name: String,
    version: String,
    /// The serialised FAISS index.
    index_file: IndexFile,
    ids: RecordBatch,
    manifest: Bytes,
    /// The snapshot the manifest named before (deleted once the new one is
    /// in place).
    previous: Option<String>,
}

impl Gallery {
    /// Writes the index, its id map and then the manifest under the root,
    /// and removes the snapshot the manifest pointed at before.
    pub async fn save(&mut self, root: &Root) -> Result<()> {
        self.prepare_save(root).await?.write(root).await
    }

    /// The part of [`Gallery::save`] that reads the gallery: serialises the
    /// index to a local file, takes the id map, writes the re-ranking
    /// vectors' changed chunks (they are read from the gallery's mapped
    /// file) and names the new snapshot in the manifest. The rest is
    /// [`SnapshotWrite::write`].
    pub async fn prepare_save(&mut self, root: &Root) -> Result<SnapshotWrite> {
        let name = self.manifest.name.clone();
        let version = format!("{:013}-{:08x}", chrono_now_ms(), rand_u32());
        let index_file = IndexFile::write(&self.index)?;

        let mut ids: Vec<i64> = self.ids.live_ids().chain(self.hidden.iter().copied()).collect();
        ids.sort_unstable();
        let names = |id: &i64| self.ids.get(*id);
        let batch = RecordBatch::try_new(
            ids_schema(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(ids.iter().map(|i| names(i).map(|(template, _)| template)).collect::<StringArray>()),
                Arc::new(ids.iter().map(|i| names(i).map(|(_, subject)| subject)).collect::<StringArray>()),
                Arc::new(ids.iter().map(|i| Some(self.hidden.contains(i))).collect::<BooleanArray>()),
            ],
        )
        .map_err(|e| Error::internal(format!("cannot build id map: {e}")))?;

        if let (Some(store), Some(rows)) = (&mut self.vectors, self.manifest.vector_chunk_rows) {
            if self.manifest.snapshot.is_none() {
                // A new gallery under a name used before: no older chunk may
                // outlive it.
                VectorStore::delete_beyond(root, &name, 0, rows).await?;
            }
            store.save(root, &name).await?;
        }
        self.manifest.vector_rows = self.vectors.as_ref().map(|_| self.ids.next_id() as usize);
        let previous = self.manifest.snapshot.replace(version.clone());
        let manifest = Bytes::from(serde_json::to_vec_pretty(&self.manifest).expect("manifest serializes"));
        Ok(SnapshotWrite { name, version, index_file, ids: batch, manifest, previous })
    }
}

impl SnapshotWrite {
    /// Writes the index and its id map, then the manifest that names them,
    /// and deletes the snapshot named before.
    pub async fn write(self, root: &Root) -> Result<()> {
        let SnapshotWrite { name, version, index_file, ids, manifest, previous } = self;
        let index = std::fs::read(index_file.path())
            .map_err(|e| Error::internal(format!("cannot read FAISS snapshot: {e}")))?;
        drop(index_file);
        root.put(&index_key(&name, &version), Bytes::from(index)).await?;
        root.put(&ids_key(&name, &version), encode_parquet(ids_schema(), &[ids])?).await?;
        root.put(&layout::gallery_manifest(&name), manifest).await?;
        if let Some(old) = previous {
            root.delete(&index_key(&name, &old)).await?;
            root.delete(&ids_key(&name, &old)).await?;
        }
        Ok(())
    }
}

/// How many times a load follows the manifest to a newer snapshot when the
/// one it read was replaced (and deleted) by a commit meanwhile.
const SNAPSHOT_RETRIES: usize = 5;

impl Gallery {
    /// Loads gallery `name` from the root. A commit that replaces the
    /// snapshot while it is read (the old files are deleted once the new
    /// manifest is written) makes the load read the new manifest and start
    /// again.
    pub async fn load(root: &Root, name: &str) -> Result<Gallery> {
        layout::check_name("gallery", name)?;
        let mut manifest = read_manifest(root, name).await?;
        for _ in 0..SNAPSHOT_RETRIES {
            match Gallery::load_snapshot(root, name, manifest.clone()).await {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let now = read_manifest(root, name).await?;
                    if now.snapshot == manifest.snapshot {
                        return Err(e);
                    }
                    tracing::debug!(gallery = name, "the snapshot was replaced while loading; loading the new one");
                    manifest = now;
                }
                loaded => return loaded,
            }
        }
        Gallery::load_snapshot(root, name, manifest).await
    }

    /// Loads the snapshot `manifest` names.
    async fn load_snapshot(root: &Root, name: &str, manifest: GalleryManifest) -> Result<Gallery> {
        let Some(version) = manifest.snapshot.clone() else {
            return Err(corrupt(name, "manifest names no snapshot"));
        };
        let index_bytes = root.get(&index_key(name, &version)).await?;
        let index = {
            let file = IndexFile::new()?;
            std::fs::write(file.path(), &index_bytes)
                .map_err(|e| Error::internal(format!("cannot stage FAISS snapshot: {e}")))?;
            file.read().map_err(|e| corrupt(&index_key(name, &version), e))?
        };
        let ids_name = ids_key(name, &version);
        let (_, batches) = decode_parquet(root.get(&ids_name).await?, &root.url_of(&ids_name))?;
        let mut ids = IdMap::new()?;
        let mut hidden = HashSet::new();
        for b in &batches {
            if b.num_columns() != 4 {
                return Err(corrupt(&ids_name, "unexpected columns"));
            }
            let fid = b.column(0).as_primitive::<Int64Type>();
            let tid = b.column(1).as_string::<i32>();
            let sid = b.column(2).as_string::<i32>();
            let hid = b.column(3).as_boolean();
            for r in 0..b.num_rows() {
                // Snapshots list ids ascending; the ids removed before the
                // snapshot are the gaps.
                let id = fid.value(r);
                if id < ids.next_id() {
                    return Err(corrupt(&ids_name, format!("FAISS id {id} is out of order or repeated")));
                }
                while ids.next_id() < id {
                    ids.push_gap();
                }
                if !hid.value(r) && tid.is_valid(r) && sid.is_valid(r) {
                    ids.push(tid.value(r), sid.value(r)).map_err(|e| corrupt(&ids_name, e))?;
                } else {
                    ids.push_gap();
                    if hid.value(r) {
                        hidden.insert(id);
                    }
                }
            }
        }
        let vectors = match (manifest.vector_chunk_rows, manifest.vector_rows) {
            (Some(chunk_rows), Some(rows)) => {
                Some(VectorStore::load(root, name, manifest.dim, rows, chunk_rows).await?)
            }
            (Some(_), None) => return Err(corrupt(name, "manifest keeps vectors but does not count them")),
            _ => None,
        };
        let mut gallery = Gallery { manifest, index, ids, hidden, vectors };
        gallery.apply_search_params()?;
        Ok(gallery)
    }
}

async fn read_manifest(root: &Root, name: &str) -> Result<GalleryManifest> {
    let key = layout::gallery_manifest(name);
    let bytes = root.get(&key).await.map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::not_found(format!("gallery `{name}` does not exist under `{}`", root.url())),
        _ => e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))
}

/// Every gallery's manifest under the root, by name.
pub async fn list_galleries(root: &Root) -> Result<Vec<GalleryManifest>> {
    let mut out = Vec::new();
    for obj in root.glob(&format!("{}/*/manifest.json", layout::GALLERIES)).await? {
        let bytes = root.get(&obj.key).await?;
        out.push(serde_json::from_slice(&bytes).map_err(|e| corrupt(&obj.key, e))?);
    }
    out.sort_by(|a: &GalleryManifest, b| a.name.cmp(&b.name));
    Ok(out)
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}
