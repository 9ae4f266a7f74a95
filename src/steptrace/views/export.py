"""A replay as one HTML file that opens in any browser, offline: what the dashboard shows,
computed here, embedded as JSON, and laid out by a small script in the page.

One run gives the replay page (each step as the article writes it: layer chain, forward
table, loss, backward pass, update, what changed; the loss curve); several runs give the
comparison at one cursor (their loss and weights on one step axis, all runs side by side at
the cursor's step). Runs of images carry their feature maps, δ maps and kernels as the
dashboard draws them (:mod:`.heatmaps`): each cell's value as text, the pooled maxima; the
page's script draws them as SVG heatmaps. A comparison of runs of images carries, at each step,
the first convolution's feature maps and each convolution's kernels of every run side by side,
and each run's minus the first's. A window of steps is exported (the first :data:`DEFAULT_WINDOW` by
default); the file says which steps it holds and how many each run has.

Every text of the data is stored once, in a table of strings, and referred to by its index:
the same weights appear as one step's ŵ and the next step's w, the same headers on every
step. :mod:`.html` renders the page.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigError, TraceError, WriteError
from ..trace.loader import is_folder_of_runs
from ..trace.opener import open_trace
from ..trace.reader import Trace
from .curves import Curve, curve
from .divergence import Divergence, run_divergence
from .folder import last_step
from .heatmaps import Heatmaps
from .notation import model_description
from .side_by_side import (
    compare_maps,
    compare_views,
    default_image,
    default_weights,
    weight_label,
    weight_runs,
)
from .step import StepView, Table, step_views

__all__ = ["DEFAULT_WINDOW", "MAX_WINDOW", "Export", "export_html", "replay_data", "window"]

#: Steps exported when no window is given.
DEFAULT_WINDOW = 1_000
#: The most steps one file holds (a float run's step takes about 1 kB of the file).
MAX_WINDOW = 20_000


@dataclass(frozen=True)
class Export:
    """What :func:`export_html` wrote."""

    path: Path
    size: int  # bytes
    runs: tuple[str, ...]
    first: int
    last: int  # the window of steps the file holds, both included
    steps: dict[str, int]  # each run's recorded steps

    def describe(self) -> str:
        """``replay.html: steps 0 to 2 of article (3 steps), 41 kB``"""
        runs = ", ".join(f"{r} ({n:,} steps)" for r, n in self.steps.items())
        return f"{self.path}: steps {self.first:,} to {self.last:,} of {runs}; {_size(self.size)}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{math.ceil(n / 1e3):,} kB"


def window(last: int, first: int | None = None, to: int | None = None) -> tuple[int, int]:
    """The steps to export from a run (or runs) whose last step is ``last``: from ``first``
    (default 0) to ``to`` (default :data:`DEFAULT_WINDOW` steps on), cut at ``last``.

    >>> window(2), window(5999, 100), window(5999, 10, 19)
    ((0, 2), (100, 1099), (10, 19))
    """
    lo = 0 if first is None else first
    if to is not None and to < lo:
        raise ConfigError(f"--to {to} comes before --from {lo}")
    if last < 0:
        raise TraceError("no recorded steps to export yet")
    if lo > last:
        raise TraceError(f"no step {lo} to export: the runs' steps are 0 to {last}")
    hi = min(lo + DEFAULT_WINDOW - 1 if to is None else to, last)
    if hi - lo + 1 > MAX_WINDOW:
        raise ConfigError(
            f"steps {lo} to {hi} are {hi - lo + 1:,} steps; one file holds at most "
            f"{MAX_WINDOW:,}: export a narrower window (--from/--to), or several files"
        )
    return lo, hi


class _Strings:
    """Each text once: ``strings(text)`` is its index in :attr:`table`."""

    def __init__(self) -> None:
        self.table: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        i = self._index.get(text)
        if i is None:
            i = self._index[text] = len(self.table)
            self.table.append(text)
        return i

    def all(self, texts: Sequence[str]) -> list[int]:
        return [self(t) for t in texts]


class _Heads:
    """Each table header once per run: ``heads(headers)`` is its index in :attr:`table`."""

    def __init__(self, s: _Strings) -> None:
        self.s = s
        self.table: list[list[int]] = []
        self._index: dict[tuple[str, ...], int] = {}

    def __call__(self, headers: tuple[str, ...]) -> int:
        i = self._index.get(headers)
        if i is None:
            i = self._index[headers] = len(self.table)
            self.table.append(self.s.all(headers))
        return i


def _table(table: Table, s: _Strings, heads: _Heads) -> list[Any]:
    """``[header, rows, changed]``: the index of the header in the run's ``heads``, each row's
    texts, the flat positions (row × columns + column) of the cells that changed."""
    width = len(table.headers)
    changed = [j * width + i for i, flags in enumerate(table.flags)
               for j, flag in enumerate(flags) if flag]  # fmt: skip
    return [heads(table.headers), [s.all(row) for row in table.rows()], sorted(changed)]


def _maps(maps: Heatmaps, s: _Strings, section: int = 0, how: int = 0) -> list[Any]:
    """A tensor's heatmaps: ``[section, title, note, shape, grids a row, values written,
    name, grid titles, grid places, texts, marked, mark, how]``: the section it belongs to (0
    forward, 1 backward, 2 the update), the cells' texts row by row, grid after grid, the flat
    positions of the marked cells (the pooled maxima), a marked cell's words, and (in a
    comparison) 0 for side by side or 1 for the difference."""
    texts = [s(t) for m in maps.maps for row in m.texts for t in row]
    h, w = maps.shape[-2:]
    marked = sorted(g * h * w + i * w + j for g, m in enumerate(maps.maps) for i, j in m.marked)
    return [section, s(maps.title), s(maps.note), list(maps.shape), maps.columns,
            int(maps.written), s(maps.name), s.all([m.title for m in maps.maps]),
            [list(m.lead) for m in maps.maps], texts, marked, s(maps.mark), how]  # fmt: skip


def _images(view: StepView, s: _Strings) -> list[Any]:
    """A step's heatmaps, as the dashboard's replay page draws them: the forward pass's
    images, the δ maps, each convolution's kernels (w, grad, ŵ, ŵ − w); then each
    convolution's kernel note."""
    groups = [_maps(m, s, 0) for m in view.forward_maps()]
    groups += [_maps(m, s, 1) for m in view.backward_maps()]
    for k in view.kernel_layers:
        groups += [_maps(m, s, 2) for m in view.kernels(k)]
    return [groups, s.all([view.kernel_note(k) for k in view.kernel_layers])]


