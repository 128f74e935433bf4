//! `osprey bench fusion`: what searching a person's face, body and gait and
//! fusing the three costs over searching the face alone, on a generated
//! gallery with an index per modality.
//!
//! The gallery: `--subjects` people, each with `--templates-per-subject`
//! templates in each of three indexes (face, body, gait; widths
//! `--face-dim`, `--body-dim`, `--gait-dim`), every template a unit vector
//! spread around its subject's own random centre in that modality (like
//! `osprey bench gen`'s clustered vectors). The indexes are what enrolment
//! builds (`--index`, default Osprey's choice by size: `IVF1024,Flat` at
//! 100k), each with an operating threshold for FPIR 0.01 and a fitted score
//! calibration from non-mated and mated scores of 2000 fresh samples, as
//! `osprey enroll` calibrates. The probes: `--probes` persons, each a body
//! track with a face and a gait template linked to it (`person_track_id`),
//! the first half enrolled subjects, the rest strangers, every template
//! with a random quality in [0.3, 1].
//!
//! Timed, `--repeat` times, best and median: (a) the face templates
//! searched in the face index (`search_probes`, as `osprey run search
//! --modalities face` does); (b) the three searches and `fuse_persons` over
//! their rows (`--modalities face,body,gait`), each part timed too. Neither
//! stores anything. Generated vectors serve timing only: the counts of
//! rank-1 matches in the report show that the searches and the fusion ran
//! on meaningful scores, nothing about any real model's accuracy.

use std::time::Instant;

use anyhow::bail;
use osprey_core::Modality;
use osprey_core::fusion::{FusionRule, ScoreCalibration};
use osprey_index::{FusionInput, Gallery, fuse_persons, search_probes, set_num_threads};
use osprey_store::{SearchResultRow, Template};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// FPIR the indexes' thresholds are calibrated for (enrolment's default).
const FPIR: f64 = 0.01;
/// Fresh samples the calibration searches (mated and non-mated scores).
const CALIBRATION_SAMPLES: usize = 2000;
const MODALITIES: [Modality; 3] = [Modality::Face, Modality::Body, Modality::Gait];

#[derive(clap::Args)]
pub struct FusionBench {
    /// Enrolled subjects; each has templates in all three indexes.
    #[arg(long, default_value_t = 100_000)]
    subjects: usize,
    /// Templates per subject in each index.
    #[arg(long, default_value_t = 1)]
    templates_per_subject: usize,
    /// Probe persons, each with a face, a body and a gait template; the
    /// first half are enrolled subjects, the rest strangers.
    #[arg(long, default_value_t = 1000)]
    probes: usize,
    /// Width of the face templates (the bundled dlib model's).
    #[arg(long, default_value_t = 128)]
    face_dim: usize,
    /// Width of the body templates (OSNet's and CLIP3DReID's).
    #[arg(long, default_value_t = 512)]
    body_dim: usize,
    /// Width of the gait templates (GaitBase's and BigGait's 256 × 16).
    #[arg(long, default_value_t = 4096)]
    gait_dim: usize,
    /// FAISS index factory of all three indexes (default: Osprey's choice
    /// by size, as enrolment makes it).
    #[arg(long)]
    index: Option<String>,
    /// Candidates per probe and index (`--top-k` of `osprey run search`).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Fusion rule: quality or max.
    #[arg(long, default_value = "quality")]
    fusion: String,
    /// Spread of each subject's templates around its centre, relative to
    /// the distance between centres.
    #[arg(long, default_value_t = 0.5)]
    spread: f32,
    /// FAISS (OpenMP) threads; default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed repetitions of each path; the best and the median are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// SplitMix64's finaliser: a well-mixed seed from any 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates subjects' templates in one modality without storing their
/// centres: subject `s`'s centre is drawn again from a seed of its own.
struct Generator {
    dim: usize,
    spread: f32,
    seed: u64,
}

impl Generator {
    fn centre(&self, subject: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(mix(self.seed ^ mix(subject as u64)));
        (0..self.dim).map(|_| normal(&mut rng)).collect()
    }

