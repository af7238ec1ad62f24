"""``stdlib-lm``: a byte-level causal transformer trained on the Python standard library's sources.

Corpus: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``, found recursively, skipping
``site-packages``, ``dist-packages``, ``test``, ``tests``, ``idle_test`` and ``__pycache__``
directories; sorted by POSIX relative path; concatenated as bytes with ``b"\\n"`` between files and
truncated to ``corpus_bytes``. The corpus therefore depends on the Python minor version (and its
patch release); ``describe()`` records the version, the number of files used, the byte count and
the sha256 of the corpus, so runs on different interpreters are never silently compared.
The held-out set is the tail: the last ``eval_fraction`` of the corpus.

Model: vocabulary 256 (bytes), token + learned positional embeddings, ``n_layers`` pre-LayerNorm
blocks ``h += attn(LN(h)); h += W2 gelu(W1 LN(h))`` with causal multi-head self-attention
(``scaled_dot_product_attention(is_causal=True)``) and a 4x GELU MLP, a final LayerNorm and an
output head tied to the input embedding. Initialisation (GPT-2 style, from the run's generator):
weights N(0, 0.02^2), residual output projections N(0, 0.02^2 / (2 n_layers)), biases 0, LayerNorm 1/0.

Pinned defaults: d_model 64, n_layers 2, n_heads 4, seq_len 128, batch_size 16 (~0.13M parameters),
corpus_bytes 4_000_000, eval_fraction 0.05, eval_batches 8 (of batch_size windows each, at evenly
spaced offsets of the tail). d_model was lowered from 128 to fit the step budget: forward+backward
takes ~23-27 ms on 2 CPU threads (AMD EPYC; d_model 128 took ~65-90 ms), evaluate() ~70 ms.
Train batches: ``batch_size`` windows of ``seq_len + 1`` bytes with start offsets drawn uniformly
(with replacement) from the train part by ``torch.randint(generator=...)``.
Federated split (``federated_clients``): clients are disjoint groups of whole files (contiguous in the
sorted file list, about equal bytes each), a natural non-IID split.
Metrics: ``loss`` (mean cross-entropy, nats/byte) and ``bits_per_byte``.
Preset ``gpt57m`` (``PRESETS``): d_model 768, n_layers 8, n_heads 12, seq_len 256, batch_size 32
(57.1M parameters, the output head tied to the embedding): a GPU workload, used with bf16 autocast
by the ``shampoo-gpu`` suite.
target_loss 2.0 nats/byte (untrained: ln 256 = 5.55): constant-lr AdamW from seed 0 reaches it after
~375 of default_steps 600 with lr 3e-3 (ending at 1.65) and ~450 with lr 1e-3 (ending at 1.85).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import sysconfig
from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from scalopt.core.validate import check_int, check_interval, check_positive
from scalopt.federated.partition import ClientData
from scalopt.workloads.base import Workload, build_module, model_device, sha256_of

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
VOCAB_SIZE = 256


# -- corpus ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StdlibCorpus:
    data: torch.Tensor  # uint8, the concatenated (truncated) sources
    n_files: int  # files contributing at least their first byte
    sha256: str
    python_version: str
    root: str
    file_starts: tuple[int, ...] = ()  # offset of each contributing file's first byte


_CORPUS_CACHE: dict[tuple[str, int], StdlibCorpus] = {}


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_files(root: str) -> list[str]:
    """POSIX relative paths of the stdlib's ``.py`` files, excluded directories pruned, sorted."""
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in EXCLUDED_DIRS]
        rel_dir = os.path.relpath(directory, root)
        for file in files:
            if file.endswith(".py"):
                rel = file if rel_dir == "." else os.path.join(rel_dir, file)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def load_corpus(corpus_bytes: int) -> StdlibCorpus:
    """The stdlib corpus truncated to ``corpus_bytes``, cached per process."""
    root = stdlib_root()
    key = (root, corpus_bytes)
    if key not in _CORPUS_CACHE:
        buffer = bytearray()
        n_files = 0
        starts: list[int] = []
        for rel in stdlib_files(root):
            if buffer:
                buffer += b"\n"
            if len(buffer) >= corpus_bytes:
                break
            starts.append(len(buffer))
            with open(os.path.join(root, rel), "rb") as handle:
                buffer += handle.read(corpus_bytes - len(buffer))
            n_files += 1
            if len(buffer) >= corpus_bytes:
                break
        del buffer[corpus_bytes:]
        data = (
            torch.frombuffer(buffer, dtype=torch.uint8).clone()
            if buffer
            else torch.empty(0, dtype=torch.uint8)
        )
        _CORPUS_CACHE[key] = StdlibCorpus(
            data=data,
            n_files=n_files,
            sha256=sha256_of(bytes(buffer)),
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            root=root,
            file_starts=tuple(starts),
        )
    return _CORPUS_CACHE[key]


