//! Vector functions over embedding columns.
//!
//! Arguments may be `FixedSizeList`, `List` or `LargeList` of any float type
//! (a column, or a literal such as `[0.1, 0.2, …]`); they are read as f64 so
//! that a query vector typed as `List<Float64>` compares exactly with a
//! `FixedSizeList<Float32>` column. A null or length-mismatched pair gives
//! null, never an error, so one bad row does not sink a scan.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum VectorOp {
    Cosine,
    L2,
    Norm,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorUdf {
    op: VectorOp,
    signature: Signature,
}

impl VectorUdf {
    fn new(op: VectorOp) -> Self {
        let arity = if op == VectorOp::Norm { 1 } else { 2 };
        Self { op, signature: Signature::any(arity, Volatility::Immutable) }
    }
}

/// `cosine_similarity(a, b)`: the cosine of the angle between two vectors.
pub fn cosine_similarity_udf() -> ScalarUDF {
    ScalarUDF::from(VectorUdf::new(VectorOp::Cosine))
}

/// `l2_distance(a, b)`: the Euclidean distance between two vectors.
pub fn l2_distance_udf() -> ScalarUDF {
    ScalarUDF::from(VectorUdf::new(VectorOp::L2))
}

/// `vector_norm(a)`: the Euclidean norm of a vector.
pub fn vector_norm_udf() -> ScalarUDF {
    ScalarUDF::from(VectorUdf::new(VectorOp::Norm))
}

fn is_vector(dt: &DataType) -> bool {
    match dt {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            f.data_type().is_numeric() || f.data_type().is_null()
        }
        DataType::Null => true,
        _ => false,
    }
}

/// Casts a vector column to `List<Float64>`.
fn as_f64_lists(array: &ArrayRef) -> Result<ArrayRef> {
    let target = DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)));
    Ok(cast(array, &target)?)
}

impl ScalarUDFImpl for VectorUdf {
    fn name(&self) -> &str {
        match self.op {
            VectorOp::Cosine => "cosine_similarity",
            VectorOp::L2 => "l2_distance",
            VectorOp::Norm => "vector_norm",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if let Some(bad) = arg_types.iter().find(|t| !is_vector(t)) {
            return plan_err!("{}() takes vectors (lists of numbers), got {bad}", self.name());
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays =
            args.args.iter().map(|a| a.to_array(n).and_then(|a| as_f64_lists(&a))).collect::<Result<Vec<_>>>()?;
        let lists: Vec<_> = arrays.iter().map(|a| a.as_list::<i32>()).collect();
        let row = |l: &datafusion::arrow::array::ListArray, i: usize| -> Option<Vec<f64>> {
            if l.is_null(i) {
                return None;
            }
            let v = l.value(i);
            let v = v.as_primitive::<Float64Type>();
            (v.null_count() == 0).then(|| v.values().to_vec())
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let value = match self.op {
                VectorOp::Norm => row(lists[0], i).map(|a| a.iter().map(|x| x * x).sum::<f64>().sqrt()),
                VectorOp::Cosine | VectorOp::L2 => match (row(lists[0], i), row(lists[1], i)) {
                    (Some(a), Some(b)) if a.len() == b.len() => Some(pair(self.op, &a, &b)),
                    _ => None,
                },
            };
            out.push(value.filter(|v| v.is_finite()));
        }
        if out.len() != n {
            return exec_err!("{}: produced {} rows for {n}", self.name(), out.len());
        }
        Ok(ColumnarValue::Array(Arc::new(Float64Array::from(out))))
    }
}

fn pair(op: VectorOp, a: &[f64], b: &[f64]) -> f64 {
    match op {
        VectorOp::Cosine => {
            let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
            for (x, y) in a.iter().zip(b) {
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            dot / (na.sqrt() * nb.sqrt())
        }
        VectorOp::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
        VectorOp::Norm => unreachable!("norm takes one argument"),
    }
}
