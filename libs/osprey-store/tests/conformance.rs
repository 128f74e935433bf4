//! One conformance suite for every kind of root: `memory://`, `file://` and a
//! real S3-compatible server (s3s-fs, installed by infra/scripts/setup.sh).

#[path = "support/s3_server.rs"]
mod s3_server;

use s3_server::start_s3;

use bytes::Bytes;
use osprey_core::{ErrorKind, Modality};
use osprey_store::{
    BBox, Keypoint, ObservationRow, PutOutcome, Root, Template, read_observations, read_templates, templates_to_batch,
    write_observations, write_templates,
};

fn unit(dim: usize, seed: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|i| ((i * 31 + seed * 17) % 13) as f32 - 6.0).collect();
    if v.iter().all(|x| *x == 0.0) {
        v[0] = 1.0;
    }
    osprey_core::l2_normalize(&mut v);
    v
}

fn sample_templates(dim: usize) -> Vec<Template> {
    vec![
        Template {
            template_id: "t-1".into(),
            gallery: Some("g".into()),
            subject_id: Some("alice".into()),
            job_id: Some("job-1".into()),
            task_id: Some("task-1".into()),
            media_uri: Some("s3://bucket/a.mp4".into()),
            track_id: Some(3),
            person_track_id: Some("t-1".into()),
            modality: Some(Modality::Face),
            model: "m".into(),
            embedding: Some(unit(dim, 1)),
            quality: Some(0.75),
            frame_start: Some(10),
            frame_end: Some(42),
            t_start_ms: Some(400),
            t_end_ms: Some(1680),
            num_frames: Some(33),
            bbox: Some(BBox { x: 1.0, y: 2.0, w: 30.0, h: 40.0 }),
            landmarks: Some(vec![1.0, 2.0, 3.0, 4.0]),
            thumbnail_uri: Some("thumbs/t-1.jpg".into()),
            silhouette_uri: Some("silhouettes/t-1.png".into()),
            silhouette_frames: Some(30),
            error: None,
            created_at_ms: 1_700_000_000_000,
        },
        Template {
            template_id: "t-2".into(),
            modality: Some(Modality::Body),
            model: "m".into(),
            embedding: None,
            error: Some("no face found".into()),
            media_uri: Some("b.jpg".into()),
            created_at_ms: 1_700_000_000_001,
            ..Default::default()
        },
    ]
}

fn sample_observations() -> Vec<ObservationRow> {
    let face = |frame: i64, t_ms: i64| ObservationRow {
        template_id: "t-1".into(),
        modality: Modality::Face,
        frame,
        t_ms,
        bbox: BBox { x: 10.0 + frame as f32, y: 20.0, w: 30.0, h: 31.5 },
        keypoints: Some((0..5).map(|i| Keypoint { x: i as f32, y: 2.0 * i as f32, score: None }).collect()),
        quality: Some(0.5),
    };
    vec![
        face(10, 400),
        face(11, 440),
        ObservationRow {
            template_id: "t-3".into(),
            modality: Modality::Body,
            frame: 0,
            t_ms: 0,
            bbox: BBox { x: 0.0, y: 0.0, w: 64.0, h: 128.0 },
            keypoints: Some(vec![
                Keypoint { x: 1.0, y: 2.0, score: Some(0.9) },
                Keypoint { x: 3.0, y: 4.0, score: Some(0.1) },
            ]),
            quality: None,
        },
        ObservationRow { keypoints: None, ..face(12, 480) },
    ]
}

