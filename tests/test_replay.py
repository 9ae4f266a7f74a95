"""The article-style text of a step."""

import numpy as np

from steptrace import open_trace, record
from steptrace.numerics import format_value
from steptrace.trace.reader import Trace
from steptrace.views.replay import format_step, iter_steps

from .conftest import REPO


def test_values_are_written_exactly_or_as_their_shortest_float():
    assert format_value(0.5, "1/2", "exact") == "1/2"
    assert format_value(float(np.float32(0.1)), None, "float32") == "0.1"
    assert format_value(0.1, None, "float64") == "0.1"
    assert format_value(float("nan")) == "nan"


def test_a_batch_step_shows_every_sample_the_mean_loss_and_the_summed_gradient(traces):
    run = record(out=traces, batch_size=2, epochs=2, lr="1/10")
    trace = open_trace(run.path)
    steps = list(iter_steps(trace))
    assert [len(s) for s in steps] == [2, 1, 2, 1]  # a partial batch ends each epoch
    text = format_step(trace, steps[2])
    assert "Step 2 · epoch 1 · samples [0, 1] · exact · α = 1/10" in text
    assert "batch loss (mean over 2 samples) = 46225000000" in text
    assert "δ4 = (o3 - y_truth) / 2       = 215000" in text
    assert "ŵ = w - α * Σ grad" in text
    assert (
        "- 1/10 * ((21500000, 430000000, 21500000) + (0, 0, 0))" in text
    )  # the sum is taken before α multiplies it


def test_iter_steps_streams_a_range_of_steps(traces):
    run = record(out=traces, numerics="float64", epochs=1000)
    trace = open_trace(run.path)
    got = [int(rows["step"].iloc[0]) for rows in iter_steps(trace, 1500, 1505)]
    assert got == [1500, 1501, 1502, 1503, 1504]


# -- any stack -------------------------------------------------------------------------------

TWO_LAYER = REPO / "examples" / "two-layer.json"

# Step 0 of examples/two-layer.json on the article's first patient, x = (100, 2000, 100), y = 0,
# α = 1/10, worked by hand:
#   o2 = W2·x + b2 = (1/2 − 6000/11600 + 100/5800 + 0, −1/10 + 1 − 1/40 + 1/10) = (0, 39/40)
#   o3 = ReLU(o2) = (0, 39/40);  o4 = 1/2·0 − 1/3·39/40 = −13/40;  o5 = −13/40 / 100 = −13/4000
#   loss = ½ (−13/4000)² = 169/32000000;  δ6 = o5 − y = −13/4000
#   δ5 = δ6/100 = −13/400000 (o4 < 0: the leaky gate is closed)
#   δ4 = W4ᵀ·δ5 = (−13/800000, 13/1200000);  ∂Loss/∂W4 = δ5 ⊗ o3 = (0, −507/16000000)
#   δ3 = δ4 (o2 ≥ 0 on both neurons);  δ2 = W2ᵀ·δ3;  ∂Loss/∂W2 = δ3 ⊗ x;  ∂Loss/∂b2 = δ3
#   ŵ = w − α·grad, e.g. ŵ2[1,2] = −3/11600 + 13/4000 = 347/116000,
#   b̂2[2] = 1/10 − 13/12000000 = 1199987/12000000, ŵ4[1,2] = −1/3 + 507/160000000.
TWO_LAYER_STEP_0 = """\
Step 0 · epoch 0 · sample 0 · exact · α = 1/10

1: data input
   x = (100, 2000, 100)   y_truth = 0   (dataset row 0)
2: forward pass
   | x                | o1 = L1(x)       | o2 = L2(o1) | o3 = L3(o2) | o4 = L4(o3) | o5 = L5(o4) |
   |------------------|------------------|-------------|-------------|-------------|-------------|
   | (100, 2000, 100) | (100, 2000, 100) | (0, 39/40)  | (0, 39/40)  | -13/40      | -13/4000    |
3: loss = 1/2 (o5 - y_truth)^2
   loss = 1/2 (-13/4000 - 0)^2 = 169/32000000   (correct? no)
4: backward pass
   δ6 = o5 - y_truth                  = -13/4000
   δ5 = δ6 if o4 >= 0 else 1/100 * δ6 = -13/400000   (o4 = -13/40: gate closed)
   δ4 = δ5 . w4                       = (-13/800000, 13/1200000)
   ∂Loss/∂W4 = δ5 * o3                = (0, -507/16000000)
   δ3 = δ4 if o2 >= 0 else 0          = (-13/800000, 13/1200000)   (o2 = (0, 39/40): gates open, open)
   δ2 = δ3 . w2                       = (-221/2400000000, 1339/139200000000, -767/139200000000)
   ∂Loss/∂W2 = δ3 * o1                = ((-13/8000, -13/400, -13/8000),
                                         (13/12000, 13/600,  13/12000))
   ∂Loss/∂b2 = δ3                     = (-13/800000, 13/1200000)
   δ1 = δ2                            = (-221/2400000000, 1339/139200000000, -767/139200000000)
5: update the weights
   ŵ2 = w2 - α * ∂Loss/∂W2
      = ((1/200,   -3/11600, 1/5800),
         (-1/1000, 1/2000,   -1/4000))
         - 1/10 * ((-13/8000, -13/400, -13/8000),
                   (13/12000, 13/600,  13/12000))
      = ((413/80000,   347/116000, 777/2320000),
         (-133/120000, -1/600,     -43/120000))
   b̂2 = b2 - α * ∂Loss/∂b2
      = (0, 1/10) - 1/10 * (-13/800000, 13/1200000)
      = (13/8000000, 1199987/12000000)
   ŵ4 = w4 - α * ∂Loss/∂W4
      = (1/2, -1/3) - 1/10 * (0, -507/16000000)
      = (1/2, -159998479/480000000)
   changed: w2_1_1, w2_1_2, w2_1_3, w2_2_1, w2_2_2, w2_2_3, b2_1, b2_2, w4_2"""  # noqa: E501


