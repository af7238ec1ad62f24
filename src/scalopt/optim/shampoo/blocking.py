"""The shape plan of Shampoo: squeeze, merge, split into blocks, skip; the cost of a block.

For a parameter of shape (n_1, …, n_r) with block size b (``block_size``) and skip dimension s
(``skip_dim``), following the authors' code (R. Anil et al., arXiv 2002.09018) and Meta's PyTorch
implementation (H.-J. M. Shi et al., arXiv 2309.06497):

1. squeeze: drop dims of size 1 (they carry no structure);
2. merge (``merge_dims=True``): scanning from the last dim backwards, merge a dim into its right
   neighbour while their product stays ≤ b: [64,3,3,3] → [64,27]; [512,256,3,3] → [512,256,9];
   [30,20] → [600] (the authors' code scans forwards with threshold 4096; both are valid reshapes);
3. split: cut every dim > b into chunks of b (the last one the remainder); every chunk product is a
   block with its own factors (a block-diagonal preconditioner);
4. skip (the graft alone steps, a diagonal method): 0-D tensors, tensors with a squeezed dim > s
   (embedding tables, softmax layers), and, unless ``precondition_1d``, tensors that are vectors
   after squeezing (biases, norm scales). A matrix that merges to one dim keeps one factor (a
   full-matrix preconditioner of size ≤ b).

Meta's ``max_preconditioner_dim`` is ``block_size`` here. Blocks are cut row-major over the chunk
grid. ``block_cost`` is what ``scalopt.optim.sharding.assign_lpt`` balances when blocks are
spread over ranks (re-exported here, where the shape plan's users look for it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from scalopt.optim.sharding import assign_lpt as assign_lpt


@dataclass(frozen=True)
class Block:
    """One block of a parameter: its index, shape, and where it sits in the merged shape."""

    index: int
    shape: tuple[int, ...]
    slices: tuple[slice, ...] | None  # None: the block is the whole (merged) tensor


@dataclass(frozen=True)
class ParamPlan:
    """How one parameter is preconditioned: ``blocks`` is empty when the graft alone steps."""

    shape: tuple[int, ...]
    merged: tuple[int, ...]
    blocks: tuple[Block, ...]

    @property
    def preconditioned(self) -> bool:
        return bool(self.blocks)


def squeeze_and_merge(shape: tuple[int, ...], block_size: int, merge: bool) -> tuple[int, ...]:
    """Drop size-1 dims, then (``merge``) merge neighbours from the back while the product ≤ block_size."""
    dims = [d for d in shape if d != 1]
    if not merge or not dims:
        return tuple(dims)
    merged = [dims[-1]]
    for d in reversed(dims[:-1]):
        if merged[0] * d <= block_size:
            merged[0] *= d
        else:
            merged.insert(0, d)
    return tuple(merged)


def split_blocks(merged: tuple[int, ...], block_size: int) -> tuple[Block, ...]:
    """Cut every dim > block_size into chunks; one ``Block`` per cell of the chunk grid."""
    if all(d <= block_size for d in merged):
        return (Block(0, merged, None),)
    ranges = [[(a, min(a + block_size, d)) for a in range(0, d, block_size)] for d in merged]
    blocks = []
    for index, cell in enumerate(itertools.product(*ranges)):
        shape = tuple(b - a for a, b in cell)
        blocks.append(Block(index, shape, tuple(slice(a, b) for a, b in cell)))
    return tuple(blocks)


def plan_param(
    shape: tuple[int, ...], *, block_size: int, skip_dim: int, merge_dims: bool, precondition_1d: bool
) -> ParamPlan:
    shape = tuple(shape)
    squeezed = tuple(d for d in shape if d != 1)
    merged = squeeze_and_merge(shape, block_size, merge_dims)
    skip = (
        len(squeezed) == 0
        or any(d > skip_dim for d in squeezed)
        or (len(squeezed) == 1 and not precondition_1d)
        or 0 in shape
    )
    if skip:
        return ParamPlan(shape, merged, ())
    return ParamPlan(shape, merged, split_blocks(merged, block_size))


def block_cost(shape: tuple[int, ...], numel: int, preconditioned: bool) -> int:
    """Memory of a unit in elements: its factors and roots (2·Σ d_i²) plus its element-wise state."""
    factors = 2 * sum(d * d for d in shape) if preconditioned else 0
    return factors + numel
