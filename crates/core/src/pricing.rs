//! Prices and exact cost arithmetic in micro-dollars.

use serde::{Deserialize, Serialize};

use crate::openai::Usage;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Cached input tokens (prompt tokens the provider served from its cache).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Output (completion) tokens, reasoning included.
    pub output: f64,
}

/// Micro-dollars (1e-6 USD): spend is kept as an integer so sums are exact.
pub type MicroUsd = u64;

impl Price {
    /// The cost of `usage` in micro-dollars, rounded up: cached prompt tokens at the cached
    /// price (the input price when none is set), the rest of the prompt at the input price,
    /// completion tokens at the output price.
    pub fn cost(&self, usage: &Usage) -> MicroUsd {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        // Price per million tokens in USD == price per token in micro-USD.
        let micros = uncached as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.completion_tokens as f64 * self.output;
        // Round away float noise before rounding up (3 * 0.1 is 0.30000000000000004).
        let rounded = (micros * 1e6).round() / 1e6;
        rounded.ceil() as MicroUsd
    }
}

/// Formats micro-dollars as a decimal USD string (`x-rampart-cost-usd`).
pub fn format_usd(micros: MicroUsd) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// [`format_usd`] as a header value (`x-rampart-cost-usd`), written without the formatter or
/// an intermediate string: it is set on every answer.
pub fn usd_value(micros: MicroUsd) -> http::HeaderValue {
    // u64::MAX: 14 whole digits, '.', 6 fractional.
    let mut out = [0u8; 24];
    let mut ints = itoa::Buffer::new();
    let whole = ints.format(micros / 1_000_000).as_bytes();
    let dot = whole.len();
    out[..dot].copy_from_slice(whole);
    out[dot] = b'.';
    // "1dddddd": the leading 1 pads the six decimals with zeros.
    let frac = ints.format(micros % 1_000_000 + 1_000_000).as_bytes();
    let end = dot + 7;
    out[dot + 1..end].copy_from_slice(&frac[1..]);
    http::HeaderValue::from_bytes(&out[..end]).unwrap_or(http::HeaderValue::from_static("0.000000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::PromptTokensDetails;

    #[test]
    fn usd_value_matches_format_usd() {
        for m in [
            0,
            1,
            190,
            999_999,
            1_000_000,
            1_234_567,
            120_000_000,
            u64::MAX,
        ] {
            assert_eq!(usd_value(m), format_usd(m).as_str(), "{m}");
        }
    }

    #[test]
    fn cost_by_hand() {
        let gpt41 = Price {
            input: 2.0,
            cached_input: Some(0.5),
            output: 8.0,
        };
        let usage = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
            total_tokens: 1500,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(400),
                ..Default::default()
            }),
            ..Default::default()
        };
        // 600 * 2.0 + 400 * 0.5 + 500 * 8.0 = 1200 + 200 + 4000 = 5400 micro-USD.
        assert_eq!(gpt41.cost(&usage), 5400);
        assert_eq!(format_usd(5400), "0.005400");
        let deepseek = Price {
            input: 0.28,
            cached_input: Some(0.028),
            output: 0.42,
        };
        let u = Usage {
            prompt_tokens: 3,
            completion_tokens: 1,
            ..Default::default()
        };
        // 3 * 0.28 + 0.42 = 1.26 → 2 micro-USD (rounded up).
        assert_eq!(deepseek.cost(&u), 2);
    }
}
