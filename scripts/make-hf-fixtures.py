#!/usr/bin/env python3
"""Make the reference fixtures in tests/fixtures/hf/ with Hugging Face transformers.

Runs where torch and transformers are installed (the fixtures in the repo were made with
transformers 5.17.0 and torch 2.11 on CPU, float32):

    python3 scripts/make-hf-fixtures.py --out tests/fixtures/hf [NAME ...]

For every requested name it builds a tiny random checkpoint with `save_pretrained`, re-draws every
floating tensor that the checkpoint stores (parameters and persistent buffers, see `redraw_value`),
applies the patches that make transformers' pure-PyTorch path compute what the original code
computes (see `patch_to_original`), and writes next to the checkpoint:

    input_ids.npy      int32 [B, T]  random ids (T is not a multiple of the Mamba-2 chunk size)
    logits.npy         float32 [B, T, V]  model(input_ids).logits
    greedy_prompt.npy  int32 [1, 17]  the first 17 ids of row 0
    greedy_out.npy     int32 [1, 17 + n]  generate(max_new_tokens=24, do_sample=False)

It then checks the fixture (cached greedy == uncached greedy, cached one-token decode logits ==
full-sequence logits, reloading the folder with from_pretrained gives the same logits, every
gated norm is the per-group form) and records the outcome in <out>/index.json, replacing entries
of the same name and keeping the others.
"""

import argparse
import json
import math
import os
import sys
import traceback
import types
import zlib

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
import transformers

PROMPT_LEN = 17
MAX_NEW_TOKENS = 24
BATCH = 2
TOL_REL = 1e-5  # transformers against itself (cached vs uncached, reloaded vs in memory)

