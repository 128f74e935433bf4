//! The README as a test: the demo (its first command, after set-up and the
//! build) runs on media from package registries and reports real `match` and
//! `unknown` decisions, and then every ```bash example in the README runs as
//! written against the server the demo left running. A block is skipped only
//! when the line before it is `<!-- not run: reason -->`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::repo;

/// Stops the demo server however the test ends.
struct DemoServer(PathBuf);

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ =
            Command::new("bash").arg(repo().join("infra/scripts/demo.sh")).arg("stop").current_dir(&self.0).output();
    }
}

fn bash(dir: &Path, script: &str, port: u16) -> Output {
    let models = std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("OSPREY", env!("CARGO_BIN_EXE_osprey"))
        .env("OSPREY_DEMO_PORT", port.to_string())
        .env("OSPREY_MODELS", models)
        .env("OSPREY_REPO", repo())
        .env_remove("OSPREY_ROOT")
        .env_remove("OSPREY_SERVER")
        .env_remove("OSPREY_API_KEY")
        .output()
        .expect("bash runs")
}

/// The ```bash blocks of `markdown` with the line each starts on, minus those
/// marked `<!-- not run: … -->`.
fn bash_blocks(markdown: &str) -> (Vec<(usize, String)>, usize) {
    let mut blocks = Vec::new();
    let mut skipped = 0;
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start() == "```bash" {
            let start = i + 1;
            let marked = i > 0 && lines[i - 1].trim_start().starts_with("<!-- not run");
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim_start() != "```" {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            if marked {
                skipped += 1;
            } else {
                blocks.push((start, body));
            }
        }
        i += 1;
    }
    (blocks, skipped)
}

#[test]
fn demo_and_readme_examples_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = DemoServer(dir.path().to_path_buf());

    // The demo, as `make demo` runs it once the binary is built.
    let demo = bash(dir.path(), "\"$OSPREY_REPO/infra/scripts/demo.sh\"", port);
    let stdout = String::from_utf8_lossy(&demo.stdout);
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(demo.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    println!("{stdout}");

    // Its results table: media, modality, track, start, end, decision, subject, score, threshold.
    let all_rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.len() == 9 && (c[5] == "match" || c[5] == "unknown"))
        .collect();
    // Face rows as (media, track, start, end, decision, subject), and body rows.
    let rows: Vec<Vec<&str>> =
        all_rows.iter().filter(|c| c[1] == "face").map(|c| vec![c[0], c[2], c[3], c[4], c[5], c[6]]).collect();
    let bodies: Vec<&Vec<&str>> = all_rows.iter().filter(|c| c[1] == "body").collect();
    let find = |media: &str, decision: &str| rows.iter().filter(|r| r[0].ends_with(media) && r[4] == decision).count();
    assert!(find("obama3.jpg", "match") == 1, "obama3.jpg is not matched:\n{stdout}");
    assert!(find("obama_partial_face.jpg", "match") == 1, "obama_partial_face.jpg is not matched:\n{stdout}");
    assert_eq!(find("Tom_Hanks_54745.png", "unknown"), 1, "Tom Hanks (not enrolled) must be unknown:\n{stdout}");
    assert_eq!(find("t1.jpg", "unknown"), 6, "the six strangers in t1.jpg must be unknown:\n{stdout}");
    assert_eq!(find("t1.jpg", "match"), 0, "a stranger in t1.jpg was matched:\n{stdout}");
    // In the clip, Obama appears from 4 s to 7 s, then Tom Hanks to 10 s.
    let clip: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0].ends_with("street-clip.mp4")).collect();
    let obama = clip
        .iter()
        .find(|r| r[4] == "match" && r[5] == "obama")
        .unwrap_or_else(|| panic!("no Obama track in the clip:\n{stdout}"));
    let (start, end): (f64, f64) = (obama[2].parse().unwrap(), obama[3].parse().unwrap());
    assert!(
        (3.9..=4.6).contains(&start) && (6.0..=7.1).contains(&end),
        "Obama's track is at {start}-{end} s:\n{stdout}"
    );
    let hanks =
        clip.iter().find(|r| r[4] == "unknown").unwrap_or_else(|| panic!("no unknown track in the clip:\n{stdout}"));
    let hanks_start: f64 = hanks[2].parse().unwrap();
    assert!((6.9..=7.6).contains(&hanks_start), "the unknown track starts at {hanks_start} s:\n{stdout}");
    // The pedestrians of the clip's first 4 s, too small for faces, are person tracks.
    let walkers =
        bodies.iter().filter(|r| r[0].ends_with("street-clip.mp4") && r[4].parse::<f64>().unwrap() <= 4.1).count();
    assert!(walkers >= 3, "the street clip's pedestrians are not person tracks:\n{stdout}");
    // Fused rows (`fused (quality)`: one more column), one per person.
    let fused: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.len() == 10 && c[1] == "fused" && c[2] == "(quality)")
        .collect();
    let fused_find = |media: &str, decision: &str, subject: &str| {
        fused.iter().filter(|c| c[0].ends_with(media) && c[6] == decision && c[7] == subject).count()
    };
    // Obama's face and body decide together: one fused match, whatever
    // his body alone says.
    assert_eq!(fused_find("obama3.jpg", "match", "obama"), 1, "obama3.jpg has no fused match:\n{stdout}");
    assert_eq!(
        fused_find("Tom_Hanks_54745.png", "match", "obama") + fused_find("Tom_Hanks_54745.png", "match", "biden"),
        0
    );
    assert!(
        fused.iter().filter(|c| c[0].ends_with("t1.jpg")).all(|c| c[6] == "unknown"),
        "a stranger in t1.jpg was matched by fusion:\n{stdout}"
    );
    assert!(stdout.contains("The demo server is still running"), "{stdout}");

    // Every README example, in order, in the demo's folder.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let (blocks, skipped) = bash_blocks(&readme);
    assert!(blocks.len() >= 5, "expected the README's examples, found {} blocks", blocks.len());
    assert!(skipped <= 5, "{skipped} README blocks are marked as not run");
    for (line, body) in &blocks {
        let script = format!("source out/demo/env\n{body}");
        let out = bash(dir.path(), &script, port);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README.md block at line {line} failed:\n{body}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        println!("README.md:{line} ok\n{stdout}");
    }
}
