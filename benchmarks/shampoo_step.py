"""Time ``opt.step()`` of Shampoo against ``torch.optim.AdamW(foreach=True)`` on a small transformer.

    python benchmarks/shampoo_step.py [--reps 5] [--steps 100] [--tokens 2048]

The parameter set is that of a 2-layer byte-level transformer (d_model 128, vocab 256, MLP 512):
embeddings 256×128 and 128×128 (positions), per layer qkv 384×128, proj 128×128, MLP 512×128 and
128×512 with their biases, two LayerNorms, a final LayerNorm. Gradients are fixed random tensors, so
only the optimizer is timed. Torch runs on one thread. The optimizers are timed in interleaved
repetitions (each repetition runs every variant once, in a rotated order) and the medians reported:

    AdamW                 mean step time
    Shampoo between       steps after the first root step that are not root steps (f = 20)
    Shampoo root          the root steps (every 20th step)
    Shampoo amortized     all steps of whole periods after the first root step
    ... async             the same with async_roots=True (roots on a background thread)

plus the optimizer-state memory ratio (distinct storages in ``optimizer.state``) and an estimate of
the whole training step: forward + backward of that transformer on ``--tokens`` tokens (measured
here, same for both) + the optimizer step. Numbers depend on the machine; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scalopt.optim.shampoo import Shampoo

D, VOCAB, MLP, LAYERS, SEQ = 128, 256, 512, 2, 128
FREQ = 20


def shapes() -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [(VOCAB, D), (SEQ, D)]
    for _ in range(LAYERS):
        out += [(3 * D, D), (3 * D,), (D, D), (D,), (MLP, D), (MLP,), (D, MLP), (D,)]
        out += [(D,), (D,), (D,), (D,)]  # two LayerNorms
    return out + [(D,), (D,)]


def make_params(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    params = [(torch.randn(s, generator=g) * 0.02).requires_grad_() for s in shapes()]
    grads = [torch.randn(s, generator=g) * 1e-2 for s in shapes()]
    return params, grads


def state_bytes(opt: torch.optim.Optimizer) -> int:
    seen: dict[int, int] = {}
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                st = v.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def run_adamw(steps: int) -> tuple[list[float], int]:
    params, grads = make_params()
    opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)
    times = []
    for _ in range(steps):
        for p, g in zip(params, grads):
            p.grad = g
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times, state_bytes(opt)


def run_shampoo(steps: int, async_roots: bool) -> tuple[dict[str, float], int, float]:
    params, grads = make_params()
    opt = Shampoo(params, lr=1e-3, precondition_frequency=FREQ, async_roots=async_roots)
    times: list[tuple[int, float]] = []
    for t in range(1, FREQ + steps + 1):
        for p, g in zip(params, grads):
            p.grad = g
        t0 = time.perf_counter()
        opt.step()
        times.append((t, time.perf_counter() - t0))
    measured = [(t, s) for t, s in times if t > FREQ]  # whole periods after the first root step
    root = [s for t, s in measured if t % FREQ == 0]
    between = [s for t, s in measured if t % FREQ != 0]
    out = {
        "between": statistics.mean(between),
        "root": statistics.mean(root),
        "amortized": statistics.mean(s for _, s in measured),
    }
    root_seconds = opt.metrics().get("root_seconds", 0.0)
    opt.close()
    return out, state_bytes(opt), root_seconds


def matmul_floor_seconds(reps: int = 20) -> float:
    """The bare batched matmuls of one Shampoo step between roots (statistics + preconditioning)."""
    groups: dict[tuple[int, ...], int] = {}
    for s in shapes():
        if len(s) == 2:
            groups[s] = groups.get(s, 0) + 1
    stacks = [
        (
            torch.randn(n, *s),
            torch.eye(s[0]).expand(n, -1, -1).contiguous(),
            torch.eye(s[1]).expand(n, -1, -1).contiguous(),
        )
        for s, n in groups.items()
    ]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for g, left, right in stacks:
            left.baddbmm_(g, g.mT, beta=0.999, alpha=0.001)
            right.baddbmm_(g.mT, g, beta=0.999, alpha=0.001)
            torch.bmm(torch.bmm(left, g), right)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_backward_seconds(tokens: int, reps: int) -> float:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(D, 4, MLP, dropout=0.0, batch_first=True, norm_first=True)
    model = torch.nn.ModuleDict(
        {
            "emb": torch.nn.Embedding(VOCAB, D),
            "enc": torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False),
            "norm": torch.nn.LayerNorm(D),
        }
    )
    batch = max(1, tokens // SEQ)
    x = torch.randint(0, VOCAB, (batch, SEQ))
    mask = torch.nn.Transformer.generate_square_subsequent_mask(SEQ)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        h = model["norm"](model["enc"](model["emb"](x), mask=mask, is_causal=True))
        loss = torch.nn.functional.cross_entropy((h @ model["emb"].weight.T).flatten(0, 1), x.flatten())
        loss.backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="measured Shampoo steps (whole periods)")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per training step (estimate)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = ["adamw", "sync", "async"]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    mem: dict[str, int] = {}
    for rep in range(args.reps):
        order = variants[rep % 3 :] + variants[: rep % 3]
        for v in order:
            if v == "adamw":
                times, mem["adamw"] = run_adamw(args.steps)
                results[v].append({"step": statistics.mean(times[10:])})
            else:
                res, mem[v], root_s = run_shampoo(args.steps, v == "async")
                results[v].append({**res, "root_compute": root_s})
    med = {v: {k: statistics.median(r[k] for r in results[v]) for k in results[v][0]} for v in variants}
    adamw = med["adamw"]["step"]
    fb = forward_backward_seconds(args.tokens, 3)
    floor = matmul_floor_seconds()
    n = sum(p.numel() for p in make_params()[0])
    print(
        f"parameters: {n} in {len(shapes())} tensors; torch threads 1; {args.reps} interleaved reps (medians)"
    )
    print(f"AdamW(foreach=True) step: {adamw * 1e3:.3f} ms")
    for v, label in (("sync", "Shampoo"), ("async", "Shampoo async_roots")):
        m = med[v]
        print(
            f"{label:22s} between {m['between'] * 1e3:7.3f} ms ({m['between'] / adamw:5.1f}x)  "
            f"root step {m['root'] * 1e3:8.2f} ms ({m['root'] / adamw:6.1f}x)  "
            f"amortized f={FREQ} {m['amortized'] * 1e3:7.3f} ms ({m['amortized'] / adamw:5.1f}x)"
        )
    print(
        f"floor: the bare batched matmuls of a step between roots take {floor * 1e3:.3f} ms "
        f"({floor / adamw:.1f}x AdamW's step)"
    )
    print(
        f"optimizer state memory: Shampoo/AdamW = {mem['sync'] / mem['adamw']:.2f} "
        f"({mem['sync'] / 2**20:.2f} MiB vs {mem['adamw'] / 2**20:.2f} MiB)"
    )
    print(
        f"forward+backward on {args.tokens} tokens: {fb * 1e3:.1f} ms; estimated whole training step ratio "
        f"Shampoo/AdamW: sync {(fb + med['sync']['amortized']) / (fb + adamw):.3f}, "
        f"async {(fb + med['async']['amortized']) / (fb + adamw):.3f}"
    )


if __name__ == "__main__":
    main()
