//! OSNet x1.0 and OSNet-AIN x1.0 against the reference fixtures made with
//! torchreid's own code (random full-size weights, float16 on disk): the port
//! must compute the same function, accept exactly torchreid's names and
//! shapes, and load torchreid's published checkpoint layouts. Also the
//! bit-exact Pillow bilinear resize torchreid's crops go through, against
//! Pillow's own output (`tests/data/pil_resize_reference.json`).

mod common;

use candle_core::{DType, Device, Tensor};
use common::seed::{
    fixtures, keys_json, load_fixture, max_rel, sha256_hex, stored, temp_dir, values, write_safetensors,
};
use osprey_models::checkpoint::{Checkpoint, CheckpointFormat};
use osprey_models::osnet::{IGNORED_PREFIXES, OsNet, OsNetVariant, manifest, preprocess};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const VARIANTS: [OsNetVariant; 2] = [OsNetVariant::X1_0, OsNetVariant::AinX1_0];

fn fixture(variant: OsNetVariant, what: &str) -> PathBuf {
    fixtures().join(format!("{}.{what}", variant.name()))
}

fn keys(variant: OsNetVariant) -> BTreeMap<String, Vec<usize>> {
    keys_json(&format!("{}.keys.json", variant.name()))
}

fn load_net(variant: OsNetVariant, path: &Path) -> OsNet {
    let weights = Checkpoint::open(path).unwrap().bind(&manifest(variant), &IGNORED_PREFIXES, &Device::Cpu).unwrap();
    OsNet::new(variant, &weights, &Device::Cpu).unwrap()
}

fn io(variant: OsNetVariant) -> HashMap<String, Tensor> {
    load_fixture(&format!("{}.io.safetensors", variant.name()))
}

#[test]
fn manifests_match_the_published_checkpoints() {
    for variant in VARIANTS {
        let ours: BTreeMap<String, Vec<usize>> = manifest(variant).into_iter().collect();
        assert_eq!(ours.len(), manifest(variant).len(), "{variant}: duplicate names in the manifest");
        let mut published = keys(variant);
        // The classifier is the only thing outside the feature network.
        let classifier: BTreeMap<String, Vec<usize>> =
            published.extract_if(.., |k, _| IGNORED_PREFIXES.iter().any(|p| k.starts_with(p))).collect();
        assert_eq!(
            classifier,
            BTreeMap::from([("classifier.weight".into(), vec![1000, 512]), ("classifier.bias".into(), vec![1000])]),
            "{variant}"
        );
        assert_eq!(ours, published, "{variant}");
        // The fixture's weights carry exactly the published names.
        let ckpt = Checkpoint::open(&fixture(variant, "weights.f16.safetensors")).unwrap();
        let names = stored(&ckpt);
        assert_eq!(names, keys(variant), "{variant}");
        // Elements of every state-dict entry, counters included, as config.json's `params` counts them.
        let params: usize = names.values().map(|s| s.iter().product::<usize>()).sum();
        let expected = if variant == OsNetVariant::X1_0 { 2_705_628 } else { 2_702_679 };
        assert_eq!(params, expected, "{variant}");
    }
}

