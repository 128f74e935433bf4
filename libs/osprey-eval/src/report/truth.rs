//! Ground truth for search evaluation: a `media,subject` CSV (optionally
//! `time_s,x,y`: who is where, when), and the rules that match its media
//! names to the media of a job.

use std::collections::{BTreeSet, HashMap};

use osprey_core::{Error, Result};

/// One row of a truth CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthRow {
    /// 1-based line in the file.
    pub line: u64,
    /// The media it names (a path, a path suffix or a file name).
    pub media: String,
    /// The gallery subject in it; `None`: not enrolled (`unknown`).
    pub subject: Option<String>,
    /// Where the subject is: a point on the person (best their head) at a
    /// time of the video. `None`: every person in the media is the subject.
    pub at: Option<TruthPoint>,
}

/// A point on one person at one time of a video (or of an image, at 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthPoint {
    /// The time, in milliseconds.
    pub t_ms: i64,
    /// Pixel column, in the frame as decoded.
    pub x: f32,
    /// Pixel row.
    pub y: f32,
}

/// How far from a truth point's time a track's nearest box may be and still
/// be compared with the point, in milliseconds.
pub const TRUTH_POINT_TOLERANCE_MS: i64 = 1000;

/// Parses a `media,subject` CSV (other columns are ignored; `#` starts a
/// comment line; a leading `./` of a media name is dropped; `unknown`, in
/// any case, is a person not enrolled). `name` names the file in errors,
/// which give its line.
///
/// With the columns `time_s,x,y` too, a row filled in all three names one
/// person: the one whose track has a box around pixel (x, y) at `time_s`
/// (see [`TruthPoint`]); a row with the three empty names the whole media. A
/// media file has either one whole-media row or point rows.
pub fn parse_truth(text: &str, name: &str) -> Result<Vec<TruthRow>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bad = |line: u64, what: String| Error::invalid(format!("{name} line {line}: {what}"));
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).comment(Some(b'#')).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| csv_error(name, &e))?.clone();
    let column = |want: &str| header.iter().position(|h| h.eq_ignore_ascii_case(want));
    let (Some(media_col), Some(subject_col)) = (column("media"), column("subject")) else {
        let line = header.position().map_or(1, |p| p.line());
        let found = header.iter().collect::<Vec<_>>().join(",");
        return Err(bad(line, format!("the header must name the columns `media,subject`, found `{found}`")));
    };
    let point_cols = match (column("time_s"), column("x"), column("y")) {
        (Some(t), Some(x), Some(y)) => Some((t, x, y)),
        (None, None, None) => None,
        _ => {
            let line = header.position().map_or(1, |p| p.line());
            return Err(bad(line, "a point needs all three columns `time_s,x,y`".into()));
        }
    };
    let mut rows = Vec::new();
    // Per media: the line of its whole-media row, or of its first point row.
    let mut first_line: HashMap<String, (u64, bool)> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(name, &e))?;
        let line = record_line(text, &record, true);
        let media = record[media_col].trim_start_matches("./").to_string();
        let subject = record[subject_col].to_string();
        if media.is_empty() {
            return Err(bad(line, "empty `media`".into()));
        }
        if subject.is_empty() {
            return Err(bad(line, "empty `subject` (write `unknown` for a person not enrolled)".into()));
        }
        let at = match point_cols {
            None => None,
            Some((t, x, y)) => parse_point([&record[t], &record[x], &record[y]]).map_err(|what| bad(line, what))?,
        };
        match first_line.get(&media) {
            Some(&(first, false)) => {
                return Err(bad(line, format!("media `{media}` is listed again (first at line {first})")));
            }
            Some(&(first, true)) if at.is_none() => {
                return Err(bad(
                    line,
                    format!(
                        "media `{media}` has point rows (first at line {first}); a whole-media row cannot join them"
                    ),
                ));
            }
            Some(_) => {}
            None => {
                first_line.insert(media.clone(), (line, at.is_some()));
            }
        }
        let subject = (!subject.eq_ignore_ascii_case("unknown")).then_some(subject);
        rows.push(TruthRow { line, media, subject, at });
    }
    if rows.is_empty() {
        return Err(Error::invalid(format!("{name} has no truth rows under its `media,subject` header")));
    }
    Ok(rows)
}

