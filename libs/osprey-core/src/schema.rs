//! Arrow schemas of the tables Osprey writes, and their JSON description.
//!
//! `schemas/*.schema.json` in the repository are generated from these
//! functions (`osprey schema --write`) and a test fails when they differ, so
//! the files are what other engines (DuckDB, Spark, pandas) can rely on.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The placeholder used for the embedding width in the JSON description.
pub const DIM_PLACEHOLDER: &str = "D";

/// Column names of the template table, in order.
pub mod templates {
    #![allow(missing_docs)]
    pub const TEMPLATE_ID: &str = "template_id";
    pub const GALLERY: &str = "gallery";
    pub const SUBJECT_ID: &str = "subject_id";
    pub const JOB_ID: &str = "job_id";
    pub const TASK_ID: &str = "task_id";
    pub const MEDIA_URI: &str = "media_uri";
    pub const TRACK_ID: &str = "track_id";
    pub const PERSON_TRACK_ID: &str = "person_track_id";
    pub const MODALITY: &str = "modality";
    pub const MODEL: &str = "model";
    pub const EMBEDDING: &str = "embedding";
    pub const QUALITY: &str = "quality";
    pub const FRAME_START: &str = "frame_start";
    pub const FRAME_END: &str = "frame_end";
    pub const T_START_MS: &str = "t_start_ms";
    pub const T_END_MS: &str = "t_end_ms";
    pub const NUM_FRAMES: &str = "num_frames";
    pub const BBOX: &str = "bbox";
    pub const LANDMARKS: &str = "landmarks";
    pub const THUMBNAIL_URI: &str = "thumbnail_uri";
    pub const SILHOUETTE_URI: &str = "silhouette_uri";
    pub const SILHOUETTE_FRAMES: &str = "silhouette_frames";
    pub const ERROR: &str = "error";
    pub const CREATED_AT: &str = "created_at";
}

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The embedding column type: `FixedSizeList<Float32, dim>`, unit norm.
pub fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, false)), dim as i32)
}

/// The `bbox` struct: pixel coordinates of the representative frame's box.
pub fn bbox_fields() -> Fields {
    Fields::from(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("w", DataType::Float32, false),
        Field::new("h", DataType::Float32, false),
    ])
}

/// One row per template (enrolled or probe) with embeddings `dim` wide.
///
/// `embedding` is null only for rows that record a failure (`error` set), so
/// that an unreadable input is visible in SQL instead of silently missing.
///
/// `person_track_id` links the templates of one person across modalities: it
/// is the `template_id` of the person (body) track that contains this track.
/// A face track with no body around it is its own person track, so today,
/// with faces only, it equals the row's own `template_id` (null where it is
/// not known: failure rows, imported embeddings). Each row's per-frame boxes are in the [`observation_schema`] table.
///
/// `silhouette_uri` is the track's silhouette strip under the root (a body
/// track of a static-camera video: `silhouettes/<template_id>.png`, 64×64
/// binary frames side by side, OpenGait's normalisation) and
/// `silhouette_frames` the number of frames in it; both null where there is
/// none (faces, images, moving cameras, tracks whose masks were all empty).
pub fn template_schema(dim: usize) -> SchemaRef {
    use templates::*;
    Arc::new(Schema::new(vec![
        Field::new(TEMPLATE_ID, DataType::Utf8, false),
        Field::new(GALLERY, DataType::Utf8, true),
        Field::new(SUBJECT_ID, DataType::Utf8, true),
        Field::new(JOB_ID, DataType::Utf8, true),
        Field::new(TASK_ID, DataType::Utf8, true),
        Field::new(MEDIA_URI, DataType::Utf8, true),
        Field::new(TRACK_ID, DataType::Int64, true),
        Field::new(PERSON_TRACK_ID, DataType::Utf8, true),
        Field::new(MODALITY, DataType::Utf8, false),
        Field::new(MODEL, DataType::Utf8, false),
        Field::new(EMBEDDING, embedding_type(dim), true),
        Field::new(QUALITY, DataType::Float32, true),
        Field::new(FRAME_START, DataType::Int64, true),
        Field::new(FRAME_END, DataType::Int64, true),
        Field::new(T_START_MS, DataType::Int64, true),
        Field::new(T_END_MS, DataType::Int64, true),
        Field::new(NUM_FRAMES, DataType::Int32, true),
        Field::new(BBOX, DataType::Struct(bbox_fields()), true),
        Field::new(LANDMARKS, DataType::List(Arc::new(Field::new_list_field(DataType::Float32, false))), true),
        Field::new(THUMBNAIL_URI, DataType::Utf8, true),
        Field::new(SILHOUETTE_URI, DataType::Utf8, true),
        Field::new(SILHOUETTE_FRAMES, DataType::Int32, true),
        Field::new(ERROR, DataType::Utf8, true),
        Field::new(CREATED_AT, utc_ms(), false),
    ]))
}

