"""A graph run's steps recomputed, a chunk of whole steps at a time (see :mod:`.graph`): the
gradient the optimizer used is the sum of the step's rows' gradients (and of a module's calls),
the optimizer's update gives the parameters and state after the step from the ones before,
and a batch norm's running statistics follow from the step's rows. The optimizers' rules, as
PyTorch's single-tensor code writes them:

    sgd      g ← g + λ w;  b ← g (first step), μ b + (1 − τ) g;  g ← g + μ b (Nesterov), b
             ŵ = w − α g
    adam     t ← t + 1;  g ← g + λ w (adam) or w ← w (1 − α λ) (adamw)
             m ← m + (1 − β1)(g − m);  v ← β2 v + (1 − β2) g²;  (amsgrad: v̄ ← max(v̄, v))
             ŵ = w − α/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
    rmsprop  t ← t + 1;  g ← g + λ w;  s ← a s + (1 − a) g²;  (centered: ḡ ← ḡ + (1 − a)(g − ḡ),
             s − ḡ²);  d = √· + ε;  b ← μ b + g/d, ŵ = w − α b;  or ŵ = w − α g/d
    running  μ̂ ← (1 − f) μ̂ + f μ;  σ̂² ← (1 − f) σ̂² + f · n/(n − 1) σ²;  f the momentum (or
             1/batches)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .network import Network, Values, step_sums
from .problem import Array

if TYPE_CHECKING:
    from .graph import GraphChunk

__all__ = ["STEPS", "check_steps"]

#: The order of the step checks on a row (after every row's: see :mod:`.network`).
STEPS = 30_000


def check_steps(chunk: GraphChunk, net: Network, v: Values, row_grads: dict[str, Array]) -> None:
    """Every step of the chunk: its gradients' sums, its statistics, its update."""
    starts = chunk.starts
    for base, grads in row_grads.items():
        name = f"step_grad_{base}"
        if name in v:
            _at_steps(chunk, name, v[name], step_sums(grads, starts),
                      "its rows' gradients add up to", STEPS)  # fmt: skip
    for layer in net.layers:
        if layer.state and f"running_mean{layer.k}_after" in v:
            _running(chunk, layer.k, layer.settings.get("momentum"), v[layer.input], v)
    if net.optimizer.get("checked"):
        _update(chunk, net, v)


def _at_steps(chunk: GraphChunk, name: str, recorded: Array, expected: Array, why: str,
              order: int) -> None:  # fmt: skip
    """``expected`` (one row a step) against the first row of each step of ``recorded``."""
    flat = recorded.reshape(len(recorded), -1)
    want = flat.copy()
    want[chunk.starts] = expected.reshape(len(chunk.starts), -1)
    chunk.first_bad(name, flat, want, why, order, chunk.run.tol)


def _running(chunk: GraphChunk, k: int, momentum: Any, x: Array, v: Values) -> None:
    """A batch norm's running statistics after each step, from the ones before and the
    step's rows (by channel: the rows' values and pixels together)."""
    starts, sizes = chunk.starts, chunk.sizes
    before = {key: v[f"{key}{k}_before"][starts].reshape(len(starts), -1)
              for key in ("running_mean", "running_var", "num_batches_tracked")}  # fmt: skip
    means, variances = [], []
    for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        rows = np.moveaxis(x[start : start + size], 1, 0).reshape(x.shape[1], -1)
        n = rows.shape[1]
        mu = rows.mean(axis=1)
        means.append(mu)
        variances.append(((rows - mu[:, None]) ** 2).sum(axis=1) / max(n - 1, 1))
    batches = before["num_batches_tracked"] + 1
    f = (1 / batches) if momentum is None else float(momentum)
    expected = {
        "running_mean": f * np.array(means) + (1 - f) * before["running_mean"],
        "running_var": f * np.array(variances) + (1 - f) * before["running_var"],
        "num_batches_tracked": batches,
    }
    for key, want in expected.items():
        _at_steps(chunk, f"{key}{k}_after", v[f"{key}{k}_after"], want,
                  "the step's rows give", STEPS + 1)  # fmt: skip


