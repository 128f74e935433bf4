//! A small reader for ONNX model files, enough to take the weights out of an
//! exported network and see how its nodes connect; it runs nothing.
//!
//! An `.onnx` file is one protobuf message, `ModelProto`. This module decodes
//! the wire format itself (no protobuf library): every field is a key varint
//! `(number << 3) | wire type` followed by a varint (type 0), 8 bytes (1), a
//! varint length and that many bytes (2), or 4 bytes (5); the deprecated group
//! types (3, 4) are refused. Fields it does not use are skipped, so newer
//! files still read. What it keeps:
//!
//! * `ModelProto`: `ir_version` (1), `producer_name` (2), `producer_version`
//!   (3), `graph` (7), `opset_import` (8: `domain` 1, `version` 2);
//! * `GraphProto`: `node` (1), `name` (2), `initializer` (5), and the names of
//!   `input` (11) and `output` (12) (their `ValueInfoProto.name`, field 1);
//! * `NodeProto`: `input` (1), `output` (2), `name` (3), `op_type` (4);
//!   attributes are not read;
//! * `TensorProto` (the initializers): `dims` (1, int64, packed or not),
//!   `data_type` (2), `name` (8), and for FLOAT (data type 1) its values from
//!   `raw_data` (9, little-endian float32) or `float_data` (4, packed or not).
//!   Initializers of other types keep their name, shape and type but no
//!   values; weights stored outside the file (`data_location` 14 = EXTERNAL)
//!   are refused.
//!
//! A truncated or foreign file is a [`ErrorKind::Corrupt`] error naming the
//! file, the byte offset and, inside an initializer, the tensor; nothing here
//! panics on bad input.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

use crate::layers::cerr;

/// ONNX `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;

/// A decoded ONNX model: the graph and the few header fields worth logging.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// `ir_version`.
    pub ir_version: i64,
    /// `producer_name` and `producer_version`, e.g. ("pytorch", "2.7.0").
    pub producer: (String, String),
    /// `opset_import`: (domain, version); the default domain is "".
    pub opsets: Vec<(String, i64)>,
    /// The main graph.
    pub graph: Graph,
}

/// A graph: nodes in file order, initializers, and the graph's input and
/// output names.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// `GraphProto.name`.
    pub name: String,
    /// The nodes, in the file's (topological) order.
    pub nodes: Vec<Node>,
    /// The initializers, in file order.
    pub initializers: Vec<Initializer>,
    /// Names of the graph's inputs (initializers may be listed too in old files).
    pub inputs: Vec<String>,
    /// Names of the graph's outputs.
    pub outputs: Vec<String>,
    by_name: HashMap<String, usize>,
}

/// One node: which op, what it reads and writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// The node's name, e.g. `/backbone/encoder/layer.0/mlp/fc1/MatMul`.
    pub name: String,
    /// The operator, e.g. `MatMul`.
    pub op_type: String,
    /// Names of the tensors it reads ("" for an omitted optional input).
    pub inputs: Vec<String>,
    /// Names of the tensors it writes.
    pub outputs: Vec<String>,
}

/// A stored tensor.
#[derive(Debug, Clone, Default)]
pub struct Initializer {
    /// The tensor's name.
    pub name: String,
    /// Its shape (empty for a scalar).
    pub dims: Vec<usize>,
    /// The ONNX data type (1 = FLOAT).
    pub data_type: i32,
    /// The values, row-major, for FLOAT tensors; empty for other types.
    pub values: Vec<f32>,
}

impl Initializer {
    /// Number of elements its shape holds.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The values as a candle tensor of its shape (FLOAT only).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        if self.data_type != FLOAT {
            return Err(corrupt(format!(
                "onnx: initializer `{}` has data type {}, not FLOAT",
                self.name, self.data_type
            )));
        }
        Tensor::from_slice(&self.values, self.dims.as_slice(), device).map_err(cerr)
    }
}

