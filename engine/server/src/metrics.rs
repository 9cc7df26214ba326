//! `GET /metrics`: Prometheus text — runs by state, agents in flight and queued, tokens by tenant
//! and kind, and HTTP request latency by route.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use corral_service::RunService;

use crate::ApiError;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the server measures itself.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        for (bucket, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }
}

/// The Prometheus text of everything.
pub fn render(service: &RunService, metrics: &Metrics) -> Result<String, ApiError> {
    let store = service.store()?;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP corral_runs Runs by state.");
    let _ = writeln!(out, "# TYPE corral_runs gauge");
    let counts = store
        .run_counts()
        .map_err(corral_service::ServiceError::from)?;
    for (status, count) in counts {
        let _ = writeln!(out, "corral_runs{{state=\"{status}\"}} {count}");
    }
    if let Ok(tenancy) = service.tenancy() {
        let pool = tenancy.pool();
        let stats = pool.stats();
        let _ = writeln!(
            out,
            "# HELP corral_agents_in_flight Agent calls holding a slot of the shared pool."
        );
        let _ = writeln!(out, "# TYPE corral_agents_in_flight gauge");
        let _ = writeln!(
            out,
            "# HELP corral_agents_queued Agent calls waiting for a slot of the shared pool."
        );
        let _ = writeln!(out, "# TYPE corral_agents_queued gauge");
        for (tenant, stat) in &stats {
            let _ = writeln!(
                out,
                "corral_agents_in_flight{{tenant=\"{tenant}\"}} {}",
                stat.in_use
            );
            let _ = writeln!(
                out,
                "corral_agents_queued{{tenant=\"{tenant}\"}} {}",
                stat.waiting
            );
        }
        let _ = writeln!(out, "# HELP corral_slots Slots of the shared agent pool.");
        let _ = writeln!(out, "# TYPE corral_slots gauge");
        let _ = writeln!(out, "corral_slots {}", pool.capacity());
    }
    let _ = writeln!(
        out,
        "# HELP corral_tokens_total Tokens used, by tenant and kind."
    );
    let _ = writeln!(out, "# TYPE corral_tokens_total counter");
    for (tenant, usage) in store
        .tokens_by_tenant()
        .map_err(corral_service::ServiceError::from)?
    {
        for (kind, value) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            let _ = writeln!(
                out,
                "corral_tokens_total{{tenant=\"{tenant}\",kind=\"{kind}\"}} {value}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP corral_http_request_duration_seconds HTTP request latency."
    );
    let _ = writeln!(out, "# TYPE corral_http_request_duration_seconds histogram");
    let requests = metrics.requests.lock().unwrap_or_else(|p| p.into_inner());
    for ((method, route, status), histogram) in requests.iter() {
        let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
        for (count, bound) in histogram.counts.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "corral_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "corral_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(
            out,
            "corral_http_request_duration_seconds_sum{{{labels}}} {}",
            histogram.sum
        );
        let _ = writeln!(
            out,
            "corral_http_request_duration_seconds_count{{{labels}}} {}",
            histogram.count
        );
    }
    Ok(out)
}
