"""The weights' path, compiled: the stack's own maths traced once into straight-line Python.

Walking a run step by step through :class:`~steptrace.model.stack.Stack` costs a Python call
per layer and a list per vector, about forty times the arithmetic itself. So the walk runs
the layer code once on symbols instead of numbers: every ``+``, ``*``, ``where`` the layers
perform becomes one line of a generated function, over local variables, in the order the
layers perform them. Only the lines the new parameters depend on are kept (the loss, and δ
below the lowest layer with parameters, are not needed to learn). The generated function
then does, for each step, exactly the operations the layer code does, on the same operands,
in the same order — so its numbers are the layer code's, bit for bit
(``tests/test_columns.py`` holds the recorder to the plain maths).

A walk of one row a step does not even keep the parameters: it keeps the few numbers their
update needs that are not data (the article's neuron: δ3 alone, one number a step instead of
three weights), and numpy rebuilds the parameters' path from them with the same operations
(:class:`Rebuild`).

Nothing here knows a layer: a new layer class is compiled by running its ``forward`` and
``backward`` like any other.
"""

from __future__ import annotations

import functools
import gc
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..model import layers
from ..model.stack import ParamSet, Stack
from ..numerics import EXACT_MAX_BITS, Number, Numerics, get_numerics
from ..schedule import ChunkPlan

__all__ = ["Rebuild", "Walk", "compile_walk", "walk"]

Array = npt.NDArray[Any]

#: Steps between two looks at the clock (each look costs about a step's arithmetic).
CLOCK_EVERY = 64


@dataclass
class _Tracer:
    """Collects the lines of the generated function: ``name = expression``, with what each
    line reads, so that lines nothing needs can be left out."""

    numerics: Numerics
    lines: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, _Sym] = field(default_factory=dict)

    def line(self, expression: str, reads: tuple[str, ...]) -> _Sym:
        name = f"t{len(self.lines)}"
        self.lines.append((name, expression, reads))
        return _Sym(self, name)

    def operand(self, value: Any) -> tuple[str, tuple[str, ...]]:
        """How an operand is written, and the variable it reads (none for a constant)."""
        if isinstance(value, _Sym):
            return value.name, (value.name,)
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            return repr(value), ()
        for name, known in self.constants.items():
            if type(known) is type(value) and known == value:
                return name, ()
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name, ()

    def constant(self, q: int) -> _Sym:
        """The number system's ``q`` (0 or 1), as a variable."""
        name, _ = self.operand(self.numerics.make(Fraction(q)))
        return _Sym(self, name, constant=True)


class _Sym:
    """A value of the traced step: arithmetic on it writes a line."""

    __slots__ = ("constant", "name", "tracer")

    def __init__(self, tracer: _Tracer, name: str, constant: bool = False) -> None:
        self.tracer, self.name, self.constant = tracer, name, constant

    def _op(self, other: Any, op: str, reverse: bool = False) -> Any:
        if isinstance(other, np.ndarray):
            return NotImplemented  # numpy applies the operation to each symbol of the array
        o, reads = self.tracer.operand(other)
        mine = () if self.constant else (self.name,)
        expression = f"{o} {op} {self.name}" if reverse else f"{self.name} {op} {o}"
        return self.tracer.line(expression, mine + reads)

    def __add__(self, other: Any) -> Any:
        return self._op(other, "+")

    def __radd__(self, other: Any) -> Any:
        return self._op(other, "+", reverse=True)

    def __sub__(self, other: Any) -> Any:
        return self._op(other, "-")

    def __rsub__(self, other: Any) -> Any:
        return self._op(other, "-", reverse=True)

    def __mul__(self, other: Any) -> Any:
        return self._op(other, "*")

    def __rmul__(self, other: Any) -> Any:
        return self._op(other, "*", reverse=True)

    def __truediv__(self, other: Any) -> Any:
        return self._op(other, "/")

    def __rtruediv__(self, other: Any) -> Any:
        return self._op(other, "/", reverse=True)

    def __neg__(self) -> _Sym:
        return self.tracer.line(f"-{self.name}", (self.name,))

    def __ge__(self, other: Any) -> _Sym:
        o, reads = self.tracer.operand(other)
        expression = f"{self.name} >= {o}"
        known = self.tracer.conditions.get(expression)  # ReLU's gate: one test, used twice
        if known is None:
            known = self.tracer.line(expression, (self.name, *reads))
            self.tracer.conditions[expression] = known
        return known

    # The operations of steptrace.model.layers that differ between numbers and columns.

    def where(self, a: Any, b: Any) -> _Sym:
        (ta, ra), (tb, rb) = self.tracer.operand(a), self.tracer.operand(b)
        return self.tracer.line(f"{ta} if {self.name} else {tb}", (self.name, *ra, *rb))

    def zero_like(self) -> _Sym:
        return self.tracer.constant(0)

    def one_like(self) -> _Sym:
        return self.tracer.constant(1)

    def exp(self) -> _Sym:
        return self.tracer.line(f"_exp({self.name})", (self.name,))


