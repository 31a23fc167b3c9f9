//! Load clients for what `wrk` cannot do: many open streams at once, and a soak that mixes
//! cache hits, misses, upstream errors, cut streams and client disconnects over many tenants,
//! sampling the gateway's memory and open file descriptors from `/proc`.
//!
//! ```text
//! loadgen streams --url http://127.0.0.1:8080 --pid PID --n 1000 --model slow
//! loadgen soak --url http://127.0.0.1:8080 --pid PID --duration 120s --tenants 100000
//! ```
//!
//! Loopback only: the URL must point at 127.0.0.0/8 or localhost. Every loop is bounded in
//! count and time and stops by itself.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Args {
    mode: String,
    url: String,
    pid: Option<u32>,
    n: usize,
    model: String,
    key_prefix: Option<String>,
    tenants: u64,
    concurrency: usize,
    duration: Duration,
    sample: Duration,
    hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: loadgen streams|soak --url URL [--pid PID] ...")?;
    let mut a = Args {
        mode,
        url: String::new(),
        pid: None,
        n: 1000,
        model: "slow".into(),
        key_prefix: None,
        tenants: 100_000,
        concurrency: 32,
        duration: Duration::from_secs(120),
        sample: Duration::from_secs(5),
        hold: Duration::from_secs(2),
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let dur = |v: &str| humantime::parse_duration(v).map_err(|e| format!("{flag}: {e}"));
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => a.url = v.trim_end_matches('/').to_owned(),
            "--pid" => a.pid = Some(num(&v)? as u32),
            "--n" => a.n = num(&v)? as usize,
            "--model" => a.model = v,
            "--key-prefix" => a.key_prefix = Some(v),
            "--tenants" => a.tenants = num(&v)?.max(1),
            "--concurrency" => a.concurrency = num(&v)?.max(1) as usize,
            "--duration" => a.duration = dur(&v)?.min(Duration::from_secs(600)),
            "--sample" => a.sample = dur(&v)?.max(Duration::from_millis(100)),
            "--hold" => a.hold = dur(&v)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let host = a
        .url
        .strip_prefix("http://")
        .ok_or("--url must be http://127.x.x.x:PORT or http://localhost:PORT")?;
    if !(host.starts_with("127.") || host.starts_with("localhost:") || host.starts_with("[::1]")) {
        return Err("--url must be a loopback address".into());
    }
    Ok(a)
}

/// Resident and peak memory (kB) and open descriptors of a process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kb: u64,
    hwm_kb: u64,
    fds: u64,
}

fn sample(pid: Option<u32>) -> Sample {
    let Some(pid) = pid else {
        return Sample::default();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Sample {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        fds,
    }
}

fn request(a: &Args, body: String, tenant: Option<u64>) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::post(format!("{}/v1/chat/completions", a.url))
        .header("content-type", "application/json");
    if let (Some(prefix), Some(t)) = (&a.key_prefix, tenant) {
        b = b.header("authorization", format!("Bearer {prefix}{t}"));
    }
    b.body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())
}

fn out(line: impl AsRef<str>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", line.as_ref());
    let _ = o.flush();
}

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(c)
}