/// A row's `time_s,x,y`: all three numbers, or all three empty (`None`).
fn parse_point(fields: [&str; 3]) -> std::result::Result<Option<TruthPoint>, String> {
    if fields.iter().all(|f| f.is_empty()) {
        return Ok(None);
    }
    let mut v = [0f64; 3];
    for ((slot, field), col) in v.iter_mut().zip(fields).zip(["time_s", "x", "y"]) {
        *slot = field
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("`{col}` must be a number ≥ 0 (or `time_s,x,y` all empty), found `{field}`"))?;
    }
    Ok(Some(TruthPoint { t_ms: (v[0] * 1000.0).round() as i64, x: v[1] as f32, y: v[2] as f32 }))
}

/// The 1-based line a CSV record starts on. (The csv crate positions a
/// record where the previous one ended: before line breaks and, when
/// `comments`, skipped `#` lines.)
pub fn record_line(text: &str, record: &csv::StringRecord, comments: bool) -> u64 {
    let b = text.as_bytes();
    let mut i = record.position().map_or(0, |p| p.byte() as usize).min(b.len());
    loop {
        while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
            i += 1;
        }
        if comments && i < b.len() && b[i] == b'#' && (i == 0 || b[i - 1] == b'\n') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        break;
    }
    1 + b[..i].iter().filter(|&&c| c == b'\n').count() as u64
}

/// A CSV error as an invalid-input error naming the file and line.
pub fn csv_error(name: &str, e: &csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    let what = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("expected {expected_len} fields like the header, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    match line {
        Some(line) => Error::invalid(format!("{name} line {line}: {what}")),
        None => Error::invalid(format!("{name}: {what}")),
    }
}

/// The last `/`-separated part of a path or URL.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The media of a job, indexed for matching truth rows to them.
pub struct MediaIndex {
    by_name: HashMap<String, Vec<String>>,
}