_STEP_BY_ROW = """
def loop(p, lr, rows, order, sizes, path, deadline, too_big, every):
    {params} = p
    for start in range(0, len(order), every):
        for i in order[start : start + every]:
            {inputs} = rows[i]
{sample}
{first}
{update}
            {params} = {new}
            path += ({kept})
{check}
        if _now() >= deadline:
            return
"""

_STEP_BY_BATCH = """
def loop(p, lr, rows, order, sizes, path, deadline, too_big, every):
    {params} = p
    pos = 0
    for s, m in enumerate(sizes):
        end = pos + m
        {inputs} = rows[order[pos]]
{sample}
{first}
        for i in order[pos + 1 : end]:
            {inputs} = rows[i]
{sample_inner}
{add}
        pos = end
{update}
        {params} = {new}
        path += ({kept})
{check}
        if not (s + 1) % every and _now() >= deadline:
            return
"""

_TOO_BIG = """{pad}if too_big(({params})):
{pad}    return"""


@dataclass(frozen=True)
class Rebuild:
    """How numpy rebuilds the parameters' path from the few numbers a step of the walk kept.

    A step's update is ``p_i − u_i`` with ``u_i`` computed from this step's gradient, and a
    gradient is a product of a δ and an input (``t9 * x0``): so the walk keeps only the δ
    and the inputs that are not data (``kept``), and numpy computes each gradient
    (``grads``), each ``u_i`` (``lines``, then ``subtracted``) and the path, parameter by
    parameter, with ``np.subtract.accumulate``: the same operations on the same operands in
    the same order as the walk, so the same numbers, bit for bit.
    """

    kept: tuple[str, ...]
    inputs: tuple[str, ...]
    grads: tuple[str, ...]
    lines: tuple[tuple[str, str], ...]
    subtracted: tuple[str, ...]
    constants: dict[str, Any]

    def path(self, start: Sequence[Number], kept: Array, data: Array, lr: Number) -> Array:
        """The path (steps + 1 rows): ``start``, then the parameters after each step whose
        kept numbers are the rows of ``kept``; ``data``: each step's sample, a row each."""
        env: dict[str, Any] = {**self.constants, "lr": lr}
        env.update((name, data[:, j]) for j, name in enumerate(self.inputs))
        env.update((name, kept[:, j]) for j, name in enumerate(self.kept))
        for i, expression in enumerate(self.grads):
            env[f"g{i}"] = eval(expression, env)
        for name, expression in self.lines:
            env[name] = eval(expression, env)
        path = np.empty((len(kept) + 1, len(start)), dtype=kept.dtype)
        for i, name in enumerate(self.subtracted):
            column = np.empty(len(kept) + 1, dtype=kept.dtype)
            column[0] = start[i]
            column[1:] = env[name]
            path[:, i] = np.subtract.accumulate(column)
        return path


