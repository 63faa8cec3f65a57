//! The Prometheus registry each service exposes on `/metrics`.
//!
//! Metric structs live next to the code that updates them and register here; this module owns
//! only the registry, the standard process metrics and `tcoder_build_info`.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// A service's metric registry. Cheap to clone (the registry is shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
    /// …) and `tcoder_build_info{service,version} 1`.
    pub fn new(service: &str) -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            registry.register(Box::new(process)).expect("process collector registers once");
        }
        let info = IntGaugeVec::new(
            Opts::new("tcoder_build_info", "Build information; always 1."),
            &["service", "version"],
        )
        .expect("valid metric definition");
        info.with_label_values(&[service, env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(info)).expect("build info registers once");
        Metrics { registry }
    }

    /// The registry, for registering a component's metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector; a definition error is a programming error, so it panics.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: &C) {
        self.registry
            .register(Box::new(collector.clone()))
            .expect("metric names are unique per registry");
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("text exposition is UTF-8")
    }
}

/// Creates the series of `vec` for each of `label_sets` at zero. Prometheus cannot see the
/// first increment of a series that appears already at 1 (`increase()` and `rate()` need two
/// samples), and dashboards would show "no data" instead of 0: every label value known in
/// advance is therefore exported from the start.
pub fn init_series<M: prometheus::core::Metric, B: prometheus::core::MetricVecBuilder<M = M>>(
    vec: &prometheus::core::MetricVec<B>,
    label_sets: &[&[&str]],
) {
    for labels in label_sets {
        let _ = vec.with_label_values(labels);
    }
}
