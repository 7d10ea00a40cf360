//! The endpoints: validate the request, hand the work to the model thread, answer as JSON or as
//! a stream of server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use gpt::Tokenizer;
use gpt::generate::GenerateConfig;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use crate::chat_format::ChatFormat;
use super::openai::{
    ApiError, ChatRequest, ClassifyInput, ClassifyRequest, CompletionRequest, Endpoint, OpenAiJson, Prompt, ResponseMeta,
};
use super::params::DefaultMaxTokens;
use super::worker::{Event, ModelInfo};

/// OpenAI's default `max_tokens` for `/v1/completions`.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

pub async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "status": "ok", "model": state.model_id }))
}

fn model_object(state: &AppState) -> Value {
    json!({ "id": state.model_id, "object": "model", "created": state.created, "owned_by": "llmfs" })
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "object": "list", "data": [model_object(&state)] }))
}

pub async fn model(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Result<Json<Value>, ApiError> {
    state.check_model(Some(&model))?;
    Ok(Json(model_object(&state)))
}

pub async fn unknown_url(method: Method, uri: Uri) -> ApiError {
    ApiError::unknown_url(method.as_str(), uri.path())
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

impl AppState {
    /// 404 unless `requested` (when given) is the served model.
    fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            Some(name) if name != self.model_id => Err(ApiError::model_not_found(name, &self.model_id)),
            _ => Ok(()),
        }
    }

    /// The context window and vocabulary of a language model (400 for a classifier).
    fn language_model(&self) -> Result<(usize, usize), ApiError> {
        match &self.worker.info {
            ModelInfo::Language { n_positions, vocab_size, .. } => Ok((*n_positions, *vocab_size)),
            ModelInfo::Classifier { .. } => Err(ApiError::invalid(
                format!("{} is a classifier: it labels texts (POST /v1/classify) and does not generate them", self.model_id),
                Some("model"),
            )),
        }
    }
}

/// A fresh response id (`cmpl-…`, `chatcmpl-…`): time and a counter.
fn response_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{prefix}-{nanos:x}{:04x}", COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff)
}


/// A request checked and turned into work for the model thread: the prompt's token ids, how to
/// generate, and how to answer.
pub struct Job {
    pub prompt: Vec<u32>,
    pub config: GenerateConfig,
    pub stream: bool,
    pub include_usage: bool,
}

/// What the request checks need to know of the served language model.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub n_positions: usize,
    pub vocab_size: usize,
    /// The server's `--seed`, for requests that give none.
    pub seed: u64,
}

/// `/v1/completions`' body → a [`Job`], or the 400 that names the field at fault.
pub fn completion_job(request: &CompletionRequest, limits: Limits, tokenizer: &Tokenizer) -> Result<Job, ApiError> {
    let one_prompt = || ApiError::invalid("only one prompt per request is supported (n = 1)", Some("prompt"));
    let prompt = match &request.prompt {
        None => return Err(ApiError::invalid("you must provide a prompt", Some("prompt"))),
        Some(Prompt::Text(text)) => encode(tokenizer, text)?,
        Some(Prompt::Texts(texts)) => match texts.as_slice() {
            [text] => encode(tokenizer, text)?,
            _ => return Err(one_prompt()),
        },
        Some(Prompt::Tokens(ids)) => ids.clone(),
        Some(Prompt::TokenLists(lists)) => match lists.as_slice() {
            [ids] => ids.clone(),
            _ => return Err(one_prompt()),
        },
    };
    let vocab_size = limits.vocab_size;
    if let Some(bad) = prompt.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ApiError::invalid(format!("token id {bad} is outside the vocabulary ({vocab_size})"), Some("prompt")));
    }
    let params = &request.params;
    let default_max = DefaultMaxTokens::Fixed(COMPLETIONS_DEFAULT_MAX_TOKENS);
    let config = params.config(prompt.len(), "prompt", limits.n_positions, default_max, limits.seed)?.with_tokenizer(tokenizer);
    Ok(Job { prompt, config, stream: params.stream(), include_usage: params.include_usage() })
}

/// A prompt encoded with the tokenizer's defaults (a tokenizer failure is the request's 400).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ApiError> {
    tokenizer.try_encode(text).map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))
}

/// `/v1/chat/completions`' body → a [`Job`] (the messages rendered in `format`), or a 400.
pub fn chat_job(request: &ChatRequest, format: &ChatFormat, limits: Limits, tokenizer: &Tokenizer) -> Result<Job, ApiError> {
    let messages = request.messages.as_deref().ok_or_else(|| ApiError::invalid("you must provide messages", Some("messages")))?;
    let prompt = super::chat::encode(format, tokenizer, messages)?;
    let params = request.generation_params();
    let config = params.config(prompt.len(), "messages", limits.n_positions, DefaultMaxTokens::RestOfContext, limits.seed)?.with_tokenizer(tokenizer);
    Ok(Job { prompt, config, stream: params.stream(), include_usage: params.include_usage() })
}