@dataclass(frozen=True)
class Walk:
    """A compiled walk: ``loop`` (its text in ``source``), and, when a step keeps fewer
    numbers than the parameters, how to rebuild the path from them (else ``rebuild`` is
    None and the walk keeps the parameters after each step)."""

    loop: Callable[..., None]
    source: str
    rebuild: Rebuild | None


@functools.lru_cache(maxsize=64)
def compile_walk(stack: Stack, numerics: str, batched: bool) -> Walk:
    """The generated walk of ``stack`` in a number system (``batched``: steps of several
    rows, whose gradients are added in the order the step visits them).

    ``loop(p, lr, rows, order, sizes, path, deadline, too_big, every)`` walks from the flat
    parameters ``p``: ``rows[i]`` is sample i as ``(x1, …, xn, y1, …)``, ``order`` the
    samples visited, ``sizes`` the rows of each step. It extends the flat list ``path`` by
    the numbers each step keeps (the parameters after it, or :attr:`Rebuild.kept`), and stops
    early once ``too_big(parameters)`` says so (exact runs), or once ``time.monotonic()`` has
    passed ``deadline`` when it looks, every ``every`` steps.
    """
    system = get_numerics(numerics)
    tracer = _Tracer(system)
    n_params = stack.n_params
    p = _symbols(tracer, "p", n_params)
    x = _symbols(tracer, "x", stack.n_in)
    y = _symbols(tracer, "y", stack.n_out)
    m, lr = _Sym(tracer, "m"), _Sym(tracer, "lr")
    params = stack.unflat(_array(p))
    # One row (a rows axis of one), in the layers' shape.
    outs = stack.forward(params, _array(x).reshape(1, *stack.in_shape))
    grads = stack.backward(params, _array(x).reshape(1, *stack.in_shape), outs,
                           _array(y).reshape(1, -1), m, every_delta=False).grads  # fmt: skip
    grad: list[_Sym] = stack.flat(grads)[0].tolist()  # this row's gradient, parameters' order
    sample = _kept(tracer, grad)
    g = _symbols(tracer, "g", n_params)
    # The batch's running total plus this row's gradient, as Params.__add__ adds them: one
    # line per parameter, in the parameters' order.
    mark = len(tracer.lines)
    running, row = stack.unflat(_array(g)), stack.unflat(_array(grad))
    stack.flat({k: running[k] + row[k] for k in running})
    adds = tracer.lines[mark:]
    mark = len(tracer.lines)
    # ŵ = w − α·Σ grad
    new: list[_Sym] = stack.flat(stack.update(params, lr, stack.unflat(_array(g)))).tolist()
    updates = tracer.lines[mark:]
    inputs = [*x, *y]
    rebuild = None
    if not batched:
        # Every step is one row: δ at the loss divided by m = 1 is itself, bit for bit (IEEE
        # 754 division by one is exact, NaN included; rationals too), so the division goes.
        sample = [(n, e.removesuffix(" / m"), r) for n, e, r in sample]
        rebuild = _rebuild(sample, grad, updates, new, inputs, tracer.constants)
    kept = p if rebuild is None else [_Sym(tracer, name) for name in rebuild.kept]
    pad = 12 if not batched else 8
    names = {
        "params": _names(p),
        "inputs": _names(inputs),
        "new": _names(new),
        "kept": _names(kept),
        "check": _TOO_BIG.format(pad=" " * pad, params=_names(p)) if system.is_exact else "",
    }
    first = "\n".join(f"{' ' * pad}g{i} = {s.name}" for i, s in enumerate(grad))
    if batched:
        add = "\n".join(f"            g{i} = {expr}" for i, (_, expr, _) in enumerate(adds))
        source = _STEP_BY_BATCH.format(
            sample=_lines(sample, 8), first=first, add=add, sample_inner=_lines(sample, 12),
            update=_lines(updates, 8), **names,
        )  # fmt: skip
    else:
        source = _STEP_BY_ROW.format(sample=_lines(sample, 12), first=first,
                                     update=_lines(updates, 12), **names)  # fmt: skip
    namespace: dict[str, Any] = {**tracer.constants, "_exp": layers.exp, "_now": time.monotonic}
    code = compile(source, f"<steptrace walk of {stack.n_in}→{stack.sizes}>", "exec")
    exec(code, namespace)
    return Walk(namespace["loop"], source, rebuild)