/// Column names of the observations table, in order.
pub mod observations {
    #![allow(missing_docs)]
    pub const TEMPLATE_ID: &str = "template_id";
    pub const MODALITY: &str = "modality";
    pub const FRAME: &str = "frame";
    pub const T_MS: &str = "t_ms";
    pub const BBOX: &str = "bbox";
    pub const KEYPOINTS: &str = "keypoints";
    pub const QUALITY: &str = "quality";
}

/// One keypoint: pixel coordinates in the frame and, where the model gives
/// one, its confidence (`score`, null otherwise).
pub fn keypoint_fields() -> Fields {
    Fields::from(vec![
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("score", DataType::Float32, true),
    ])
}

/// The `keypoints` column type: `List<Struct<x, y, score>>`.
pub fn keypoints_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Struct(keypoint_fields()), false)))
}

/// One row per per-frame observation that went into a template: every frame
/// of a video track, the single detection of a still image.
///
/// * `template_id`: the template it belongs to (the same id as in the
///   template table);
/// * `modality`: `face` (later `body`, `gait`: one table for all);
/// * `frame`: the 0-based frame number in the stream, as decoded (from the
///   presentation time and frame rate); 0 for images;
/// * `t_ms`: the frame's presentation time in milliseconds; 0 for images;
/// * `bbox`: the box in the frame's pixels, the templates' struct;
/// * `keypoints`: in the frame's pixels, in the model's order: for faces the
///   5 landmarks of the detector or shape predictor (dlib's 5-point shape
///   for `dlib-resnet-v1`; MTCNN's eyes, nose and mouth corners for the
///   seed models; the template's `model` tells which), `score` null; body
///   models will give COCO's 17 points with their scores; null when the
///   model gives none;
/// * `quality`: the observation's quality as the tracker weighed it (see the
///   template table's `quality`).
pub fn observation_schema() -> SchemaRef {
    use observations::*;
    Arc::new(Schema::new(vec![
        Field::new(TEMPLATE_ID, DataType::Utf8, false),
        Field::new(MODALITY, DataType::Utf8, false),
        Field::new(FRAME, DataType::Int64, false),
        Field::new(T_MS, DataType::Int64, false),
        Field::new(BBOX, DataType::Struct(bbox_fields()), false),
        Field::new(KEYPOINTS, keypoints_type(), true),
        Field::new(QUALITY, DataType::Float32, true),
    ]))
}

/// One row per (probe template, rank) of a search.
pub fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("probe_template_id", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("gallery_template_id", DataType::Utf8, true),
        Field::new("score", DataType::Float32, true),
        Field::new("decision", DataType::Utf8, false),
        Field::new("threshold", DataType::Float32, false),
        Field::new("person_track_id", DataType::Utf8, true),
        Field::new("fusion", DataType::Utf8, true),
        Field::new("face_score", DataType::Float32, true),
        Field::new("body_score", DataType::Float32, true),
        Field::new("gait_score", DataType::Float32, true),
        Field::new("face_weight", DataType::Float32, true),
        Field::new("body_weight", DataType::Float32, true),
        Field::new("gait_weight", DataType::Float32, true),
    ]))
}

