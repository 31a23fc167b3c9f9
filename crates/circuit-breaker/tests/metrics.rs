//! Every transition updates the state gauge and the transitions counter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KEY, Reply, Scripted, config, req};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use rampart_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use tower::{Layer, ServiceExt};

type Log = Arc<Mutex<Vec<(String, Vec<(String, String)>, f64)>>>;

struct Handle {
    key: Key,
    log: Log,
}

impl Handle {
    fn push(&self, v: f64) {
        let labels = self
            .key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        self.log
            .lock()
            .unwrap()
            .push((self.key.name().to_owned(), labels, v));
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(value as f64);
    }
    fn absolute(&self, value: u64) {
        self.push(value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.push(value);
    }
    fn decrement(&self, value: f64) {
        self.push(-value);
    }
    fn set(&self, value: f64) {
        self.push(value);
    }
}

#[derive(Default)]
struct TestRecorder {
    log: Log,
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle {
            key: key.clone(),
            log: self.log.clone(),
        }))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Handle {
            key: key.clone(),
            log: self.log.clone(),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn transitions_update_the_gauge_and_the_counter() {
    let recorder = TestRecorder::default();
    let log = recorder.log.clone();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = CircuitBreakerLayer::from_config(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        half_open_probes: 1,
        ..config()
    })
    .unwrap();
    let h = layer.handle();
    let svc = layer.layer(Scripted::default());
    let _ = svc.clone().oneshot(req(Reply::status(500))).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    svc.clone().oneshot(req(Reply::ok())).await.unwrap();
    h.force_open(KEY);
    h.disable(KEY);
    h.reset(KEY);

    let log = log.lock().unwrap().clone();
    let gauge: Vec<f64> = log
        .iter()
        .filter(|(name, l, _)| name == "rampart_breaker_state" && *l == labels(&[("target", KEY)]))
        .map(|(_, _, v)| *v)
        .collect();
    // Created closed, open, half-open, closed, forced open, disabled, closed.
    assert_eq!(gauge, [0.0, 1.0, 2.0, 0.0, 3.0, 4.0, 0.0]);
    let to: Vec<String> = log
        .iter()
        .filter(|(name, _, _)| name == "rampart_breaker_transitions_total")
        .map(|(_, l, v)| {
            assert_eq!(*v, 1.0);
            assert_eq!(l[0], ("target".to_owned(), KEY.to_owned()));
            l[1].1.clone()
        })
        .collect();
    assert_eq!(
        to,
        [
            "open",
            "half_open",
            "closed",
            "forced_open",
            "disabled",
            "closed"
        ]
    );
}
