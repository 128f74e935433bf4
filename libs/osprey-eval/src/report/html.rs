//! The HTML of evaluation reports, from the templates in
//! `libs/osprey-eval/templates/` (compiled into the library). Every value a
//! template prints is HTML-escaped (`&`, `<`, `>`, `"`, `'`) unless it is
//! markup a template made itself (its macros' output).

use std::sync::OnceLock;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Output, State};
use osprey_core::{Error, Result};
use serde::Serialize;

use super::search::SearchReport;
use super::truth::file_name;
use crate::plot::{Mark, Series, cmc_chart_png, det_chart_png};

const TEMPLATES: [(&str, &str); 4] = [
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("search_report.html", include_str!("../../templates/search_report.html")),
    ("pairs_report.html", include_str!("../../templates/pairs_report.html")),
];

/// `s` with the characters that are special in HTML text and attribute
/// values escaped.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Prints values: nothing for none, HTML-escaped in .html templates unless
/// safe. (minijinja's own escaper also escapes `/`, which would mangle the
/// paths of images beside the report.)
fn formatter(out: &mut Output, state: &mut State, value: &Value) -> std::result::Result<(), minijinja::Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(());
    }
    let text = value.to_string();
    let text =
        if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() { escape_html(&text) } else { text };
    out.write_str(&text).map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
}

/// A number for a table: floats with `digits` decimals (4 by default),
/// integers as they are, `-` for none.
fn num(value: Value, digits: Option<usize>) -> String {
    if value.is_none() || value.is_undefined() {
        return "-".into();
    }
    if let Some(i) = value.as_i64().filter(|_| {
        value.kind() == minijinja::value::ValueKind::Number && !value.to_string().contains(['.', 'e', 'E', 'i', 'N'])
    }) {
        return i.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(x) => format!("{x:.*}", digits.unwrap_or(4)),
        Err(_) => value.to_string(),
    }
}

/// A track's time range in seconds, or `still image`.
fn time_range(start_ms: Option<i64>, end_ms: Option<i64>) -> String {
    match (start_ms, end_ms) {
        (Some(a), Some(b)) => format!("{:.2}–{:.2} s", a as f64 / 1000.0, b as f64 / 1000.0),
        _ => "still image".into(),
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_formatter(formatter);
        env.add_filter("num", num);
        env.add_filter("file_name", |s: String| file_name(&s).to_string());
        env.add_function("time_range", time_range);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("the report templates parse");
        }
        env
    })
}

fn render(template: &str, context: impl Serialize) -> Result<String> {
    let env = environment();
    let t = env.get_template(template).map_err(|e| Error::internal(format!("report template {template}: {e}")))?;
    t.render(Value::from(minijinja::value::Serde(context)))
        .map_err(|e| Error::internal(format!("cannot render {template}: {e:#}")))
}

