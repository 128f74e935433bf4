//! `osprey models list`: the face, body and gait models Osprey can run,
//! from the registry.

use clap::Subcommand;
use osprey_models::registry::{face_models, person_models};

use crate::Format;
use crate::output::Rows;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every model: face models (input, embedding width, alignment, weights,
    /// licence, default operating threshold), then body and gait models
    /// (input, output, comparison, weights, licence).
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

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
    let mut rows = Rows::new(&["id", "modality", "input", "dim", "alignment", "threshold", "weights", "licence"]);
    for m in &models {
        rows.push(vec![
            m.id.to_string(),
            "face".to_string(),
            format!("{0}×{0} {1}", m.input_size, m.input),
            m.dim.to_string(),
            m.alignment_name().to_string(),
            m.default_threshold().map_or("calibrate from the gallery".into(), |t| format!("{t:.2}")),
            m.weights.to_string(),
            m.licence.to_string(),
        ]);
    }
    for m in &people {
        rows.push(vec![
            m.id.to_string(),
            m.modality.as_str().to_string(),
            m.input.to_string(),
            m.dim.to_string(),
            "-".to_string(),
            "calibrate from the gallery".to_string(),
            m.weights.to_string(),
            m.licence.to_string(),
        ]);
    }
    rows.print(format, &json)
}
