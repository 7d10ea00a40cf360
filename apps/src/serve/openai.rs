//! The OpenAI API's shapes: request bodies (as lenient as OpenAI's: unknown fields are ignored,
//! `null` means "not given"), response and stream-chunk bodies, and errors in OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}`. [`OpenAiJson`] reads a body so that every
//! malformed one is a 400 (or a 413 when it is too large) in that shape, never a 500.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gpt::generate::Completion;
use pipelines::eval::classifier::Prediction;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_json::{Value, json};

/// The largest request body the server reads (a larger one is a 413).
pub const MAX_BODY_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: an HTTP status and OpenAI's error object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None }
    }

    /// 400: the request is wrong; `param` names the offending field.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self { param: param.map(str::to_string), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    /// 404 `model_not_found`: the request names a model this server does not serve.
    pub fn model_not_found(requested: &str, served: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model '{requested}' does not exist: this server serves '{served}' (see GET /v1/models)"),
            )
        }
    }

    /// 404 for a path the server does not have.
    pub fn unknown_url(method: &str, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("Unknown request URL: {method} {path}"))
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", format!("{method} is not allowed on {path}"))
    }

    /// 401: no or a wrong bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self { code: Some("invalid_api_key"), ..Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message) }
    }

    /// 429: the queue is full.
    pub fn overloaded(capacity: usize) -> Self {
        Self {
            code: Some("rate_limit_exceeded"),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "The server is busy: {capacity} requests are already running or waiting (--max-concurrency). \
                     Retry after a short wait."
                ),
            )
        }
    }

    /// 413: the body is over [`MAX_BODY_BYTES`].
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the server's limit of {} bytes", MAX_BODY_BYTES),
        )
    }

    /// 500: something on the server failed (not the request's fault).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

// ---------------------------------------------------------------------------------------------
// Reading bodies

/// A JSON body read into `T`; any failure is an [`ApiError`] (400, or 413 when too large).
pub struct OpenAiJson<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::invalid(format!("Could not read the request body: {}", rejection.body_text()), None)
            }
        })?;
        parse_body(&bytes).map(OpenAiJson)
    }
}

/// A request body. `Flattened`: the part of it read through `#[serde(flatten)]`, whose errors
/// serde reports without their path; [`parse_body`] reads that part again on its own to name the
/// field at fault.
pub trait RequestBody: DeserializeOwned {
    type Flattened: DeserializeOwned;
}

impl RequestBody for CompletionRequest {
    type Flattened = GenerationParams;
}

impl RequestBody for ChatRequest {
    type Flattened = GenerationParams;
}

impl RequestBody for ClassifyRequest {
    type Flattened = serde::de::IgnoredAny;
}

/// Parses a request body, naming the field at fault (`param`) when a value has the wrong type.
pub fn parse_body<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let in_flattened = error.path().iter().next().is_none() && error.inner().classify() == serde_json::error::Category::Data;
        if in_flattened {
            let mut deserializer = serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize::<_, T::Flattened>(&mut deserializer) {
                Err(field) if matches!(field.path().iter().next(), Some(Segment::Map { .. })) => return invalid_body(field),
                _ => {}
            }
        }
        invalid_body(error)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::invalid(format!("We could not parse the JSON body of your request: {e}"), None))?;
    Ok(value)
}

/// The 400 for a body serde could not read.
fn invalid_body(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::invalid(format!("We could not parse the JSON body of your request: {inner}"), None);
    }
    if path == "." {
        return ApiError::invalid(format!("The request body must be a JSON object: {inner}"), None);
    }
    let hint = match path.as_str() {
        "prompt" => "a string, a list with one string, or a list of token ids",
        "stop" => "a string or a list of strings",
        "input" => "a string or a list of strings",
        "messages" => "a list of {\"role\", \"content\"} objects",
        _ => "",
    };
    let message = if hint.is_empty() {
        format!("Invalid value for '{path}': {inner}")
    } else {
        format!("Invalid value for '{path}': expected {hint} ({inner})")
    };
    let param = path.split(['.', '[']).next().unwrap_or(&path);
    ApiError::invalid(message, Some(param))
}

// ---------------------------------------------------------------------------------------------
// Requests

/// `prompt` of `/v1/completions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// One string or a list of them (`stop`, `input`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `stop`: one string or a list.
pub type Stop = OneOrMany;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// What `/v1/completions` and `/v1/chat/completions` share: how to generate (flattened into both
/// requests).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Not OpenAI's: an extension (as in vLLM).
    pub top_k: Option<usize>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub n: Option<usize>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

impl GenerationParams {
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// `stream_options.include_usage`.
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Prompt>,
    #[serde(flatten)]
    pub params: GenerationParams,
}

/// One message's `content`: a string or a list of parts (`{"type": "text", "text": ...}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    #[serde(flatten)]
    pub params: GenerationParams,
}

impl ChatRequest {
    /// The generation parameters, `max_completion_tokens` taking the place of `max_tokens`.
    pub fn generation_params(&self) -> GenerationParams {
        GenerationParams { max_tokens: self.max_completion_tokens.or(self.params.max_tokens), ..self.params.clone() }
    }
}

