//! Shared by the tests that run the `osprey` binary on real media: where the
//! repository, the test data and the models are, and how to run it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..")
}

pub fn data() -> PathBuf {
    let dir = std::env::var_os("OSPREY_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    assert!(dir.is_dir(), "test data not found at {} (set OSPREY_DATA)", dir.display());
    dir
}

/// A file of the seed models' reference fixtures
/// (`$OSPREY_SEED_FIXTURES`, else ../shared/fixtures/seed-models).
pub fn seed_fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("OSPREY_SEED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures/seed-models"));
    let f = dir.join(name);
    assert!(f.is_file(), "seed fixture not found at {} (set OSPREY_SEED_FIXTURES)", f.display());
    f
}

pub fn osprey(args: &[&str]) -> Output {
    let models = std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
    Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(args)
        .env_remove("OSPREY_ROOT")
        .env("OSPREY_MODELS", models)
        .output()
        .expect("osprey runs")
}

pub fn ok(args: &[&str]) -> (String, String) {
    let out = osprey(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "osprey {args:?} failed:\n{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Clustered unit vectors from `osprey bench gen`: `n` of `dim` floats
/// around `clusters` centres (`spread` relative to their distance), written
/// to `out` (`.npy`) with each vector's cluster as its subject in `subjects`.
pub fn generate_vectors(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64, out: &Path, subjects: &Path) {
    let (n, dim, clusters, spread, seed) =
        (n.to_string(), dim.to_string(), clusters.to_string(), spread.to_string(), seed.to_string());
    ok(&[
        "bench",
        "gen",
        "--n",
        &n,
        "--dim",
        &dim,
        "--clusters",
        &clusters,
        "--spread",
        &spread,
        "--seed",
        &seed,
        "--out",
        s(out),
        "--subjects-out",
        s(subjects),
    ]);
}