/// Opens `n` streams at once, waits until each has sent its first event, samples the server,
/// holds them open a moment, then reads them to the end.
async fn streams(a: Args) -> Result<(), String> {
    let before = sample(a.pid);
    let client = client();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<bool>(a.n.max(1));
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.n);
    for i in 0..a.n {
        let body = format!(
            r#"{{"model":"{}","stream":true,"max_tokens":20,"messages":[{{"role":"user","content":"open stream {i}"}}]}}"#,
            a.model
        );
        let req = request(&a, body, Some(i as u64 % a.tenants))?;
        let client = client.clone();
        let first_tx = first_tx.clone();
        let release = release.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(30), client.request(req)).await
            else {
                let _ = first_tx.send(false).await;
                return false;
            };
            if resp.status() != StatusCode::OK {
                let _ = first_tx.send(false).await;
                return false;
            }
            let mut body = resp.into_body();
            let got_first = matches!(body.frame().await, Some(Ok(_)));
            let _ = first_tx.send(got_first).await;
            release.notified().await;
            let mut complete = false;
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => {
                        if f.data_ref().is_some_and(|d| d.ends_with(b"[DONE]\n\n")) {
                            complete = true;
                        }
                    }
                    Err(_) => return false,
                }
            }
            complete
        }));
    }
    drop(first_tx);
    let mut open = 0usize;
    let mut failed = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while open + failed < a.n {
        match tokio::time::timeout_at(deadline, first_rx.recv()).await {
            Ok(Some(true)) => open += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(a.hold).await;
    let during = sample(a.pid);
    release.notify_waiters();
    let mut complete = 0usize;
    for t in tasks {
        if matches!(t.await, Ok(true)) {
            complete += 1;
        }
    }
    let after = sample(a.pid);
    out(format!(
        "STREAMS n={} open={open} failed={failed} complete={complete} opened_in_ms={} rss_before_kb={} rss_open_kb={} rss_after_kb={} hwm_kb={} fds_open={}",
        a.n,
        opened_in.as_millis(),
        before.rss_kb,
        during.rss_kb,
        after.rss_kb,
        after.hwm_kb.max(during.hwm_kb),
        during.fds
    ));
    Ok(())
}

/// What one soak request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A deterministic request a few tenants repeat: cache hits after the first.
    Hit,
    /// A deterministic request never seen before: a miss that fills the cache.
    Miss,
    /// A model whose upstream always answers 503.
    UpstreamError,
    /// A stream the upstream cuts after a few events.
    CutStream,
    /// A slow stream the client drops after its first event.
    Disconnect,
    /// A stream read to the end (not cached: no temperature).
    Stream,
}

const MIX: [(Kind, u32); 6] = [
    (Kind::Hit, 30),
    (Kind::Miss, 25),
    (Kind::UpstreamError, 10),
    (Kind::CutStream, 10),
    (Kind::Disconnect, 10),
    (Kind::Stream, 15),
];

fn pick(r: u32) -> Kind {
    let mut acc = 0;
    for (k, w) in MIX {
        acc += w;
        if r % 100 < acc {
            return k;
        }
    }
    Kind::Stream
}

#[derive(Default)]
struct Tally {
    by_kind: std::sync::Mutex<BTreeMap<(Kind, String), u64>>,
    total: AtomicU64,
}

impl Tally {
    fn add(&self, kind: Kind, what: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut m = self
            .by_kind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry((kind, what)).or_default() += 1;
    }
}

async fn one(client: &HttpClient, a: &Args, kind: Kind, n: u64, tenant: u64) -> String {
    let (body, tenant) = match kind {
        Kind::Hit => (
            format!(
                r#"{{"model":"ok","temperature":0,"max_tokens":8,"messages":[{{"role":"user","content":"popular question {}"}}]}}"#,
                n % 5
            ),
            // A small set of tenants repeat the same few questions.
            tenant % 200,
        ),
        Kind::Miss => (
            format!(
                r#"{{"model":"ok","temperature":0,"max_tokens":8,"messages":[{{"role":"user","content":"unique question {n}"}}]}}"#
            ),
            tenant,
        ),
        Kind::UpstreamError => (
            r#"{"model":"err","max_tokens":8,"messages":[{"role":"user","content":"this fails"}]}"#
                .to_owned(),
            tenant,
        ),
        Kind::CutStream => (
            r#"{"model":"cut","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"this is cut"}]}"#
                .to_owned(),
            tenant,
        ),
        Kind::Disconnect => (
            r#"{"model":"slow","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"hang up"}]}"#
                .to_owned(),
            tenant,
        ),
        Kind::Stream => (
            r#"{"model":"ok","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"stream it"}]}"#
                .to_owned(),
            tenant,
        ),
    };
    let req = match request(a, body, Some(tenant)) {
        Ok(r) => r,
        Err(e) => return format!("build error {e}"),
    };
    let resp = match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return "connect error".into(),
        Err(_) => return "timeout".into(),
    };
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-rampart-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let mut body = resp.into_body();
    if kind == Kind::Disconnect {
        let _ = body.frame().await;
        drop(body);
        return format!("{status} dropped");
    }
    let mut broken = false;
    while let Some(f) = body.frame().await {
        if f.is_err() {
            broken = true;
            break;
        }
    }
    format!(
        "{status} cache={cache}{}",
        if broken { " body-error" } else { "" }
    )
}

