//! Classifying a prompt into a [`Tier`]: the [`Classifier`] trait, the deterministic
//! [`HeuristicClassifier`] (the default) and the [`LlmClassifier`] that asks a cheap model.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use rampart_core::openai::Message;
use rampart_core::{Body, BoxError, ChatRequest, Target};
use regex::Regex;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

use crate::catalog::{Catalog, Tier};

/// At most this many bytes of message text are scanned for cues (newest messages first).
pub const SCAN_LIMIT_BYTES: usize = 64 * 1024;

/// The prompt of one request, as classifiers and content rules see it.
#[derive(Debug)]
pub struct Prompt<'a> {
    chat: &'a Arc<ChatRequest>,
    tokens: u64,
}

impl<'a> Prompt<'a> {
    /// The prompt of `chat`.
    pub fn new(chat: &'a Arc<ChatRequest>) -> Self {
        Self {
            chat,
            tokens: chat.estimate_prompt_tokens(),
        }
    }

    /// The parsed request (shared; cheap to clone for an async classifier).
    pub fn chat(&self) -> &'a Arc<ChatRequest> {
        self.chat
    }

    /// The prompt-token estimate (`ChatRequest::estimate_prompt_tokens`).
    pub fn estimated_tokens(&self) -> u64 {
        self.tokens
    }

    /// The typed messages (empty when `messages` cannot be typed).
    pub fn messages(&self) -> &'a [Message] {
        self.chat.messages().unwrap_or(&[])
    }

    /// Message texts, newest first, at most [`SCAN_LIMIT_BYTES`] in total.
    pub fn texts(&self) -> Vec<Cow<'a, str>> {
        let mut budget = SCAN_LIMIT_BYTES;
        let mut out = Vec::new();
        for m in self.messages().iter().rev() {
            if budget == 0 {
                break;
            }
            let text = m.text();
            if text.len() <= budget {
                budget -= text.len();
                out.push(text);
            } else {
                let cut = floor_char_boundary(&text, budget);
                out.push(Cow::Owned(text[..cut].to_owned()));
                budget = 0;
            }
        }
        out
    }

    /// The text of the newest user message.
    pub fn last_user_text(&self) -> Cow<'a, str> {
        self.messages()
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(Message::text)
            .unwrap_or(Cow::Borrowed(""))
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A boxed tier future (`'static`: clone what you need out of the prompt).
pub type TierFuture = Pin<Box<dyn Future<Output = Tier> + Send + 'static>>;

/// A classifier's answer: at once (the fast path, no allocation), or later.
pub enum Classification {
    /// The tier is known now.
    Ready(Tier),
    /// The tier needs an asynchronous step (e.g. a model call).
    Pending(TierFuture),
}

impl std::fmt::Debug for Classification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(t) => f.debug_tuple("Ready").field(t).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl Classification {
    /// The tier, waiting if needed.
    pub async fn resolve(self) -> Tier {
        match self {
            Self::Ready(t) => t,
            Self::Pending(f) => f.await,
        }
    }
}

/// Puts a routed request into a tier. Closures `Fn(&Prompt<'_>) -> Tier` are classifiers.
pub trait Classifier: Send + Sync + 'static {
    /// Classifies `prompt`.
    fn classify(&self, prompt: &Prompt<'_>) -> Classification;
}

impl<F> Classifier for F
where
    F: Fn(&Prompt<'_>) -> Tier + Send + Sync + 'static,
{
    fn classify(&self, prompt: &Prompt<'_>) -> Classification {
        Classification::Ready(self(prompt))
    }
}

/// What the heuristic saw in a prompt, and the resulting score and tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// Prompt-token estimate.
    pub tokens: u64,
    /// Code was seen (fence, code syntax, or a programming word).
    pub code: bool,
    /// Distinct reasoning cues seen.
    pub reasoning_cues: usize,
    /// A creative-writing cue was seen.
    pub creative: bool,
    /// A short factual-question cue was seen.
    pub factual: bool,
    /// User and assistant messages in the conversation.
    pub turns: usize,
    /// The request offers `tools`.
    pub tools: bool,
    /// The total score.
    pub score: i32,
}

