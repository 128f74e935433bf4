use std::collections::HashSet;

use faiss::index::IndexImpl;
use faiss::index::autotune::ParameterSpace;
use faiss::selector::IdSelector;
use faiss::{Idx, Index, MetricType, index_factory};
use osprey_core::fusion::ScoreCalibration;
use osprey_core::{Error, ErrorKind, OpenSetDecision, Result, decide, operating_threshold};

use crate::choice::{auto_factory, default_nprobe, default_rerank, ivf_lists};
use crate::ids::{IdMap, MAX_ID_BYTES};
use crate::vectors::{VectorStore, chunk_rows_for};

unsafe extern "C" {
    // libgomp (linked by FAISS). Called from a thread OpenMP did not start,
    // these read and set that thread's own count (the initial thread's is
    // the process default).
    fn omp_get_max_threads() -> std::ffi::c_int;
    fn omp_set_num_threads(n: std::ffi::c_int);
}

/// Sets the calling thread's OpenMP thread count for the FAISS calls made on
/// it (threads started elsewhere keep theirs), and puts the previous count
/// back when dropped. See [`scoped_faiss_threads`].
#[must_use = "the count is restored when the guard drops"]
pub struct FaissThreadsGuard(std::ffi::c_int);

/// Runs this thread's FAISS calls on `n` OpenMP threads until the guard drops.
pub fn scoped_faiss_threads(n: usize) -> FaissThreadsGuard {
    // SAFETY: plain getters and setters of libgomp's per-thread settings.
    let before = unsafe { omp_get_max_threads() };
    unsafe { omp_set_num_threads(n.clamp(1, 1024) as std::ffi::c_int) };
    FaissThreadsGuard(before)
}

impl Drop for FaissThreadsGuard {
    fn drop(&mut self) {
        // SAFETY: as in `scoped_faiss_threads`.
        unsafe { omp_set_num_threads(self.0) };
    }
}

/// Threads for the work Osprey does around FAISS (re-ranking); 0 = every core.
static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets how many threads FAISS (OpenMP) uses for training, adding and
/// batched search, and Osprey's re-ranking beside it. Call once at start-up.
pub fn set_num_threads(n: usize) {
    THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain setter of libgomp's global thread count, linked by faiss-sys.
    unsafe { omp_set_num_threads(n.max(1) as std::ffi::c_int) }
}

fn num_threads() -> usize {
    match THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}

/// The gallery holding `gallery`'s templates of `modality`: the gallery
/// itself for faces, `<gallery>.<modality>` (e.g. `staff.body`) for the
/// others. A subject enrolled with several modalities has templates in each;
/// each is its own index of one model.
pub fn modality_gallery(gallery: &str, modality: osprey_core::Modality) -> String {
    match modality {
        osprey_core::Modality::Face => gallery.to_string(),
        m => format!("{gallery}.{m}"),
    }
}

/// Nearest templates searched for a template's mated (same-subject) score.
pub const MATED_SEARCH_DEPTH: usize = 32;

/// The modalities whose index may sit beside a face gallery.
pub const COMPANION_MODALITIES: [osprey_core::Modality; 2] = [osprey_core::Modality::Body, osprey_core::Modality::Gait];

/// What a gallery is, as stored in `galleries/<name>/manifest.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GalleryManifest {
    /// Gallery name (a single path segment).
    pub name: String,
    /// Embedding model id of every template in it.
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    /// FAISS index factory string.
    pub index_factory: String,
    /// IVF lists probed per search (IVF indexes only).
    pub nprobe: Option<usize>,
    /// Candidate templates re-ranked by exact cosine similarity per search
    /// (compressed indexes; absent: the index's scores are final). The
    /// exact vectors live in `vectors/` beside the index and, once loaded,
    /// in a memory-mapped file on local disk, not in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<usize>,
    /// Rows per stored chunk of `vectors/` (set when the gallery re-ranks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_chunk_rows: Option<usize>,
    /// Rows stored in `vectors/` (the FAISS ids handed out) at the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rows: Option<usize>,
    /// Operating threshold on cosine similarity.
    pub threshold: Option<f32>,
    /// The FPIR the threshold was calibrated for.
    pub threshold_fpir: Option<f64>,
    /// Raw score → log-likelihood ratio, learnt with the threshold (for
    /// fusing this index's scores with other modalities';
    /// [`osprey_core::fusion`]). Absent in galleries calibrated before it
    /// existed and in uncalibrated ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_calibration: Option<ScoreCalibration>,
    /// Distinct enrolled subjects.
    pub num_subjects: usize,
    /// Enrolled templates.
    pub num_templates: usize,
    /// Snapshot version the manifest points at.
    pub snapshot: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// One subject in a search answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubjectCandidate {
    /// Enrolled subject.
    pub subject_id: String,
    /// Cosine similarity of the subject's best template.
    pub score: f32,
    /// That best template.
    pub template_id: String,
}