/// One row per search (REST or job probe): who searched what, and the answer.
pub fn audit_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("at", utc_ms(), false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("job_id", DataType::Utf8, true),
        Field::new("gallery", DataType::Utf8, false),
        Field::new("probe", DataType::Utf8, false),
        Field::new("top_subject_id", DataType::Utf8, true),
        Field::new("top_score", DataType::Float32, true),
        Field::new("decision", DataType::Utf8, false),
        Field::new("threshold", DataType::Float32, false),
    ]))
}

/// One row per gallery, from the gallery manifests.
pub fn gallery_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("dim", DataType::Int32, false),
        Field::new("index_factory", DataType::Utf8, false),
        Field::new("num_subjects", DataType::Int64, false),
        Field::new("num_templates", DataType::Int64, false),
        Field::new("threshold", DataType::Float32, true),
        Field::new("threshold_fpir", DataType::Float64, true),
        Field::new("created_at", utc_ms(), false),
        Field::new("updated_at", utc_ms(), false),
    ]))
}

/// Renders an Arrow type the way the JSON schema files spell it.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::FixedSizeList(f, n) => {
            let n =
                if f.data_type() == &DataType::Float32 && *n < 0 { DIM_PLACEHOLDER.to_string() } else { n.to_string() };
            format!("FixedSizeList<{}, {n}>", type_name(f.data_type()))
        }
        DataType::List(f) => format!("List<{}>", type_name(f.data_type())),
        DataType::Struct(fields) => format!(
            "Struct<{}>",
            fields.iter().map(|f| format!("{}: {}", f.name(), type_name(f.data_type()))).collect::<Vec<_>>().join(", ")
        ),
        DataType::Timestamp(unit, tz) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            match tz {
                Some(tz) => format!("Timestamp<{unit}, {tz}>"),
                None => format!("Timestamp<{unit}>"),
            }
        }
        other => format!("{other}"),
    }
}

/// The JSON description of `schema` (`{"table", "columns": [{name, type, nullable}]}`)
/// with the embedding width written as `D`.
pub fn describe(table: &str, schema: &Schema, description: &str) -> serde_json::Value {
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut ty = type_name(f.data_type());
            if f.name() == templates::EMBEDDING {
                ty = format!("FixedSizeList<Float32, {DIM_PLACEHOLDER}>");
            }
            serde_json::json!({"name": f.name(), "type": ty, "nullable": f.is_nullable()})
        })
        .collect();
    serde_json::json!({"table": table, "description": description, "columns": columns})
}

/// Every table schema Osprey writes, as `(file stem, JSON description)`.
pub fn all_descriptions() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "templates",
            describe(
                "templates",
                &template_schema(1),
                "One row per template. Parquet (zstd) under templates/model=<model>/; one embedding width D per model; embeddings are unit L2 norm so inner product is cosine similarity.",
            ),
        ),
        (
            "observations",
            describe(
                "observations",
                &observation_schema(),
                "One row per frame of each template's track (one row for a still image): where the face (later the body) was in that frame. Parquet (zstd) under observations/model=<model>/, one file beside each template file of the same name; join on template_id. frame is 0-based as decoded, t_ms the presentation time (both 0 for images); bbox and keypoints are in the frame's pixels; keypoints are the model's points in its own order (faces: the 5 landmarks of the template's model, score null; body models: COCO's 17 points with their scores), null when it has none.",
            ),
        ),
        (
            "results",
            describe(
                "results",
                &result_schema(),
                "One row per probe template and rank of a search job, under results/job=<job_id>/. person_track_id names the probe's person (its body track's template id). Rows with fusion set (the rule: quality or max) are one per probe person and candidate, deciding from all its modalities: score and threshold are then log-likelihood ratios, and face_/body_/gait_score and _weight say what each modality scored and weighed (null where the probe has none).",
            ),
        ),
        (
            "galleries",
            describe("galleries", &gallery_schema(), "One row per gallery, read from galleries/<name>/manifest.json."),
        ),
        (
            "audit",
            describe(
                "audit",
                &audit_schema(),
                "One row per search, from REST or a search job, under audit/; key_id is a digest of the API key, never the key. Only admins can query it.",
            ),
        ),
    ]
}
