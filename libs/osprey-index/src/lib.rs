//! Galleries: FAISS indexes of enrolled templates, searched open-set.
//!
//! A [`Gallery`] maps FAISS ids to (template, subject), answers top-k searches
//! at the *subject* level (a subject scores the maximum over its templates),
//! decides `match`/`unknown` against a threshold calibrated for a target FPIR,
//! removes a subject's templates for the right to erasure, and snapshots
//! itself to the object store. Embeddings are unit norm, so FAISS inner
//! product is cosine similarity.
#![warn(missing_docs)]

mod choice;
mod commit;
mod enroll;
mod erase;
mod gallery;
mod ids;
mod mapped;
mod search;
mod snapshot;
mod vectors;

pub use choice::{
    DEFAULT_RERANK, FLOAT_INDEX_BUDGET_BYTES, auto_factory, bytes_per_template_estimate, default_nprobe,
    default_rerank, is_compressed,
};
pub use commit::{
    commit, commit_prepared, galleries_with_uncommitted, load_with_uncommitted, mark_uncommitted, replay_uncommitted,
    uncommitted_key, uncommitted_markers,
};
pub use enroll::{EnrollOptions, EnrollTimes, calibrate, enroll, enroll_into, enroll_timed, stage_into};
pub use erase::{Erasure, erase_subject};
pub use gallery::{
    COMPANION_MODALITIES, FaissThreadsGuard, Gallery, GalleryManifest, Removal, SubjectCandidate, modality_gallery,
    scoped_faiss_threads, set_num_threads,
};
pub use search::{
    DEFAULT_FPIR, FUSION_CALIBRATION_SUBJECTS, FusedThresholds, FusionInput, OperatingPoint, calibrate_fusion,
    count_decisions, fuse_persons, known_operating_point, operating_point, person_of, result_rows, search_probes,
    store_results, store_search,
};
pub use snapshot::{SnapshotWrite, list_galleries};
