//! `llmfs serve --model M`: an OpenAI-compatible HTTP server (axum on tokio).
//!
//! - `GET /health`, `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`
//!   (`stream: true` answers with server-sent events in OpenAI's chunk format), and
//!   `POST /v1/classify` when the model is a classifier run.
//! - The model lives on one thread of its own ([`worker`]); requests wait in a bounded queue and
//!   a full queue is a 429. A client that disconnects stops its generation.
//! - Every error is OpenAI's JSON error object ([`openai::ApiError`]); bad input is a 4xx.

mod auth;
mod chat;
mod handlers;
pub mod load_bench;
mod openai;
mod params;
mod worker;

#[cfg(test)]
mod fuzz_tests;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use gpt::Tokenizer;
use pipelines::runs::ModelRef;

use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;
use crate::chat_format::ChatFormat;
use worker::{Model, ModelInfo, Worker};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory (a language model or a
    /// classifier), or random:<preset>
    #[arg(long)]
    pub model: String,
    /// The address to listen on; anything but a loopback address needs --api-key (or --insecure)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 request
    #[arg(long, env = "LLMFS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests the server holds at once, running or waiting for the model; more get a 429
    #[arg(long, default_value_t = 16)]
    pub max_concurrency: usize,
    /// Requests decoded together in one forward pass per token [default: --max-concurrency;
    /// 1 = one request at a time]
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Serve on a non-loopback address without an API key
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// What every handler shares.
pub struct AppState {
    /// The name clients use in `model` (the --model argument as given).
    pub model_id: String,
    pub created: u64,
    pub api_key: Option<String>,
    pub chat_format: ChatFormat,
    pub tokenizer: Tokenizer,
    /// The sampling seed of requests that give none (--seed).
    pub seed: u64,
    pub worker: Worker,
}

pub fn run(args: Args) -> Result<()> {
    let addrs: Vec<SocketAddr> = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving --host {}", args.host))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "--host {} resolves to no address", args.host);
    if args.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        anyhow::bail!("--api-key must not be empty");
    }
    auth::check_exposure(&args.host, &addrs, args.api_key.as_deref(), args.insecure)?;
    let state = start_state(&args.model, &args.runtime, args.weights, args.api_key.clone(), args.max_concurrency, args.max_batch)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(state, &addrs, args.max_concurrency))
}

/// Loads the model on its thread and builds what the handlers share.
fn start_state(
    model: &str,
    runtime: &RuntimeArgs,
    weights: WeightArgs,
    api_key: Option<String>,
    capacity: usize,
    max_batch: Option<usize>,
) -> Result<Arc<AppState>> {
    anyhow::ensure!(capacity > 0, "--max-concurrency must be at least 1");
    anyhow::ensure!(max_batch != Some(0), "--max-batch must be at least 1");
    let tokenizer = ModelRef::resolve(model).tokenizer().with_context(|| format!("loading the tokenizer of {model}"))?;
    let chat_format = ChatFormat::detect(model, &tokenizer)?;
    let load_start = Instant::now();
    let (spec, load_runtime) = (model.to_string(), runtime.clone());
    let worker = Worker::start(move || load(&spec, &load_runtime, weights), capacity, max_batch.unwrap_or(capacity))?;
    let description = match &worker.info {
        ModelInfo::Language { parameters, .. } => format!("language model, {parameters} parameters, chat format {}", chat_format.name()),
        ModelInfo::Classifier { labels, parameters } => format!("classifier ({}), {parameters} parameters", labels.join(", ")),
    };
    eprintln!("loaded {model} ({description}) in {:.1}s", load_start.elapsed().as_secs_f64());
    Ok(Arc::new(AppState {
        model_id: model.to_string(),
        created: pipelines::runs::now() as u64,
        api_key,
        chat_format,
        tokenizer,
        seed: runtime.seed,
        worker,
    }))
}

/// A server in this process on a free loopback port (benchmarks): it runs until dropped.
pub struct LocalServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl LocalServer {
    pub fn start(model: &str, runtime: &RuntimeArgs, weights: WeightArgs, capacity: usize, max_batch: usize) -> Result<Self> {
        let state = start_state(model, runtime, weights, None, capacity, Some(max_batch))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, router(state)).with_graceful_shutdown(async { stopped.await.unwrap_or(()) }).await?;
                Ok(())
            })
        });
        Ok(Self { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Loads the model on the model thread: a classifier when the directory holds one, else a
/// language model.
fn load(spec: &str, runtime: &RuntimeArgs, weights: WeightArgs) -> Result<Model> {
    let device = runtime.device()?;
    let model = ModelRef::resolve(spec);
    if model.is_classifier().with_context(|| format!("reading {}", model.model))? {
        return Ok(Model::Classifier(model.load_classifier(&device)?, model.tokenizer()?));
    }
    let model = weights.load(&model, &device, runtime.seed).with_context(|| format!("loading {spec}"))?;
    Ok(Model::Language(model))
}

pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{*model}", get(handlers::model))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/classify", post(handlers::classify))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_api_key));
    Router::new()
        .route("/health", get(handlers::health))
        .merge(v1)
        .fallback(handlers::unknown_url)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(openai::MAX_BODY_BYTES))
        .with_state(state)
}

async fn serve(state: Arc<AppState>, addrs: &[SocketAddr], capacity: usize) -> Result<()> {
    let listener = std::net::TcpListener::bind(addrs).with_context(|| format!("listening on {addrs:?}"))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let auth = if state.api_key.is_some() { "bearer key required" } else { "no API key" };
    eprintln!("serving {} on http://{local}/v1 ({auth}; at most {capacity} requests at once; Ctrl-C stops)", state.model_id);
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await.context("serving HTTP")?;
    eprintln!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
