"""Analysing traces with pandas: the common questions about a run or a sweep, one function each.

Every function takes a DataFrame of trace rows — from :func:`~steptrace.load_traces`,
``pandas.read_parquet(folder)``, or DuckDB/Polars ``.to_pandas()`` — and is also reachable as
``df.steptrace.<name>``, the accessor this package registers when imported::

    >>> import steptrace, steptrace.analysis
    >>> df = steptrace.load_traces("traces")  # doctest: +SKIP
    >>> df.steptrace.summary()  # doctest: +SKIP

Runs are told apart by the ``run`` column (the run folder's name, added by ``load_traces``) or,
failing that, by ``run_id`` (on every row of every part file). Any stack of layers works: the
functions find the layers in the column names (``o3_2``, ``w4_after_1_2``, ``b2_before_1`` …).

Definitions, used throughout:

- A step's *batch loss* is the mean of its samples' losses (as in :mod:`steptrace.trace.summary`).
- An epoch's loss is the mean of its steps' batch losses (``per="step"``, the default) or of
  its samples' losses (``per="sample"``); they differ only when the last batch is short.
  NaN and ±inf are never skipped: an epoch with one NaN loss has a NaN loss.
- A run *diverged* by :mod:`steptrace.trace.summary`'s rule: at the first step whose batch loss
  or new parameters (every layer's weights and biases) are not finite, or whose batch loss
  exceeds ``BLOWUP_FACTOR`` times the largest batch loss of the first epoch.
- A run *converged* if it did not diverge and the loss of its last epoch is at most ``rtol``
  (:data:`CONVERGE_RTOL`, a thousandth) times the loss of its first epoch. A run stuck where it
  started (a closed ReLU gate teaches nothing) has not converged; a one-epoch run converged only
  if its loss was 0 throughout.
- A *gate* is a layer that switches at 0 on its input x: ``relu``, ``leaky_relu`` and
  ``heaviside`` (:data:`GATE_TYPES`). Each of its neurons is a unit, *open* when x ≥ 0 and
  *closed* otherwise — NaN included, since the layers' rule "x ≥ 0" fails for it. In the
  article's model the gate is layer 3, the ReLU, and its input is o2. On an image each
  channel is a unit, closed when every one of its pixels is.
- ``gate_closed_steps`` counts the steps where some unit of some gate is closed for at least
  one sample of the batch; ``gate_closed_share`` is the share of (row, unit) pairs closed.
- A ReLU unit is *dead* when it is closed on every row of the last epoch recorded: δ stops
  there (δ_in = 0), so nothing below it learns from it, and its own weights get no gradient to
  reopen it. Leaky ReLUs pass a·δ and never die; a Heaviside's δ_in is 0 whatever its input.
  ``dead_units`` counts them, ``dead_neurons`` names them (``L3[2]``: layer 3, neuron 2;
  ``L3[channel 0]``: layer 3's channel 0 of an image, numbered from 0 as numpy does).
- The first non-finite step is the first whose loss, any layer's output (an image's pixels
  too) or any new parameter is NaN or ±inf.
- :func:`weights_long` indexes a linear layer's parameters from 1 (``j``, ``i``), as the
  series numbers neurons, and an image layer's from 0 (``out_channel``, ``in_channel``,
  ``row``, ``column``, ``channel``), as :func:`~steptrace.load_tensor` indexes them.


How a frame of rows shows its gates, without the model's metadata, is told in
:mod:`steptrace.analysis.gates`.

One module per question, each importing only those before it: ``rows`` (telling runs apart),
``loss``, ``weights``, ``gates`` (and dead units), ``side_by_side`` (runs at one step),
``summaries`` (one row per run), ``grouping`` (a sweep's runs by the settings that vary),
``dataset`` (a sweep folder as one pyarrow dataset); ``accessor`` registers ``df.steptrace``
on top of them all.
"""

from __future__ import annotations

# The constants imported "as" themselves are reachable here as before, though not in __all__.
from .accessor import SteptraceAccessor
from .dataset import VIRTUAL_SETTINGS as VIRTUAL_SETTINGS
from .dataset import sweep_dataset
from .gates import GATE_TYPES, Gate, find_gates, trace_gates
from .grouping import GRID_SETTINGS as GRID_SETTINGS
from .grouping import group_label, group_runs, varying_settings
from .loss import batch_loss, epoch_loss
from .rows import run_column, step_rows
from .side_by_side import compare_at
from .summaries import CONVERGE_RTOL, run_summary, trace_summaries
from .summaries import SUMMARY_SETTINGS as SUMMARY_SETTINGS
from .weights import IMAGE_WEIGHT_COLUMNS as IMAGE_WEIGHT_COLUMNS
from .weights import WEIGHT_COLUMNS as WEIGHT_COLUMNS
from .weights import weights_long

__all__ = [
    "CONVERGE_RTOL",
    "GATE_TYPES",
    "Gate",
    "SteptraceAccessor",
    "batch_loss",
    "compare_at",
    "epoch_loss",
    "find_gates",
    "group_label",
    "group_runs",
    "run_column",
    "run_summary",
    "step_rows",
    "sweep_dataset",
    "trace_gates",
    "trace_summaries",
    "varying_settings",
    "weights_long",
]
