//! SQL over a root: tables, vector functions, read-only enforcement, and
//! errors that name the broken file.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use osprey_core::{ErrorKind, Modality, OpenSetDecision};
use osprey_sql::{OutputFormat, SqlSession, format_batches};
use osprey_store::{
    BBox, Keypoint, ObservationRow, Root, SearchResultRow, Template, encode_parquet, layout, results_to_batch,
    write_observations, write_templates,
};

fn template(id: &str, gallery: Option<&str>, subject: Option<&str>, model: &str, e: Vec<f32>) -> Template {
    let mut e = e;
    osprey_core::l2_normalize(&mut e);
    Template {
        template_id: id.into(),
        gallery: gallery.map(Into::into),
        subject_id: subject.map(Into::into),
        modality: Some(Modality::Face),
        model: model.into(),
        embedding: Some(e),
        created_at_ms: 1_700_000_000_000,
        ..Default::default()
    }
}

async fn seeded(name: &str) -> Root {
    let root = Root::open(&format!("memory://{name}")).unwrap();
    let gallery = vec![
        template("a1", Some("g"), Some("alice"), "m4", vec![1.0, 0.0, 0.0, 0.0]),
        template("a2", Some("g"), Some("alice"), "m4", vec![1.0, 0.1, 0.0, 0.0]),
        template("b1", Some("g"), Some("bob"), "m4", vec![0.0, 1.0, 0.0, 0.0]),
    ];
    write_templates(&root, &layout::template_file("m4", "enrol-1"), &gallery, 4, true).await.unwrap();
    let probes = vec![template("p1", None, None, "m4", vec![0.0, 0.0, 3.0, 4.0])];
    write_templates(&root, &layout::template_file("m4", "probes-1"), &probes, 4, true).await.unwrap();
    // The probe is a track over frames 30, 32 and 34 moving right; a1 a photo.
    let observation = |id: &str, frame: i64, t_ms: i64, x: f32| ObservationRow {
        template_id: id.into(),
        modality: Modality::Face,
        frame,
        t_ms,
        bbox: BBox { x, y: 50.0, w: 40.0, h: 48.0 },
        keypoints: Some((0..5).map(|i| Keypoint { x: x + 8.0 * i as f32, y: 70.0, score: None }).collect()),
        quality: Some(0.8),
    };
    let track = vec![
        observation("p1", 30, 1200, 100.0),
        observation("p1", 32, 1280, 110.0),
        observation("p1", 34, 1360, 120.0),
    ];
    write_observations(&root, &layout::observation_file("m4", "probes-1"), &track, true).await.unwrap();
    let photo = vec![ObservationRow { keypoints: None, ..observation("a1", 0, 0, 5.0) }];
    write_observations(&root, &layout::observation_file("m4", "enrol-1"), &photo, true).await.unwrap();
    root
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn single_f64(batches: &[RecordBatch]) -> f64 {
    batches[0].column(0).as_primitive::<Float64Type>().value(0)
}

#[tokio::test]
async fn empty_root_has_empty_tables() {
    let root = Root::open("memory://sql-empty").unwrap();
    let s = SqlSession::open(&root).await.unwrap();
    for table in ["templates", "observations", "results", "galleries"] {
        let b = s.query(&format!("SELECT count(*) FROM {table}")).await.unwrap();
        assert_eq!(single_i64(&b), 0, "{table}");
    }
    // The empty observations table has the table's columns and types.
    let b = s.query("SELECT * FROM observations").await.unwrap();
    let schema = b.first().map(|b| b.schema()).unwrap_or_else(|| osprey_core::schema::observation_schema());
    assert_eq!(schema.fields(), osprey_core::schema::observation_schema().fields());
    let b = s
        .query("SELECT column_name FROM information_schema.columns WHERE table_name = 'observations' ORDER BY ordinal_position")
        .await
        .unwrap();
    assert_eq!(
        format_batches(&b, OutputFormat::Csv).unwrap(),
        "column_name\ntemplate_id\nmodality\nframe\nt_ms\nbbox\nkeypoints\nquality\n"
    );
}

#[tokio::test]
async fn templates_results_and_vector_functions() {
    let root = seeded("sql-main").await;
    let rows = vec![SearchResultRow {
        job_id: "j1".into(),
        probe_template_id: "p1".into(),
        rank: 1,
        subject_id: Some("alice".into()),
        gallery_template_id: Some("a1".into()),
        score: Some(0.1),
        decision: OpenSetDecision::Unknown,
        threshold: 0.5,
        person_track_id: None,
        fusion: None,
        modalities: Default::default(),
    }];
    let batch = results_to_batch(&rows).unwrap();
    // A results file written before the fusion columns existed: its first
    // eight columns only. It reads with those columns null.
    let earlier = vec![SearchResultRow { job_id: "j0".into(), ..rows[0].clone() }];
    let old = results_to_batch(&earlier).unwrap().project(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    root.put(&layout::result_file("j0", "part-0"), encode_parquet(old.schema(), &[old]).unwrap()).await.unwrap();
    root.put(&layout::result_file("j1", "part-0"), encode_parquet(batch.schema(), &[batch]).unwrap()).await.unwrap();

    let s = SqlSession::open(&root).await.unwrap();
    let b = s.query("SELECT count(*) FROM templates WHERE gallery = 'g'").await.unwrap();
    assert_eq!(single_i64(&b), 3);
    let b = s.query("SELECT count(*) FROM results WHERE fusion IS NULL AND face_score IS NULL").await.unwrap();
    assert_eq!(single_i64(&b), 2);
    let b = s
        .query("SELECT subject_id, count(*) AS n FROM templates WHERE subject_id IS NOT NULL GROUP BY subject_id ORDER BY subject_id")
        .await
        .unwrap();
    let text = format_batches(&b, OutputFormat::Csv).unwrap();
    assert_eq!(text, "subject_id,n\nalice,2\nbob,1\n");

    // Vector functions: exact values on unit vectors.
    let b = s.query("SELECT vector_norm(embedding) FROM templates WHERE template_id = 'p1'").await.unwrap();
    assert!((single_f64(&b) - 1.0).abs() < 1e-6);
    let b = s
        .query("SELECT cosine_similarity(g.embedding, p.embedding) FROM templates g, templates p WHERE g.template_id = 'b1' AND p.template_id = 'p1'")
        .await
        .unwrap();
    assert!(single_f64(&b).abs() < 1e-7);
    let b = s
        .query("SELECT l2_distance(embedding, [0.0, 1.0, 0.0, 0.0]) FROM templates WHERE template_id = 'a1'")
        .await
        .unwrap();
    assert!((single_f64(&b) - 2f64.sqrt()).abs() < 1e-6);
    let b = s
        .query("SELECT cosine_similarity(embedding, [0.0, 0.0, 0.6, 0.8]) FROM templates WHERE template_id = 'p1'")
        .await
        .unwrap();
    assert!((single_f64(&b) - 1.0).abs() < 1e-6);
    // Mismatched widths give NULL, not an error.
    let b = s.query("SELECT count(cosine_similarity(embedding, [1.0, 2.0])) FROM templates").await.unwrap();
    assert_eq!(single_i64(&b), 0);
    assert!(s.query("SELECT vector_norm(template_id) FROM templates").await.is_err());

    // Results join templates: who was searched, and what came back.
    let b = s
        .query("SELECT r.subject_id, r.decision FROM results r JOIN templates t ON t.template_id = r.probe_template_id WHERE r.job_id = 'j1'")
        .await
        .unwrap();
    assert_eq!(format_batches(&b, OutputFormat::Csv).unwrap(), "subject_id,decision\nalice,unknown\n");
    let json = format_batches(&b, OutputFormat::Json).unwrap();
    assert_eq!(json, r#"[{"subject_id":"alice","decision":"unknown"}]"#);

    // Observations join templates: the boxes of a track, frame by frame.
    let b = s
        .query(
            "SELECT o.frame, o.t_ms, o.bbox.x AS x, o.bbox.h AS h, array_length(o.keypoints) AS points, \
             o.keypoints[1]['x'] AS x0 \
             FROM observations o JOIN templates t ON o.template_id = t.template_id \
             WHERE t.template_id = 'p1' ORDER BY o.frame",
        )
        .await
        .unwrap();
    assert_eq!(
        format_batches(&b, OutputFormat::Csv).unwrap(),
        "frame,t_ms,x,h,points,x0\n30,1200,100.0,48.0,5,100.0\n32,1280,110.0,48.0,5,110.0\n34,1360,120.0,48.0,5,120.0\n"
    );
    // Every observation belongs to a template; a photo's has no keypoints here.
    let b = s
        .query(
            "SELECT t.subject_id, count(*) AS n, count(o.keypoints) AS with_points FROM observations o \
             LEFT JOIN templates t ON o.template_id = t.template_id GROUP BY 1 ORDER BY 1 NULLS LAST",
        )
        .await
        .unwrap();
    assert_eq!(format_batches(&b, OutputFormat::Csv).unwrap(), "subject_id,n,with_points\nalice,1,0\n,3,3\n");
}

#[tokio::test]
async fn sql_is_read_only() {
    let root = seeded("sql-readonly").await;
    let s = SqlSession::open(&root).await.unwrap();
    for stmt in [
        "CREATE TABLE x AS SELECT 1",
        "DROP TABLE templates",
        "INSERT INTO templates SELECT * FROM templates",
        "COPY templates TO '/tmp/osprey-copy-test.parquet'",
        "CREATE VIEW v AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let e = s.query(stmt).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Forbidden, "{stmt}: {e}");
        assert!(e.message().contains("read-only"), "{e}");
    }
    assert!(!std::path::Path::new("/tmp/osprey-copy-test.parquet").exists());
    // Queries still work after refusals.
    assert_eq!(single_i64(&s.query("SELECT count(*) FROM templates").await.unwrap()), 4);
}

#[tokio::test]
async fn corrupt_parquet_is_named() {
    let root = seeded("sql-corrupt").await;
    root.put("templates/model=m4/zz-broken.parquet", bytes::Bytes::from_static(b"this is not parquet at all"))
        .await
        .unwrap();
    let err = match SqlSession::open(&root).await {
        Err(e) => e,
        Ok(s) => s.query("SELECT count(*) FROM templates").await.unwrap_err(),
    };
    assert!(err.message().contains("zz-broken.parquet"), "{err}");
}

#[tokio::test]
async fn several_models_are_one_templates_view() {
    let root = seeded("sql-models").await;
    let wide = vec![template("w1", Some("g8"), Some("carol"), "m8", vec![1.0; 8])];
    write_templates(&root, &layout::template_file("m8", "enrol-1"), &wide, 8, true).await.unwrap();
    let s = SqlSession::open(&root).await.unwrap();
    let b = s.query("SELECT count(*) FROM templates").await.unwrap();
    assert_eq!(single_i64(&b), 5);
    let b = s.query("SELECT vector_norm(embedding) FROM templates WHERE model = 'm8'").await.unwrap();
    assert!((single_f64(&b) - 1.0).abs() < 1e-6);
    // Observations of every model's folder are one table.
    let box8 = BBox { x: 1.0, y: 2.0, w: 3.0, h: 4.0 };
    let obs8 = ObservationRow {
        template_id: "w1".into(),
        modality: Modality::Face,
        frame: 0,
        t_ms: 0,
        bbox: box8,
        keypoints: None,
        quality: None,
    };
    write_observations(&root, &layout::observation_file("m8", "enrol-1"), &[obs8], true).await.unwrap();
    let s = SqlSession::open(&root).await.unwrap();
    let b = s.query("SELECT count(*) FROM observations o JOIN templates t USING (template_id)").await.unwrap();
    assert_eq!(single_i64(&b), 5);
}
