//! Prometheus metrics: request counts and latencies per route, bytes in and out, ledger sync
//! latency and batch sizes (recorded where they happen), and, read from the projections at
//! scrape time, projection lag, task progress and datastore sizes.
//!
//! One registry per server ([`Metrics`], built by `server::start_with` and handed to the
//! ledger's syncer and the HTTP layer), so two servers in one process never share counters;
//! `GET /metrics` renders the text format.

use crate::ledger::Ledger;
use media_ledger_events::DatastoreId;
use media_ledger_projections::names;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the latency histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the events-per-sync histogram.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// A cumulative histogram.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

/// The figures of one route and method.
struct RouteStats {
    statuses: Mutex<BTreeMap<u16, u64>>,
    latency: Histogram,
}

/// The registry.
pub struct Metrics {
    /// Route → method → its figures; allocates only the first time a pair is seen.
    routes: Mutex<BTreeMap<String, BTreeMap<String, std::sync::Arc<RouteStats>>>>,
    /// Request body bytes received (by `Content-Length`).
    pub bytes_in: AtomicU64,
    /// Response body bytes sent (by `Content-Length`).
    pub bytes_out: AtomicU64,
    /// Time of one WAL sync (covers every group written since the previous one).
    pub ledger_sync_seconds: Histogram,
    /// Events made durable by one WAL sync.
    pub ledger_sync_events: Histogram,
    /// Events committed.
    pub ledger_events: AtomicU64,
    /// A cluster node: how long after it was recorded (by another node) each event reached
    /// this node's projections.
    pub follow_lag_seconds: Histogram,
    /// A cluster node: appends lost to another node (caught up, validated and retried).
    pub lost_appends: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            routes: Mutex::new(BTreeMap::new()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            ledger_sync_seconds: Histogram::new(LATENCY_BUCKETS),
            ledger_sync_events: Histogram::new(BATCH_BUCKETS),
            ledger_events: AtomicU64::new(0),
            follow_lag_seconds: Histogram::new(LATENCY_BUCKETS),
            lost_appends: AtomicU64::new(0),
        }
    }
}

