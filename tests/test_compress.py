"""Compressors: exact wire bytes, wire round trips, unbiasedness, contraction, error-feedback invariants."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scalopt.compress as compress
from scalopt.compress import (
    QSGD,
    ErrorFeedback,
    Identity,
    RandomK,
    ScaledSign,
    Segmented,
    TopK,
    build,
    error_feedback,
    from_bytes,
    pack_bits,
    to_bytes,
    unpack_bits,
)


def all_compressors():
    return [
        Identity(),
        ScaledSign(),
        ScaledSign(scale="rms"),
        ScaledSign(block_size=16),
        ScaledSign(scale="rms", block_size=5),
        TopK(0.1),
        RandomK(0.1, torch.Generator().manual_seed(1)),
        RandomK(0.3, torch.Generator().manual_seed(1), unbiased=False),
        QSGD(15, torch.Generator().manual_seed(2), bucket_size=16),
        QSGD(1, torch.Generator().manual_seed(2)),
        QSGD(300, torch.Generator().manual_seed(2), bucket_size=7),  # 10-bit codes: the bit-by-bit path
    ]


def expected_nbytes(c, d: int, itemsize: int) -> int:
    """The byte counts the module docstrings promise, written out."""
    k = max(1, min(d, math.floor(getattr(c, "ratio", 0) * d + 0.5))) if d else 0
    if isinstance(c, Identity):
        return d * itemsize
    if isinstance(c, ScaledSign):
        blocks = 1 if c.block_size is None else math.ceil(d / c.block_size)
        return blocks * itemsize + math.ceil(d / 8)
    if isinstance(c, TopK):
        return k * (itemsize + 4)
    if isinstance(c, RandomK):
        return k * itemsize + 8
    bits = 1 + math.ceil(math.log2(c.levels + 1))
    return math.ceil(d / c.bucket_size) * itemsize + math.ceil(d * bits / 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("d", [1, 7, 8, 100, 1001])
def test_byte_counts_are_exact_and_known_in_advance(dtype, d):
    x = torch.randn(d, generator=torch.Generator().manual_seed(d)).to(dtype)
    itemsize = x.element_size()
    for c in all_compressors():
        p = c.compress(x)
        wire = to_bytes(p)
        assert wire.dtype == torch.uint8
        assert c.nbytes(p) == wire.numel() == c.layout_nbytes(d, dtype) == expected_nbytes(c, d, itemsize), c


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 300), seed=st.integers(0, 2**16), rows=st.sampled_from([1, 3]))
def test_wire_round_trip_reproduces_the_decompressed_tensor(d, seed, rows):
    x = torch.randn(rows, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for c in all_compressors():
        p = c.compress(x)
        y = c.decompress(p)
        assert y.shape == x.shape and y.dtype == x.dtype
        longer = torch.cat([to_bytes(p), torch.full((5,), 7, dtype=torch.uint8)])  # padding is ignored
        assert torch.equal(c.decompress(from_bytes(c, longer, x.shape, x.dtype)), y), c


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 9, 13])
def test_bit_packing_round_trips(bits):
    gen = torch.Generator().manual_seed(bits)
    for n in (0, 1, 7, 8, 9, 63, 257):
        codes = torch.randint(0, 2**bits, (n,), generator=gen)
        packed = pack_bits(codes, bits)
        assert packed.numel() == math.ceil(n * bits / 8)
        assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_identity_is_exact():
    x = torch.randn(50, dtype=torch.float64)
    c = Identity()
    assert torch.equal(c.decompress(c.compress(x)), x)


def test_scaled_sign_is_mean_magnitude_times_sign_with_sign_zero_plus_one():
    x = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    y = ScaledSign().decompress(ScaledSign().compress(x))
    assert torch.equal(y, torch.tensor([-1.5, 1.5, 1.5, 1.5]))


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 200), seed=st.integers(0, 2**16), zeros=st.floats(0.0, 0.9))
def test_scaled_sign_and_top_k_are_contractive(d, seed, zeros):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    x[torch.rand(d, generator=gen, dtype=torch.float64) < zeros] = 0.0
    n2 = float(x.square().sum())
    c = ScaledSign()
    err = float((c.decompress(c.compress(x)) - x).square().sum())
    # ‖Q(x) − x‖² = ‖x‖² − ‖x‖₁²/d ≤ (1 − 1/d)‖x‖²
    assert err == pytest.approx(n2 - float(x.abs().sum()) ** 2 / d, rel=1e-9, abs=1e-12)
    assert err <= (1 - 1 / d) * n2 + 1e-12
    for ratio in (0.01, 0.2, 0.5, 1.0):
        t = TopK(ratio)
        k = t.layout(d, x.dtype)[0][1]
        err = float((t.decompress(t.compress(x)) - x).square().sum())
        assert err <= (1 - k / d) * n2 + 1e-12


@pytest.mark.parametrize("scale", ["l1", "rms"])
@pytest.mark.parametrize("block", [None, 1, 4, 7, 100])
def test_scaled_sign_scales_each_block_by_its_mean_magnitude_or_rms(scale, block):
    x = torch.randn(23, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[5] = 0.0
    c = ScaledSign(scale=scale, block_size=block)
    got = c.decompress(c.compress(x))
    b = 23 if block is None else block
    for lo in range(0, 23, b):
        piece = x[lo : lo + b]
        s = piece.abs().mean() if scale == "l1" else piece.norm() / math.sqrt(piece.numel())
        want = s * torch.where(piece >= 0, 1.0, -1.0).double()
        torch.testing.assert_close(got[lo : lo + b], want, rtol=1e-14, atol=0)
        if scale == "rms":
            torch.testing.assert_close(got[lo : lo + b].norm(), piece.norm(), rtol=1e-12, atol=0)


def test_top_k_keeps_the_largest_magnitudes():
    x = torch.tensor([0.1, -5.0, 0.3, 4.0, -0.2, 0.0, 1.0, 2.0, -3.0, 0.05])
    y = TopK(0.3).decompress(TopK(0.3).compress(x))
    assert torch.equal(y, torch.tensor([0.0, -5.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, -3.0, 0.0]))


@pytest.mark.parametrize(
    "make",
    [
        lambda g: RandomK(0.2, g),
        lambda g: QSGD(2, g, bucket_size=8),
        lambda g: QSGD(15, g, bucket_size=512),
    ],
    ids=["random-k", "qsgd-2", "qsgd-15"],
)
def test_random_k_and_qsgd_are_unbiased_over_seeds(make):
    x = torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def draw(seed):
        c = make(torch.Generator().manual_seed(seed))
        return c.decompress(c.compress(x))

    draws = torch.stack([draw(s) for s in range(3000)])
    mean, sd = draws.mean(0), draws.std(0)
    # each entry's mean is within 5 standard errors of x (the standard error is sd/√3000)
    assert bool(((mean - x).abs() <= 5 * sd / math.sqrt(3000) + 1e-12).all())
    assert float(sd.max()) > 0  # really random


def test_unscaled_random_k_is_contractive_in_expectation():
    x = torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for s in range(300):
        c = RandomK(0.25, torch.Generator().manual_seed(s), unbiased=False)
        errs.append(float((c.decompress(c.compress(x)) - x).square().sum()))
    assert sum(errs) / len(errs) == pytest.approx(0.75 * float(x.square().sum()), rel=0.05)


def test_stochastic_compressors_replay_from_their_state():
    x = torch.randn(64, dtype=torch.float64)
    for c in (RandomK(0.1, torch.Generator().manual_seed(3)), QSGD(4, torch.Generator().manual_seed(3))):
        c.compress(x)
        saved = c.state_dict()
        assert saved["generator"].dtype == torch.uint8
        first = c.decompress(c.compress(x))
        c.load_state_dict(saved)
        assert torch.equal(c.decompress(c.compress(x)), first)
        assert not torch.equal(c.decompress(c.compress(x)), first)


@pytest.mark.parametrize("index", range(len(all_compressors())))
def test_error_feedback_loses_nothing_only_delays(index):
    # Σ_{s≤t} Δ_s + e_{t+1} = Σ_{s≤t} x_s for every t (exact up to float64 rounding)
    c = all_compressors()[index]
    ef = ErrorFeedback(c)
    gen = torch.Generator().manual_seed(index)
    sent = torch.zeros(30, dtype=torch.float64)
    meant = torch.zeros(30, dtype=torch.float64)
    for _ in range(25):
        x = torch.randn(30, generator=gen, dtype=torch.float64)
        sent += ef.decompress(ef.compress(x))
        meant += x
        torch.testing.assert_close(sent + ef.residual, meant, rtol=1e-10, atol=1e-10)  # float64 rounding


def test_error_feedback_residual_stays_bounded_for_contractive_compressors():
    gen = torch.Generator().manual_seed(0)
    for c in (ScaledSign(), TopK(0.1)):
        ef = ErrorFeedback(c)
        norms = []
        for _ in range(300):
            ef.compress(torch.randn(100, generator=gen, dtype=torch.float64))
            norms.append(float(ef.residual.norm()))
        assert max(norms[150:]) < 3 * max(norms[:150])  # no growth after the transient


def test_error_feedback_state_round_trip_and_shape_guard():
    ef = ErrorFeedback(ScaledSign())
    x = torch.randn(10, dtype=torch.float64)
    ef.compress(x)
    other = ErrorFeedback(ScaledSign())
    other.load_state_dict(ef.state_dict())
    assert torch.equal(other.residual, ef.residual)
    assert torch.equal(other.decompress(other.compress(x)), ef.decompress(ef.compress(x)))
    with pytest.raises(ValueError, match="one ErrorFeedback per buffer"):
        ef.compress(torch.randn(11, dtype=torch.float64))
    ef.reset()
    assert ef.residual is None
    e = torch.zeros(10, dtype=torch.float64)
    error_feedback(Identity(), x, e)
    assert torch.equal(e, torch.zeros_like(e))


def test_segmented_compresses_each_piece_alone():
    x = torch.randn(23, dtype=torch.float64)
    seg = Segmented(ScaledSign(), [5, 0, 10, 8])
    y = seg.decompress(seg.compress(x))
    ref = torch.cat([ScaledSign().decompress(ScaledSign().compress(p)) for p in x.split([5, 10, 8])])
    assert torch.equal(y, ref)
    assert seg.layout_nbytes(23, x.dtype) == sum(8 + math.ceil(n / 8) for n in (5, 0, 10, 8))
    with pytest.raises(ValueError, match="23 entries got a tensor of 22"):
        seg.compress(x[:22])


def test_build_from_names_and_dicts():
    assert isinstance(build("scaled-sign"), ScaledSign)
    top = build({"name": "top-k", "ratio": 0.01})
    assert isinstance(top, TopK) and top.ratio == 0.01
    a, b = build({"name": "qsgd", "levels": 3}, seed=1), build({"name": "qsgd", "levels": 3}, seed=1)
    x = torch.randn(50)
    assert torch.equal(a.decompress(a.compress(x)), b.decompress(b.compress(x)))
    assert build(top) is top
    assert set(compress.names()) == {"identity", "scaled-sign", "top-k", "random-k", "qsgd"}


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: build("gzip"), "compressor"),
        (lambda: TopK(0.0), "ratio"),
        (lambda: TopK(1.5), "ratio"),
        (lambda: RandomK(0.1, generator=3), "generator"),
        (lambda: RandomK(0.1, unbiased=1), "unbiased"),
        (lambda: QSGD(0), "levels"),
        (lambda: ScaledSign(scale="l2"), "scale"),
        (lambda: ScaledSign(block_size=0), "block_size"),
        (lambda: QSGD(4, bucket_size=0), "bucket_size"),
        (lambda: ErrorFeedback("sign"), "compressor"),
        (lambda: Identity().compress(torch.arange(3)), "x"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_compressors_never_import_torch_distributed():
    root = Path(compress.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("torch.distributed") for n in names), path
            assert not any(n.startswith("scalopt.distributed") for n in names), path
