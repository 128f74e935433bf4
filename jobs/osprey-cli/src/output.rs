//! Rows of text for `--format table|csv`; `--format json` prints the API's
//! own values instead.

use serde::Serialize;

use crate::Format;

/// Named columns of text cells.
pub struct Rows {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Rows {
    /// An empty table with these columns.
    pub fn new(columns: &[&'static str]) -> Rows {
        Rows { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Appends a row (one cell per column).
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// Left-aligned columns padded to their widest cell (numbers right-aligned).
    pub fn table(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|i| !self.rows.is_empty() && self.rows.iter().all(|r| r[i] == "-" || r[i].parse::<f64>().is_ok()))
            .collect();
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i > 0 {
                    out.push_str("  ");
                }
                if numeric[i] {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    if i + 1 < cells.len() {
                        out.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.trim_end().to_string()
        };
        let mut out = vec![line(self.columns.clone())];
        out.extend(self.rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
        out.join("\n")
    }

    /// RFC 4180 CSV with a header row.
    pub fn csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
        };
        let mut out = vec![self.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")];
        out.extend(self.rows.iter().map(|r| r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")));
        out.join("\n")
    }

    /// Prints as a table or CSV, or `json` (the API's value) as JSON.
    pub fn print<T: Serialize + ?Sized>(&self, format: Format, json: &T) -> anyhow::Result<()> {
        match format {
            Format::Table => crate::print_text(&self.table()),
            Format::Csv => crate::print_text(&self.csv()),
            Format::Json => crate::print_text(&serde_json::to_string_pretty(json)?),
        }
        Ok(())
    }
}

/// `Some(x)` formatted, `None` as `-`.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A score or threshold with 3 decimals, `-` when absent.
pub fn score(v: Option<f32>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// Milliseconds as seconds with 2 decimals (`12.40`), `-` when absent.
pub fn seconds(ms: Option<i64>) -> String {
    ms.map(|ms| format!("{:.2}", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into())
}