def _step(view: StepView, s: _Strings, heads: _Heads) -> list[Any]:
    """One step of the replay page, what the dashboard's step panel shows:
    ``[label, header, changes, changes is news, forward chain, backward chain, tables,
    update, updated values, update note, weights moved]``, and in a run of images its
    heatmaps (:func:`_images`); the chains flat, a box after another (``value, note,
    changed`` forward; ``formula, value, note, changed`` backward); the tables forward, loss,
    backward, weights (see :func:`_table`)."""
    forward = [x for b in view.chain() for x in (s(b.value), s(b.note), int(b.changed))]
    backward = [x for b in view.backward_chain()
                for x in (s(b.formula), s(b.value), s(b.note), int(b.changed))]  # fmt: skip
    tables = (view.forward_table(), view.loss_table(), view.backward_table(),
              view.weights_table())  # fmt: skip
    out = [
        s(view.label),
        s(view.header()),
        s(view.changes_text()),
        int(bool(view.changed) and view.previous is not None),
        forward,
        backward,
        [_table(t, s, heads) for t in tables],
        s(view.update_text()),
        s.all(view.update_results()),
        s(view.update_note()),
        int(bool(view.weights_changed)),
    ]
    return [*out, _images(view, s)] if view.images else out


def _curve(c: Curve) -> dict[str, Any]:
    values = [None if not math.isfinite(v) else float(v) for v in c.frame["value"]]
    return {"s": [int(v) for v in c.frame["step"]], "v": values, "note": c.note()}