/// How a subject's templates were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed from the index in place.
    Removed(usize),
    /// The index type cannot remove (HNSW): the templates are hidden from
    /// every search now and [`Gallery::rebuild`] drops them for good.
    Hidden(usize),
}

/// An open-set gallery over a FAISS index.
pub struct Gallery {
    pub(crate) manifest: GalleryManifest,
    pub(crate) index: IndexImpl,
    /// FAISS id → template and subject; ids are assigned here and never
    /// reused.
    pub(crate) ids: IdMap,
    /// Removed ids the index still holds (index types without remove).
    pub(crate) hidden: HashSet<i64>,
    /// Exact vectors by FAISS id, for re-ranking (`manifest.rerank`).
    pub(crate) vectors: Option<VectorStore>,
}

impl std::fmt::Debug for Gallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gallery").field("manifest", &self.manifest).finish_non_exhaustive()
    }
}

/// The message of the calling thread's last FAISS C API error.
fn faiss_last_error() -> String {
    // SAFETY: FAISS returns null or a NUL-terminated string that stays valid
    // until this thread's next FAISS call; it is copied at once.
    let ptr = unsafe { faiss_sys::faiss_get_last_error() };
    if ptr.is_null() {
        return "unknown error".into();
    }
    unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

fn faiss_err(what: &str) -> impl Fn(faiss::error::Error) -> Error + '_ {
    move |e| Error::internal(format!("FAISS {what} failed: {e}"))
}

/// A serialised FAISS index in a new temporary folder (deleted with this
/// value): FAISS reads and writes indexes only by file name.
pub(crate) struct IndexFile {
    _dir: tempfile::TempDir,
    path: String,
}

impl IndexFile {
    /// An empty folder to write an index file into ([`IndexFile::path`]).
    pub(crate) fn new() -> Result<IndexFile> {
        let dir = tempfile::tempdir().map_err(|e| Error::internal(format!("cannot create temp dir: {e}")))?;
        let path = dir
            .path()
            .join("index.faiss")
            .to_str()
            .ok_or_else(|| Error::internal("temp path is not UTF-8"))?
            .to_string();
        Ok(IndexFile { _dir: dir, path })
    }

    /// `index` serialised.
    pub(crate) fn write(index: &IndexImpl) -> Result<IndexFile> {
        let file = IndexFile::new()?;
        faiss::write_index(index, &file.path).map_err(faiss_err("write"))?;
        Ok(file)
    }

    /// Where the index file is (or goes).
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The index the file holds.
    pub(crate) fn read(&self) -> std::result::Result<IndexImpl, faiss::error::Error> {
        faiss::read_index(&self.path)
    }
}

/// IVF indexes keep the ids they are given; the others need FAISS's id map
/// (`IDMap2`, which can also reconstruct vectors by id for rebuilds).
fn native_ids(factory: &str) -> bool {
    factory.contains("IVF")
}

pub(crate) fn new_index(factory: &str, dim: usize) -> Result<IndexImpl> {
    let description = if native_ids(factory) || factory.starts_with("IDMap") {
        factory.to_string()
    } else {
        format!("IDMap2,{factory}")
    };
    index_factory(dim as u32, &description, MetricType::InnerProduct)
        .map_err(|e| Error::invalid(format!("invalid index factory `{factory}` for {dim}-d vectors: {e}")))
}

impl Gallery {
    /// Builds a gallery from templates: `vectors` holds `ids.len()` unit-norm
    /// rows of `dim` floats, `ids` the (template, subject) of each row.
    /// `factory` picks the FAISS index; `None` chooses by size. Compressed
    /// indexes re-rank [`crate::DEFAULT_RERANK`] candidates
    /// ([`Gallery::build_reranked`] chooses).
    pub fn build(
        name: &str,
        model: &str,
        dim: usize,
        factory: Option<&str>,
        ids: Vec<(String, String)>,
        vectors: &[f32],
    ) -> Result<Gallery> {
        Gallery::build_reranked(name, model, dim, factory, None, ids, vectors)
    }

