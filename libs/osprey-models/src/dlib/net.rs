//! dlib DNN files (dnn/core.h, layers.h, input.h, loss.h) read into a flat
//! list of layers in input → output order.
//!
//! A network file stores the loss, then one version integer per layer from
//! the output side to the input side (1 for tag and skip layers, which carry
//! no data), then the input layer, then each computational layer's details
//! in input → output order. Which tag a skip or `add_prev` refers to is not
//! stored: the caller knows the topology (see `mmod.rs` and `resnet.rs`).

use super::serialize::{Reader, Tensor};
use osprey_core::Result;

/// A computational layer with its parameters.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Cross-correlation; `filters` is OIHW.
    Conv {
        filters: Tensor,
        bias: Option<Vec<f32>>,
        stride: [usize; 2],
        pad: [usize; 2],
    },
    /// y = x·gamma + beta per channel (batch norm is folded into this at load).
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Relu,
    MaxPool {
        size: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    },
    /// `size == [0, 0]` averages over the whole plane.
    AvgPool {
        size: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    },
    /// Adds a tagged earlier output; shapes may differ (missing values count as 0).
    AddPrev,
    /// out = in · W (+ bias); `weights` is row-major inputs × outputs.
    Fc {
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
}

impl Layer {
    /// A short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Conv { .. } => "con",
            Layer::Affine { .. } => "affine",
            Layer::Relu => "relu",
            Layer::MaxPool { .. } => "max_pool",
            Layer::AvgPool { .. } => "avg_pool",
            Layer::AddPrev => "add_prev",
            Layer::Fc { .. } => "fc",
        }
    }
}

/// The input layer: mean colour subtracted, then divided by 256.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    RgbImage { mean: [f32; 3] },
    RgbImageSized { mean: [f32; 3], rows: usize, cols: usize },
    RgbImagePyramid { mean: [f32; 3], padding: usize, outer_padding: usize },
}

/// One MMOD detection window.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorWindow {
    pub width: usize,
    pub height: usize,
    pub label: String,
}

/// dlib's `mmod_options`, the parts inference uses.
#[derive(Debug, Clone, PartialEq)]
pub struct MmodOptions {
    pub windows: Vec<DetectorWindow>,
    pub nms_iou: f64,
    pub nms_percent_covered: f64,
    pub bounding_box_regression: bool,
}

/// The loss layer, which decides how outputs become labels.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    Metric { margin: f32, distance_threshold: f32 },
    Mmod(MmodOptions),
}

/// A parsed network file.
#[derive(Debug, Clone)]
pub struct NetFile {
    pub loss: Loss,
    pub input: Input,
    pub layers: Vec<Layer>,
    /// Number of tag and skip layers seen (topology markers, no data).
    pub markers: usize,
}

const MAX_DIM: u64 = 1 << 24;

impl NetFile {
    /// Parses a whole file; trailing bytes are an error.
    pub fn parse(bytes: &[u8], name: &str) -> Result<NetFile> {
        let mut r = Reader::new(bytes, name);
        r.expect_int(1, "loss layer version").map_err(|e| e.context("not a dlib network file"))?;
        let loss = read_loss(&mut r)?;
        // Version integers of the layer stack, output side first. The run ends
        // at the input layer's tag string, whose length is at least 5.
        let mut versions = Vec::new();
        loop {
            let at = r.position();
            let v = r.int()?;
            if (1..=3).contains(&v) {
                versions.push(v);
                continue;
            }
            r.rewind(at);
            break;
        }
        let Some(&last) = versions.last() else {
            return Err(r.error("network has no layers"));
        };
        if last != 3 && last != 2 {
            return Err(r.error(format_args!("the layer next to the input has version {last}, expected 2 or 3")));
        }
        let markers = versions[..versions.len() - 1].iter().filter(|v| **v == 1).count();
        let computational = versions.len() - markers;
        let input = read_input(&mut r)?;
        let mut layers = Vec::with_capacity(computational);
        for i in 0..computational {
            layers.push(read_layer(&mut r).map_err(|e| e.context(format!("layer {i}")))?);
            // The trailer: three bools and three (empty) tensors; the layer
            // next to the input (version 3) adds its sample expansion factor.
            for _ in 0..3 {
                r.boolean()?;
            }
            for _ in 0..3 {
                r.tensor()?;
            }
            if i == 0 && last == 3 {
                r.int()?;
            }
        }
        if !r.at_end() {
            return Err(r.error(format_args!("{} bytes left after the last layer", r.remaining())));
        }
        Ok(NetFile { loss, input, layers, markers })
    }
}

