//! The optional narrator: an OpenAI-compatible chat endpoint (`api.llm`)
//! that may describe the summary's facts, never replace them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `[api.llm]`: an OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Base URL, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended).
    pub url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<schemas::Secret>,
    #[serde(default = "default_llm_timeout")]
    pub timeout_ms: u64,
}

fn default_llm_timeout() -> u64 {
    20_000
}

/// Asks the configured model to narrate `facts` (and nothing else).
pub(super) async fn narrate(llm: &LlmConfig, facts: &Value) -> std::result::Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(llm.timeout_ms))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client
        .post(format!("{}/chat/completions", llm.url.trim_end_matches('/')))
        .json(&json!({
            "model": llm.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "You summarise security log statistics for an analyst. Use only the facts given; do not invent numbers, hosts or events. At most 150 words."},
                {"role": "user", "content": facts.to_string()},
            ],
        }));
    if let Some(key) = &llm.api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the LLM endpoint answered {status}"));
    }
    let v: Value = response.json().await.map_err(|e| e.to_string())?;
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "the LLM answer has no choices[0].message.content".into())
}
