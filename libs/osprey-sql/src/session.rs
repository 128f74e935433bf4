use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use osprey_core::schema::{self, templates as col};
use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{Root, decode_parquet, layout};

/// How `osprey sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// One JSON object per row, as a JSON array.
    Json,
    /// CSV with a header row.
    Csv,
}

/// A read-only DataFusion session over one Osprey root.
pub struct SqlSession {
    ctx: SessionContext,
    root: Root,
}

impl std::fmt::Debug for SqlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSession").field("root", &self.root.url()).finish_non_exhaustive()
    }
}

fn df_err(e: datafusion::error::DataFusionError) -> Error {
    Error::invalid(e.to_string())
}

impl SqlSession {
    /// Opens a session over `root` with the `templates`, `observations`
    /// (per-frame boxes of the templates), `results` and `galleries` tables
    /// registered; a table with no files yet is empty, with its schema.
    pub async fn open(root: &Root) -> Result<SqlSession> {
        Self::open_with(root, false).await
    }

    /// Like [`SqlSession::open`]; with `audit`, the `audit` table (every
    /// search run, for administrators) is registered too.
    pub async fn open_with(root: &Root, audit: bool) -> Result<SqlSession> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let (base, store) = root.store();
        ctx.register_object_store(&base, store);
        for udf in [crate::cosine_similarity_udf(), crate::l2_distance_udf(), crate::vector_norm_udf()] {
            ctx.register_udf(udf);
        }
        let session = SqlSession { ctx, root: root.clone() };
        session.register_templates().await?;
        session.register_parquet_or_empty("observations", layout::OBSERVATIONS, schema::observation_schema()).await?;
        session.register_parquet_or_empty("results", layout::RESULTS, schema::result_schema()).await?;
        session.register_galleries().await?;
        if audit {
            session.register_parquet_or_empty("audit", layout::AUDIT, schema::audit_schema()).await?;
        }
        Ok(session)
    }

    /// The DataFusion context, for callers that build plans themselves.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Template files grouped by model folder (`templates/model=<m>/`).
    async fn template_models(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut by_model: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for obj in self.root.glob(&format!("{}/model=*/**/*.parquet", layout::TEMPLATES)).await? {
            let model = obj.key.split('/').nth(1).and_then(|s| s.strip_prefix("model=")).unwrap_or_default();
            by_model.entry(model.to_string()).or_default().push(obj.key);
        }
        Ok(by_model)
    }

    /// Registers `templates`. One model (one embedding width) is one Parquet
    /// listing table; several models are one table each (`templates_<n>`)
    /// unioned by a view, with `embedding` widened to `List<Float32>` because
    /// a column cannot have two fixed widths.
    async fn register_templates(&self) -> Result<()> {
        let models = self.template_models().await?;
        if models.is_empty() {
            let mut fields: Vec<Field> =
                schema::template_schema(1).fields().iter().map(|f| f.as_ref().clone()).collect();
            for f in fields.iter_mut().filter(|f| f.name() == col::EMBEDDING) {
                *f = Field::new(
                    col::EMBEDDING,
                    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, false))),
                    true,
                );
            }
            return self.register_empty("templates", Arc::new(Schema::new(fields)));
        }
        if models.len() == 1 {
            let (model, files) = models.iter().next().unwrap();
            return self.register_parquet("templates", &layout::model_dir(model), files).await;
        }
        let mut parts = Vec::new();
        for (i, (model, files)) in models.iter().enumerate() {
            let name = format!("templates_{i}");
            self.register_parquet(&name, &layout::model_dir(model), files).await?;
            let cols: Vec<String> = schema::template_schema(1)
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    col::EMBEDDING => "arrow_cast(embedding, 'List(Float32)') AS embedding".to_string(),
                    n => format!("\"{n}\""),
                })
                .collect();
            parts.push(format!("SELECT {} FROM {name}", cols.join(", ")));
        }
        self.ctx.sql(&format!("CREATE VIEW templates AS {}", parts.join(" UNION ALL "))).await.map_err(df_err)?;
        Ok(())
    }

    async fn register_parquet(&self, table: &str, folder: &str, files: &[String]) -> Result<()> {
        let url = self.root.url_of(&format!("{folder}/"));
        let opts = ParquetReadOptions::default();
        if let Err(e) = self.ctx.register_parquet(table, &url, opts).await {
            return Err(self.explain_failure(e, files).await);
        }
        Ok(())
    }

    async fn register_parquet_or_empty(&self, table: &str, folder: &str, empty: SchemaRef) -> Result<()> {
        let files: Vec<String> =
            self.root.glob(&format!("{folder}/**/*.parquet")).await?.into_iter().map(|o| o.key).collect();
        if files.is_empty() {
            self.register_empty(table, empty)
        } else {
            self.register_parquet(table, folder, &files).await
        }
    }

    fn register_empty(&self, table: &str, schema: SchemaRef) -> Result<()> {
        let mem = MemTable::try_new(schema, vec![vec![]]).map_err(df_err)?;
        self.ctx.register_table(table, Arc::new(mem)).map_err(df_err)?;
        Ok(())
    }

    async fn register_galleries(&self) -> Result<()> {
        let manifests = read_manifests_json(&self.root).await?;
        let schema = schema::gallery_schema();
        let get = |k: &str| -> Vec<serde_json::Value> {
            manifests.iter().map(|m| m.get(k).cloned().unwrap_or_default()).collect()
        };
        let s = |k: &str| -> ArrayRef {
            Arc::new(get(k).iter().map(|v| v.as_str().map(str::to_string)).collect::<StringArray>())
        };
        let i64s = |k: &str| -> Vec<Option<i64>> { get(k).iter().map(|v| v.as_i64()).collect() };
        let ts = |k: &str| -> ArrayRef { Arc::new(TimestampMillisecondArray::from(i64s(k)).with_timezone("UTC")) };
        let columns: Vec<ArrayRef> = vec![
            s("name"),
            s("model"),
            Arc::new(i64s("dim").into_iter().map(|v| v.map(|v| v as i32)).collect::<Int32Array>()),
            s("index_factory"),
            Arc::new(Int64Array::from(i64s("num_subjects"))),
            Arc::new(Int64Array::from(i64s("num_templates"))),
            Arc::new(get("threshold").iter().map(|v| v.as_f64().map(|f| f as f32)).collect::<Float32Array>()),
            Arc::new(get("threshold_fpir").iter().map(|v| v.as_f64()).collect::<Float64Array>()),
            ts("created_at_ms"),
            ts("updated_at_ms"),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("gallery manifests do not fit the galleries table: {e}"))
        })?;
        let mem = MemTable::try_new(schema, vec![vec![batch]]).map_err(df_err)?;
        self.ctx.register_table("galleries", Arc::new(mem)).map_err(df_err)?;
        Ok(())
    }

    /// Runs one read-only statement and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let df = self.plan(sql).await?;
        match df.collect().await {
            Ok(batches) => Ok(batches),
            Err(e) => {
                let files: Vec<String> =
                    self.root.glob("**/*.parquet").await.unwrap_or_default().into_iter().map(|o| o.key).collect();
                Err(self.explain_failure(e, &files).await)
            }
        }
    }

    /// The schema `sql` would answer with, from planning it (read-only rules
    /// as [`SqlSession::query`]) without running it.
    pub async fn schema(&self, sql: &str) -> Result<SchemaRef> {
        let df = self.plan(sql).await?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// Plans one statement, refusing anything but a query.
    async fn plan(&self, sql: &str) -> Result<datafusion::dataframe::DataFrame> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, options).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("not supported: ")
                && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
            {
                Error::new(
                    ErrorKind::Forbidden,
                    format!("Osprey SQL is read-only: only queries are allowed, not DDL, DML or COPY ({})", msg.trim()),
                )
            } else {
                df_err(e)
            }
        })?;
        Ok(df)
    }

    /// Turns a DataFusion failure into an error that names the corrupt file
    /// when one of `files` does not decode as Parquet.
    async fn explain_failure(&self, e: datafusion::error::DataFusionError, files: &[String]) -> Error {
        let msg = e.to_string();
        if msg.to_ascii_lowercase().contains("parquet") {
            for key in files {
                let Ok(bytes) = self.root.get(key).await else { continue };
                if let Err(corrupt) = decode_parquet(bytes, &self.root.url_of(key)) {
                    return Error::new(ErrorKind::Corrupt, format!("{} (query failed: {msg})", corrupt.message()));
                }
            }
        }
        df_err(e)
    }
}

/// Reads gallery manifests as loose JSON, so the SQL crate does not depend on
/// the index crate (and its native FAISS library).
async fn read_manifests_json(root: &Root) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for obj in root.glob(&format!("{}/*/manifest.json", layout::GALLERIES)).await? {
        let bytes = root.get(&obj.key).await?;
        out.push(serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("`{}` is not valid JSON: {e}", root.url_of(&obj.key)))
        })?);
    }
    Ok(out)
}

/// Renders batches as a table, JSON (array of row objects) or CSV.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    let err = |e: datafusion::arrow::error::ArrowError| Error::internal(format!("cannot format results: {e}"));
    match format {
        OutputFormat::Table => {
            Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(err)?.to_string())
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            for b in batches {
                writer.write(b).map_err(err)?;
            }
            writer.finish().map_err(err)?;
            let mut s = String::from_utf8(writer.into_inner()).expect("JSON is UTF-8");
            if s.is_empty() {
                s.push_str("[]");
            }
            Ok(s)
        }
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    writer.write(b).map_err(err)?;
                }
            }
            Ok(String::from_utf8(buf).expect("CSV is UTF-8"))
        }
    }
}
