//! The deployment files under infra/ (Kubernetes manifests, Dockerfiles),
//! checked by infra/scripts/check_infra.py: the Kubernetes schemas, the
//! references between the manifests, the Dockerfiles' sources and stages,
//! and this build's `osprey` (its subcommands and flags, and a coordinator
//! and a worker started as the manifests configure them).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::repo;

#[test]
fn infra_manifests_and_dockerfiles_are_valid() {
    let python = std::env::var_os("OSPREY_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/osprey/venv/bin/python")
    });
    let out = Command::new(&python)
        .arg(repo().join("infra/scripts/check_infra.py"))
        .arg(env!("CARGO_BIN_EXE_osprey"))
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{}` ({e}): run infra/scripts/setup.sh and set OSPREY_PYTHON", python.display())
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "infra/scripts/check_infra.py failed ({}):\n{stdout}\n{stderr}", out.status);
}
