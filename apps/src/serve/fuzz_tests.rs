//! Fuzzing the request path: any body → parsing → the checks → a job for the model thread or an
//! OpenAI-shaped 400, never a panic, and never a job that overruns the context window or the
//! vocabulary. 10,000 cases per target (bytes, arbitrary JSON, and valid requests with one value
//! replaced).

use proptest::prelude::*;
use serde_json::{Value, json};

#[path = "../../../gpt/tests/it/common/fuzz.rs"]
mod fuzz;
use fuzz::{gpt2_tokenizer, json_value, mutated, number, object_with};

use crate::chat_format::ChatFormat;
use super::handlers::{Job, Limits, chat_job, classify_texts, completion_job};
use super::openai::{ApiError, ChatRequest, ClassifyRequest, CompletionRequest, parse_body};

const LIMITS: Limits = Limits { n_positions: 64, vocab_size: 50257, seed: 0 };
const CASES: u32 = 10_000;

const COMPLETION_FIELDS: &[&str] =
    &["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "stream", "stream_options"];
const CHAT_FIELDS: &[&str] = &[
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n",
    "stream", "stream_options",
];


fn assert_bad_request(error: &ApiError) {
    assert!(error.status == 400, "status {} for a bad body ({})", error.status, error.message);
    assert!(!error.message.is_empty());
    assert_eq!(error.body()["error"]["message"], error.message.as_str());
}

fn assert_job_fits(job: &Job) {
    assert!(job.prompt.iter().all(|&id| (id as usize) < LIMITS.vocab_size));
    assert!(job.prompt.len().max(1) + job.config.max_new_tokens <= LIMITS.n_positions, "the job overruns the context");
    assert!(job.config.sampling.temperature.is_finite());
}

fn check_completion(body: &[u8]) {
    match parse_body::<CompletionRequest>(body).and_then(|r| completion_job(&r, LIMITS, gpt2_tokenizer())) {
        Ok(job) => assert_job_fits(&job),
        Err(error) => assert_bad_request(&error),
    }
}

fn check_chat(body: &[u8], format: ChatFormat) {
    match parse_body::<ChatRequest>(body).and_then(|r| chat_job(&r, &format, LIMITS, gpt2_tokenizer())) {
        Ok(job) => assert_job_fits(&job),
        Err(error) => assert_bad_request(&error),
    }
}

fn check_classify(body: &[u8]) {
    match parse_body::<ClassifyRequest>(body).and_then(classify_texts) {
        Ok(texts) => assert!(!texts.is_empty()),
        Err(error) => assert_bad_request(&error),
    }
}

fn check_all(body: &[u8]) {
    check_completion(body);
    check_chat(body, ChatFormat::Plain);
    check_chat(body, ChatFormat::Alpaca);
    check_classify(body);
}

fn valid_completion() -> Value {
    json!({"model": "m", "prompt": "Hello", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
           "stop": ["\n"], "seed": 1, "n": 1, "stream": true, "stream_options": {"include_usage": true}})
}

fn valid_chat() -> Value {
    json!({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
           "max_completion_tokens": 8, "temperature": 0.0, "stop": "###", "stream": false})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_bytes_get_a_job_or_a_400(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_all(&body);
    }

    #[test]
    fn any_json_gets_a_job_or_a_400(value in json_value()) {
        check_all(value.to_string().as_bytes());
    }

    #[test]
    fn completion_shaped_json_gets_a_job_or_a_400(value in object_with(COMPLETION_FIELDS)) {
        check_completion(value.to_string().as_bytes());
    }

    #[test]
    fn chat_shaped_json_gets_a_job_or_a_400(value in object_with(CHAT_FIELDS)) {
        let body = value.to_string();
        check_chat(body.as_bytes(), ChatFormat::Plain);
        check_chat(body.as_bytes(), ChatFormat::Alpaca);
    }

    #[test]
    fn numbers_at_the_edges_get_a_job_or_a_400(values in proptest::collection::vec(proptest::option::of(number()), 6)) {
        // Every numeric field at once, each absent or any number (huge, negative, fractional).
        let (mut completion, mut chat) = (valid_completion(), valid_chat());
        for (field, value) in ["max_tokens", "temperature", "top_p", "top_k", "seed", "n"].into_iter().zip(values) {
            let chat_field = if field == "max_tokens" { "max_completion_tokens" } else { field };
            match value {
                Some(v) => {
                    completion[field] = v.clone();
                    chat[chat_field] = v;
                }
                None => {
                    completion.as_object_mut().unwrap().remove(field);
                    chat.as_object_mut().unwrap().remove(chat_field);
                }
            }
        }
        check_completion(completion.to_string().as_bytes());
        check_chat(chat.to_string().as_bytes(), ChatFormat::Plain);
    }

    #[test]
    fn nearly_valid_requests_get_a_job_or_a_400(
        completion in mutated(valid_completion()),
        chat in mutated(valid_chat()),
        cut in any::<proptest::sample::Index>(),
    ) {
        check_completion(completion.to_string().as_bytes());
        check_chat(chat.to_string().as_bytes(), ChatFormat::Alpaca);
        // The same bodies cut short (a client that stops sending).
        let text = completion.to_string();
        check_completion(&text.as_bytes()[..cut.index(text.len() + 1)]);
    }
}

#[test]
fn the_valid_requests_are_accepted() {
    let job = completion_job(&parse_body(valid_completion().to_string().as_bytes()).unwrap(), LIMITS, gpt2_tokenizer()).unwrap();
    assert_eq!(job.config.max_new_tokens, 8);
    assert!(job.stream && job.include_usage);
    let job = chat_job(&parse_body(valid_chat().to_string().as_bytes()).unwrap(), &ChatFormat::Alpaca, LIMITS, gpt2_tokenizer()).unwrap();
    assert_eq!(job.config.max_new_tokens, 8);
}