/// The `method` label of a request: the methods the routes know, else `OTHER` (a client
/// chooses the method, and each distinct label would be kept for good).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    /// Records one answered request.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let stats = {
            let mut routes = self.routes.lock();
            let known = routes.get(route).and_then(|m| m.get(method)).cloned();
            known.unwrap_or_else(|| {
                routes
                    .entry(route.to_owned())
                    .or_default()
                    .entry(method.to_owned())
                    .or_insert_with(|| {
                        std::sync::Arc::new(RouteStats {
                            statuses: Mutex::new(BTreeMap::new()),
                            latency: Histogram::new(LATENCY_BUCKETS),
                        })
                    })
                    .clone()
            })
        };
        *stats.statuses.lock().entry(status).or_default() += 1;
        stats.latency.observe(seconds);
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The text exposition of every metric of `m` and of the gauges read from `ledger`
/// (`datastores`: the configured ids).
pub fn render(m: &Metrics, ledger: &Ledger, datastores: &[DatastoreId]) -> String {
    let mut out = String::new();
    let routes: Vec<(String, String, std::sync::Arc<RouteStats>)> = m
        .routes
        .lock()
        .iter()
        .flat_map(|(route, methods)| {
            methods
                .iter()
                .map(|(method, s)| (route.clone(), method.clone(), s.clone()))
        })
        .collect();
    out.push_str("# TYPE media_ledger_http_requests_total counter\n");
    for (route, method, s) in &routes {
        for (status, n) in s.statuses.lock().iter() {
            let _ = writeln!(
                out,
                "media_ledger_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
    }
    out.push_str("# TYPE media_ledger_http_request_duration_seconds histogram\n");
    for (route, method, s) in &routes {
        s.latency.render(
            &mut out,
            "media_ledger_http_request_duration_seconds",
            &format!("method=\"{method}\",route=\"{}\"", escape(route)),
        );
    }
    let _ = writeln!(
        out,
        "# TYPE media_ledger_http_received_bytes_total counter\nmedia_ledger_http_received_bytes_total {}",
        m.bytes_in.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE media_ledger_http_sent_bytes_total counter\nmedia_ledger_http_sent_bytes_total {}",
        m.bytes_out.load(Ordering::Relaxed)
    );
    out.push_str("# TYPE media_ledger_ledger_sync_seconds histogram\n");
    m.ledger_sync_seconds
        .render(&mut out, "media_ledger_ledger_sync_seconds", "");
    out.push_str("# TYPE media_ledger_ledger_sync_events histogram\n");
    m.ledger_sync_events
        .render(&mut out, "media_ledger_ledger_sync_events", "");
    out.push_str("# TYPE media_ledger_follow_lag_seconds histogram\n");
    m.follow_lag_seconds
        .render(&mut out, "media_ledger_follow_lag_seconds", "");
    let _ = writeln!(
        out,
        "# TYPE media_ledger_lost_appends_total counter\nmedia_ledger_lost_appends_total {}",
        m.lost_appends.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE media_ledger_ledger_head gauge\nmedia_ledger_ledger_head {}",
        ledger.head().0
    );
    out.push_str("# TYPE media_ledger_projection_lag_events gauge\n");
    for (name, seq) in ledger.checkpoints() {
        let _ = writeln!(
            out,
            "media_ledger_projection_lag_events{{projection=\"{name}\"}} {}",
            ledger.head().0.saturating_sub(seq.0)
        );
    }
    let (memtables, cache) = ledger.memory_usage();
    let _ = writeln!(
        out,
        "# TYPE media_ledger_rocksdb_memtable_bytes gauge
media_ledger_rocksdb_memtable_bytes {memtables}
# TYPE media_ledger_rocksdb_block_cache_bytes gauge
media_ledger_rocksdb_block_cache_bytes {cache}"
    );
    render_state(ledger, datastores, &mut out);
    out
}

/// Gauges read from the projections: tasks and datastore sizes, pending purge deletions.
fn render_state(ledger: &Ledger, datastores: &[DatastoreId], out: &mut String) {
    use media_ledger_projections::{datastore_sizes, moderation, tasks};
    out.push_str(
        "# TYPE media_ledger_task_bytes_done gauge\n# TYPE media_ledger_task_bytes_total gauge\n",
    );
    let _ = ledger.scan(names::TASKS, b"t", |k, v| {
        if let Some(Ok((seq, t))) = tasks::decode_task_entry(k, v) {
            let _ = writeln!(
                out,
                "media_ledger_task_bytes_done{{task=\"{seq}\",finished=\"{}\"}} {}\nmedia_ledger_task_bytes_total{{task=\"{seq}\",finished=\"{}\"}} {}",
                t.is_finished(),
                t.bytes_done,
                t.is_finished(),
                t.bytes_total
            );
        }
        Ok(())
    });
    out.push_str(
        "# TYPE media_ledger_datastore_bytes gauge\n# TYPE media_ledger_datastore_hashes gauge\n",
    );
    if let Ok(view) = ledger.view(names::DATASTORE_SIZES) {
        for id in datastores {
            if let Ok(t) = datastore_sizes::totals(&view, id) {
                let id = escape(id.as_str());
                let _ = writeln!(
                    out,
                    "media_ledger_datastore_bytes{{datastore=\"{id}\"}} {}\nmedia_ledger_datastore_hashes{{datastore=\"{id}\"}} {}",
                    t.total_bytes, t.total_hashes_affected
                );
            }
        }
    }
    let mut pending = 0u64;
    let _ = ledger.scan(names::MODERATION, moderation::PENDING_PREFIX, |_, _| {
        pending += 1;
        Ok(())
    });
    let _ = writeln!(
        out,
        "# TYPE media_ledger_purge_pending_deletions gauge\nmedia_ledger_purge_pending_deletions {pending}"
    );
}
