"""What the dashboard shows, computed in the library: the pages only lay it out.

Everything here reads a trace through :meth:`~steptrace.trace.reader.Trace.read` with a filter on
``step`` and only the columns it needs, so a run of a million steps opens and moves between
steps without being loaded whole. One module per concern, each importing only those above it:

- :mod:`.folder` — :func:`scan`: the runs of a folder (and the files that are not runs, with
  the reason why), keyed by their path inside the folder; :func:`run_table` — the run picker's
  table; :func:`last_step` and :func:`fingerprint` from the files alone;
- :mod:`.text` — display text: :func:`ordinal`, :func:`abbreviate` (huge exact integers);
- :mod:`.step` — :func:`step_view`: one step as the article writes it (forward table, loss,
  backward pass, update ``w − α·grad = ŵ``), every value as display text, exact fractions in
  exact runs, and what changed since the previous step;
- :mod:`.curves` — :func:`curve`: loss or one weight per step, downsampled (min and max per
  bucket) when long, exact steps when zoomed in;
- :mod:`.divergence` — :func:`first_divergence`: summary.py's rule, per run;
- :mod:`.side_by_side` — :func:`compare_at`: several runs side by side at one step;
- :mod:`.sweep` — :func:`lr_sweep`: runs lined up by learning rate, how each ended.
"""

from __future__ import annotations

from .curves import MAX_POINTS, Curve, curve, curves_note, minmax_downsample
from .divergence import Divergence, first_divergence
from .folder import Folder, fingerprint, last_step, run_table, scan
from .side_by_side import COMPARE_ROWS as COMPARE_ROWS
from .side_by_side import compare_at
from .step import LABELS as LABELS
from .step import SampleValues, StepView, inputs_label, step_label, step_view
from .sweep import SweepView, lr_sweep, run_outcome
from .text import abbreviate, ordinal

__all__ = [
    "MAX_POINTS",
    "Curve",
    "Divergence",
    "Folder",
    "SampleValues",
    "StepView",
    "SweepView",
    "abbreviate",
    "compare_at",
    "curve",
    "curves_note",
    "fingerprint",
    "first_divergence",
    "inputs_label",
    "last_step",
    "lr_sweep",
    "minmax_downsample",
    "ordinal",
    "run_outcome",
    "run_table",
    "scan",
    "step_label",
    "step_view",
]
