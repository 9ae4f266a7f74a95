"""steptrace.torch: a user's own PyTorch loop recorded, with real PyTorch on the CPU.

The reference is steptrace's own recording of the same network (a model file): PyTorch's trace
must hold the same tensors, within 1e-9 relative in float64 (its kernels sum in their own
order), and every tool must work on it.

PyTorch is an optional extra: without it these tests skip, except where STEPTRACE_REQUIRE_TORCH=1
(CI sets it, after installing torch), where they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import steptrace
from steptrace.views.replay import format_step, iter_steps

from .conftest import REPO, wait_for_parts

if os.environ.get("STEPTRACE_REQUIRE_TORCH") == "1":
    import torch  # CI installs it: a missing torch is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")
from torch import nn

# pytester's in-process runs restore sys.modules afterwards: torch (a C extension) imported
# first inside one could not be imported again. Load it, and the adapter, once here.
import steptrace.adapters.torch
import steptrace.analysis
import steptrace.torch

pytest_plugins = ["pytester"]

MLP = REPO / "examples" / "mlp-3-2-1.json"
#: What the test compares: every tensor steptrace records for the 3-2-1 network.
TENSORS = [
    "lr", "x", "y", "o1", "o2", "o3", "o4", "loss", "d5", "d4", "d3", "d2", "d1",
    "grad_w2", "w2_before", "w2_after", "grad_b2", "b2_before", "b2_after",
    "grad_w4", "w4_before", "w4_after", "grad_b4", "b4_before", "b4_after",
]  # fmt: skip
RTOL = 1e-9


# --- helpers ----------------------------------------------------------------------------------


def exact(text: str) -> float:
    return float(Fraction(text))


def mlp(spec_file: Path = MLP, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The model file's network in PyTorch, with its initial weights."""
    spec = json.loads(spec_file.read_text())
    linears = [layer for layer in spec["layers"] if layer["type"] == "linear"]
    model = nn.Sequential(
        nn.Linear(3, linears[0]["out"]), nn.ReLU(), nn.Linear(linears[0]["out"], 1)
    ).to(dtype)
    with torch.no_grad():
        for module, layer in zip((model[0], model[2]), linears, strict=True):
            w = [[exact(v) for v in row] for row in layer["weights"]]
            module.weight.copy_(torch.tensor(w, dtype=torch.float64))
            module.bias.copy_(torch.tensor([exact(v) for v in layer["biases"]]))
    return model


def seed_tensors(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    ds = steptrace.seed_dataset()
    x = torch.tensor([[float(v) for v in row] for row in ds.inputs], dtype=dtype)
    y = torch.tensor([[float(v) for v in row] for row in ds.outputs], dtype=dtype)
    return x, y


def train(model, optimizer, rec, x, y, epochs: int, batch_size: int = 1, stop_at=None) -> None:
    """The issue's loop, epoch after epoch over (x, y) in order."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size
    )
    step = 0
    for _ in range(epochs):
        for xb, yb in loader:
            if stop_at is not None and step == stop_at:
                raise RuntimeError("the loop broke")
            sgd_step(model, optimizer, rec, xb, yb)
            step += 1


def sgd_step(model, optimizer, rec, xb, yb) -> None:
    """One step of the issue's loop on the batch (xb, yb), recorded by ``rec``."""
    optimizer.zero_grad()
    out = model(xb)
    per_sample = ((out - yb) ** 2).sum(dim=1) / 2
    per_sample.mean().backward()
    rec.step(xb, yb, per_sample)
    optimizer.step()


def record_torch(out: Path, lr: float = 1e-7, epochs: int = 3, batch_size: int = 1, **kw):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=out, name="torch", **kw) as rec:
        train(model, optimizer, rec, x, y, epochs, batch_size)
    return rec, model


def assert_same_tensors(reference, run, rtol: float = RTOL) -> None:
    for name in TENSORS:
        want = steptrace.load_tensor(reference, name)
        got = steptrace.load_tensor(run, name)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=name)