/// `bytes` as a `data:` URI of type `mime` (base64), for a page that
/// carries its images inline (a report served over HTTP).
pub fn data_uri(mime: &str, bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(mime.len() + 13 + bytes.len().div_ceil(3) * 4);
    out.push_str("data:");
    out.push_str(mime);
    out.push_str(";base64,");
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A chart shown in a report: where the page loads it from, and its caption.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlotRef {
    /// The image's `src`: a file beside the report, a URL or a data URI.
    pub src: String,
    /// Its caption (also its alt text).
    pub caption: String,
}

/// A chart of a search report, drawn.
#[derive(Debug)]
pub struct Chart {
    /// The file name it is written as beside a report (`cmc.png`, `det.png`).
    pub file: &'static str,
    /// Its caption.
    pub caption: String,
    /// The PNG, or why it could not be drawn (e.g. no font).
    pub png: Result<Vec<u8>>,
}

fn fmt_threshold(t: Option<f32>) -> String {
    t.map_or("varies".to_string(), |t| format!("{t:.4}"))
}

/// The CMC and DET charts of a search report (each with a curve per
/// modality that has one), `size` pixels each. A report with neither
/// (no mated searches) has none.
pub fn search_charts(report: &SearchReport, size: (u32, u32)) -> Vec<Chart> {
    let multi = report.is_multimodal();
    let label = |m: &str| if multi { m.to_string() } else { String::new() };
    let mut charts = Vec::new();
    let cmc: Vec<(String, Vec<f64>)> = report
        .modalities
        .iter()
        .filter(|m| !m.cmc.is_empty())
        .map(|m| (label(&m.modality), m.cmc.iter().map(|p| p.rate).collect()))
        .collect();
    if !cmc.is_empty() {
        let caption = if multi {
            "CMC: share of mated probes whose mate is within each rank, one curve per modality"
        } else {
            "CMC: share of mated probes whose mate is within each rank"
        };
        charts.push(Chart { file: "cmc.png", caption: caption.into(), png: cmc_chart_png(&cmc, size) });
    }
    let with_det: Vec<_> = report.modalities.iter().filter(|m| !m.det.is_empty()).collect();
    if !with_det.is_empty() {
        let curves: Vec<Series> = with_det
            .iter()
            .map(|m| Series { label: label(&m.modality), points: m.det.iter().map(|p| (p.fpir, p.fnir)).collect() })
            .collect();
        let marks: Vec<Mark> = with_det
            .iter()
            .filter_map(|m| {
                let op = &m.operating_point;
                let who = if multi { m.modality.as_str() } else { "job" };
                Some(Mark { label: format!(" {who} ({})", fmt_threshold(op.threshold)), x: op.fpir?, y: op.fnir? })
            })
            .collect();
        let caption = if multi {
            "DET: FNIR (rank 1) against FPIR over thresholds, one curve per modality; red: each one's job threshold \
             (off the log axis where its FPIR is 0)"
        } else if marks.is_empty() || marks[0].x > 0.0 {
            "DET: FNIR (rank 1) against FPIR over thresholds; red: the job's threshold"
        } else {
            "DET: FNIR (rank 1) against FPIR over thresholds; the job's threshold has FPIR 0, off the log axis"
        };
        let png = det_chart_png(&curves, &marks, "FPIR (log scale)", "FNIR (rank 1)", size);
        charts.push(Chart { file: "det.png", caption: caption.into(), png });
    }
    charts
}

/// One row of the summary table: a label and one cell per modality.
#[derive(Serialize)]
struct SummaryRow {
    label: String,
    cells: Vec<String>,
}

fn summary(report: &SearchReport) -> Vec<SummaryRow> {
    let multi = report.is_multimodal();
    let row = |label: &str, cell: &dyn Fn(&super::search::ModalityEvaluation) -> String| SummaryRow {
        label: label.to_string(),
        cells: report.modalities.iter().map(cell).collect(),
    };
    let rate = |v: Option<f64>| v.map_or("-".to_string(), |r| format!("{r:.4}"));
    let mut rows = vec![
        row("truth rows (mated / non-mated)", &|m| {
            format!("{} ({} / {})", m.counts.truth_rows, m.counts.truth_mated, m.counts.truth_nonmated)
        }),
        row("truth rows naming no media of the job", &|m| m.counts.truth_not_in_job.to_string()),
    ];
    if multi {
        rows.push(row("probes", &|m| m.counts.job_probe_templates.to_string()));
    }
    rows.extend([
        row(
            if multi {
                "media without a probe (mated / non-mated)"
            } else {
                "media without a face (mated / non-mated)"
            },
            &|m| format!("{} / {}", m.counts.not_detected_mated, m.counts.not_detected_nonmated),
        ),
        row(
            if multi {
                "mated searches (probes + undetected media)"
            } else {
                "mated searches (faces + undetected media)"
            },
            &|m| m.counts.mated_searches.to_string(),
        ),
        row("non-mated searches", &|m| m.counts.nonmated_searches.to_string()),
        row("probe templates without truth (ignored)", &|m| m.counts.probes_without_truth.to_string()),
        row("rank-1 identification rate", &|m| rate(m.rank1)),
        row("job threshold", &|m| fmt_threshold(m.operating_point.threshold)),
        row("FNIR at the job threshold", &|m| rate(m.operating_point.fnir)),
        row("FPIR at the job threshold", &|m| rate(m.operating_point.fpir)),
    ]);
    rows
}

#[derive(Serialize)]
struct SearchPage<'a> {
    report: &'a SearchReport,
    summary: Vec<SummaryRow>,
    plots: &'a [PlotRef],
    plot_notes: &'a [String],
    limit: usize,
    generated: &'a str,
}

