//! Open-set identification with the Rust face models on real labelled faces:
//! dlib's `examples/johns` (5 people × 11 aligned chips) and face-api.js's
//! `examples/images` (8 people × 5 face crops). Some people are enrolled
//! from a few of their images and searched with the rest; the others are
//! never enrolled and must come back `unknown` at the threshold calibrated
//! from the gallery's own non-mated scores.

mod common;

use common::*;
use osprey_eval::{Candidate, Search, identification_report};
use osprey_index::Gallery;
use osprey_media::read_image;
use osprey_models::{FaceOptions, FaceSelection};
use std::path::Path;

struct Person {
    name: String,
    embeddings: Vec<Vec<f32>>,
}

fn unit(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    osprey_core::l2_normalize(&mut v);
    v
}

fn sorted_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// dlib's johns are already aligned 150×150 chips: describe them directly.
fn johns() -> Vec<Person> {
    let m = models();
    let root = data_dir().join("dlib/examples/johns");
    sorted_files(&root)
        .into_iter()
        .map(|dir| {
            let chips: Vec<_> = sorted_files(&dir).iter().map(|f| read_image(f).unwrap().image).collect();
            let embeddings = m.describe(&chips).unwrap().iter().map(|d| unit(d)).collect();
            Person { name: dir.file_name().unwrap().to_string_lossy().into_owned(), embeddings }
        })
        .collect()
}

/// face-api.js crops: detect the face, align, describe.
fn face_api() -> Vec<Person> {
    let m = models();
    let root = data_dir().join("face-api.js/examples/images");
    ["amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"]
        .iter()
        .map(|name| {
            let embeddings = (1..=5)
                .map(|i| {
                    let path = root.join(format!("{name}/{name}{i}.png"));
                    let img = read_image(&path).unwrap().image;
                    let opts = FaceOptions { upsample: 1, selection: FaceSelection::Largest, ..Default::default() };
                    let faces = m.analyze(&img, &opts).unwrap();
                    faces.first().unwrap_or_else(|| panic!("no face found in {}", path.display())).embedding.clone()
                })
                .collect();
            Person { name: name.to_string(), embeddings }
        })
        .collect()
}

#[test]
fn enrolled_people_are_found_and_strangers_are_unknown() {
    let people: Vec<Person> = johns().into_iter().chain(face_api()).collect();
    // Two of the johns and two of the face-api.js people are never enrolled.
    let strangers = ["John_Shimkus", "John_Simm", "sheldon", "stuart"];
    let mut ids = Vec::new();
    let mut vectors = Vec::new();
    let mut searches: Vec<(Option<String>, Vec<f32>)> = Vec::new();
    for p in &people {
        let enrol = if strangers.contains(&p.name.as_str()) {
            0
        } else if p.name.starts_with("John_") {
            3
        } else {
            2
        };
        for (i, e) in p.embeddings.iter().enumerate() {
            if i < enrol {
                ids.push((format!("{}-{i}", p.name), p.name.clone()));
                vectors.extend_from_slice(e);
            } else {
                searches.push(((enrol > 0).then(|| p.name.clone()), e.clone()));
            }
        }
    }
    let mut gallery = Gallery::build("faces", "dlib-resnet-v1", 128, Some("Flat"), ids, &vectors).unwrap();
    let threshold = gallery.calibrate(0.05, 1000).unwrap();
    let queries: Vec<f32> = searches.iter().flat_map(|s| s.1.clone()).collect();
    let results = gallery.search(&queries, 5).unwrap();
    let evals: Vec<Search> = searches
        .iter()
        .zip(&results)
        .map(|((mate, _), cands)| Search {
            mate: mate.clone(),
            candidates: cands.iter().map(|c| Candidate { subject_id: c.subject_id.clone(), score: c.score }).collect(),
        })
        .collect();
    let report = identification_report(&evals).unwrap();
    let (mut false_matches, mut misses) = (0, 0);
    for ((mate, _), cands) in searches.iter().zip(&results) {
        let decision = Gallery::decide(cands, threshold);
        let matched = (decision == osprey_core::OpenSetDecision::Match).then(|| cands[0].subject_id.as_str());
        match (mate, matched) {
            (None, Some(s)) => {
                false_matches += 1;
                eprintln!("stranger matched {s} at {:.3}", cands[0].score);
            }
            (Some(m), got) if got != Some(m.as_str()) => {
                misses += 1;
                eprintln!("{m} → {got:?} (best {:?})", cands.first().map(|c| (&c.subject_id, c.score)));
            }
            _ => {}
        }
    }
    eprintln!(
        "gallery {} templates; {} mated and {} non-mated searches; rank-1 {:.3}; FNIR@FPIR {:?}; \
         calibrated threshold {threshold:.3}: {misses} misses, {false_matches} false matches",
        gallery.len(),
        report.mated_searches,
        report.nonmated_searches,
        report.rank1,
        report.fnir_at_fpir.iter().map(|p| (p.target_fpir, p.fnir)).collect::<Vec<_>>()
    );
    assert!(report.rank1 >= 0.95, "rank-1 {}", report.rank1);
    assert_eq!(false_matches, 0, "strangers matched at the calibrated threshold");
    assert!(misses * 10 <= report.mated_searches, "{misses} enrolled probes not identified");
}
