#!/usr/bin/env python3
"""Times the scan peer of `ssm bench --device cuda` on this machine, so that the bench's ratios are
against a figure measured in the same run rather than the stored one: mamba_ssm's Triton SSD
(`mamba_chunk_scan_combined`) at the bench's shape (batch 1, H 32, P 64, N 128, one group, BF16,
chunk 256, with D, dt_bias and softplus), forward and forward + backward, at 4K / 16K / 64K / 100K
tokens; and, where the source has Mamba-3, its Triton SISO forward (`mamba3_siso_combined`) at H 32, P 64,
N 128 with 32 rotation angles. Medians of CUDA-event-timed calls after warm-up, each call both as Python launches it and
replayed from a CUDA graph (no launch gaps); the faster of the two is the peer's time. Writes JSON for
`ssm bench --peer-times`.

  python3 scripts/gpu-peers.py --out peers.json [--mamba-src DIR]

--mamba-src: a checkout of github.com/state-spaces/mamba; its Python and Triton code is loaded without
the package's __init__, which imports the compiled extensions that this peer does not use. einops
comes from DIR too when it holds a copy, else from the Python installation. Without --mamba-src an
installed mamba_ssm is used. Needs torch and triton."""
import argparse
import datetime
import json
import os
import statistics
import sys
import types

LENGTHS = [4096, 16384, 65536, 102400]
HEADS, HEAD_DIM, STATE, CHUNK = 32, 64, 128, 256


def load_peer(src):
    if src:
        if not os.path.isfile(os.path.join(src, "mamba_ssm", "ops", "triton", "ssd_combined.py")):
            sys.exit(f"gpu-peers: {src} holds no mamba_ssm/ops/triton/ssd_combined.py (a checkout of state-spaces/mamba?)")
        sys.path.insert(0, src)
        for package in ["mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.utils"]:
            module = types.ModuleType(package)
            module.__path__ = [os.path.join(src, *package.split("."))]
            sys.modules[package] = module
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    version = "?"
    init = os.path.join(src, "mamba_ssm", "__init__.py") if src else None
    if init and os.path.isfile(init):
        for line in open(init):
            if line.startswith("__version__"):
                version = line.split("=")[1].strip().strip('"')
    elif not src:
        import mamba_ssm
        version = mamba_ssm.__version__
    return mamba_chunk_scan_combined, version


