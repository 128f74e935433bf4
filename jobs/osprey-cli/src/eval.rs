//! `osprey eval`: accuracy measured against ground truth.
//!
//! * `search` scores a search job's stored results with a truth CSV (which
//!   subject is in which media file): CMC, FNIR at FPIR, DIR at FAR, the
//!   job's own operating point and the DET curve, written as `metrics.json`
//!   and an HTML report with plots and face thumbnails.
//! * `pairs` measures 1:1 verification on a pairs list (LFW's `pairs.txt` or
//!   a `file_x,file_y,Decision` CSV): the images are embedded as `osprey embed
//!   --largest-face` embeds them, and compared by cosine similarity.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use osprey_core::{Error, ErrorKind};
use osprey_eval::plot::{Mark, det_png};
use osprey_eval::report::{
    JobResults, ModalityEvaluation, PairsPage, PlotRef, SearchEvalOptions, SearchReport, TruthRow, csv_error,
    evaluate_search, load, pairs_report_html, parse_truth, record_line, search_charts, search_report_html,
};
use osprey_models::MODEL_NAME;
use osprey_sql::SqlSession;
use osprey_store::{Root, decode_parquet, layout, templates_from_batch};
use serde_json::{Value, json};

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Score a search job's results against a truth CSV: CMC, FNIR@FPIR, DET, HTML report.
    Search(SearchEvalArgs),
    /// 1:1 verification accuracy (k-fold, EER, TAR@FAR) on a pairs list, from images.
    Pairs(PairsArgs),
}

/// Size of the report's charts, in pixels.
const CHART_SIZE: (u32, u32) = (800, 500);

#[derive(clap::Args)]
pub struct SearchEvalArgs {
    /// Root URL: a folder, file:///…, memory://NAME or s3://bucket/prefix.
    #[arg(long, env = "OSPREY_ROOT")]
    root: String,
    /// The search job to score (its `results` rows).
    #[arg(long)]
    job: String,
    /// Ground truth: a CSV with the header `media,subject`, one row per media
    /// file; `subject` is a gallery subject id, or `unknown` for a person not
    /// enrolled (a non-mated probe). Every face or track template of a media
    /// file takes its row's subject. `media` names a probe's `media_uri`
    /// exactly, else by a path suffix that starts at a `/`, else by file name;
    /// the first of these rules that matches anything decides, and it must
    /// match one media file only.
    #[arg(long, value_name = "CSV")]
    truth: PathBuf,
    /// Folder to write report.html, metrics.json, cmc.png, det.png and thumbs/ into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// FPIR targets to report FNIR (and DIR) at.
    #[arg(long, value_delimiter = ',', default_value = "0.001,0.01,0.1")]
    fpir: Vec<f64>,
    /// Ranks of the CMC curve: 1 to this.
    #[arg(long, default_value_t = 20)]
    max_rank: usize,
    /// Most thumbnails shown in each of the report's galleries (hits,
    /// misses, false matches); the counts are always complete.
    #[arg(long, default_value_t = 200)]
    gallery_limit: usize,
}

#[derive(clap::Args)]
pub struct PairsArgs {
    /// The pairs: LFW's `pairs.txt` (`name i j` for the same person, `name1 i
    /// name2 j` for two people, images at IMAGES/name/name_000i.jpg; a first
    /// line of numbers is the header) or a CSV with the header
    /// `file_x,file_y,Decision` (Yes/No; files relative to IMAGES).
    #[arg(long, value_name = "FILE")]
    pairs: PathBuf,
    /// Folder the pairs' images are in.
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Cross-validation folds (default: the count in pairs.txt's header, else
    /// 10). pairs.txt is folded in file order, as the LFW protocol defines; a
    /// CSV is first interleaved so that every fold holds both kinds of pair
    /// in their overall proportion.
    #[arg(long)]
    folds: Option<usize>,
    /// Folder to write metrics.json, report.html, det.png and the embeddings
    /// (embeddings.parquet, as `osprey embed` writes it) into.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Image doublings before detection: 0 finds faces from ~80 px, 1 from ~40 px.
    #[arg(long, default_value_t = 1)]
    upsample: u32,
    /// Folder with the model files (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
    /// Face model (`osprey models list`); the seed's models need --weights.
    #[arg(long, default_value = MODEL_NAME)]
    model: String,
    /// The model's checkpoint, as its authors publish it.
    #[arg(long, value_name = "FILE")]
    weights: Option<String>,
    /// Face detector: `mmod` or `mtcnn` (default: the model's own).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(osprey_models::registry::FaceDetectorKind::NAMES))]
    detector: Option<String>,
}

pub async fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Search(args) => search(args).await,
        EvalCommand::Pairs(args) => pairs(args).await,
    }
}

