//! PNG charts for evaluation reports: the CMC and DET curves.
//!
//! Charts are drawn into a pixel buffer and encoded as PNG. Their text needs a
//! TrueType font, read once at run time: the file named by `$OSPREY_FONT`, else
//! DejaVu Sans or another sans-serif font from the usual system folders (on
//! Debian, the `fonts-dejavu-core` package). No font library is linked.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use osprey_core::{Error, ErrorKind, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The family name the charts' text is drawn in.
const FAMILY: &str = "sans-serif";

/// Well-known locations of a sans-serif TrueType font, best first.
const FONT_CANDIDATES: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// A marked point on a chart, e.g. an operating point.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Shown next to the point.
    pub label: String,
    /// Position on the x axis.
    pub x: f64,
    /// Position on the y axis.
    pub y: f64,
}

/// A curve's colour by its position among a chart's curves (the first is
/// blue, as single-curve charts have always been drawn).
const PALETTE: [RGBColor; 5] =
    [BLUE, RGBColor(0, 150, 0), RGBColor(230, 120, 0), RGBColor(40, 40, 40), RGBColor(160, 0, 200)];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One named curve of a chart with several.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend (a chart of one curve without a label has no legend).
    pub label: String,
    /// The curve's points, `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// The CMC chart: identification rate (0 to 1) against rank, `cmc[k - 1]`
/// being the rate at rank `k`.
pub fn cmc_png(cmc: &[f64], size: (u32, u32)) -> Result<Vec<u8>> {
    cmc_chart_png(&[(String::new(), cmc.to_vec())], size)
}

/// The CMC chart of several curves, each `(label, cmc)` as [`cmc_png`]
/// takes it, with a legend when there is more than one or it is labelled.
pub fn cmc_chart_png(curves: &[(String, Vec<f64>)], size: (u32, u32)) -> Result<Vec<u8>> {
    if curves.is_empty() || curves.iter().any(|(_, c)| c.is_empty()) {
        return Err(Error::invalid("an empty CMC cannot be plotted"));
    }
    let series: Vec<Series> = curves
        .iter()
        .map(|(label, cmc)| Series {
            label: label.clone(),
            points: cmc.iter().enumerate().map(|(i, &r)| ((i + 1) as f64, r)).collect(),
        })
        .collect();
    let ranks = curves.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    render(size, |area| {
        let max_rank = ranks as f64;
        let mut chart = ChartBuilder::on(&area)
            .caption("Cumulative match characteristic", (FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5..max_rank + 0.5, 0.0..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("Rank")
            .y_desc("Identification rate")
            .x_labels(ranks.min(20))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(draw_err)?;
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            let line =
                chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2))).map_err(draw_err)?;
            if !s.label.is_empty() {
                line.label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            }
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(draw_err)?;
        }
        legend(&mut chart, &series, SeriesLabelPosition::LowerRight)
    })
}

/// A DET chart: a miss rate (FNIR or FNMR, linear, 0 to 1) against a false
/// alarm rate (FPIR or FMR) on a logarithmic axis. `curve` holds
/// `(false alarm rate, miss rate)` points; those with a false alarm rate of 0,
/// which a log axis cannot show, are left out, as are marks there.
pub fn det_png(curve: &[(f64, f64)], marks: &[Mark], x_desc: &str, y_desc: &str, size: (u32, u32)) -> Result<Vec<u8>> {
    det_chart_png(&[Series { label: String::new(), points: curve.to_vec() }], marks, x_desc, y_desc, size)
}

/// A DET chart of several curves, as [`det_png`] draws one, with a legend
/// when there is more than one or it is labelled. Marks are drawn in red.
pub fn det_chart_png(
    curves: &[Series],
    marks: &[Mark],
    x_desc: &str,
    y_desc: &str,
    size: (u32, u32),
) -> Result<Vec<u8>> {
    if curves.is_empty() {
        return Err(Error::invalid("a DET chart needs a curve"));
    }
    let shown: Vec<Series> = curves
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().copied().filter(|p| p.0 > 0.0 && p.0.is_finite()).collect(),
        })
        .collect();
    let marks: Vec<&Mark> = marks.iter().filter(|m| m.x > 0.0 && m.x.is_finite()).collect();
    let smallest =
        shown.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(marks.iter().map(|m| m.x)).fold(1.0f64, f64::min);
    // Whole decades, at least three, so the log axis has labelled ticks.
    // (A hair below the decade, so that its tick is drawn.)
    let low = 10f64.powf(smallest.log10().floor().min(-3.0)) * 0.98;
    render(size, |area| {
        let mut chart = ChartBuilder::on(&area)
            .caption("Detection error trade-off", (FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((low..1.0).log_scale(), 0.0..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| format!("{x:e}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(draw_err)?;
        // Steps: the miss rate holds until the next threshold lowers the
        // false alarm rate.
        for (i, s) in shown.iter().enumerate() {
            let c = colour(i);
            let line =
                chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2))).map_err(draw_err)?;
            if !s.label.is_empty() {
                line.label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            }
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 2, c.filled()))).map_err(draw_err)?;
        }
        for m in &marks {
            chart.draw_series(std::iter::once(Circle::new((m.x, m.y), 5, RED.filled()))).map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Text::new(m.label.clone(), (m.x, m.y), (FAMILY, 14).into_font())))
                .map_err(draw_err)?;
        }
        legend(&mut chart, &shown, SeriesLabelPosition::UpperRight)
    })
}

