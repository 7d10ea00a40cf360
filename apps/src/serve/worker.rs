//! The model thread. One plain `std::thread` loads and owns the model (Burn tensors never leave
//! it); the async handlers hand it jobs through a bounded queue and get results back on a
//! channel per request, so generation never blocks the async runtime.
//!
//! **Admission.** At most `capacity` requests (`--max-concurrency`) are in the server at once,
//! running or waiting: each job holds a semaphore permit from the moment it is queued until the
//! thread is done with it. A request beyond that is answered 429 at once (never queued without
//! bound); the queue is a `sync_channel(capacity)` and is only ever `try_send`-ed to.
//!
//! **Cancellation.** A generation sends its text token by token on an unbounded channel whose
//! receiver is the HTTP response (streamed) or the waiting handler (not streamed). When the client
//! goes away, axum drops that receiver; the thread checks before every decode step and stops.
//!
//! **Batching.** A language model decodes every running request in one forward pass per step
//! ([`ContinuousBatch`]): between steps the thread takes every job that arrived (`try_recv`) and
//! lets it join after a prefill of its own; a request leaves the batch as soon as it is done or its
//! client is gone. Each request keeps its own sampling settings and gets exactly the tokens it
//! would get alone. Requests that do not fit yet (the batch is full, or the context window could
//! not hold every row's remaining tokens) wait in arrival order.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result};
use gpt::generate::continuous::{ContinuousBatch, RequestId};
use gpt::generate::{Completion, GenerateConfig};
use gpt::{Classifier, Tokenizer};
use gpt::models::{CausalLm, LanguageModel};
use pipelines::eval::classifier::{Prediction, classify_texts};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::openai::ApiError;

/// Texts of one `/v1/classify` request go through the classifier this many at a time.
const CLASSIFY_BATCH: usize = 8;

/// What the server runs: a language model or a classifier (with the tokenizer it reads texts with).
pub enum Model {
    Language(LanguageModel),
    Classifier(Classifier, Tokenizer),
}

/// What the handlers need to know about the model (the model itself stays on its thread).
#[derive(Debug, Clone)]
pub enum ModelInfo {
    Language { n_positions: usize, vocab_size: usize, parameters: usize },
    Classifier { labels: Vec<String>, parameters: usize },
}

impl Model {
    fn info(&self) -> ModelInfo {
        match self {
            Self::Language(model) => ModelInfo::Language {
                n_positions: model.context_length(),
                vocab_size: model.vocab_size(),
                parameters: gpt::io::parameter_counts(model).1,
            },
            Self::Classifier(classifier, _) => ModelInfo::Classifier {
                labels: classifier.labels().to_vec(),
                parameters: classifier.parameter_counts().1,
            },
        }
    }
}

/// What a generation sends back, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// Text that became final with the last token (the pieces add up to the completion's text).
    Text(String),
    Done(Completion),
    Failed(String),
}

enum Job {
    Generate { prompt: Vec<u32>, config: GenerateConfig, events: mpsc::UnboundedSender<Event> },
    Classify { texts: Vec<String>, reply: oneshot::Sender<Result<Vec<Prediction>, String>> },
}

struct Queued {
    job: Job,
    /// Held until the job is done: the admission count covers running jobs too.
    _permit: OwnedSemaphorePermit,
}

/// The handle the HTTP side holds.
pub struct Worker {
    queue: SyncSender<Queued>,
    admission: Arc<Semaphore>,
    capacity: usize,
    pub info: ModelInfo,
}

impl Worker {
    /// Starts the model thread, runs `load` on it and waits until the model is ready. At most
    /// `capacity` requests are admitted, at most `max_batch` of them decoded together.
    pub fn start<F>(load: F, capacity: usize, max_batch: usize) -> Result<Self>
    where
        F: FnOnce() -> Result<Model> + Send + 'static,
    {
        anyhow::ensure!(capacity > 0, "--max-concurrency must be at least 1");
        let (queue, jobs) = sync_channel::<Queued>(capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<ModelInfo>>();
        std::thread::Builder::new()
            .name("llmfs-model".into())
            .spawn(move || {
                let model = match load() {
                    Ok(model) => model,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(model.info()));
                serve_jobs(&model, jobs, max_batch);
            })
            .context("starting the model thread")?;
        let info = ready_rx.recv().context("the model thread stopped while loading the model")??;
        Ok(Self { queue, admission: Arc::new(Semaphore::new(capacity)), capacity, info })
    }

    fn submit(&self, job: Job) -> Result<(), ApiError> {
        let permit = self.admission.clone().try_acquire_owned().map_err(|_| ApiError::overloaded(self.capacity))?;
        self.queue.try_send(Queued { job, _permit: permit }).map_err(|error| match error {
            TrySendError::Full(_) => ApiError::overloaded(self.capacity),
            TrySendError::Disconnected(_) => ApiError::internal("the model thread has stopped"),
        })
    }

    /// Queues a generation; its events arrive on the returned receiver. Dropping the receiver
    /// cancels it.
    pub fn generate(&self, prompt: Vec<u32>, config: GenerateConfig) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
        let (events, receiver) = mpsc::unbounded_channel();
        self.submit(Job::Generate { prompt, config, events })?;
        Ok(receiver)
    }

    /// Classifies `texts` (in order).
    pub async fn classify(&self, texts: Vec<String>) -> Result<Vec<Prediction>, ApiError> {
        let (reply, receiver) = oneshot::channel();
        self.submit(Job::Classify { texts, reply })?;
        match receiver.await {
            Ok(Ok(predictions)) => Ok(predictions),
            Ok(Err(message)) => Err(ApiError::internal(format!("classification failed: {message}"))),
            Err(_) => Err(ApiError::internal("the model thread dropped the request")),
        }
    }
}