// ================================================================ search

/// Reads a truth CSV (see [`osprey_eval::report::parse_truth`]).
fn read_truth(path: &Path) -> anyhow::Result<Vec<TruthRow>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot read truth file {}: {e}", path.display())))?;
    Ok(parse_truth(&text, &path.display().to_string())?)
}

/// The job's searched probes of every modality (from `results` joined to
/// `templates`) and its templates that were never searched; with `boxes`,
/// also its templates' boxes (for truth given by points).
async fn load_job(root: &Root, job: &str, boxes: bool) -> anyhow::Result<JobResults> {
    layout::check_name("job", job)?;
    let session = SqlSession::open(root).await?;
    let batches = session.query(&load::results_query(job)?).await?;
    let (probes, orphans) = load::probes_from_batches(&batches)?;
    if probes.is_empty() && orphans.is_empty() {
        return Err(Error::not_found(format!(
            "job `{job}` has no search results under {}; list the jobs with: osprey sql --root {} \
             \"SELECT job_id, count(DISTINCT probe_template_id) AS probes FROM results GROUP BY 1\"",
            root.url(),
            root.url()
        ))
        .into());
    }
    if !orphans.is_empty() {
        eprintln!(
            "warning: {} probe templates of job `{job}` have results but no template row; skipped",
            orphans.len()
        );
    }
    let failures = load::failures_from_batches(&session.query(&load::failures_query(job)?).await?)?;
    let boxes = match boxes {
        true => load::boxes_from_batches(&session.query(&load::boxes_query(job)?).await?)?,
        false => Default::default(),
    };
    Ok(JobResults { job_id: job.to_string(), root: root.url().to_string(), probes, failures, boxes })
}

async fn search(args: SearchEvalArgs) -> anyhow::Result<()> {
    if args.max_rank == 0 {
        return Err(Error::invalid("--max-rank must be at least 1").into());
    }
    if let Some(f) = args.fpir.iter().find(|f| !(0.0..=1.0).contains(*f)) {
        return Err(Error::invalid(format!("--fpir {f} is not a rate between 0 and 1")).into());
    }
    let truth = read_truth(&args.truth)?;
    let root = Root::open(&args.root)?;
    let job = load_job(&root, &args.job, truth.iter().any(|r| r.at.is_some())).await?;
    let options = SearchEvalOptions { fpir: args.fpir.clone(), max_rank: args.max_rank };
    let mut report = evaluate_search(&job, &truth, &args.truth.display().to_string(), &options)?;
    for w in &report.warnings {
        eprintln!("{w}");
    }

    // Charts and thumbnails beside the report.
    let out = &args.out;
    std::fs::create_dir_all(out.join("thumbs"))
        .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot create {}: {e}", out.display())))?;
    let mut plots = Vec::new();
    let mut plot_notes = Vec::new();
    for chart in search_charts(&report, CHART_SIZE) {
        match chart.png {
            Ok(png) => {
                write_file(&out.join(chart.file), &png)?;
                plots.push(PlotRef { src: chart.file.to_string(), caption: chart.caption });
            }
            Err(e) => plot_notes.push(format!("{} not drawn: {}", chart.file, e.message())),
        }
    }
    for n in &plot_notes {
        eprintln!("warning: {n}");
    }
    let limit = args.gallery_limit;
    let mut written: HashMap<String, Option<String>> = HashMap::new();
    for shown in report.shown_probes_mut(limit) {
        if let Some(done) = written.get(&shown.template_id) {
            shown.thumbnail = done.clone();
            continue;
        }
        let Some(uri) = shown.thumbnail_uri.clone() else { continue };
        let name = match read_thumbnail(&root, &uri).await {
            Ok(bytes) => {
                let name = format!("thumbs/{}.jpg", shown.template_id);
                write_file(&out.join(&name), &bytes)?;
                Some(name)
            }
            Err(e) => {
                eprintln!("warning: no thumbnail for probe {}: {}", shown.template_id, e.message());
                None
            }
        };
        written.insert(shown.template_id.clone(), name.clone());
        shown.thumbnail = name;
    }
    write_file(&out.join("metrics.json"), serde_json::to_string_pretty(&report.metrics_json())?.as_bytes())?;
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let html = search_report_html(&report, &plots, &plot_notes, limit, &generated)?;
    let report_path = out.join("report.html");
    write_file(&report_path, html.as_bytes())?;
    print_search_summary(&report, &args, &report_path);
    Ok(())
}