impl Signals {
    /// The tier of the score: at most 1 simple, 2–3 medium, 4 or more complex.
    pub fn tier(&self) -> Tier {
        match self.score {
            i32::MIN..=1 => Tier::Simple,
            2..=3 => Tier::Medium,
            _ => Tier::Complex,
        }
    }
}

/// The default classifier: deterministic points over the prompt (see the crate README's table).
///
/// | Signal | Points |
/// |---|---|
/// | prompt estimate ≥ 8,000 tokens / ≥ 2,000 / ≥ 500 | +4 / +2 / +1 |
/// | code (fence, `fn `, `def `, `#include`, `=>`, programming words) | +2 |
/// | reasoning cues (`prove`, `step by step`, `analyze`, `trade-off`, `explain why`, ...): 1 / ≥ 2 distinct | +2 / +4 |
/// | creative cues (`story`, `poem`, `essay`, `slogan`, ...) | +2 |
/// | factual cues (`what is`, `who was`, `capital of`, `translate`, ...) without code or reasoning | −1 |
/// | conversation of ≥ 5 / ≥ 10 user+assistant messages | +1 / +2 |
/// | the request offers `tools` | +1 |
///
/// Score ≤ 1 → simple, 2–3 → medium, ≥ 4 → complex.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicClassifier;

/// One regex per cue family: `is_match`/`find_iter` with literal prefilters are much cheaper than
/// capture groups over one big alternation.
struct Cues {
    code: Regex,
    reason: Regex,
    creative: Regex,
    fact: Regex,
}

static CUES: LazyLock<Option<Cues>> = LazyLock::new(|| {
    Some(Cues {
        code: Regex::new(concat!(
            r"(?i)```|#include|\bfn\s|\bdef\s|\bimport\s|=>|\bc\+\+|",
            r"\b(?:code|function|class|method|implement|refactor|compiler?|compiles?|bug|debug|",
            r"stack\s+trace|traceback|exception|segfault|regex|sql|python|javascript|typescript|rust|",
            r"golang|java|kotlin|html|css|json|script)\b",
        ))
        .ok()?,
        reason: Regex::new(concat!(
            r"(?i)\b(?:prove|proof|derive|derivation|step[\s-]by[\s-]step|analy[sz]e|analysis|",
            r"reasoning|trade-?offs?|compare|contrast|evaluate|optimi[sz]e|algorithm|complexity|",
            r"architecture|theorem|calculate|solve|explain\s+why|why\s+does|why\s+do|",
            r"pros\s+and\s+cons)\b",
        ))
        .ok()?,
        creative: Regex::new(concat!(
            r"(?i)\b(?:story|stories|poem|poetry|lyrics|song|essay|fiction|novel|screenplay|",
            r"slogan|tagline|brainstorm|creative|imagine|haiku|limerick)\b",
        ))
        .ok()?,
        fact: Regex::new(concat!(
            r"(?i)\b(?:what\s+is|what's|who\s+is|who\s+was|when\s+did|when\s+was|where\s+is|",
            r"define|definition\s+of|capital\s+of|how\s+many|translate|meaning\s+of)\b",
        ))
        .ok()?,
    })
});

