"""``ctr``: synthetic click-through prediction with skewed categorical features and embedding tables.

Data (a fixed distribution, generated once per process from ``data_seed``, never the run's seed):
``n_fields`` categorical fields, each with ``vocab_size`` ids drawn i.i.d. from a Zipf-like law
P(id = k) ∝ (k + 1)^(-zipf_exponent), k = 0..vocab_size-1, so a few ids are frequent and most are
rare (the regime of sparse, skewed recommender features). Labels come from a hidden ground-truth
logistic model on hidden per-id parameters (w_f[k] ~ N(0, 0.7^2), u_f[k] ~ N(0, 0.3^2 I_4)):

    logit = -1 + sum_f w_f[id_f] + sum_{f<g} <u_f[id_f], u_g[id_g]>,   click ~ Bernoulli(sigmoid(logit))

A finite pool is pre-generated: ``n_train`` (200k) train rows and ``n_eval`` (20k) held-out rows.
The run's generator only picks which train rows are drawn (``batch_size`` 256, with replacement).

Model: one ``nn.Embedding(vocab_size, embed_dim=16)`` per field (``sparse=True`` passed through
when the ``sparse`` field is set; dense by default; sparse gradients need an optimizer that takes
them, e.g. ``torch.optim.SparseAdam`` or ``SGD``), concatenated, then an MLP
(n_fields*embed_dim -> hidden -> hidden -> 1, ReLU) giving the click logit. Init from the run's
generator: embeddings N(0, 0.05^2); linear weights U(-b, b), b = sqrt(6/fan_in) for hidden layers,
1/sqrt(fan_in) for the output; biases 0.

Metrics on the whole held-out pool: ``loss`` (mean binary cross-entropy, nats), ``accuracy``
(threshold 0.5) and ``auc``. With the defaults the click rate is ~0.30, the constant predictor's loss
~0.61 and the Bayes-optimal (true-probability) eval loss 0.40; AdamW lr 1e-3 plateaus near 0.513 from
step ~300 and starts overfitting the rare ids after about one pass over the pool (~800 steps).
Pinned: target_loss 0.522, default_steps 300: AdamW (seed 0) crosses it at ~200 steps with lr 1e-3 and
~160 with lr 3e-3. One AdamW step ~3.5 ms on 2 CPU threads, evaluate() ~10 ms, generating the pool
~0.3-0.6 s (once per process).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from scalopt.core.validate import check_int, check_positive
from scalopt.workloads.base import Workload, build_module, model_device, sha256_of

Batch = tuple[torch.Tensor, torch.Tensor]

HIDDEN_WEIGHT_STD = 0.7
HIDDEN_FACTOR_STD = 0.3
HIDDEN_FACTOR_DIM = 4
HIDDEN_BIAS = -1.0


@dataclasses.dataclass(frozen=True)
class CTRData:
    train_ids: torch.Tensor  # (n_train, n_fields) int64
    train_labels: torch.Tensor  # (n_train,) float32 in {0, 1}
    eval_ids: torch.Tensor
    eval_labels: torch.Tensor
    sha256: str


@functools.lru_cache(maxsize=4)
def generate_ctr_data(
    n_fields: int, vocab_size: int, zipf_exponent: float, n_train: int, n_eval: int, data_seed: int
) -> CTRData:
    """The pool of rows, a pure function of its arguments (cached per process)."""
    g = torch.Generator().manual_seed(data_seed)
    probs = torch.arange(1, vocab_size + 1, dtype=torch.float64).pow(-zipf_exponent)
    n_rows = n_train + n_eval
    ids = torch.stack(
        [torch.multinomial(probs, n_rows, replacement=True, generator=g) for _ in range(n_fields)], dim=1
    )
    w = torch.randn(n_fields, vocab_size, generator=g, dtype=torch.float64) * HIDDEN_WEIGHT_STD
    u = torch.randn(n_fields, vocab_size, HIDDEN_FACTOR_DIM, generator=g, dtype=torch.float64)
    u = u * HIDDEN_FACTOR_STD
    fields = torch.arange(n_fields)
    w_rows = w[fields, ids]  # (n_rows, n_fields)
    u_rows = u[fields, ids]  # (n_rows, n_fields, dim)
    pairwise = 0.5 * (u_rows.sum(1).square().sum(1) - u_rows.square().sum((1, 2)))
    logit = HIDDEN_BIAS + w_rows.sum(1) + pairwise
    labels = torch.bernoulli(torch.sigmoid(logit), generator=g).to(torch.float32)
    return CTRData(
        train_ids=ids[:n_train],
        train_labels=labels[:n_train],
        eval_ids=ids[n_train:],
        eval_labels=labels[n_train:],
        sha256=sha256_of(ids, labels),
    )


class CTRModel(nn.Module):
    """``forward(ids (B, n_fields) long) -> click logits (B,)``."""

    def __init__(self, *, n_fields: int, vocab_size: int, embed_dim: int, hidden: int, sparse: bool) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(vocab_size, embed_dim, sparse=sparse) for _ in range(n_fields)
        )
        self.mlp = nn.Sequential(
            nn.Linear(n_fields * embed_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def reset_parameters(self, generator: torch.Generator) -> None:
        for table in self.embeddings:
            nn.init.normal_(table.weight, std=0.05, generator=generator)
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            gain = 1.0 if i == len(linears) - 1 else math.sqrt(6.0)
            bound = gain / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        features = torch.cat([table(ids[:, f]) for f, table in enumerate(self.embeddings)], dim=1)
        return self.mlp(features).squeeze(-1)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U; tied scores get their average rank)."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = scores.double().sort()
    ranks = torch.empty_like(sorted_scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    if len(counts) < len(scores):  # average the ranks of ties
        first = torch.cumsum(counts, 0) - counts + 1
        mean_rank = (first + (counts - 1) / 2.0).double()
        ranks[order] = mean_rank[inverse]
    positive_rank_sum = float(ranks[labels.bool()].sum())
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CTR(Workload):
    """Synthetic click-through prediction: skewed categorical ids, embedding tables, MLP."""

    name: ClassVar[str] = "ctr"
    loss_unit: ClassVar[str] = "nats/example"
    target_loss: float = 0.522
    default_steps: int = 300
    n_fields: int = 8
    vocab_size: int = 5000
    embed_dim: int = 16
    hidden: int = 64
    zipf_exponent: float = 1.1
    n_train: int = 200_000
    n_eval: int = 20_000
    batch_size: int = 256
    sparse: bool = False
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_fields", self.n_fields, minimum=1)
        check_int("vocab_size", self.vocab_size, minimum=2)
        check_int("embed_dim", self.embed_dim, minimum=1)
        check_int("hidden", self.hidden, minimum=1)
        check_positive("zipf_exponent", self.zipf_exponent)
        check_int("n_train", self.n_train, minimum=1)
        check_int("n_eval", self.n_eval, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        if not isinstance(self.sparse, bool):
            raise ValueError(f"sparse must be a bool, got {self.sparse!r}")
        check_int("data_seed", self.data_seed)

    # -- data ----------------------------------------------------------------------------------
    def data(self) -> CTRData:
        return generate_ctr_data(
            self.n_fields,
            self.vocab_size,
            float(self.zipf_exponent),
            self.n_train,
            self.n_eval,
            self.data_seed,
        )

    def _train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        data = self.data()
        while True:
            idx = torch.randint(self.n_train, (self.batch_size,), generator=generator)
            yield data.train_ids[idx], data.train_labels[idx]

    def _eval_batches(self) -> Iterator[Batch]:
        data = self.data()
        for start in range(0, self.n_eval, 4096):
            yield data.eval_ids[start : start + 4096], data.eval_labels[start : start + 4096]

    # -- model and loss ------------------------------------------------------------------------
    def init_model(self, generator: torch.Generator) -> CTRModel:
        return build_module(
            lambda: CTRModel(
                n_fields=self.n_fields,
                vocab_size=self.vocab_size,
                embed_dim=self.embed_dim,
                hidden=self.hidden,
                sparse=self.sparse,
            ),
            lambda model: model.reset_parameters(generator),
        )

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        device = model_device(model)
        ids, labels = batch
        return F.binary_cross_entropy_with_logits(model(ids.to(device)), labels.to(device))

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        device = model_device(model)
        logits = torch.cat([model(ids.to(device)).float().cpu() for ids, _ in self._eval_batches()])
        labels = self.data().eval_labels
        loss = float(F.binary_cross_entropy_with_logits(logits, labels))
        accuracy = float(((logits > 0).float() == labels).float().mean())
        return {"loss": loss, "accuracy": accuracy, "auc": auc(logits, labels)}

    # -- description ---------------------------------------------------------------------------
    def data_hash(self) -> str:
        return self.data().sha256

    def data_facts(self) -> dict[str, Any]:
        data = self.data()
        return {
            "train_rows": self.n_train,
            "eval_rows": self.n_eval,
            "train_click_rate": float(data.train_labels.mean()),
            "eval_click_rate": float(data.eval_labels.mean()),
        }