impl Graph {
    /// The initializer called `name`.
    pub fn initializer(&self, name: &str) -> Result<&Initializer> {
        self.by_name
            .get(name)
            .map(|&i| &self.initializers[i])
            .ok_or_else(|| corrupt(format!("onnx: the graph has no initializer `{name}`")))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| corrupt(format!("onnx: the graph has no node `{name}`")))
    }

    /// The nodes that read the tensor `name`.
    pub fn consumers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.inputs.iter().any(|i| i == name))
    }

    /// The initializer that node `node` reads (an anonymous weight, such as
    /// the `onnx::MatMul_*` a PyTorch export makes of a Linear's Wᵀ): the
    /// single input of that node that is an initializer.
    pub fn initializer_of(&self, node: &str) -> Result<&Initializer> {
        let n = self.node(node)?;
        let mut found = n.inputs.iter().filter_map(|i| self.by_name.get(i.as_str()));
        match (found.next(), found.next()) {
            (Some(&i), None) => Ok(&self.initializers[i]),
            (None, _) => Err(corrupt(format!("onnx: node `{node}` reads no initializer"))),
            (Some(_), Some(_)) => Err(corrupt(format!("onnx: node `{node}` reads more than one initializer"))),
        }
    }
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, msg)
}

impl OnnxModel {
    /// Reads and decodes the file at `path`.
    pub fn open(path: &Path) -> Result<OnnxModel> {
        let bytes = std::fs::read(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Storage };
            Error::new(kind, format!("cannot read the ONNX model {}: {e}", path.display()))
        })?;
        Self::parse(&bytes).map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))
    }

    /// Decodes a `ModelProto` held in memory.
    pub fn parse(bytes: &[u8]) -> Result<OnnxModel> {
        let mut model = OnnxModel {
            ir_version: 0,
            producer: (String::new(), String::new()),
            opsets: vec![],
            graph: Graph::default(),
        };
        let mut graph = None;
        let mut r = Reader::new(bytes, 0, "ModelProto");
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Varint(v)) => model.ir_version = v as i64,
                (2, Value::Bytes(b, at)) => model.producer.0 = string(b, at, "producer_name")?,
                (3, Value::Bytes(b, at)) => model.producer.1 = string(b, at, "producer_version")?,
                (7, Value::Bytes(b, at)) => {
                    if graph.is_some() {
                        return Err(corrupt(format!("onnx: a second graph at byte {at}")));
                    }
                    graph = Some(parse_graph(b, at)?);
                }
                (8, Value::Bytes(b, at)) => model.opsets.push(parse_opset(b, at)?),
                (1 | 2 | 3 | 7 | 8, v) => return Err(r.wrong_type(field, &v)),
                _ => {}
            }
        }
        // A file with no graph (or not ONNX at all, whose bytes happened to
        // decode) is not a model.
        model.graph = graph.ok_or_else(|| corrupt("onnx: not an ONNX model (no graph field)"))?;
        if model.ir_version <= 0 {
            return Err(corrupt(format!("onnx: not an ONNX model (ir_version {})", model.ir_version)));
        }
        Ok(model)
    }
}

fn parse_opset(b: &[u8], base: usize) -> Result<(String, i64)> {
    let (mut domain, mut version) = (String::new(), 0);
    let mut r = Reader::new(b, base, "OperatorSetIdProto");
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(s, at)) => domain = string(s, at, "opset domain")?,
            (2, Value::Varint(v)) => version = v as i64,
            (1 | 2, v) => return Err(r.wrong_type(field, &v)),
            _ => {}
        }
    }
    Ok((domain, version))
}

fn parse_graph(b: &[u8], base: usize) -> Result<Graph> {
    let mut g = Graph::default();
    let mut r = Reader::new(b, base, "GraphProto");
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(s, at)) => g.nodes.push(parse_node(s, at)?),
            (2, Value::Bytes(s, at)) => g.name = string(s, at, "graph name")?,
            (5, Value::Bytes(s, at)) => g.initializers.push(parse_tensor(s, at)?),
            (11, Value::Bytes(s, at)) => g.inputs.push(value_info_name(s, at)?),
            (12, Value::Bytes(s, at)) => g.outputs.push(value_info_name(s, at)?),
            (1 | 2 | 5 | 11 | 12, v) => return Err(r.wrong_type(field, &v)),
            _ => {}
        }
    }
    for (i, t) in g.initializers.iter().enumerate() {
        if g.by_name.insert(t.name.clone(), i).is_some() {
            return Err(corrupt(format!("onnx: two initializers are called `{}`", t.name)));
        }
    }
    Ok(g)
}