    /// [`Gallery::build`] re-ranking `rerank` candidates per search by
    /// exact score (`Some(0)`: never; `None`: the index's default,
    /// [`crate::default_rerank`]).
    pub fn build_reranked(
        name: &str,
        model: &str,
        dim: usize,
        factory: Option<&str>,
        rerank: Option<usize>,
        ids: Vec<(String, String)>,
        vectors: &[f32],
    ) -> Result<Gallery> {
        if dim == 0 {
            return Err(Error::invalid("embedding width must be positive"));
        }
        let factory = factory.map(str::to_string).unwrap_or_else(|| auto_factory(ids.len(), dim));
        let index = new_index(&factory, dim)?;
        let now = chrono_now_ms();
        let rerank = rerank.or_else(|| default_rerank(&factory)).filter(|r| *r > 0);
        let vector_chunk_rows = rerank.map(|_| chunk_rows_for(dim));
        let manifest = GalleryManifest {
            name: name.to_string(),
            model: model.to_string(),
            dim,
            nprobe: default_nprobe(&factory),
            rerank,
            vector_chunk_rows,
            vector_rows: None,
            index_factory: factory,
            threshold: None,
            threshold_fpir: None,
            score_calibration: None,
            num_subjects: 0,
            num_templates: 0,
            snapshot: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let mut gallery = Gallery {
            manifest,
            index,
            ids: IdMap::new()?,
            hidden: HashSet::new(),
            vectors: vector_chunk_rows.map(|rows| VectorStore::new(dim, rows)).transpose()?,
        };
        gallery.apply_search_params()?;
        if !ids.is_empty() {
            gallery.add(ids, vectors)?;
            if ivf_lists(&gallery.manifest.index_factory).is_some() {
                gallery.compact_lists()?;
            }
        }
        Ok(gallery)
    }

    /// Reads the index back from its own serialisation. FAISS grows each
    /// IVF list geometrically as templates are added, which leaves up to
    /// as much spare capacity as the list holds (20–25 bytes per template
    /// for IVF4096,PQ32 at a million), and sizes every list exactly when it
    /// reads one; a bulk build does this once at its end, as loading a
    /// snapshot does.
    fn compact_lists(&mut self) -> Result<()> {
        let file = IndexFile::write(&self.index)?;
        // The old index goes before the copy is read, so the two are never
        // both resident.
        self.index = new_index("Flat", self.manifest.dim)?;
        self.index = file.read().map_err(faiss_err("read"))?;
        self.apply_search_params()
    }

    /// The manifest (counts, index type, operating point).
    pub fn manifest(&self) -> &GalleryManifest {
        &self.manifest
    }

    /// Number of live templates.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the gallery has no live templates.
    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
    }

    /// Heap bytes the id map (FAISS id → template and subject) uses,
    /// beside [`Gallery::index_bytes`]; the ids themselves are in mapped
    /// files ([`Gallery::id_file_bytes`]).
    pub fn id_map_bytes(&self) -> usize {
        self.ids.heap_bytes()
    }

    /// Bytes of template and subject ids in memory-mapped local files
    /// (page cache, not the heap).
    pub fn id_file_bytes(&self) -> usize {
        self.ids.file_bytes()
    }

    /// Ids of the live templates.
    pub fn template_ids(&self) -> impl Iterator<Item = &str> {
        self.ids.live_ids().filter_map(|id| self.ids.get(id)).map(|(template, _)| template)
    }