fn read_loss(r: &mut Reader<'_>) -> Result<Loss> {
    let tag = r.tag(&["loss_metric_", "loss_metric_2", "loss_mmod_"], "loss layer")?;
    match tag.as_str() {
        "loss_metric_" => Ok(Loss::Metric { margin: 0.1, distance_threshold: 0.75 }),
        "loss_metric_2" => Ok(Loss::Metric { margin: r.float()?, distance_threshold: r.float()? }),
        _ => {
            let version = r.int()?;
            if !(1..=4).contains(&version) {
                return Err(r.error(format_args!("mmod_options version {version}")));
            }
            let mut windows = Vec::new();
            if version == 1 {
                let width = r.size("window width", MAX_DIM)?;
                let height = r.size("window height", MAX_DIM)?;
                windows.push(DetectorWindow { width, height, label: String::new() });
            } else {
                let n = r.size("window count", 1024)?;
                for _ in 0..n {
                    let v = r.int()?;
                    let width = r.size("window width", MAX_DIM)?;
                    let height = r.size("window height", MAX_DIM)?;
                    let label = if v == 2 { r.string(1024)? } else { String::new() };
                    windows.push(DetectorWindow { width, height, label });
                }
            }
            let _loss_per_false_alarm = r.double()?;
            let _loss_per_missed_target = r.double()?;
            let _truth_match_iou = r.double()?;
            let nms_iou = r.double()?;
            let nms_percent_covered = r.double()?;
            let _ignore_iou = r.double()?;
            let _ignore_covered = r.double()?;
            if version >= 3 {
                r.byte()?;
            }
            let mut bounding_box_regression = false;
            if version >= 4 {
                bounding_box_regression = r.boolean()?;
                r.double()?;
            }
            Ok(Loss::Mmod(MmodOptions { windows, nms_iou, nms_percent_covered, bounding_box_regression }))
        }
    }
}

fn read_input(r: &mut Reader<'_>) -> Result<Input> {
    let tag = r.tag(
        &["input_rgb_image", "input_rgb_image_sized", "input_rgb_image_pyramid", "input_rgb_image_pyramid2"],
        "input layer",
    )?;
    let mean = [r.float()?, r.float()?, r.float()?];
    Ok(match tag.as_str() {
        "input_rgb_image" => Input::RgbImage { mean },
        "input_rgb_image_sized" => {
            Input::RgbImageSized { mean, rows: r.size("input rows", MAX_DIM)?, cols: r.size("input cols", MAX_DIM)? }
        }
        "input_rgb_image_pyramid" => Input::RgbImagePyramid { mean, padding: 10, outer_padding: 11 },
        _ => Input::RgbImagePyramid {
            mean,
            padding: r.size("pyramid padding", MAX_DIM)?,
            outer_padding: r.size("pyramid outer padding", MAX_DIM)?,
        },
    })
}

fn window(r: &mut Reader<'_>) -> Result<([usize; 2], [usize; 2], [usize; 2])> {
    let nr = r.size("rows", MAX_DIM)?;
    let nc = r.size("cols", MAX_DIM)?;
    let sy = r.size("stride_y", MAX_DIM)?;
    let sx = r.size("stride_x", MAX_DIM)?;
    let py = r.size("padding_y", MAX_DIM)?;
    let px = r.size("padding_x", MAX_DIM)?;
    Ok(([nr, nc], [sy, sx], [py, px]))
}

