//! The template row type and its Arrow/Parquet form.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float32Builder, Int32Array, Int64Array, ListBuilder,
    StringArray, StructArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use osprey_core::schema::{self, templates as col};
use osprey_core::{Error, ErrorKind, Modality, Result};

use crate::{PutOutcome, Root, decode_parquet, encode_parquet};

/// A box in pixels of the source frame: top-left corner, width and height.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BBox {
    /// Left edge, pixels.
    pub x: f32,
    /// Top edge, pixels.
    pub y: f32,
    /// Width, pixels.
    pub w: f32,
    /// Height, pixels.
    pub h: f32,
}

/// One template: a unit-norm embedding of one subject (enrolled) or one
/// probe track, with where it came from. See `schemas/templates.schema.json`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// Unique id; deterministic for task outputs so retries are idempotent.
    pub template_id: String,
    /// Gallery it is enrolled in; `None` for probes.
    pub gallery: Option<String>,
    /// Enrolled subject; `None` for probes.
    pub subject_id: Option<String>,
    /// Job that produced it.
    pub job_id: Option<String>,
    /// Task that produced it.
    pub task_id: Option<String>,
    /// Source image or video.
    pub media_uri: Option<String>,
    /// Track within the media, for video.
    pub track_id: Option<i64>,
    /// The person track this track belongs to: the `template_id` of the
    /// body track around it, or its own `template_id` for a face track with
    /// no body around it (every face of a face-only job) and for a body
    /// track. `None` where it is not known
    /// (failure rows, imported embeddings).
    pub person_track_id: Option<String>,
    /// Modality (`face` when defaulted).
    pub modality: Option<Modality>,
    /// Embedding model id, e.g. `dlib-resnet-v1`.
    pub model: String,
    /// Unit-norm embedding; `None` for rows that record a failure.
    pub embedding: Option<Vec<f32>>,
    /// Quality in [0, 1] or detector confidence.
    pub quality: Option<f32>,
    /// First frame index of the track.
    pub frame_start: Option<i64>,
    /// Last frame index of the track.
    pub frame_end: Option<i64>,
    /// Presentation time of the first frame, milliseconds.
    pub t_start_ms: Option<i64>,
    /// Presentation time of the last frame, milliseconds.
    pub t_end_ms: Option<i64>,
    /// Number of frames aggregated.
    pub num_frames: Option<i32>,
    /// Box of the representative frame.
    pub bbox: Option<BBox>,
    /// Landmarks of the representative frame, `x0, y0, x1, y1, …` in pixels.
    pub landmarks: Option<Vec<f32>>,
    /// Best-frame crop under the root.
    pub thumbnail_uri: Option<String>,
    /// The track's silhouette strip under the root (64×64 frames side by
    /// side, PNG); `None` where the track has none.
    pub silhouette_uri: Option<String>,
    /// Frames in the silhouette strip.
    pub silhouette_frames: Option<i32>,
    /// Why no embedding could be computed.
    pub error: Option<String>,
    /// Creation time, milliseconds since the Unix epoch (UTC).
    pub created_at_ms: i64,
}