    /// `count` unit vectors around `subject`'s centre, the `draw`-th batch
    /// (different draws give independent noise).
    fn samples(&self, subject: usize, draw: u64, count: usize) -> Vec<f32> {
        let centre = self.centre(subject);
        let mut rng = StdRng::seed_from_u64(mix(mix(self.seed.rotate_left(17) ^ mix(draw)) ^ subject as u64));
        let mut out = Vec::with_capacity(count * self.dim);
        for _ in 0..count {
            let mut v: Vec<f32> = centre.iter().map(|c| c + self.spread * normal(&mut rng)).collect();
            osprey_core::l2_normalize(&mut v);
            out.extend(v);
        }
        out
    }
}

fn subject_id(s: usize) -> String {
    format!("subject-{s:06}")
}

/// One modality's index, its threshold and calibration.
struct Part {
    modality: Modality,
    gallery: Gallery,
    threshold: f32,
    calibration: ScoreCalibration,
    build_s: f64,
}

/// One modality's index and the probes' templates of that modality.
fn build_part(args: &FusionBench, modality: Modality, dim: usize, salt: u64) -> anyhow::Result<(Part, Vec<Template>)> {
    let g = Generator { dim, spread: args.spread, seed: args.seed ^ salt };
    let model = format!("bench-{modality}");
    let per = args.templates_per_subject;
    // Templates, generated in parallel per subject (draw 0).
    let vectors: Vec<f32> = (0..args.subjects).into_par_iter().flat_map_iter(|s| g.samples(s, 0, per)).collect();
    let ids: Vec<(String, String)> = (0..args.subjects)
        .flat_map(|s| (0..per).map(move |t| (format!("{modality}-{s}-{t}"), subject_id(s))))
        .collect();
    let started = Instant::now();
    let mut gallery = Gallery::build(&format!("bench-{modality}"), &model, dim, args.index.as_deref(), ids, &vectors)?;
    drop(vectors);
    let build_s = started.elapsed().as_secs_f64();

    // Threshold and score calibration from fresh samples of enrolled
    // subjects (draws 3, 4, ...), as enrolment calibrates from its templates.
    let mut rng = StdRng::seed_from_u64(args.seed ^ salt ^ 0xCA11);
    let sampled: Vec<usize> =
        (0..CALIBRATION_SAMPLES.min(args.subjects * 4)).map(|_| rng.random_range(0..args.subjects)).collect();
    let cal_vectors: Vec<f32> =
        sampled.par_iter().enumerate().flat_map_iter(|(i, &s)| g.samples(s, 3 + i as u64, 1)).collect();
    let cal_subjects: Vec<String> = sampled.iter().map(|&s| subject_id(s)).collect();
    let cal_templates: Vec<String> = (0..sampled.len()).map(|i| format!("calibration-{i}")).collect();
    let nonmated = gallery.nonmated_scores_of(&cal_vectors, &cal_subjects)?;
    let threshold = gallery.set_calibrated(&nonmated, FPIR)?;
    gallery.calibrate_scores(&cal_vectors, &cal_subjects, &cal_templates, &nonmated)?;
    let calibration =
        gallery.manifest().score_calibration.clone().unwrap_or_else(|| ScoreCalibration::anchored(threshold, 0, 0));

    // Probe person i: enrolled subject i (first half) or a stranger (a
    // centre no subject has), one template of this modality (draw 1).
    let mut quality_rng = StdRng::seed_from_u64(args.seed ^ salt ^ 0x9E);
    let probes = (0..args.probes)
        .map(|i| {
            let who = if i < args.probes / 2 { i % args.subjects } else { args.subjects + i };
            let person = format!("probe-{i}-body");
            Template {
                template_id: if modality == Modality::Body { person.clone() } else { format!("probe-{i}-{modality}") },
                person_track_id: Some(person),
                modality: Some(modality),
                model: model.clone(),
                embedding: Some(g.samples(who, 1, 1)),
                quality: Some(quality_rng.random_range(0.3..1.0)),
                ..Default::default()
            }
        })
        .collect();
    Ok((Part { modality, gallery, threshold, calibration, build_s }, probes))
}

/// Rank-1 matches among the rows (fused rows: `probe_template_id` is the
/// person), as (enrolled probes matched to their own subject, strangers
/// matched to anyone).
fn matches(rows: &[SearchResultRow], probes: usize, subjects: usize) -> (usize, usize) {
    let (mut right, mut strangers) = (0, 0);
    for r in rows.iter().filter(|r| r.rank == 1 && r.decision == osprey_core::OpenSetDecision::Match) {
        let i: usize = match r.probe_template_id.split('-').nth(1).and_then(|i| i.parse().ok()) {
            Some(i) => i,
            None => continue,
        };
        if i >= probes / 2 {
            strangers += 1;
        } else if r.subject_id.as_deref() == Some(subject_id(i % subjects).as_str()) {
            right += 1;
        }
    }
    (right, strangers)
}

fn best_and_median(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    (sorted[0], median)
}

pub fn fusion(args: FusionBench) -> anyhow::Result<()> {
    if args.subjects < 2 || args.probes < 2 || args.templates_per_subject == 0 || args.top_k == 0 {
        bail!("--subjects and --probes must be at least 2, --templates-per-subject and --top-k positive");
    }
    if args.face_dim == 0 || args.body_dim == 0 || args.gait_dim == 0 {
        bail!("template widths must be positive");
    }
    if !(args.spread.is_finite() && args.spread >= 0.0) {
        bail!("--spread must be a non-negative number");
    }
    let rule: FusionRule = args.fusion.parse()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    set_num_threads(threads);

    let dims = [args.face_dim, args.body_dim, args.gait_dim];
    let (mut parts, mut probes) = (Vec::with_capacity(3), Vec::with_capacity(3));
    for (i, (&modality, &dim)) in MODALITIES.iter().zip(&dims).enumerate() {
        eprintln!(
            "building the {modality} index: {} × {} templates of {dim} floats",
            args.subjects, args.templates_per_subject
        );
        let (part, these) = build_part(&args, modality, dim, (i as u64 + 1) << 56)?;
        parts.push(part);
        probes.push(these);
    }
    let job = "bench-fusion";
    let refs: Vec<Vec<&Template>> = probes.iter().map(|p| p.iter().collect()).collect();

    // (a) Faces alone.
    let mut single_times = Vec::new();
    let mut single_rows = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let face = &mut parts[0];
        let t = Instant::now();
        single_rows = search_probes(&mut face.gallery, job, &refs[0], args.top_k, face.threshold)?;
        single_times.push(t.elapsed().as_secs_f64());
    }