impl AppState {
    fn limits(&self) -> Result<Limits, ApiError> {
        let (n_positions, vocab_size) = self.language_model()?;
        Ok(Limits { n_positions, vocab_size, seed: self.seed })
    }
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    OpenAiJson(request): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(request.model.as_deref())?;
    let job = completion_job(&request, state.limits()?, &state.tokenizer)?;
    let meta = ResponseMeta { endpoint: Endpoint::Completions, id: response_id("cmpl"), created: pipelines::runs::now() as u64, model: state.model_id.clone() };
    respond(&state, job, meta).await
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    OpenAiJson(request): OpenAiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    state.check_model(request.model.as_deref())?;
    let job = chat_job(&request, &state.chat_format, state.limits()?, &state.tokenizer)?;
    let meta = ResponseMeta { endpoint: Endpoint::Chat, id: response_id("chatcmpl"), created: pipelines::runs::now() as u64, model: state.model_id.clone() };
    respond(&state, job, meta).await
}

/// Queues the generation and answers: the whole response, or an event stream.
async fn respond(state: &AppState, job: Job, meta: ResponseMeta) -> Result<Response, ApiError> {
    let mut events = state.worker.generate(job.prompt, job.config)?;
    if job.stream {
        return Ok(Sse::new(event_stream(events, meta, job.include_usage)).into_response());
    }
    // Not streamed: wait for the end. If the client goes away, axum drops this future and with it
    // the receiver, which stops the generation.
    loop {
        match events.recv().await {
            Some(Event::Text(_)) => {}
            Some(Event::Done(completion)) => return Ok(Json(meta.response(&completion)).into_response()),
            Some(Event::Failed(message)) => return Err(ApiError::internal(format!("generation failed: {message}"))),
            None => return Err(ApiError::internal("the model thread dropped the request")),
        }
    }
}

/// Server-sent events: (chat: a role chunk,) a chunk per text piece, a last chunk with the finish
/// reason, (a usage chunk,) then `[DONE]`.
fn event_stream(
    events: UnboundedReceiver<Event>,
    meta: ResponseMeta,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct State {
        events: UnboundedReceiver<Event>,
        meta: ResponseMeta,
        include_usage: bool,
        pending: VecDeque<String>,
        finished: bool,
    }
    let mut pending = VecDeque::new();
    if meta.endpoint == Endpoint::Chat {
        pending.push_back(meta.role_chunk().to_string());
    }
    let state = State { events, meta, include_usage, pending, finished: false };
    stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.finished {
                return None;
            }
            match s.events.recv().await {
                Some(Event::Text(text)) => s.pending.push_back(s.meta.text_chunk(&text, None).to_string()),
                Some(Event::Done(completion)) => {
                    s.pending.push_back(s.meta.text_chunk("", Some(completion.finish_reason.as_str())).to_string());
                    if s.include_usage {
                        s.pending.push_back(s.meta.usage_chunk(&completion).to_string());
                    }
                    s.pending.push_back("[DONE]".into());
                    s.finished = true;
                }
                Some(Event::Failed(message)) => {
                    s.pending.push_back(ApiError::internal(format!("generation failed: {message}")).body().to_string());
                    s.finished = true;
                }
                None => {
                    s.pending.push_back(ApiError::internal("the model thread dropped the request").body().to_string());
                    s.finished = true;
                }
            }
        }
    })
}

/// `/v1/classify`'s texts, or a 400.
pub fn classify_texts(request: ClassifyRequest) -> Result<Vec<String>, ApiError> {
    match request.input {
        None => Err(ApiError::invalid("you must provide input: a string or a list of strings", Some("input"))),
        Some(ClassifyInput::One(text)) => Ok(vec![text]),
        Some(ClassifyInput::Many(texts)) if texts.is_empty() => {
            Err(ApiError::invalid("input must hold at least one text", Some("input")))
        }
        Some(ClassifyInput::Many(texts)) => Ok(texts),
    }
}

pub async fn classify(
    State(state): State<Arc<AppState>>,
    OpenAiJson(request): OpenAiJson<ClassifyRequest>,
) -> Result<Json<Value>, ApiError> {
    state.check_model(request.model.as_deref())?;
    let ModelInfo::Classifier { labels, .. } = &state.worker.info else {
        return Err(ApiError::invalid(
            format!("{} is a language model: /v1/classify needs a classifier run (llmfs finetune spam)", state.model_id),
            Some("model"),
        ));
    };
    let texts = classify_texts(request)?;
    let predictions = state.worker.classify(texts).await?;
    Ok(Json(super::openai::classify_response(&response_id("clf"), &state.model_id, labels, &predictions)))
}
