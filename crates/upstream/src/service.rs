//! The [`Upstream`] service.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_core::edge::{EdgeConfig, ensure_chat_request};
use rampart_core::headers::{
    RETRY_AFTER_MS, X_RAMPART_ERROR_SOURCE, X_RAMPART_MODEL, X_RAMPART_PROVIDER,
};
use rampart_core::openai::{ChatRequest, ModelObject};
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxChatService, BoxError, Error, ErrorKind, Target};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use crate::anthropic;
use crate::body::DeadlineBody;
use crate::config::{
    AnthropicConfig, ConfigError, ProviderConfig, ProviderKind, Timeouts, validate_base_url,
};
use crate::sanitize::{Secrets, sanitize_body, sanitize_error};

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Largest upstream error body read for sanitising.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An API key: never printed.
#[derive(Clone)]
struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

enum Transport {
    Http(Box<HttpTransport>),
    Service(BoxChatService),
}

struct HttpTransport {
    client: HttpClient,
    endpoint: http::Uri,
    base_url: String,
    host: String,
    /// Authentication and protocol headers (`authorization`, or `x-api-key` and
    /// `anthropic-version`), and `host` for plain-HTTP endpoints.
    headers: Vec<(HeaderName, HeaderValue)>,
    key: Option<Secret>,
}

/// The wire protocol a provider speaks.
enum Protocol {
    Openai,
    Anthropic(AnthropicConfig),
}

struct Provider {
    name: Arc<str>,
    /// `name` as the `x-rampart-provider` value, built once.
    name_value: HeaderValue,
    timeouts: Timeouts,
    transport: Transport,
    protocol: Protocol,
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("rampart/", env!("CARGO_PKG_VERSION")));
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

fn anthropic_version(provider: &str, config: &AnthropicConfig) -> Result<HeaderValue, ConfigError> {
    if config.default_max_tokens == 0 {
        return Err(ConfigError::Invalid {
            provider: provider.to_owned(),
            reason: "anthropic.default_max_tokens must be greater than 0".to_owned(),
        });
    }
    HeaderValue::from_str(&config.version).map_err(|_| ConfigError::Invalid {
        provider: provider.to_owned(),
        reason: "anthropic.version is not a valid header value".to_owned(),
    })
}

struct ModelEntry {
    target: Target,
    upstream_name: Arc<str>,
    /// The alias as the `x-rampart-model` value, built once.
    alias_value: HeaderValue,
}

struct Inner {
    providers: HashMap<Arc<str>, Provider>,
    models: HashMap<Arc<str>, ModelEntry>,
    /// Model aliases in configuration order (for `/v1/models` and not-found messages).
    order: Vec<Arc<str>>,
    edge: EdgeConfig,
}

/// Calls providers. A `Service<Request<Body>>` that forwards a chat-completions request to the
/// target chosen by a [`Target`] request extension, or else by the requested model's catalog
/// entry; attaches [`rampart_core::ResponseFacts`] and taps the body.
///
/// - The request body is the client's bytes unless something changed (model mapping, the
///   usage request for streams); unknown fields pass through.
/// - The client's headers are never forwarded (its `Authorization` included); the provider's key
///   is sent instead. Only `content-type`, `retry-after` and `retry-after-ms` come back.
/// - Redirects are not followed. Error bodies are sanitised (no key, URL or host name) and stay
///   `Ok(Response)` with the upstream's status, for the layers above to classify.
/// - Connect failures and timeouts are [`rampart_core::Error`]s (502, 504).
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .field("models", &self.inner.order)
            .finish()
    }
}

/// Builds an [`Upstream`].
#[derive(Default)]
pub struct UpstreamBuilder {
    http: Vec<ProviderConfig>,
    services: Vec<(String, BoxChatService, Timeouts, Option<AnthropicConfig>)>,
    models: Vec<(String, String, Option<String>)>,
    keys: HashMap<String, String>,
    edge: EdgeConfig,
}