def _update(chunk: GraphChunk, net: Network, v: Values) -> None:
    """Each parameter and its optimizer state after each step, by the optimizer's rule."""
    opt, starts = net.optimizer, chunk.starts
    kind, s = str(opt.get("type")), dict(opt.get("settings", {}))
    rule = _RULES.get(kind)
    if rule is None:
        return
    lr = chunk.col("lr")[starts][:, None]
    bases = [n.removeprefix("step_grad_") for n in net.shapes if n.startswith("step_grad_")]
    for base in bases:
        if f"{base}_after" not in v:
            continue
        w = v[f"{base}_before"][starts].reshape(len(starts), -1)
        g = v[f"step_grad_{base}"][starts].reshape(len(starts), -1)
        state = {key: v[f"{key}_{base}_before"][starts].reshape(len(starts), -1)
                 for key in opt.get("state", [])}  # fmt: skip
        with np.errstate(all="ignore"):
            after, new = rule(w, -g if s.get("maximize") else g, state, lr, s, kind)
        _at_steps(chunk, f"{base}_after", v[f"{base}_after"], after,
                  f"{kind}'s update gives", STEPS + 2)  # fmt: skip
        for key, want in new.items():
            _at_steps(chunk, f"{key}_{base}_after", v[f"{key}_{base}_after"], want,
                      f"{kind}'s update gives", STEPS + 3)  # fmt: skip


Rule = Any


def _sgd(w: Array, g: Array, st: dict[str, Array], lr: Array, s: dict[str, Any],
         kind: str) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    wd, momentum = float(s.get("weight_decay", 0)), float(s.get("momentum", 0))
    if wd:
        g = g + wd * w
    new = {}
    if momentum:
        buf = st["momentum_buffer"]
        fresh = np.isnan(buf).all(axis=1, keepdims=True)  # none before the first step
        buf = np.where(fresh, g, momentum * buf + (1 - float(s.get("dampening", 0))) * g)
        new["momentum_buffer"] = buf
        g = g + momentum * buf if s.get("nesterov") else buf
    return w + (-lr) * g, new


def _adam(w: Array, g: Array, st: dict[str, Array], lr: Array, s: dict[str, Any],
          kind: str) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    beta1, beta2 = (float(b) for b in s["betas"])
    wd, eps = float(s.get("weight_decay", 0)), float(s["eps"])
    step = st["step"] + 1
    if wd and kind == "adamw":
        w = w * (1 - lr * wd)
    elif wd:
        g = g + wd * w
    m = st["exp_avg"] + (1 - beta1) * (g - st["exp_avg"])
    v = beta2 * st["exp_avg_sq"] + (1 - beta2) * g * g
    new = {"step": step, "exp_avg": m, "exp_avg_sq": v}
    size = lr / (1 - beta1**step)
    scale = np.sqrt(1 - beta2**step)
    if s.get("amsgrad"):
        new["max_exp_avg_sq"] = most = np.maximum(st["max_exp_avg_sq"], v)
        denom = np.sqrt(most) / scale + eps
    else:
        denom = np.sqrt(v) / scale + eps
    return w + (-size) * (m / denom), new


def _rmsprop(w: Array, g: Array, st: dict[str, Array], lr: Array, s: dict[str, Any],
             kind: str) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    alpha, eps = float(s["alpha"]), float(s["eps"])
    wd, momentum = float(s.get("weight_decay", 0)), float(s.get("momentum", 0))
    if wd:
        g = g + wd * w
    sq = alpha * st["square_avg"] + (1 - alpha) * g * g
    new = {"step": st["step"] + 1, "square_avg": sq}
    if s.get("centered"):
        mean = st["grad_avg"] + (1 - alpha) * (g - st["grad_avg"])
        new["grad_avg"] = mean
        avg = np.sqrt(sq - mean * mean) + eps
    else:
        avg = np.sqrt(sq) + eps
    if momentum > 0:
        buf = momentum * st["momentum_buffer"] + g / avg
        new["momentum_buffer"] = buf
        return w + (-lr) * buf, new
    return w + (-lr) * (g / avg), new


_RULES: dict[str, Rule] = {"sgd": _sgd, "adam": _adam, "adamw": _adam, "rmsprop": _rmsprop}
