//! Chat-completions request → Messages API request.

use bytes::Bytes;
use rampart_core::openai::{Content, Message};
use rampart_core::{ChatRequest, Error};
use serde_json::{Map, Value, json};

use crate::config::AnthropicConfig;

/// Members that need no log when left out: consumed by the translation, or transport-only.
const CONSUMED: [&str; 7] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream_options",
    "parallel_tool_calls",
    "n",
];

fn bad(param: &str, message: impl Into<String>) -> Error {
    Error::invalid_request("invalid_value", message).with_param(param)
}

/// Translates a chat-completions request into the body of `POST /v1/messages` for `model`
/// (the provider's own model name).
///
/// Fails with a 400 ([`Error`], `invalid_value`) on what cannot be expressed: `n` above 1,
/// roles other than `system`, `developer`, `user`, `assistant` and `tool`, content parts other
/// than text, images and PDF files, tools other than functions, and tool-call arguments that are
/// not a JSON object. Members with no Messages API meaning are dropped with a debug log.
pub fn translate_request(
    chat: &ChatRequest,
    model: &str,
    config: &AnthropicConfig,
) -> Result<Bytes, Error> {
    let messages = chat
        .messages()
        .map_err(|e| bad("messages", e.to_string()))?;
    let mut out = Map::new();
    out.insert("model".into(), Value::from(model));
    let (system, turns) = translate_messages(messages)?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(turns));
    out.insert(
        "max_tokens".into(),
        Value::from(
            chat.max_output_tokens()
                .unwrap_or(config.default_max_tokens),
        ),
    );
    if chat.n().is_some_and(|n| n > 1) {
        return Err(bad(
            "n",
            "The Anthropic Messages API returns one choice per request: 'n' must be 1.",
        ));
    }
    let parallel = member(chat, "parallel_tool_calls")?.and_then(|v| v.as_bool());
    let mut tool_choice = None;
    for (key, raw) in chat.members() {
        if CONSUMED.contains(&key) {
            continue;
        }
        let value: Value = serde_json::from_slice(raw).map_err(|e| bad(key, e.to_string()))?;
        if value.is_null() {
            continue;
        }
        match key {
            "temperature" | "top_p" | "top_k" | "stream" => {
                out.insert(key.into(), value);
            }
            "stop" => {
                let seqs = match value {
                    Value::String(s) => vec![Value::String(s)],
                    Value::Array(a) if a.iter().all(Value::is_string) => a,
                    _ => return Err(bad("stop", "'stop' must be a string or a list of strings.")),
                };
                if !seqs.is_empty() {
                    out.insert("stop_sequences".into(), Value::Array(seqs));
                }
            }
            "user" => {
                out.insert("metadata".into(), json!({ "user_id": value }));
            }
            "tools" => {
                let tools = translate_tools(&value)?;
                if !tools.is_empty() {
                    out.insert("tools".into(), Value::Array(tools));
                }
            }
            "tool_choice" => tool_choice = Some(translate_tool_choice(&value)?),
            _ => {
                tracing::debug!(
                    field = key,
                    "dropped a request member with no Anthropic Messages API equivalent"
                );
            }
        }
    }
    if parallel == Some(false) && out.contains_key("tools") {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none"
            && let Some(obj) = choice.as_object_mut()
        {
            obj.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), choice);
    }
    serde_json::to_vec(&Value::Object(out))
        .map(Bytes::from)
        .map_err(|e| Error::internal(Box::new(e) as rampart_core::BoxError))
}

fn member(chat: &ChatRequest, key: &str) -> Result<Option<Value>, Error> {
    chat.member(key)
        .map(|raw| serde_json::from_slice::<Value>(raw).map_err(|e| bad(key, e.to_string())))
        .transpose()
}

/// `system` plus the user/assistant turns.
fn translate_messages(messages: &[Message]) -> Result<(Option<Value>, Vec<Value>), Error> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_blocks(m.content.as_ref(), &at)?);
                continue;
            }
            "user" => ("user", user_blocks(m.content.as_ref(), &at)?),
            "assistant" => ("assistant", assistant_blocks(m, &at)?),
            "tool" => ("user", vec![tool_result(m, &at)?]),
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("The role '{other}' is not supported by the Anthropic Messages API."),
                ));
            }
        };
        if blocks.is_empty() {
            tracing::debug!(message = i, "dropped an empty message");
            continue;
        }
        // The Messages API alternates user and assistant turns: consecutive messages of one
        // role (several tool results, a tool result and a user note) form one turn.
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let system = match system.len() {
        0 => None,
        1 if is_plain_text(&system[0]) => system.pop().map(|b| b["text"].clone()),
        _ => Some(Value::Array(system)),
    };
    let turns = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            let content = if blocks.len() == 1 && is_plain_text(&blocks[0]) {
                blocks.pop().map_or(Value::Null, |b| b["text"].clone())
            } else {
                Value::Array(blocks)
            };
            json!({ "role": role, "content": content })
        })
        .collect();
    Ok((system, turns))
}

/// A text block with nothing but its text (sent as a plain string).
fn is_plain_text(block: &Value) -> bool {
    block["type"] == "text" && block.as_object().is_some_and(|o| o.len() == 2)
}

fn text_block(text: &str, part: Option<&Value>) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    let mut block = json!({ "type": "text", "text": text });
    copy_cache_control(part, &mut block);
    Some(block)
}

