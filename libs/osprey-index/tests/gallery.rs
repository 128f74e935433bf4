//! Galleries on real FAISS: every index type Osprey offers goes through the
//! same checks (search, subject scores, erasure, snapshots, calibration).

use osprey_core::{ErrorKind, OpenSetDecision, fpir_at_threshold};
use osprey_index::{Gallery, Removal};
use osprey_store::Root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 64;

/// `subjects × per_subject` unit vectors clustered by subject, like face
/// embeddings of several photos of each person.
fn clustered(subjects: usize, per_subject: usize, seed: u64) -> (Vec<(String, String)>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> =
        (0..subjects).map(|_| (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
    let mut ids = Vec::new();
    let mut data = Vec::new();
    for (s, c) in centres.iter().enumerate() {
        for t in 0..per_subject {
            let mut v: Vec<f32> = c.iter().map(|x| x + rng.random_range(-0.25..0.25)).collect();
            osprey_core::l2_normalize(&mut v);
            data.extend_from_slice(&v);
            ids.push((format!("s{s}-t{t}"), format!("s{s}")));
        }
    }
    (ids, data)
}

fn row(data: &[f32], i: usize) -> &[f32] {
    &data[i * DIM..(i + 1) * DIM]
}

fn conformance(factory: &str) {
    let (ids, data) = clustered(300, 4, 1);
    let mut g = Gallery::build("g", "m", DIM, Some(factory), ids.clone(), &data).unwrap();
    assert_eq!((g.manifest().num_subjects, g.manifest().num_templates), (300, 1200));

    // A gallery template finds its own subject first, scored ~1 (cosine).
    let res = g.search(row(&data, 40), 5).unwrap();
    assert_eq!(res[0].len(), 5);
    assert_eq!(res[0][0].subject_id, "s10", "{factory}");
    assert!(res[0][0].score > 0.9, "{factory}: {}", res[0][0].score);
    // Subjects are distinct and sorted by score (max over their templates).
    let subjects: std::collections::HashSet<_> = res[0].iter().map(|c| &c.subject_id).collect();
    assert_eq!(subjects.len(), 5);
    assert!(res[0].windows(2).all(|w| w[0].score >= w[1].score));

    // Searches share the gallery (`&self`): from several threads at once
    // they give exactly what one thread alone gets.
    let queries: Vec<f32> = (0..64).flat_map(|i| row(&data, i * 17).to_vec()).collect();
    let alone = g.search(&queries, 5).unwrap();
    std::thread::scope(|s| {
        let threads: Vec<_> =
            (0..4).map(|_| s.spawn(|| (0..25).map(|_| g.search(&queries, 5).unwrap()).collect::<Vec<_>>())).collect();
        for t in threads {
            assert!(t.join().unwrap().iter().all(|r| *r == alone), "{factory}: a concurrent search differed");
        }
    });

    // Enrolled vectors read back exactly (calibration's probes): the IVF
    // lists' own rows, the stored vectors of a compressed index, FAISS's id
    // map for the others.
    let v = g.subject_vectors(&["s11", "nobody"]).unwrap();
    assert_eq!((v[0].as_deref(), v[1].as_deref()), (Some(row(&data, 44)), None), "{factory}");
    let t = g.calibrate(0.05, 200).unwrap();
    assert!(t > 0.0 && t < 1.0, "{factory}: {t}");
    assert_eq!(g.search(row(&data, 44), 1).unwrap()[0][0].subject_id, "s11");

    // Erasure: the subject never comes back, whatever the index type.
    let removal = g.remove_subject("s10").unwrap();
    assert!(matches!(removal, Removal::Removed(4) | Removal::Hidden(4)), "{removal:?}");
    let res = g.search(row(&data, 40), 5).unwrap();
    assert!(res[0].iter().all(|c| c.subject_id != "s10"), "{factory}: erased subject returned");
    assert_eq!(g.manifest().num_subjects, 299);
    assert_eq!(g.remove_subject("s10").unwrap_err().kind(), ErrorKind::NotFound);
    if g.needs_rebuild() {
        g.rebuild().unwrap();
        assert!(!g.needs_rebuild());
        let res = g.search(row(&data, 40), 5).unwrap();
        assert!(res[0].iter().all(|c| c.subject_id != "s10"));
    }
    // Wrong widths are refused.
    assert_eq!(g.search(&[0.5; 3], 5).unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn flat() {
    conformance("Flat");
}

#[test]
fn ivf_flat() {
    conformance("IVF32,Flat");
}

#[test]
fn hnsw() {
    conformance("HNSW16");
}

#[test]
fn ivf_pq() {
    conformance("IVF16,PQ16np");
}

#[test]
fn rejects_bad_input() {
    let (ids, data) = clustered(3, 2, 2);
    let e = Gallery::build("g", "m", DIM, Some("NoSuchIndex"), ids.clone(), &data).unwrap_err();
    assert!(e.message().contains("NoSuchIndex"), "{e}");
    let e = Gallery::build("g", "m", DIM, Some("IVF4096,Flat"), ids.clone(), &data).unwrap_err();
    assert!(e.message().contains("needs at least 4096"), "{e}");
    let mut nan = data.clone();
    nan[5] = f32::NAN;
    assert!(Gallery::build("g", "m", DIM, Some("Flat"), ids.clone(), &nan).unwrap_err().message().contains("NaN"));
    assert!(Gallery::build("g", "m", DIM, Some("Flat"), ids, &data[..DIM]).is_err());
}

#[test]
fn open_set_decision_and_calibration() {
    // Enrol 200 subjects; search with fresh samples of enrolled subjects
    // (mated) and of 200 others (non-mated).
    let (ids, data) = clustered(400, 3, 3);
    let enrolled = 200 * 3;
    let mut g = Gallery::build("g", "m", DIM, Some("Flat"), ids[..enrolled].to_vec(), &data[..enrolled * DIM]).unwrap();
    let t = g.calibrate(0.01, 10_000).unwrap();
    assert_eq!(g.manifest().threshold, Some(t));
    assert_eq!(g.manifest().threshold_fpir, Some(0.01));

    let probes = &data[enrolled * DIM..];
    let answers = g.search(probes, 1).unwrap();
    let nonmated_best: Vec<f32> = answers.iter().map(|c| c[0].score).collect();
    let fpir = fpir_at_threshold(&nonmated_best, t);
    // Calibrated on gallery-internal non-mated pairs, the FPIR on new
    // non-mated people stays near the target.
    assert!(fpir <= 0.05, "FPIR {fpir} at threshold {t}");

    // Mated probes: another sample of an enrolled subject's cluster.
    let (_, fresh) = clustered(400, 4, 3);
    let mated: Vec<f32> = (0..200).flat_map(|s| row(&fresh, s * 4 + 3).to_vec()).collect();
    let answers = g.search(&mated, 1).unwrap();
    let matched = answers.iter().filter(|c| Gallery::decide(c, t) == OpenSetDecision::Match).count();
    assert!(matched >= 190, "only {matched}/200 mated probes matched");

    // The score calibration was learnt with the threshold, from
    // leave-one-out mated and non-mated scores: mated probes get positive
    // LLRs, new non-mated people negative ones, almost always.
    let c = g.manifest().score_calibration.clone().expect("calibrated scores");
    assert_eq!(c.method, "logistic", "{c:?}");
    assert!(c.mated >= 500 && c.nonmated >= 500, "{c:?}");
    let positive = answers.iter().filter(|a| c.llr(a[0].score) > 0.0).count();
    let negative = nonmated_best.iter().filter(|&&s| c.llr(s) < 0.0).count();
    assert!(positive >= 190 && negative >= 190, "{positive} mated > 0, {negative} non-mated < 0: {c:?}");
}

#[test]
fn one_template_per_subject_anchors_the_score_calibration_at_the_threshold() {
    // No subject has a second template: no mated scores to fit from.
    let (ids, data) = clustered(100, 1, 5);
    let mut g = Gallery::build("g", "m", DIM, Some("Flat"), ids, &data).unwrap();
    let t = g.calibrate(0.01, 10_000).unwrap();
    let c = g.manifest().score_calibration.clone().unwrap();
    assert_eq!((c.method.as_str(), c.centre, c.mated), ("anchored", t, 0), "{c:?}");
    assert_eq!(c.llr(t), 0.0);
}

#[tokio::test]
async fn snapshot_round_trip() {
    let root = Root::open("memory://index-snapshots").unwrap();
    let (ids, data) = clustered(50, 3, 4);
    let mut g = Gallery::build("faces", "m", DIM, Some("HNSW16"), ids, &data).unwrap();
    g.remove_subject("s7").unwrap(); // hidden in HNSW: survives the snapshot as hidden
    g.set_threshold(0.42, Some(0.001));
    g.save(&root).await.unwrap();
    let first = g.manifest().snapshot.clone().unwrap();
    g.save(&root).await.unwrap();
    // The previous snapshot is gone; only the current one remains.
    let keys: Vec<String> = root.list("galleries/faces/index").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains(&first)));

    let back = Gallery::load(&root, "faces").await.unwrap();
    assert_eq!(back.manifest(), g.manifest());
    let q = row(&data, 7 * 3);
    assert_eq!(back.search(q, 3).unwrap(), g.search(q, 3).unwrap());
    assert!(back.search(q, 10).unwrap()[0].iter().all(|c| c.subject_id != "s7"));
    assert!(back.needs_rebuild());

    assert_eq!(Gallery::load(&root, "nope").await.unwrap_err().kind(), ErrorKind::NotFound);
    root.put("galleries/broken/manifest.json", bytes::Bytes::from_static(b"{not json")).await.unwrap();
    assert_eq!(Gallery::load(&root, "broken").await.unwrap_err().kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn a_one_subject_gallery_uses_its_models_operating_threshold() {
    let root = Root::open("memory://one-subject").unwrap();
    let (ids, data) = clustered(1, 3, 5);
    // A model with a known operating threshold: it stands in for calibration.
    let mut g =
        Gallery::build("bodies", "dinov2-vits14-imgfocus-0.1.1", DIM, Some("Flat"), ids.clone(), &data).unwrap();
    let op = osprey_index::operating_point(&root, &mut g, None, None).await.unwrap();
    assert_eq!(op.threshold, 0.93);
    assert!(op.source.contains("too few to calibrate"), "{}", op.source);
    // A model without one: calibration's own error, which says why.
    let mut other = Gallery::build("other", "m", DIM, Some("Flat"), ids, &data).unwrap();
    let err = osprey_index::operating_point(&root, &mut other, None, None).await.unwrap_err();
    assert!(err.message().contains("needs at least 2 subjects"), "{}", err.message());
}

/// Fused thresholds calibrated on the gallery's own people hold their FPIR
/// on strangers never enrolled, for each set of modalities, while the
/// enrolled people (seen again with noise) are still found.
#[test]
fn fused_thresholds_hold_their_fpir_on_strangers() {
    use osprey_core::Modality;
    use osprey_core::fusion::{FusionRule, ScoreCalibration};
    use osprey_index::{FusionInput, calibrate_fusion, fuse_persons, search_probes};
    use osprey_store::Template;

    const PEOPLE: usize = 2000;
    let mut rng = StdRng::seed_from_u64(7);
    let mut unit = |dim: usize, around: Option<&[f32]>, spread: f32| -> Vec<f32> {
        let mut v: Vec<f32> =
            (0..dim).map(|i| around.map_or(0.0, |c| c[i]) + rng.random_range(-1.0..1.0) * spread).collect();
        osprey_core::l2_normalize(&mut v);
        v
    };
    // A face index (48-d) and a body index (24-d) of the same people; the
    // body's an IVF index (every list probed), whose enrolled vectors the
    // calibration reads back from its lists.
    let dims = [(Modality::Face, 48usize, "Flat"), (Modality::Body, 24usize, "IVF16,Flat")];
    let mut indexes = Vec::new();
    let mut enrolled: Vec<Vec<Vec<f32>>> = Vec::new();
    for (m, dim, factory) in dims {
        let vectors: Vec<Vec<f32>> = (0..PEOPLE).map(|_| unit(dim, None, 1.0)).collect();
        let ids = (0..PEOPLE).map(|p| (format!("{m}-{p}"), format!("p{p}"))).collect();
        let g = Gallery::build(&format!("g.{m}"), "m", dim, Some(factory), ids, &vectors.concat()).unwrap();
        indexes.push((m, g));
        enrolled.push(vectors);
    }
    // Each index's raw → LLR mapping: zero at cosine 0.5.
    let calibration = ScoreCalibration::anchored(0.5, 0, 0);
    let fpir = 0.02;
    let thresholds = {
        let mut refs: Vec<(Modality, &mut Gallery, ScoreCalibration)> =
            indexes.iter_mut().map(|(m, g)| (*m, g, calibration.clone())).collect();
        calibrate_fusion(&mut refs, FusionRule::Quality, Some(fpir)).unwrap()
    };
    let sets: Vec<Vec<Modality>> = thresholds.by_modalities.iter().map(|(s, ..)| s.clone()).collect();
    assert_eq!(sets, vec![vec![Modality::Face], vec![Modality::Body], vec![Modality::Face, Modality::Body]]);
    assert!(thresholds.by_modalities.iter().all(|(_, _, n)| *n == PEOPLE), "{thresholds:?}");

    // Probe persons with both modalities: strangers, and enrolled people seen again.
    let decide = |indexes: &mut Vec<(Modality, Gallery)>, probes: Vec<Vec<Vec<f32>>>| -> (usize, usize) {
        let n = probes[0].len();
        let mut templates: Vec<Vec<Template>> = Vec::new();
        for (k, (m, _)) in indexes.iter().enumerate() {
            templates.push(
                (0..n)
                    .map(|p| Template {
                        // A body template is its person; the face belongs to it.
                        template_id: match m {
                            Modality::Body => format!("person-{p}"),
                            _ => format!("{m}-{p}"),
                        },
                        modality: Some(*m),
                        person_track_id: Some(format!("person-{p}")),
                        quality: Some(1.0),
                        embedding: Some(probes[k][p].clone()),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
        let refs: Vec<Vec<&Template>> = templates.iter().map(|t| t.iter().collect()).collect();
        let rows: Vec<_> =
            indexes.iter_mut().zip(&refs).map(|((_, g), p)| search_probes(g, "j", p, 5, 0.5).unwrap()).collect();
        let inputs: Vec<FusionInput> = indexes
            .iter()
            .zip(&refs)
            .zip(&rows)
            .map(|(((m, _), probes), rows)| FusionInput {
                modality: *m,
                calibration: calibration.clone(),
                threshold: 0.5,
                probes,
                rows,
            })
            .collect();
        let fused = fuse_persons("j", FusionRule::Quality, &inputs, 5, Some(&thresholds));
        let top: Vec<_> = fused.iter().filter(|r| r.rank == 1).collect();
        assert_eq!(top.len(), n);
        let face_body = thresholds.for_modalities(&[Modality::Body, Modality::Face]).unwrap();
        assert!(top.iter().all(|r| r.threshold == face_body));
        let matched = top.iter().filter(|r| r.decision == OpenSetDecision::Match).count();
        let right = top
            .iter()
            .filter(|r| {
                r.decision == OpenSetDecision::Match
                    && r.subject_id.as_deref().map(|s| &s[1..]) == r.person_track_id.as_deref().map(|p| &p[7..])
            })
            .count();
        (matched, right)
    };
    let strangers: Vec<Vec<Vec<f32>>> =
        dims.iter().map(|(_, dim, _)| (0..PEOPLE).map(|_| unit(*dim, None, 1.0)).collect()).collect();
    let (false_alarms, _) = decide(&mut indexes, strangers);
    let observed = false_alarms as f64 / PEOPLE as f64;
    assert!((0.005..=0.045).contains(&observed), "FPIR {observed} on strangers, calibrated for {fpir}");
    let again: Vec<Vec<Vec<f32>>> =
        (0..dims.len()).map(|k| (0..PEOPLE).map(|p| unit(dims[k].1, Some(&enrolled[k][p]), 0.12)).collect()).collect();
    let (_, found) = decide(&mut indexes, again);
    assert!(found as f64 / PEOPLE as f64 > 0.9, "{found} of {PEOPLE} enrolled people found");
}

#[test]
fn ivf_pq_without_reranking() {
    let (ids, data) = clustered(300, 4, 1);
    let mut g = Gallery::build_reranked("g", "m", DIM, Some("IVF16,PQ16np"), Some(0), ids, &data).unwrap();
    assert_eq!(g.manifest().rerank, None);
    // Without stored vectors re-ranking cannot be switched on later.
    assert_eq!(g.set_rerank(50).unwrap_err().kind(), ErrorKind::InvalidInput);
}

/// Recall@10 of `found` against `truth` (FAISS ids, `k` per query).
fn recall(found: &[i64], truth: &[i64], k: usize) -> f64 {
    let hits: usize =
        found.chunks(k).zip(truth.chunks(k)).map(|(f, t)| f.iter().filter(|i| t.contains(i)).count()).sum();
    hits as f64 / truth.len() as f64
}

#[tokio::test]
async fn reranking_gives_exact_scores_and_keeps_its_vectors_through_snapshots_and_erasure() {
    // 8 bytes per 64-d template: a coarse code that loses much of the order.
    let factory = "IVF16,PQ8np";
    let (ids, data) = clustered(500, 4, 5);
    let queries: Vec<f32> = (0..200).flat_map(|i| row(&data, i * 10).to_vec()).collect();
    let k = 10;
    let exact = Gallery::build("exact", "m", DIM, Some("Flat"), ids.clone(), &data).unwrap();
    let (_, truth) = exact.search_templates(&queries, k).unwrap();
    let coarse = Gallery::build_reranked("g", "m", DIM, Some(factory), Some(0), ids.clone(), &data).unwrap();
    let (_, rough) = coarse.search_templates(&queries, k).unwrap();
    let mut g = Gallery::build("g", "m", DIM, Some(factory), ids.clone(), &data).unwrap();
    assert_eq!(g.manifest().rerank, Some(osprey_index::DEFAULT_RERANK));
    let (scores, found) = g.search_templates(&queries, k).unwrap();
    let (r_rough, r_found) = (recall(&rough, &truth, k), recall(&found, &truth, k));
    assert!(r_found >= 0.95 && r_found > r_rough + 0.1, "recall@10 {r_found} re-ranked, {r_rough} from the codes");
    // Re-ranked scores are the exact cosine similarities, best first.
    for (q, (s, f)) in scores.chunks(k).zip(found.chunks(k)).enumerate() {
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        for (score, id) in s.iter().zip(f) {
            let cos: f32 = row(&queries, q).iter().zip(row(&data, *id as usize)).map(|(a, b)| a * b).sum();
            assert!((score - cos).abs() < 1e-5, "query {q}, template {id}: {score} vs exact {cos}");
        }
    }
    // The calibration reads the stored vectors (a PQ index cannot reconstruct them).
    g.calibrate(0.05, 500).unwrap();
    assert!(g.manifest().score_calibration.is_some());

    let root = Root::open("memory://reranked").unwrap();
    g.save(&root).await.unwrap();
    let chunks = root.list("galleries/g/vectors").await.unwrap();
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    let mut back = Gallery::load(&root, "g").await.unwrap();
    assert_eq!(back.manifest(), g.manifest());
    assert_eq!(back.search(&queries, 5).unwrap(), g.search(&queries, 5).unwrap());

    // Erasure zeroes the subject's stored vectors too, once saved.
    back.remove_subject("s3").unwrap();
    back.save(&root).await.unwrap();
    let bytes = root.get(&chunks[0].key).await.unwrap();
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    // s3's templates were rows 12..16, in enrolment order.
    assert!(floats[12 * DIM..16 * DIM].iter().all(|v| *v == 0.0));
    assert_eq!(&floats[16 * DIM..17 * DIM], row(&data, 16));
    let mut again = Gallery::load(&root, "g").await.unwrap();
    assert!(again.search(row(&data, 12), 10).unwrap()[0].iter().all(|c| c.subject_id != "s3"));
    // Adding after a load appends to the stored rows.
    let (more_ids, more) = clustered(30, 1, 6);
    let more_ids: Vec<(String, String)> =
        more_ids.into_iter().map(|(t, s)| (format!("new-{t}"), format!("new-{s}"))).collect();
    again.add(more_ids, &more).unwrap();
    again.save(&root).await.unwrap();
    let last = Gallery::load(&root, "g").await.unwrap();
    let top = &last.search(row(&more, 7), 1).unwrap()[0][0];
    assert_eq!((top.subject_id.as_str(), top.score > 0.9999), ("new-s7", true), "{top:?}");
}
