//! `full_gateway`: an OpenAI-compatible LLM gateway assembled from Rampart's layers.
//!
//! Run it with `cargo run --release --example full_gateway` (embedded defaults: simulated
//! providers in-process, no keys, no network) or `-- --config gateway.toml`.

pub mod app;
pub mod config;
pub mod observe;
pub mod server;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

pub use app::{Gateway, build, build_with_secrets};
pub use config::GatewayConfig;

// mimalloc instead of the system allocator: a request through every layer makes about 190 small
// allocations, and under load glibc's malloc/free took about 16 % of the gateway's CPU
// (`benches/README.md` has the before/after figures). Set here so the binary, the example, the
// tests and the in-process bench all run on the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
full_gateway — an OpenAI-compatible LLM gateway built from Rampart's layers

USAGE:
    full_gateway [--config FILE] [--listen ADDR]
    full_gateway --hash-key KEY

OPTIONS:
    --config FILE     TOML configuration (default: embedded defaults with simulated providers)
    --listen ADDR     listen address (default: server.listen, 127.0.0.1:8080)
    --hash-key KEY    print the SHA-256 of a virtual key, for [[virtual_keys]] key_sha256
    --help            this text

Logging: RUST_LOG (default: [observability] log_filter, else \"info\"); text or JSON lines
per [observability] log_format.";

struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        config: None,
        listen: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                out.config = Some(args.next().ok_or("--config needs a file")?.into());
            }
            "--listen" | "-l" => {
                let v = args.next().ok_or("--listen needs an address")?;
                out.listen = Some(v.parse().map_err(|_| {
                    format!("--listen: '{v}' is not an address like 127.0.0.1:8080")
                })?);
            }
            "--hash-key" => {
                let key = args.next().ok_or("--hash-key needs a key")?;
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    rampart_core::VirtualKeys::digest(&key)
                );
                return Ok(None);
            }
            "--help" | "-h" => {
                let _ = writeln!(std::io::stdout(), "{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument '{other}' (see --help)")),
        }
    }
    Ok(Some(out))
}

/// The binary's entry point.
pub fn main_entry() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match &args.config {
        Some(path) => GatewayConfig::load(path),
        None => GatewayConfig::embedded(),
    };
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    // Logging starts once the config (its [observability] part) is known; config errors go to
    // stderr directly. Dropping the guard at exit flushes trace export.
    let _telemetry = match observe::init(&config.observability) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let origin = args.config.as_ref().map_or_else(
        || "embedded defaults".to_owned(),
        |p| format!("config file {}", p.display()),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, origin, args.config))
}

async fn run(config: GatewayConfig, origin: String, path: Option<PathBuf>) -> ExitCode {
    let listen = config.server.listen;
    let header_timeout = config.server.header_read_timeout;
    let grace = config.server.shutdown_grace;
    let gateway = match build(config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {origin}: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let models: Vec<&str> = gateway
        .config
        .models
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    tracing::info!(%listen, config = %origin, models = ?models, "rampart full_gateway listening on http://{listen}");
    if !gateway.mocks.is_empty() {
        tracing::info!(providers = ?gateway.mocks.keys().collect::<Vec<_>>(), "simulated providers in-process (no network, no keys)");
    }
    if gateway.dev_mode() {
        tracing::warn!(
            "NO VIRTUAL KEYS CONFIGURED: running in OPEN DEVELOPMENT MODE. Any caller is accepted as tenant 'default'. \
             Add [[virtual_keys]] entries before exposing this gateway."
        );
    } else {
        tracing::info!(
            keys = gateway.config.virtual_keys.len(),
            "virtual keys loaded"
        );
    }
    for m in gateway.config.models.iter().filter(|m| m.price.is_none()) {
        tracing::warn!(model = %m.name, "no price configured: its requests are accounted at $0");
    }
    spawn_reload(path, gateway.config.clone(), gateway.routing.clone());
    server::serve(
        listener,
        gateway.router,
        header_timeout,
        grace,
        server::shutdown_signal(),
    )
    .await;
    ExitCode::SUCCESS
}

/// On SIGHUP, re-reads the config file and applies what can change without a restart: the
/// catalog's prices, tiers, context windows, capabilities and fallbacks, routes, rules and
/// budgets. A file with an error, or one that changes what needs a restart (providers, the
/// model list and each model's provider or upstream name), is refused with a log line naming the
/// problem; the running config stays.
fn spawn_reload(
    path: Option<PathBuf>,
    running: GatewayConfig,
    routing: rampart_cost_router::CostRouterHandle,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; config reload disabled");
            return;
        };
        let mut running = running;
        while hup.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::info!("SIGHUP: running on embedded defaults; nothing to reload");
                continue;
            };
            match reload(path, &running, &routing) {
                Ok(next) => {
                    running = next;
                    tracing::info!(config = %path.display(), "SIGHUP: catalog, routes and budgets reloaded");
                }
                Err(e) => tracing::error!("SIGHUP: reload refused, the running config stays: {e}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (path, running, routing);
}

/// Re-reads `path` and applies its routing part to `routing`, if it changes nothing that needs a
/// restart compared with `running`. Returns the new configuration.
pub fn reload(
    path: &std::path::Path,
    running: &GatewayConfig,
    routing: &rampart_cost_router::CostRouterHandle,
) -> Result<GatewayConfig, String> {
    let config = GatewayConfig::load(path).map_err(|e| e.to_string())?;
    let wiring = |c: &GatewayConfig| {
        let providers: Vec<_> = c
            .providers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.kind,
                    p.base_url.clone(),
                    p.api_key_env.clone(),
                )
            })
            .collect();
        let models: Vec<_> = c
            .models
            .iter()
            .map(|m| (m.name.clone(), m.provider.clone(), m.upstream_name.clone()))
            .collect();
        (providers, models)
    };
    if wiring(&config) != wiring(running) {
        return Err(format!(
            "config file {}: providers, the model list and each model's provider or upstream_name change only with a restart",
            path.display()
        ));
    }
    routing
        .reload(config.router_config())
        .map_err(|e| format!("config file {}: router: {e}", path.display()))?;
    Ok(config)
}