    /// Ids of the enrolled subjects.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.ids.subjects()
    }

    /// Whether `subject` has templates here.
    pub fn has_subject(&self, subject: &str) -> bool {
        self.ids.contains_subject(subject)
    }

    /// Sets IVF `nprobe` (recall against speed).
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<()> {
        if ivf_lists(&self.manifest.index_factory).is_none() {
            return Err(Error::invalid(format!(
                "index `{}` has no nprobe (not an IVF index)",
                self.manifest.index_factory
            )));
        }
        self.manifest.nprobe = Some(nprobe.max(1));
        self.apply_search_params()
    }

    /// Sets how many candidates a search re-ranks by exact score (0: none,
    /// the index's own scores are final). Only a gallery created with
    /// re-ranking keeps the exact vectors it needs.
    pub fn set_rerank(&mut self, depth: usize) -> Result<()> {
        if depth > 0 && self.vectors.is_none() {
            return Err(Error::invalid(format!(
                "gallery `{}` keeps no exact vectors to re-rank with; choose re-ranking when creating it",
                self.manifest.name
            )));
        }
        self.manifest.rerank = (depth > 0).then_some(depth);
        Ok(())
    }

    pub(crate) fn apply_search_params(&mut self) -> Result<()> {
        if let Some(nprobe) = self.manifest.nprobe {
            let ps = ParameterSpace::new().map_err(faiss_err("parameter space"))?;
            ps.set_index_parameter(&self.index, "nprobe", nprobe as f64).map_err(faiss_err("setting nprobe"))?;
        }
        Ok(())
    }

    /// Trains the index on `vectors` if it needs training (IVF, PQ) and is
    /// not trained yet (that batch must then hold at least one vector per
    /// IVF list). [`Gallery::add`] calls it; callers may call it first to
    /// time training apart from adding.
    pub fn train_if_needed(&mut self, vectors: &[f32]) -> Result<()> {
        if self.index.is_trained() {
            return Ok(());
        }
        let rows = vectors.len() / self.manifest.dim.max(1);
        if let Some(nlist) = ivf_lists(&self.manifest.index_factory)
            && rows < nlist
        {
            return Err(Error::invalid(format!(
                "index `{}` needs at least {nlist} templates to train, got {rows} (use `Flat` or fewer lists)",
                self.manifest.index_factory
            )));
        }
        self.index.train(vectors).map_err(faiss_err("training"))
    }

    /// Adds templates. The index is trained on the first batch if it needs
    /// training (IVF, PQ); that batch must then hold enough vectors.
    pub fn add(&mut self, ids: Vec<(String, String)>, vectors: &[f32]) -> Result<()> {
        let dim = self.manifest.dim;
        if vectors.len() != ids.len() * dim {
            return Err(Error::invalid(format!(
                "{} vectors of width {dim} expected, got {} floats",
                ids.len(),
                vectors.len()
            )));
        }
        for (i, row) in vectors.chunks_exact(dim).enumerate() {
            osprey_core::validate_embedding(row, dim, &format!("template `{}`", ids[i].0))?;
        }
        // Checked before FAISS is touched, so that a refused batch adds nothing.
        if let Some((template, subject)) = ids.iter().find(|(t, s)| t.len().max(s.len()) > MAX_ID_BYTES) {
            let which = if template.len() > MAX_ID_BYTES { "template" } else { "subject" };
            return Err(Error::invalid(format!(
                "template `{}…`: its {which} id is longer than {MAX_ID_BYTES} bytes ({} bytes)",
                template.chars().take(40).collect::<String>(),
                template.len().max(subject.len())
            )));
        }
        self.train_if_needed(vectors)?;
        let first = self.ids.next_id();
        let xids: Vec<Idx> = (0..ids.len() as i64).map(|i| Idx::new((first + i) as u64)).collect();
        self.index.add_with_ids(vectors, &xids).map_err(faiss_err("add"))?;
        if let Some(store) = &mut self.vectors {
            store.put(first as usize, vectors)?;
        }
        for (template_id, subject_id) in &ids {
            self.ids.push(template_id, subject_id)?;
        }
        self.refresh_counts();
        Ok(())
    }

    fn refresh_counts(&mut self) {
        self.manifest.num_templates = self.ids.len();
        self.manifest.num_subjects = self.ids.num_subjects();
        self.manifest.updated_at_ms = chrono_now_ms();
    }

    /// Removes every template of `subject_id` (right to erasure).
    pub fn remove_subject(&mut self, subject_id: &str) -> Result<Removal> {
        let Some(ids) = self.ids.remove_subject(subject_id)? else {
            return Err(Error::not_found(format!(
                "subject `{subject_id}` is not enrolled in gallery `{}`",
                self.manifest.name
            )));
        };
        let idxs: Vec<Idx> = ids.iter().map(|i| Idx::new(*i as u64)).collect();
        let selector = IdSelector::batch(&idxs).map_err(faiss_err("id selector"))?;
        let removal = match self.index.remove_ids(&selector) {
            Ok(_) => Removal::Removed(ids.len()),
            Err(_) => {
                self.hidden.extend(ids.iter().copied());
                Removal::Hidden(ids.len())
            }
        };
        if let Some(store) = &mut self.vectors {
            store.zero(&ids)?;
        }
        self.refresh_counts();
        Ok(removal)
    }

    /// Whether removed templates are still inside the index (see [`Removal::Hidden`]).
    pub fn needs_rebuild(&self) -> bool {
        !self.hidden.is_empty()
    }

    /// Rebuilds the index from its own live vectors, dropping hidden ones.
    pub fn rebuild(&mut self) -> Result<()> {
        let dim = self.manifest.dim;
        let live: Vec<i64> = self.ids.live_ids().collect();
        let mut vectors = vec![0f32; live.len() * dim];
        for (i, id) in live.iter().enumerate() {
            self.vector_into(*id, &mut vectors[i * dim..(i + 1) * dim])?;
        }
        let mut index = new_index(&self.manifest.index_factory, dim)?;
        if !index.is_trained() && !live.is_empty() {
            index.train(&vectors).map_err(faiss_err("training"))?;
        }
        let xids: Vec<Idx> = live.iter().map(|i| Idx::new(*i as u64)).collect();
        index.add_with_ids(&vectors, &xids).map_err(faiss_err("add"))?;
        self.index = index;
        self.hidden.clear();
        self.apply_search_params()
    }

    /// Top-`k` subjects for each query row (`queries.len() / dim` of them),
    /// a subject scoring the maximum over its templates, best first.
    /// Concurrent searches of one gallery are safe (`&self`; see
    /// [`Gallery::index_search`]).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<SubjectCandidate>>> {
        let dim = self.manifest.dim;
        if queries.is_empty() || queries.len() % dim != 0 {
            return Err(Error::invalid(format!(
                "query has {} values; expected a non-empty multiple of the gallery's width {dim}",
                queries.len()
            )));
        }
        if k == 0 {
            return Err(Error::invalid("k must be at least 1"));
        }
        let nq = queries.len() / dim;
        let total = self.index.ntotal() as usize;
        if total == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let want = k.min(self.ids.num_subjects());
        // Fetch more templates than subjects wanted: a subject may own several
        // of the nearest templates. Grow until every query has enough subjects.
        let mut fetch = (k * 4 + self.hidden.len()).min(total);
        let mut out = vec![Vec::new(); nq];
        // Queries still short of `want` subjects; only these search again.
        let mut pending: Vec<usize> = (0..nq).collect();
        // The first pass searches `queries` as given; later ones only the short.
        let mut batch = std::borrow::Cow::Borrowed(queries);
        loop {
            let (distances, ids) = self.nearest(&batch, fetch)?;
            let mut short = Vec::new();
            for (i, &q) in pending.iter().enumerate() {
                let labels = &ids[i * fetch..(i + 1) * fetch];
                let scores = &distances[i * fetch..(i + 1) * fetch];
                let mut seen = HashSet::new();
                let mut cands = Vec::with_capacity(want);
                for (&id, score) in labels.iter().zip(scores) {
                    let Some(subject) = self.ids.subject_number(id) else { continue };
                    if seen.insert(subject) {
                        let (template_id, subject_id) = self.ids.get(id).expect("a live id has names");
                        cands.push(SubjectCandidate {
                            subject_id: subject_id.to_string(),
                            score: *score,
                            template_id: template_id.to_string(),
                        });
                        if cands.len() == want {
                            break;
                        }
                    }
                }
                if cands.len() < want {
                    short.push(q);
                }
                out[q] = cands;
            }
            if short.is_empty() || fetch >= total {
                return Ok(out);
            }
            batch =
                short.iter().flat_map(|&q| queries[q * dim..(q + 1) * dim].iter().copied()).collect::<Vec<_>>().into();
            pending = short;
            fetch = (fetch * 4).min(total);
        }
    }

    /// The operating threshold: the calibrated one, else `default`.
    pub fn threshold_or(&self, default: f32) -> f32 {
        self.manifest.threshold.unwrap_or(default)
    }

    /// The open-set decision for one query's candidates.
    pub fn decide(candidates: &[SubjectCandidate], threshold: f32) -> OpenSetDecision {
        decide(candidates.first().map(|c| c.score), threshold)
    }

    /// Non-mated scores from the gallery itself: each sampled template is
    /// searched and its best score against *other* subjects kept. These are
    /// the scores an unenrolled look-alike would get. Needs an index that can
    /// give its vectors back exactly (Flat, HNSW, IVF with flat codes, or
    /// one that keeps them for re-ranking); otherwise use
    /// [`Gallery::nonmated_scores_of`] with the templates' embeddings.
    pub fn nonmated_scores(&mut self, max_probes: usize) -> Result<Vec<f32>> {
        let (vectors, subjects, _) = self.sample_enrolled(max_probes)?;
        self.nonmated_scores_of(&vectors, &subjects)
    }

    /// An evenly spaced sample of at most `max_probes` enrolled templates,
    /// reconstructed from the index: vectors, subjects, template ids.
    fn sample_enrolled(&mut self, max_probes: usize) -> Result<(Vec<f32>, Vec<String>, Vec<String>)> {
        self.with_exact_rows(|g| g.sample_rows(max_probes))
    }

    fn sample_rows(&self, max_probes: usize) -> Result<(Vec<f32>, Vec<String>, Vec<String>)> {
        let dim = self.manifest.dim;
        let ids: Vec<i64> = self.ids.live_ids().collect();
        let probes: Vec<i64> = evenly_spaced(ids.len(), max_probes).map(|i| ids[i]).collect();
        let mut vectors = vec![0f32; probes.len() * dim];
        for (i, id) in probes.iter().enumerate() {
            self.vector_into(*id, &mut vectors[i * dim..(i + 1) * dim])
                .map_err(|e| e.context("reading enrolled templates for calibration"))?;
        }
        let names = |id: &i64| self.ids.get(*id).expect("a live id has names");
        let subjects = probes.iter().map(|id| names(id).1.to_string()).collect();
        let templates = probes.iter().map(|id| names(id).0.to_string()).collect();
        Ok((vectors, subjects, templates))
    }

    /// One enrolled template of each of `subjects` (its first),
    /// reconstructed from the index; `None` for a subject with none here.
    /// An error for indexes that cannot give their vectors back exactly
    /// (PQ without re-ranking, IVF with flat codes once templates were
    /// removed from it).
    pub fn subject_vectors(&mut self, subjects: &[&str]) -> Result<Vec<Option<Vec<f32>>>> {
        self.with_exact_rows(|g| {
            g.ids
                .first_ids(subjects)
                .into_iter()
                .map(|id| {
                    id.map(|id| {
                        let mut v = vec![0f32; g.manifest.dim];
                        g.vector_into(id, &mut v).map(|()| v)
                    })
                    .transpose()
                })
                .collect()
        })
    }

    /// Runs `f` where [`Gallery::vector_into`] can read every template
    /// exactly. An IVF index with flat codes holds the vectors themselves
    /// in its lists but finds them by id only through a direct map (8 bytes
    /// per template), built here for `f` and dropped after. FAISS's C API
    /// builds only the array kind, which needs the ids dense (`0..ntotal`):
    /// a gallery that has had templates removed from its index keeps the
    /// slower ways (see [`crate::calibrate`]). Other indexes are as they are.
    fn with_exact_rows<T>(&mut self, f: impl FnOnce(&Gallery) -> Result<T>) -> Result<T> {
        let flat_lists = ivf_lists(&self.manifest.index_factory).is_some()
            && self.manifest.index_factory.rsplit(',').next().map(str::trim) == Some("Flat");
        let dense = self.index.ntotal() == self.ids.next_id() as u64;
        if self.vectors.is_some() || !flat_lists || !dense {
            return f(self);
        }
        // SAFETY: the pointer is this gallery's live index, which `&mut self`
        // keeps from being used elsewhere while the map is changed; the cast
        // is FAISS's own checked one (null if not an IVF index).
        let ivf = unsafe { faiss_sys::faiss_IndexIVF_cast(self.index.inner_ptr()) };
        if ivf.is_null() {
            return f(self);
        }
        // SAFETY: `ivf` is a live IVF index; FAISS catches its exceptions
        // and returns non-zero.
        let set = |on: bool| unsafe { faiss_sys::faiss_IndexIVF_make_direct_map(ivf, i32::from(on)) } == 0;
        // Without the map `f` meets the usual "cannot reconstruct" error.
        // A failed build can leave a partial map behind: it is always dropped.
        set(true);
        let out = f(self);
        if !set(false) {
            return Err(Error::internal("FAISS could not drop the direct map built to read templates"));
        }
        out
    }

    /// The index's raw score → LLR mapping for a search at `threshold`: the
    /// calibration learnt with its threshold, else one anchored at `threshold`.
    pub fn score_calibration_at(&self, threshold: f32) -> ScoreCalibration {
        self.manifest.score_calibration.clone().unwrap_or_else(|| ScoreCalibration::anchored(threshold, 0, 0))
    }

    /// Mated scores of enrolled templates given by value (`vectors` rows of
    /// templates `templates` of subjects `subjects`): each template's best
    /// score against another template of its own subject, among its nearest
    /// [`MATED_SEARCH_DEPTH`] templates (a template whose subject has no
    /// other template there gives none).
    pub fn mated_scores_of(&mut self, vectors: &[f32], subjects: &[String], templates: &[String]) -> Result<Vec<f32>> {
        let total = self.index.ntotal() as usize;
        if total < 2 || subjects.is_empty() {
            return Ok(Vec::new());
        }
        if vectors.len() != subjects.len() * self.manifest.dim || templates.len() != subjects.len() {
            return Err(Error::invalid("calibration needs one subject and template id per vector"));
        }
        let k = MATED_SEARCH_DEPTH.min(total);
        let (scores, labels) = self.search_templates(vectors, k)?;
        Ok((0..subjects.len())
            .filter_map(|q| {
                (q * k..(q + 1) * k).find_map(|i| {
                    let (template, subject) = self.ids.get(labels[i])?;
                    (subject == subjects[q] && template != templates[q]).then_some(scores[i])
                })
            })
            .collect())
    }

    /// Fits and stores [`GalleryManifest::score_calibration`] from the mated
    /// scores of the sampled templates and their `nonmated` scores, after
    /// the threshold was set (the fallback is anchored there).
    pub fn calibrate_scores(
        &mut self,
        vectors: &[f32],
        subjects: &[String],
        templates: &[String],
        nonmated: &[f32],
    ) -> Result<()> {
        let mated = self.mated_scores_of(vectors, subjects, templates)?;
        self.manifest.score_calibration = ScoreCalibration::fit(&mated, nonmated, self.manifest.threshold);
        Ok(())
    }

    /// Non-mated scores of enrolled templates given by value: `vectors` rows
    /// of subjects `subjects`, each searched for its best *other* subject.
    pub fn nonmated_scores_of(&mut self, vectors: &[f32], subjects: &[String]) -> Result<Vec<f32>> {
        if self.ids.num_subjects() < 2 {
            return Err(Error::invalid(format!(
                "gallery `{}` needs at least 2 subjects to calibrate a threshold, it has {}",
                self.manifest.name,
                self.ids.num_subjects()
            )));
        }
        if subjects.is_empty() || vectors.len() != subjects.len() * self.manifest.dim {
            return Err(Error::invalid("calibration needs one subject per vector"));
        }
        let results = self.search(vectors, 2)?;
        Ok(subjects
            .iter()
            .zip(results)
            .filter_map(|(own, cands)| cands.into_iter().find(|c| &c.subject_id != own).map(|c| c.score))
            .collect())
    }

    /// Calibrates and stores the threshold for `target_fpir` from the
    /// gallery's own non-mated scores (see [`Gallery::nonmated_scores`]).
    /// Also fits the score calibration ([`Gallery::calibrate_scores`]).
    pub fn calibrate(&mut self, target_fpir: f64, max_probes: usize) -> Result<f32> {
        let (vectors, subjects, templates) = self.sample_enrolled(max_probes)?;
        let scores = self.nonmated_scores_of(&vectors, &subjects)?;
        let t = self.set_calibrated(&scores, target_fpir)?;
        self.calibrate_scores(&vectors, &subjects, &templates, &scores)?;
        Ok(t)
    }

    /// Stores the threshold that gives `target_fpir` on non-mated `scores`.
    /// With too few scores to place the FPIR quantile, the model's own
    /// operating threshold (if it has one) is the floor.
    pub fn set_calibrated(&mut self, scores: &[f32], target_fpir: f64) -> Result<f32> {
        let (threshold, floored) = operating_threshold(&self.manifest.model, scores, target_fpir)
            .ok_or_else(|| Error::invalid("no non-mated scores to calibrate from"))?;
        if floored {
            tracing::warn!(
                model = %self.manifest.model,
                scores = scores.len(),
                "too few non-mated scores for FPIR {target_fpir}; using the model's operating threshold {threshold}"
            );
        }
        self.manifest.threshold = Some(threshold);
        self.manifest.threshold_fpir = Some(target_fpir);
        Ok(threshold)
    }

    /// Sets the operating threshold directly (e.g. a model's known one).
    pub fn set_threshold(&mut self, threshold: f32, fpir: Option<f64>) {
        self.manifest.threshold = Some(threshold);
        self.manifest.threshold_fpir = fpir;
    }
}

