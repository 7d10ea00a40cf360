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
//! **Batching.** Today the thread runs one job at a time, each a batch of one row of
//! [`TokenStream`]. The queue is shaped for batching: the loop would take every waiting job with
//! `try_recv` between decode steps and decode all running rows in one forward pass, rows joining
//! and leaving the batch as they arrive and finish. What that needs from `gpt::generate` is a
//! stream whose rows carry their own sampling settings and stop strings, and a KV cache that rows
//! can join after the prefill; the channels, permits and cancellation here stay as they are.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result};
use gpt::generate::{Completion, GenerateConfig, TokenStream};
use gpt::{Gpt, GptClassifier};
use pipelines::finetune::{Prediction, classify_texts};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::openai::ApiError;

/// Texts of one `/v1/classify` request go through the classifier this many at a time.
const CLASSIFY_BATCH: usize = 8;

/// What the server runs: a language model or a classifier.
pub enum Model {
    Language(Gpt),
    Classifier(GptClassifier),
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
            Self::Language(gpt) => ModelInfo::Language {
                n_positions: gpt.config().n_positions,
                vocab_size: gpt.config().vocab_size,
                parameters: gpt.config().num_params(),
            },
            Self::Classifier(classifier) => ModelInfo::Classifier {
                labels: classifier.labels().to_vec(),
                parameters: classifier.config().num_params(),
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
    /// Starts the model thread, runs `load` on it and waits until the model is ready.
    pub fn start<F>(load: F, capacity: usize) -> Result<Self>
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
                serve_jobs(&model, jobs);
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

/// The thread's loop: one job at a time, until the server drops the queue.
fn serve_jobs(model: &Model, jobs: Receiver<Queued>) {
    for Queued { job, _permit } in jobs.iter() {
        // A panic in one job (a bug, not bad input: requests are validated before they get here)
        // fails that request (its channel is dropped) and leaves the server running.
        if std::panic::catch_unwind(AssertUnwindSafe(|| run_job(model, job))).is_err() {
            eprintln!("error: a request panicked on the model thread; the server keeps running");
        }
    }
}

fn run_job(model: &Model, job: Job) {
    match (model, job) {
        (Model::Language(gpt), Job::Generate { prompt, config, events }) => generate(gpt, prompt, config, &events),
        (Model::Classifier(classifier), Job::Classify { texts, reply }) => {
            let _ = reply.send(classify_texts(classifier, &texts, CLASSIFY_BATCH).map_err(|e| format!("{e:#}")));
        }
        (_, Job::Generate { events, .. }) => {
            let _ = events.send(Event::Failed("this server runs a classifier, not a language model".into()));
        }
        (_, Job::Classify { reply, .. }) => {
            let _ = reply.send(Err("this server runs a language model, not a classifier".into()));
        }
    }
}

/// Runs one generation token by token, sending text as it becomes final; stops early when the
/// receiver is gone (the client disconnected).
fn generate(model: &Gpt, prompt: Vec<u32>, config: GenerateConfig, events: &mpsc::UnboundedSender<Event>) {
    let start = Instant::now();
    let fail = |error: gpt::GptError| {
        let _ = events.send(Event::Failed(error.to_string()));
    };
    let mut stream = match TokenStream::new(model, &[prompt], &config) {
        Ok(stream) => stream,
        Err(error) => return fail(error),
    };
    let mut steps = 0usize;
    loop {
        if events.is_closed() {
            eprintln!("request cancelled after {steps} tokens: the client disconnected");
            return;
        }
        match stream.next() {
            None => break,
            Some(Err(error)) => return fail(error),
            Some(Ok(tokens)) => {
                steps += 1;
                for token in tokens.into_iter().filter(|t| !t.text.is_empty()) {
                    let _ = events.send(Event::Text(token.text));
                }
            }
        }
    }
    match stream.finish() {
        Ok(mut completions) if !completions.is_empty() => {
            let completion = completions.swap_remove(0);
            let seconds = start.elapsed().as_secs_f64();
            eprintln!(
                "completed {} prompt + {} new tokens in {seconds:.2}s ({:.1} tokens/s, finish: {})",
                completion.prompt_ids.len(),
                completion.token_ids.len(),
                completion.token_ids.len() as f64 / seconds.max(1e-9),
                completion.finish_reason.as_str()
            );
            let _ = events.send(Event::Done(completion));
        }
        Ok(_) => {
            let _ = events.send(Event::Failed("the generation returned no completion".into()));
        }
        Err(error) => fail(error),
    }
}
