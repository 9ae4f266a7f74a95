"""The article-style text of a step."""

import numpy as np

from steptrace import open_trace, record
from steptrace.numerics import format_value
from steptrace.views.replay import format_step, iter_steps


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