fn copy_cache_control(from: Option<&Value>, to: &mut Value) {
    if let Some(cc) = from.and_then(|p| p.get("cache_control"))
        && !cc.is_null()
        && let Some(obj) = to.as_object_mut()
    {
        obj.insert("cache_control".into(), cc.clone());
    }
}

/// Text-only content (system messages, assistant text).
fn text_blocks(content: Option<&Content>, at: &str) -> Result<Vec<Value>, Error> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(s)) => Ok(text_block(s, None).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let text = match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text"),
                    Some("refusal") => p.get("refusal"),
                    _ => {
                        return Err(bad(
                            &format!("{at}.content[{j}]"),
                            "Only text content parts are supported here.",
                        ));
                    }
                };
                let text = text.and_then(Value::as_str).unwrap_or_default();
                out.extend(text_block(text, Some(p)));
            }
            Ok(out)
        }
    }
}

/// User content: text, images, PDF files.
fn user_blocks(content: Option<&Content>, at: &str) -> Result<Vec<Value>, Error> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(Content::Text(s)) => return Ok(text_block(s, None).into_iter().collect()),
        Some(Content::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
        let block = match kind {
            "text" => text_block(
                p.get("text").and_then(Value::as_str).unwrap_or_default(),
                Some(p),
            ),
            "image_url" => {
                let url = match p.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(v) => v.get("url").and_then(Value::as_str),
                    None => None,
                };
                let url = url.ok_or_else(|| bad(&at, "An image_url part needs a url."))?;
                Some(image_block(url, &at)?)
            }
            "file" => Some(file_block(p, &at)?),
            other => {
                return Err(bad(
                    &at,
                    format!(
                        "Content parts of type '{other}' are not supported by the Anthropic Messages API."
                    ),
                ));
            }
        };
        if let Some(mut block) = block {
            copy_cache_control(Some(p), &mut block);
            out.push(block);
        }
    }
    Ok(out)
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

fn image_block(url: &str, at: &str) -> Result<Value, Error> {
    if let Some((media, data)) = data_url(url) {
        return Ok(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media, "data": data }
        }));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(bad(
        at,
        "An image must be an http(s) URL or a base64 data: URL.",
    ))
}

fn file_block(part: &Value, at: &str) -> Result<Value, Error> {
    let data = part
        .get("file")
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
        .and_then(data_url);
    match data {
        Some((media, data)) => Ok(json!({
            "type": "document",
            "source": { "type": "base64", "media_type": media, "data": data }
        })),
        None => Err(bad(
            at,
            "A file part needs file_data as a base64 data: URL (file ids are not supported).",
        )),
    }
}

fn assistant_blocks(m: &Message, at: &str) -> Result<Vec<Value>, Error> {
    let mut out = text_blocks(m.content.as_ref(), at)?;
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        let id = call.get("id").and_then(Value::as_str);
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(bad(&at, "A tool call needs an id and a function name."));
        };
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                .map_err(|_| bad(&at, "Tool-call arguments must be a JSON object."))?,
            Some(v) => v.clone(),
        };
        if !input.is_object() {
            return Err(bad(&at, "Tool-call arguments must be a JSON object."));
        }
        out.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    Ok(out)
}

fn tool_result(m: &Message, at: &str) -> Result<Value, Error> {
    let id = m.tool_call_id.as_deref().ok_or_else(|| {
        bad(
            &format!("{at}.tool_call_id"),
            "A tool message needs a tool_call_id.",
        )
    })?;
    let mut block = json!({ "type": "tool_result", "tool_use_id": id });
    let content = match m.content.as_ref() {
        None => None,
        Some(Content::Text(s)) => (!s.is_empty()).then(|| Value::from(s.as_str())),
        Some(c @ Content::Parts(_)) => {
            let blocks = user_blocks(Some(c), at)?;
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
    };
    if let (Some(c), Some(obj)) = (content, block.as_object_mut()) {
        obj.insert("content".into(), c);
    }
    Ok(block)
}

fn translate_tools(tools: &Value) -> Result<Vec<Value>, Error> {
    let Some(list) = tools.as_array() else {
        return Err(bad("tools", "'tools' must be a list."));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &at,
                "Only tools of type 'function' are supported by the Anthropic Messages API.",
            ));
        }
        let f = t.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&at, "A function tool needs a name."))?;
        let schema = f
            .and_then(|f| f.get("parameters"))
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        let mut tool = json!({ "name": name, "input_schema": schema });
        if let Some(d) = f
            .and_then(|f| f.get("description"))
            .filter(|d| !d.is_null())
            && let Some(obj) = tool.as_object_mut()
        {
            obj.insert("description".into(), d.clone());
        }
        copy_cache_control(Some(t), &mut tool);
        out.push(tool);
    }
    Ok(out)
}

fn translate_tool_choice(choice: &Value) -> Result<Value, Error> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({ "type": "auto" })),
            "none" => Ok(json!({ "type": "none" })),
            "required" => Ok(json!({ "type": "any" })),
            other => Err(bad(
                "tool_choice",
                format!("Unknown tool_choice '{other}'."),
            )),
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => Ok(json!({ "type": "tool", "name": name })),
                _ => Err(bad(
                    "tool_choice",
                    "Only 'auto', 'none', 'required' and a named function are supported.",
                )),
            }
        }
        _ => Err(bad(
            "tool_choice",
            "'tool_choice' must be a string or an object.",
        )),
    }
}