impl HeuristicClassifier {
    /// The signals, score and tier of a prompt.
    pub fn signals(&self, prompt: &Prompt<'_>) -> Signals {
        let mut s = Signals {
            tokens: prompt.estimated_tokens(),
            turns: prompt
                .messages()
                .iter()
                .filter(|m| m.role == "user" || m.role == "assistant")
                .count(),
            tools: prompt
                .chat()
                .member("tools")
                .is_some_and(|t| t != b"null" && t != b"[]"),
            ..Signals::default()
        };
        let mut reasons: Vec<String> = Vec::new();
        if let Some(cues) = CUES.as_ref() {
            for text in prompt.texts() {
                s.code = s.code || cues.code.is_match(&text);
                s.creative = s.creative || cues.creative.is_match(&text);
                s.factual = s.factual || cues.fact.is_match(&text);
                for m in cues.reason.find_iter(&text) {
                    let cue: String = m
                        .as_str()
                        .split(|c: char| c.is_whitespace() || c == '-')
                        .filter(|w| !w.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_ascii_lowercase();
                    if !reasons.contains(&cue) {
                        reasons.push(cue);
                    }
                }
            }
        }
        s.reasoning_cues = reasons.len();
        let mut score = 0;
        score += match s.tokens {
            8000.. => 4,
            2000.. => 2,
            500.. => 1,
            _ => 0,
        };
        if s.code {
            score += 2;
        }
        score += match s.reasoning_cues {
            0 => 0,
            1 => 2,
            _ => 4,
        };
        if s.creative {
            score += 2;
        }
        if s.factual && !s.code && s.reasoning_cues == 0 {
            score -= 1;
        }
        score += match s.turns {
            10.. => 2,
            5.. => 1,
            _ => 0,
        };
        if s.tools {
            score += 1;
        }
        s.score = score;
        s
    }
}

impl Classifier for HeuristicClassifier {
    fn classify(&self, prompt: &Prompt<'_>) -> Classification {
        Classification::Ready(self.signals(prompt).tier())
    }
}

/// The instruction the [`LlmClassifier`] sends as the system message.
pub const LLM_CLASSIFIER_PROMPT: &str = "Classify how hard the user's request is for a language model. \
Answer with exactly one word: simple (short factual question, chit-chat, small rewrite), medium \
(code, creative writing, one reasoning step) or complex (multi-step reasoning, proofs, large code \
changes, long documents).";

type ChatService = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// Asks a (cheap) model for the tier: one short request (the instruction, the newest user
/// message cut to `max_prompt_chars`, `max_tokens = 3`, `temperature = 0`) through any
/// chat-completions service — the gateway's upstream, or the simulated provider in tests. The
/// request carries a [`Target`] extension and an `Arc<ChatRequest>` extension like any routed
/// request.
///
/// Answers are cached by a hash of the request's `messages` in a bounded map (oldest entry
/// evicted first). When the call fails, times out or the answer names no tier, the
/// [`HeuristicClassifier`]'s tier is used (and not cached).
#[derive(Clone)]
pub struct LlmClassifier {
    inner: Arc<LlmInner>,
}

struct LlmInner {
    service: ChatService,
    target: Target,
    timeout: Duration,
    max_prompt_chars: usize,
    capacity: usize,
    cache: Mutex<TierCache>,
}

#[derive(Default)]
struct TierCache {
    map: HashMap<u64, Tier>,
    order: VecDeque<u64>,
}

impl std::fmt::Debug for LlmClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClassifier")
            .field("target", &self.inner.target)
            .field("cached", &self.cached())
            .finish()
    }
}

