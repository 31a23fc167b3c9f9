//! Provider configuration: plain `Deserialize + Default` data, validated by the builder.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

/// The wire protocol of a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's chat-completions API or any compatible one (OpenAI, DeepSeek, Gemini's and
    /// Anthropic's compatible endpoints, vLLM, Ollama, relays).
    #[default]
    Openai,
    /// Anthropic's native Messages API (`POST {base_url}/messages`, `x-api-key` and
    /// `anthropic-version` headers). Requests and responses are translated to and from the
    /// chat-completions shape, invisibly to clients and to every layer.
    Anthropic,
}

/// Settings of a native Anthropic provider (`kind = "anthropic"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnthropicConfig {
    /// The `anthropic-version` header sent with every request.
    pub version: String,
    /// `max_tokens` sent when the client sends neither `max_completion_tokens` nor
    /// `max_tokens` (the Messages API requires one).
    pub default_max_tokens: u64,
}

/// The `anthropic-version` sent by default.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The `max_tokens` sent by default when the client sends none.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u64 = 4096;

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
            default_max_tokens: DEFAULT_ANTHROPIC_MAX_TOKENS,
        }
    }
}

/// Timeouts for calls to one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// TCP + TLS connect.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From sending the request to the response headers.
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// Longest silence between two body chunks.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// The whole call, body included.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

/// One HTTP provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider's name (`x-rampart-provider`, metrics, logs).
    pub name: String,
    /// Wire protocol.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended), or
    /// `https://api.anthropic.com/v1` for kind `anthropic` (`/messages` is appended).
    pub base_url: String,
    /// Environment variable holding the API key. The key itself never appears in config.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Allow link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
    /// fd00:ec2::254). Off by default: a mistyped base URL must not reach a metadata service.
    #[serde(default)]
    pub allow_link_local: bool,
    /// Settings for kind `anthropic` (ignored by other kinds).
    #[serde(default)]
    pub anthropic: AnthropicConfig,
}

/// Why a provider configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The base URL does not parse.
    #[error("provider '{provider}': base_url is not a valid URL: {reason}")]
    BadUrl {
        /// Provider name.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// Scheme not in the allow-list.
    #[error("provider '{provider}': base_url scheme '{scheme}' is not allowed (use http or https)")]
    Scheme {
        /// Provider name.
        provider: String,
        /// The scheme given.
        scheme: String,
    },
    /// A link-local or metadata address.
    #[error(
        "provider '{provider}': base_url host '{host}' is a link-local/metadata address; set allow_link_local = true if this is intended"
    )]
    LinkLocal {
        /// Provider name.
        provider: String,
        /// The host.
        host: String,
    },
    /// The API key variable is not set.
    #[error("provider '{provider}': environment variable '{var}' (api_key_env) is not set")]
    MissingKey {
        /// Provider name.
        provider: String,
        /// The variable.
        var: String,
    },
    /// Two providers share a name.
    #[error("provider '{0}' is defined twice")]
    DuplicateProvider(String),
    /// A model names an unknown provider.
    #[error("model '{model}': unknown provider '{provider}'")]
    UnknownProvider {
        /// Model alias.
        model: String,
        /// Provider named.
        provider: String,
    },
    /// Two models share an alias.
    #[error("model '{0}' is defined twice")]
    DuplicateModel(String),
    /// A setting is out of range.
    #[error("provider '{provider}': {reason}")]
    Invalid {
        /// Provider name.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Checks a base URL: parses, allows only http/https, refuses link-local and metadata hosts
/// unless `allow_link_local`. Returns the URL without a trailing slash.
pub fn validate_base_url(
    provider: &str,
    url: &str,
    allow_link_local: bool,
) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri =
        url.trim_end_matches('/')
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConfigError::BadUrl {
                provider: provider.to_owned(),
                reason: e.to_string(),
            })?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(ConfigError::Scheme {
            provider: provider.to_owned(),
            scheme: scheme.to_owned(),
        });
    }
    let host = uri.host().ok_or_else(|| ConfigError::BadUrl {
        provider: provider.to_owned(),
        reason: "no host".to_owned(),
    })?;
    if !allow_link_local && is_metadata_host(host) {
        return Err(ConfigError::LinkLocal {
            provider: provider.to_owned(),
            host: host.to_owned(),
        });
    }
    Ok(uri)
}

/// Link-local addresses and well-known cloud metadata endpoints.
fn is_metadata_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => {
                let seg = v6.segments();
                (seg[0] & 0xffc0) == 0xfe80
                    || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                    || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
            }
        };
    }
    let lower = bare.to_ascii_lowercase();
    lower == "metadata.google.internal" || lower == "metadata"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(validate_base_url("p", "https://api.openai.com/v1/", false).is_ok());
        assert!(validate_base_url("p", "http://127.0.0.1:8000/v1", false).is_ok());
        assert!(matches!(
            validate_base_url("p", "file:///etc/passwd", false),
            Err(ConfigError::Scheme { .. }) | Err(ConfigError::BadUrl { .. })
        ));
        assert!(matches!(
            validate_base_url("p", "ftp://x/v1", false),
            Err(ConfigError::Scheme { .. })
        ));
        for bad in [
            "http://169.254.169.254/latest",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://metadata.google.internal/",
        ] {
            assert!(
                matches!(
                    validate_base_url("p", bad, false),
                    Err(ConfigError::LinkLocal { .. })
                ),
                "{bad}"
            );
            assert!(validate_base_url("p", bad, true).is_ok(), "{bad}");
        }
        assert!(matches!(
            validate_base_url("p", "not a url", false),
            Err(ConfigError::BadUrl { .. }) | Err(ConfigError::Scheme { .. })
        ));
    }
}