async fn suite(root: Root) {
    // Plain objects.
    assert_eq!(root.get("missing/key").await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!root.exists("a/b.txt").await.unwrap());
    root.put("a/b.txt", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(root.get("a/b.txt").await.unwrap(), Bytes::from_static(b"hello"));
    assert!(root.exists("a/b.txt").await.unwrap());

    // Put-if-absent keeps the first write.
    assert_eq!(root.put_if_absent("a/once", Bytes::from_static(b"first")).await.unwrap(), PutOutcome::Created);
    assert_eq!(root.put_if_absent("a/once", Bytes::from_static(b"second")).await.unwrap(), PutOutcome::AlreadyExists);
    assert_eq!(root.get("a/once").await.unwrap(), Bytes::from_static(b"first"));

    // Listing and globbing, relative to the root.
    root.put("templates/model=m/x.parquet", Bytes::from_static(b"1")).await.unwrap();
    root.put("templates/model=m/sub/y.parquet", Bytes::from_static(b"22")).await.unwrap();
    root.put("templates/model=n/z.txt", Bytes::from_static(b"3")).await.unwrap();
    let keys: Vec<String> = root.list("templates").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["templates/model=m/sub/y.parquet", "templates/model=m/x.parquet", "templates/model=n/z.txt"]);
    let sizes: Vec<u64> = root.list("templates/model=m").await.unwrap().into_iter().map(|o| o.size).collect();
    assert_eq!(sizes, [2, 1]);
    let glob = |p: &'static str| {
        let root = root.clone();
        async move { root.glob(p).await.unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>() }
    };
    assert_eq!(
        glob("templates/**/*.parquet").await,
        ["templates/model=m/sub/y.parquet", "templates/model=m/x.parquet"]
    );
    assert_eq!(glob("templates/*/*.parquet").await, ["templates/model=m/x.parquet"]);
    assert!(glob("nothing/**").await.is_empty());
    for key in ["templates/model=m/x.parquet", "templates/model=m/sub/y.parquet", "templates/model=n/z.txt"] {
        root.delete(key).await.unwrap();
    }
    root.delete("templates/never-existed").await.unwrap();
    assert!(root.list("templates").await.unwrap().is_empty());

    // Template tables round-trip through Parquet, nulls and failures included.
    let dim = 128;
    let templates = sample_templates(dim);
    let key = "templates/model=m/batch-1.parquet";
    assert_eq!(write_templates(&root, key, &templates, dim, true).await.unwrap(), PutOutcome::Created);
    assert_eq!(write_templates(&root, key, &templates[..1], dim, true).await.unwrap(), PutOutcome::AlreadyExists);
    let back = read_templates(&root, key).await.unwrap();
    assert_eq!(back, templates);

    // The file is zstd-compressed with a fixed-width embedding column.
    let bytes = root.get(key).await.unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(bytes).unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let emb_col =
        meta.row_group(0).columns().iter().find(|c| c.column_path().string().starts_with("embedding")).unwrap();
    assert_eq!(emb_col.compression(), parquet::basic::Compression::ZSTD(Default::default()));
    let (schema, _) = osprey_store::decode_parquet(root.get(key).await.unwrap(), key).unwrap();
    assert_eq!(schema.field_with_name("embedding").unwrap().data_type(), &osprey_core::schema::embedding_type(dim));

    // Files written before the table had `person_track_id` or the
    // silhouette columns still read.
    let mut legacy = templates_to_batch(&templates, dim).unwrap();
    for column in ["person_track_id", "silhouette_uri", "silhouette_frames"] {
        legacy.remove_column(legacy.schema().index_of(column).unwrap());
    }
    root.put("templates/model=m/legacy.parquet", osprey_store::encode_parquet(legacy.schema(), &[legacy]).unwrap())
        .await
        .unwrap();
    let back = read_templates(&root, "templates/model=m/legacy.parquet").await.unwrap();
    let expected: Vec<Template> = templates
        .iter()
        .map(|t| Template { person_track_id: None, silhouette_uri: None, silhouette_frames: None, ..t.clone() })
        .collect();
    assert_eq!(back, expected);
    // Without only the silhouette columns (written between the two changes).
    let mut between = templates_to_batch(&templates, dim).unwrap();
    for column in ["silhouette_uri", "silhouette_frames"] {
        between.remove_column(between.schema().index_of(column).unwrap());
    }
    root.put("templates/model=m/between.parquet", osprey_store::encode_parquet(between.schema(), &[between]).unwrap())
        .await
        .unwrap();
    let back = read_templates(&root, "templates/model=m/between.parquet").await.unwrap();
    let expected: Vec<Template> =
        templates.iter().map(|t| Template { silhouette_uri: None, silhouette_frames: None, ..t.clone() }).collect();
    assert_eq!(back, expected);

    // Observation tables round-trip: keypoints with and without scores, and none.
    let observations = sample_observations();
    let key = "observations/model=m/batch-1.parquet";
    assert_eq!(write_observations(&root, key, &observations, true).await.unwrap(), PutOutcome::Created);
    assert_eq!(write_observations(&root, key, &observations[..1], true).await.unwrap(), PutOutcome::AlreadyExists);
    assert_eq!(read_observations(&root, key).await.unwrap(), observations);
    let (schema, _) = osprey_store::decode_parquet(root.get(key).await.unwrap(), key).unwrap();
    assert_eq!(schema.as_ref(), osprey_core::schema::observation_schema().as_ref());
    // A template file is not an observations file.
    let err = read_observations(&root, "templates/model=m/batch-1.parquet").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);

    // Corrupt bytes are reported with the object's name.
    root.put("templates/model=m/bad.parquet", Bytes::from_static(b"PAR1 not really")).await.unwrap();
    let err = read_templates(&root, "templates/model=m/bad.parquet").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.message().contains("bad.parquet"), "{err}");
}

