//! The observation rows (one per frame of a template's track) and their
//! Arrow/Parquet form. See `schemas/observations.schema.json`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float32Builder, Int64Array, ListBuilder, StringArray, StructArray,
    StructBuilder,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use osprey_core::schema::{self, observations as col};
use osprey_core::{Error, ErrorKind, Modality, Result};

use crate::{BBox, PutOutcome, Root, decode_parquet, encode_parquet};

/// One keypoint in the frame's pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keypoint {
    /// Column, pixels.
    pub x: f32,
    /// Row, pixels.
    pub y: f32,
    /// The model's confidence in the point; `None` when it gives none (the
    /// face landmark models).
    pub score: Option<f32>,
}

/// Where one template's object was in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationRow {
    /// The template this frame went into.
    pub template_id: String,
    /// The modality of the template.
    pub modality: Modality,
    /// 0-based frame number in the stream, as decoded; 0 for images.
    pub frame: i64,
    /// Presentation time of the frame, milliseconds; 0 for images.
    pub t_ms: i64,
    /// The object's box in the frame.
    pub bbox: BBox,
    /// The model's keypoints in its own order; `None` when it has none.
    pub keypoints: Option<Vec<Keypoint>>,
    /// Quality of this observation (the weight it had in the template).
    pub quality: Option<f32>,
}

/// The rows of `observations` that belong to `templates`.
pub fn observations_of(observations: &[ObservationRow], templates: &[crate::Template]) -> Vec<ObservationRow> {
    let ids: std::collections::HashSet<&str> = templates.iter().map(|t| t.template_id.as_str()).collect();
    observations.iter().filter(|o| ids.contains(o.template_id.as_str())).cloned().collect()
}

/// Builds an observations-table batch.
pub fn observations_to_batch(rows: &[ObservationRow]) -> Result<RecordBatch> {
    if let Some(i) = rows.iter().position(|r| r.template_id.is_empty()) {
        return Err(Error::invalid(format!("observation {i} has an empty template_id")));
    }
    let bbox_field =
        |f: fn(&BBox) -> f32| -> ArrayRef { Arc::new(rows.iter().map(|r| f(&r.bbox)).collect::<Float32Array>()) };
    let bbox = StructArray::try_new(
        schema::bbox_fields(),
        vec![bbox_field(|b| b.x), bbox_field(|b| b.y), bbox_field(|b| b.w), bbox_field(|b| b.h)],
        None,
    )
    .map_err(|e| Error::internal(format!("cannot build bbox column: {e}")))?;

    let point = StructBuilder::from_fields(schema::keypoint_fields(), 0);
    let mut keypoints =
        ListBuilder::new(point).with_field(Field::new_list_field(DataType::Struct(schema::keypoint_fields()), false));
    for r in rows {
        match &r.keypoints {
            Some(points) => {
                let p = keypoints.values();
                for k in points {
                    p.field_builder::<Float32Builder>(0).expect("x").append_value(k.x);
                    p.field_builder::<Float32Builder>(1).expect("y").append_value(k.y);
                    p.field_builder::<Float32Builder>(2).expect("score").append_option(k.score);
                    p.append(true);
                }
                keypoints.append(true);
            }
            None => keypoints.append(false),
        }
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| Some(r.template_id.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.modality.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.frame)).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| Some(r.t_ms)).collect::<Int64Array>()),
        Arc::new(bbox),
        Arc::new(keypoints.finish()),
        Arc::new(rows.iter().map(|r| r.quality).collect::<Float32Array>()),
    ];
    RecordBatch::try_new(schema::observation_schema(), columns)
        .map_err(|e| Error::internal(format!("cannot build observation batch: {e}")))
}

/// Reads observations back from an observations-table batch.
pub fn observations_from_batch(batch: &RecordBatch) -> Result<Vec<ObservationRow>> {
    if batch.schema().fields() != schema::observation_schema().fields() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "batch does not follow the observations schema (schemas/observations.schema.json)",
        ));
    }
    let column = |name: &str| batch.column_by_name(name).expect("checked against the schema");
    let ids = column(col::TEMPLATE_ID).as_string::<i32>();
    let modality = column(col::MODALITY).as_string::<i32>();
    let frame = column(col::FRAME).as_primitive::<Int64Type>();
    let t_ms = column(col::T_MS).as_primitive::<Int64Type>();
    let bbox = column(col::BBOX).as_struct();
    let bbox_col = |j: usize| bbox.column(j).as_primitive::<Float32Type>().clone();
    let (bx, by, bw, bh) = (bbox_col(0), bbox_col(1), bbox_col(2), bbox_col(3));
    let keypoints = column(col::KEYPOINTS).as_list::<i32>();
    let quality = column(col::QUALITY).as_primitive::<Float32Type>();

    (0..batch.num_rows())
        .map(|r| {
            let points = keypoints.is_valid(r).then(|| {
                let p = keypoints.value(r);
                let p = p.as_struct();
                let (x, y, score) = (
                    p.column(0).as_primitive::<Float32Type>(),
                    p.column(1).as_primitive::<Float32Type>(),
                    p.column(2).as_primitive::<Float32Type>(),
                );
                (0..p.len())
                    .map(|i| Keypoint {
                        x: x.value(i),
                        y: y.value(i),
                        score: score.is_valid(i).then(|| score.value(i)),
                    })
                    .collect()
            });
            Ok(ObservationRow {
                template_id: ids.value(r).to_string(),
                modality: modality
                    .value(r)
                    .parse()
                    .map_err(|e: Error| Error::new(ErrorKind::Corrupt, e.message().to_string()))?,
                frame: frame.value(r),
                t_ms: t_ms.value(r),
                bbox: BBox { x: bx.value(r), y: by.value(r), w: bw.value(r), h: bh.value(r) },
                keypoints: points,
                quality: quality.is_valid(r).then(|| quality.value(r)),
            })
        })
        .collect()
}

/// Writes `rows` as one Parquet file at `key`. With `if_absent`, an existing
/// object is left untouched (a retried task's output).
pub async fn write_observations(
    root: &Root,
    key: &str,
    rows: &[ObservationRow],
    if_absent: bool,
) -> Result<PutOutcome> {
    let batch = observations_to_batch(rows)?;
    let bytes = encode_parquet(batch.schema(), &[batch])?;
    if if_absent {
        root.put_if_absent(key, bytes).await
    } else {
        root.put(key, bytes).await.map(|()| PutOutcome::Created)
    }
}

/// Reads every observation of the Parquet file at `key`.
pub async fn read_observations(root: &Root, key: &str) -> Result<Vec<ObservationRow>> {
    let bytes = root.get(key).await?;
    let name = root.url_of(key);
    let (_, batches) = decode_parquet(bytes, &name)?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(observations_from_batch(b).map_err(|e| e.context(&name))?);
    }
    Ok(out)
}
