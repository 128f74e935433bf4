//! `osprey eval`: accuracy measured against ground truth.
//!
//! * `search` scores a search job's stored results with a truth CSV (which
//!   subject is in which media file): CMC, FNIR at FPIR, DIR at FAR, the
//!   job's own operating point and the DET curve, written as `metrics.json`
//!   and an HTML report with plots and face thumbnails.
//! * `pairs` measures 1:1 verification on a pairs list (LFW's `pairs.txt` or
//!   a `file_x,file_y,Decision` CSV): the images are embedded as `osprey embed
//!   --largest-face` embeds them, and compared by cosine similarity.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow::array::{Array, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use osprey_core::{Error, ErrorKind, OpenSetDecision};
use osprey_eval::plot::{Mark, cmc_png, det_png};
use osprey_eval::{Candidate, Search};
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

// ================================================================ truth

/// One row of a truth CSV.
#[derive(Debug, Clone)]
struct TruthRow {
    /// 1-based line in the file.
    line: u64,
    media: String,
    /// `None`: not enrolled (`unknown`).
    subject: Option<String>,
}

/// Reads a `media,subject` CSV (other columns are ignored; `#` starts a
/// comment line). Errors name the file and line.
fn read_truth(path: &Path) -> anyhow::Result<Vec<TruthRow>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot read truth file {}: {e}", path.display())))?;
    parse_truth(&text, &path.display().to_string())
}

fn parse_truth(text: &str, name: &str) -> anyhow::Result<Vec<TruthRow>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad = |line: u64, what: String| Error::invalid(format!("{name} line {line}: {what}"));
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).comment(Some(b'#')).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| csv_error(name, &e))?.clone();
    let column = |want: &str| header.iter().position(|h| h.eq_ignore_ascii_case(want));
    let (Some(media_col), Some(subject_col)) = (column("media"), column("subject")) else {
        let line = header.position().map_or(1, |p| p.line());
        let found = header.iter().collect::<Vec<_>>().join(",");
        return Err(bad(line, format!("the header must name the columns `media,subject`, found `{found}`")).into());
    };
    let mut rows = Vec::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(name, &e))?;
        let line = record_line(text, &record, true);
        let media = record[media_col].trim_start_matches("./").to_string();
        let subject = record[subject_col].to_string();
        if media.is_empty() {
            return Err(bad(line, "empty `media`".into()).into());
        }
        if subject.is_empty() {
            return Err(bad(line, "empty `subject` (write `unknown` for a person not enrolled)".into()).into());
        }
        if let Some(first) = first_line.insert(media.clone(), line) {
            return Err(bad(line, format!("media `{media}` is listed again (first at line {first})")).into());
        }
        let subject = (!subject.eq_ignore_ascii_case("unknown")).then_some(subject);
        rows.push(TruthRow { line, media, subject });
    }
    if rows.is_empty() {
        return Err(Error::invalid(format!("{name} has no truth rows under its `media,subject` header")).into());
    }
    Ok(rows)
}

/// The 1-based line a CSV record starts on. (The csv crate positions a
/// record where the previous one ended: before line breaks and skipped
/// comment lines.)
fn record_line(text: &str, record: &csv::StringRecord, comments: bool) -> u64 {
    let b = text.as_bytes();
    let mut i = record.position().map_or(0, |p| p.byte() as usize).min(b.len());
    loop {
        while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
            i += 1;
        }
        if comments && i < b.len() && b[i] == b'#' && (i == 0 || b[i - 1] == b'\n') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        break;
    }
    1 + b[..i].iter().filter(|&&c| c == b'\n').count() as u64
}

fn csv_error(name: &str, e: &csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    let what = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("expected {expected_len} fields like the header, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    match line {
        Some(line) => Error::invalid(format!("{name} line {line}: {what}")),
        None => Error::invalid(format!("{name}: {what}")),
    }
}

/// The media of a job, indexed for matching truth rows to them.
struct MediaIndex {
    by_name: HashMap<String, Vec<String>>,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl MediaIndex {
    fn new<'a>(media: impl IntoIterator<Item = &'a String>) -> Self {
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for m in media.into_iter().collect::<BTreeSet<_>>() {
            by_name.entry(file_name(m).to_string()).or_default().push(m.clone());
        }
        Self { by_name }
    }