impl UpstreamBuilder {
    /// An HTTP provider. Its key is read from `api_key_env` at `build()`.
    pub fn provider(mut self, config: ProviderConfig) -> Self {
        self.http.push(config);
        self
    }

    /// Sets a provider's API key directly instead of from the environment.
    pub fn api_key(mut self, provider: &str, key: impl Into<String>) -> Self {
        self.keys.insert(provider.to_owned(), key.into());
        self
    }

    /// An in-process provider: any chat-completions service (the simulated provider, a test
    /// double, an embedded model server).
    pub fn service_provider<S>(mut self, name: &str, service: S, timeouts: Timeouts) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let svc = tower::util::BoxCloneSyncService::new(service.map_err(Into::into));
        self.services.push((name.to_owned(), svc, timeouts, None));
        self
    }

    /// An in-process provider that speaks Anthropic's Messages API (`POST /v1/messages`), such
    /// as the simulated provider in Anthropic mode: requests and answers are translated as for
    /// an HTTP provider of kind `anthropic`.
    pub fn anthropic_service_provider<S>(
        mut self,
        name: &str,
        service: S,
        timeouts: Timeouts,
        config: AnthropicConfig,
    ) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let svc = tower::util::BoxCloneSyncService::new(service.map_err(Into::into));
        self.services
            .push((name.to_owned(), svc, timeouts, Some(config)));
        self
    }

    /// A model clients can ask for (`alias`), served by `provider` under `upstream_name`
    /// (default: the alias).
    pub fn model(mut self, alias: &str, provider: &str, upstream_name: Option<&str>) -> Self {
        self.models.push((
            alias.to_owned(),
            provider.to_owned(),
            upstream_name.map(str::to_owned),
        ));
        self
    }

    /// Limits used when a request reaches the upstream without the edge adapter.
    pub fn edge_config(mut self, edge: EdgeConfig) -> Self {
        self.edge = edge;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Upstream, ConfigError> {
        let mut providers = HashMap::new();
        let tls = tls_config()?;
        for cfg in self.http {
            let uri = validate_base_url(&cfg.name, &cfg.base_url, cfg.allow_link_local)?;
            let key = match (self.keys.get(&cfg.name), &cfg.api_key_env) {
                (Some(k), _) => Some(k.clone()),
                (None, Some(var)) => {
                    Some(std::env::var(var).map_err(|_| ConfigError::MissingKey {
                        provider: cfg.name.clone(),
                        var: var.clone(),
                    })?)
                }
                (None, None) => None,
            };
            let anthropic = matches!(cfg.kind, ProviderKind::Anthropic);
            let mut headers = Vec::new();
            if anthropic {
                headers.push((
                    ANTHROPIC_VERSION,
                    anthropic_version(&cfg.name, &cfg.anthropic)?,
                ));
            }
            let auth = match &key {
                Some(k) => {
                    let value = if anthropic {
                        k.clone()
                    } else {
                        format!("Bearer {k}")
                    };
                    let mut v = HeaderValue::from_str(&value).map_err(|_| ConfigError::BadUrl {
                        provider: cfg.name.clone(),
                        reason: "the API key contains characters not allowed in a header"
                            .to_owned(),
                    })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            };
            let base = uri.to_string();
            let base = base.trim_end_matches('/').to_owned();
            if let Some(auth) = auth {
                let name = if anthropic {
                    X_API_KEY
                } else {
                    header::AUTHORIZATION
                };
                headers.push((name, auth));
            }
            let path = if anthropic {
                "messages"
            } else {
                "chat/completions"
            };
            let endpoint: http::Uri =
                format!("{base}/{path}")
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| ConfigError::BadUrl {
                        provider: cfg.name.clone(),
                        reason: e.to_string(),
                    })?;
            // Over plain HTTP (always HTTP/1.1 here) the `Host` header is built once instead of
            // by the client on every request. Over TLS the client may speak HTTP/2, which
            // carries the authority itself: left to the client.
            if endpoint.scheme() == Some(&http::uri::Scheme::HTTP)
                && let Some(v) = endpoint
                    .authority()
                    .map(|a| match a.port_u16() {
                        Some(80) => a.host(),
                        _ => a.as_str(),
                    })
                    .and_then(|h| HeaderValue::from_str(h).ok())
            {
                headers.push((header::HOST, v));
            }
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(cfg.timeouts.connect));
            http.set_nodelay(true);
            http.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .timer(hyper_util::rt::TokioTimer::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(connector);
            let name: Arc<str> = cfg.name.as_str().into();
            if providers.contains_key(&name) {
                return Err(ConfigError::DuplicateProvider(cfg.name));
            }
            providers.insert(
                name.clone(),
                Provider {
                    name_value: header_value(&name),
                    name,
                    timeouts: cfg.timeouts,
                    transport: Transport::Http(Box::new(HttpTransport {
                        client,
                        endpoint,
                        host: uri.host().unwrap_or_default().to_owned(),
                        base_url: base,
                        headers,
                        key: key.map(|k| Secret(k.into())),
                    })),
                    protocol: if anthropic {
                        Protocol::Anthropic(cfg.anthropic)
                    } else {
                        Protocol::Openai
                    },
                },
            );
        }
        for (name, svc, timeouts, anthropic) in self.services {
            let name: Arc<str> = name.into();
            if providers.contains_key(&name) {
                return Err(ConfigError::DuplicateProvider(name.to_string()));
            }
            let protocol = match anthropic {
                Some(config) => {
                    anthropic_version(&name, &config)?;
                    Protocol::Anthropic(config)
                }
                None => Protocol::Openai,
            };
            providers.insert(
                name.clone(),
                Provider {
                    name_value: header_value(&name),
                    name,
                    timeouts,
                    transport: Transport::Service(svc),
                    protocol,
                },
            );
        }
        let mut models = HashMap::new();
        let mut order = Vec::new();
        for (alias, provider, upstream_name) in self.models {
            let Some(p) = providers.get(provider.as_str()) else {
                return Err(ConfigError::UnknownProvider {
                    model: alias,
                    provider,
                });
            };
            let alias: Arc<str> = alias.into();
            if models.contains_key(&alias) {
                return Err(ConfigError::DuplicateModel(alias.to_string()));
            }
            let upstream_name: Arc<str> = upstream_name.map_or_else(|| alias.clone(), Into::into);
            models.insert(
                alias.clone(),
                ModelEntry {
                    alias_value: header_value(&alias),
                    target: Target::new(p.name.clone(), alias.clone()),
                    upstream_name,
                },
            );
            order.push(alias);
        }
        Ok(Upstream {
            inner: Arc::new(Inner {
                providers,
                models,
                order,
                edge: self.edge,
            }),
        })
    }
}