/// Builds a template-schema batch. Every embedding must be `dim` wide and
/// unit norm (within 1e-3); rows without one must say why in `error`.
pub fn templates_to_batch(templates: &[Template], dim: usize) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&Template) -> Option<&str>| -> ArrayRef {
        Arc::new(templates.iter().map(f).collect::<StringArray>())
    };
    let i64s = |f: &dyn Fn(&Template) -> Option<i64>| -> ArrayRef {
        Arc::new(templates.iter().map(f).collect::<Int64Array>())
    };

    let mut values = Vec::with_capacity(templates.len() * dim);
    let mut valid = Vec::with_capacity(templates.len());
    for (i, t) in templates.iter().enumerate() {
        let what = format!("template {i} (`{}`)", t.template_id);
        if t.template_id.is_empty() {
            return Err(Error::invalid(format!("template {i} has an empty template_id")));
        }
        match &t.embedding {
            Some(e) => {
                osprey_core::validate_embedding(e, dim, &what)?;
                let norm = e.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
                if (norm - 1.0).abs() > 1e-3 {
                    return Err(Error::invalid(format!(
                        "{what}: embedding norm is {norm:.4}, templates must be unit norm"
                    )));
                }
                values.extend_from_slice(e);
                valid.push(true);
            }
            None => {
                if t.error.is_none() {
                    return Err(Error::invalid(format!("{what} has neither an embedding nor an error")));
                }
                values.extend(std::iter::repeat_n(0.0, dim));
                valid.push(false);
            }
        }
    }
    let item = Arc::new(Field::new_list_field(DataType::Float32, false));
    let embedding =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), Some(valid.into()))
            .map_err(|e| Error::internal(format!("cannot build embedding column: {e}")))?;

    let bbox_values: Vec<Option<BBox>> = templates.iter().map(|t| t.bbox).collect();
    let bbox_field = |f: fn(&BBox) -> f32| -> ArrayRef {
        Arc::new(bbox_values.iter().map(|b| b.as_ref().map(f).unwrap_or(0.0)).collect::<Float32Array>())
    };
    let bbox = StructArray::try_new(
        schema::bbox_fields(),
        vec![bbox_field(|b| b.x), bbox_field(|b| b.y), bbox_field(|b| b.w), bbox_field(|b| b.h)],
        Some(bbox_values.iter().map(Option::is_some).collect::<Vec<_>>().into()),
    )
    .map_err(|e| Error::internal(format!("cannot build bbox column: {e}")))?;

    let mut landmarks =
        ListBuilder::new(Float32Builder::new()).with_field(Field::new_list_field(DataType::Float32, false));
    for t in templates {
        match &t.landmarks {
            Some(l) => {
                landmarks.values().append_slice(l);
                landmarks.append(true);
            }
            None => landmarks.append(false),
        }
    }

    let columns: Vec<ArrayRef> = vec![
        strings(&|t| Some(&t.template_id)),
        strings(&|t| t.gallery.as_deref()),
        strings(&|t| t.subject_id.as_deref()),
        strings(&|t| t.job_id.as_deref()),
        strings(&|t| t.task_id.as_deref()),
        strings(&|t| t.media_uri.as_deref()),
        i64s(&|t| t.track_id),
        strings(&|t| t.person_track_id.as_deref()),
        strings(&|t| Some(t.modality.unwrap_or(Modality::Face).as_str())),
        strings(&|t| Some(&t.model)),
        Arc::new(embedding),
        Arc::new(templates.iter().map(|t| t.quality).collect::<Float32Array>()),
        i64s(&|t| t.frame_start),
        i64s(&|t| t.frame_end),
        i64s(&|t| t.t_start_ms),
        i64s(&|t| t.t_end_ms),
        Arc::new(templates.iter().map(|t| t.num_frames).collect::<Int32Array>()),
        Arc::new(bbox),
        Arc::new(landmarks.finish()),
        strings(&|t| t.thumbnail_uri.as_deref()),
        strings(&|t| t.silhouette_uri.as_deref()),
        Arc::new(templates.iter().map(|t| t.silhouette_frames).collect::<Int32Array>()),
        strings(&|t| t.error.as_deref()),
        Arc::new(
            templates.iter().map(|t| Some(t.created_at_ms)).collect::<TimestampMillisecondArray>().with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(schema::template_schema(dim), columns)
        .map_err(|e| Error::internal(format!("cannot build template batch: {e}")))
}

/// The embedding width of a template-schema batch.
fn embedding_dim(batch: &RecordBatch) -> Result<usize> {
    match batch.schema().field_with_name(col::EMBEDDING).map(|f| f.data_type().clone()) {
        Ok(DataType::FixedSizeList(_, n)) => Ok(n as usize),
        Ok(other) => Err(Error::new(
            ErrorKind::Corrupt,
            format!("`embedding` column has type {other}, expected FixedSizeList<Float32, D>"),
        )),
        Err(_) => Err(Error::new(ErrorKind::Corrupt, "batch has no `embedding` column")),
    }
}

/// Columns added to the template table after its first files were
/// written: a file may lack them (they read as `None`).
const LATER_COLUMNS: [&str; 3] = [col::PERSON_TRACK_ID, col::SILHOUETTE_URI, col::SILHOUETTE_FRAMES];

/// Reads templates back from a template-schema batch. Files written before
/// the template table had `person_track_id` or the silhouette columns are
/// read too (those are `None`).
pub fn templates_from_batch(batch: &RecordBatch) -> Result<Vec<Template>> {
    let expected = schema::template_schema(embedding_dim(batch)?);
    let fields = batch.schema().fields().clone();
    // The expected fields less the later columns this file lacks.
    let present: Vec<_> = expected
        .fields()
        .iter()
        .filter(|f| !LATER_COLUMNS.contains(&f.name().as_str()) || fields.iter().any(|g| g.name() == f.name()))
        .cloned()
        .collect();
    if fields.iter().cloned().collect::<Vec<_>>() != present {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "batch does not follow the template schema (schemas/templates.schema.json)",
        ));
    }
    let c = |name: &str| batch.column_by_name(name).expect("checked against the schema");
    let strings = |name: &str| c(name).as_string::<i32>().clone();
    let s =
        |a: &arrow::array::StringArray, r: usize| -> Option<String> { a.is_valid(r).then(|| a.value(r).to_string()) };
    let i64s = |name: &str| c(name).as_primitive::<Int64Type>().clone();
    let i64at = |a: &Int64Array, r: usize| -> Option<i64> { a.is_valid(r).then(|| a.value(r)) };
    let (template_id, gallery, subject_id, job_id, task_id, media_uri) = (
        strings(col::TEMPLATE_ID),
        strings(col::GALLERY),
        strings(col::SUBJECT_ID),
        strings(col::JOB_ID),
        strings(col::TASK_ID),
        strings(col::MEDIA_URI),
    );
    let person_track_id = batch.column_by_name(col::PERSON_TRACK_ID).map(|a| a.as_string::<i32>().clone());
    let silhouette_uri = batch.column_by_name(col::SILHOUETTE_URI).map(|a| a.as_string::<i32>().clone());
    let silhouette_frames = batch.column_by_name(col::SILHOUETTE_FRAMES).map(|a| a.as_primitive::<Int32Type>().clone());
    let (modality_col, model, thumbnail_uri, error) =
        (strings(col::MODALITY), strings(col::MODEL), strings(col::THUMBNAIL_URI), strings(col::ERROR));
    let (track_id, frame_start, frame_end, t_start_ms, t_end_ms) =
        (i64s(col::TRACK_ID), i64s(col::FRAME_START), i64s(col::FRAME_END), i64s(col::T_START_MS), i64s(col::T_END_MS));
    let emb = c(col::EMBEDDING).as_fixed_size_list();
    let emb_values = emb.values().as_primitive::<Float32Type>();
    let dim = emb.value_length() as usize;
    let quality = c(col::QUALITY).as_primitive::<Float32Type>();
    let num_frames = c(col::NUM_FRAMES).as_primitive::<Int32Type>();
    let bbox = c(col::BBOX).as_struct();
    let bbox_col = |j: usize| bbox.column(j).as_primitive::<Float32Type>().clone();
    let (bx, by, bw, bh) = (bbox_col(0), bbox_col(1), bbox_col(2), bbox_col(3));
    let landmarks = c(col::LANDMARKS).as_list::<i32>();
    let created = c(col::CREATED_AT).as_primitive::<TimestampMillisecondType>();

    (0..batch.num_rows())
        .map(|r| {
            let modality = s(&modality_col, r).unwrap_or_default();
            Ok(Template {
                template_id: s(&template_id, r).unwrap_or_default(),
                gallery: s(&gallery, r),
                subject_id: s(&subject_id, r),
                job_id: s(&job_id, r),
                task_id: s(&task_id, r),
                media_uri: s(&media_uri, r),
                track_id: i64at(&track_id, r),
                person_track_id: person_track_id.as_ref().and_then(|a| s(a, r)),
                modality: Some(
                    modality.parse().map_err(|e: Error| Error::new(ErrorKind::Corrupt, e.message().to_string()))?,
                ),
                model: s(&model, r).unwrap_or_default(),
                embedding: emb.is_valid(r).then(|| emb_values.values()[r * dim..(r + 1) * dim].to_vec()),
                quality: quality.is_valid(r).then(|| quality.value(r)),
                frame_start: i64at(&frame_start, r),
                frame_end: i64at(&frame_end, r),
                t_start_ms: i64at(&t_start_ms, r),
                t_end_ms: i64at(&t_end_ms, r),
                num_frames: num_frames.is_valid(r).then(|| num_frames.value(r)),
                bbox: bbox.is_valid(r).then(|| BBox { x: bx.value(r), y: by.value(r), w: bw.value(r), h: bh.value(r) }),
                landmarks: landmarks
                    .is_valid(r)
                    .then(|| landmarks.value(r).as_primitive::<Float32Type>().values().to_vec()),
                thumbnail_uri: s(&thumbnail_uri, r),
                silhouette_uri: silhouette_uri.as_ref().and_then(|a| s(a, r)),
                silhouette_frames: silhouette_frames.as_ref().and_then(|a| a.is_valid(r).then(|| a.value(r))),
                error: s(&error, r),
                created_at_ms: created.value(r),
            })
        })
        .collect()
}

