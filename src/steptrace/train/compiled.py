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

Nothing here knows a layer: a new layer class is compiled by running its ``forward`` and
``backward`` like any other.
"""

from __future__ import annotations

import functools
import gc
import math
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

__all__ = ["compile_walk", "walk"]

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

    def _op(self, other: Any, op: str, reverse: bool = False) -> _Sym:
        o, reads = self.tracer.operand(other)
        mine = () if self.constant else (self.name,)
        expression = f"{o} {op} {self.name}" if reverse else f"{self.name} {op} {o}"
        return self.tracer.line(expression, mine + reads)

    def __add__(self, other: Any) -> _Sym:
        return self._op(other, "+")

    def __radd__(self, other: Any) -> _Sym:
        return self._op(other, "+", reverse=True)

    def __sub__(self, other: Any) -> _Sym:
        return self._op(other, "-")

    def __rsub__(self, other: Any) -> _Sym:
        return self._op(other, "-", reverse=True)

    def __mul__(self, other: Any) -> _Sym:
        return self._op(other, "*")

    def __rmul__(self, other: Any) -> _Sym:
        return self._op(other, "*", reverse=True)

    def __truediv__(self, other: Any) -> _Sym:
        return self._op(other, "/")

    def __rtruediv__(self, other: Any) -> _Sym:
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


_TEMPLATE = """
def loop(p, lr, rows, order, sizes, path, deadline, too_big, every):
    {params} = p
    pos = 0
    for s, m in enumerate(sizes):
        end = pos + m
{accumulate}
        pos = end
{update}
        {params} = {new}
        path += ({params})
        if too_big is not None and too_big(({params})):
            return
        if not (s + 1) % every and _now() >= deadline:
            return
"""

_ONE_SAMPLE = """        {inputs} = rows[order[pos]]
{sample}
{first}"""

_SAMPLES = """        {inputs} = rows[order[pos]]
{sample}
{first}
        for i in order[pos + 1 : end]:
            {inputs} = rows[i]
{sample_inner}
{add}"""


@functools.lru_cache(maxsize=64)
def compile_walk(stack: Stack, numerics: str, batched: bool) -> Callable[..., None]:
    """The generated walk of ``stack`` in a number system (``batched``: steps of several
    rows, whose gradients are added in the order the step visits them).

    ``loop(p, lr, rows, order, sizes, path, deadline, too_big, every)`` walks from the flat
    parameters ``p``: ``rows[i]`` is sample i as ``(x1, …, xn, y1, …)``, ``order`` the
    samples visited, ``sizes`` the rows of each step. It extends the flat list ``path`` by the
    parameters after each step (no tuple a step to keep) and stops early once
    ``too_big(parameters)`` says so, or once
    ``time.monotonic()`` has passed ``deadline`` when it looks, every ``every`` steps.
    """
    system = get_numerics(numerics)
    tracer = _Tracer(system)
    n_params = stack.n_params
    p = [_Sym(tracer, f"p{i}") for i in range(n_params)]
    x = [_Sym(tracer, f"x{i}") for i in range(stack.n_in)]
    y = [_Sym(tracer, f"y{j}") for j in range(stack.n_out)]
    m, lr = _Sym(tracer, "m"), _Sym(tracer, "lr")
    params = stack.unflat(p)
    outs = stack.forward(params, x)
    grads = stack.backward(params, x, outs, y, m, every_delta=False).grads
    grad = stack.flat(grads)  # this row's gradient, in the parameters' order
    sample = _kept(tracer, grad)
    g = [_Sym(tracer, f"g{i}") for i in range(n_params)]
    # The batch's running total plus this row's gradient, as Params.__add__ adds them: one
    # line per parameter, in the parameters' order.
    mark = len(tracer.lines)
    running, row = stack.unflat(g), stack.unflat(grad)
    stack.flat({k: running[k] + row[k] for k in running})
    adds = tracer.lines[mark:]
    mark = len(tracer.lines)
    new = stack.flat(stack.update(params, lr, stack.unflat(g)))  # ŵ = w − α·Σ grad
    updates = tracer.lines[mark:]
    names = {
        "params": _names(p),
        "inputs": _names([*x, *y]),
        "new": _names(new),
    }
    first = "\n".join(f"        g{i} = {s.name}" for i, s in enumerate(grad))
    if batched:
        add = "\n".join(f"            g{i} = {expr}" for i, (_, expr, _) in enumerate(adds))
        accumulate = _SAMPLES.format(sample=_lines(sample, 8), first=first, add=add,
                                     sample_inner=_lines(sample, 12), **names)  # fmt: skip
    else:
        # Every step is one row: δ at the loss divided by m = 1 is itself, bit for bit (IEEE
        # 754 division by one is exact, NaN included; rationals too), so the division goes.
        alone = [(n, e.removesuffix(" / m"), r) for n, e, r in sample]
        accumulate = _ONE_SAMPLE.format(sample=_lines(alone, 8), first=first, **names)
    source = _TEMPLATE.format(accumulate=accumulate, update=_lines(updates, 8), **names)
    namespace: dict[str, Any] = {**tracer.constants, "_exp": layers.exp, "_now": time.monotonic}
    code = compile(source, f"<steptrace walk of {stack.n_in}→{stack.sizes}>", "exec")
    exec(code, namespace)
    loop: Callable[..., None] = namespace["loop"]
    loop.__doc__ = source  # for anyone who wants to read what runs
    return loop


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
    start = list(stack.flat(params))
    n = len(start)
    if not n:  # nothing to learn: the path stands still
        return np.empty((len(plan.starts) + 1, 0), dtype=numerics.dtype or object)
    loop = compile_walk(stack, numerics.name, bool((plan.sizes > 1).any()))
    rows = [(*x, *y) for x, y in zip(xs, ys, strict=True)]
    path: list[Number] = list(start)
    deadline = float("inf") if max_seconds is None else time.monotonic() + max_seconds
    too_big = _too_big if numerics.is_exact else None
    # The walk makes no cycles: the cyclic garbage collector, which would look at the path's
    # numbers again and again, only costs it time (about a tenth, measured).
    collecting = gc.isenabled()
    gc.disable()
    try:
        loop(tuple(start), lr, rows, plan.sample.tolist(), plan.sizes.tolist(), path, deadline,
             too_big, _clock_every(plan))  # fmt: skip
    finally:
        if collecting:
            gc.enable()
    if numerics.dtype is not None:
        return np.array(path, dtype=numerics.dtype).reshape(-1, n)
    flat = np.empty(len(path), dtype=object)
    flat[:] = path
    return flat.reshape(-1, n)


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
