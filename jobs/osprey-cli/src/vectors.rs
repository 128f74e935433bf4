//! Embedding files users bring: NumPy `.npy` matrices and Parquet tables.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use bytes::Bytes;
use osprey_core::{Error, Result};
use osprey_store::decode_parquet;

/// An `n × dim` row-major float matrix, with optional per-row columns.
#[derive(Debug, Default)]
pub struct Vectors {
    pub dim: usize,
    pub data: Vec<f32>,
    pub subject_ids: Option<Vec<Option<String>>>,
    pub template_ids: Option<Vec<Option<String>>>,
    pub media_uris: Option<Vec<Option<String>>>,
}

impl Vectors {
    pub fn len(&self) -> usize {
        if self.dim == 0 { 0 } else { self.data.len() / self.dim }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Reads `.npy` (float32/float64, 2-D, C order) or Parquet with an
/// `embedding` list column by the file extension.
pub fn read_vectors(path: &Path) -> Result<Vectors> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::invalid(format!("cannot read `{name}`: {e}")))?;
    if bytes.is_empty() {
        return Err(Error::invalid(format!("`{name}` is empty")));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(&bytes, &name),
        Some("parquet") => read_parquet(Bytes::from(bytes), &name),
        _ => Err(Error::invalid(format!("`{name}`: expected a .npy or .parquet file"))),
    }
}

/// Parses the NumPy format: magic, version, a little header dict, raw data.
pub fn read_npy(bytes: &[u8], name: &str) -> Result<Vectors> {
    let bad = |why: &str| Error::invalid(format!("`{name}` is not a usable .npy file: {why}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(&format!("unsupported format version {v}"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").and_then(|s| s.split('\'').nth(1)).ok_or_else(|| bad("no dtype"))?;
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad("Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("shape is not integers")))
        .collect::<Result<_>>()?;
    let [n, dim] = shape[..] else {
        return Err(bad(&format!("expected a 2-D array (templates × dimensions), got shape {shape:?}")));
    };
    let body = &bytes[start + header_len..];
    let data: Vec<f32> = match descr {
        "<f4" => body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        "<f8" => body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        other => return Err(bad(&format!("dtype `{other}` is not float32 or float64"))),
    };
    if data.len() != n * dim {
        return Err(bad(&format!("shape ({n}, {dim}) needs {} values, the file holds {}", n * dim, data.len())));
    }
    Ok(Vectors { dim, data, ..Default::default() })
}

fn read_parquet(bytes: Bytes, name: &str) -> Result<Vectors> {
    let (schema, batches) = decode_parquet(bytes, name)?;
    let bad = |why: String| Error::invalid(format!("`{name}`: {why}"));
    if schema.field_with_name("embedding").is_err() {
        return Err(bad("no `embedding` column".into()));
    }
    let mut out = Vectors::default();
    let column = |col: &str| schema.field_with_name(col).is_ok().then(Vec::new);
    let (mut subjects, mut templates, mut media) = (column("subject_id"), column("template_id"), column("media_uri"));
    let mut failed_rows = 0;
    for batch in &batches {
        let emb = batch.column_by_name("embedding").unwrap();
        let values = match emb.data_type() {
            DataType::FixedSizeList(..) => {
                let l = emb.as_fixed_size_list();
                (0..l.len()).map(|i| (l.is_valid(i)).then(|| l.value(i))).collect::<Vec<_>>()
            }
            DataType::List(_) => {
                let l = emb.as_list::<i32>();
                (0..l.len()).map(|i| (l.is_valid(i)).then(|| l.value(i))).collect()
            }
            DataType::LargeList(_) => {
                let l = emb.as_list::<i64>();
                (0..l.len()).map(|i| (l.is_valid(i)).then(|| l.value(i))).collect()
            }
            other => return Err(bad(format!("`embedding` is {other}, expected a list of floats"))),
        };
        for (i, v) in values.into_iter().enumerate() {
            let row = out.len();
            let Some(v) = v else {
                // A template-schema row that records why it has no embedding
                // (an unreadable image, no face) is left out.
                if batch.column_by_name("error").is_some_and(|e| e.is_valid(i)) {
                    failed_rows += 1;
                    continue;
                }
                return Err(bad(format!("row {row} has a null embedding")));
            };
            let floats: Vec<f32> = match v.data_type() {
                DataType::Float32 => v.as_primitive::<Float32Type>().values().to_vec(),
                DataType::Float64 => v.as_primitive::<Float64Type>().values().iter().map(|x| *x as f32).collect(),
                other => return Err(bad(format!("`embedding` holds {other}, expected float32 or float64"))),
            };
            if out.dim == 0 {
                out.dim = floats.len();
            }
            if floats.len() != out.dim || floats.is_empty() {
                return Err(bad(format!("row {row} has {} dimensions, row 0 has {}", floats.len(), out.dim)));
            }
            out.data.extend_from_slice(&floats);
            for (col, target) in
                [("subject_id", &mut subjects), ("template_id", &mut templates), ("media_uri", &mut media)]
            {
                if let Some(target) = target.as_mut() {
                    let a = batch.column_by_name(col).unwrap();
                    let s = arrow::compute::cast(a, &DataType::Utf8)
                        .map_err(|e| bad(format!("`{col}` is not text: {e}")))?;
                    let s = s.as_string::<i32>();
                    target.push(s.is_valid(i).then(|| s.value(i).to_string()));
                }
            }
        }
    }
    if failed_rows > 0 {
        eprintln!("`{name}`: skipping {failed_rows} rows without an embedding (their `error` column says why)");
    }
    out.subject_ids = subjects;
    out.template_ids = templates;
    out.media_uris = media;
    Ok(out)
}

/// Writes an `n × dim` float32 matrix as `.npy`.
pub fn write_npy(path: &Path, data: &[f32], dim: usize) -> Result<()> {
    let n = data.len() / dim.max(1);
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}");
    // Pad so that the data starts on a 64-byte boundary, as NumPy does.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|e| Error::invalid(format!("cannot write `{}`: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write_npy(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3).unwrap();
        let v = read_vectors(&p).unwrap();
        assert_eq!((v.len(), v.dim), (2, 3));
        assert_eq!(v.row(1), &[4.0, 5.0, 6.0]);
        assert!(read_npy(b"not numpy at all", "x").is_err());
        let mut truncated = std::fs::read(&p).unwrap();
        truncated.truncate(truncated.len() - 4);
        let e = read_npy(&truncated, "t.npy").unwrap_err();
        assert!(e.message().contains("needs 6 values"), "{e}");
    }
}