# Each fixture: config class, model class, sequence length, config kwargs.
FIXTURES = {
    "bamba_groups": dict(
        config="BambaConfig", model="BambaForCausalLM", length=83,
        kwargs=dict(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, attn_layer_indices=[2],
            mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4,
            mamba_expand=2, mamba_chunk_size=32, mamba_conv_bias=True, mamba_proj_bias=True,
            attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        ),
    ),
    "jamba_tiny": dict(
        # layers: 0 mamba+MLP, 1 attention+MoE, 2 mamba+MLP, 3 mamba+MoE
        config="JambaConfig", model="JambaForCausalLM", length=53,
        kwargs=dict(
            vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
            expert_layer_period=2, expert_layer_offset=1, attn_layer_period=4, attn_layer_offset=1,
            mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank="auto",
            mamba_conv_bias=True, mamba_proj_bias=False, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_mamba_kernels=False,
        ),
    ),
    "falcon_h1_tiny": dict(
        # mamba_d_ssm (96) differs from mamba_expand * hidden_size (128) and head_dim (24) from
        # hidden_size / num_attention_heads (16), as in the released checkpoints.
        config="FalconH1Config", model="FalconH1ForCausalLM", length=45,
        kwargs=dict(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=24,
            mamba_d_ssm=96, mamba_n_heads=6, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16,
            mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16, mamba_conv_bias=True,
            mamba_proj_bias=False, mamba_rms_norm=True, mamba_norm_before_gate=False,
            projectors_bias=False, attention_bias=False, mlp_bias=False, rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
            embedding_multiplier=2.5, lm_head_multiplier=0.35, attention_in_multiplier=0.8,
            attention_out_multiplier=0.6, key_multiplier=0.45, ssm_in_multiplier=1.25,
            ssm_out_multiplier=0.7, ssm_multipliers=[0.35, 0.25, 0.6, 0.5, 1.4],
            mlp_multipliers=[0.9, 0.55],
        ),
    ),
    "falcon_h1_nonorm": dict(
        # mamba_rms_norm false (plain silu(z) gate), mamba_d_ssm null (= expand * hidden),
        # every optional bias present, tied embeddings.
        config="FalconH1Config", model="FalconH1ForCausalLM", length=45,
        kwargs=dict(
            vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
            mamba_d_ssm=None, mamba_n_heads=8, mamba_d_head="auto", mamba_n_groups=4,
            mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=32,
            mamba_conv_bias=True, mamba_proj_bias=True, mamba_rms_norm=False,
            projectors_bias=True, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            embedding_multiplier=1.6, lm_head_multiplier=0.5, attention_in_multiplier=1.3,
            attention_out_multiplier=0.75, key_multiplier=0.6, ssm_in_multiplier=0.85,
            ssm_out_multiplier=1.2, ssm_multipliers=[0.7, 1.3, 0.45, 0.9, 0.6],
            mlp_multipliers=[1.15, 0.65],
        ),
    ),
    "nemotron_h_tiny": dict(
        # pattern M E * M - E; Mamba inner size 6 * 16 = 96 differs from expand * hidden (128).
        # time_step_min 0.01 lies inside the drawn dt range, so clamping dt to it (as transformers
        # does) visibly changes the logits; the original clamps to time_step_limit only.
        config="NemotronHConfig", model="NemotronHForCausalLM", length=45,
        kwargs=dict(
            vocab_size=512, hidden_size=64, hybrid_override_pattern="ME*M-E",
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
            mlp_hidden_act="relu2", ssm_state_size=16, mamba_num_heads=6, mamba_head_dim=16,
            n_groups=2, conv_kernel=4, expand=2, chunk_size=16, use_conv_bias=True,
            use_bias=False, mamba_hidden_act="silu", n_routed_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=32, moe_shared_expert_intermediate_size=64, n_group=2,
            topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
            layer_norm_epsilon=1e-5, time_step_min=0.01, time_step_max=0.1,
            time_step_limit=[0.0, float("inf")], tie_word_embeddings=False,
        ),
    ),
    "xlstm_tiny": dict(
        # xLSTM-7B layout (mLSTM blocks, SwiGLU feed-forward). 45 tokens = two chunks of 16 through
        # transformers' chunkwise kernel and 13 through its recurrent one; the 17-token greedy
        # prompt is one chunk and one step. Small caps so that both soft caps bend their inputs.
        config="xLSTMConfig", model="xLSTMForCausalLM", length=45,
        kwargs=dict(
            vocab_size=512, hidden_size=128, num_hidden_layers=2, num_heads=4, qk_dim_factor=0.5,
            v_dim_factor=1.0, chunk_size=16, gate_soft_cap=5.0, output_logit_soft_cap=1.5,
            ffn_proj_factor=2.667, ffn_round_up_to_multiple_of=64, norm_eps=1e-6, eps=1e-6,
            use_bias=False, weight_mode="single", mode="inference", tie_word_embeddings=False,
        ),
    ),
}

RECIPE = (
    "re-drawn from N(0,1) after construction, for every floating tensor the checkpoint stores: "
    "A_log = log(1..n along its last axis) + 0.1 N; dt_bias and Mamba-1 dt_proj.bias = "
    "softplus^-1(dt) with log dt ~ U(log 1e-3, log 1e-1); other biases (incl. "
    "e_score_correction_bias) 0.1 N; D and 1-D weights (norms) 1 + 0.1 N; tensors of 2+ dims "
    "0.5 N / sqrt(last dim), except xLSTM's gate pre-activations (igate_preact, fgate_preact): weights "
    "3 N / sqrt(last dim) and biases 2 N, so that the gate soft cap and the stabiliser's max both act. "
    "Non-persistent buffers (rotary inv_freq, Falcon-H1 mup_vector) are "
    "derived from the config and left as built."
)