async fn soak(a: Args) -> Result<(), String> {
    let a = Arc::new(a);
    let client = client();
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + a.duration;
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let (a, client, tally, next) = (a.clone(), client.clone(), tally.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut rng_state = 0x9e37_79b9_u32.wrapping_mul(w as u32 + 1);
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                // xorshift: a cheap, reproducible mix.
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 17;
                rng_state ^= rng_state << 5;
                let kind = pick(rng_state);
                // Tenants in turn, so every one of them is seen once per `tenants` requests.
                let tenant = n % a.tenants;
                let what = one(&client, &a, kind, n, tenant).await;
                tally.add(kind, what);
            }
        }));
    }
    out("| t (s) | requests | RSS (MB) | open fds |");
    out("|---|---|---|---|");
    let mut samples = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(a.sample.min(end.saturating_duration_since(Instant::now()))).await;
        let s = sample(a.pid);
        let t = started.elapsed().as_secs_f64();
        let total = tally.total.load(Ordering::Relaxed);
        out(format!(
            "| {t:.0} | {total} | {:.1} | {} |",
            s.rss_kb as f64 / 1024.0,
            s.fds
        ));
        samples.push((t, total, s));
    }
    for w in workers {
        let _ = w.await;
    }
    // Let the server release what the last requests held, then sample once more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = sample(a.pid);
    let total = tally.total.load(Ordering::Relaxed);
    let seen = total.min(a.tenants);
    out(String::new());
    out(format!(
        "Soak: {total} requests in {:.0} s over {seen} distinct tenants (of {}), concurrency {}.",
        started.elapsed().as_secs_f64(),
        a.tenants,
        a.concurrency
    ));
    let map = tally
        .by_kind
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut per_kind: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    for ((k, what), n) in map {
        per_kind.entry(k).or_default().push(format!("{what}: {n}"));
    }
    for (k, v) in per_kind {
        out(format!("  {k:?}: {}", v.join(", ")));
    }
    // Warm-up: the first third of the run (the cache fills, per-tenant state appears).
    let warm = samples
        .iter()
        .find(|(t, _, _)| *t >= a.duration.as_secs_f64() / 3.0)
        .map(|(_, _, s)| *s)
        .unwrap_or_default();
    let max_after = samples
        .iter()
        .filter(|(t, _, _)| *t >= a.duration.as_secs_f64() / 3.0)
        .map(|(_, _, s)| s.rss_kb)
        .max()
        .unwrap_or(0);
    let fds_max = samples.iter().map(|(_, _, s)| s.fds).max().unwrap_or(0);
    out(format!(
        "SOAK rss_after_warmup_mb={:.1} rss_max_after_warmup_mb={:.1} rss_end_mb={:.1} growth_after_warmup_pct={:.1} hwm_mb={:.1} fds_after_warmup={} fds_max={} fds_end={}",
        warm.rss_kb as f64 / 1024.0,
        max_after as f64 / 1024.0,
        last.rss_kb as f64 / 1024.0,
        if warm.rss_kb > 0 {
            (last.rss_kb as f64 / warm.rss_kb as f64 - 1.0) * 100.0
        } else {
            0.0
        },
        last.hwm_kb as f64 / 1024.0,
        warm.fds,
        fds_max,
        last.fds
    ));
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match args.mode.as_str() {
            "streams" => streams(args).await,
            "soak" => soak(args).await,
            other => Err(format!("unknown mode {other} (streams | soak)")),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