def _run(key: str, trace: Trace, last: int, div: Divergence | None) -> dict[str, Any]:
    planned = trace.meta.get("steps")
    return {
        "name": key,
        "lr": trace.lr_text,
        "numerics": trace.numerics,
        "model": model_description(trace),
        "status": trace.status,
        "reason": trace.reason or "",
        "steps": last + 1,
        "planned": int(planned) if isinstance(planned, int) else None,
        "divergence": None if div is None else {"step": div.step, "why": div.why},
    }


def replay_data(runs: Mapping[str, Trace], first: int, last: int) -> dict[str, Any]:
    """What the page shows, for steps ``first … last`` of one run (the replay page) or of
    several (the comparison at one cursor), as plain JSON values.

    >>> data = replay_data({"article": open_trace("traces/seed-exact-lr1")}, 0, 2)  # doctest: +SKIP
    >>> data["strings"][data["runs"][0]["views"][2]["u"]]  # doctest: +SKIP
    'ŵ = w − α·grad = (1/200, -3/11600, 1/5800) − 1·(0, -2000, -3000) = (1/200, 23199997/…'
    """
    s = _Strings()
    lasts = {key: last_step(trace) for key, trace in runs.items()}
    divergence = {key: run_divergence(trace) for key, trace in runs.items()}
    out: dict[str, Any] = {
        "generator": f"steptrace {__version__}",
        "mode": "replay" if len(runs) == 1 else "compare",
        "first": first,
        "last": last,
        "runs": [_run(k, t, lasts[k], divergence[k]) for k, t in runs.items()],
    }
    losses = {key: curve(trace, "loss", first, last) for key, trace in runs.items()}
    for entry, key in zip(out["runs"], runs, strict=True):
        entry["loss"] = _curve(losses[key])
    if len(runs) == 1:
        (key, trace), entry = next(iter(runs.items())), out["runs"][0]
        views = list(step_views(trace, first, min(last, lasts[key]), key))
        heads = _Heads(s)
        images = views[0].images  # a run of images says each box's shape too
        entry["chain"] = [[s(b.layer), s(b.kind), s(b.formula), *([s(b.shape)] if images else [])]
                          for b in views[0].chain()]  # fmt: skip
        entry["back"] = [[s(b.layer), s(b.kind), *([s(b.shape)] if images else [])]
                         for b in views[0].backward_chain()]  # fmt: skip
        entry["views"] = [_step(v, s, heads) for v in views]
        entry["heads"] = heads.table
    else:
        out["weights"] = _weights(runs, first, last)
        out["tables"] = _side_by_side(runs, first, last, lasts, divergence, s)
    out["strings"] = s.table
    return out


def _compared_images(found: Mapping[str, StepView | None], s: _Strings) -> list[Any] | None:
    """The runs' images at one step (runs of images only): the first convolution's feature
    maps and each convolution's kernels after the step, every run's side by side, then each
    run's minus the first run's; with what was left out (:func:`_maps`, ``how`` 0 and 1)."""
    first = default_image(found)
    view = next((v for v in found.values() if v is not None), None)
    if first is None or view is None:
        return None
    groups, notes = [], []
    for tensor in [first, *(f"w{k}_after" for k in view.kernel_layers)]:
        for how in (0, 1):
            maps, note = compare_maps(found, tensor, differences=bool(how))
            if maps is not None:
                groups.append(_maps(maps, s, 0, how))
            notes.append(s(note))
    return [groups, notes]


