//! `osprey models list`: the face models Osprey can run, from the registry.

use clap::Subcommand;
use osprey_models::registry::face_models;

use crate::Format;
use crate::output::Rows;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every face model: input, embedding width, alignment, weights, licence
    /// and default operating threshold.
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
    let mut rows = Rows::new(&["id", "input", "dim", "alignment", "threshold", "weights", "licence"]);
    for m in &models {
        rows.push(vec![
            m.id.to_string(),
            format!("{0}×{0} {1}", m.input_size, m.input),
            m.dim.to_string(),
            m.alignment_name().to_string(),
            m.default_threshold().map_or("calibrate from the gallery".into(), |t| format!("{t:.2}")),
            m.weights.to_string(),
            m.licence.to_string(),
        ]);
    }
    rows.print(format, &json)
}