impl LlmClassifier {
    /// Asks `target` through `service`. Defaults: 2 s timeout, 2,000 prompt characters, 10,000
    /// cached answers.
    pub fn new<S>(service: S, target: Target) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self {
            inner: Arc::new(LlmInner {
                service: BoxCloneSyncService::new(service.map_err(Into::into)),
                target,
                timeout: Duration::from_secs(2),
                max_prompt_chars: 2000,
                capacity: 10_000,
                cache: Mutex::new(TierCache::default()),
            }),
        }
    }

    /// Asks the catalog's cheapest model (lowest blended price); `None` for an empty catalog.
    pub fn cheapest<S>(service: S, catalog: &Catalog) -> Option<Self>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let target = catalog.cheapest()?.target.clone();
        Some(Self::new(service, target))
    }

    fn with(self, f: impl FnOnce(&mut LlmInner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(i) => i,
            Err(shared) => LlmInner {
                service: shared.service.clone(),
                target: shared.target.clone(),
                timeout: shared.timeout,
                max_prompt_chars: shared.max_prompt_chars,
                capacity: shared.capacity,
                cache: Mutex::new(TierCache::default()),
            },
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Time allowed for the model's answer.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|i| i.timeout = timeout)
    }

    /// Most characters of the user message sent.
    pub fn max_prompt_chars(self, chars: usize) -> Self {
        self.with(|i| i.max_prompt_chars = chars)
    }

    /// Most answers cached (at least 1).
    pub fn capacity(self, entries: usize) -> Self {
        self.with(|i| i.capacity = entries.max(1))
    }

    /// The model asked.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Answers currently cached.
    pub fn cached(&self) -> usize {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    fn key(chat: &ChatRequest) -> u64 {
        let mut h = DefaultHasher::new();
        chat.messages_raw().hash(&mut h);
        h.finish()
    }
}

/// The tier named in a model's answer: the first of `simple`, `medium`, `complex` it contains.
pub fn parse_tier_answer(answer: &str) -> Option<Tier> {
    let lower = answer.to_ascii_lowercase();
    Tier::ALL
        .into_iter()
        .filter_map(|t| lower.find(t.as_str()).map(|i| (i, t)))
        .min_by_key(|(i, _)| *i)
        .map(|(_, t)| t)
}

impl LlmInner {
    fn request(&self, excerpt: &str) -> Result<Request<Body>, BoxError> {
        let body = serde_json::json!({
            "model": &*self.target.model,
            "messages": [
                {"role": "system", "content": LLM_CLASSIFIER_PROMPT},
                {"role": "user", "content": excerpt},
            ],
            "max_tokens": 3,
            "temperature": 0,
        });
        let chat = ChatRequest::parse(serde_json::to_vec(&body)?.into())?;
        let mut req = Request::post("/v1/chat/completions")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from_bytes(chat.raw().clone()))?;
        req.extensions_mut().insert(Arc::new(chat));
        req.extensions_mut().insert(self.target.clone());
        Ok(req)
    }

    async fn ask(&self, excerpt: String) -> Result<Option<Tier>, BoxError> {
        let req = self.request(&excerpt)?;
        let resp = tokio::time::timeout(self.timeout, self.service.clone().oneshot(req))
            .await
            .map_err(|_| "classifier model timed out")??;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect_limited(64 * 1024))
            .await
            .map_err(|_| "classifier model timed out")??;
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v.pointer("/choices/0/message/content")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_tier_answer))
    }

    fn remember(&self, key: u64, tier: Tier) {
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if c.map.insert(key, tier).is_none() {
            c.order.push_back(key);
            while c.map.len() > self.capacity {
                match c.order.pop_front() {
                    Some(old) => {
                        c.map.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }
}

impl Classifier for LlmClassifier {
    fn classify(&self, prompt: &Prompt<'_>) -> Classification {
        let key = Self::key(prompt.chat());
        if let Some(t) = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(&key)
        {
            return Classification::Ready(*t);
        }
        let fallback = HeuristicClassifier.signals(prompt).tier();
        let text = prompt.last_user_text();
        let cut = text
            .char_indices()
            .nth(self.inner.max_prompt_chars)
            .map_or(text.len(), |(i, _)| i);
        let excerpt = text[..cut].to_owned();
        let inner = self.inner.clone();
        Classification::Pending(Box::pin(async move {
            match inner.ask(excerpt).await {
                Ok(Some(tier)) => {
                    inner.remember(key, tier);
                    tier
                }
                Ok(None) => {
                    tracing::debug!("classifier model named no tier; using the heuristic");
                    fallback
                }
                Err(e) => {
                    tracing::warn!(error = %e, "classifier model failed; using the heuristic");
                    fallback
                }
            }
        }))
    }
}