#[tokio::test]
async fn memory_root() {
    suite(Root::open("memory://conformance").unwrap()).await;
}

#[tokio::test]
async fn file_root() {
    let dir = tempfile::tempdir().unwrap();
    suite(Root::open(&format!("file://{}", dir.path().display())).unwrap()).await;
    // A plain path works too, and names its folder.
    let plain = dir.path().join("plain");
    let root = Root::open(plain.to_str().unwrap()).unwrap();
    root.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert!(plain.join("k").exists());
}

/// An s3s-fs server on a free loopback port, killed on drop.
#[tokio::test]
async fn s3_root() {
    let server = start_s3("osprey-test");
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let opts = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_access_key_id", "osprey"),
        ("aws_secret_access_key", "osprey-secret"),
        ("aws_allow_http", "true"),
    ];
    suite(Root::open_with("s3://osprey-test/some/prefix", &opts).unwrap()).await;
    // A wrong secret is an error, not silence.
    let bad = Root::open_with(
        "s3://osprey-test/p",
        &[
            ("aws_endpoint", endpoint.as_str()),
            ("aws_access_key_id", "osprey"),
            ("aws_secret_access_key", "wrong"),
            ("aws_allow_http", "true"),
        ],
    )
    .unwrap();
    assert_eq!(bad.put("k", Bytes::from_static(b"v")).await.unwrap_err().kind(), ErrorKind::Storage);
}

#[test]
fn rejects_invalid_templates() {
    let mut t = sample_templates(4);
    assert!(templates_to_batch(&t, 4).is_ok());
    t[0].embedding = Some(vec![1.0, 0.0, 0.0]);
    assert!(templates_to_batch(&t, 4).unwrap_err().message().contains("3 dimensions"));
    t[0].embedding = Some(vec![1.0, 1.0, 0.0, 0.0]);
    assert!(templates_to_batch(&t, 4).unwrap_err().message().contains("unit norm"));
    t[0].embedding = Some(vec![f32::NAN, 1.0, 0.0, 0.0]);
    assert!(templates_to_batch(&t, 4).unwrap_err().message().contains("NaN"));
    t[0].embedding = None;
    t[0].error = None;
    assert!(templates_to_batch(&t, 4).unwrap_err().message().contains("neither"));
    assert!(Root::open("ftp://x").unwrap_err().message().contains("unsupported"));
    assert!(Root::open("s3:///nobucket").is_err());
}