fn read_layer(r: &mut Reader<'_>) -> Result<Layer> {
    let tag = r.tag(
        &[
            "con_4",
            "con_5",
            "con_6",
            "fc_2",
            "fc_3",
            "bn_con2",
            "bn_fc2",
            "affine_",
            "affine_2",
            "relu_",
            "relu_2",
            "max_pool_2",
            "avg_pool_2",
            "add_prev_",
        ],
        "layer",
    )?;
    match tag.as_str() {
        "con_4" | "con_5" | "con_6" => {
            let params = r.tensor()?;
            let num_filters = r.size("num_filters", MAX_DIM)?;
            let (size, stride, pad) = window(r)?;
            let filters_shape = r.alias_tensor()?;
            let bias_shape = r.alias_tensor()?;
            for _ in 0..4 {
                r.double()?;
            }
            let mut use_bias = true;
            if tag != "con_4" {
                use_bias = r.boolean()?;
            }
            if tag == "con_6" && r.boolean()? {
                return Err(r.error("con_ with a fused relu is not supported"));
            }
            let n_filter: usize = filters_shape.iter().product();
            if filters_shape[0] != num_filters || filters_shape[2..] != size || params.len() < n_filter {
                return Err(r.error(format_args!(
                    "con_ parameters {:?} do not match {num_filters} filters of {size:?}",
                    filters_shape
                )));
            }
            let n_bias: usize = bias_shape.iter().product();
            let bias = (use_bias && n_bias == num_filters && params.len() == n_filter + n_bias)
                .then(|| params.data[n_filter..].to_vec());
            let filters = Tensor { shape: filters_shape, data: params.data[..n_filter].to_vec() };
            Ok(Layer::Conv { filters, bias, stride, pad })
        }
        "fc_2" | "fc_3" => {
            let outputs = r.size("num_outputs", MAX_DIM)?;
            let inputs = r.size("num_inputs", MAX_DIM)?;
            let params = r.tensor()?;
            r.alias_tensor()?;
            r.alias_tensor()?;
            let bias_mode = r.int()?;
            for _ in 0..4 {
                r.double()?;
            }
            let mut use_bias = bias_mode == 0;
            if tag == "fc_3" {
                use_bias &= r.boolean()?;
            }
            let rows = if bias_mode == 0 { inputs + 1 } else { inputs };
            if params.len() != rows * outputs {
                return Err(r.error(format_args!("fc_ has {} parameters, expected {}", params.len(), rows * outputs)));
            }
            let weights = params.data[..inputs * outputs].to_vec();
            let bias = (use_bias && bias_mode == 0).then(|| params.data[inputs * outputs..].to_vec());
            Ok(Layer::Fc { inputs, outputs, weights, bias })
        }
        "bn_con2" | "bn_fc2" => {
            let params = r.tensor()?;
            r.alias_tensor()?;
            r.alias_tensor()?;
            let _means = r.tensor()?;
            let _invstds = r.tensor()?;
            let running_means = r.tensor()?;
            let running_variances = r.tensor()?;
            r.int()?;
            r.int()?;
            for _ in 0..4 {
                r.double()?;
            }
            let eps = r.double()? as f32;
            let k = running_means.len();
            if params.len() != 2 * k || running_variances.len() != k {
                return Err(r.error("bn_ parameter sizes disagree"));
            }
            // As dlib does when it loads a bn_ into an affine_ layer.
            let mut gamma = Vec::with_capacity(k);
            let mut beta = Vec::with_capacity(k);
            for i in 0..k {
                let g = params.data[i] / (running_variances.data[i] + eps).sqrt();
                gamma.push(g);
                beta.push(params.data[k + i] - g * running_means.data[i]);
            }
            Ok(Layer::Affine { gamma, beta })
        }
        "affine_" | "affine_2" => {
            let params = r.tensor()?;
            let g = r.alias_tensor()?;
            r.alias_tensor()?;
            let mode = r.int()?;
            if tag == "affine_2" && r.boolean()? {
                return Err(r.error("disabled affine_ layers are not supported"));
            }
            let k: usize = g.iter().product();
            if mode != 0 || params.len() != 2 * k {
                return Err(r.error(format_args!("affine_ in mode {mode} with {} parameters", params.len())));
            }
            Ok(Layer::Affine { gamma: params.data[..k].to_vec(), beta: params.data[k..].to_vec() })
        }
        "relu_" => Ok(Layer::Relu),
        "relu_2" => {
            if r.boolean()? {
                return Err(r.error("disabled relu layers are not supported"));
            }
            Ok(Layer::Relu)
        }
        "max_pool_2" => {
            let (size, stride, pad) = window(r)?;
            Ok(Layer::MaxPool { size, stride, pad })
        }
        "avg_pool_2" => {
            let (size, stride, pad) = window(r)?;
            Ok(Layer::AvgPool { size, stride, pad })
        }
        _ => Ok(Layer::AddPrev),
    }
}