def _symbols(tracer: _Tracer, prefix: str, n: int) -> list[_Sym]:
    return [_Sym(tracer, f"{prefix}{i}") for i in range(n)]


def _array(symbols: Sequence[_Sym]) -> Array:
    """Symbols as a numpy array of objects (numpy's operations then write lines)."""
    out = np.empty(len(symbols), dtype=object)
    out[:] = list(symbols)
    return out


#: One traced operation that numpy computes on columns as Python does on numbers.
_ARITHMETIC = re.compile(r"(?P<a>[\w.+-]+) [-+*/] (?P<b>[\w.+-]+)")


def _rebuild(
    sample: Sequence[tuple[str, str, tuple[str, ...]]],
    grad: Sequence[_Sym],
    updates: Sequence[tuple[str, str, tuple[str, ...]]],
    new: Sequence[_Sym],
    inputs: Sequence[_Sym],
    constants: dict[str, Any],
) -> Rebuild | None:
    """What a step of a walk of one row a step must keep for numpy to rebuild the path (see
    :class:`Rebuild`), or None when that would keep as many numbers as the parameters, or
    when the update is not ``p_i − u_i`` with ``u_i`` free of the parameters."""
    lines = {name: expression for name, expression, _ in sample}
    outside = {s.name for s in inputs} | set(constants) | {"lr"}
    kept: list[str] = []
    grads = []
    for s in grad:
        if s.name in outside:
            grads.append(s.name)
            continue
        if s.name not in lines:
            return None  # a parameter, as its own gradient
        match = _ARITHMETIC.fullmatch(lines[s.name])
        operands = [match["a"], match["b"]] if match else []
        traced = [o for o in operands if o in lines]
        if (
            match
            and all(o in lines or o in outside or _literal(o) for o in operands)
            and (len([o for o in traced if o not in kept]) <= 1)
        ):
            kept += [o for o in traced if o not in kept]
            grads.append(lines[s.name])
        else:  # keep the gradient itself
            kept += [s.name] if s.name not in kept else []
            grads.append(s.name)
    if not kept or len(kept) >= len(grad):
        return None
    # The update: lines of the gradients and α (``t19 = lr * g0``), then ``p_i − u_i``.
    final = {s.name: i for i, s in enumerate(new)}
    known = {*outside, *(f"g{i}" for i in range(len(grad)))}
    before: list[tuple[str, str]] = []
    subtracted: dict[int, str] = {}
    for name, expression, _ in updates:
        match = _ARITHMETIC.fullmatch(expression)
        if match is None:
            return None
        if name in final:
            i = final[name]
            if expression != f"p{i} - {match['b']}" or match["b"] not in known:
                return None
            subtracted[i] = match["b"]
        elif all(o in known or _literal(o) for o in match.groups()):
            before.append((name, expression))
            known.add(name)
        else:
            return None
    if len(subtracted) != len(new):
        return None
    return Rebuild(tuple(kept), tuple(s.name for s in inputs), tuple(grads), tuple(before),
                   tuple(subtracted[i] for i in range(len(new))), dict(constants))  # fmt: skip