    // (b) The three searches, then fusion over their rows.
    let mut fused_times = Vec::new();
    let mut part_times: Vec<Vec<f64>> = vec![Vec::new(); MODALITIES.len() + 1];
    let mut fused_rows = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let mut rows: Vec<Vec<SearchResultRow>> = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter_mut().enumerate() {
            let s = Instant::now();
            rows.push(search_probes(&mut part.gallery, job, &refs[i], args.top_k, part.threshold)?);
            part_times[i].push(s.elapsed().as_secs_f64());
        }
        let s = Instant::now();
        let inputs: Vec<FusionInput> = parts
            .iter()
            .zip(&refs)
            .zip(&rows)
            .map(|((part, probes), rows)| FusionInput {
                modality: part.modality,
                calibration: part.calibration.clone(),
                threshold: part.threshold,
                probes,
                rows,
            })
            .collect();
        fused_rows = fuse_persons(job, rule, &inputs, args.top_k, None);
        part_times[MODALITIES.len()].push(s.elapsed().as_secs_f64());
        fused_times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&rows);
    }

    let (single_best, single_median) = best_and_median(&single_times);
    let (fused_best, fused_median) = best_and_median(&fused_times);
    let persons = fused_rows.iter().filter(|r| r.rank == 1).count();
    if persons != args.probes {
        bail!("fusion gave {persons} probe persons, expected {}", args.probes);
    }
    let (face_right, face_strangers) = matches(&single_rows, args.probes, args.subjects);
    let (fused_right, fused_strangers) = matches(&fused_rows, args.probes, args.subjects);
    let median_of = |t: &[f64]| best_and_median(t).1;
    let indexes: Vec<serde_json::Value> = parts
        .iter()
        .zip(&dims)
        .zip(&part_times)
        .map(|((p, dim), times)| {
            let m = p.gallery.manifest();
            serde_json::json!({
                "modality": p.modality.as_str(), "dim": dim, "templates": m.num_templates,
                "index": m.index_factory, "nprobe": m.nprobe, "build_s": p.build_s,
                "threshold": p.threshold, "calibration": p.calibration.method,
                "median_search_s": median_of(times),
            })
        })
        .collect();
    let report = serde_json::json!({
        "subjects": args.subjects,
        "templates_per_subject": args.templates_per_subject,
        "probes": args.probes,
        "top_k": args.top_k,
        "fusion": rule.as_str(),
        "threads": threads,
        "repeat": single_times.len(),
        "indexes": indexes,
        "single_best_s": single_best,
        "single_median_s": single_median,
        "fused_best_s": fused_best,
        "fused_median_s": fused_median,
        "fuse_median_s": median_of(&part_times[MODALITIES.len()]),
        "ratio_fused_over_single": fused_best / single_best,
        "median_ratio_fused_over_single": fused_median / single_median,
        "single_probes_per_s": args.probes as f64 / single_best,
        "fused_persons_per_s": args.probes as f64 / fused_best,
        "sanity": {
            "enrolled_probes": args.probes / 2,
            "face_rank1_own_subject": face_right, "face_strangers_matched": face_strangers,
            "fused_rank1_own_subject": fused_right, "fused_strangers_matched": fused_strangers,
        },
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{} subjects × {} templates per index, {} probe persons, top {}, {} threads, best of {}:",
        args.subjects,
        args.templates_per_subject,
        args.probes,
        args.top_k,
        threads,
        single_times.len()
    );
    for ix in &indexes {
        println!(
            "  {} index {} ({}-d, nprobe {}): built in {:.1}s, search {:.3}s (median)",
            ix["modality"].as_str().unwrap_or(""),
            ix["index"].as_str().unwrap_or(""),
            ix["dim"],
            ix["nprobe"].as_u64().map_or("-".to_string(), |n| n.to_string()),
            ix["build_s"].as_f64().unwrap_or(0.0),
            ix["median_search_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "face only: {single_best:.3}s ({:.0} probes/s); face+body+gait fused ({}): {fused_best:.3}s ({:.0} persons/s), of which fusion {:.4}s; fused/single {:.2}",
        args.probes as f64 / single_best,
        rule.as_str(),
        args.probes as f64 / fused_best,
        median_of(&part_times[MODALITIES.len()]),
        fused_best / single_best
    );
    Ok(())
}