/// Writes `templates` as one Parquet file at `key`. With `if_absent`, an
/// existing object is left untouched (a retried task's output).
pub async fn write_templates(
    root: &Root,
    key: &str,
    templates: &[Template],
    dim: usize,
    if_absent: bool,
) -> Result<PutOutcome> {
    let batch = templates_to_batch(templates, dim)?;
    let bytes = encode_parquet(batch.schema(), &[batch])?;
    if if_absent {
        root.put_if_absent(key, bytes).await
    } else {
        root.put(key, bytes).await.map(|()| PutOutcome::Created)
    }
}

/// The templates of `modality` among `templates` (each modality has its own
/// gallery index and embedding width), and with `with_failures` also the
/// rows of inputs that gave no template (no embedding), which are stored
/// once, with one modality's part.
pub fn modality_part(templates: &[Template], modality: Modality, with_failures: bool) -> Vec<Template> {
    templates
        .iter()
        .filter(|t| if t.embedding.is_some() { t.modality == Some(modality) } else { with_failures })
        .cloned()
        .collect()
}

/// The templates a worker staged for one task: those at `key` and, beside
/// it, each of `modalities`' own file ([`crate::layout::staged_modality`];
/// a modality without templates stages none). `NotFound` when `key` itself
/// is missing: it is written last and commits the task.
pub async fn read_staged_templates(root: &Root, key: &str, modalities: &[Modality]) -> Result<Vec<Template>> {
    let mut templates = read_templates(root, key).await?;
    for &m in modalities {
        match read_templates(root, &crate::layout::staged_modality(key, m)).await {
            Ok(rows) => templates.extend(rows),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(templates)
}

/// Reads every template of the Parquet file at `key`.
pub async fn read_templates(root: &Root, key: &str) -> Result<Vec<Template>> {
    let bytes = root.get(key).await?;
    let name = root.url_of(key);
    let (_, batches) = decode_parquet(bytes, &name)?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(templates_from_batch(b).map_err(|e| e.context(&name))?);
    }
    Ok(out)
}