#[test]
fn forward_matches_the_reference() {
    for variant in VARIANTS {
        let net = load_net(variant, &fixture(variant, "weights.f16.safetensors"));
        let io = io(variant);
        let map = net.forward_featuremap(&io["image"]).unwrap();
        assert_eq!(map.dims(), &[2, 512, 16, 8]);
        let map_err = max_rel(&values(&map), &values(&io["featuremap"]));
        let feature = net.forward(&io["image"]).unwrap();
        assert_eq!(feature.dims(), &[2, 512]);
        let feat_err = max_rel(&values(&feature), &values(&io["feature"]));
        eprintln!("{variant}: feature max relative error {feat_err:.2e}, featuremap {map_err:.2e}");
        assert!(feat_err <= 1e-4, "{variant}: feature differs from the reference by {feat_err:e}");
        assert!(map_err <= 1e-4, "{variant}: featuremap differs from the reference by {map_err:e}");

        // The u8 crops, normalised here, give the reference input and features.
        let u8s = io["image_u8"].permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        let crops: Vec<Vec<u8>> =
            (0..2).map(|i| u8s.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
        let x = preprocess(&crops, &Device::Cpu).unwrap();
        let in_err = values(&x).iter().zip(values(&io["image"])).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{variant}: preprocess max abs difference {in_err:.2e}");
        assert!(in_err <= 1e-6, "{variant}: preprocess differs from the reference input by {in_err:e}");
        let err = max_rel(&values(&net.forward(&x).unwrap()), &values(&io["feature"]));
        assert!(err <= 1e-4, "{variant}: feature of the preprocessed crops differs by {err:e}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let variant = OsNetVariant::X1_0;
    let net = load_net(variant, &fixture(variant, "weights.f16.safetensors"));
    for shape in [vec![1, 1, 256, 128], vec![3, 256, 128], vec![1, 3, 8, 8]] {
        let x = Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
        let e = net.forward(&x).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("[B, 3, H, W]"), "{e}");
    }
    let e = preprocess(&[vec![0u8; 10]], &Device::Cpu).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("crop 0 has 10 bytes"), "{e}");
}

#[test]
fn loader_names_what_is_wrong() {
    let dir = temp_dir("osnet-broken");
    for variant in VARIANTS {
        let src = fixture(variant, "weights.f16.safetensors");
        let original: BTreeMap<String, Tensor> =
            candle_core::safetensors::load(&src, &Device::Cpu).unwrap().into_iter().collect();
        let m = manifest(variant);
        let bind = |p: &Path| {
            Checkpoint::open(p)
                .and_then(|c| c.bind(&m, &IGNORED_PREFIXES, &Device::Cpu))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };

        // A renamed key: the stray name is reported (the file is sorted, so it comes before the gap).
        let mut renamed = original.clone();
        let t = renamed.remove("conv3.0.gate.fc2.weight").unwrap();
        renamed.insert("conv3.0.gate.fc2.kernel".into(), t);
        let e = bind(&write_safetensors(&dir, "renamed.safetensors", &renamed));
        assert!(e.contains("conv3.0.gate.fc2.kernel") && e.contains("renamed.safetensors"), "{variant}: {e}");

        // A missing key.
        let mut missing = original.clone();
        missing.remove("fc.1.running_var");
        let e = bind(&write_safetensors(&dir, "missing.safetensors", &missing));
        assert!(e.contains("missing tensor `fc.1.running_var`") && e.contains("missing.safetensors"), "{variant}: {e}");

        // A reshaped tensor.
        let mut reshaped = original.clone();
        let t = reshaped["conv1.conv.weight"].reshape((64, 147)).unwrap();
        reshaped.insert("conv1.conv.weight".into(), t);
        let e = bind(&write_safetensors(&dir, "reshaped.safetensors", &reshaped));
        assert!(
            e.contains("conv1.conv.weight") && e.contains("[64, 147]") && e.contains("[64, 3, 7, 7]"),
            "{variant}: {e}"
        );

        // A file cut in half.
        let bytes = std::fs::read(&src).unwrap();
        let cut = dir.join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = Checkpoint::open(&cut).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("cut.safetensors"), "{variant}: {e}");

        // The other variant's weights: an AIN-only or plain-only name is reported.
        let other = if variant == OsNetVariant::X1_0 { OsNetVariant::AinX1_0 } else { OsNetVariant::X1_0 };
        let e = Checkpoint::open(&fixture(other, "weights.f16.safetensors"))
            .and_then(|c| c.bind(&m, &IGNORED_PREFIXES, &Device::Cpu))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected tensor") || e.contains("missing tensor"), "{variant}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// torchreid's published layouts: a `nn.DataParallel` state dict (`module.`
/// names) with a classifier sized for another training set, and a
/// `torch.save`d `{"state_dict": ..., "epoch": ...}` checkpoint around the
/// `module.` names (written by `infra/scripts/write_torch_checkpoint.py`
/// without torch); both give the reference's features.
#[test]
fn published_layouts_load() {
    let dir = temp_dir("osnet-layouts");
    // The writer needs only the standard library; it is copied out of the repository at build time.
    let script = dir.join("write_torch_checkpoint.py");
    std::fs::write(&script, include_str!("../../../infra/scripts/write_torch_checkpoint.py")).unwrap();
    for variant in VARIANTS {
        let src = fixture(variant, "weights.f16.safetensors");
        let io = io(variant);
        let want = values(&io["feature"]);

        let mut module: BTreeMap<String, Tensor> = candle_core::safetensors::load(&src, &Device::Cpu)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("classifier."))
            .map(|(k, v)| (format!("module.{k}"), v))
            .collect();
        module.insert("module.classifier.weight".into(), Tensor::zeros((751, 512), DType::F16, &Device::Cpu).unwrap());
        module.insert("module.classifier.bias".into(), Tensor::zeros(751, DType::F16, &Device::Cpu).unwrap());
        let module_path = write_safetensors(&dir, "module.safetensors", &module);

        let wrapped = dir.join("checkpoint.pth.tar");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&src)
            .arg(&wrapped)
            .args(["--layout", "lightning", "--prefix", "module.", "--head", "0"])
            .status()
            .expect("python3 runs");
        assert!(status.success());
        assert_eq!(Checkpoint::open(&wrapped).unwrap().format(), CheckpointFormat::TorchZip);

        for path in [module_path, wrapped] {
            let net = load_net(variant, &path);
            let err = max_rel(&values(&net.forward(&io["image"]).unwrap()), &want);
            assert!(err <= 1e-4, "{variant} from {}: feature differs by {err:e}", path.display());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn shared_data() -> PathBuf {
    let dir = std::env::var_os("OSPREY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data"));
    assert!(dir.is_dir(), "shared data not found at {} (set OSPREY_SHARED_DATA)", dir.display());
    dir
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// Pillow's `resize(size, Image.BILINEAR)` of real images (up, down,
/// non-integer factors, one axis only, tall crops shrunk more in height),
/// compared byte for byte: 11.3.0's with [`Pillow::Before13`] and 13.0.0's
/// (which shrinks tall images vertically first) with [`Pillow::From13`].
/// Sources are decoded here with the `image` crate; a case whose decoded
/// pixels differ from Pillow's (JPEG decoders may) is reported and skipped,
/// while every PNG case must decode identically and resize exactly.
#[test]
fn pil_bilinear_resize_is_bit_exact() {
    use osprey_models::pil_resize::Pillow;
    pil_reference_matches(include_str!("data/pil_resize_reference.json"), "11.3.0", Pillow::Before13);
    pil_reference_matches(include_str!("data/pil_resize_reference_13.json"), "13.0.0", Pillow::From13);
}

fn pil_reference_matches(json: &str, version: &str, pillow: osprey_models::pil_resize::Pillow) {
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(doc["pillow"], version);
    let data = shared_data();
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let source = case["source"].as_str().unwrap();
        let img = image::open(data.join(source)).unwrap_or_else(|e| panic!("{name}: {source}: {e}")).to_rgb8();
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let full = img.into_raw();
        let (left, top, right, bottom) = match case["crop"].as_array() {
            Some(_) => {
                let c = usizes(&case["crop"]);
                (c[0], c[1], c[2], c[3])
            }
            None => (0, 0, iw, ih),
        };
        let (sw, sh) = (right - left, bottom - top);
        assert_eq!(vec![sw, sh], usizes(&case["source_size"]), "{name}");
        let src: Vec<u8> =
            (top..bottom).flat_map(|y| full[(y * iw + left) * 3..(y * iw + right) * 3].iter().copied()).collect();
        if sha256_hex(&src) != case["source_sha256"].as_str().unwrap() {
            assert!(!source.ends_with(".png"), "{name}: the PNG {source} decodes differently from Pillow");
            eprintln!("{name}: skipped, the `image` crate decodes {source} differently from Pillow");
            continue;
        }
        let size = usizes(&case["size"]);
        let (w, h) = (size[0], size[1]);
        let out = osprey_models::pil_resize::resize_bilinear_as(pillow, &src, sw, sh, 3, w, h).unwrap();
        assert_eq!(out.len(), w * h * 3, "{name}");
        if sha256_hex(&out) != case["output_sha256"].as_str().unwrap() {
            let want_rows = usizes(&case["row_sums"]);
            let rows: Vec<usize> = (0..h)
                .filter(|&y| out[y * w * 3..(y + 1) * w * 3].iter().map(|&b| b as usize).sum::<usize>() != want_rows[y])
                .collect();
            let samples = case["samples"].as_array().unwrap();
            let bad_samples = samples
                .iter()
                .filter(|s| {
                    let s = usizes(s);
                    out[(s[1] * w + s[0]) * 3..(s[1] * w + s[0]) * 3 + 3] != [s[2] as u8, s[3] as u8, s[4] as u8]
                })
                .count();
            panic!(
                "{name}: output differs from Pillow's: {} of {h} rows differ in their sums (first {:?}), {bad_samples} of {} sampled pixels differ",
                rows.len(),
                rows.first(),
                samples.len()
            );
        }
        eprintln!("{name}: {sw}x{sh} -> {w}x{h} identical to Pillow {version}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases checked");
}

#[test]
fn pil_resize_rejects_bad_input() {
    use osprey_models::pil_resize::{resize_bilinear, resize_rgb};
    let e = resize_rgb(&[0u8; 10], 2, 2, 4, 4).unwrap_err().to_string();
    assert!(e.contains("10 bytes"), "{e}");
    let e = resize_rgb(&[], 0, 2, 4, 4).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let e = resize_bilinear(&[0u8; 16], 2, 2, 4, 4, 4).unwrap_err().to_string();
    assert!(e.contains("4 channels"), "{e}");
    // Same size: the bytes come back unchanged.
    let src: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 37 % 256) as u8).collect();
    assert_eq!(resize_rgb(&src, 5, 3, 5, 3).unwrap(), src);
}