# --- the same numbers as steptrace --------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2])
def test_pytorch_records_what_steptrace_records_for_the_same_network(traces, batch_size):
    rec, _ = record_torch(traces, epochs=3, batch_size=batch_size)
    ref = steptrace.record("seed", lr="1e-7", numerics="float64", model=MLP, epochs=3,
                           batch_size=batch_size, out=traces, name="ref")  # fmt: skip
    assert_same_tensors(ref, rec)
    # Every row in its place: the plan was learned from the data (3 rows, 3 epochs).
    keys = ["step", "epoch", "sample"]
    pd.testing.assert_frame_equal(
        steptrace.load_trace(rec.path, columns=keys), steptrace.load_trace(ref.path, columns=keys)
    )
    mine, steptraces = steptrace.open_trace(rec.path), steptrace.open_trace(ref.path)
    ours, theirs = mine.meta, steptraces.meta
    for key in ("epochs", "batch_size", "steps", "steps_per_epoch", "numerics"):
        assert ours[key] == theirs[key], key
    assert [(t.name, t.shape) for t in mine.tensors] == [
        (t.name, t.shape) for t in steptraces.tensors
    ]
    assert ours["dataset"]["rows"] == 3
    assert rec.status == "complete"


def test_the_metadata_model_records_the_same_network_again(traces):
    rec, _ = record_torch(traces, epochs=2)
    model = steptrace.open_trace(rec.path).meta["model"]
    # The initial parameters exactly as PyTorch held them: 1/200 is the float nearest to it.
    assert model["layers"][1]["weights"][0][0] == str(Fraction(0.005))
    assert [layer["type"] for layer in model["layers"]] == ["input", "linear", "relu", "linear"]
    again = steptrace.record("seed", lr="1e-7", numerics="float64", model=model, epochs=2,
                             out=traces, name="again")  # fmt: skip
    assert steptrace.open_trace(again.path).meta["model"]["layers"] == model["layers"]
    assert_same_tensors(again, rec)


def test_float32_models_record_float32_runs(traces):
    model = mlp(dtype=torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors(torch.float32)
    with steptrace.torch.record(model, optimizer, out=traces, name="f32") as rec:
        train(model, optimizer, rec, x, y, epochs=2)
    trace = steptrace.open_trace(rec.path)
    assert trace.numerics == "float32"
    w = steptrace.load_tensor(rec, "w2_after")
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w[-1], model[0].weight.detach().numpy())
    report = steptrace.verify(rec.path)
    assert report.ok, str(report)
    assert "within rtol 1e-05, atol 1e-06" in str(report)


def test_other_layers_leaky_relu_and_sigmoid(traces):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.01), nn.Linear(4, 1), nn.Sigmoid())
    model = model.double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.rand(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = (x.sum(dim=1, keepdim=True) > 1.5).double()
    with steptrace.torch.record(model, optimizer, out=traces, name="leaky") as rec:
        train(model, optimizer, rec, x, y, epochs=2, batch_size=4)
    meta = steptrace.open_trace(rec.path).meta
    layers = [layer["type"] for layer in meta["model"]["layers"]]
    assert layers == ["input", "linear", "leaky_relu", "linear", "logistic"]
    assert meta["model"]["layers"][2]["slope"] == "0.01"
    report = steptrace.verify(rec.path)
    assert report.ok, str(report)
    data = pd.DataFrame(x.numpy(), columns=["a", "b", "c"]).assign(t=y.numpy()[:, 0])
    data.to_csv(traces / "data.csv", index=False)
    ref = steptrace.record(traces / "data.csv", lr="0.5", numerics="float64",
                           model=meta["model"], epochs=2, batch_size=4, out=traces,
                           name="ref")  # fmt: skip
    for name in ("o2", "o3", "o5", "d6", "d4", "d3", "grad_w2", "w4_after"):
        np.testing.assert_allclose(
            steptrace.load_tensor(rec, name), steptrace.load_tensor(ref, name), rtol=RTOL,
            atol=1e-15, err_msg=name,
        )  # fmt: skip


def test_a_pytorch_cnn_records_what_steptrace_records_for_the_same_network(traces):
    """conv2d → relu → maxpool2d → flatten → linear, trained by PyTorch, equals steptrace's
    own recording of the model file the run's metadata holds, within 1e-9."""
    from .reference import dataset
    from .torch_nets import series_cnn
    from .torch_nets import train as train_net

    net = series_cnn()
    with steptrace.torch.record(net.model, net.optimizer, out=traces, name="cnn") as rec:
        train_net(net, epochs=2, rec=rec)
    trace = steptrace.open_trace(rec.path)
    model = trace.meta["model"]
    assert [layer["type"] for layer in model["layers"]] == [
        "input", "conv2d", "relu", "maxpool2d", "flatten", "linear"
    ]  # fmt: skip
    assert model["layers"][0]["shape"] == [2, 4, 4] and model["layers"][1]["kernel"] == 3
    rows = [(*x.reshape(-1).tolist(), *y.tolist()) for x, y in zip(net.x, net.y, strict=True)]
    ref = steptrace.record(dataset(rows), lr="0.05", numerics="float64", model=model, epochs=2,
                           batch_size=2, out=traces, name="ref")  # fmt: skip
    mine, theirs = trace.tensors, steptrace.open_trace(ref.path).tensors
    assert [(t.name, t.shape) for t in mine] == [(t.name, t.shape) for t in theirs]
    for t in mine:
        want = steptrace.load_tensor(ref, t.name)
        got = steptrace.load_tensor(trace, t.name)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12, err_msg=t.name)
    assert steptrace.verify(rec.path).ok