# -- model -------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        qkv = self.qkv(h).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.fc_out(F.gelu(self.fc(self.ln2(h))))


class ByteTransformer(nn.Module):
    """Causal byte-level transformer; ``forward(tokens (B, T) long) -> logits (B, T, 256)``."""

    def __init__(self, *, d_model: int, n_layers: int, n_heads: int, seq_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, d_model)
        self.pos = nn.Parameter(torch.empty(seq_len, d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)

    def reset_parameters(self, generator: torch.Generator) -> None:
        std = 0.02
        residual_std = std / math.sqrt(2 * len(self.blocks))
        nn.init.normal_(self.embed.weight, std=std, generator=generator)
        nn.init.normal_(self.pos, std=std, generator=generator)
        for block in self.blocks:
            for linear, s in (
                (block.attn.qkv, std),
                (block.attn.proj, residual_std),
                (block.fc, std),
                (block.fc_out, residual_std),
            ):
                nn.init.normal_(linear.weight, std=s, generator=generator)
                nn.init.zeros_(linear.bias)
            for norm in (block.ln1, block.ln2):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
        nn.init.ones_(self.ln_f.weight)
        nn.init.zeros_(self.ln_f.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return F.linear(self.ln_f(h), self.embed.weight)


# -- workload ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class StdlibLM(Workload):
    """Byte-level causal transformer LM on the Python standard library's ``.py`` sources."""

    name: ClassVar[str] = "stdlib-lm"
    loss_unit: ClassVar[str] = "nats/byte"
    #: named sizes (``workloads.get("stdlib-lm", preset="gpt57m")``, ``--workload-set preset=gpt57m``)
    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        # a 57.1M-parameter GPT for one GPU: d_model 768, 8 layers, 12 heads, MLP 4x, context 256, batch 32
        "gpt57m": {"d_model": 768, "n_layers": 8, "n_heads": 12, "seq_len": 256, "batch_size": 32},
    }
    target_loss: float = 2.0
    default_steps: int = 600
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 128
    batch_size: int = 16
    corpus_bytes: int = 4_000_000
    eval_fraction: float = 0.05
    eval_batches: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("d_model", self.d_model, minimum=1)
        check_int("n_layers", self.n_layers, minimum=1)
        check_int("n_heads", self.n_heads, minimum=1)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be a multiple of n_heads={self.n_heads}, got d_model={self.d_model!r}"
            )
        check_int("seq_len", self.seq_len, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("corpus_bytes", self.corpus_bytes, minimum=1024)
        check_interval("eval_fraction", self.eval_fraction, 0.0, 0.5, low_open=True, high_open=False)
        check_int("eval_batches", self.eval_batches, minimum=1)
        check_positive("target_loss", self.target_loss)

    # -- data ----------------------------------------------------------------------------------
    def corpus(self) -> StdlibCorpus:
        return load_corpus(self.corpus_bytes)

    def _split(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.corpus().data
        cut = len(data) - int(len(data) * self.eval_fraction)
        train, held_out = data[:cut], data[cut:]
        if min(len(train), len(held_out)) < self.seq_len + 1:
            raise ValueError(
                f"corpus_bytes={self.corpus_bytes} with eval_fraction={self.eval_fraction} leaves "
                f"{len(train)} train / {len(held_out)} held-out bytes; seq_len + 1 = {self.seq_len + 1} "
                "bytes are needed in each"
            )
        return train, held_out

    def _train_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        train, _ = self._split()
        window = torch.arange(self.seq_len + 1)
        n_starts = len(train) - self.seq_len
        while True:
            starts = torch.randint(n_starts, (self.batch_size,), generator=generator)
            yield train[starts[:, None] + window].long()

    def federated_clients(
        self, n_clients: int, *, alpha: float, generator: torch.Generator
    ) -> list[ClientData]:
        """Clients = disjoint groups of whole stdlib files (a natural non-IID split).

        The train part is cut at file starts into ``n_clients`` contiguous byte ranges of about equal
        size (files are in sorted path order, so a client holds neighbouring modules and packages);
        a client's windows start inside its own range. ``alpha`` and ``generator`` are not used:
        the split is fixed by the file list."""
        check_int("n_clients", n_clients, minimum=1)
        check_positive("alpha", alpha, allow_inf=True)
        train, _ = self._split()
        starts = [s for s in self.corpus().file_starts if s < len(train)]
        bounds = [0]
        for k in range(1, n_clients):
            goal = k * len(train) / n_clients
            bounds.append(
                min((s for s in starts if s > bounds[-1]), key=lambda s: abs(s - goal), default=len(train))
            )
        bounds.append(len(train))
        clients = []
        for i in range(n_clients):
            lo, hi = bounds[i], bounds[i + 1]
            if hi - lo < self.seq_len + 1:
                raise ValueError(
                    f"n_clients={n_clients} leaves client {i} with {max(hi - lo, 0)} bytes of whole files; "
                    f"seq_len + 1 = {self.seq_len + 1} are needed: use fewer clients"
                )
            n_files = sum(1 for s in starts if lo <= s < hi)
            clients.append(
                ClientData(
                    name=f"files{i}({n_files})",
                    num_examples=hi - lo - self.seq_len,
                    make_batches=functools.partial(self._window_batches, train[lo:hi]),
                )
            )
        return clients

    def _window_batches(self, part: torch.Tensor, generator: torch.Generator) -> Iterator[torch.Tensor]:
        window = torch.arange(self.seq_len + 1)
        while True:
            starts = torch.randint(len(part) - self.seq_len, (self.batch_size,), generator=generator)
            yield part[starts[:, None] + window].long()

    def _eval_batches(self) -> Iterator[torch.Tensor]:
        _, held_out = self._split()
        window = torch.arange(self.seq_len + 1)
        n_windows = self.eval_batches * self.batch_size
        starts = torch.linspace(0, len(held_out) - self.seq_len - 1, n_windows).round().long()
        for chunk in starts.split(self.batch_size):
            yield held_out[chunk[:, None] + window].long()

    # -- model and loss ------------------------------------------------------------------------
    def init_model(self, generator: torch.Generator) -> ByteTransformer:
        return build_module(
            lambda: ByteTransformer(
                d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, seq_len=self.seq_len
            ),
            lambda model: model.reset_parameters(generator),
        )

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(model_device(model))
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), batch[:, 1:].reshape(-1))

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        losses = [float(self.loss(model, batch)) for batch in self._eval_batches()]
        loss = sum(losses) / len(losses)
        return {"loss": loss, "bits_per_byte": loss / math.log(2)}

    # -- description ---------------------------------------------------------------------------
    def data_hash(self) -> str:
        return self.corpus().sha256

    def data_facts(self) -> dict[str, object]:
        corpus = self.corpus()
        train, held_out = self._split()
        return {
            "python_version": corpus.python_version,
            "n_files": corpus.n_files,
            "corpus_size": len(corpus.data),
            "train_bytes": len(train),
            "eval_bytes": len(held_out),
        }