/// The HTML page of a search report: summary (a column per modality),
/// `plots` (see [`search_charts`]) and notes on plots not drawn, the
/// FNIR/DIR and CMC tables, and each modality's galleries of hits, misses
/// and false matches (the first `limit` of each, with the `thumbnail` the
/// caller set) and media not detected. `generated` is shown as the time the
/// report was made.
pub fn search_report_html(
    report: &SearchReport,
    plots: &[PlotRef],
    plot_notes: &[String],
    limit: usize,
    generated: &str,
) -> Result<String> {
    render("search_report.html", SearchPage { report, summary: summary(report), plots, plot_notes, limit, generated })
}

/// What the verification (pairs) report shows.
#[derive(Debug, Clone, Serialize)]
pub struct PairsPage {
    /// The pairs file.
    pub name: String,
    /// The images folder.
    pub images: String,
    /// The face model.
    pub model: String,
    /// When the report was made.
    pub generated: String,
    /// Summary rows: (label, value).
    pub rows: Vec<(String, String)>,
    /// Images in which no face was found.
    pub no_face: Vec<String>,
    /// Cross-validation folds.
    pub folds: usize,
    /// How the folds were made (e.g. `folds in file order, …`).
    pub fold_rule: String,
    /// The DET chart's `src`, when drawn.
    pub plot: Option<String>,
    /// Why it was not drawn.
    pub plot_note: Option<String>,
}

/// The HTML page of a verification report.
pub fn pairs_report_html(page: &PairsPage) -> Result<String> {
    render("pairs_report.html", page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_images_marked() {
        assert_eq!(escape_html("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let page = PairsPage {
            name: "<script>alert('x')</script>".into(),
            images: "/data/a&b".into(),
            model: "m".into(),
            generated: "now".into(),
            rows: vec![("EER <b>".into(), "0.1".into())],
            no_face: vec!["x\".jpg".into()],
            folds: 10,
            fold_rule: "stratified".into(),
            plot: Some("plots/det\".png".into()),
            plot_note: None,
        };
        let html = pairs_report_html(&page).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{html}");
        assert!(
            html.contains("/data/a&amp;b") && html.contains("EER &lt;b&gt;") && html.contains("<li>x&quot;.jpg</li>")
        );
        assert!(html.contains("src=\"plots/det&quot;.png\""), "{html}");
        assert!(html.contains("onload=\"if(this.naturalWidth>0)this.dataset.loaded='true'\""));
    }

    #[test]
    fn data_uris_are_base64() {
        assert_eq!(data_uri("text/plain", b""), "data:text/plain;base64,");
        assert_eq!(data_uri("a/b", b"f"), "data:a/b;base64,Zg==");
        assert_eq!(data_uri("a/b", b"fo"), "data:a/b;base64,Zm8=");
        assert_eq!(data_uri("a/b", b"foo"), "data:a/b;base64,Zm9v");
        assert_eq!(data_uri("image/png", &[0x89, b'P', b'N', b'G', 0xff]), "data:image/png;base64,iVBOR/8=");
    }

    #[test]
    fn numbers_print_as_the_tables_want() {
        assert_eq!(num(Value::from(0.123456f64), None), "0.1235");
        assert_eq!(num(Value::from(0.5f32), Some(2)), "0.50");
        assert_eq!(num(Value::from(7), None), "7");
        assert_eq!(num(Value::from(()), None), "-");
        assert_eq!(time_range(Some(1500), Some(2250)), "1.50–2.25 s");
        assert_eq!(time_range(None, None), "still image");
    }
}
