"""Naming one recorded value: the words for every kind of tensor, 1D values by their column as
the series numbers them, images and image layers' parameters as numpy indexes them."""

import numpy as np
import pytest

from steptrace import load_tensor, load_trace, open_trace
from steptrace.trace.names import describe_column, layer_kind, place
from steptrace.trace.schema import expand

from .image_runs import record_images

#: A 1D value is named by its column, in today's words (reports print ``column <this>``).
ONE_D = {
    "x_3": "x_3 (data input, feature 3)",
    "y_1": "y_1 (expectation, target 1)",
    "o2_1": "o2_1 (layer 2's output, neuron 1)",
    "d4_1": "d4_1 (δ4 (∂Loss/∂ layer 4's input), component 1)",
    "grad_w2_1_3": "grad_w2_1_3 (layer 2's weight gradient ∂Loss/∂W[1,3])",
    "w4_before_1_2": "w4_before_1_2 (layer 4's weight W[1,2] before the update)",
    "w4_after_1_2": "w4_after_1_2 (layer 4's weight W[1,2] after the update)",
    "grad_b2_1": "grad_b2_1 (layer 2's bias gradient ∂Loss/∂b[1])",
    "b2_before_2": "b2_before_2 (layer 2's bias b[2] before the update)",
    "b2_after_2": "b2_after_2 (layer 2's bias b[2] after the update)",
    "loss": "loss (the row's loss)",
    "lr": "lr (the learning rate)",
}
#: examples/two-layer.json's tensors: input(3) → linear(2, bias) → relu → linear(1) → leaky.
ONE_D_SHAPES = {
    "x": (3,), "o1": (3,), "o2": (2,), "o3": (2,), "o4": (1,), "d4": (1,),
    "w2_after": (2, 3), "b2_after": (2,), "w4_after": (1, 2),
}  # fmt: skip

#: Input [2, 4, 4] → conv2d(3) → normalization → relu → flatten → linear(1) → normalization:
#: the tensors' shapes, as a run's metadata lists them.
SHAPES = {
    "x": (2, 4, 4), "o1": (2, 4, 4), "o2": (3, 4, 4), "o3": (3, 4, 4), "o4": (3, 4, 4),
    "o5": (48,), "o6": (1,), "o7": (1,), "d3": (3, 4, 4), "d7": (1,),
    "w2_after": (3, 2, 3, 3), "b2_after": (3,), "w3_after": (3,), "b3_after": (3,),
    "w6_after": (1, 48), "b6_after": (1,), "w7_after": (1,), "b7_after": (1,),
}  # fmt: skip
#: An image's value, and an image layer's parameter, named from 0 in brackets.
IMAGES = {
    "x_1_2_3": "x[0, 1, 2] (data input, channel 0, row 1, column 2)",
    "o2_2_4_1": "o2[1, 3, 0] (layer 2's output, channel 1, row 3, column 0)",
    "d3_2_4_1": "d3[1, 3, 0] (δ3, ∂Loss/∂ layer 3's input, channel 1, row 3, column 0)",
    "w2_after_1_2_3_3": "w2_after[0, 1, 2, 2] (layer 2's kernel from input channel 1 to output "
    "channel 0, row 2, column 2, after the update)",
    "w2_before_3_1_1_2": "w2_before[2, 0, 0, 1] (layer 2's kernel from input channel 0 to output "
    "channel 2, row 0, column 1, before the update)",
    "grad_w2_2_1_3_1": "grad_w2[1, 0, 2, 0] (layer 2's kernel gradient, from input channel 0 to "
    "output channel 1, row 2, column 0)",
    "b2_after_3": "b2_after[2] (layer 2's bias of output channel 2, after the update)",
    "grad_b2_1": "grad_b2[0] (layer 2's bias gradient, output channel 0)",
    "w3_after_2": "w3_after[1] (layer 3's γ of channel 1, after the update)",
    "w3_before_1": "w3_before[0] (layer 3's γ of channel 0, before the update)",
    "grad_w3_3": "grad_w3[2] (layer 3's γ gradient, channel 2)",
    "b3_after_2": "b3_after[1] (layer 3's β of channel 1, after the update)",
    "grad_b3_1": "grad_b3[0] (layer 3's β gradient, channel 0)",
    # the same run's 1D layers keep the series' names
    "o5_17": "o5_17 (layer 5's output, neuron 17)",
    "w6_after_1_48": "w6_after_1_48 (layer 6's weight W[1,48] after the update)",
    "b6_after_1": "b6_after_1 (layer 6's bias b[1] after the update)",
    "w7_after_1": "w7_after_1 (layer 7's γ[1] after the update)",
    "grad_w7_1": "grad_w7_1 (layer 7's γ gradient ∂Loss/∂γ[1])",
    "b7_before_1": "b7_before_1 (layer 7's β[1] before the update)",
    "grad_b7_1": "grad_b7_1 (layer 7's β gradient ∂Loss/∂β[1])",
    "d7_1": "d7_1 (δ7 (∂Loss/∂ layer 7's input), component 1)",
}


