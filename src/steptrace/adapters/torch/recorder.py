"""A PyTorch loop being recorded: the steps the hooks captured turned into the trace's rows
(δ2 and δ1, which PyTorch does not compute, and each row's gradients by the layers' formulas),
the loop's loss checked against steptrace's, written a chunk at a time, and the run closed
whatever ends the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError, SteptraceError
from ...model.stack import Stack
from ...trace.run import RunWriter, stop_reason
from .capture import Array, Capture
from .layers import Layer

#: How closely the loop's loss and δ at the loss must follow steptrace's squared error.
CONVENTION_RTOL = {"float64": 1e-9, "float32": 1e-4}


class Recorder:
    """A PyTorch loop being recorded; made by :func:`steptrace.torch.record`.
    ``rec.step(x, y, per_sample)`` once per step; ``rec.path`` is the run folder
    (``load_tensor(rec, "d3")`` reads it).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        layers: Sequence[Layer],
        stack: Stack,
        run: RunWriter,
    ) -> None:
        self.run = run
        self.path = run.path
        self.model = model
        self.optimizer = optimizer
        self.layers = list(layers)
        self.stack = stack
        self.dtype = np.float32 if run.numerics.name == "float32" else np.float64
        self.rtol = CONVENTION_RTOL[run.numerics.name]
        self.capture = Capture(optimizer, layers, stack, self.dtype, self._written,
                               self._write_chunk)  # fmt: skip

    def step(self, x: torch.Tensor, y: torch.Tensor, per_sample: torch.Tensor) -> None:
        """Record this step: call it after ``backward()``, before ``optimizer.step()``.
        ``x`` and ``y`` are the step's data (one row per data input), ``per_sample`` each
        row's loss ½ Σ (o − y)² (its mean is the loss the step learns from)."""
        self.capture.step(x, y, per_sample)

    def _written(self) -> int:
        return self.run.steps

    # -- rows -----------------------------------------------------------------------------------

    def _write_chunk(self) -> None:
        """The captured steps as rows, every tensor of the trace, to the run."""
        chunk = self.capture.take()
        if chunk is None:
            return
        m, fields = chunk.m, chunk.values
        top, numbers = self.capture.top, self.capture.numbers
        x, y, loss = fields["x"], fields["y"], fields["loss"].reshape(-1)
        o = {1: x, **{k: fields[f"o{k}"] for k in numbers}}
        d = {k + 1: fields[f"d{k + 1}"] for k in numbers}
        before = np.repeat(chunk.before, m, axis=0)
        after = np.repeat(chunk.after, m, axis=0)
        self._check_conventions(o[top], y, loss, d[top + 1], m)
        # δ2 (and δ1): PyTorch computes no gradient for the data; layer 2's backward rule
        # gives it from δ3, the input layer's passes it on.
        p_rows = self.stack.unflat(before)
        with np.errstate(all="ignore"):
            d2, _ = self.stack.layer(2).backward(x, o[2], d[3], p_rows.get(2))
        d[2] = d[1] = np.asarray(d2).astype(self.dtype)
        values: dict[str, Array] = {"x": x, "y": y, "loss": loss.reshape(-1, 1)}
        values.update({f"o{k}": v for k, v in o.items()})
        values.update({f"d{k}": v for k, v in d.items()})
        values.update(self._parameters(before, after, o, d))
        self.run.write_rows(values, m.tolist(), lr=chunk.lrs)

    def _parameters(
        self, before: Array, after: Array, o: dict[int, Array], d: dict[int, Array]
    ) -> dict[str, Array]:
        """Each linear layer's parameters before and after, and each row's gradients by the
        layer's formulas: ∂W = δ_out ⊗ x, ∂b = δ_out."""
        out: dict[str, Array] = {}
        pos = 0
        for layer in self.layers:
            mod = layer.module
            if not isinstance(mod, nn.Linear):
                continue
            k, n = layer.k, mod.out_features * mod.in_features
            with np.errstate(all="ignore"):
                grad = d[k + 1][:, :, None] * o[k - 1][:, None, :]  # δ_out,j x_i
            out[f"grad_w{k}"] = grad.reshape(len(grad), n)
            out[f"w{k}_before"] = before[:, pos : pos + n]
            out[f"w{k}_after"] = after[:, pos : pos + n]
            pos += n
            if mod.bias is not None:
                b = mod.out_features
                out[f"grad_b{k}"] = d[k + 1]  # δ_out,j
                out[f"b{k}_before"] = before[:, pos : pos + b]
                out[f"b{k}_after"] = after[:, pos : pos + b]
                pos += b
        return out

    def _check_conventions(self, o: Array, y: Array, loss: Array, d_top: Array, m: Array) -> None:
        """The loop's loss is steptrace's: ½ Σ (o − y)² per row, δ at the loss (o − y)/m."""
        rows_m = np.repeat(m, m).astype(self.dtype).reshape(-1, 1)
        with np.errstate(all="ignore"):
            want_loss = ((o - y) ** 2).sum(axis=1) / 2
            want_d = (o - y) / rows_m
        finite = np.isfinite(want_loss) & np.isfinite(loss)
        scale = float(np.abs(want_loss[finite]).max()) if finite.any() else 0.0
        if not np.allclose(loss[finite], want_loss[finite], rtol=self.rtol, atol=self.rtol * scale):
            raise ConfigError(
                "per_sample is not each row's squared error: steptrace records the loss "
                "½ Σ (o − y)², per_sample = ((out - y) ** 2).sum(dim=1) / 2"
            )
        ok = np.isfinite(want_d) & np.isfinite(d_top)
        scale = float(np.abs(want_d[ok]).max()) if ok.any() else 0.0
        if not np.allclose(d_top[ok], want_d[ok], rtol=self.rtol, atol=self.rtol * scale):
            nonzero = ok & (want_d != 0)
            ratio = float(np.median(d_top[nonzero] / want_d[nonzero])) if nonzero.any() else 0.0
            raise ConfigError(
                f"the gradient at the model's output is {ratio:.4g} × (o − y)/m: steptrace "
                "records the mean of the rows' losses, per_sample.mean().backward() (not "
                ".sum(), not nn.MSELoss, which averages over outputs too and drops the ½)"
            )

    # -- the end --------------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Write the last steps, remove the hooks, close the run (incomplete with the reason
        when ``error`` stopped the loop)."""
        capture = self.capture
        if capture.closed:
            return
        capture.closed = True
        try:
            problem: BaseException | None = error
            try:
                self._write_chunk()
            except SteptraceError as exc:
                problem = problem or exc
            if problem is None and capture.pending_m:
                problem = ConfigError(
                    f"rec.step(...) of step {capture.step_number()} was not followed by "
                    "optimizer.step()"
                )
            if problem is None:
                self.run.close("complete")
            else:
                self.run.close("incomplete", stop_reason(problem, self.run.steps))
                if error is None:
                    raise problem
        finally:
            capture.release()

    def remove_hooks(self) -> None:
        self.capture.remove_hooks()

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def summary(self) -> Any:
        return self.run.summary

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, {self.run.steps} steps, {self.run.status})"