def _literal(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _kept(tracer: _Tracer, outputs: Sequence[_Sym]) -> list[tuple[str, str, tuple[str, ...]]]:
    """The traced lines the outputs depend on, in order (the rest is not needed to learn)."""
    needed = {s.name for s in outputs}
    kept = []
    for name, expression, reads in reversed(tracer.lines):
        if name in needed:
            kept.append((name, expression, reads))
            needed.update(reads)
    return kept[::-1]


def _names(symbols: Sequence[_Sym]) -> str:
    """``a, b,``: a target or a tuple of any length, one included."""
    return "".join(f"{s.name}, " for s in symbols).rstrip()


def _lines(lines: Sequence[tuple[str, str, tuple[str, ...]]], indent: int) -> str:
    pad = " " * indent
    return "\n".join(f"{pad}{name} = {expression}" for name, expression, _ in lines) or f"{pad}pass"


def walk(
    stack: Stack,
    params: ParamSet,
    lr: Number,
    xs: Sequence[list[Number]],
    ys: Sequence[list[Number]],
    plan: ChunkPlan,
    numerics: Numerics,
    max_seconds: float | None = None,
) -> Array:
    """The learning phase through the steps of ``plan``: the parameters before its first step
    and after each step walked, a row each, flat (:meth:`Stack.flat`), in the run's numbers
    (an object array of ``Fraction`` in exact runs).

    For every step: its data inputs' forward and backward passes, their gradients added in the
    order the step visits them, and the update. ``xs[i]`` and ``ys[i]`` are sample i in the
    run's numbers. The walk may end early — after ``max_seconds``, or in exact runs once a
    parameter outgrows the exact limit — so that the recorder can flush (or stop) in time; it
    always walks at least one step.
    """
    start = _numbers(stack.flat(params), numerics)
    n = len(start)
    if not n:  # nothing to learn: the path stands still
        return np.empty((len(plan.starts) + 1, 0), dtype=numerics.dtype or object)
    compiled = compile_walk(stack, numerics.name, bool((plan.sizes > 1).any()))
    rows = [(*x, *y) for x, y in zip(xs, ys, strict=True)]
    rebuild = compiled.rebuild
    path: list[Number] = list(start) if rebuild is None else []
    deadline = float("inf") if max_seconds is None else time.monotonic() + max_seconds
    too_big = _too_big if numerics.is_exact else None
    order = plan.sample.tolist()
    # The walk makes no cycles: the cyclic garbage collector, which would look at the path's
    # numbers again and again, only costs it time (about a tenth, measured).
    collecting = gc.isenabled()
    gc.disable()
    try:
        compiled.loop(tuple(start), lr, rows, order, plan.sizes.tolist(), path, deadline,
                      too_big, _clock_every(plan))  # fmt: skip
    finally:
        if collecting:
            gc.enable()
    if rebuild is None:
        return _in_run(path, numerics).reshape(-1, n)
    kept = _in_run(path, numerics).reshape(-1, len(rebuild.kept))
    data = _in_run(rows, numerics)[plan.sample[: len(kept)]]
    return rebuild.path(start, kept, data, lr)


def _numbers(values: Array, numerics: Numerics) -> list[Number]:
    """An array's numbers as the walk computes with them: Python floats for float64 (the same
    IEEE doubles, and far faster), numpy scalars for float32 (every operation rounds to
    float32), Fractions for exact."""
    return list(values.tolist()) if numerics.dtype == np.float64 else list(values)


def _in_run(numbers: Sequence[Any], numerics: Numerics) -> Array:
    """Numbers, or rows of numbers, as an array in the run's numbers (of ``Fraction`` objects
    in exact runs)."""
    return np.array(numbers, dtype=numerics.dtype or object)


def _clock_every(plan: ChunkPlan) -> int:
    """How often the walk looks at the clock: every :data:`CLOCK_EVERY` steps, rounded up to
    whole epochs when the chunk holds whole epochs, so that a walk cut short by the clock still
    hands over whole epochs (flushed parts then hold whole epochs, as without the clock)."""
    spe = plan.steps_per_epoch
    steps = plan.s1 - plan.s0
    if plan.s0 % spe == 0 and spe <= steps:
        return spe * -(-CLOCK_EVERY // spe)
    return CLOCK_EVERY


def _too_big(values: Sequence[Any]) -> bool:
    return any(
        q.numerator.bit_length() > EXACT_MAX_BITS or q.denominator.bit_length() > EXACT_MAX_BITS
        for q in values
    )
