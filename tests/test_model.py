"""The model's maths: the article's worked example exactly, a two-layer network computed by hand,
what floats really give, each layer's rule, and gradients against central differences."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace.model import article_model, load_model
from steptrace.model.layers import Heaviside, LeakyRelu, Linear, Logistic, Params, Relu
from steptrace.numerics import get_numerics

from .article import STEPS, X, Y
from .reference import dataset
from .strategies import stacks

EXACT = get_numerics("exact")


def row(*values):
    """One row of values (a rows axis of one), as the layers take them."""
    exact = any(isinstance(v, F) for v in values)
    return np.array([values], dtype=object if exact else np.float64)


def first(a):
    """The first row's values, as a list (a number for a scalar)."""
    value = np.asarray(a)[0]
    return value.tolist() if isinstance(value, np.ndarray) else value


VECTORS = {"x": "x", "o1": "o1", "d2": "d2", "d1": "d1"}
ONE = {"o2": "o2", "o3": "o3", "y": "y", "d4": "d4", "d3": "d3"}


def record(numerics, **kwargs):
    return steptrace.record("seed", lr="1", numerics=numerics, out=kwargs.pop("out"), **kwargs)


def test_the_article_epoch_exactly_every_value_of_every_step(traces):
    run = record("exact", out=traces)
    t = {name: steptrace.load_tensor(run, name, exact=True) for name in
         ("x", "y", "o1", "o2", "o3", "loss", "d4", "d3", "d2", "d1", "grad_w2", "w2_before",
          "w2_after", "lr")}  # fmt: skip
    assert t["w2_after"].shape == (3, 1, 3) and t["d4"].shape == (3, 1) and t["loss"].shape == (3,)
    for row, expected in enumerate(STEPS):
        for name in ("x", "o1", "d2", "d1"):
            assert tuple(t[name][row]) == tuple(expected[name]), (row, name)
        for name in ("o2", "o3", "y", "d4", "d3"):
            assert t[name][row][0] == expected[name], (row, name)
        assert t["loss"][row] == expected["loss"]
        assert tuple(t["grad_w2"][row][0]) == tuple(expected["grad"])
        assert tuple(t["w2_before"][row][0]) == tuple(expected["w_before"])
        assert tuple(t["w2_after"][row][0]) == tuple(expected["w_after"])
        assert t["lr"][row] == 1
        assert all(isinstance(v, F) for v in t["w2_after"][row][0])


def test_step_three_learns_exactly_what_the_article_writes():
    model = article_model()
    stack, params = model.stack(EXACT), model.params(EXACT)
    x, y = row(*[F(v) for v in X[2]]), row(F(Y[2]))
    o1, o2, o3 = stack.forward(params, x)
    assert (first(o1), first(o2), first(o3)) == (first(x), [0], [0])
    assert first(stack.loss.value(o3, y)) == F(1, 2)
    bw = stack.backward(params, x, [o1, o2, o3], y, 1)
    assert (first(bw.d[4]), first(bw.d[3])) == ([-1], [-1])  # δ4 = o3 − y; δ3 = δ4: o2 = 0 ≥ 0
    assert first(bw.d[2]) == [F(-1, 200), F(3000, 11_600_000), F(-1, 5800)]  # δ2 = δ3 · w
    assert first(bw.d[1]) == first(bw.d[2])  # δ1 = δ2
    assert first(bw.grads[2].w) == [[0, -2000, -3000]]  # ∂Loss/∂W2 = δ3 · o1
    after = stack.update(params, F(1), stack.summed(bw.grads))
    assert after[2].w.tolist() == [[F(1, 200), 2000 - F(3000, 11_600_000), 3000 + F(1, 5800)]]


