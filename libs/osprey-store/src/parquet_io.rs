use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use osprey_core::{Error, ErrorKind, Result};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Encodes `batches` as one zstd-compressed Parquet file.
pub fn encode_parquet(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Bytes> {
    encode_parquet_with(schema, batches, Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
}

/// Encodes `batches` as one uncompressed Parquet file: for small files
/// written often (the audit table's group commits), where setting up a
/// compressor for every column costs more than the bytes it saves.
pub fn encode_parquet_uncompressed(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Bytes> {
    encode_parquet_with(schema, batches, Compression::UNCOMPRESSED)
}

fn encode_parquet_with(schema: SchemaRef, batches: &[RecordBatch], compression: Compression) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_created_by(format!("osprey {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, Some(props))
        .map_err(|e| Error::internal(format!("cannot start Parquet writer: {e}")))?;
    for batch in batches {
        writer.write(batch).map_err(|e| Error::internal(format!("cannot write Parquet batch: {e}")))?;
    }
    writer.close().map_err(|e| Error::internal(format!("cannot finish Parquet file: {e}")))?;
    Ok(Bytes::from(buf))
}

/// Decodes a whole Parquet file; `name` is used in the error if it is corrupt.
pub fn decode_parquet(bytes: Bytes, name: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let corrupt = |e: &dyn std::fmt::Display| {
        Error::new(ErrorKind::Corrupt, format!("`{name}` is not a readable Parquet file: {e}"))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| corrupt(&e))?;
    let schema = builder.schema().clone();
    let reader = builder.with_batch_size(8192).build().map_err(|e| corrupt(&e))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| corrupt(&e))?;
    Ok((schema, batches))
}
