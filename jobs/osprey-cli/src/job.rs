//! `osprey job …`: batch jobs on a server: submit, watch, results, cancel.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use osprey_api::{JobCreated, JobKind, JobList, JobSpec, JobState, JobStatus, ResultsPage, SubjectsFrom};
use osprey_core::Modality;

use crate::Format;
use crate::client::{Client, Target, segment};
use crate::output::{Rows, opt, score, seconds};

#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit an enroll or search job; prints its id (with --watch, follows it to the end).
    Submit(SubmitArgs),
    /// Jobs on the server, newest first: state, gallery, task counts, frames.
    List {
        #[command(flatten)]
        target: Target,
        /// Only jobs in this state: queued, running, completed,
        /// completed_with_errors, failed or cancelled.
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        /// Only jobs of this gallery.
        #[arg(long)]
        gallery: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Skip this many (newest first).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// A job's state, task counts, frames and errors.
    Status {
        #[command(flatten)]
        target: Target,
        job_id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Follow a job to its end with a progress bar (tasks, frames/s, ETA).
    Watch {
        #[command(flatten)]
        target: Target,
        job_id: String,
    },
    /// A search job's answers: one row per face track or image face, rank 1.
    Results {
        #[command(flatten)]
        target: Target,
        job_id: String,
        /// Only this many rows (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Cancel a job: queued tasks are dropped, running ones finish.
    Cancel {
        #[command(flatten)]
        target: Target,
        job_id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Enroll,
    Search,
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    target: Target,
    /// `enroll` (a folder per subject) or `search`.
    #[arg(value_enum)]
    kind: Kind,
    /// Inputs as the server sees them: keys under its root (`media/probes/`),
    /// object URLs (`s3://bucket/clips/`), folders ending in `/`, or globs.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Gallery to enrol into or search.
    #[arg(long)]
    gallery: String,
    /// Video frames analysed: a rate (`5`), `every:N` or `all`.
    #[arg(long)]
    sample_fps: Option<String>,
    /// Image doublings before detection (0-3; default 1).
    #[arg(long)]
    upsample: Option<u32>,
    /// Most megapixels the detector searches per frame (default 4).
    #[arg(long)]
    max_detect_megapixels: Option<f64>,
    /// Where MMOD searches video frames: `every-frame` or `cascade`.
    #[arg(long)]
    detect: Option<String>,
    /// Videos longer than this are split into tasks of this many seconds (default 300).
    #[arg(long)]
    segment_seconds: Option<u64>,
    /// Face model (`osprey models list`; default dlib-resnet-v1).
    #[arg(long)]
    model: Option<String>,
    /// The model's checkpoint: a key under the server's root or a URL under
    /// the root or an allowed prefix (the workers read it).
    #[arg(long, value_name = "KEY_OR_URL")]
    weights: Option<String>,
    /// Face detector: `mmod` or `mtcnn` (default: the model's own).
    #[arg(long)]
    detector: Option<String>,
    /// Track aggregator: `mean` (default) or `caface` (with adaface-ir101).
    #[arg(long)]
    aggregator: Option<String>,
    /// The CAFace checkpoint, as for --weights.
    #[arg(long, value_name = "KEY_OR_URL")]
    aggregator_weights: Option<String>,
    /// What to find and embed: `face` (default), `body`, `gait` (with
    /// `body`), or several; each modality has its own index in the gallery
    /// (`<gallery>.body`, `<gallery>.gait`).
    #[arg(long, value_delimiter = ',')]
    modalities: Option<Vec<Modality>>,
    /// Body model (default: the appearance model
    /// dinov2-vits14-imgfocus-0.1.1; osnet-x1_0, osnet-ain-x1_0, clip3dreid
    /// or sapiensid with --body-weights).
    #[arg(long)]
    body_model: Option<String>,
    /// The body recogniser's checkpoint, as for --weights.
    #[arg(long, value_name = "KEY_OR_URL")]
    body_weights: Option<String>,
    /// Gait model for `gait` in --modalities (gaitbase from silhouettes,
    /// biggait from RGB crops; needs `body` too).
    #[arg(long)]
    gait_model: Option<String>,
    /// The gait model's checkpoint, as for --weights.
    #[arg(long, value_name = "KEY_OR_URL")]
    gait_weights: Option<String>,
    /// Search: calibrate the threshold for this FPIR.
    #[arg(long, conflicts_with = "threshold")]
    fpir: Option<f64>,
    /// Search: the decision threshold (cosine).
    #[arg(long)]
    threshold: Option<f32>,
    /// Search: candidates kept per probe (default 5).
    #[arg(long)]
    top_k: Option<usize>,
    /// Search with several --modalities: `quality` (default), `max` or
    /// `none`, as for `osprey run search --fusion`.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["quality", "max", "none"]))]
    fusion: Option<String>,
    /// Follow the job to its end; for search jobs, then print the results.
    #[arg(long)]
    watch: bool,
    /// Format of the results printed after --watch.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub async fn run(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit(args) => submit(args).await,
        JobCommand::List { target, state, gallery, limit, offset, format } => {
            let client = target.client("osprey job list")?;
            let mut path = format!("/v1/jobs?limit={limit}&offset={offset}");
            if let Some(s) = state {
                path.push_str(&format!("&state={}", state_name(s)));
            }
            if let Some(g) = &gallery {
                path.push_str(&format!("&gallery={}", segment(g)));
            }
            let list: JobList = client.get(&path).await?;
            let mut rows = Rows::new(&[
                "job",
                "kind",
                "gallery",
                "state",
                "tasks",
                "done",
                "failed",
                "frames",
                "templates",
                "created",
            ]);
            for s in &list.jobs {
                rows.push(vec![
                    s.job_id.clone(),
                    kind_name(s.kind).into(),
                    s.gallery.clone(),
                    state_name(s.state).into(),
                    s.tasks.total.to_string(),
                    s.tasks.done.to_string(),
                    s.tasks.failed.to_string(),
                    s.frames.to_string(),
                    s.templates.to_string(),
                    chrono::DateTime::from_timestamp_millis(s.created_at_ms)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                ]);
            }
            rows.print(format, &list)?;
            if !matches!(format, Format::Json) && list.total > list.offset + list.jobs.len() {
                eprintln!(
                    "{} of {} jobs shown; --offset {} for more",
                    list.jobs.len(),
                    list.total,
                    list.offset + list.jobs.len()
                );
            }
            Ok(())
        }
        JobCommand::Status { target, job_id, format } => {
            let status = status(&target.client("osprey job status")?, &job_id).await?;
            let mut rows =
                Rows::new(&["job", "kind", "gallery", "state", "tasks", "done", "failed", "frames", "templates"]);
            rows.push(vec![
                status.job_id.clone(),
                kind_name(status.kind).into(),
                status.gallery.clone(),
                state_name(status.state).into(),
                status.tasks.total.to_string(),
                status.tasks.done.to_string(),
                status.tasks.failed.to_string(),
                status.frames.to_string(),
                status.templates.to_string(),
            ]);
            rows.print(format, &status)?;
            if !matches!(format, Format::Json) {
                for e in &status.errors {
                    eprintln!("  failed {}: {}", e.input, e.message);
                }
            }
            Ok(())
        }
        JobCommand::Watch { target, job_id } => {
            let client = target.client("osprey job watch")?;
            let status = watch(&client, &job_id).await?;
            finished(&status)
        }
        JobCommand::Results { target, job_id, limit, format } => {
            let client = target.client("osprey job results")?;
            print_results(&client, &job_id, limit, format).await
        }
        JobCommand::Cancel { target, job_id } => {
            let client = target.client("osprey job cancel")?;
            let s: JobStatus = client.post(&format!("/v1/jobs/{}/cancel", segment(&job_id)), &()).await?;
            eprintln!("job {}: {}", s.job_id, state_name(s.state));
            Ok(())
        }
    }
}

async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let client = args.target.client("osprey job submit")?;
    let kind = match args.kind {
        Kind::Enroll => JobKind::Enroll,
        Kind::Search => JobKind::Search,
    };
    let spec = JobSpec {
        kind,
        gallery: args.gallery,
        inputs: args.inputs,
        subjects_from: (kind == JobKind::Enroll).then_some(SubjectsFrom::Dirs),
        sample_fps: args.sample_fps,
        upsample: args.upsample,
        max_detect_megapixels: args.max_detect_megapixels,
        segment_seconds: args.segment_seconds,
        model: args.model,
        weights: args.weights,
        detector: args.detector,
        detect: args.detect,
        aggregator: args.aggregator,
        aggregator_weights: args.aggregator_weights,
        modalities: args.modalities,
        body_model: args.body_model,
        body_weights: args.body_weights,
        gait_model: args.gait_model,
        gait_weights: args.gait_weights,
        fpir: args.fpir,
        threshold: args.threshold,
        top_k: args.top_k,
        fusion: args.fusion,
    };
    let created: JobCreated = client.post("/v1/jobs", &spec).await?;
    println!("{}", created.job_id);
    if !args.watch {
        eprintln!(
            "submitted {} job {} on gallery `{}`; follow it with `osprey job watch {}`",
            kind_name(kind),
            created.job_id,
            spec.gallery,
            created.job_id
        );
        return Ok(());
    }
    let status = watch(&client, &created.job_id).await?;
    if kind == JobKind::Search && status.templates > 0 {
        print_results(&client, &created.job_id, None, args.format).await?;
    }
    finished(&status)
}

async fn status(client: &Client, job_id: &str) -> anyhow::Result<JobStatus> {
    client.get(&format!("/v1/jobs/{}", segment(job_id))).await
}

/// Polls the job until it ends, drawing a progress bar on a terminal and
/// printing a line per finished task otherwise.
async fn watch(client: &Client, job_id: &str) -> anyhow::Result<JobStatus> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tasks {msg} ETA {eta}")
            .expect("progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("job {}", short(job_id)));
    let started = Instant::now();
    let mut first_frames: Option<(Instant, u64)> = None;
    let mut last_ended = usize::MAX;
    let mut errors_shown = 0;
    loop {
        let s = status(client, job_id).await?;
        let ended = s.tasks.done + s.tasks.failed;
        let now = Instant::now();
        let (t0, f0) = *first_frames.get_or_insert((now, s.frames));
        let secs = now.duration_since(t0).as_secs_f64();
        let fps = if secs > 0.5 { (s.frames - f0) as f64 / secs } else { 0.0 };
        let msg = format!(
            "· {} · {} running · {} frames, {fps:.2} frames/s · {} templates{}",
            state_name(s.state),
            s.tasks.running,
            s.frames,
            s.templates,
            if s.tasks.failed > 0 { format!(" · {} failed", s.tasks.failed) } else { String::new() }
        );
        bar.set_length(s.tasks.total as u64);
        bar.set_position(ended as u64);
        bar.set_message(msg.clone());
        for e in s.errors.iter().skip(errors_shown) {
            bar.suspend(|| eprintln!("  failed {}: {}", e.input, e.message));
        }
        errors_shown = s.errors.len();
        if !tty && ended != last_ended {
            eprintln!("job {}: {ended}/{} tasks {msg}", short(job_id), s.tasks.total);
            last_ended = ended;
        }
        if s.state.is_final() {
            bar.finish_and_clear();
            eprintln!(
                "job {} {}: {}/{} tasks done, {} failed, {} frames, {} templates in {:.1}s",
                s.job_id,
                state_name(s.state),
                s.tasks.done,
                s.tasks.total,
                s.tasks.failed,
                s.frames,
                s.templates,
                started.elapsed().as_secs_f64()
            );
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(if tty { 250 } else { 1000 })).await;
    }
}

/// The exit status of a watched job: failed and cancelled jobs are errors.
fn finished(s: &JobStatus) -> anyhow::Result<()> {
    match s.state {
        JobState::Failed | JobState::Cancelled => Err(osprey_core::Error::new(
            osprey_core::ErrorKind::Internal,
            format!("job {} {}", s.job_id, state_name(s.state)),
        )
        .into()),
        _ => Ok(()),
    }
}

async fn print_results(client: &Client, job_id: &str, limit: Option<usize>, format: Format) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut total = 0;
    loop {
        let page_size = limit.map_or(1000, |l| (l - all.len()).min(1000));
        if page_size == 0 {
            break;
        }
        let page: ResultsPage =
            client.get(&format!("/v1/jobs/{}/results?offset={}&limit={page_size}", segment(job_id), all.len())).await?;
        total = page.total;
        let got = page.rows.len();
        all.extend(page.rows);
        if got < page_size || all.len() >= total {
            break;
        }
    }
    let mut rows =
        Rows::new(&["media", "modality", "track", "start (s)", "end (s)", "decision", "subject", "score", "threshold"]);
    for r in &all {
        rows.push(vec![
            r.media_uri.as_deref().map(display_media).unwrap_or_else(|| "-".into()),
            match &r.fusion {
                Some(rule) => format!("fused ({rule})"),
                None => opt(r.modality.as_ref()),
            },
            opt(r.track_id),
            seconds(r.t_start_ms),
            seconds(r.t_end_ms),
            r.decision.clone(),
            if r.decision == "match" { opt(r.subject_id.as_ref()) } else { "unknown".into() },
            score(r.score),
            format!("{:.3}", r.threshold),
        ]);
    }
    let page = ResultsPage { job_id: job_id.to_string(), offset: 0, total, rows: all };
    rows.print(format, &page)?;
    if !matches!(format, Format::Json) && page.rows.len() < total {
        eprintln!("{} of {total} rows shown", page.rows.len());
    }
    Ok(())
}

/// A media URI without the common `file://…/root/` noise: the last two path segments.
fn display_media(uri: &str) -> String {
    let parts: Vec<&str> = uri.trim_end_matches('/').rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn short(job_id: &str) -> &str {
    job_id.get(..8).unwrap_or(job_id)
}

fn kind_name(k: JobKind) -> &'static str {
    match k {
        JobKind::Enroll => "enroll",
        JobKind::Search => "search",
    }
}

/// A job state by its API name (`state_name`'s inverse).
fn parse_state(name: &str) -> Result<JobState, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        format!("`{name}` is not a job state: queued, running, completed, completed_with_errors, failed or cancelled")
    })
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Completed => "completed",
        JobState::CompletedWithErrors => "completed_with_errors",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn states_parse_by_their_api_names() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Completed,
            JobState::CompletedWithErrors,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(parse_state(state_name(s)), Ok(s));
        }
        assert!(parse_state("done").unwrap_err().contains("not a job state"));
    }
}
