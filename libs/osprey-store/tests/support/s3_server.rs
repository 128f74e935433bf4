//! A real S3-compatible server for tests: s3s-fs (crates.io, installed by
//! `infra/scripts/setup.sh`) over a temporary folder, stopped on drop.
//! Included by path (`#[path]`) from the store's and the CLI's tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    child: Child,
    pub port: u16,
    /// The folder the server serves: `<dir>/<bucket>/<key>` is object `key`.
    pub dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn s3_server_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("OSPREY_S3FS_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = std::path::Path::new(&home).join(".cache/osprey/tools/bin/s3s-fs");
    if cached.exists() { cached } else { "s3s-fs".into() }
}

/// Starts s3s-fs on a free loopback port serving an empty `bucket`
/// (access key `osprey`, secret `osprey-secret`).
pub fn start_s3(bucket: &str) -> S3Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(bucket)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = s3_server_binary();
    let child = Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "osprey",
            "--secret-key",
            "osprey-secret",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start the S3 test server `{}` ({e}); run infra/scripts/setup.sh", bin.display())
        });
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return S3Server { child, port, dir };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("S3 test server did not listen on port {port}");
}