def test_float64_on_the_article_closes_the_gate_and_learns_nothing(traces):
    # 1/200*100 + (-3000/11600000)*2000 + 1/5800*100 is 0 exactly, but not in binary floats:
    # o2 comes out a hair below 0, the ReLU gate closes, δ3 = 0 and no weight moves.
    run = record("float64", out=traces)
    o2 = steptrace.load_tensor(run, "o2")[:, 0]
    assert o2.tolist() == [-3.469446951953614e-17, 1.0, -1.1102230246251565e-16]
    assert steptrace.load_tensor(run, "o3")[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert steptrace.load_tensor(run, "loss").tolist() == [0.0, 0.0, 0.5]
    assert steptrace.load_tensor(run, "d4")[:, 0].tolist() == [0.0, 0.0, -1.0]
    assert steptrace.load_tensor(run, "d3")[:, 0].tolist() == [0.0, 0.0, 0.0]
    w = [0.005, -0.0002586206896551724, 0.00017241379310344826]
    assert steptrace.load_tensor(run, "w2_after")[:, 0].tolist() == [w] * 3


def test_float32_on_the_article_opens_the_gate_early_and_learns_twice(traces):
    run = record("float32", out=traces)
    h = float.fromhex
    o2 = steptrace.load_tensor(run, "o2")[:, 0]
    assert o2.dtype == np.float32
    assert o2.tolist() == [h("0x1.6p-26"), h("0x1.ffca4ap-1"), h("-0x1.68dec0p-4")]
    d3 = steptrace.load_tensor(run, "d3")[:, 0]
    assert d3.tolist() == [h("0x1.6p-26"), h("-0x1.adbp-12"), 0.0]
    loss = steptrace.load_tensor(run, "loss")
    assert loss.tolist() == [h("0x1.e4p-53"), h("0x1.689bacp-24"), 0.5]
    w = steptrace.load_tensor(run, "w2_after")[:, 0]
    assert w[0].tolist() == [h("0x1.478bb4p-8"), h("-0x1.3a26f6p-12"), h("0x1.6547f4p-13")]
    assert w[1].tolist() == [h("0x1.642a3cp-4"), h("-0x1.3a26f6p-12"), h("0x1.6547f4p-13")]
    assert w[2].tolist() == w[1].tolist()  # the third input closes the gate


def test_float32_first_step_matches_plain_numpy_float32_arithmetic(traces):
    f = np.float32
    w = [f(1 / 200), f(-3000 / 11_600_000), f(1 / 5800)]
    x = [f(v) for v in X[0]]
    o2 = (w[0] * x[0] + w[1] * x[1]) + w[2] * x[2]
    assert steptrace.load_tensor(record("float32", out=traces), "o2")[0, 0] == o2


# --- a two-layer network, by hand -----------------------------------------------------------

HAND = {
    "layers": [
        {"type": "input"},
        {"type": "linear", "out": 2, "bias": True, "weights": [["1", "-1"], ["1/2", "1"]],
         "biases": ["0", "1"]},
        {"type": "relu"},
        {"type": "linear", "out": 1, "bias": False, "weights": [["2", "-1"]]},
        {"type": "leaky_relu", "slope": "1/10"},
    ],
    "loss": "squared_error",
}  # fmt: skip


def test_a_two_layer_network_step_computed_by_hand(traces):
    """x = (1, 2), y = 1, α = 1, written out as the article would:

    o1 = x = (1, 2)
    o2 = W2·o1 + b2 = (1·1 − 1·2 + 0, ½·1 + 1·2 + 1) = (−1, 7/2)
    o3 = ReLU(o2) = (0, 7/2)
    o4 = W4·o3 = 2·0 − 1·7/2 = −7/2
    o5 = leaky(o4) = 1/10 · −7/2 = −7/20
    loss = ½ (−7/20 − 1)² = 729/800
    δ6 = o5 − y = −27/20
    δ5 = δ6 · 1/10 (o4 < 0) = −27/200
    δ4 = W4ᵀ·δ5 = (2, −1) · −27/200 = (−27/100, 27/200);  ∂W4 = δ5 ⊗ o3 = (0, −189/400)
    δ3 = δ4 where o2 ≥ 0 = (0, 27/200)
    δ2 = W2ᵀ·δ3 = (½ · 27/200, 1 · 27/200) = (27/400, 27/200)
    ∂W2 = δ3 ⊗ o1 = ((0, 0), (27/200, 27/100));  ∂b2 = δ3 = (0, 27/200)
    δ1 = δ2
    Ŵ2 = ((1, −1), (½ − 27/200, 1 − 27/100)) = ((1, −1), (73/200, 73/100))
    b̂2 = (0, 1 − 27/200) = (0, 173/200);  Ŵ4 = (2, −1 + 189/400) = (2, −211/400)
    """
    ds = dataset([(1, 2, 1)])
    run = steptrace.record(ds, lr="1", numerics="exact", model=HAND, out=traces)

    def t(name):
        first = steptrace.load_tensor(run, name, exact=True)[0]
        return first.tolist() if isinstance(first, np.ndarray) else first

    assert (t("o1"), t("o2"), t("o3"), t("o4"), t("o5")) == (
        [1, 2], [-1, F(7, 2)], [0, F(7, 2)], [F(-7, 2)], [F(-7, 20)])  # fmt: skip
    assert t("loss") == F(729, 800)
    assert (t("d6"), t("d5"), t("d4"), t("d3"), t("d2"), t("d1")) == (
        [F(-27, 20)], [F(-27, 200)], [F(-27, 100), F(27, 200)], [0, F(27, 200)],
        [F(27, 400), F(27, 200)], [F(27, 400), F(27, 200)])  # fmt: skip
    assert t("grad_w4") == [[0, F(-189, 400)]]
    assert t("grad_w2") == [[0, 0], [F(27, 200), F(27, 100)]]
    assert t("grad_b2") == [0, F(27, 200)]
    assert t("w2_before") == [[1, -1], [F(1, 2), 1]] and t("b2_before") == [0, 1]
    assert t("w2_after") == [[1, -1], [F(73, 200), F(73, 100)]]
    assert t("b2_after") == [0, F(173, 200)]
    assert t("w4_after") == [[2, F(-211, 400)]]


def test_a_batch_divides_delta_at_the_loss_and_adds_the_rows_gradients(traces):
    ds = dataset([(1, 2, 1), (2, 0, 0)])
    run = steptrace.record(ds, lr="1", numerics="exact", model=HAND, out=traces, batch_size=2)
    d6 = steptrace.load_tensor(run, "d6", exact=True)[:, 0].tolist()
    o5 = steptrace.load_tensor(run, "o5", exact=True)[:, 0].tolist()
    assert d6 == [(o5[0] - 1) / 2, (o5[1] - 0) / 2]  # δ at the loss: (o − y) / m
    grad = steptrace.load_tensor(run, "grad_w2", exact=True)
    before = steptrace.load_tensor(run, "w2_before", exact=True)[0]
    after = steptrace.load_tensor(run, "w2_after", exact=True)
    assert (after[0] == after[1]).all()  # one update for the batch, on every row
    assert (after[0] == before - (grad[0] + grad[1])).all()


# --- each layer's rule ----------------------------------------------------------------------


def test_relu_lets_delta_through_at_zero_as_the_article_does():
    o = Relu().forward(row(F(-1), F(0), F(2)), None)
    assert first(o) == [0, 0, 2]
    d, grads = Relu().backward(row(F(-1), F(0), F(2)), o, row(*[F(5)] * 3), None)
    assert first(d) == [0, 5, 5] and grads is None  # ReLU'(0) = 1


def test_leaky_relu_scales_negative_inputs_and_their_delta_by_its_slope():
    layer = LeakyRelu(F(1, 100))
    assert first(layer.forward(row(F(-3), F(4)), None)) == [F(-3, 100), 4]
    assert first(layer.backward(row(F(-3), F(4)), row(), row(F(2), F(2)), None)[0]) == [
        F(2, 100), 2]  # fmt: skip


def test_heaviside_steps_and_passes_no_delta():
    assert first(Heaviside().forward(row(F(-1), F(0)), None)) == [0, 1]
    assert first(Heaviside().backward(row(F(-1), F(0)), row(), row(F(3), F(3)), None)[0]) == [
        0, 0]  # fmt: skip


def test_logistic_and_its_derivative_in_floats():
    x = row(-2.0, 0.0, 3.0)
    o = Logistic().forward(x, None)
    want = [1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-3.0))]
    assert first(o) == pytest.approx(want, rel=1e-15)
    d, _ = Logistic().backward(x, o, row(1.0, 1.0, 1.0), None)
    assert first(d) == pytest.approx([v * (1 - v) for v in first(o)], rel=1e-15)