@pytest.mark.parametrize("column", ONE_D)
def test_a_1d_value_is_named_by_its_column_in_the_series_words(column):
    assert str(place(column)) == ONE_D[column]
    assert str(place(column, ONE_D_SHAPES)) == ONE_D[column]
    words = ONE_D[column].split(" (", 1)[1][:-1]
    assert describe_column(column) == describe_column(column + "_exact") == words


@pytest.mark.parametrize("column", IMAGES)
def test_an_image_value_is_named_as_numpy_indexes_it(column):
    assert str(place(column, SHAPES)) == IMAGES[column]
    assert str(place(column + "_exact", SHAPES)) == IMAGES[column]


def test_without_the_runs_shapes_the_indices_tell_what_they_can():
    # images and kernels by their indices; a bias and a γ as a 1D layer's
    assert str(place("o2_2_4_1")) == IMAGES["o2_2_4_1"]
    assert str(place("w2_after_1_2_3_3")) == IMAGES["w2_after_1_2_3_3"]
    assert str(place("b2_after_3")) == "b2_after_3 (layer 2's bias b[3] after the update)"
    assert str(place("w3_after_2")) == "w3_after_2 (layer 3's γ[2] after the update)"


def test_the_layers_are_told_apart_by_their_parameters_shapes():
    kinds = [layer_kind(k, SHAPES) for k in (2, 3, 6, 7)]
    assert kinds == ["conv2d", "channel normalization", "linear", "normalization"]


@pytest.mark.parametrize("column", ["step", "run", "sample", "p_1", "o2_1_1", "w2_after_1_1_1"])
def test_a_column_that_holds_no_value_steptrace_knows_is_left_as_it_is(column):
    assert place(column, SHAPES) is None
    assert describe_column(column) == column


def test_a_numpy_name_selects_its_column():
    columns = ["o2_1_1_1", "o2_2_4_1", "w2_after_1_2_3_3", "o5_1"]
    assert expand("o2[1, 3, 0]", columns) == ["o2_2_4_1"]
    assert expand("w2_after[0,1,2,2]", columns) == ["w2_after_1_2_3_3"]
    assert expand("o2[1, 3, 3]", columns) == []


def test_every_value_of_an_image_run_is_where_its_name_says(tmp_path):
    """The name's index into load_tensor gives the column's value, for every column of a
    recorded image run, and the run's own shapes give every one of them words."""
    run = record_images(tmp_path, "1/10", name="cnn", numerics="float64")
    trace = open_trace(run.path)
    rows = load_trace(run.path)
    shapes = {t.name: t.shape for t in trace.tensors}
    seen = set()
    for tensor in trace.tensors:
        values = load_tensor(run.path, tensor.name)
        for column in tensor.columns():
            found = place(column, shapes)
            assert found is not None and found.tensor == tensor.name, column
            assert found.image == (tensor.name in IMAGE_TENSORS)
            assert np.array_equal(values[(slice(None), *found.numpy_index)], rows[column])
            seen.add((found.quantity, found.kind))
    assert seen >= {("o", "image"), ("d", "image"), ("w", "conv2d"), ("b", "conv2d"),
                    ("grad_w", "conv2d"), ("grad_b", "conv2d"), ("w", "linear")}  # fmt: skip


#: The image run's tensors whose values are named from 0 (flatten's output and the linear
#: layer's are 1D; the δ of flatten's input is an image).
IMAGE_TENSORS = {
    "x", "o1", "o2", "o3", "o4", "d1", "d2", "d3", "d4", "d5",
    "grad_w2", "w2_before", "w2_after", "grad_b2", "b2_before", "b2_after",
}  # fmt: skip