/// The report's numbers on stdout: as a list for one modality, side by side
/// for several.
fn print_search_summary(report: &SearchReport, args: &SearchEvalArgs, report_path: &Path) {
    let rate = |v: Option<f64>| v.map_or("-".to_string(), |r| format!("{r:.4}"));
    let threshold = |t: Option<f32>| t.map_or("varies".to_string(), |t| format!("{t:.4}"));
    let cmc_at = |m: &ModalityEvaluation, k: usize| m.cmc.get(k - 1).map_or("-".into(), |p| format!("{:.4}", p.rate));
    println!("osprey eval search: job {}", args.job);
    if let [m] = report.modalities.as_slice() {
        let c = &m.counts;
        println!(
            "  {:<22} mated {} ({} not detected), non-mated {}; {} probe templates without truth",
            "searches", c.mated_searches, c.not_detected_mated, c.nonmated_searches, c.probes_without_truth
        );
        if let Some(r1) = m.rank1 {
            println!(
                "  {:<22} {r1:.4} (rank 5 {}, rank {} {})",
                "rank-1 rate",
                cmc_at(m, 5),
                args.max_rank,
                cmc_at(m, args.max_rank)
            );
        }
        for p in &m.fnir_at_fpir {
            println!(
                "  {:<22} {:.4} (threshold {:.4}, FPIR reached {:.4})",
                format!("FNIR @ FPIR {}", p.target_fpir),
                p.fnir,
                p.threshold,
                p.fpir
            );
        }
        let op = &m.operating_point;
        println!(
            "  {:<22} FNIR {}, FPIR {} at threshold {} ({} hits, {} misses, {} false matches)",
            "job operating point",
            rate(op.fnir),
            rate(op.fpir),
            threshold(op.threshold),
            c.hits,
            c.misses,
            c.false_matches
        );
    } else {
        let ms = &report.modalities;
        let row = |label: &str, cell: &dyn Fn(&ModalityEvaluation) -> String| {
            let cells: String = ms.iter().map(|m| format!(" {:>10}", cell(m))).collect();
            println!("  {label:<26}{cells}");
        };
        row("", &|m| m.modality.clone());
        row("probes", &|m| m.counts.job_probe_templates.to_string());
        row("mated searches", &|m| m.counts.mated_searches.to_string());
        row("  not detected", &|m| m.counts.not_detected_mated.to_string());
        row("non-mated searches", &|m| m.counts.nonmated_searches.to_string());
        row("rank-1 rate", &|m| rate(m.rank1));
        row("rank-5 rate", &|m| cmc_at(m, 5));
        row(&format!("rank-{} rate", args.max_rank), &|m| cmc_at(m, args.max_rank));
        for (i, target) in args.fpir.iter().enumerate() {
            row(&format!("FNIR @ FPIR {target}"), &|m| rate(m.fnir_at_fpir.get(i).map(|p| p.fnir)));
        }
        row("job threshold", &|m| threshold(m.operating_point.threshold));
        row("FNIR at job threshold", &|m| rate(m.operating_point.fnir));
        row("FPIR at job threshold", &|m| rate(m.operating_point.fpir));
        row("hits / misses / false", &|m| format!("{}/{}/{}", m.counts.hits, m.counts.misses, m.counts.false_matches));
    }
    println!("  {:<22} {}", "report", report_path.display());
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot write {}: {e}", path.display())).into())
}