/// The thread's loop, until the server drops the queue.
fn serve_jobs(model: &Model, jobs: Receiver<Queued>, max_rows: usize) {
    match model {
        Model::Language(model) => serve_generations(model, &jobs, max_rows),
        Model::Classifier(classifier, tokenizer) => {
            for Queued { job, _permit } in jobs.iter() {
                // A panic in one job (a bug, not bad input: requests are validated before they
                // get here) fails that request (its channel is dropped); the server keeps running.
                if std::panic::catch_unwind(AssertUnwindSafe(|| classify_job(classifier, tokenizer, job))).is_err() {
                    eprintln!("error: a request panicked on the model thread; the server keeps running");
                }
            }
        }
    }
}

fn classify_job(classifier: &Classifier, tokenizer: &Tokenizer, job: Job) {
    match job {
        Job::Classify { texts, reply } => {
            let _ = reply.send(classify_texts(classifier, tokenizer, &texts, CLASSIFY_BATCH).map_err(|e| format!("{e:#}")));
        }
        Job::Generate { events, .. } => {
            let _ = events.send(Event::Failed("this server runs a classifier, not a language model".into()));
        }
    }
}

/// A generation request on the model thread: waiting to join the batch, then running in it.
struct Generation {
    id: RequestId,
    prompt: Vec<u32>,
    config: GenerateConfig,
    events: mpsc::UnboundedSender<Event>,
    /// Held until the request is done: the admission count covers running requests too.
    _permit: OwnedSemaphorePermit,
    started: Instant,
}

/// Continuous batching over the queue (see the module docs).
fn serve_generations(model: &LanguageModel, jobs: &Receiver<Queued>, max_rows: usize) {
    let mut batch = ContinuousBatch::new(model, max_rows);
    let mut waiting: VecDeque<Generation> = VecDeque::new();
    let mut running: HashMap<RequestId, Generation> = HashMap::new();
    let mut next_id: RequestId = 0;
    loop {
        // Block for work only when there is nothing to decode.
        let first = if batch.is_empty() && waiting.is_empty() {
            match jobs.recv() {
                Ok(queued) => Some(queued),
                Err(_) => return,
            }
        } else {
            None
        };
        for Queued { job, _permit } in first.into_iter().chain(std::iter::from_fn(|| jobs.try_recv().ok())) {
            match job {
                Job::Generate { prompt, config, events } => {
                    waiting.push_back(Generation { id: next_id, prompt, config, events, _permit, started: Instant::now() });
                    next_id += 1;
                }
                Job::Classify { reply, .. } => {
                    let _ = reply.send(Err("this server runs a language model, not a classifier".into()));
                }
            }
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| decode_step(&mut batch, &mut waiting, &mut running)));
        if outcome.is_err() {
            // A bug, not bad input: fail what was running (dropping its channels) and go on.
            eprintln!("error: the decode step panicked; {} running request(s) failed, the server keeps running", running.len());
            running.clear();
            batch = ContinuousBatch::new(model, max_rows);
        }
    }
}

/// Admits waiting requests in arrival order while they fit, drops the ones whose client left,
/// decodes one token for every running request and sends out what became final.
fn decode_step(batch: &mut ContinuousBatch, waiting: &mut VecDeque<Generation>, running: &mut HashMap<RequestId, Generation>) {
    while let Some(next) = waiting.front() {
        if next.events.is_closed() {
            waiting.pop_front();
            continue;
        }
        match batch.admit(next.id, &next.prompt, &next.config) {
            Ok(false) => break,
            Ok(true) => {
                if let Some(generation) = waiting.pop_front() {
                    running.insert(generation.id, generation);
                }
            }
            Err(error) => {
                if let Some(generation) = waiting.pop_front() {
                    let _ = generation.events.send(Event::Failed(error.to_string()));
                }
            }
        }
    }
    let gone: Vec<RequestId> = running.iter().filter(|(_, g)| g.events.is_closed()).map(|(&id, _)| id).collect();
    for id in gone {
        batch.cancel(id);
        running.remove(&id);
        eprintln!("request cancelled: the client disconnected");
    }
    if !batch.is_empty() {
        match batch.step() {
            Ok(tokens) => {
                for token in tokens.into_iter().filter(|t| !t.text.is_empty()) {
                    if let Some(generation) = running.get(&token.id) {
                        let _ = generation.events.send(Event::Text(token.text));
                    }
                }
            }
            Err(error) => {
                // Not a request's fault (those are caught at admission): fail every running one.
                for (_, generation) in running.drain() {
                    let _ = generation.events.send(Event::Failed(error.to_string()));
                }
                *batch = ContinuousBatch::new(batch.model(), batch.max_rows());
                return;
            }
        }
    }
    for (id, completion) in batch.take_finished() {
        if let Some(generation) = running.remove(&id) {
            finish(generation, completion, batch.len());
        }
    }
}

fn finish(generation: Generation, completion: Completion, batch_rows: usize) {
    let seconds = generation.started.elapsed().as_secs_f64();
    eprintln!(
        "completed {} prompt + {} new tokens in {seconds:.2}s ({:.1} tokens/s, finish: {}; {batch_rows} other request(s) running)",
        completion.prompt_ids.len(),
        completion.token_ids.len(),
        completion.token_ids.len() as f64 / seconds.max(1e-9),
        completion.finish_reason.as_str()
    );
    let _ = generation.events.send(Event::Done(completion));
}
