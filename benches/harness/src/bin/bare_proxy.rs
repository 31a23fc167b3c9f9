//! The physical-limit baseline: a bare hyper pass-through proxy. Every request goes to the
//! upstream unchanged (method, path, headers, streamed body) over a pooled hyper client, and the
//! response streams back untouched. No parsing, no policy: whatever the gateway costs above this
//! is the price of its layers.
//!
//! `bare_proxy --listen 127.0.0.1:9100 --upstream 127.0.0.1:9001`
//!
//! It runs the same server and runtime configuration as `full_gateway` (hyper-util auto
//! connection builder, Tokio multi-thread runtime, `TCP_NODELAY`), so the comparison measures
//! the layers, not a different server.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

// The same allocator as `full_gateway`, so the baseline differs from it only in the layers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type ProxyBody = UnsyncBoxBody<bytes::Bytes, hyper::Error>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:9100".parse()?;
    let mut upstream: Option<SocketAddr> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--upstream" => upstream = Some(value()?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let upstream = upstream.ok_or("--upstream HOST:PORT is required")?;
    let authority: Authority = upstream.to_string().parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(listen, authority))
}

async fn serve(listen: SocketAddr, upstream: Authority) -> Result<(), Box<dyn std::error::Error>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    writeln!(
        std::io::stdout(),
        "bare proxy on http://{} -> http://{upstream}",
        listener.local_addr()?
    )?;
    let host = HeaderValue::from_str(upstream.as_str())?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                forward(client.clone(), upstream.clone(), host.clone(), req)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(upstream);
    parts.uri = match Uri::from_parts(uri) {
        Ok(u) => u,
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST)),
    };
    parts.headers.insert(http::header::HOST, host);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(BodyExt::boxed_unsync)),
        Err(_) => Ok(error(StatusCode::BAD_GATEWAY)),
    }
}

fn error(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(bytes::Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}