fn value_info_name(b: &[u8], base: usize) -> Result<String> {
    let mut name = String::new();
    let mut r = Reader::new(b, base, "ValueInfoProto");
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(s, at)) => name = string(s, at, "value name")?,
            (1, v) => return Err(r.wrong_type(field, &v)),
            _ => {}
        }
    }
    Ok(name)
}

fn parse_node(b: &[u8], base: usize) -> Result<Node> {
    let mut n = Node::default();
    let mut r = Reader::new(b, base, "NodeProto");
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(s, at)) => n.inputs.push(string(s, at, "node input")?),
            (2, Value::Bytes(s, at)) => n.outputs.push(string(s, at, "node output")?),
            (3, Value::Bytes(s, at)) => n.name = string(s, at, "node name")?,
            (4, Value::Bytes(s, at)) => n.op_type = string(s, at, "op_type")?,
            (1..=4, v) => return Err(r.wrong_type(field, &v)),
            _ => {}
        }
    }
    Ok(n)
}

/// Decodes one `TensorProto`; errors name the tensor when its name is known.
fn parse_tensor(b: &[u8], base: usize) -> Result<Initializer> {
    let mut t = Initializer::default();
    let mut raw: Option<(&[u8], usize)> = None;
    let mut floats: Vec<f32> = Vec::new();
    let mut external = false;
    let mut r = Reader::new(b, base, "TensorProto");
    let res = (|| -> Result<()> {
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Varint(v)) => t.dims.push(dim(v as i64, base)?),
                (1, Value::Bytes(s, at)) => {
                    let mut p = Reader::new(s, at, "packed dims");
                    while !p.done() {
                        t.dims.push(dim(p.varint()? as i64, p.offset())?);
                    }
                }
                (2, Value::Varint(v)) => t.data_type = v as i32,
                (4, Value::Fixed32(v)) => floats.push(f32::from_bits(v)),
                (4, Value::Bytes(s, at)) => {
                    if s.len() % 4 != 0 {
                        return Err(corrupt(format!("packed float_data of {} bytes at byte {at}", s.len())));
                    }
                    floats.extend(s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                }
                (8, Value::Bytes(s, at)) => t.name = string(s, at, "tensor name")?,
                (9, Value::Bytes(s, at)) => raw = Some((s, at)),
                (14, Value::Varint(v)) => external = v == 1,
                (1 | 2 | 4 | 8 | 9 | 14, v) => return Err(r.wrong_type(field, &v)),
                _ => {}
            }
        }
        if external {
            return Err(corrupt("its data is stored outside the file (external data is not supported)"));
        }
        let numel = t.dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let numel = numel.ok_or_else(|| corrupt(format!("its shape {:?} overflows", t.dims)))?;
        if t.data_type == FLOAT {
            t.values = match raw {
                Some((s, at)) => {
                    if s.len() != numel * 4 {
                        return Err(corrupt(format!(
                            "raw_data at byte {at} holds {} bytes, its shape {:?} needs {}",
                            s.len(),
                            t.dims,
                            numel * 4
                        )));
                    }
                    s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
                }
                None => std::mem::take(&mut floats),
            };
            if t.values.len() != numel {
                return Err(corrupt(format!(
                    "it holds {} floats, its shape {:?} needs {numel}",
                    t.values.len(),
                    t.dims
                )));
            }
        }
        Ok(())
    })();
    res.map_err(|e| {
        let who = if t.name.is_empty() { String::from("an unnamed initializer") } else { format!("`{}`", t.name) };
        corrupt(format!("onnx: initializer {who} (at byte {base}): {}", e.message()))
    })?;
    Ok(t)
}

fn dim(v: i64, at: usize) -> Result<usize> {
    usize::try_from(v).map_err(|_| corrupt(format!("negative dimension {v} near byte {at}")))
}

fn string(b: &[u8], at: usize, what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| corrupt(format!("onnx: {what} at byte {at} is not UTF-8")))
}

/// A decoded field value; `Bytes` carries its absolute offset in the file.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8], usize),
    Fixed32(u32),
}

impl Value<'_> {
    fn wire_name(&self) -> &'static str {
        match self {
            Value::Varint(_) => "a varint",
            Value::Fixed64 => "a 64-bit value",
            Value::Bytes(..) => "a length-delimited value",
            Value::Fixed32(_) => "a 32-bit value",
        }
    }
}