def test_a_two_layer_step_is_written_layer_by_layer_with_its_weight_matrices(traces):
    run = record("seed", lr="1/10", numerics="exact", model=TWO_LAYER, out=traces, epochs=2)
    trace = open_trace(run.path)
    first = next(iter_steps(trace, 0, 1))
    assert format_step(trace, first) == TWO_LAYER_STEP_0


def test_a_two_layer_batch_adds_the_gradient_matrices_before_alpha_multiplies_them(traces):
    run = record("seed", lr="1/10", numerics="exact", model=TWO_LAYER, out=traces, batch_size=2)
    trace = open_trace(run.path)
    text = format_step(trace, next(iter_steps(trace, 0, 1)))
    # Sample 1, x = (200, 0, 0): o2 = (1, −1/10), so the second neuron's gate is closed and
    # its row of ∂Loss/∂W2 is 0; δ6 = (1/2 − 1) / 2 = −1/4 reaches W2 through w4 = (1/2, −1/3).
    assert "4: backward pass (δ6 divided by the batch size 2)" in text
    assert "   δ6 = (o5 - y_truth) / 2            = -1/4" in text
    assert "(o2 = (1, -1/10): gates open, closed)" in text
    assert "   ŵ2 = w2 - α * Σ grad2" in text
    assert (
        "         - 1/10 * (((-13/16000, -13/800, -13/16000),\n"
        "                    (13/24000,  13/1200, 13/24000))\n"
        "                 + ((-25, 0, 0),\n"
        "                    (0,   0, 0)))\n"
    ) in text
    assert "      = (0, 1/10) - 1/10 * ((-13/1600000, 13/2400000) + (-1/8, 0))" in text
    # b̂2[1] = 0 − 1/10·(−13/1600000 − 1/8) = 200013/16000000
    assert "      = (200013/16000000, 2399987/24000000)" in text


def test_a_float_logistic_stack_writes_each_layers_rule(traces):
    run = record("seed", lr="1/2", numerics="float64", model=REPO / "examples" / "logistic.json",
                 out=traces, seed=3)  # fmt: skip
    trace = open_trace(run.path)
    rows = next(iter_steps(trace, 0, 1))
    text = format_step(trace, rows)
    assert "| o2 = L2(o1)       | o3 = L3(o2) | o4 = L4(o3) | o5 = L5(o4) |" in text
    assert "δ5 = δ6 * o5 * (1 - o5)" in text and "δ3 = δ4 * o3 * (1 - o3)" in text
    assert "∂Loss/∂W2 = δ3 * o1" in text and "∂Loss/∂b4 = δ5" in text
    row = rows.iloc[0]
    # Each δ written is the one recorded, in the shortest text that reads back as it.
    assert f"δ6 = o5 - y_truth             = {float(row['d6_1'])!r}\n" in text
    assert f"δ5 = δ6 * o5 * (1 - o5)       = {float(row['d5_1'])!r}\n" in text
    # A layer of one neuron has one bias, written alone like its output.
    assert f"   b̂4 = b4 - α * ∂Loss/∂b4\n      = {float(row['b4_before_1'])!r} - 0.5 * " in text


def test_a_version_1_trace_replays_under_version_2_names():
    trace = open_trace(REPO / "traces" / "golden" / "article-exact.parquet")
    assert trace.v1  # recorded before stacks: its weights' columns had other names
    text = format_step(trace, next(iter_steps(trace, 2, 3)))
    assert "   ∂Loss/∂W2 = δ3 * o1           = (0, -2000, -3000)" in text
    assert "     = (1/200, 23199997/11600, 17400001/5800)\n   changed: w_2, w_3" in text