/// Draws the legend of labelled curves, if any is.
fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
    position: SeriesLabelPosition,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    if series.iter().all(|s| s.label.is_empty()) {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 14))
        .draw()
        .map_err(draw_err)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws on a white `size` canvas with `draw` and encodes the pixels as PNG.
fn render(size: (u32, u32), draw: impl FnOnce(Area<'_>) -> Result<()>) -> Result<Vec<u8>> {
    load_font()?;
    let (w, h) = size;
    if w < 200 || h < 150 || w > 8000 || h > 8000 {
        return Err(Error::invalid(format!("a chart of {w}x{h} pixels is not drawable (200x150 to 8000x8000)")));
    }
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        area.fill(&WHITE).map_err(draw_err)?;
        draw(area.clone())?;
        area.present().map_err(draw_err)?;
    }
    let image = image::RgbImage::from_raw(w, h, pixels).expect("the buffer fits the size");
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::internal(format!("cannot encode a chart as PNG: {e}")))?;
    Ok(png)
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("cannot draw a chart: {e}"))
}

/// Finds and registers the charts' font once; every later call gives the
/// first call's outcome.
fn load_font() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let path = font_path().ok_or_else(|| {
            "no TrueType font found for the charts: install DejaVu Sans (Debian: fonts-dejavu-core) \
             or set OSPREY_FONT to a .ttf file"
                .to_string()
        })?;
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read font {}: {e}", path.display()))?;
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType or OpenType font", path.display()))?;
        Ok(path)
    });
    match loaded {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::new(ErrorKind::NotFound, e.clone())),
    }
}

/// `$OSPREY_FONT`, else the first well-known font present, else the first
/// `.ttf` file under the system font folders.
fn font_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OSPREY_FONT").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = FONT_CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) {
        return Some(p.to_path_buf());
    }
    ["/usr/share/fonts", "/usr/local/share/fonts"].iter().find_map(|d| first_ttf(Path::new(d), 4))
}

fn first_ttf(dir: &Path, depth: usize) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    entries.sort();
    let is_ttf = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf"));
    if let Some(f) = entries.iter().find(|p| p.is_file() && is_ttf(p)) {
        return Some(f.clone());
    }
    if depth == 0 {
        return None;
    }
    entries.iter().filter(|p| p.is_dir()).find_map(|d| first_ttf(d, depth - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap().to_rgb8()
    }

    #[test]
    fn charts_are_pngs_of_the_asked_size_with_ink() {
        if font_path().is_none() {
            eprintln!("skipped: no font on this machine");
            return;
        }
        let cmc = cmc_png(&[0.5, 0.75, 0.8, 1.0], (640, 400)).unwrap();
        let img = decode(&cmc);
        assert_eq!(img.dimensions(), (640, 400));
        // Some of it is the blue curve, most of it is white background.
        let blue = img.pixels().filter(|p| p.0 == [0, 0, 255]).count();
        let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert!(blue > 100 && white > 640 * 400 / 2, "blue {blue}, white {white}");

        let curve = [(1.0, 0.0), (0.5, 0.1), (0.01, 0.2), (0.001, 0.5), (0.0, 0.9)];
        let mark = Mark { label: "job".into(), x: 0.01, y: 0.2 };
        let det = det_png(&curve, &[mark], "FPIR", "FNIR", (500, 300)).unwrap();
        let img = decode(&det);
        assert_eq!(img.dimensions(), (500, 300));
        assert!(img.pixels().any(|p| p.0 == [255, 0, 0]), "the mark is drawn in red");
    }

    #[test]
    fn charts_of_several_curves_draw_each_in_its_colour() {
        if font_path().is_none() {
            eprintln!("skipped: no font on this machine");
            return;
        }
        let green = |img: &image::RgbImage| img.pixels().filter(|p| p.0 == [0, 150, 0]).count();
        let one = decode(&cmc_png(&[0.5, 0.75, 0.8, 1.0], (640, 400)).unwrap());
        assert_eq!(green(&one), 0);
        let curves = vec![("face".to_string(), vec![0.5, 0.75, 0.8, 1.0]), ("body".to_string(), vec![0.25, 0.5, 0.5])];
        let two = decode(&cmc_chart_png(&curves, (640, 400)).unwrap());
        assert!(green(&two) > 100, "the second curve is green");
        let series = vec![
            Series { label: "face".into(), points: vec![(1.0, 0.0), (0.1, 0.2), (0.01, 0.5)] },
            Series { label: "fused".into(), points: vec![(1.0, 0.0), (0.1, 0.1), (0.001, 0.3)] },
        ];
        let det = decode(&det_chart_png(&series, &[], "FPIR", "FNIR", (640, 400)).unwrap());
        assert!(green(&det) > 50 && det.pixels().any(|p| p.0 == [0, 0, 255]));
        assert!(cmc_chart_png(&[], (640, 400)).is_err() && det_chart_png(&[], &[], "x", "y", (640, 400)).is_err());
    }

    #[test]
    fn bad_charts_are_refused() {
        assert!(cmc_png(&[], (640, 400)).is_err());
        if font_path().is_some() {
            assert_eq!(cmc_png(&[1.0], (10, 10)).unwrap_err().kind(), ErrorKind::InvalidInput);
        }
    }
}