def _weights(runs: Mapping[str, Trace], first: int, last: int) -> list[dict[str, Any]]:
    """The first run's weights (as the dashboard draws them at first), each for the runs of
    its model."""
    out = []
    for column in default_weights(runs):
        drawn = weight_runs(runs, column)
        out.append({
            "column": column,
            "label": weight_label(column),
            "curves": {k: _curve(curve(runs[k], column, first, last)) for k in drawn},
        })  # fmt: skip
    return out


def _side_by_side(
    runs: Mapping[str, Trace],
    first: int,
    last: int,
    lasts: Mapping[str, int],
    divergence: Mapping[str, Divergence | None],
    s: _Strings,
) -> list[dict[str, Any]]:
    """All runs side by side at each step of the window (each run read once)."""
    views: dict[str, dict[int, StepView]] = {
        key: {v.step: v for v in step_views(trace, first, min(last, lasts[key]), key)}
        for key, trace in runs.items()
    }
    out = []
    for step in range(first, last + 1):
        found = {key: views[key].get(step) for key in runs}
        frame = compare_views(runs, found, step, divergence, lasts)
        table = {
            "h": s.all([str(c) for c in frame.columns]),
            "i": s.all([str(i) for i in frame.index]),
            "r": [s.all([str(v) for v in row]) for row in frame.itertuples(index=False)],
        }
        images = _compared_images(found, s)
        out.append(table if images is None else {**table, "m": images})
    return out


def _open(run: str | Path | Trace) -> tuple[str, Trace]:
    if isinstance(run, Trace):
        return run.name, run
    path = Path(run)
    if path.is_dir() and is_folder_of_runs(path):
        raise TraceError(
            f"{str(path)!r} is a folder of runs; name the runs to export (e.g. "
            f"{str(path / '<run>')!r})"
        )
    trace = open_trace(path)
    return trace.name, trace


def export_html(
    runs: Sequence[str | Path | Trace],
    out: str | Path,
    first: int | None = None,
    to: int | None = None,
) -> Export:
    """Write one self-contained HTML file replaying ``runs`` (one: the replay page; several:
    the comparison at one cursor) over steps ``first … to`` (default: the first
    :data:`DEFAULT_WINDOW`). The file loads nothing from the network: its script, styles and
    data are inside it.

    >>> export_html(["traces/seed-exact-lr1"], "article.html").describe()  # doctest: +SKIP
    'article.html: steps 0 to 2 of seed-exact-lr1 (3 steps); 41 kB'
    """
    from .html import render_html  # needs Jinja2, which comes with the dashboard

    if not runs:
        raise ConfigError("name at least one run to export")
    opened = [_open(r) for r in runs]
    names = [name for name, _ in opened]
    if len(set(names)) < len(names):  # two runs of one name in different folders
        names = [str(r.path if isinstance(r, Trace) else r) for r in runs]
    traces = dict(zip(names, (t for _, t in opened), strict=True))
    lasts = {key: last_step(trace) for key, trace in traces.items()}
    empty = [key for key, last in lasts.items() if last < 0]
    if empty:
        raise TraceError(f"run {empty[0]} has no recorded steps yet")
    lo, hi = window(max(lasts.values()), first, to)
    page = render_html(replay_data(traces, lo, hi))
    path = Path(out)
    _write(path, page)
    return Export(path, path.stat().st_size, tuple(traces), lo, hi,
                  {k: v + 1 for k, v in lasts.items()})  # fmt: skip


def _write(path: Path, text: str) -> None:
    """Write the page whole or not at all (written aside, then renamed into place). A link is
    followed (the file it names is replaced, the link kept); anything but a file is refused."""
    if path.is_dir():
        raise WriteError(f"cannot write {str(path)!r}: it is a folder; name an .html file")
    path = path.resolve() if path.is_symlink() else path
    if path.exists() and not path.is_file():
        raise WriteError(f"cannot write {str(path)!r}: it is not a file (a device or a pipe); "
                         "name an .html file")  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