def test_linear_backward_is_the_transpose_the_outer_product_and_delta():
    layer = Linear(2, bias=True)
    p = Params(np.array([[F(1), F(2), F(3)], [F(4), F(5), F(6)]]), np.array([F(7), F(8)]))
    x = row(F(1), F(0), F(-1))
    assert first(layer.forward(x, p)) == [1 - 3 + 7, 4 - 6 + 8]
    d_in, grads = layer.backward(x, row(), row(F(1), F(-1)), p)
    assert first(d_in) == [1 - 4, 2 - 5, 3 - 6]  # Wᵀ·δ
    assert grads is not None
    assert first(grads.w) == [[1, 0, -1], [-1, 0, 1]] and first(grads.b) == [1, -1]  # δ ⊗ x, δ


@pytest.mark.parametrize("numerics", ["float64", "float32"])
def test_logistic_numbers_and_columns_round_the_same_way(numerics):
    dtype = np.float64 if numerics == "float64" else np.float32
    values = np.random.default_rng(0).normal(0, 8, 2_000).astype(dtype)
    columns = Logistic().forward(values.reshape(-1, 1), None)[:, 0]
    numbers = [Logistic().forward(np.array([[v]], dtype=dtype), None)[0, 0] for v in values]
    assert np.array(numbers, dtype=dtype).tobytes() == columns.astype(dtype).tobytes()


