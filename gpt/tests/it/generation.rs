//! Generation behaviour: batches with left/right padding equal solo runs, end-of-text and stop
//! strings, streaming, seeded sampling, and prompts longer than the context window.

use crate::common::*;
use gpt::Tokenizer;
use gpt::generate::{FinishReason, GenerateConfig, Padding, TokenStream, generate};
use gpt::generate::sampling::Sampling;

fn prompts() -> Vec<Vec<u32>> {
    let tok = Tokenizer::gpt2();
    vec![
        tok.encode("Every effort moves you"),
        tok.encode("The library opens at nine every morning, except on"),
        tok.encode("Hi"),
    ]
}

fn no_eos(max_new_tokens: usize) -> GenerateConfig {
    GenerateConfig { eos_tokens: vec![], ..GenerateConfig::greedy(max_new_tokens) }
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
    assert_ne!(sampled(1, true), sampled(2, true));
    // The fixture's random weights give near-flat logits, whose top-50 order shifts under
    // differences of 1e-3: on a GPU, where f32 matmuls run in TF32 and the cached and uncached
    // paths run other kernels, the draws part (greedy decoding checks the cache there).
    if !device_spec().is_gpu() {
        assert_eq!(sampled(1, true), sampled(1, false));
    }
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
    let out = generate(&model, &prompt, &GenerateConfig { eos_tokens: vec![eos], ..no_eos(20) }).unwrap().remove(0);
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

/// Continuous batching: requests with their own settings join a running batch at different
/// steps, some leave early (stop string, length, cancel), and each gets exactly what it gets alone.
#[test]
fn requests_joining_a_running_batch_generate_what_they_generate_alone() {
    use gpt::generate::continuous::ContinuousBatch;
    let model = tiny_model();
    let sampled = Sampling { temperature: 0.9, top_k: Some(40), top_p: Some(0.9) };
    let requests: Vec<(Vec<u32>, GenerateConfig)> = vec![
        (prompts()[0].clone(), no_eos(20)),
        (prompts()[1].clone(), GenerateConfig { sampling: sampled.clone(), seed: 7, ..no_eos(9) }),
        (prompts()[2].clone(), GenerateConfig { sampling: sampled, seed: 3, ..no_eos(14) }),
        (prompts()[1].clone(), no_eos(3)),
        (prompts()[2].clone(), GenerateConfig { stop: vec!["\n".into(), " the".into()], ..no_eos(25) }),
        (vec![], no_eos(5)),
    ];
    let solo: Vec<_> = requests.iter().map(|(p, c)| generate(&model, &[p.clone()], c).unwrap().remove(0)).collect();

    // Request i joins before step JOIN[i]; request 6 (a copy of 0) is cancelled at step 4.
    const JOIN: [usize; 6] = [0, 0, 2, 3, 3, 10];
    let mut batch = ContinuousBatch::new(&model, 8);
    let mut streamed = vec![String::new(); requests.len()];
    let mut done = vec![None; requests.len()];
    for step in 0..40 {
        for (i, (prompt, config)) in requests.iter().enumerate().filter(|(i, _)| JOIN[*i] == step) {
            assert!(batch.can_admit(prompt.len(), config.max_new_tokens));
            assert!(batch.admit(i as u64, prompt, config).unwrap());
        }
        if step == 1 {
            assert!(batch.admit(6, &requests[0].0, &requests[0].1).unwrap());
        }
        if step == 4 {
            batch.cancel(6);
        }
        if batch.is_empty() {
            continue;
        }
        for token in batch.step().unwrap() {
            if token.id < 6 {
                streamed[token.id as usize].push_str(&token.text);
            }
        }
        for (id, completion) in batch.take_finished() {
            assert!(id < 6, "the cancelled request does not finish");
            done[id as usize] = Some(completion);
        }
    }
    for (i, (got, want)) in done.into_iter().zip(&solo).enumerate() {
        let got = got.unwrap_or_else(|| panic!("request {i} did not finish"));
        assert_eq!(&got, want, "request {i}");
        assert_eq!(streamed[i], want.text, "request {i}: the streamed pieces add up to the text");
    }
    assert!(batch.is_empty());
}

#[test]
fn a_full_batch_or_a_full_context_makes_requests_wait() {
    use gpt::generate::continuous::ContinuousBatch;
    let model = tiny_model();
    let n_positions = model.config().n_positions;
    let mut batch = ContinuousBatch::new(&model, 2);
    assert!(batch.can_admit(n_positions - 10, 10), "an empty batch takes any request that fits the context");
    assert!(batch.admit(0, &prompts()[0], &no_eos(100)).unwrap());
    // A few cached positions + 100 to go: a 30-token prompt would need 30 + 100 > 128 positions.
    assert!(!batch.can_admit(30, 5));
    assert!(batch.can_admit(20, 5));
    assert!(batch.admit(1, &prompts()[2], &no_eos(5)).unwrap());
    assert!(!batch.can_admit(1, 1), "two rows at most");
    assert!(!batch.admit(2, &prompts()[2], &no_eos(5)).unwrap(), "no room: the request waits");
    let err = batch.admit(3, &[60_000], &no_eos(5)).unwrap_err().to_string();
    assert!(err.contains("60000") && err.contains("vocabulary"), "{err}");
}
