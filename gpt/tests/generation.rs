//! Generation behaviour: batches with left/right padding equal solo runs, end-of-text and stop
//! strings, streaming, seeded sampling, and prompts longer than the context window.

mod common;

use common::*;
use gpt::Tokenizer;
use gpt::generate::{FinishReason, GenerateConfig, Padding, TokenStream, generate};
use gpt::sampling::Sampling;

fn prompts() -> Vec<Vec<u32>> {
    let tok = Tokenizer::gpt2();
    vec![
        tok.encode("Every effort moves you"),
        tok.encode("The library opens at nine every morning, except on"),
        tok.encode("Hi"),
    ]
}

fn no_eos(max_new_tokens: usize) -> GenerateConfig {
    GenerateConfig { eos_token: None, ..GenerateConfig::greedy(max_new_tokens) }
}

#[test]
fn a_padded_batch_generates_what_each_prompt_generates_alone() {
    let model = tiny_model();
    let config = no_eos(12);
    let solo: Vec<Vec<u32>> = prompts().iter().map(|p| generate(&model, &[p.clone()], &config).unwrap()[0].token_ids.clone()).collect();
    for padding in [Padding::Left, Padding::Right] {
        for use_cache in [true, false] {
            let batch = generate(&model, &prompts(), &GenerateConfig { padding, use_cache, ..config.clone() }).unwrap();
            for (row, (got, want)) in batch.iter().zip(&solo).enumerate() {
                assert_eq!(&got.token_ids, want, "row {row}, {padding:?} padding, cache {use_cache}");
                assert_eq!(got.prompt_ids, prompts()[row]);
            }
        }
    }
}

#[test]
fn sampling_is_seeded_and_the_cache_does_not_change_it() {
    let model = tiny_model();
    let sampled = |seed, use_cache| {
        let sampling = Sampling { temperature: 1.0, top_k: Some(50), top_p: Some(0.95) };
        let config = GenerateConfig { sampling, seed, use_cache, ..no_eos(15) };
        generate(&model, &prompts()[..1], &config).unwrap()[0].token_ids.clone()
    };
    assert_eq!(sampled(1, true), sampled(1, true));
    assert_eq!(sampled(1, true), sampled(1, false));
    assert_ne!(sampled(1, true), sampled(2, true));
}

#[test]
fn stops_at_end_of_text_and_at_stop_strings() {
    let model = tiny_model();
    let prompt = vec![prompts()[0].clone()];
    let full = generate(&model, &prompt, &no_eos(20)).unwrap().remove(0);
    // The fixture model's greedy continuation: 40276, 19634, 35005, then 50156 repeated.
    assert_eq!(full.finish_reason, FinishReason::Length);
    assert_eq!(full.token_ids.len(), 20);

    // Pretend its third token is end-of-text: the row stops before it.
    let eos = full.token_ids[2];
    let out = generate(&model, &prompt, &GenerateConfig { eos_token: Some(eos), ..no_eos(20) }).unwrap().remove(0);
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(out.token_ids, full.token_ids[..2]);
    assert_eq!(out.text, Tokenizer::gpt2().decode(&full.token_ids[..2]).unwrap());

    // A stop string inside the third token's text cuts the text just before it.
    let tok = Tokenizer::gpt2();
    let before = tok.decode(&full.token_ids[..2]).unwrap();
    let third = tok.decode(&full.token_ids[2..3]).unwrap();
    let stop = third.trim().chars().take(3).collect::<String>();
    let out = generate(&model, &prompt, &GenerateConfig { stop: vec![stop.clone()], ..no_eos(20) }).unwrap().remove(0);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.token_ids.len(), 3);
    assert_eq!(out.text, before, "stop string {stop:?}");
}

#[test]
fn streaming_yields_the_same_tokens_and_text() {
    let model = tiny_model();
    let config = no_eos(10);
    let batch = generate(&model, &prompts(), &config).unwrap();
    let mut tokens = vec![Vec::new(); 3];
    let mut texts = vec![String::new(); 3];
    let mut steps = 0;
    for step in TokenStream::new(&model, &prompts(), &config).unwrap() {
        steps += 1;
        for t in step.unwrap() {
            tokens[t.row].push(t.token);
            texts[t.row].push_str(&t.text);
        }
    }
    assert_eq!(steps, 10);
    for row in 0..3 {
        assert_eq!(tokens[row], batch[row].token_ids);
        assert_eq!(texts[row], batch[row].text);
    }
}

#[test]
fn streaming_holds_back_a_possible_stop_string() {
    let model = tiny_model();
    let prompt = vec![prompts()[0].clone()];
    let full = generate(&model, &prompt, &no_eos(20)).unwrap().remove(0);
    // Stop at the text of tokens 3..5 (the first two repeats of one token): while the first copy
    // arrives it could be the start of the stop string, so it must be held back, not streamed.
    let tok = Tokenizer::gpt2();
    let stop = tok.decode(&full.token_ids[3..5]).unwrap();
    let config = GenerateConfig { stop: vec![stop.clone()], ..no_eos(20) };
    let streamed: String =
        TokenStream::new(&model, &prompt, &config).unwrap().flat_map(|s| s.unwrap()).map(|t| t.text).collect();
    let batch = generate(&model, &prompt, &config).unwrap().remove(0);
    assert_eq!(streamed, batch.text);
    assert!(!streamed.contains(&stop));
}

#[test]
fn a_prompt_longer_than_the_context_keeps_its_end() {
    let model = tiny_model();
    let n_positions = model.config().n_positions; // 128
    let long: Vec<u32> = (0..200).map(|i| 100 + i as u32).collect();
    let out = generate(&model, &[long.clone()], &no_eos(8)).unwrap().remove(0);
    assert_eq!(out.prompt_ids, long[long.len() - (n_positions - 8)..]);
    assert_eq!(out.token_ids.len(), 8);
    let reference = generate(&model, &[out.prompt_ids.clone()], &no_eos(8)).unwrap().remove(0);
    assert_eq!(out.token_ids, reference.token_ids);
}

#[test]
fn invalid_requests_are_errors() {
    let model = tiny_model();
    let err = |config: GenerateConfig, prompts: &[Vec<u32>]| generate(&model, prompts, &config).unwrap_err().to_string();
    assert!(err(no_eos(128), &prompts()).contains("max_new_tokens"));
    assert!(err(no_eos(4), &[vec![60000]]).contains("60000"));
    assert!(err(no_eos(4), &[]).contains("no prompts"));
    assert!(err(GenerateConfig { stop: vec![String::new()], ..no_eos(4) }, &prompts()).contains("stop strings"));
    let hot = GenerateConfig { sampling: Sampling { temperature: -0.5, top_k: None, top_p: None }, ..no_eos(4) };
    assert!(err(hot, &prompts()).contains("temperature"));
    // An empty prompt starts from <|endoftext|>.
    let out = generate(&model, &[vec![]], &no_eos(3)).unwrap().remove(0);
    assert_eq!(out.prompt_ids, [gpt::EOT_TOKEN]);
}
