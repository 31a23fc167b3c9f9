//! Metric handles for the hot path.

use std::sync::OnceLock;

/// A counter with one label whose values are all known when the layer is built (a cache
/// status, an attempt outcome). Each value's handle is registered with the installed recorder
/// on its first use and kept, so a request costs an atomic add instead of building a key and
/// looking it up in the recorder's registry (a `counter!` with a label allocates the key).
///
/// Keep one per layer instance, not in a `static`: the handles belong to the recorder that was
/// installed when they were first used.
#[derive(Debug, Clone)]
pub struct LabelledCounter<const N: usize> {
    name: &'static str,
    label: &'static str,
    values: [&'static str; N],
    handles: [OnceLock<metrics::Counter>; N],
}

impl<const N: usize> LabelledCounter<N> {
    /// A counter `name{label="<one of values>"}`.
    pub fn new(name: &'static str, label: &'static str, values: [&'static str; N]) -> Self {
        Self {
            name,
            label,
            values,
            handles: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Adds one to the series `label = value`. A value not given to [`Self::new`] still
    /// counts, through the recorder's registry.
    pub fn increment(&self, value: &'static str) {
        match self.values.iter().position(|v| *v == value) {
            Some(i) => self.handles[i]
                .get_or_init(|| metrics::counter!(self.name, self.label => value))
                .increment(1),
            None => metrics::counter!(self.name, self.label => value).increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn counts_known_and_unknown_values() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let c = LabelledCounter::new("t_total", "status", ["hit", "miss"]);
            c.increment("hit");
            c.increment("hit");
            c.increment("miss");
            c.increment("other");
        });
        let text = handle.render();
        for line in [
            "t_total{status=\"hit\"} 2",
            "t_total{status=\"miss\"} 1",
            "t_total{status=\"other\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }
}