def test_the_readmes_pytorch_example_runs_and_verifies(tmp_path, monkeypatch, capsys):
    """README.md's CNN, trained by Adam on the cross-entropy, recorded and verified."""
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Record your own PyTorch training") :]
    section = section[: section.index("\n## ", 1)]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in section
    assert "torch==2.13.0" in section
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("OK traces/cnn: 6 steps, 192 rows, float32, complete; every row")
    assert printed[1] == "(192, 10, 128)"


# --- the same tools -----------------------------------------------------------------------------


def test_verify_passes_within_a_stated_tolerance_and_catches_a_changed_value(traces):
    rec, _ = record_torch(traces, epochs=3)
    report = steptrace.verify(rec.path)
    assert report.ok, str(report)
    assert str(report) == (
        f"OK {rec.path}: 9 steps, 9 rows, float64, complete; every row follows from its inputs "
        f"within rtol 1e-09, atol 1e-12 (recorded with pytorch {torch.__version__})"
    )
    # One value moved by one part in a million: out of tolerance, named.
    part = next(rec.path.glob("part-*.parquet"))
    table = pd.read_parquet(part)
    table.loc[4, "d3_1"] *= 1 + 1e-6
    _rewrite_part(part, table)
    bad = steptrace.verify(rec.path)
    assert not bad.ok
    assert bad.problem.column == "d3_1" and bad.problem.step == 4, str(bad)


