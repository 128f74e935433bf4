use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The biometric modality a template was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Face crops aligned on landmarks.
    Face,
    /// Whole-body appearance (person re-identification).
    Body,
    /// Walking pattern from silhouette or pose sequences.
    Gait,
}

impl Modality {
    /// The lowercase name stored in the `modality` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Face => "face",
            Modality::Body => "body",
            Modality::Gait => "gait",
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Modality {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "face" => Ok(Modality::Face),
            "body" => Ok(Modality::Body),
            "gait" => Ok(Modality::Gait),
            other => Err(Error::invalid(format!("unknown modality `{other}` (expected face, body or gait)"))),
        }
    }
}

/// Checks that an embedding is usable as a template: the expected width,
/// finite values and a non-zero norm. `what` names the row in the error.
pub fn validate_embedding(embedding: &[f32], dim: usize, what: &str) -> Result<()> {
    if embedding.len() != dim {
        return Err(Error::invalid(format!("{what}: embedding has {} dimensions, expected {dim}", embedding.len())));
    }
    if let Some(i) = embedding.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "{what}: embedding value {i} is {} (NaN and infinities are not allowed)",
            embedding[i]
        )));
    }
    if embedding.iter().all(|v| *v == 0.0) {
        return Err(Error::invalid(format!("{what}: embedding is all zeros")));
    }
    Ok(())
}

/// Scales `v` to unit L2 norm in place, so that inner product is cosine
/// similarity. Accumulates in f64 so 512-d vectors of large values stay exact.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_to_unit_length() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
    }

    #[test]
    fn rejects_bad_embeddings() {
        assert!(validate_embedding(&[1.0, 2.0], 3, "row 0").is_err());
        let e = validate_embedding(&[1.0, f32::NAN], 2, "row 7").unwrap_err();
        assert!(e.message().contains("row 7") && e.message().contains("NaN"), "{e}");
        assert!(validate_embedding(&[0.0, 0.0], 2, "row 0").is_err());
        assert!(validate_embedding(&[0.0, 1.0], 2, "row 0").is_ok());
    }

    #[test]
    fn modality_round_trips() {
        for m in [Modality::Face, Modality::Body, Modality::Gait] {
            assert_eq!(m.as_str().parse::<Modality>().unwrap(), m);
        }
        assert!("iris".parse::<Modality>().is_err());
    }
}