fn tls_config() -> Result<rustls::ClientConfig, ConfigError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Upstream {
    /// A builder.
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// The models clients can ask for, in configuration order.
    pub fn models(&self) -> Vec<ModelObject> {
        self.inner
            .order
            .iter()
            .filter_map(|alias| self.inner.models.get(alias))
            .map(|m| ModelObject {
                id: m.target.model.to_string(),
                object: "model".to_owned(),
                created: 0,
                owned_by: m.target.provider.to_string(),
            })
            .collect()
    }

    /// The target serving `model`, if configured.
    pub fn target(&self, model: &str) -> Option<&Target> {
        self.inner.models.get(model).map(|m| &m.target)
    }

    /// The model aliases, in configuration order.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.inner.order.iter().map(|s| &**s)
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.call(req).await.map_err(|e| Box::new(e) as BoxError) })
    }
}

impl Inner {
    /// The target, the model name the provider knows, and the `x-rampart-model` value.
    fn resolve(
        &self,
        chat: &ChatRequest,
        explicit: Option<&Target>,
    ) -> Result<(Target, Arc<str>, HeaderValue), Error> {
        if let Some(t) = explicit {
            if !self.providers.contains_key(&t.provider) {
                return Err(Error::new(
                    ErrorKind::ModelNotFound,
                    format!("No provider named '{}' is configured.", t.provider),
                ));
            }
            let (upstream, value) = self
                .models
                .get(&t.model)
                .filter(|m| m.target.provider == t.provider)
                .map_or_else(
                    || (t.model.clone(), header_value(&t.model)),
                    |m| (m.upstream_name.clone(), m.alias_value.clone()),
                );
            return Ok((t.clone(), upstream, value));
        }
        match self.models.get(chat.model()) {
            Some(m) => Ok((
                m.target.clone(),
                m.upstream_name.clone(),
                m.alias_value.clone(),
            )),
            None => Err(Error::model_not_found(
                chat.model(),
                self.order.iter().map(|s| &**s),
            )),
        }
    }