/// A thumbnail's bytes: `uri` is a URL under the root (or a key relative to
/// it), read through the root; any other object URL is read from its folder.
async fn read_thumbnail(root: &Root, uri: &str) -> osprey_core::Result<bytes::Bytes> {
    let base = root.url_of("");
    let base = base.trim_end_matches('/');
    if let Some(rest) = uri.strip_prefix(base).filter(|r| r.starts_with('/')) {
        return root.get(rest.trim_start_matches('/')).await;
    }
    if !uri.contains("://") {
        return root.get(uri).await;
    }
    let (folder, name) = uri.rsplit_once('/').ok_or_else(|| Error::invalid(format!("bad thumbnail URL `{uri}`")))?;
    Root::open(folder)?.get(name).await
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => "-".into(),
        v => v.to_string().trim_matches('"').to_string(),
    }
}

// ================================================================ pairs

/// One verification pair, with image paths.
#[derive(Debug, Clone, PartialEq)]
struct Pair {
    a: String,
    b: String,
    same: bool,
}

/// Which file format the pairs came in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PairsFormat {
    /// LFW's `pairs.txt`: folds are consecutive.
    Lfw,
    /// `file_x,file_y,Decision`: folds are stratified.
    Csv,
}

/// Parses a pairs file; returns the pairs and, for pairs.txt, the folds its
/// header names.
fn parse_pairs(text: &str, images: &Path, name: &str) -> anyhow::Result<(Vec<Pair>, PairsFormat, Option<usize>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let path = |rel: &str| images.join(rel).display().to_string();
    if first.contains(',') {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
        let header = reader.headers().map_err(|e| csv_error(name, &e))?.clone();
        let col = |want: &str| header.iter().position(|h| h.eq_ignore_ascii_case(want));
        let (Some(x), Some(y), Some(d)) = (col("file_x"), col("file_y"), col("decision")) else {
            return Err(Error::invalid(format!(
                "{name} line 1: a pairs CSV needs the header `file_x,file_y,Decision`, found `{}`",
                header.iter().collect::<Vec<_>>().join(",")
            ))
            .into());
        };
        let mut pairs = Vec::new();
        for record in reader.records() {
            let r = record.map_err(|e| csv_error(name, &e))?;
            let line = record_line(text, &r, false);
            let same = match r[d].to_ascii_lowercase().as_str() {
                "yes" => true,
                "no" => false,
                other => {
                    return Err(Error::invalid(format!(
                        "{name} line {line}: Decision must be Yes or No, not `{other}`"
                    ))
                    .into());
                }
            };
            if r[x].is_empty() || r[y].is_empty() {
                return Err(Error::invalid(format!("{name} line {line}: empty file name")).into());
            }
            pairs.push(Pair { a: path(&r[x]), b: path(&r[y]), same });
        }
        return Ok((pairs, PairsFormat::Csv, None));
    }
    let lfw = |person: &str, n: &str, line: usize| -> anyhow::Result<String> {
        let n: u32 = n.parse().map_err(|_| {
            Error::invalid(format!("{name} line {line}: `{n}` is not an image number (name_0001.jpg is 1)"))
        })?;
        Ok(path(&format!("{person}/{person}_{n:04}.jpg")))
    };
    let mut pairs = Vec::new();
    let mut header: Option<(usize, Option<usize>)> = None;
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.is_empty() {
            continue;
        }
        if !seen_content && t.len() <= 2 && t.iter().all(|x| x.parse::<usize>().is_ok()) {
            seen_content = true;
            let n: Vec<usize> = t.iter().map(|x| x.parse().expect("checked")).collect();
            header = Some(if n.len() == 2 { (n[0], Some(n[1])) } else { (1, Some(n[0])) });
            continue;
        }
        seen_content = true;
        match t.as_slice() {
            [p, i, j] => pairs.push(Pair { a: lfw(p, i, line_no)?, b: lfw(p, j, line_no)?, same: true }),
            [p, i, q, j] => pairs.push(Pair { a: lfw(p, i, line_no)?, b: lfw(q, j, line_no)?, same: false }),
            _ => {
                return Err(Error::invalid(format!(
                    "{name} line {line_no}: expected `name i j` (same person) or `name1 i name2 j` (different), \
                     found {} fields",
                    t.len()
                ))
                .into());
            }
        }
    }
    let folds = match header {
        Some((folds, Some(per))) if folds > 1 => {
            if pairs.len() != folds * 2 * per {
                eprintln!(
                    "warning: {name}'s header announces {folds} folds of {per} matched + {per} mismatched pairs, \
                     but it has {} pairs",
                    pairs.len()
                );
            }
            Some(folds)
        }
        _ => None,
    };
    Ok((pairs, PairsFormat::Lfw, folds))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