def redraw_value(name, tensor, gen):
    """A fresh value for one stored tensor (see RECIPE)."""
    leaf = name.rsplit(".", 1)[-1]
    normal = torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
    if ".igate_preact." in name or ".fgate_preact." in name:
        return normal * (3.0 / math.sqrt(tensor.shape[-1]) if tensor.dim() >= 2 else 2.0)
    if leaf == "A_log":
        base = torch.log(torch.arange(1, tensor.shape[-1] + 1, dtype=torch.float64))
        return base.expand(tensor.shape) + 0.1 * normal
    if leaf == "dt_bias" or name.endswith("dt_proj.bias"):
        uniform = torch.rand(tensor.shape, generator=gen, dtype=torch.float64)
        dt = torch.exp(uniform * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))
        return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
    if tensor.dim() >= 2:
        return normal * (0.5 / math.sqrt(tensor.shape[-1]))
    if leaf.endswith("bias"):
        return 0.1 * normal
    if leaf in ("D", "weight"):
        return 1.0 + 0.1 * normal
    raise ValueError(f"no re-draw rule for {name} {tuple(tensor.shape)}")


def redraw(model, gen):
    seen = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if not tensor.is_floating_point() or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        with torch.no_grad():
            tensor.copy_(redraw_value(name, tensor, gen).to(tensor.dtype))


# ---------------------------------------------------------------------------------------------
# Patches: where transformers' pure-PyTorch path departs from the original code.

WHOLE_WIDTH_GATED_NORMS = ("BambaRMSNormGated", "MambaRMSNormGated")
GATED_NORMS = WHOLE_WIDTH_GATED_NORMS + ("FalconH1RMSNormGated", "Zamba2RMSNormGated")


def grouped_gated_rmsnorm(self, hidden_states, gate=None):
    """mamba_ssm's RMSNormGated(group_size=d/n_groups, norm_before_gate=False)."""
    dtype = hidden_states.dtype
    x = hidden_states.to(torch.float32)
    if gate is not None:
        x = x * F.silu(gate.to(torch.float32))
    *lead, width = x.shape
    x = x.view(*lead, self.n_groups, width // self.n_groups)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * x.view(*lead, width).to(dtype)


def mixers_with_gated_norm(model):
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if norm is not None and type(norm).__name__ in GATED_NORMS and hasattr(module, "n_groups"):
            yield module


def patch_to_original(model):
    """Returns (gated norms patched to the per-group form, Mamba-2 dt limits patched)."""
    norms = 0
    for mixer in mixers_with_gated_norm(model):
        if type(mixer.norm).__name__ in WHOLE_WIDTH_GATED_NORMS:
            mixer.norm.n_groups = mixer.n_groups
            mixer.norm.forward = types.MethodType(grouped_gated_rmsnorm, mixer.norm)
            norms += 1
    dt_limits = 0
    if model.config.model_type == "nemotron_h":
        # transformers clamps dt to (time_step_min, inf); the original clamps to time_step_limit.
        for module in model.modules():
            if type(module).__name__ == "NemotronHMamba2Mixer":
                module.time_step_limit = tuple(float(v) for v in model.config.time_step_limit)
                dt_limits += 1
    return norms, dt_limits


def gated_norm_check(model, gen):
    """Max |module - per-group float64 reference| over every gated norm (random inputs)."""
    worst = 0.0
    for mixer in mixers_with_gated_norm(model):
        norm = mixer.norm
        width = norm.weight.shape[0]
        x = torch.randn(2, 5, width, generator=gen)
        z = torch.randn(2, 5, width, generator=gen)
        with torch.no_grad():
            got = norm(x, z).double()
        xd, zd, w = x.double(), z.double(), norm.weight.detach().double()

        def group_rms(v):
            g = v.view(2, 5, mixer.n_groups, width // mixer.n_groups)
            return (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)).view(2, 5, width)

        if getattr(norm, "norm_before_gate", False):
            ref = w * group_rms(xd) * F.silu(zd)
        else:
            ref = w * group_rms(xd * F.silu(zd))
        worst = max(worst, (got - ref).abs().max().item())
    return worst


def router_choice_effects(model, input_ids):
    """Nemotron-H: fraction of token routings that the correction bias / the group limit change."""
    captured = []
    hooks = [m.register_forward_hook(lambda mod, args, out: captured.append((mod, args[0], out[2])))
             for m in model.modules() if type(m).__name__ == "NemotronHTopkRouter"]
    with torch.no_grad():
        model(input_ids)
    for h in hooks:
        h.remove()
    bias_changed = group_changed = total = mismatched = 0
    for router, hidden, chosen in captured:
        hidden = hidden.reshape(-1, router.hidden_dim).float()
        scores = F.linear(hidden, router.weight.float()).sigmoid()
        k, n_group = router.top_k, router.num_group
        per_group = router.num_experts // n_group

        def pick(s, group_limited):
            if group_limited:
                group_scores = s.view(-1, n_group, per_group).topk(2, dim=-1)[0].sum(-1)
                keep = torch.zeros_like(group_scores).scatter_(1, group_scores.topk(router.topk_group, dim=-1)[1], 1)
                s = s.masked_fill(~keep.bool().repeat_interleave(per_group, dim=1), float("-inf"))
            return s.topk(k, dim=-1)[1].sort(-1)[0]

        actual = chosen.sort(-1)[0]
        mismatched += (pick(scores + router.e_score_correction_bias, True) != actual).any(-1).sum().item()
        bias_changed += (pick(scores, True) != actual).any(-1).sum().item()
        group_changed += (pick(scores + router.e_score_correction_bias, False) != actual).any(-1).sum().item()
        total += actual.shape[0]
    return {"routings": total, "recomputed_choice_mismatches": mismatched,
            "bias_changes_choice": bias_changed / total,
            "group_limit_changes_choice": group_changed / total}


# ---------------------------------------------------------------------------------------------
# Reference outputs and checks.

def greedy_uncached(model, prompt, eos):
    ids, margins = prompt, []
    with torch.no_grad():
        for _ in range(MAX_NEW_TOKENS):
            last = model(ids, use_cache=False).logits[:, -1].double()
            top2 = last.topk(2, dim=-1)[0]
            margins.append((top2[0, 0] - top2[0, 1]).item())
            nxt = last.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=-1)
            if nxt.item() == eos:
                break
    return ids, min(margins)