def median_ms(torch, work, repeats):
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def eager_and_graphed_ms(torch, work, repeats):
    """(eager ms, graphed ms or None when the calls cannot be captured)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: Triton's compilation and autotuning happen here
        for _ in range(3):
            work()
    torch.cuda.current_stream().wait_stream(side)
    eager = median_ms(torch, work, repeats)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            work()
        graphed = median_ms(torch, graph.replay, repeats)
    except RuntimeError as error:
        print(f"  (not captured in a CUDA graph: {str(error).splitlines()[0]})", flush=True)
        graphed = None
    return eager, graphed


def time_mamba3(torch, bf16, device):
    """mamba_ssm's Triton Mamba-3 (SISO) forward, `mamba3_siso_combined`, at the bench's Mamba-3 shape (batch 1, H 32,
    P 64, N 128, 32 rotation angles, one B/C group, BF16, D, no gate): ms at each length, or None when the source
    has no Mamba-3. Its inputs as modules/mamba3.py makes them (A·dt and dt in F32, angles F32 per head); the
    elementwise ops that make them are not timed."""
    try:
        from mamba_ssm.ops.triton.mamba3.mamba3_siso_combined import mamba3_siso_combined
    except ImportError as error:
        print(f"(no Mamba-3 peer: {error})", flush=True)
        return None
    angles_count, times = STATE // 4, []
    for length in LENGTHS:
        q = torch.randn(1, length, 1, STATE, device=device, dtype=bf16)
        k = torch.randn(1, length, 1, STATE, device=device, dtype=bf16)
        v = torch.randn(1, length, HEADS, HEAD_DIM, device=device, dtype=bf16)
        dt = torch.nn.functional.softplus(torch.randn(1, HEADS, length, device=device) - 3.0)
        adt = -dt * (1.0 + torch.rand(1, HEADS, length, device=device))
        trap = torch.randn(1, HEADS, length, device=device, dtype=bf16)
        q_bias = torch.ones(HEADS, STATE, device=device)
        k_bias = torch.ones(HEADS, STATE, device=device)
        angles = torch.randn(1, length, HEADS, angles_count, device=device)
        D = torch.randn(HEADS, device=device)

        def call():
            return mamba3_siso_combined(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=D)

        with torch.no_grad():
            eager, graphed = eager_and_graphed_ms(torch, call, 20)
        times.append(min(t for t in (eager, graphed) if t is not None))
        print(f"Mamba-3 {length} tokens, ms eager / graphed: {eager:.3f} / "
              f"{'-' if graphed is None else f'{graphed:.3f}'}", flush=True)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--mamba-src", help="a checkout of state-spaces/mamba (else the installed mamba_ssm)")
    args = parser.parse_args()
    try:
        import torch
        import triton
        scan, version = load_peer(args.mamba_src)
    except ImportError as error:
        sys.exit(f"gpu-peers: {error} (the peer needs torch, triton, einops and packaging)")
    if not torch.cuda.is_available():
        sys.exit("gpu-peers: torch sees no GPU")
    torch.manual_seed(0)
    device, bf16 = "cuda", torch.bfloat16
    forward, training, detail = [], [], []
    for length in LENGTHS:
        x = torch.randn(1, length, HEADS, HEAD_DIM, device=device, dtype=bf16)
        dt = torch.randn(1, length, HEADS, device=device, dtype=bf16)
        B = torch.randn(1, length, 1, STATE, device=device, dtype=bf16)
        C = torch.randn(1, length, 1, STATE, device=device, dtype=bf16)
        A = -torch.exp(torch.rand(HEADS, device=device) * 2.77)  # A_log uniform in [0, log 16), as mamba_ssm
        D = torch.randn(HEADS, device=device)
        dt_bias = torch.rand(HEADS, device=device) - 4.0
        leaves = [x, dt, B, C, A, D, dt_bias]

        def call():
            return scan(x, dt, A, B, C, CHUNK, D=D, dt_bias=dt_bias, dt_softplus=True)

        with torch.no_grad():
            forward_times = eager_and_graphed_ms(torch, call, 20)
        for leaf in leaves:
            leaf.requires_grad_(True)
        dy = torch.randn(1, length, HEADS, HEAD_DIM, device=device, dtype=bf16)

        def step():
            for leaf in leaves:
                leaf.grad = None
            call().backward(dy)

        training_times = eager_and_graphed_ms(torch, step, 10)
        forward.append(min(t for t in forward_times if t is not None))
        training.append(min(t for t in training_times if t is not None))
        shown = lambda times: " / ".join("-" if t is None else f"{t:.3f}" for t in times)
        detail.append({"tokens": length, "forward_eager_graphed_ms": forward_times,
                       "forward_backward_eager_graphed_ms": training_times})
        print(f"SSD {length} tokens, ms eager / graphed: forward {shown(forward_times)}, "
              f"forward + backward {shown(training_times)}", flush=True)
    mamba3_forward = time_mamba3(torch, bf16, device)
    result = {
        "source": f"mamba_ssm {version} Triton (torch {torch.__version__}, triton {triton.__version__}), "
                  f"{torch.cuda.get_device_name()}",
        "lengths": LENGTHS,
        "ssd_forward_ms": forward,
        "ssd_forward_backward_ms": training,
        **({"mamba3_forward_ms": mamba3_forward} if mamba3_forward else {}),
        "eager_and_graphed": detail,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    temporary = args.out + ".tmp"
    with open(temporary, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(temporary, args.out)


if __name__ == "__main__":
    main()