async fn pairs(args: PairsArgs) -> anyhow::Result<()> {
    let name = args.pairs.display().to_string();
    let text = std::fs::read_to_string(&args.pairs)
        .map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot read pairs file {name}: {e}")))?;
    let (pairs, format, header_folds) = parse_pairs(&text, &args.images, &name)?;
    let folds = args.folds.or(header_folds).unwrap_or(10);
    let same = pairs.iter().filter(|p| p.same).count();
    if same == 0 || same == pairs.len() {
        return Err(Error::invalid(format!(
            "{name} has {} pairs, {same} of the same person: verification needs pairs of both kinds",
            pairs.len()
        ))
        .into());
    }
    if pairs.len() < folds {
        return Err(Error::invalid(format!("{} pairs cannot be split into {folds} folds", pairs.len())).into());
    }
    let mut images: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in &pairs {
        for f in [&p.a, &p.b] {
            if seen.insert(f.clone()) {
                images.push(f.clone());
            }
        }
    }
    let missing: Vec<&String> = images.iter().filter(|f| !Path::new(f).is_file()).collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(3).map(|s| s.as_str()).collect();
        return Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "{} of {} images of {name} do not exist (e.g. {}): check --images",
                missing.len(),
                images.len(),
                shown.join(", ")
            ),
        )
        .into());
    }

    // Embed every image once, exactly as `osprey embed --largest-face` does.
    let scratch = tempfile::tempdir()?;
    let parquet = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot create {}: {e}", dir.display())))?;
            dir.join("embeddings.parquet")
        }
        None => scratch.path().join("embeddings.parquet"),
    };
    crate::embed::run(crate::embed::EmbedArgs {
        modality: None,
        model: Some(args.model.clone()),
        weights: args.weights.clone(),
        detector: args.detector.clone(),
        aligned: false,
        largest_face: true,
        all_faces: false,
        upsample: args.upsample,
        max_detect_megapixels: 16.0,
        models: args.models.clone(),
        subject_from_parent: false,
        out: parquet.clone(),
        inputs: images.clone(),
        crops: Vec::new(),
        silhouettes: Vec::new(),
        frames: Vec::new(),
    })
    .await?;
    let bytes = std::fs::read(&parquet).with_context(|| format!("cannot read {}", parquet.display()))?;
    let (_, batches) = decode_parquet(bytes.into(), &parquet.display().to_string())?;
    let mut embedding: HashMap<String, Vec<f32>> = HashMap::new();
    for batch in &batches {
        for t in templates_from_batch(batch)? {
            if let (Some(m), Some(e)) = (t.media_uri, t.embedding) {
                embedding.entry(m).or_insert(e);
            }
        }
    }
    let no_face: Vec<&String> = images.iter().filter(|f| !embedding.contains_key(*f)).collect();

    // Scores; a pair with an image without a face scores -inf: rejected at
    // every threshold (wrong when it is a match), as infra/scripts/pairs_accuracy.py scores it.
    let scores: Vec<(f64, bool)> = pairs
        .iter()
        .map(|p| match (embedding.get(&p.a), embedding.get(&p.b)) {
            (Some(a), Some(b)) => (cosine(a, b), p.same),
            _ => (f64::NEG_INFINITY, p.same),
        })
        .collect();
    let ordered: Vec<(f64, bool)> = match format {
        PairsFormat::Lfw => scores.clone(),
        PairsFormat::Csv => {
            let labels: Vec<bool> = scores.iter().map(|s| s.1).collect();
            osprey_eval::stratified_order(&labels).into_iter().map(|i| scores[i]).collect()
        }
    };
    let (mean, std) = osprey_eval::verification_accuracy_kfold(&ordered, folds)?;
    let genuine: Vec<f64> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    let impostor: Vec<f64> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let (eer, eer_threshold) = osprey_eval::eer(&genuine, &impostor)?;
    let mut tar = Vec::new();
    for far in [1e-3, 1e-2] {
        let (rate, threshold) = osprey_eval::tar_at_far(&genuine, &impostor, far)?;
        tar.push(json!({"far": far, "tar": rate, "threshold": finite(threshold)}));
    }
    let det = osprey_eval::det_curve(&genuine, &impostor)?;
    let with_missing = scores.iter().filter(|s| s.0 == f64::NEG_INFINITY).count();

    println!("osprey eval pairs: {name}");
    println!(
        "  {:<22} {} ({same} same person, {} different); {} images, {} without a face ({with_missing} pairs)",
        "pairs",
        pairs.len(),
        pairs.len() - same,
        images.len(),
        no_face.len()
    );
    println!(
        "  {:<22} {mean:.4} ± {std:.4} ({folds} folds, {})",
        "accuracy",
        if format == PairsFormat::Lfw { "in file order" } else { "stratified" }
    );
    println!("  {:<22} {eer:.4} (threshold {eer_threshold:.4})", "EER");
    for t in &tar {
        println!("  {:<22} {}", format!("TAR @ FAR {}", t["far"]), num(&t["tar"]));
    }

    let Some(out) = &args.out else { return Ok(()) };
    let metrics = json!({
        "pairs_file": name,
        "images_dir": args.images.display().to_string(),
        "format": if format == PairsFormat::Lfw { "lfw-pairs" } else { "csv" },
        "model": args.model,
        "pairs": pairs.len(),
        "same": same,
        "different": pairs.len() - same,
        "images": images.len(),
        "images_without_face": no_face,
        "pairs_with_missing_face": with_missing,
        "folds": folds,
        "fold_order": if format == PairsFormat::Lfw { "file" } else { "stratified" },
        "accuracy_mean": mean,
        "accuracy_std": std,
        "eer": eer,
        "eer_threshold": finite(eer_threshold),
        "tar_at_far": tar,
        "det": det.iter().map(|p| json!({"threshold": finite(p.threshold), "fmr": p.fmr, "fnmr": p.fnmr})).collect::<Vec<_>>(),
        "scores": pairs.iter().zip(&scores).map(|(p, s)| json!({
            "x": p.a, "y": p.b, "same": p.same, "score": finite(s.0),
        })).collect::<Vec<_>>(),
    });
    write_file(&out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;
    let curve: Vec<(f64, f64)> = det.iter().map(|p| (p.fmr, p.fnmr)).collect();
    let mark = Mark { label: format!(" EER {eer:.3}"), x: eer, y: eer };
    let (plot, plot_note) = match det_png(&curve, &[mark], "FMR (log scale)", "FNMR", CHART_SIZE) {
        Ok(png) => {
            write_file(&out.join("det.png"), &png)?;
            (Some("det.png".to_string()), None)
        }
        Err(e) => {
            eprintln!("warning: det.png not drawn: {}", e.message());
            (None, Some(format!("det.png not drawn: {}", e.message())))
        }
    };
    let mut rows = vec![
        ("pairs (same / different)".to_string(), format!("{} ({same} / {})", pairs.len(), pairs.len() - same)),
        ("images (without a face)".into(), format!("{} ({})", images.len(), no_face.len())),
        ("pairs with an image without a face".into(), with_missing.to_string()),
        (format!("{folds}-fold accuracy"), format!("{mean:.4} ± {std:.4}")),
        ("EER".into(), format!("{eer:.4} (threshold {eer_threshold:.4})")),
    ];
    for t in &tar {
        rows.push((
            format!("TAR at FAR {}", t["far"]),
            format!("{} (threshold {})", num(&t["tar"]), num(&t["threshold"])),
        ));
    }
    let page = PairsPage {
        name: name.clone(),
        images: args.images.display().to_string(),
        model: args.model.clone(),
        generated: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        rows,
        no_face: no_face.iter().map(|f| f.to_string()).collect(),
        folds,
        fold_rule: if format == PairsFormat::Lfw {
            "folds in file order, as LFW's pairs.txt defines them".into()
        } else {
            "folds stratified by kind of pair".into()
        },
        plot,
        plot_note,
    };
    let report = out.join("report.html");
    write_file(&report, pairs_report_html(&page)?.as_bytes())?;
    println!("  {:<22} {}", "report", report.display());
    Ok(())
}

