//! The simulated provider as a standalone HTTP server, for load tests and manual runs.
//!
//! `cargo run --release -p rampart-mock --example mock_server -- --listen 127.0.0.1:9001
//!  [--first-token 30ms] [--chunk-gap 8ms] [--base 20ms] [--threads 1]`

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use rampart_mock::{Latency, MockConfig, MockProvider};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:9001".parse()?;
    let mut latency = Latency::default();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--base" => latency.base = humantime::parse_duration(&value()?)?,
            "--first-token" => latency.first_token = humantime::parse_duration(&value()?)?,
            "--chunk-gap" => latency.chunk_gap = humantime::parse_duration(&value()?)?,
            "--threads" => threads = value()?.parse()?,
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
        let server = mock.serve(listen).await?;
        writeln!(
            std::io::stdout(),
            "mock provider listening on {}",
            server.base_url()
        )?;
        std::io::stdout().flush()?;
        tokio::signal::ctrl_c().await?;
        drop(server);
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    })
}