def test_verify_names_pytorchs_relu_gradient_at_zero(traces):
    """PyTorch's ReLU lets no gradient through at exactly 0; the series' does (ReLU'(0) = 1).
    The trace holds what PyTorch computed, and verify says where the two part."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x = torch.tensor([[0.0, 0, 0], [100.0, 2000, 100]], dtype=torch.float64)  # o2 = 0 at first
    y = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    with steptrace.torch.record(model, optimizer, out=traces, name="kink") as rec:
        train(model, optimizer, rec, x, y, epochs=1)
    assert steptrace.load_tensor(rec, "o2")[0].tolist() == [0.0, 0.0]
    assert steptrace.load_tensor(rec, "d3")[0].tolist() == [0.0, 0.0]  # PyTorch: gate closed
    report = steptrace.verify(rec.path)
    assert not report.ok
    assert (report.problem.step, report.problem.column) == (0, "d3_1")
    d4 = float(steptrace.load_tensor(rec, "d4")[0, 0])
    assert str(report).endswith(
        f"step 0, sample 0, column d3_1: recorded 0.0, recomputed {d4!r} (δ3 = δ4 if o2 >= 0 "
        f"else 0) (compared within rtol 1e-09, atol 1e-12; recorded with pytorch "
        f"{torch.__version__})"
    )


def _rewrite_part(part: Path, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(part)
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), part)


def test_an_optimizer_of_its_own_is_recorded_as_it_updated(traces):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7, momentum=0.9)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=traces, name="momentum") as rec:
        train(model, optimizer, rec, x, y, epochs=3)
    meta = steptrace.open_trace(rec.path).meta
    assert meta["recorded_with"]["update"] == "optimizer"
    assert meta["recorded_with"]["optimizer"]["momentum"] == 0.9
    # The real parameters after each step: the last are the model's.
    np.testing.assert_array_equal(
        steptrace.load_tensor(rec, "w2_after")[-1], model[0].weight.detach().numpy()
    )
    report = steptrace.verify(rec.path)
    assert report.ok, str(report)
    # Issue 20: verify recomputes SGD's momentum (once taken as recorded, not checked).
    assert "not checked" not in str(report) and "not recomputed" not in str(report)
    # Plain SGD's rule would not have given these parameters.
    w, g = steptrace.load_tensor(rec, "w2_before"), steptrace.load_tensor(rec, "grad_w2")
    assert not np.allclose(steptrace.load_tensor(rec, "w2_after")[3], w[3] - 1e-7 * g[3])
    # Replay says whose rule moved the weights instead of writing ŵ = w − α·grad.
    text = format_step(
        steptrace.open_trace(rec.path), next(iter_steps(steptrace.open_trace(rec.path), 3, 4))
    )
    assert "5: update the weights (by SGD's own rule, recorded as it left them" in text
    assert "ŵ2 = SGD(w2, ∂Loss/∂W2)" in text and "= w2 - α" not in text


def test_diff_against_steptrace_names_the_first_divergence_by_layer(traces, run_cli):
    rec, _ = record_torch(traces, epochs=2, dataset=steptrace.seed_dataset())
    meta = steptrace.open_trace(rec.path).meta
    same = steptrace.record("seed", lr="1e-7", numerics="float64", model=meta["model"],
                            epochs=2, out=traces, name="same")  # fmt: skip
    assert steptrace.compare_traces(same, rec, rtol=RTOL).identical
    # The same network but for one initial weight of layer 4.
    changed = json.loads(json.dumps(meta["model"]))
    changed["layers"][3]["weights"][0][1] = "1/4"
    other = steptrace.record("seed", lr="1e-7", numerics="float64", model=changed, epochs=2,
                             out=traces, name="other")  # fmt: skip
    result = run_cli("diff", other.path, rec.path, "--rtol", "1e-9")
    assert result.exit_code == 1
    assert (
        "First divergence: step 0, sample 0, column w4_before_1_2 (layer 4's weight W[1,2] "
        "before the update): A 0.25, B 0.3333333333333333" in result.output
    )
    assert "model.layers[4].weights" in result.output


def test_replay_shows_a_pytorch_step(traces, run_cli):
    rec, _ = record_torch(traces, epochs=1)
    result = run_cli("replay", rec.path, "--step", "1")
    assert result.exit_code == 0, result.output
    o4 = steptrace.load_tensor(rec, "o4")[1, 0]
    assert "Step 1 · epoch 0 · sample 1 · float64 · α = 1e-07" in result.output
    assert "o4 = L4(o3)" in result.output and repr(float(o4)) in result.output
    assert "δ5 = o4 - y_truth" in result.output


def test_a_parameter_changed_between_steps_is_what_the_next_step_starts_from(traces):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=traces, name="clamped") as rec:
        train(model, optimizer, rec, x, y, epochs=1)
        with torch.no_grad():
            model[2].weight[0, 1] = 0.25  # a manual change between steps
        train(model, optimizer, rec, x, y, epochs=1)
    before = steptrace.load_tensor(rec, "w4_before")
    assert before[3, 0, 1] == 0.25
    report = steptrace.verify(rec.path)
    assert not report.ok
    assert report.problem.column == "w4_before_1_2" and report.problem.step == 3
    assert "the previous step ended at" in str(report)


GOLDEN_TEST = """
import torch
from torch import nn
import steptrace

def test_my_training(golden_trace, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr={lr})
    x = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = x.sum(dim=1, keepdim=True)
    with steptrace.torch.record(model, optimizer, out=tmp_path) as rec:
        for epoch in range(2):
            for i in range(0, 6, 2):
                optimizer.zero_grad()
                out = model(x[i:i + 2])
                per_sample = ((out - y[i:i + 2]) ** 2).sum(dim=1) / 2
                per_sample.mean().backward()
                rec.step(x[i:i + 2], y[i:i + 2], per_sample)
                optimizer.step()
    golden_trace(rec)