/// `input` of `/v1/classify`: one string or a list.
pub type ClassifyInput = OneOrMany;

/// `POST /v1/classify` (not OpenAI's: an llmfs endpoint for classifier runs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClassifyRequest {
    pub model: Option<String>,
    pub input: Option<ClassifyInput>,
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Which endpoint a response is for: the two differ in object names and in where the text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// What every response and chunk of one request repeats.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

pub fn usage(completion: &Completion) -> Value {
    let prompt = completion.prompt_ids.len();
    let generated = completion.token_ids.len();
    json!({ "prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated })
}

impl ResponseMeta {
    /// The whole (non-streamed) response.
    pub fn response(&self, completion: &Completion) -> Value {
        let finish = completion.finish_reason.as_str();
        let choice = match self.endpoint {
            Endpoint::Completions => json!({ "index": 0, "text": completion.text, "logprobs": null, "finish_reason": finish }),
            Endpoint::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": completion.text },
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        let object = match self.endpoint {
            Endpoint::Completions => "text_completion",
            Endpoint::Chat => "chat.completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage(completion),
        })
    }

    fn chunk(&self, choices: Value) -> Value {
        let object = match self.endpoint {
            Endpoint::Completions => "text_completion",
            Endpoint::Chat => "chat.completion.chunk",
        };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices })
    }

    /// The chat stream's first chunk: the assistant role, no text yet.
    pub fn role_chunk(&self) -> Value {
        self.chunk(json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }]))
    }

    /// A chunk with new text (`finish`: the last chunk's reason).
    pub fn text_chunk(&self, text: &str, finish: Option<&str>) -> Value {
        match self.endpoint {
            Endpoint::Completions => self.chunk(json!([{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }])),
            Endpoint::Chat => {
                let delta = if text.is_empty() && finish.is_some() { json!({}) } else { json!({ "content": text }) };
                self.chunk(json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]))
            }
        }
    }

    /// The chunk after the last one when `stream_options.include_usage` is set: no choices, the usage.
    pub fn usage_chunk(&self, completion: &Completion) -> Value {
        let mut chunk = self.chunk(json!([]));
        chunk["usage"] = usage(completion);
        chunk
    }
}

/// The `/v1/classify` answer.
pub fn classify_response(id: &str, model: &str, labels: &[String], predictions: &[Prediction]) -> Value {
    let data: Vec<Value> = predictions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let probabilities: serde_json::Map<String, Value> =
                labels.iter().cloned().zip(p.probabilities.iter().map(|&x| json!(x))).collect();
            json!({ "index": index, "label": p.label, "probability": p.probability, "probabilities": probabilities })
        })
        .collect();
    json!({ "id": id, "object": "list", "model": model, "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `#[serde(flatten)]` loses the path of a bad sampling field; [`parse_body`] still names it.
    #[test]
    fn a_bad_flattened_field_is_named() {
        let bad = [("max_tokens", "\"ten\""), ("temperature", "\"hot\""), ("top_p", "[]"), ("top_k", "-1"), ("stop", "5"), ("seed", "1.5"), ("n", "{}"), ("stream", "1"), ("stream_options", "2")];
        for (field, value) in bad {
            let completion = format!(r#"{{"prompt": "hi", "{field}": {value}}}"#);
            let chat = format!(r#"{{"messages": [{{"role": "user", "content": "hi"}}], "{field}": {value}}}"#);
            for error in [parse_body::<CompletionRequest>(completion.as_bytes()).unwrap_err(), parse_body::<ChatRequest>(chat.as_bytes()).unwrap_err()] {
                assert_eq!(error.param.as_deref(), Some(field), "{}", error.message);
                assert!(error.message.starts_with(&format!("Invalid value for '{field}")) && error.message.contains("line 1 column"), "{}", error.message);
            }
        }
        let error = parse_body::<CompletionRequest>(br#"{"stop": 5}"#).unwrap_err();
        assert!(error.message.contains("expected a string or a list of strings"), "{}", error.message);
        // The other fields, and bodies that are no object, as before.
        let error = parse_body::<ChatRequest>(br#"{"max_completion_tokens": "x"}"#).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("max_completion_tokens"));
        for body in ["[1, 2]", "42", "null"] {
            let error = parse_body::<CompletionRequest>(body.as_bytes()).unwrap_err();
            assert!(error.message.starts_with("The request body must be a JSON object") && error.param.is_none(), "{body}: {}", error.message);
        }
        let error = parse_body::<CompletionRequest>(br#"{"prompt": "hi"} x"#).unwrap_err();
        assert!(error.message.starts_with("We could not parse the JSON body"), "{}", error.message);
        // Valid values, flattened or not, still arrive.
        let request = parse_body::<ChatRequest>(br#"{"messages": [], "max_tokens": 3, "max_completion_tokens": 5, "stop": ["a"], "stream": true, "stream_options": {"include_usage": true}, "temperature": null}"#).unwrap();
        let params = request.generation_params();
        assert_eq!((params.max_tokens, params.stream(), params.include_usage(), params.temperature), (Some(5), true, true, None));
    }
}