def cached_forward(model, ids, start, cache):
    """model(ids) at positions start.. continuing from cache (None: a fresh one); (logits, cache).
    xLSTM keeps its recurrent state in cache_params and has no positions."""
    if model.config.model_type == "xlstm":
        out = model(input_ids=ids, cache_params=cache, use_cache=True)
        return out.logits, out.cache_params
    positions = torch.arange(start, start + ids.shape[1])[None]
    out = model(input_ids=ids, position_ids=positions, past_key_values=cache, use_cache=True)
    return out.logits, out.past_key_values


def decode_logits_max_rel(model, row, ref_logits):
    """Prefill PROMPT_LEN tokens with a cache, then feed the rest one token at a time."""
    length = row.shape[1]
    scale = np.abs(ref_logits).max()
    with torch.no_grad():
        logits, cache = cached_forward(model, row[:, :PROMPT_LEN], 0, None)
        got = [logits[0, -1]]
        for t in range(PROMPT_LEN, length):
            logits, cache = cached_forward(model, row[:, t:t + 1], t, cache)
            got.append(logits[0, -1])
    got = torch.stack(got).numpy()
    return float(np.abs(got - ref_logits[0, PROMPT_LEN - 1:]).max() / scale)


def build(name, spec, out_dir):
    seed = zlib.crc32(name.encode()) & 0x7FFFFFFF
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config_cls = getattr(transformers, spec["config"])
    model_cls = getattr(transformers, spec["model"])
    kwargs = spec["kwargs"]
    config = config_cls(**kwargs, attn_implementation="eager", experts_implementation="eager")
    model = model_cls(config).eval()
    redraw(model, gen)

    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    with open(os.path.join(folder, "config.json")) as f:
        saved_config = json.load(f)

    norms_patched, dt_patched = patch_to_original(model)
    entry = {
        "name": name,
        "config_class": spec["config"],
        "model_class": spec["model"],
        "dropped_kwargs": {k: v for k, v in kwargs.items() if k not in saved_config},
        "gated_norm_groups": next((m.n_groups for m in mixers_with_gated_norm(model)), None),
        "gated_norms_patched": norms_patched,
        "dt_limits_patched": dt_patched,
    }

    vocab = config.vocab_size
    eos = config.eos_token_id
    input_ids = torch.randint(3, vocab, (BATCH, spec["length"]), generator=gen)  # no pad/bos/eos
    with torch.no_grad():
        logits = model(input_ids, use_cache=False).logits.float().numpy()
    prompt = input_ids[:1, :PROMPT_LEN]
    with torch.no_grad():
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    greedy_nocache, margin = greedy_uncached(model, prompt, eos)

    np.save(os.path.join(folder, "input_ids.npy"), input_ids.numpy().astype(np.int32))
    np.save(os.path.join(folder, "logits.npy"), logits.astype(np.float32))
    np.save(os.path.join(folder, "greedy_prompt.npy"), prompt.numpy().astype(np.int32))
    np.save(os.path.join(folder, "greedy_out.npy"), greedy.numpy().astype(np.int32))

    reloaded = model_cls.from_pretrained(folder, attn_implementation="eager",
                                         experts_implementation="eager").eval()
    patch_to_original(reloaded)
    with torch.no_grad():
        reloaded_logits = reloaded(input_ids, use_cache=False).logits.float().numpy()

    checks = {
        "greedy_cache_matches_nocache": bool(torch.equal(greedy, greedy_nocache)),
        "decode_logits_max_rel": decode_logits_max_rel(model, input_ids[:1], logits),
        "reload_logits_max_rel": float(np.abs(reloaded_logits - logits).max() / np.abs(logits).max()),
        "gated_norm_check_max_abs": gated_norm_check(model, gen),
        "greedy_new_tokens": int(greedy.shape[1] - PROMPT_LEN),
        "greedy_min_top2_margin": margin,
    }
    if config.model_type == "nemotron_h":
        checks["router"] = router_choice_effects(model, input_ids)
    ok = (checks["greedy_cache_matches_nocache"] and checks["decode_logits_max_rel"] < TOL_REL
          and checks["reload_logits_max_rel"] < TOL_REL and checks["gated_norm_check_max_abs"] < 1e-5
          and checks.get("router", {}).get("recomputed_choice_mismatches", 0) == 0)
    entry.update(checks)
    entry.update({
        "ok": bool(ok),
        "batch": BATCH,
        "length": spec["length"],
        "params": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "attn_implementation": "eager",
        "experts_implementation": "eager",
        "recipe": RECIPE,
        "config": saved_config,
    })
    return entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="fixture folder (holds index.json)")
    parser.add_argument("names", nargs="*", default=list(FIXTURES), help="fixtures to make")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in FIXTURES]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}; known: {list(FIXTURES)}")

    index_path = os.path.join(args.out, "index.json")
    index = {"transformers": transformers.__version__, "torch": torch.__version__, "fixtures": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    if versions != {k: index[k] for k in versions}:
        print(f"warning: {index_path} names other versions; the new entries record their own")

    failed = []
    for name in args.names:
        try:
            entry = build(name, FIXTURES[name], args.out)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        if versions != {k: index[k] for k in versions}:
            entry["versions"] = versions
        summary = {k: entry[k] for k in entry if k not in ("config", "recipe")}
        print(json.dumps(summary), flush=True)
        if not entry["ok"]:
            failed.append(name)
        names = [e["name"] for e in index["fixtures"]]
        if name in names:
            index["fixtures"][names.index(name)] = entry
        else:
            index["fixtures"].append(entry)
        with open(index_path, "w") as f:
            json.dump(index, f, indent=1)
            f.write("\n")
    if failed:
        sys.exit(f"checks failed: {failed}")


if __name__ == "__main__":
    main()