# --- gradients against central differences, and an independent forward pass ----------------


def forward_by_hand(spec, x):
    """The model file's forward pass written independently, on Fractions or floats."""
    v = list(x)
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "linear":
            w = layer["weights"]
            b = layer.get("biases") if layer["bias"] else None
            v = [sum((wi * xi for wi, xi in zip(row, v, strict=True)), start=0 * v[0])
                 + (b[j] if b else 0) for j, row in enumerate(w)]  # fmt: skip
        elif kind == "relu":
            v = [a if a >= 0 else 0 * a for a in v]
        elif kind == "leaky_relu":
            v = [a if a >= 0 else layer["slope"] * a for a in v]
        elif kind == "heaviside":
            v = [1 + 0 * a if a >= 0 else 0 * a for a in v]
        elif kind == "logistic":
            v = [1 / (1 + np.exp(-float(a))) for a in v]
    return v


def kinks(spec, x):
    """The sign pattern of every activation's input: equal on both sides of a central
    difference means it stayed on one smooth piece."""
    v, pattern = list(x), []
    for layer in spec["layers"]:
        if layer["type"] in ("relu", "leaky_relu", "heaviside"):
            pattern += [a >= 0 for a in v]
        v = forward_by_hand({"layers": [layer]}, v)
    return pattern


def numeric_spec(spec, make):
    out = {"layers": []}
    for layer in spec["layers"]:
        layer = dict(layer)
        if layer["type"] == "linear":
            layer["weights"] = [[make(F(v)) for v in row] for row in layer["weights"]]
            if layer["bias"]:
                layer["biases"] = [make(F(v)) for v in layer["biases"]]
        if layer["type"] == "leaky_relu":
            layer["slope"] = make(F(layer.get("slope", "1/100")))
        out["layers"].append(layer)
    return out


def batch_loss(spec, xs, ys):
    total = 0
    for x, y in zip(xs, ys, strict=True):
        o = forward_by_hand(spec, x)
        total = total + sum((a - b) * (a - b) for a, b in zip(o, y, strict=True)) / 2
    return total / len(xs)