impl MediaIndex {
    /// Indexes `media` (repeats are fine).
    pub fn new<'a>(media: impl IntoIterator<Item = &'a String>) -> Self {
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for m in media.into_iter().collect::<BTreeSet<_>>() {
            by_name.entry(file_name(m).to_string()).or_default().push(m.clone());
        }
        Self { by_name }
    }

    /// How many distinct media are indexed.
    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    /// Whether no media are indexed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The job media `truth` names: exactly, else by a path suffix starting
    /// at a `/`, else by file name. `Err` names the deciding rule and lists
    /// the media when it matches more than one.
    pub fn resolve(&self, truth: &str) -> std::result::Result<Option<&str>, (&'static str, Vec<&str>)> {
        let Some(candidates) = self.by_name.get(file_name(truth)) else { return Ok(None) };
        let suffix =
            |m: &&String| m.ends_with(truth) && (truth.starts_with('/') || m[..m.len() - truth.len()].ends_with('/'));
        let rules: [(&'static str, Vec<&str>); 3] = [
            ("exactly", candidates.iter().filter(|m| *m == truth).map(String::as_str).collect()),
            ("path suffix", candidates.iter().filter(suffix).map(String::as_str).collect()),
            ("file name", candidates.iter().map(String::as_str).collect()),
        ];
        for (rule, found) in rules {
            match found.len() {
                0 => continue,
                1 => return Ok(Some(found[0])),
                _ => return Err((rule, found)),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_csv_rules() {
        let rows = parse_truth("media,subject\r\na/x.jpg, amy \n# comment\n\"b,c.jpg\",unknown\n", "t.csv").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].line, rows[0].media.as_str(), rows[0].subject.as_deref()), (2, "a/x.jpg", Some("amy")));
        assert_eq!((rows[1].line, rows[1].media.as_str(), rows[1].subject.as_deref()), (4, "b,c.jpg", None));

        let err = |text: &str| parse_truth(text, "t.csv").unwrap_err().to_string();
        assert!(err("media,subject\nx.jpg,amy\ny.jpg,amy,extra\n").contains("t.csv line 3: expected 2 fields"));
        assert!(err("file,who\nx.jpg,amy\n").contains("line 1: the header must name"));
        assert!(err("media,subject\nx.jpg,\n").contains("line 2: empty `subject`"));
        assert!(
            err("media,subject\nx.jpg,a\n./x.jpg,b\n")
                .contains("line 3: media `x.jpg` is listed again (first at line 2)")
        );
        assert!(err("media,subject\n").contains("no truth rows"));
    }

    #[test]
    fn truth_points_name_one_person() {
        let text = "media,subject,time_s,x,y\nclip.mp4,amy,1.5,100,200\nclip.mp4,unknown,2,300.5,40\nphoto.jpg,bo,,,\n";
        let rows = parse_truth(text, "t.csv").unwrap();
        assert_eq!(rows[0].at, Some(TruthPoint { t_ms: 1500, x: 100.0, y: 200.0 }));
        assert_eq!((rows[1].subject.as_deref(), rows[1].at.map(|p| p.x)), (None, Some(300.5)));
        assert_eq!(rows[2].at, None);

        let err = |text: &str| parse_truth(text, "t.csv").unwrap_err().to_string();
        assert!(err("media,subject,time_s,x\nc.mp4,a,1,2\n").contains("line 1: a point needs all three columns"));
        assert!(err("media,subject,time_s,x,y\nc.mp4,a,1,,3\n").contains("line 2: `x` must be a number"));
        assert!(err("media,subject,time_s,x,y\nc.mp4,a,-1,2,3\n").contains("`time_s` must be a number ≥ 0"));
        assert!(
            err("media,subject,time_s,x,y\nc.mp4,a,1,2,3\nc.mp4,b,,,\n")
                .contains("line 3: media `c.mp4` has point rows (first at line 2)")
        );
        assert!(
            err("media,subject,time_s,x,y\nc.mp4,b,,,\nc.mp4,a,1,2,3\n")
                .contains("line 3: media `c.mp4` is listed again")
        );
    }

    #[test]
    fn media_matching_rules() {
        let media: Vec<String> =
            ["/data/a/x.jpg", "/data/b/x.jpg", "/data/b/y.jpg", "s3://bucket/clips/z.mp4", "/data/xx.jpg"]
                .map(String::from)
                .to_vec();
        let index = MediaIndex::new(&media);
        assert_eq!(index.len(), 5);
        assert_eq!(index.resolve("/data/a/x.jpg"), Ok(Some("/data/a/x.jpg")));
        assert_eq!(index.resolve("a/x.jpg"), Ok(Some("/data/a/x.jpg")));
        assert_eq!(index.resolve("y.jpg"), Ok(Some("/data/b/y.jpg")));
        assert_eq!(index.resolve("other/y.jpg"), Ok(Some("/data/b/y.jpg")), "by file name");
        assert_eq!(index.resolve("clips/z.mp4"), Ok(Some("s3://bucket/clips/z.mp4")));
        assert_eq!(index.resolve("x.jpg").unwrap_err().0, "path suffix");
        assert_eq!(index.resolve("c/x.jpg").unwrap_err().0, "file name");
        assert_eq!(index.resolve("w.jpg"), Ok(None));
        // A suffix starts at a `/`: `x.jpg` is not a suffix of `xx.jpg`.
        assert_eq!(index.resolve("data/xx.jpg"), Ok(Some("/data/xx.jpg")));
    }
}
