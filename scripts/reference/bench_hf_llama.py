#!/usr/bin/env python3
"""PyTorch + transformers baseline for Llama-family decoding and prefill, the shapes of llmfs's
`random:<preset>` models (random init, fp32, batch 1, eager attention as llmfs computes it; sdpa
also timed). Optional: nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/bench_hf_llama.py --preset smollm2-135m --threads 2 [--prefill 512] [--reps 3]

Prints one JSON line: HF `generate` (16-token prompt + 128 greedy new tokens, KV cache) tok/s, the
prefill of --prefill tokens in s, peak RSS, and a matmul calibration before and after.
"""

import argparse
import json
import resource
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

# The same shapes as llmfs's presets (gpt/src/models/llama/config.rs).
PRESETS = {
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True),
    "smollm2-360m": dict(model_type="llama", vocab_size=49152, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True),
    "qwen3-0.6b": dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True),
    "llama-3.2-1b": dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=500000.0,
                         rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                                           original_max_position_embeddings=8192, rope_type="llama3")),
}
# The first 16 GPT-2 tokens of the baseline paragraph (llmfs's bench PROMPT), valid ids in every vocabulary here.
PROMPT = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632, 438, 2016, 257]


def calib() -> float:
    a, b = torch.randn(1024, 768), torch.randn(768, 3072)
    times = []
    for i in range(12):
        t = time.perf_counter()
        a @ b
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * 1024 * 768 * 3072 / sorted(times)[len(times) // 2] / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m", choices=sorted(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c0 = calib()
    settings = dict(PRESETS[args.preset])
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=args.attn, dtype=torch.float32).eval()
    x = torch.tensor([PROMPT])
    n_new = 128

    def gen(n: int) -> float:
        cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n, min_new_tokens=n, use_cache=True,
                               eos_token_id=None, pad_token_id=0)
        with torch.no_grad():
            t = time.perf_counter()
            out = model.generate(x, generation_config=cfg)
            dt = time.perf_counter() - t
        assert out.shape[1] == len(PROMPT) + n
        return dt

    long_prompt = torch.tensor([(PROMPT * (args.prefill // len(PROMPT) + 1))[: args.prefill]])

    def prefill() -> float:
        with torch.no_grad():
            t = time.perf_counter()
            model(long_prompt)
            return time.perf_counter() - t

    gen(8)
    prefill()
    decode = sorted(gen(n_new) for _ in range(args.reps))[args.reps // 2]
    pre = sorted(prefill() for _ in range(args.reps))[args.reps // 2]
    print(json.dumps({
        "preset": args.preset, "threads": torch.get_num_threads(), "attn": args.attn, "torch": torch.__version__,
        "generate": {"new_tokens": n_new, "s": decode, "tokens_per_s": n_new / decode},
        "prefill": {"prompt_len": args.prefill, "s": pre, "tokens_per_s": args.prefill / pre},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "calib_gflops_before": c0, "calib_gflops_after": calib(),
    }))


if __name__ == "__main__":
    main()