    /// The job media `truth` names: exactly, else by a path suffix starting
    /// at a `/`, else by file name. `Err` lists the media when the deciding
    /// rule matches more than one.
    fn resolve(&self, truth: &str) -> Result<Option<&str>, (&'static str, Vec<&str>)> {
        let Some(candidates) = self.by_name.get(file_name(truth)) else { return Ok(None) };
        let suffix =
            |m: &&String| m.ends_with(truth) && (truth.starts_with('/') || m[..m.len() - truth.len()].ends_with('/'));
        let rules: [(&'static str, Vec<&str>); 3] = [
            ("exactly", candidates.iter().filter(|m| *m == truth).map(String::as_str).collect()),
            ("path suffix", candidates.iter().filter(suffix).map(String::as_str).collect()),
            ("file name", candidates.iter().map(String::as_str).collect()),
        ];
        for (rule, found) in rules {
            match found.len() {
                0 => continue,
                1 => return Ok(Some(found[0])),
                _ => return Err((rule, found)),
            }
        }
        Ok(None)
    }
}

// ================================================================ search: data

/// A probe template of the job, with its ranked candidates.
#[derive(Debug, Clone, Default)]
struct Probe {
    template_id: String,
    media: String,
    track: Option<i64>,
    t_start_ms: Option<i64>,
    t_end_ms: Option<i64>,
    thumbnail_uri: Option<String>,
    decision: Option<String>,
    threshold: Option<f32>,
    /// (rank, subject, score) by rank; a row without a subject (an empty
    /// gallery) is left out.
    candidates: Vec<(i32, String, f32)>,
}

impl Probe {
    fn top(&self) -> Option<&(i32, String, f32)> {
        self.candidates.first()
    }
    fn is_match(&self) -> bool {
        self.decision.as_deref() == Some(OpenSetDecision::Match.as_str())
    }
}

/// A template of the job that was not searched: an input without a face.
struct Failure {
    media: String,
    error: Option<String>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a dyn Array> {
    batch.column_by_name(name).map(|c| c.as_ref()).with_context(|| format!("query result has no `{name}` column"))
}

fn strings(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    let c = cast(column(batch, name)?, &DataType::Utf8)?;
    let a = c.as_any().downcast_ref::<StringArray>().context("cast to strings")?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect())
}

fn ints(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<Option<i64>>> {
    let c = cast(column(batch, name)?, &DataType::Int64)?;
    let a = c.as_any().downcast_ref::<Int64Array>().context("cast to integers")?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

fn floats(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<Option<f32>>> {
    let c = cast(column(batch, name)?, &DataType::Float32)?;
    let a = c.as_any().downcast_ref::<Float32Array>().context("cast to floats")?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

/// The job's searched probes (from `results` joined to `templates`) and its
/// templates that were never searched (inputs without a face).
async fn load_job(root: &Root, job: &str) -> anyhow::Result<(Vec<Probe>, Vec<Failure>, usize)> {
    layout::check_name("job", job)?;
    let session = SqlSession::open(root).await?;
    let batches = session
        .query(&format!(
            "SELECT r.probe_template_id AS probe, r.rank AS rnk, r.subject_id AS subject, r.score AS score, \
             r.decision AS decision, r.threshold AS threshold, t.media_uri AS media, t.track_id AS track, \
             t.t_start_ms AS t0, t.t_end_ms AS t1, t.thumbnail_uri AS thumb \
             FROM results r LEFT JOIN templates t ON t.template_id = r.probe_template_id \
             WHERE r.job_id = '{job}' ORDER BY r.probe_template_id, r.rank"
        ))
        .await?;
    let mut probes: Vec<Probe> = Vec::new();
    let mut orphans = BTreeSet::new();
    for b in &batches {
        let (ids, ranks, subjects, scores) =
            (strings(b, "probe")?, ints(b, "rnk")?, strings(b, "subject")?, floats(b, "score")?);
        let (decisions, thresholds, media) = (strings(b, "decision")?, floats(b, "threshold")?, strings(b, "media")?);
        let (tracks, t0, t1, thumbs) = (ints(b, "track")?, ints(b, "t0")?, ints(b, "t1")?, strings(b, "thumb")?);
        for i in 0..b.num_rows() {
            let id = ids[i].clone().unwrap_or_default();
            let Some(m) = media[i].clone() else {
                orphans.insert(id);
                continue;
            };
            if probes.last().is_none_or(|p| p.template_id != id) {
                probes.push(Probe {
                    template_id: id,
                    media: m,
                    track: tracks[i],
                    t_start_ms: t0[i],
                    t_end_ms: t1[i],
                    thumbnail_uri: thumbs[i].clone(),
                    decision: decisions[i].clone(),
                    threshold: thresholds[i],
                    candidates: Vec::new(),
                });
            }
            let p = probes.last_mut().expect("pushed above");
            let rank = ranks[i].unwrap_or(0) as i32;
            if let (Some(s), Some(score)) = (subjects[i].clone(), scores[i])
                && p.candidates.last().is_none_or(|c| c.0 != rank)
            {
                p.candidates.push((rank, s, score));
            }
        }
    }
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
    let batches = session
        .query(&format!(
            "SELECT media_uri AS media, error FROM templates WHERE job_id = '{job}' AND error IS NOT NULL \
             AND media_uri IS NOT NULL ORDER BY media_uri"
        ))
        .await?;
    let mut failures = Vec::new();
    for b in &batches {
        let (media, errors) = (strings(b, "media")?, strings(b, "error")?);
        for (m, e) in media.into_iter().zip(errors) {
            failures.push(Failure { media: m.unwrap_or_default(), error: e });
        }
    }
    Ok((probes, failures, orphans.len()))
}

// ================================================================ search: metrics

/// How a truth row fared.
enum TruthOutcome<'a> {
    /// Its media gave searched probes.
    Searched,
    /// Its media is in the job but no face was found (or it failed).
    NotDetected(&'a Failure),
    /// No media of the job matches it.
    NotInJob,
}

/// One thumbnail of a report gallery.
struct Shown<'a> {
    probe: &'a Probe,
    truth: Option<&'a str>,
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
    let (probes, failures, _) = load_job(&root, &args.job).await?;

    // Match the truth rows to the job's media.
    let job_media: Vec<&String> = probes.iter().map(|p| &p.media).chain(failures.iter().map(|f| &f.media)).collect();
    let index = MediaIndex::new(job_media.iter().copied());
    let truth_name = args.truth.display().to_string();
    let mut truth_of: HashMap<&str, &TruthRow> = HashMap::new();
    let mut resolved: Vec<(&TruthRow, Option<&str>)> = Vec::new();
    for row in &truth {
        let media = index.resolve(&row.media).map_err(|(rule, found)| {
            let shown: Vec<&str> = found.iter().take(5).copied().collect();
            Error::invalid(format!(
                "{truth_name} line {}: `{}` matches {} media of job `{}` by {rule} ({}{}); write more of the path",
                row.line,
                row.media,
                found.len(),
                args.job,
                shown.join(", "),
                if found.len() > 5 { ", …" } else { "" }
            ))
        })?;
        if let Some(m) = media
            && let Some(other) = truth_of.insert(m, row)
        {
            return Err(Error::invalid(format!(
                "{truth_name} lines {} and {} both name media `{m}`: one subject per media file",
                other.line, row.line
            ))
            .into());
        }
        resolved.push((row, media));
    }
    if truth_of.is_empty() {
        let example = job_media.first().map_or(String::new(), |m| format!(", e.g. `{m}`"));
        return Err(Error::invalid(format!(
            "none of the {} media in {truth_name} (e.g. `{}`) is a media file of job `{}` ({} media{example}): \
             name them by path or file name",
            truth.len(),
            truth[0].media,
            args.job,
            index.by_name.values().map(Vec::len).sum::<usize>()
        ))
        .into());
    }
    let searched: BTreeSet<&str> = probes.iter().map(|p| p.media.as_str()).collect();
    let failure_of: HashMap<&str, &Failure> = failures.iter().map(|f| (f.media.as_str(), f)).collect();
    let outcome = |media: Option<&str>| match media {
        Some(m) if searched.contains(m) => TruthOutcome::Searched,
        Some(m) => failure_of.get(m).map_or(TruthOutcome::NotInJob, |f| TruthOutcome::NotDetected(*f)),
        None => TruthOutcome::NotInJob,
    };

    // Searches: every probe with truth, and a miss for each mated media
    // without a face. Non-mated media without a face are not searches: they
    // could not alarm, and counting them would lower FPIR.
    let mut searches = Vec::new();
    let mut evaluated: Vec<(&Probe, Option<&str>)> = Vec::new();
    let mut without_truth = 0;
    for p in &probes {
        let Some(row) = truth_of.get(p.media.as_str()) else {
            without_truth += 1;
            continue;
        };
        searches.push(Search {
            mate: row.subject.clone(),
            candidates: p.candidates.iter().map(|c| Candidate { subject_id: c.1.clone(), score: c.2 }).collect(),
        });
        evaluated.push((p, row.subject.as_deref()));
    }
    let mut not_detected = Vec::new();
    let mut not_in_job = Vec::new();
    for &(row, media) in &resolved {
        match outcome(media) {
            TruthOutcome::Searched => {}
            TruthOutcome::NotDetected(f) => {
                if let Some(s) = &row.subject {
                    searches.push(Search { mate: Some(s.clone()), candidates: Vec::new() });
                }
                not_detected.push((row, f));
            }
            TruthOutcome::NotInJob => not_in_job.push(row),
        }
    }
    if !not_in_job.is_empty() {
        eprintln!(
            "warning: {} of {} truth rows name no media of job `{}` (e.g. line {}: `{}`); they are left out",
            not_in_job.len(),
            truth.len(),
            args.job,
            not_in_job[0].line,
            not_in_job[0].media
        );
    }
    let mated = searches.iter().filter(|s| s.mate.is_some()).count();
    let nonmated = searches.len() - mated;
    if searches.is_empty() {
        return Err(
            Error::invalid("nothing to evaluate: every matched truth row is non-mated with no face found").into()
        );
    }

    // Metrics.
    let cmc = if mated > 0 { osprey_eval::cmc(&searches, args.max_rank)? } else { Vec::new() };
    let mut fnir_at_fpir = Vec::new();
    let mut dir_at_far = Vec::new();
    let mut det = Vec::new();
    if mated > 0 && nonmated > 0 {
        for &target in &args.fpir {
            let (fnir, threshold) = osprey_eval::fnir_at_fpir(&searches, target, 1)?;
            let fpir = osprey_eval::fpir(&searches, threshold)?;
            fnir_at_fpir.push(json!({"target_fpir": target, "fpir": fpir, "fnir": fnir, "threshold": threshold}));
            let mut ranks = vec![1];
            if args.max_rank > 1 {
                ranks.push(args.max_rank);
            }
            for rank in ranks {
                let (dir, threshold) = osprey_eval::dir_at_far(&searches, target, rank)?;
                dir_at_far.push(json!({"far": target, "rank": rank, "dir": dir, "threshold": threshold}));
            }
        }
        det = osprey_eval::identification_det(&searches, 1)?;
    }

    // The job's own operating point, and the report's galleries, from the
    // decisions stored with the results.
    let thresholds: BTreeSet<u32> = evaluated.iter().filter_map(|(p, _)| p.threshold).map(f32::to_bits).collect();
    let mut hits = Vec::new();
    let mut misses = Vec::new();
    let mut false_matches = Vec::new();
    for &(p, truth) in &evaluated {
        let top = p.top().map(|c| c.1.as_str());
        match truth {
            Some(s) if p.is_match() && top == Some(s) => hits.push(Shown { probe: p, truth }),
            Some(_) => misses.push(Shown { probe: p, truth }),
            None if p.is_match() => false_matches.push(Shown { probe: p, truth }),
            None => {}
        }
    }
    let mated_missed = misses.len() + not_detected.iter().filter(|(r, _)| r.subject.is_some()).count();
    let stored_fnir = (mated > 0).then(|| mated_missed as f64 / mated as f64);
    let stored_fpir = (nonmated > 0).then(|| false_matches.len() as f64 / nonmated as f64);
    let operating = if thresholds.len() == 1 {
        let t = f32::from_bits(*thresholds.first().expect("one threshold"));
        let fnir = if mated > 0 { Some(osprey_eval::fnir(&searches, t, 1)?) } else { None };
        let fpir = if nonmated > 0 { Some(osprey_eval::fpir(&searches, t)?) } else { None };
        if fnir != stored_fnir || fpir != stored_fpir {
            eprintln!(
                "note: at threshold {t} the stored decisions give FNIR {stored_fnir:?}, FPIR {stored_fpir:?}; \
                 recomputed (ties between candidates ranked pessimistically) FNIR {fnir:?}, FPIR {fpir:?}"
            );
        }
        json!({"threshold": t, "fnir": fnir, "fpir": fpir, "source": "the threshold stored with the results"})
    } else {
        let ts: Vec<f32> = thresholds.iter().map(|b| f32::from_bits(*b)).collect();
        json!({"threshold": null, "thresholds": ts, "fnir": stored_fnir, "fpir": stored_fpir,
               "source": "the decisions stored with the results (their thresholds differ)"})
    };

    // Output.
    let out = &args.out;
    std::fs::create_dir_all(out.join("thumbs"))
        .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot create {}: {e}", out.display())))?;
    let mut plots = Vec::new();
    let mut plot_notes = Vec::new();
    if !cmc.is_empty() {
        match cmc_png(&cmc, CHART_SIZE) {
            Ok(png) => {
                write_file(&out.join("cmc.png"), &png)?;
                plots.push(("cmc.png", "CMC: share of mated probes whose mate is within each rank"));
            }
            Err(e) => plot_notes.push(format!("cmc.png not drawn: {}", e.message())),
        }
    }
    if !det.is_empty() {
        let curve: Vec<(f64, f64)> = det.iter().map(|p| (p.fpir, p.fnir)).collect();
        let marks: Vec<Mark> = match (&operating["fpir"], &operating["fnir"]) {
            (Value::Number(x), Value::Number(y)) => vec![Mark {
                label: format!(" job ({})", fmt_threshold(&operating["threshold"])),
                x: x.as_f64().unwrap_or(0.0),
                y: y.as_f64().unwrap_or(0.0),
            }],
            _ => Vec::new(),
        };
        match det_png(&curve, &marks, "FPIR (log scale)", "FNIR (rank 1)", CHART_SIZE) {
            Ok(png) => {
                write_file(&out.join("det.png"), &png)?;
                plots.push((
                    "det.png",
                    if marks.is_empty() || marks[0].x > 0.0 {
                        "DET: FNIR (rank 1) against FPIR over thresholds; red: the job's threshold"
                    } else {
                        "DET: FNIR (rank 1) against FPIR over thresholds; the job's threshold has FPIR 0, off the log axis"
                    },
                ));
            }
            Err(e) => plot_notes.push(format!("det.png not drawn: {}", e.message())),
        }
    }
    for n in &plot_notes {
        eprintln!("warning: {n}");
    }

    let limit = args.gallery_limit;
    let mut thumbs: HashMap<&str, String> = HashMap::new();
    for shown in hits.iter().take(limit).chain(misses.iter().take(limit)).chain(false_matches.iter().take(limit)) {
        let p = shown.probe;
        let Some(uri) = &p.thumbnail_uri else { continue };
        match read_thumbnail(&root, uri).await {
            Ok(bytes) => {
                let name = format!("thumbs/{}.jpg", p.template_id);
                write_file(&out.join(&name), &bytes)?;
                thumbs.insert(&p.template_id, name);
            }
            Err(e) => eprintln!("warning: no thumbnail for probe {}: {}", p.template_id, e.message()),
        }
    }

    let probe_json = |s: &Shown| {
        let p = s.probe;
        json!({
            "template_id": p.template_id, "media": p.media, "track": p.track,
            "t_start_ms": p.t_start_ms, "t_end_ms": p.t_end_ms, "truth": s.truth,
            "decision": p.decision, "candidate": p.top().map(|c| &c.1), "score": p.top().map(|c| c.2),
            "threshold": p.threshold, "thumbnail": thumbs.get(p.template_id.as_str()),
        })
    };
    let detected_mated = evaluated.iter().filter(|e| e.1.is_some()).count();
    let nd_mated = not_detected.iter().filter(|(r, _)| r.subject.is_some()).count();
    let metrics = json!({
        "job_id": args.job,
        "root": root.url(),
        "truth": truth_name,
        "counts": {
            "truth_rows": truth.len(),
            "truth_mated": truth.iter().filter(|r| r.subject.is_some()).count(),
            "truth_nonmated": truth.iter().filter(|r| r.subject.is_none()).count(),
            "truth_not_in_job": not_in_job.len(),
            "not_detected_mated": nd_mated,
            "not_detected_nonmated": not_detected.len() - nd_mated,
            "job_probe_templates": probes.len(),
            "probes_without_truth": without_truth,
            "mated_searches": mated,
            "mated_probes_detected": detected_mated,
            "nonmated_searches": nonmated,
            "hits": hits.len(),
            "misses": misses.len(),
            "false_matches": false_matches.len(),
        },
        "cmc": cmc.iter().enumerate().map(|(i, r)| json!({"rank": i + 1, "rate": r})).collect::<Vec<_>>(),
        "rank1": cmc.first(),
        "fnir_at_fpir": fnir_at_fpir,
        "dir_at_far": dir_at_far,
        "operating_point": operating,
        "det": det,
        "galleries": {
            "hits": hits.iter().map(probe_json).collect::<Vec<_>>(),
            "misses": misses.iter().map(probe_json).collect::<Vec<_>>(),
            "false_matches": false_matches.iter().map(probe_json).collect::<Vec<_>>(),
        },
        "not_detected": not_detected.iter().map(|(r, f)| json!({
            "line": r.line, "media": f.media, "truth": r.subject, "error": f.error,
        })).collect::<Vec<_>>(),
        "not_in_job": not_in_job.iter().map(|r| json!({"line": r.line, "media": r.media})).collect::<Vec<_>>(),
    });
    write_file(&out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;

    let html = search_html(&metrics, &plots, &plot_notes, &hits, &misses, &false_matches, &thumbs, limit);
    let report = out.join("report.html");
    write_file(&report, html.as_bytes())?;

    // Summary.
    let rate = |v: &Value| v.as_f64().map_or("-".to_string(), |r| format!("{r:.4}"));
    println!("osprey eval search: job {}", args.job);
    println!(
        "  {:<22} mated {mated} ({nd_mated} not detected), non-mated {nonmated}; {} probe templates without truth",
        "searches", without_truth
    );
    if let Some(r1) = cmc.first() {
        let r_at = |k: usize| cmc.get(k - 1).map_or("-".into(), |r| format!("{r:.4}"));
        println!(
            "  {:<22} {r1:.4} (rank 5 {}, rank {} {})",
            "rank-1 rate",
            r_at(5),
            args.max_rank,
            r_at(args.max_rank)
        );
    }
    for p in &fnir_at_fpir {
        println!(
            "  {:<22} {} (threshold {}, FPIR reached {})",
            format!("FNIR @ FPIR {}", p["target_fpir"]),
            rate(&p["fnir"]),
            fmt_threshold(&p["threshold"]),
            rate(&p["fpir"])
        );
    }
    println!(
        "  {:<22} FNIR {}, FPIR {} at threshold {} ({} hits, {} misses, {} false matches)",
        "job operating point",
        rate(&operating["fnir"]),
        rate(&operating["fpir"]),
        fmt_threshold(&operating["threshold"]),
        hits.len(),
        misses.len(),
        false_matches.len()
    );
    println!("  {:<22} {}", "report", report.display());
    Ok(())
}

fn fmt_threshold(v: &Value) -> String {
    v.as_f64().map_or("varies".to_string(), |t| format!("{t:.4}"))
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

// ================================================================ HTML

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An `<img>` that marks itself `data-loaded="true"` once it has decoded (a
/// headless browser can check that every image of the page loaded).
fn img(src: &str, alt: &str, class: &str) -> String {
    format!(
        "<img class=\"{class}\" src=\"{}\" alt=\"{}\" onload=\"if(this.naturalWidth>0)this.dataset.loaded='true'\">",
        esc(src),
        esc(alt)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1200px}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}\
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.plots img{max-width:100%;border:1px solid #ddd;margin:0 1em 1em 0}\
.gallery{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:2em}\
.card{border:1px solid #ccc;border-radius:4px;padding:6px;width:170px;font-size:12px;word-wrap:break-word}\
.card img,.card .none{width:150px;height:150px;object-fit:contain;background:#eee;display:block}\
.hit{border-color:#3a3}.miss{border-color:#d80}.false{border-color:#c22}.muted{color:#777}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        esc(title)
    )
}

fn table(rows: &[(String, String)]) -> String {
    let mut s = String::from("<table>\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{}</th><td class=\"n\">{}</td></tr>", esc(k), esc(v));
    }
    s + "</table>\n"
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => "-".into(),
        v => v.to_string().trim_matches('"').to_string(),
    }
}

fn time_range(p: &Probe) -> String {
    match (p.t_start_ms, p.t_end_ms) {
        (Some(a), Some(b)) => format!("{:.2}–{:.2} s", a as f64 / 1000.0, b as f64 / 1000.0),
        _ => "still image".into(),
    }
}

fn card(s: &Shown, kind: &str, thumbs: &HashMap<&str, String>) -> String {
    let p = s.probe;
    let picture = match thumbs.get(p.template_id.as_str()) {
        Some(src) => img(src, &format!("face in {}", file_name(&p.media)), "thumb"),
        None => "<div class=\"none\">no thumbnail</div>".into(),
    };
    let (who, score) = match p.top() {
        Some((_, subject, score)) => (subject.as_str(), format!("{score:.4}")),
        None => ("(no candidate)", "-".into()),
    };
    let verdict = match (kind, s.truth) {
        ("hit", Some(t)) => format!("<b>{}</b>", esc(t)),
        ("miss", Some(t)) if p.is_match() => format!("truth <b>{}</b>, matched <b>{}</b>", esc(t), esc(who)),
        ("miss", Some(t)) => format!("truth <b>{}</b>, unknown (best {})", esc(t), esc(who)),
        _ => format!("not enrolled, matched <b>{}</b>", esc(who)),
    };
    let track = p.track.map_or(String::new(), |t| format!(", track {t}"));
    format!(
        "<div class=\"card {kind}\">{picture}<div title=\"{}\">{}</div><div>{}{track}</div><div>{verdict}</div>\
         <div>score {score} / threshold {}</div></div>\n",
        esc(&p.media),
        esc(file_name(&p.media)),
        time_range(p),
        p.threshold.map_or("-".into(), |t| format!("{t:.4}"))
    )
}

#[allow(clippy::too_many_arguments)]
fn search_html(
    m: &Value,
    plots: &[(&str, &str)],
    plot_notes: &[String],
    hits: &[Shown],
    misses: &[Shown],
    false_matches: &[Shown],
    thumbs: &HashMap<&str, String>,
    limit: usize,
) -> String {
    let c = &m["counts"];
    let mut b = String::new();
    let _ = writeln!(b, "<h1>Search evaluation: job <code>{}</code></h1>", esc(m["job_id"].as_str().unwrap_or("")));
    let _ = writeln!(
        b,
        "<p class=\"muted\">Root {} · truth {} · generated {}</p>",
        esc(m["root"].as_str().unwrap_or("")),
        esc(m["truth"].as_str().unwrap_or("")),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    b.push_str("<h2>Summary</h2>\n");
    let mut rows = vec![
        (
            "truth rows (mated / non-mated)".to_string(),
            format!("{} ({} / {})", c["truth_rows"], c["truth_mated"], c["truth_nonmated"]),
        ),
        ("truth rows naming no media of the job".into(), c["truth_not_in_job"].to_string()),
        (
            "media without a face (mated / non-mated)".into(),
            format!("{} / {}", c["not_detected_mated"], c["not_detected_nonmated"]),
        ),
        ("mated searches (faces + undetected media)".into(), c["mated_searches"].to_string()),
        ("non-mated searches".into(), c["nonmated_searches"].to_string()),
        ("probe templates without truth (ignored)".into(), c["probes_without_truth"].to_string()),
        ("rank-1 identification rate".into(), num(&m["rank1"])),
    ];
    let op = &m["operating_point"];
    rows.push(("job threshold".into(), fmt_threshold(&op["threshold"])));
    rows.push(("FNIR at the job threshold".into(), num(&op["fnir"])));
    rows.push(("FPIR at the job threshold".into(), num(&op["fpir"])));
    b.push_str(&table(&rows));

    if !plots.is_empty() || !plot_notes.is_empty() {
        b.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
        for (src, caption) in plots {
            let _ =
                writeln!(b, "<figure>{}<figcaption>{}</figcaption></figure>", img(src, caption, "plot"), esc(caption));
        }
        for n in plot_notes {
            let _ = writeln!(b, "<p class=\"muted\">{}</p>", esc(n));
        }
        b.push_str("</div>\n");
    }

    if let Some(points) = m["fnir_at_fpir"].as_array().filter(|p| !p.is_empty()) {
        b.push_str("<h2>FNIR at FPIR (rank 1)</h2>\n<table><tr><th>target FPIR</th><th>FNIR</th><th>FPIR reached</th><th>threshold</th></tr>\n");
        for p in points {
            let _ = writeln!(
                b,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                p["target_fpir"],
                num(&p["fnir"]),
                num(&p["fpir"]),
                num(&p["threshold"])
            );
        }
        b.push_str("</table>\n<h2>DIR at FAR</h2>\n<table><tr><th>FAR (FPIR)</th><th>rank</th><th>DIR</th><th>threshold</th></tr>\n");
        for p in m["dir_at_far"].as_array().into_iter().flatten() {
            let _ = writeln!(
                b,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                p["far"],
                p["rank"],
                num(&p["dir"]),
                num(&p["threshold"])
            );
        }
        b.push_str("</table>\n");
    } else {
        b.push_str("<p class=\"muted\">FNIR at FPIR and the DET curve need both mated and non-mated probes.</p>\n");
    }
    if let Some(cmc) = m["cmc"].as_array().filter(|c| !c.is_empty()) {
        b.push_str("<h2>CMC</h2>\n<div style=\"overflow-x:auto\"><table><tr><th>rank</th>");
        for p in cmc {
            let _ = write!(b, "<th>{}</th>", p["rank"]);
        }
        b.push_str("</tr><tr><th>rate</th>");
        for p in cmc {
            let _ = write!(b, "<td class=\"n\">{}</td>", num(&p["rate"]));
        }
        b.push_str("</tr></table></div>\n");
    }

    let galleries: [(&str, &str, &str, &[Shown]); 3] = [
        ("hit", "Hits", "mated probes matched to their own subject at the job's threshold", hits),
        ("miss", "Misses", "mated probes left unknown or matched to someone else", misses),
        ("false", "False matches", "probes of people not enrolled that matched someone", false_matches),
    ];
    for (kind, title, what, shown) in galleries {
        let _ = writeln!(
            b,
            "<h2>{title} ({})</h2>\n<p class=\"muted\">{what}{}</p>",
            shown.len(),
            if shown.len() > limit { format!("; the first {limit} are shown") } else { String::new() }
        );
        let _ = writeln!(b, "<div class=\"gallery\" id=\"{kind}\">");
        for s in shown.iter().take(limit) {
            b.push_str(&card(s, kind, thumbs));
        }
        b.push_str("</div>\n");
    }
    if let Some(nd) = m["not_detected"].as_array().filter(|n| !n.is_empty()) {
        let _ = writeln!(
            b,
            "<h2>No face found ({})</h2>\n<p class=\"muted\">Mated ones count as misses; non-mated ones are not searches.</p>\n<table><tr><th>line</th><th>media</th><th>truth</th><th>error</th></tr>",
            nd.len()
        );
        for n in nd {
            let _ = writeln!(
                b,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                n["line"],
                esc(n["media"].as_str().unwrap_or("")),
                esc(n["truth"].as_str().unwrap_or("unknown")),
                esc(n["error"].as_str().unwrap_or(""))
            );
        }
        b.push_str("</table>\n");
    }
    b.push_str(
        "<h2>How this is measured</h2>\n<p>Each truth row gives one subject (or <i>unknown</i>) to every face or \
         track template of its media file. A media file is matched exactly, else by a path suffix, else by file \
         name. FPIR is the share of non-mated probes whose best candidate scores at or above the threshold; FNIR \
         the share of mated probes (media without a face included) whose mate is not the top candidate at or \
         above it; a mate tied with another candidate ranks behind it. The galleries use the decisions stored \
         with the job's results. All numbers are in metrics.json.</p>\n",
    );
    page(&format!("osprey eval: job {}", m["job_id"].as_str().unwrap_or("")), &b)
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
    let plot = match det_png(&curve, &[mark], "FMR (log scale)", "FNMR", CHART_SIZE) {
        Ok(png) => {
            write_file(&out.join("det.png"), &png)?;
            img("det.png", "DET: FNMR against FMR", "plot")
        }
        Err(e) => {
            eprintln!("warning: det.png not drawn: {}", e.message());
            format!("<p class=\"muted\">det.png not drawn: {}</p>", esc(e.message()))
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
    let mut body = format!(
        "<h1>Verification: {}</h1>\n<p class=\"muted\">Images {} · model {} · generated {}</p>\n{}\
         <div class=\"plots\"><figure>{plot}<figcaption>DET: FNMR against FMR over thresholds; red: the EER</figcaption></figure></div>\n",
        esc(&name),
        esc(&args.images.display().to_string()),
        esc(&args.model),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        table(&rows)
    );
    if !no_face.is_empty() {
        body.push_str("<h2>Images without a face</h2>\n<ul>\n");
        for f in &no_face {
            let _ = writeln!(body, "<li>{}</li>", esc(f));
        }
        body.push_str("</ul>\n");
    }
    let _ = writeln!(
        body,
        "<h2>How this is measured</h2>\n<p>Each image's largest face is embedded; a pair scores the cosine \
         similarity of its two embeddings, and a pair with an image without a face is rejected at every threshold. \
         Accuracy is {folds}-fold: each fold is classified at the threshold that is most accurate on the others \
         ({}).</p>",
        if format == PairsFormat::Lfw {
            "folds in file order, as LFW's pairs.txt defines them"
        } else {
            "folds stratified by kind of pair"
        }
    );
    let report = out.join("report.html");
    write_file(&report, page(&format!("osprey eval: {name}"), &body).as_bytes())?;
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
    fn truth_csv_rules() {
        let rows = parse_truth("media,subject\r\na/x.jpg, amy \n# comment\n\"b,c.jpg\",unknown\n", "t.csv").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].media.as_str(), rows[0].subject.as_deref()), (2, "a/x.jpg", Some("amy")));
        assert_eq!((rows[1].line, rows[1].media.as_str(), rows[1].subject.as_deref()), (4, "b,c.jpg", None));

        let err = |text: &str| parse_truth(text, "t.csv").unwrap_err().to_string();
        assert!(err("media,subject\nx.jpg,amy\ny.jpg,amy,extra\n").contains("t.csv line 3: expected 2 fields"));
        assert!(err("file,who\nx.jpg,amy\n").contains("line 1: the header must name"));
        assert!(err("media,subject\nx.jpg,\n").contains("line 2: empty `subject`"));
        assert!(
            err("media,subject\nx.jpg,a\n./x.jpg,b\n")
                .contains("line 3: media `x.jpg` is listed again (first at line 2)")
        );
        assert!(err("media,subject\n").contains("no truth rows"));
    }

    #[test]
    fn media_matching_rules() {
        let media: Vec<String> =
            ["/data/a/x.jpg", "/data/b/x.jpg", "/data/b/y.jpg", "s3://bucket/clips/z.mp4", "/data/xx.jpg"]
                .map(String::from)
                .to_vec();
        let index = MediaIndex::new(&media);
        assert_eq!(index.resolve("/data/a/x.jpg"), Ok(Some("/data/a/x.jpg")));
        assert_eq!(index.resolve("a/x.jpg"), Ok(Some("/data/a/x.jpg")));
        assert_eq!(index.resolve("y.jpg"), Ok(Some("/data/b/y.jpg")));
        assert_eq!(index.resolve("other/y.jpg"), Ok(Some("/data/b/y.jpg")), "by file name");
        assert_eq!(index.resolve("clips/z.mp4"), Ok(Some("s3://bucket/clips/z.mp4")));
        assert_eq!(index.resolve("x.jpg").unwrap_err().0, "path suffix");
        assert_eq!(index.resolve("c/x.jpg").unwrap_err().0, "file name");
        assert_eq!(index.resolve("w.jpg"), Ok(None));
        // A suffix starts at a `/`: `x.jpg` is not a suffix of `xx.jpg`.
        assert_eq!(index.resolve("data/xx.jpg"), Ok(Some("/data/xx.jpg")));
    }

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

    #[test]
    fn html_escapes_and_marks_images() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let tag = img("thumbs/a\".jpg", "x", "plot");
        assert!(tag.contains("src=\"thumbs/a&quot;.jpg\""));
        assert!(tag.contains("onload=\"if(this.naturalWidth>0)this.dataset.loaded='true'\""));
    }
}
