"""The model's maths: the article's worked example exactly, what floats really give, and
gradients checked against finite differences."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from steptrace.data import seed_dataset
from steptrace.model import article as model
from steptrace.numerics import get_numerics
from steptrace.train.trainer import Settings, iter_events

from .article import STEPS, W, X, Y

VECTORS = ("x", "o1", "d2", "d1", "grad", "w_before", "w_after")
SCALARS = ("o2", "o3", "y", "loss", "d4", "d3")


def test_the_article_epoch_exactly_every_value_of_every_step():
    ds = seed_dataset()
    events = list(iter_events(ds, Settings.parse(ds, lr="1", numerics="exact")))
    assert [(e.step, e.epoch, e.sample) for e in events] == [(0, 0, 0), (1, 0, 1), (2, 0, 2)]
    for event, expected in zip(events, STEPS, strict=True):
        for name in SCALARS:
            assert getattr(event, name) == expected[name], (event.step, name)
            assert isinstance(getattr(event, name), Fraction)
        for name in VECTORS:
            assert getattr(event, name) == tuple(expected[name]), (event.step, name)
        assert event.lr == 1


def test_step_three_learns_exactly_what_the_article_writes():
    w = W
    fw = model.forward(w, X[2])
    bw = model.backward(fw, w, Y[2])
    assert (fw.o2, fw.o3, model.loss(fw.o3, Y[2])) == (0, 0, Fraction(1, 2))
    assert (bw.d4, bw.d3) == (-1, -1)
    assert bw.d2 == (Fraction(-1, 200), Fraction(3000, 11_600_000), Fraction(-1, 5800))
    assert bw.grad == (0, -2000, -3000)
    assert model.update(w, 1, bw.grad) == (
        Fraction(1, 200),
        2000 - Fraction(3000, 11_600_000),
        3000 + Fraction(1, 5800),
    )


def _events(numerics):
    ds = seed_dataset()
    return list(iter_events(ds, Settings.parse(ds, lr="1", numerics=numerics)))


def test_float64_on_the_article_closes_the_gate_and_learns_nothing():
    # 1/200*100 + (-3000/11600000)*2000 + 1/5800*100 is 0 exactly, but not in binary floats:
    # o2 comes out a hair below 0, the ReLU gate closes, δ3 = 0 and no weight moves.
    e = _events("float64")
    assert [ev.o2 for ev in e] == [-3.469446951953614e-17, 1.0, -1.1102230246251565e-16]
    assert [ev.o3 for ev in e] == [0.0, 1.0, 0.0]
    assert [ev.loss for ev in e] == [0.0, 0.0, 0.5]
    assert [ev.d4 for ev in e] == [0.0, 0.0, -1.0]
    assert [ev.d3 for ev in e] == [0.0, 0.0, 0.0]
    assert e[2].grad == (0.0, 0.0, 0.0)
    w = (0.005, -0.0002586206896551724, 0.00017241379310344826)
    assert all(ev.w_before == w and ev.w_after == w for ev in e)


def test_float32_on_the_article_opens_the_gate_early_and_learns_twice():
    e = _events("float32")
    h = float.fromhex
    assert [float(ev.o2) for ev in e] == [h("0x1.6p-26"), h("0x1.ffca4ap-1"), h("-0x1.68dec0p-4")]
    assert [float(ev.d3) for ev in e] == [h("0x1.6p-26"), h("-0x1.adbp-12"), 0.0]
    assert [float(ev.loss) for ev in e] == [h("0x1.e4p-53"), h("0x1.689bacp-24"), 0.5]
    assert [float(v) for v in e[0].w_after] == [
        h("0x1.478bb4p-8"), h("-0x1.3a26f6p-12"), h("0x1.6547f4p-13"),
    ]  # fmt: skip
    assert [float(v) for v in e[1].w_after] == [
        h("0x1.642a3cp-4"), h("-0x1.3a26f6p-12"), h("0x1.6547f4p-13"),
    ]  # fmt: skip
    assert e[2].w_after == e[1].w_after  # the third input closes the gate
    assert all(isinstance(v, np.float32) for ev in e for v in (ev.o2, ev.loss, *ev.w_after))


def test_float32_first_step_matches_plain_numpy_float32_arithmetic():
    f = np.float32
    w = [f(1 / 200), f(-3000 / 11_600_000), f(1 / 5800)]
    x = [f(v) for v in X[0]]
    o2 = (w[0] * x[0] + w[1] * x[1]) + w[2] * x[2]
    assert _events("float32")[0].o2 == o2


# --- gradients against finite differences -------------------------------------------------

finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)
vectors = st.lists(finite, min_size=3, max_size=3).map(tuple)


def batch_loss(w, xs, ys):
    """Mean over the batch of 1/2 (relu(w.x) - y)^2, in exact arithmetic."""
    total = Fraction(0)
    for x, y in zip(xs, ys, strict=True):
        fw = model.forward(w, x)
        total += model.loss(fw.o3, y)
    return total / len(xs)


def agrees(got, exact, tol):
    """Equal for the exact system; within a relative ``tol`` for the float systems."""
    if tol == 0:
        return got == exact
    return abs(Fraction(float(got)) - exact) <= tol * (1 + abs(exact))


def exact_batch(w, xs, ys):
    q = [Fraction(v) for v in w]
    return q, [tuple(Fraction(v) for v in x) for x in xs], [Fraction(y) for y in ys]


@settings(max_examples=60, deadline=None)
@given(w=vectors, xs=st.lists(vectors, min_size=1, max_size=4), data=st.data())
@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_gradient_and_learning_flux_match_finite_differences(numerics, w, xs, data):
    ys = data.draw(st.lists(finite, min_size=len(xs), max_size=len(xs)))
    qw, qxs, qys = exact_batch(w, xs, ys)
    # Stay away from the ReLU kink: the loss is a quadratic on each side of it.
    assume(all(abs(model.dot(qw, x)) > Fraction(1, 100) for x in qxs))
    system = get_numerics(numerics)
    nw = tuple(system.make(v) for v in qw)
    n = len(xs)
    grads, fluxes = [], []
    for x, y in zip(qxs, qys, strict=True):
        fw = model.forward(nw, tuple(system.make(v) for v in x))
        bw = model.backward(fw, nw, system.make(y), n)
        grads.append(bw.grad)
        fluxes.append(bw.d1)
    grad = model.sum_gradients(grads)
    h = Fraction(1, 10**6)
    # Central differences are exact for a quadratic, so the exact system must match exactly;
    # the float systems match up to their own rounding.
    tol = {"exact": 0, "float64": 1e-9, "float32": 2e-3}[numerics]
    for k in range(3):
        up = [*qw]
        down = [*qw]
        up[k] += h
        down[k] -= h
        numeric = (batch_loss(up, qxs, qys) - batch_loss(down, qxs, qys)) / (2 * h)
        assert agrees(grad[k], numeric, tol), (k, grad[k], numeric)
    # δ1 is the loss's derivative with respect to the input: check it on the first sample.
    x0 = list(qxs[0])
    for k in range(3):
        up, down = [*x0], [*x0]
        up[k] += h
        down[k] -= h
        numeric = (
            batch_loss(qw, [tuple(up), *qxs[1:]], qys)
            - batch_loss(qw, [tuple(down), *qxs[1:]], qys)
        ) / (2 * h)
        assume(all(abs(model.dot(qw, v)) > h * 40 for v in (up, down)))
        assert agrees(fluxes[0][k], numeric, tol), (k, fluxes[0][k], numeric)


@given(st.lists(st.tuples(vectors, vectors, finite), min_size=1, max_size=20))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_maths_is_bit_identical_to_scalar_maths(dtype, rows):
    cast = float if dtype is np.float64 else np.float32  # keeps -0.0, unlike a Fraction
    w = np.array([r[0] for r in rows], dtype=dtype)
    x = np.array([r[1] for r in rows], dtype=dtype)
    y = np.array([r[2] for r in rows], dtype=dtype)
    n = np.full(len(rows), 2, dtype=dtype)
    o1, o2, o3 = model.forward_columns(w, x)
    loss = model.loss_columns(o3, y)
    d4, d3, d2, d1, grad = model.backward_columns(o1, o2, o3, w, y, n)
    for i in range(len(rows)):
        ws = tuple(cast(v) for v in w[i])
        fw = model.forward(ws, tuple(cast(v) for v in x[i]))
        bw = model.backward(fw, ws, cast(y[i]), 2)
        got = [o2[i], o3[i], loss[i], d4[i], d3[i], *d2[i], *grad[i], *d1[i]]
        want = [fw.o2, fw.o3, model.loss(fw.o3, y[i]), bw.d4, bw.d3, *bw.d2, *bw.grad, *bw.d1]
        assert np.array(got, dtype=dtype).tobytes() == np.array(want, dtype=dtype).tobytes()