/// Inner product of two rows of equal width, eight lanes at a time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

pub(crate) fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Gallery {
    /// Raw template-level search: for each query the `k` nearest FAISS ids
    /// and their inner products, `-1` where fewer exist. No subject grouping;
    /// this is what benchmarks compare with FAISS itself. Re-ranked like
    /// [`Gallery::search`] when the gallery re-ranks.
    pub fn search_templates(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        self.nearest(queries, k)
    }

    /// The `k` nearest FAISS ids of each query with their scores, `-1` (and
    /// −∞) where fewer exist. A re-ranking gallery asks the index for its
    /// `rerank` best (or `k`, if more) by approximate score, scores those
    /// exactly against the stored vectors and keeps the best `k`.
    fn nearest(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        let dim = self.manifest.dim;
        let nq = queries.len() / dim;
        let total = self.index.ntotal() as usize;
        let (Some(depth), Some(store)) = (self.manifest.rerank, self.vectors.as_ref()) else {
            return self.index_search(queries, k);
        };
        let depth = depth.max(k).min(total.max(1));
        let (_, labels) = self.index_search(queries, depth)?;
        let mut scores = vec![f32::NEG_INFINITY; nq * k];
        let mut ids = vec![-1i64; nq * k];
        let rerank_query = |q: usize, scores: &mut [f32], ids: &mut [i64]| {
            let query = &queries[q * dim..(q + 1) * dim];
            let mut exact: Vec<(f32, i64)> = labels[q * depth..(q + 1) * depth]
                .iter()
                .filter(|&&id| id >= 0)
                .filter_map(|&id| Some((dot(query, store.row(id)?), id)))
                .collect();
            exact.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (i, (s, id)) in exact.into_iter().take(k).enumerate() {
                scores[i] = s;
                ids[i] = id;
            }
        };
        // Queries in parallel, a contiguous block per thread.
        let threads = num_threads().min(nq.div_ceil(16)).max(1);
        let per = nq.div_ceil(threads);
        std::thread::scope(|scope| {
            for (block, (s, i)) in scores.chunks_mut(per * k).zip(ids.chunks_mut(per * k)).enumerate() {
                let rerank_query = &rerank_query;
                scope.spawn(move || {
                    for (j, (s, i)) in s.chunks_mut(k).zip(i.chunks_mut(k)).enumerate() {
                        rerank_query(block * per + j, s, i);
                    }
                });
            }
        });
        Ok((scores, ids))
    }

    /// The index's own `k` nearest ids of each query (`-1` where fewer
    /// exist) and their scores, through FAISS's C API on a shared reference:
    /// the `faiss` crate's `Index::search` takes `&mut self` because some
    /// index types (GPU ones) cannot search concurrently, but every gallery
    /// index is a CPU index made by `index_factory` or read from a file, and
    /// FAISS's CPU indexes are safe to search from several threads at once
    /// (a search only reads the index; IVF and HNSW keep their per-search
    /// state on the caller's stack). What does change an index (adding,
    /// removing, the IVF direct map, search parameters) takes `&mut self`.
    fn index_search(&self, queries: &[f32], k: usize) -> Result<(Vec<f32>, Vec<i64>)> {
        let dim = self.manifest.dim;
        if queries.len() % dim != 0 {
            return Err(Error::invalid(format!("query has {} values, not a multiple of {dim}", queries.len())));
        }
        let nq = queries.len() / dim;
        let mut distances = vec![0f32; nq * k];
        let mut labels = vec![-1i64; nq * k];
        // SAFETY: the pointer is this gallery's live CPU index, borrowed
        // shared for the call (see above); `queries` holds `nq * dim` values
        // and both outputs `nq * k`, as FAISS reads and writes them.
        let code = unsafe {
            faiss_sys::faiss_Index_search(
                self.index.inner_ptr(),
                nq as faiss_sys::idx_t,
                queries.as_ptr(),
                k as faiss_sys::idx_t,
                distances.as_mut_ptr(),
                labels.as_mut_ptr(),
            )
        };
        if code != 0 {
            return Err(Error::internal(format!("FAISS search failed: {}", faiss_last_error())));
        }
        Ok((distances, labels))
    }

    /// Template `id`'s vector into `out`: the stored exact vector of a
    /// re-ranking gallery, else reconstructed by the index (Flat, HNSW; an
    /// error for IVF and PQ indexes, which keep no reconstructible copy).
    fn vector_into(&self, id: i64, out: &mut [f32]) -> Result<()> {
        if let Some(row) = self.vectors.as_ref().and_then(|s| s.row(id)) {
            out.copy_from_slice(row);
            return Ok(());
        }
        self.index.reconstruct(Idx::new(id as u64), out).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("index `{}` cannot reconstruct templates: {e}", self.manifest.index_factory),
            )
        })
    }

    /// Bytes of the serialized FAISS index (what a snapshot stores).
    pub fn index_bytes(&self) -> Result<usize> {
        let file = IndexFile::write(&self.index)?;
        Ok(std::fs::metadata(file.path()).map(|m| m.len() as usize).unwrap_or(0))
    }
}

/// At most `max` of the row numbers `0..len`, evenly spaced from the first:
/// the calibration sample, the same rows whether they are read from the
/// index (`Gallery::sample_rows`) or from the template tables
/// (`enroll::calibrate`).
pub(crate) fn evenly_spaced(len: usize, max: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
    (0..len).step_by(len.div_ceil(max.max(1)).max(1))
}
