#!/usr/bin/env python3
"""Times transformers' xLSTM beside `ssm generate --device cuda` on the same random weights, on this GPU.

Writes a random xLSTM checkpoint folder at a published layout with transformers (BF16, transformers'
own init), times transformers on it (its native PyTorch mLSTM kernels: prefill of one prompt, then
greedy decoding with its cache through `generate`), then runs `ssm generate --device cuda` on the same
folder and prompt ids and prints both as a table. The model's own outputs are random; only speed is
compared.

  python3 scripts/gpu-xlstm-peer.py --ssm build/release/bin/ssm --dir /tmp/xlstm [--shape 7b] [--prompt 2048] [--new 128]

Needs torch and transformers (5.x)."""
import argparse
import json
import os
import re
import subprocess
import time

SHAPES = {
    # NX-AI/xLSTM-7b's config.json layout.
    "7b": dict(hidden_size=4096, embedding_dim=4096, num_blocks=32, num_hidden_layers=32, num_heads=8,
               vocab_size=50304),
    # The same layout at ~350M parameters.
    "350m": dict(hidden_size=1024, embedding_dim=1024, num_blocks=24, num_hidden_layers=24, num_heads=4,
                 vocab_size=50304),
}
COMMON = dict(qk_dim_factor=0.5, v_dim_factor=1.0, ffn_proj_factor=2.667, ffn_round_up_to_multiple_of=64,
              chunk_size=64, gate_soft_cap=15.0, output_logit_soft_cap=30.0, eps=1e-6, norm_eps=1e-6,
              use_bias=False, add_out_norm=True, norm_reduction_force_float32=True, tie_word_embeddings=False,
              mode="inference", chunkwise_kernel="chunkwise--native_autograd",
              sequence_kernel="native_sequence__native", step_kernel="native", return_last_states=True,
              use_cache=True, weight_mode="single", bos_token_id=0, eos_token_id=2, pad_token_id=1)


def cuda_time(fn, repeats):
    import torch
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ssm", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--new", type=int, default=128)
    args = parser.parse_args()

    import numpy as np
    import torch
    from transformers import xLSTMConfig, xLSTMForCausalLM

    torch.manual_seed(0)
    config = xLSTMConfig(**SHAPES[args.shape], **COMMON)
    with torch.device("cuda"):
        model = xLSTMForCausalLM(config).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.dir)
    ids = torch.randint(3, config.vocab_size, (1, args.prompt), device="cuda")
    np.save(os.path.join(args.dir, "prompt_ids.npy"), ids.cpu().numpy().astype(np.int32))

    with torch.inference_mode():
        prefill = cuda_time(lambda: model(ids), 3)
        short = cuda_time(lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False), 2)
        long = cuda_time(lambda: model.generate(ids, max_new_tokens=args.new + 1, min_new_tokens=args.new + 1,
                                                do_sample=False), 2)
    peer_decode = (long - short) / args.new
    peak = torch.cuda.max_memory_allocated() / 2**20
    del model
    torch.cuda.empty_cache()

    run = subprocess.run([args.ssm, "generate", "--device", "cuda", "--model", args.dir, "--prompt-ids",
                          os.path.join(args.dir, "prompt_ids.npy"), "--max-new-tokens", str(args.new),
                          "--temperature", "0", "--ignore-eos"], capture_output=True, text=True)
    print(run.stderr[-3000:])
    if run.returncode != 0:
        raise SystemExit(f"ssm generate failed ({run.returncode})")
    ours = {}
    for name in ("prefill", "decode"):
        found = re.search(name + r"[^\n]*?([0-9][0-9,.]*) tok/s", run.stderr)
        ours[name] = float(found.group(1).replace(",", "")) if found else float("nan")

    peer = {"prefill": args.prompt / prefill, "decode": 1.0 / peer_decode}
    print(f"| xLSTM {args.shape} ({params / 1e9:.2f}B params, BF16) | ssm.cpp | transformers {__import__('transformers').__version__} | x |")
    print("| --- | --- | --- | --- |")
    for name, unit in (("prefill", f"1 x {args.prompt}"), ("decode", "batch 1")):
        print(f"| {name} tok/s ({unit}) | {ours[name]:,.0f} | {peer[name]:,.0f} | {ours[name] / peer[name]:.2f}x |")
    print(f"transformers: prefill {prefill * 1e3:.1f} ms, decode {peer_decode * 1e3:.2f} ms/token, peak {peak:.0f} MiB")
    json.dump({"shape": args.shape, "prompt": args.prompt, "new": args.new, "ours": ours, "peer": peer},
              open(os.path.join(args.dir, "xlstm-peer.json"), "w"))


if __name__ == "__main__":
    main()