    async fn call(&self, req: Request<Body>) -> Result<Response<Body>, Error> {
        let (req, chat) = ensure_chat_request(req, self.edge).await?;
        let (target, upstream_model, model_value) =
            self.resolve(&chat, req.extensions().get::<Target>())?;
        let provider = self
            .providers
            .get(&target.provider)
            .ok_or_else(|| Error::internal("resolved provider vanished"))?;

        // The request as the provider gets it; an unchanged one is shared, not copied.
        let renamed = (*upstream_model != *chat.model()).then(|| chat.with_model(&upstream_model));
        let hide_usage = chat.is_stream() && !chat.wants_stream_usage();
        let out: Arc<ChatRequest> = match (renamed, hide_usage) {
            (None, false) => chat.clone(),
            (Some(renamed), false) => Arc::new(renamed),
            (renamed, true) => Arc::new(renamed.as_ref().unwrap_or(&chat).with_stream_usage()),
        };
        let body = match &provider.protocol {
            Protocol::Openai => out.to_bytes(),
            Protocol::Anthropic(config) => {
                let _span = tracing::debug_span!("anthropic", provider = %provider.name).entered();
                anthropic::translate_request(&chat, &upstream_model, config)?
            }
        };
        let t = provider.timeouts;
        let started = Instant::now();
        let deadline = started + t.total;
        let first_byte = (started + t.first_byte).min(deadline);

        let send = self.send(provider, out, body, chat.is_stream());

        let resp = match tokio::time::timeout_at(first_byte, send).await {
            Ok(r) => r?,
            Err(_) => {
                tracing::warn!(provider = %provider.name, "upstream did not answer in time");
                return Err(Error::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "The upstream provider '{}' did not answer within {:?}.",
                        provider.name,
                        t.first_byte.min(t.total)
                    ),
                ));
            }
        };

        let (mut parts, body) = resp.into_parts();
        let status = parts.status;
        let retry_after = parts.headers.get(header::RETRY_AFTER).cloned();
        let retry_after_ms = parts.headers.get(RETRY_AFTER_MS).cloned();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let mut headers = HeaderMap::new();
        if let Some(v) = content_type {
            headers.insert(header::CONTENT_TYPE, v);
        }
        if let Some(v) = retry_after {
            headers.insert(header::RETRY_AFTER, v);
        }
        if let Some(v) = retry_after_ms {
            headers.insert(RETRY_AFTER_MS, v);
        }
        headers.insert(X_RAMPART_PROVIDER, provider.name_value.clone());
        headers.insert(X_RAMPART_MODEL, model_value);

        let body = if status.is_success() {
            let body = Body::new(DeadlineBody::new(body, t.idle, deadline));
            match &provider.protocol {
                Protocol::Openai => body,
                Protocol::Anthropic(_) => {
                    let sse = rampart_core::tap::is_event_stream(&headers);
                    let created = anthropic::now_secs();
                    let content_type = if sse {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                    if sse {
                        Body::new(anthropic::SseBody::new(body, created))
                    } else {
                        Body::new(anthropic::JsonBody::new(body, created))
                    }
                }
            }
        } else {
            // Redirects are not followed, and error bodies never reach the client raw.
            let status = if status.is_redirection() || status.is_informational() {
                StatusCode::BAD_GATEWAY
            } else {
                status
            };
            parts.status = status;
            let raw = tokio::time::timeout_at(deadline, body.collect_limited(MAX_ERROR_BODY))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let secrets = provider.secrets();
            let translated = match provider.protocol {
                Protocol::Anthropic(_) => anthropic::translate_error(status, &raw),
                Protocol::Openai => None,
            };
            let clean = match translated {
                Some(body) => sanitize_body(body, &secrets),
                None => sanitize_error(status, &raw, &secrets),
            };
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(X_RAMPART_ERROR_SOURCE, HeaderValue::from_static("upstream"));
            Body::json(&clean)
        };
        parts.headers = headers;
        let resp = Response::from_parts(parts, body);
        Ok(tap_response(
            resp,
            target,
            upstream_model,
            started,
            hide_usage,
        ))
    }

    async fn send(
        &self,
        provider: &Provider,
        out: Arc<ChatRequest>,
        body: Bytes,
        stream: bool,
    ) -> Result<Response<Body>, Error> {
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        match &provider.transport {
            Transport::Http(h) => {
                let HttpTransport {
                    client,
                    endpoint,
                    headers,
                    ..
                } = &**h;
                // Static values: a `&str` value would be copied into a new buffer per header.
                let mut builder = Request::post(endpoint.clone())
                    .header(header::CONTENT_TYPE, APPLICATION_JSON)
                    .header(header::ACCEPT, HeaderValue::from_static(accept))
                    .header(header::USER_AGENT, USER_AGENT);
                for (name, value) in headers {
                    builder = builder.header(name, value.clone());
                }
                let req = builder
                    .body(Body::from_bytes(body))
                    .map_err(|e| Error::internal(Box::new(e) as BoxError))?;
                match client.request(req).await {
                    Ok(resp) => Ok(resp.map(Body::new)),
                    Err(e) => {
                        let connect = e.is_connect();
                        tracing::warn!(provider = %provider.name, error = %e, connect, "upstream request failed");
                        Err(Error::new(
                            ErrorKind::UpstreamConnect,
                            format!(
                                "Could not get a response from the upstream provider '{}'.",
                                provider.name
                            ),
                        )
                        .with_cause(e))
                    }
                }
            }
            Transport::Service(svc) => {
                let req = match &provider.protocol {
                    Protocol::Openai => Request::post("/v1/chat/completions"),
                    Protocol::Anthropic(config) => Request::post("/v1/messages")
                        .header(ANTHROPIC_VERSION, config.version.as_str()),
                };
                let mut req = req
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::ACCEPT, accept)
                    .body(Body::from_bytes(body))
                    .map_err(|e| Error::internal(Box::new(e) as BoxError))?;
                // The parsed request lets an in-process provider skip parsing; an Anthropic
                // provider gets only the translated bytes.
                if matches!(provider.protocol, Protocol::Openai) {
                    req.extensions_mut().insert(out);
                }
                match svc.clone().oneshot(req).await {
                    Ok(resp) => Ok(resp),
                    Err(e) => {
                        // A typed error from the in-process provider keeps its status, headers
                        // and Retry-After.
                        let e = match e.downcast::<Error>() {
                            Ok(err) => return Err(*err),
                            Err(e) => e,
                        };
                        tracing::warn!(provider = %provider.name, error = %e, "in-process provider failed");
                        Err(Error::new(
                            ErrorKind::UpstreamConnect,
                            format!(
                                "Could not get a response from the upstream provider '{}'.",
                                provider.name
                            ),
                        )
                        .with_cause(e))
                    }
                }
            }
        }
    }
}

impl Provider {
    fn secrets(&self) -> Secrets<'_> {
        match &self.transport {
            Transport::Http(h) => Secrets {
                provider: &self.name,
                api_key: h.key.as_ref().map(|k| &*k.0),
                base_url: &h.base_url,
                host: &h.host,
            },
            Transport::Service(_) => Secrets {
                provider: &self.name,
                api_key: None,
                base_url: "",
                host: "",
            },
        }
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