GRADIENTS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@GRADIENTS
@given(data=st.data())
@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_gradients_and_input_deltas_match_central_differences(numerics, data):
    n_in, n_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    spec = data.draw(stacks(n_in, n_out, rational=numerics == "exact"))
    ints = st.integers(-4, 4).map(F)
    rows = data.draw(st.integers(1, 3))
    xs = [[data.draw(ints) for _ in range(n_in)] for _ in range(rows)]
    ys = [[data.draw(ints) for _ in range(n_out)] for _ in range(rows)]
    system = get_numerics(numerics)
    model = load_model(spec, n_in)
    stack, params = model.stack(system), model.params(system)
    exact = numeric_spec(spec, lambda q: q)
    # The independent forward pass agrees with the stack's, in exact arithmetic.
    if numerics == "exact":
        for x in xs:
            assert first(stack.forward(params, row(*x))[-1]) == forward_by_hand(exact, x)
    grads, d1 = None, None
    for x, y in zip(xs, ys, strict=True):
        nx, ny = system.array(map(system.make, x))[None], system.array(map(system.make, y))[None]
        bw = stack.backward(params, nx, stack.forward(params, nx), ny, rows)
        rows_grads = {k: g.row(0) for k, g in bw.grads.items()}
        grads = rows_grads if grads is None else {k: grads[k] + g for k, g in rows_grads.items()}
        d1 = first(bw.d[1]) if d1 is None else d1
    h = F(1, 10**6)
    # Within one smooth piece the loss is a quadratic in any one weight or input, and central
    # differences are exact for a quadratic: the exact system must match exactly.
    tol = {"exact": 0, "float64": 1e-6, "float32": 3e-2}[numerics]

    def agrees(got, want):
        if tol == 0:
            return got == want
        return abs(float(got) - float(want)) <= tol * (1 + abs(float(want)))

    for k, p in (grads or {}).items():
        layer = k - 1
        for j, weights in enumerate(p.w.tolist()):
            for i, g in enumerate(weights):
                up, down = _nudged(spec, layer, "weights", (j, i), h)
                assume(all(kinks(up, x) == kinks(down, x) == kinks(exact, x) for x in xs))
                numeric = (batch_loss(up, xs, ys) - batch_loss(down, xs, ys)) / (2 * h)
                assert agrees(g, numeric), (k, j, i, g, numeric)
    # δ1 is the loss's derivative with respect to the first row's input (times the rows).
    for i in range(n_in):
        up = [list(xs[0]), *xs[1:]]
        down = [list(xs[0]), *xs[1:]]
        up[0][i] += h
        down[0][i] -= h
        assume(kinks(exact, up[0]) == kinks(exact, down[0]))
        numeric = (batch_loss(exact, up, ys) - batch_loss(exact, down, ys)) / (2 * h)
        assert agrees(d1[i], numeric), (i, d1[i], numeric)


def _nudged(spec, layer, field, index, h):
    """The exact spec with one weight moved by +h and by -h."""
    out = []
    for sign in (1, -1):
        moved = numeric_spec(spec, lambda q: q)
        j, i = index
        moved["layers"][layer][field][j][i] += sign * h
        out.append(moved)
    return out[0], out[1]


# --- model files ----------------------------------------------------------------------------


def test_a_model_file_without_weights_draws_them_from_the_seed_exactly():
    spec = {"layers": [{"type": "input"}, {"type": "linear", "out": 2}, {"type": "relu"},
                       {"type": "linear", "out": 1, "bias": False}]}  # fmt: skip
    a, b, c = load_model(spec, 4, seed=7), load_model(spec, 4, seed=7), load_model(spec, 4, seed=8)
    assert a.drawn and a.to_json() == b.to_json() != c.to_json()
    w2 = a.init[2].w
    assert all((abs(v) <= F(1, 2) and v.denominator in (1, 2, 4, 5, 8, 10)) or
               10_000 % v.denominator == 0 for v in w2.reshape(-1))  # fmt: skip
    assert a.init[2].b.tolist() == [0, 0]  # biases start at 0, as the series says
    again = load_model(a.to_json(), 4)  # the drawn values, stored exactly, come back
    assert again.to_json() == a.to_json() and not again.drawn


def test_the_article_model_as_a_file_is_the_article_model():
    from .conftest import REPO

    assert load_model(REPO / "examples" / "article.json", 3).to_json() == (
        article_model().to_json()
    )
    assert article_model().describe() == "input(3) → linear(1) → relu → squared_error"
