//! The simulated provider as a standalone HTTP server for load runs, with faults per model.
//!
//! `bench_mock --listen 127.0.0.1:9001 [--base 50ms] [--first-token D] [--chunk-gap D]
//!  [--threads 1] [--fault MODEL=503] [--fault MODEL=cut:5]`
//!
//! Every model name is served; `--fault` makes one model name always fail: with an HTTP status
//! (an OpenAI-shaped error body) or with a stream cut after N events.

use std::io::Write;
use std::net::SocketAddr;

use http::StatusCode;
use rampart_mock::{Fault, Latency, MockConfig, MockProvider};

fn parse_fault(spec: &str) -> Result<(String, Fault), String> {
    let (model, kind) = spec
        .split_once('=')
        .ok_or_else(|| format!("--fault {spec}: expected MODEL=STATUS or MODEL=cut:N"))?;
    let fault = if let Some(n) = kind.strip_prefix("cut:") {
        Fault::cut_after(
            n.parse()
                .map_err(|_| format!("--fault {spec}: bad count"))?,
        )
    } else {
        let code: u16 = kind
            .parse()
            .map_err(|_| format!("--fault {spec}: bad status"))?;
        Fault::status_code(
            StatusCode::from_u16(code).map_err(|_| format!("--fault {spec}: bad status"))?,
        )
    };
    Ok((model.to_owned(), fault))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:9001".parse()?;
    let mut latency = Latency::default();
    let mut threads = 1usize;
    let mut faults = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--base" => latency.base = humantime::parse_duration(&value()?)?,
            "--first-token" => latency.first_token = humantime::parse_duration(&value()?)?,
            "--chunk-gap" => latency.chunk_gap = humantime::parse_duration(&value()?)?,
            "--threads" => threads = value()?.parse()?,
            "--fault" => faults.push(parse_fault(&value()?)?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mock = MockProvider::new(MockConfig {
            latency,
            ..Default::default()
        });
        for (model, fault) in faults {
            mock.set_fault(Some(&model), fault);
        }
        let server = mock.serve(listen).await?;
        writeln!(
            std::io::stdout(),
            "mock provider listening on {}",
            server.base_url()
        )?;
        std::io::stdout().flush()?;
        tokio::signal::ctrl_c().await?;
        drop(server);
        Ok(())
    })
}