"""


def test_the_golden_fixture_catches_a_changed_learning_rate(pytester):
    golden = pytester.path / "test_my_training" / "test_my_training.parquet"
    quiet = ("-p", "no:hypothesispytest")
    pytester.makepyfile(test_my_training=GOLDEN_TEST.format(lr=0.1))
    pytester.runpytest(*quiet).assert_outcomes(failed=1)  # the golden is written
    assert steptrace.open_trace(golden).lr_text == "0.1"
    pytester.runpytest(*quiet).assert_outcomes(passed=1)

    pytester.makepyfile(test_my_training=GOLDEN_TEST.format(lr=0.05))
    changed = pytester.runpytest(*quiet)
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines([
        "*The run differs from golden trace test_my_training/test_my_training.parquet",
        "*First divergence: step 0, sample 0, column lr (the learning rate): golden 0.1, "
        "obtained 0.05*",
        "*lr: golden '0.1', obtained '0.05'",
    ])  # fmt: skip
    assert steptrace.open_trace(golden).lr_text == "0.1"


# --- nothing lost -------------------------------------------------------------------------------

LONG_LOOP = """
import sys, torch
from torch import nn
import steptrace

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
x = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
y = x.sum(dim=1, keepdim=True)
plan = {plan}
with steptrace.torch.record(model, optimizer, out=sys.argv[1], name="killed",
                            flush_seconds=0.05, **plan) as rec:
    for epoch in range(10**9):
        for i in range(0, 5, 2):
            optimizer.zero_grad()
            out = model(x[i:i + 2])
            per_sample = ((out - y[i:i + 2]) ** 2).sum(dim=1) / 2
            per_sample.mean().backward()
            rec.step(x[i:i + 2], y[i:i + 2], per_sample)
            optimizer.step()