def test_iter_steps_reads_through_the_trace_api(traces, monkeypatch):
    run = record(out=traces, numerics="float64", epochs=4)
    trace = open_trace(run.path)
    calls = []
    original = Trace.iter_batches

    def spy(self, columns=None, steps=None):
        calls.append(steps)
        return original(self, columns, steps)

    monkeypatch.setattr(Trace, "iter_batches", spy)
    assert [int(r["step"].iloc[0]) for r in iter_steps(trace, 5, 8)] == [5, 6, 7]
    assert calls == [(5, 8)]


# --- images ----------------------------------------------------------------------------------

IMAGE = {"layers": [{"type": "input", "shape": [1, 3, 3]},
                    {"type": "conv2d", "out": 1, "kernel": 3, "bias": True,
                     "weights": [[[["0", "1", "0"], ["1", "-1", "1"], ["0", "1", "0"]]]],
                     "biases": ["1/2"]},
                    {"type": "relu"}, {"type": "maxpool2d", "size": 1}, {"type": "flatten"},
                    {"type": "linear", "out": 1, "bias": False,
                     "weights": [["1/9"] * 9]}]}  # fmt: skip


def test_an_image_step_is_written_as_grids_with_one_convolution_worked_out(traces):
    from .reference import dataset

    # The image of tests/test_images.py: the cross kernel gives o2 = up + left − centre +
    # right + down + 1/2, written out for the centre pixel: 2 + 0 − 1 + 3 + 0 + 1/2 = 9/2.
    ds = dataset([(1, 2, 0, 0, 1, 3, 2, 0, 1, 1)])
    run = record(ds, lr="1/10", model=IMAGE, out=traces)
    trace = open_trace(run.path)
    text = format_step(trace, next(iter_steps(trace)))
    assert "   x (1 × 3 × 3, dataset row 0), y_truth = 1" in text
    assert "      | 1 | 2 | 0 |\n      | 0 | 1 | 3 |\n      | 2 | 0 | 1 |" in text
    assert "o2 = w2 ⋆ o1 + b2   [L2: conv2d(1, 3×3, bias), 1 × 3 × 3]" in text
    assert "|  3/2 | 1/2 | 11/2 |\n      |  9/2 | 9/2 | -1/2 |\n      | -3/2 | 9/2 |  5/2 |" in text
    assert (
        "one convolution, o2[0, 1, 1] = Σ over input channels (neighbourhood ⋆ kernel) + b:" in text
    )
    assert "| 1 | 2 | 0 |     ⋆   | 0 |  1 | 0 |   = 4" in text  # 0 + 2 + 0 + 0 − 1 + 3 + 0 + 0 + 0
    assert "+ b = 1/2" in text and "o2[0, 1, 1] = 9/2   (recorded: 9/2)" in text
    assert "δ3 = δ4 if o2 >= 0 else 0   [1 × 3 × 3]   (gates open where o2 >= 0: 7 of 9)" in text
    assert "ŵ2 = w2 - α * ∂Loss/∂W2   (α = 1/10; kernels out × in)" in text
    assert "changed: all of the 9 values of w2, b2_1, w6_1" in text


def test_replay_works_out_the_convolution_of_a_chosen_pixel(traces, run_cli):
    from .reference import dataset

    record(dataset([(1, 2, 0, 0, 1, 3, 2, 0, 1, 1)]), lr="1/10", model=IMAGE, out=traces)
    result = run_cli("replay", traces, "--step", "0", "--pixel", "0,0,2")
    assert result.exit_code == 0, result.output
    # o2[0, 0, 2] = up 0 + left 2 − centre 0 + right 0 + down 3 + 1/2 = 11/2, zeros beyond the edge
    assert "| 0 | 0 | 0 |     ⋆   | 0 |  1 | 0 |   = 5" in result.stdout
    assert "o2[0, 0, 2] = 11/2   (recorded: 11/2)" in result.stdout
    for bad, message in (
        ("0,3,0", "--pixel 0,3,0: o2 is 1 × 3 × 3 (channels, rows, columns"),
        ("a,b", "--pixel 'a,b': give channel,row,column, e.g. 0,1,1"),
    ):
        result = run_cli("replay", traces, "--pixel", bad)
        assert result.exit_code != 0 and result.stderr.count("\n") == 1
        assert message in result.stderr


def test_float_grids_round_to_six_digits_and_full_writes_every_digit(traces, run_cli):
    run = record("shapes", lr="0.05", numerics="float64", model=REPO / "examples" / "shapes.json",
                 seed=1, out=traces)  # fmt: skip
    short = run_cli("replay", run.path, "--step", "0").stdout
    full = run_cli("replay", run.path, "--step", "0", "--full").stdout
    # o2[0, 1, 2] is 0.037099999999999994 in float64: a grid shows 0.0371, --full every digit.
    assert "| -0.1672 | -0.1053 | 0.0371 |  0.8147 |" in short
    assert "0.037099999999999994" not in short and "0.037099999999999994" in full
    assert "o2[0, 3, 3] ≈ 0.2903   (recorded: 0.2903)" in short
