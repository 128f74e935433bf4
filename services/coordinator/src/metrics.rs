//! Prometheus text metrics: counters kept with atomics, gauges read from the
//! job table when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency buckets in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.buckets[i].load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything the coordinator counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub jobs_submitted: Counter,
    pub jobs_finished: Counter,
    pub tasks_leased: Counter,
    pub tasks_completed: Counter,
    pub tasks_failed: Counter,
    pub tasks_retried: Counter,
    pub frames: Counter,
    pub probes_searched: Counter,
    pub searches: Counter,
    pub search_latency: Histogram,
    pub sql_queries: Counter,
    pub sql_latency: Histogram,
}

impl Metrics {
    /// The Prometheus text exposition, with the job table's gauges.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let counters = [
            ("osprey_jobs_submitted_total", "Jobs submitted.", &self.jobs_submitted),
            ("osprey_jobs_finished_total", "Jobs ended (any end state).", &self.jobs_finished),
            ("osprey_tasks_leased_total", "Task leases handed to workers.", &self.tasks_leased),
            ("osprey_tasks_completed_total", "Tasks completed.", &self.tasks_completed),
            ("osprey_tasks_failed_total", "Tasks failed for good.", &self.tasks_failed),
            ("osprey_tasks_retried_total", "Task failures retried.", &self.tasks_retried),
            ("osprey_frames_total", "Frames analysed by completed tasks (images count one).", &self.frames),
            ("osprey_job_probes_searched_total", "Probe templates of search jobs searched.", &self.probes_searched),
            ("osprey_searches_total", "REST searches answered.", &self.searches),
            ("osprey_sql_queries_total", "SQL queries answered.", &self.sql_queries),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", c.get());
        }
        self.search_latency.render(&mut out, "osprey_search_seconds", "REST search latency.");
        self.sql_latency.render(&mut out, "osprey_sql_seconds", "SQL query latency.");
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
