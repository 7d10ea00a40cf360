//! OpenAI's generation parameters → [`GenerateConfig`], checked so that a bad value is a 400 that
//! names it (and never reaches the model thread).

use gpt::generate::{GenerateConfig, Padding};
use gpt::generate::sampling::Sampling;

use super::openai::{ApiError, GenerationParams, Stop};

/// OpenAI accepts at most this many stop strings.
const MAX_STOP: usize = 4;

/// How many tokens to generate when the request does not say.
#[derive(Debug, Clone, Copy)]
pub enum DefaultMaxTokens {
    /// A fixed number (OpenAI's legacy completions: 16).
    Fixed(usize),
    /// As many as the context window leaves after the prompt (OpenAI's chat completions).
    RestOfContext,
}

impl GenerationParams {
    /// The generation config for a prompt of `prompt_len` tokens (`prompt_param`: the field that
    /// holds the prompt, for errors) on a model with a context window of `n_positions`.
    pub fn config(
        &self,
        prompt_len: usize,
        prompt_param: &str,
        n_positions: usize,
        default_max: DefaultMaxTokens,
        default_seed: u64,
    ) -> Result<GenerateConfig, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid(format!("n = {n} is not supported: this server returns exactly one choice (n = 1)"), Some("n")));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(format!("temperature must be between 0 and 2, got {temperature}"), Some("temperature")));
        }
        if let Some(top_p) = self.top_p
            && !(top_p > 0.0 && top_p <= 1.0)
        {
            return Err(ApiError::invalid(format!("top_p must be greater than 0 and at most 1, got {top_p}"), Some("top_p")));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid(format!("stop may hold at most {MAX_STOP} strings, got {}", stop.len()), Some("stop")));
        }
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop strings must not be empty", Some("stop")));
        }
        // GPT-2 conditions on at least one token: an empty prompt becomes <|endoftext|>.
        let prompt_len = prompt_len.max(1);
        if prompt_len >= n_positions {
            return Err(ApiError::invalid(
                format!(
                    "This model's maximum context length is {n_positions} tokens, and the prompt alone has {prompt_len}: \
                     shorten it to leave room for the completion"
                ),
                Some(prompt_param),
            ));
        }
        let room = n_positions - prompt_len;
        let max_tokens = match (self.max_tokens, default_max) {
            (Some(max), _) => max,
            (None, DefaultMaxTokens::Fixed(max)) => max.min(room),
            (None, DefaultMaxTokens::RestOfContext) => room,
        };
        if max_tokens > room {
            return Err(ApiError::invalid(
                format!(
                    "This model's maximum context length is {n_positions} tokens. However, you requested {} tokens \
                     ({prompt_len} in the prompt, {max_tokens} for the completion). Please reduce the prompt or max_tokens.",
                    prompt_len.saturating_add(max_tokens)
                ),
                Some("max_tokens"),
            ));
        }
        let sampling = Sampling { temperature, top_k: self.top_k.filter(|&k| k > 0), top_p: self.top_p };
        sampling.validate().map_err(|e| ApiError::invalid(e.to_string(), None))?;
        Ok(GenerateConfig {
            max_new_tokens: max_tokens,
            sampling,
            seed: self.seed.unwrap_or(default_seed),
            stop,
            padding: Padding::Left,
            use_cache: true,
            ..GenerateConfig::greedy(max_tokens)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerationParams {
        GenerationParams::default()
    }

    #[test]
    fn defaults_follow_openai() {
        let config = params().config(4, "prompt", 1024, DefaultMaxTokens::Fixed(16), 7).unwrap();
        assert_eq!(config.max_new_tokens, 16);
        assert_eq!(config.sampling.temperature, 1.0);
        assert_eq!(config.seed, 7);
        let config = params().config(4, "messages", 1024, DefaultMaxTokens::RestOfContext, 7).unwrap();
        assert_eq!(config.max_new_tokens, 1020);
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let check = |p: GenerationParams, param: &str| {
            let error = p.config(4, "prompt", 1024, DefaultMaxTokens::Fixed(16), 0).unwrap_err();
            assert_eq!(error.status, 400);
            assert_eq!(error.param.as_deref(), Some(param), "{}", error.message);
        };
        check(GenerationParams { n: Some(2), ..params() }, "n");
        check(GenerationParams { temperature: Some(-1.0), ..params() }, "temperature");
        check(GenerationParams { top_p: Some(0.0), ..params() }, "top_p");
        check(GenerationParams { max_tokens: Some(1021), ..params() }, "max_tokens");
        check(GenerationParams { stop: Some(Stop::One(String::new())), ..params() }, "stop");
        check(GenerationParams { stop: Some(Stop::Many(vec!["a".into(); 5])), ..params() }, "stop");
        let error = params().config(1024, "prompt", 1024, DefaultMaxTokens::Fixed(16), 0).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("prompt"));
    }
}