/// `v` for JSON, `null` when infinite.
fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfw_pairs_txt() {
        let text = "2\t1\nAbel\t1\t2\nAbel\t1\tBea\t3\nCid\t2\t4\nCid\t1\tDee\t12\n";
        let (pairs, format, folds) = parse_pairs(text, Path::new("/lfw"), "pairs.txt").unwrap();
        assert_eq!((format, folds), (PairsFormat::Lfw, Some(2)));
        assert_eq!(
            pairs[1],
            Pair { a: "/lfw/Abel/Abel_0001.jpg".into(), b: "/lfw/Bea/Bea_0003.jpg".into(), same: false }
        );
        assert_eq!(pairs.iter().filter(|p| p.same).count(), 2);
        let (pairs, _, folds) = parse_pairs("Abel 1 2\n", Path::new("/lfw"), "p").unwrap();
        assert_eq!((pairs.len(), folds), (1, None));
        let e = parse_pairs("10 300\nAbel 1\n", Path::new("/"), "p.txt").unwrap_err().to_string();
        assert!(e.contains("p.txt line 2"), "{e}");
        let e = parse_pairs("Abel x 2\n", Path::new("/"), "p.txt").unwrap_err().to_string();
        assert!(e.contains("line 1: `x` is not an image number"), "{e}");
    }

    #[test]
    fn pairs_csv() {
        let text = "file_x,file_y,Decision\r\nimg1.jpg,img2.jpg,Yes\r\nimg1.jpg,img3.jpg,No\r\n";
        let (pairs, format, folds) = parse_pairs(text, Path::new("/d"), "m.csv").unwrap();
        assert_eq!((format, folds, pairs.len()), (PairsFormat::Csv, None, 2));
        assert_eq!(pairs[0], Pair { a: "/d/img1.jpg".into(), b: "/d/img2.jpg".into(), same: true });
        let e = parse_pairs("file_x,file_y,Decision\na,b,Maybe\n", Path::new("/d"), "m.csv").unwrap_err();
        assert!(e.to_string().contains("m.csv line 2: Decision must be Yes or No"), "{e}");
    }
}