/// Reads protobuf fields from one message's bytes; `base` is the message's
/// offset in the file, for error messages.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize, message: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, base, message }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The absolute offset of the next byte.
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn truncated(&self, what: &str) -> Error {
        corrupt(format!("onnx: truncated {} in a {} at byte {}", what, self.message, self.offset()))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else { return Err(self.truncated("varint")) };
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt(format!("onnx: varint longer than 10 bytes in a {} at byte {}", self.message, self.offset())))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, value), or None at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.done() {
            return Ok(None);
        }
        let at = self.offset();
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(corrupt(format!(
                "onnx: field number 0 in a {} at byte {at} (not an ONNX file?)",
                self.message
            )));
        }
        let value = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "64-bit field")?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.truncated("length-delimited field"))?;
                let start = self.offset();
                Value::Bytes(self.take(len, "length-delimited field")?, start)
            }
            5 => {
                let b = self.take(4, "32-bit field")?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().map_err(|_| self.truncated("32-bit field"))?))
            }
            w => {
                return Err(corrupt(format!(
                    "onnx: unsupported wire type {w} (field {field}) in a {} at byte {at} (not an ONNX file?)",
                    self.message
                )));
            }
        };
        Ok(Some((field, value)))
    }

    fn wrong_type(&self, field: u64, v: &Value) -> Error {
        // Fixed64 is never expected by the fields read here.
        corrupt(format!(
            "onnx: field {field} of a {} is {} before byte {} (not an ONNX file?)",
            self.message,
            v.wire_name(),
            self.offset()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn tensor(name: &str, dims: &[u64], vals: &[f32], packed_float_data: bool) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            varint(1 << 3, &mut t);
            varint(d, &mut t);
        }
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        bytes_field(8, name.as_bytes(), &mut t);
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes_field(if packed_float_data { 4 } else { 9 }, &data, &mut t);
        t
    }

    fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut node = Vec::new();
        bytes_field(1, b"x", &mut node);
        bytes_field(1, b"w", &mut node);
        bytes_field(2, b"y", &mut node);
        bytes_field(3, b"/fc/MatMul", &mut node);
        bytes_field(4, b"MatMul", &mut node);
        let mut g = Vec::new();
        bytes_field(1, &node, &mut g);
        for t in tensors {
            bytes_field(5, t, &mut g);
        }
        let mut vi = Vec::new();
        bytes_field(1, b"x", &mut vi);
        bytes_field(11, &vi, &mut g);
        let mut m = Vec::new();
        varint(1 << 3, &mut m);
        varint(7, &mut m);
        bytes_field(2, b"test", &mut m);
        bytes_field(7, &g, &mut m);
        m
    }

    #[test]
    fn reads_a_hand_made_model() {
        let m = model(&[tensor("w", &[2, 3], &[1., 2., 3., 4., 5., 6.], false), tensor("b", &[2], &[7., 8.], true)]);
        let m = OnnxModel::parse(&m).unwrap();
        assert_eq!(m.ir_version, 7);
        assert_eq!(m.producer.0, "test");
        let g = &m.graph;
        assert_eq!(g.inputs, ["x"]);
        assert_eq!(g.nodes[0].op_type, "MatMul");
        assert_eq!(g.nodes[0].inputs, ["x", "w"]);
        assert_eq!(g.initializer("w").unwrap().dims, [2, 3]);
        assert_eq!(g.initializer("b").unwrap().values, [7., 8.]);
        assert_eq!(g.initializer_of("/fc/MatMul").unwrap().name, "w");
        assert_eq!(g.consumers("w").count(), 1);
        let t = g.initializer("w").unwrap().to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), [2, 3]);
    }

    #[test]
    fn truncated_and_foreign_files_are_corrupt_errors() {
        let good = model(&[tensor("w", &[2, 3], &[1., 2., 3., 4., 5., 6.], false)]);
        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            let e = OnnxModel::parse(&good[..n]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{n}: {e}");
        }
        // Wrong data length names the tensor.
        let bad = model(&[tensor("w", &[2, 4], &[1., 2., 3.], false)]);
        let e = OnnxModel::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("raw_data"), "{e}");
        // Foreign bytes.
        for junk in
            [&b"PK\x03\x04 not a model"[..], b"\x89PNG\r\n\x1a\n", &[0xff; 40], b"{\"format\": \"graph-model\"}"]
        {
            let e = OnnxModel::parse(junk).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
    }
}