"""


@pytest.mark.parametrize(
    "plan",
    ["{}", "{'dataset': (x, y), 'epochs': 10**6, 'batch_size': 2}"],
    ids=["learned", "declared"],
)
def test_sigkill_mid_loop_leaves_every_flushed_step_readable(tmp_path, plan):
    script = tmp_path / "loop.py"
    script.write_text(LONG_LOOP.format(plan=plan))
    out = tmp_path / "traces"
    process = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE)
    run = out / "killed"
    wait_for_parts(process, run, 3, timeout=120)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    trace = steptrace.open_trace(run)
    assert trace.status == "incomplete"
    frame = pd.read_parquet(run)  # plain pandas reads whole parts only
    assert len(frame) == trace.num_rows > 0
    sizes = frame.groupby("step").size()
    # Whole steps: 2, 2, 1 rows, epoch after epoch (5 rows in batches of 2); the last may
    # be any of them, but none is cut.
    pattern = np.tile([2, 2, 1], len(sizes) // 3 + 1)[: len(sizes)]
    np.testing.assert_array_equal(sizes.to_numpy(), pattern)
    assert list(sizes.index) == list(range(len(sizes)))
    assert steptrace.load_tensor(run, "w4_after").shape == (len(frame), 1, 2)
    assert not list(run.glob("*.tmp")) or all(p.name.startswith(".") for p in run.glob("*.tmp"))
    if "epochs" in plan:  # the plan was known from the start: the rows verify
        report = steptrace.verify(run)
        assert report.ok and "incomplete" in str(report), str(report)


def test_an_exception_in_the_loop_marks_the_run_incomplete_and_goes_on(traces):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    with (
        pytest.raises(RuntimeError, match="the loop broke"),
        steptrace.torch.record(model, optimizer, out=traces, name="broken") as rec,
    ):
        train(model, optimizer, rec, x, y, epochs=3, stop_at=5)
    trace = steptrace.open_trace(rec.path)
    assert trace.status == "incomplete"
    assert trace.reason == "stopped by RuntimeError: the loop broke after step 4"
    assert trace.num_rows == 5
    assert steptrace.verify(rec.path).ok
    assert not _hooks(model, optimizer)


def test_ctrl_c_marks_the_run_incomplete_and_interrupts(traces):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    handler = signal.getsignal(signal.SIGINT)

    class CtrlC:
        def step(self, *args):
            rec.step(*args)
            if rec.capture.step_number() == 4:
                signal.raise_signal(signal.SIGINT)

    with (
        pytest.raises(KeyboardInterrupt),
        steptrace.torch.record(model, optimizer, out=traces, name="ctrl-c") as rec,
    ):
        train(model, optimizer, CtrlC(), x, y, epochs=3)
    trace = steptrace.open_trace(rec.path)
    assert trace.status == "incomplete"
    # Pressed during step 4, before its update: steps 0 … 3 are whole, and kept.
    assert trace.reason == "interrupted by Ctrl-C after step 3"
    assert trace.num_rows == 4
    assert signal.getsignal(signal.SIGINT) is handler


# --- what it refuses, and leaves behind ---------------------------------------------------------


def _hooks(model: nn.Module, optimizer) -> list[object]:
    found = [h for m in model.modules() for h in m._forward_hooks.values()]
    found += list(optimizer._optimizer_step_pre_hooks.values())
    found += list(optimizer._optimizer_step_post_hooks.values())
    return found


def test_hooks_are_removed_when_the_block_ends(traces):
    rec, model = record_torch(traces, epochs=1)
    assert rec.status == "complete"
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    assert not [h for m in model.modules() for h in m._forward_hooks.values()]
    # The model trains on, unrecorded: nothing is written, nothing raises.
    x, y = seed_tensors()
    out = model(x)
    (((out - y) ** 2).sum(dim=1) / 2).mean().backward()
    optimizer.step()
    assert steptrace.open_trace(rec.path).num_rows == 3
    assert not out.retains_grad  # no retain_grad left behind either


@pytest.mark.parametrize(
    ("layers", "kind"),
    [
        (lambda: [nn.Linear(3, 2), nn.Dropout(0.1), nn.Linear(2, 1)], "dropout"),
        (lambda: [nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)], "tanh"),
        (lambda: [nn.Linear(3, 2), nn.ReLU(inplace=True), nn.Linear(2, 1)], "relu"),
    ],
)
def test_modules_once_refused_are_recorded(traces, layers, kind):
    """Issue 20: nothing is refused (dropout, tanh, an in-place ReLU were, by name)."""
    model = nn.Sequential(*layers()).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=traces, name=kind) as rec:
        train(model, optimizer, rec, x / 1000, y, epochs=1)
    trace = steptrace.open_trace(rec.path)
    assert trace.status == "complete" and trace.num_rows == 3
    assert trace.meta["graph"]["layers"][1]["type"] == kind
    assert not _hooks(model, optimizer)


def test_nested_modules_are_flattened_in_order(traces):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
            self.head = nn.Linear(2, 1)

        def forward(self, x):
            return self.head(self.body(x))

    model = Net().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=traces, name="nested") as rec:
        train(model, optimizer, rec, x / 1000, y, epochs=1)
    meta = steptrace.open_trace(rec.path).meta
    assert [layer["type"] for layer in meta["model"]["layers"]] == [
        "input", "linear", "relu", "linear"
    ]  # fmt: skip
    assert steptrace.verify(rec.path).ok


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (lambda out, y: nn.functional.mse_loss(out, y), "the gradient at the model's output"),
        (lambda out, y: (((out - y) ** 2).sum(dim=1) / 2).sum(), "is 2 × (o − y)/m"),
    ],
)
def test_a_loss_other_than_the_mean_squared_error_is_refused_at_the_first_step(
    traces, loss, message
):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    with (
        pytest.raises(steptrace.ConfigError, match="steptrace records the mean") as info,
        steptrace.torch.record(model, optimizer, out=traces, name="mse") as rec,
    ):
        optimizer.zero_grad()
        out = model(x[:2])
        loss(out, y[:2]).backward()
        rec.step(x[:2], y[:2], ((out - y[:2]) ** 2).sum(dim=1) / 2)
        optimizer.step()
    assert message in str(info.value)
    assert steptrace.open_trace(rec.path).status == "incomplete"


def test_steps_out_of_order_are_explained(traces):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    rec = steptrace.torch.record(model, optimizer, out=traces, name="order")
    with pytest.raises(steptrace.ConfigError, match=r"rec.step\(...\) before a forward pass"):
        rec.step(x, y, torch.zeros(3))
    out = model(x)
    per_sample = ((out - y) ** 2).sum(dim=1) / 2
    with pytest.raises(steptrace.ConfigError, match=r"before backward\(\)"):
        rec.step(x, y, per_sample)
    per_sample.mean().backward()
    with torch.no_grad():
        model(x)  # a validation pass
    with pytest.raises(steptrace.ConfigError, match="after a forward pass without gradients"):
        rec.step(x, y, per_sample)
    with pytest.raises(steptrace.ConfigError, match=r"optimizer.step\(\) without rec.step"):
        optimizer.step()
    rec.close()
    assert not _hooks(model, optimizer)


def test_memory_stays_flat_however_long_the_loop(traces):
    """Rows leave for the trace a chunk at a time: what steptrace holds does not grow with the
    steps (Python's allocations, numpy's included, traced; and Arrow's memory pool)."""
    import tracemalloc

    import pyarrow as pa

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = x.sum(dim=1, keepdim=True)
    held = []
    tracemalloc.start()
    try:
        with steptrace.torch.record(
            model, optimizer, out=traces, name="long", flush_seconds=0.2
        ) as rec:
            for s in range(4_000):
                xi, yi = x[s % 200 : s % 200 + 1], y[s % 200 : s % 200 + 1]
                sgd_step(model, optimizer, rec, xi, yi)
                if s in (1_000, 3_999):
                    held.append(tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes())
    finally:
        tracemalloc.stop()
    assert steptrace.open_trace(rec.path).num_rows == 4_000
    # 3,000 more steps (~1.5 MB of rows): no more memory held.
    assert held[1] - held[0] < 500_000, held


def test_without_pytorch_the_adapter_says_how_to_install_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import steptrace\n"
        "try:\n    steptrace.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout == "steptrace.torch needs PyTorch: pip install 'steptrace[torch]'\n"


def test_steptrace_torch_gives_the_adapters_public_names():
    adapter = steptrace.adapters.torch
    assert steptrace.torch.__all__ == adapter.__all__ == ["Recorder", "record"]
    assert steptrace.torch.record is adapter.record
    assert steptrace.torch.Recorder is adapter.Recorder
    assert "torch" not in steptrace.__all__  # `from steptrace import *` does not import torch


@pytest.mark.parametrize(
    "code",
    [
        "import steptrace.torch\nprint(steptrace.torch.record.__module__)",
        "from steptrace.torch import record\nprint(record.__module__)",
        "import steptrace\nprint(steptrace.torch.record.__module__)",
    ],
    ids=["import steptrace.torch", "from steptrace.torch import record", "steptrace.torch"],
)
def test_each_way_of_importing_the_adapter_gives_its_record(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "steptrace.adapters.torch\n"


def test_importing_steptrace_does_not_import_pytorch():
    """PyTorch loads only when steptrace.torch is used: `import steptrace`, its lazy names and
    the adapters' package leave it out."""
    code = (
        "import sys\n"
        "import steptrace, steptrace.adapters\n"
        "steptrace.open_run, steptrace.load_trace, steptrace.analysis\n"
        "print('torch' in sys.modules)\n"
        "steptrace.torch\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "False\nTrue\n"


def test_passes_outside_the_step_leave_the_recording_unchanged(traces):
    """A stack whose first layer is linear is followed from that layer (no hook on the model:
    bench/torch_overhead.py), and ∂Loss/∂x is δ · W: an evaluation without gradients and a
    call of the first layer alone between the steps change nothing recorded."""
    plain, _ = record_torch(traces, epochs=2)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=traces, name="probed") as rec:
        for _ in range(2):
            for i in range(len(x)):
                with torch.no_grad():
                    model(x)  # an evaluation
                model[0](x[:2])  # the first layer alone, with gradients
                sgd_step(model, optimizer, rec, x[i : i + 1], y[i : i + 1])
    for name in TENSORS:
        np.testing.assert_array_equal(
            steptrace.load_tensor(rec.path, name), steptrace.load_tensor(plain.path, name),
            err_msg=name,
        )  # fmt: skip
    x_grad = x[:1].clone().requires_grad_()
    first = mlp()
    (((first(x_grad) - y[:1]) ** 2).sum() / 2).backward()
    np.testing.assert_array_equal(steptrace.load_tensor(rec.path, "d1")[:1], x_grad.grad.numpy())


def test_the_first_layer_called_alone_before_rec_step_is_named(traces):
    """A stack followed from its first layer: that layer called alone after the model's pass
    starts a pass of its own, and rec.step says so in one line (not a validation pass)."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)
    x, y = seed_tensors()
    with steptrace.torch.record(model, optimizer, out=traces, name="probe") as rec:
        sgd_step(model, optimizer, rec, x[:1], y[:1])
        optimizer.zero_grad()
        out = model(x[1:2])
        model[0](x)  # the first layer alone, after the model's pass
        per_sample = ((out - y[1:2]) ** 2).sum(dim=1) / 2
        per_sample.mean().backward()
        with pytest.raises(
            steptrace.ConfigError, match="did not reach the model's last layer"
        ) as e:
            rec.step(x[1:2], y[1:2], per_sample)
        assert "\n" not in str(e.value)
    assert steptrace.open_trace(rec.path).num_rows == 1
