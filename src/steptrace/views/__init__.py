"""What the dashboard shows, computed in the library: the pages only lay it out.

Everything here reads a trace through :meth:`~steptrace.trace.reader.Trace.read` with a filter on
``step`` and only the columns it needs, so a run of a million steps opens and moves between
steps without being loaded whole. One module per concern, each importing only those above it:

- :mod:`.parts` — what each part file's footer says (its steps, rows, columns), read once per
  part;
- :mod:`.folder` — :func:`scan`: the runs of a folder (and the files that are not runs, with
  the reason why), keyed by their path inside the folder; :func:`run_table` — the run picker's
  table; :func:`last_step` and :func:`fingerprint` from the files alone;
- :mod:`.text` — display text: :func:`ordinal`, :func:`abbreviate` (huge exact integers),
  vectors and matrices written out;
- :mod:`.notation` — the series' names and formulas for any stack (``w`` or ``w2``,
  ``δ3 = δ4 if o2 ≥ 0 else 0``), in the terminal's or the article's typography;
- :mod:`.sample` — one data input of a step, its tensors as values, vectors and matrices;
- :mod:`.replay` — :func:`~.replay.format_step`: a step as the terminal prints it;
- :mod:`.heatmaps` — images and kernels as heatmaps: a grid per channel or kernel, each cell's
  value as display text and as a float for the colour, the maxima a max pooling keeps, sums
  over a step's data inputs and differences (``ŵ − w``, one run's map minus another's);
- :mod:`.step` — :func:`step_view`: one step as the article writes it, for any stack (the
  layer chain, forward table, loss, backward pass, a table per layer, weight matrices, update
  ``w − α·grad = ŵ``), every value as display text, exact fractions in exact runs, and what
  changed since the previous step (its tables: :mod:`.table`); in a run of images
  (:mod:`.step_images`), each value's shape in the chain and its images and kernels as
  heatmaps;
- :mod:`.curves` — :func:`curve`: loss or one parameter per step, downsampled (min and max per
  bucket) when long, exact steps when zoomed in;
- :mod:`.divergence` — :func:`first_divergence`: summary.py's rule, per run (and
  :func:`run_divergence`: what an ended run's recorder stored);
- :mod:`.side_by_side` — :func:`compare_at`: several runs side by side at one step, of one
  model or several; :func:`compare_maps`: the same image or kernels of several runs as
  heatmaps, or their difference; :func:`weight_columns` and :func:`weight_runs`: which
  weights to draw for which runs;
- :mod:`.sweep` — :func:`lr_sweep`: runs lined up by learning rate, how each ended;
- :mod:`.live` — :class:`LiveRun`: a run followed while it is recorded, each look reading
  only its new parts, its curves kept as :mod:`.buckets` (min and max of buckets of steps a
  power of two wide, bounded however long the run);
- :mod:`.export` — :func:`export_html`: a replay (one run) or a comparison (several) as one
  self-contained HTML file; :mod:`.html` lays it out (Jinja2, ``templates/``).
"""

from __future__ import annotations

from .curves import MAX_POINTS, Curve, curve, curves_note, minmax_downsample
from .divergence import Divergence, first_divergence, run_divergence
from .export import Export, export_html
from .folder import Folder, fingerprint, last_step, run_table, scan
from .heatmaps import Heatmap, Heatmaps
from .live import LiveRun, Snapshot, snapshot
from .notation import model_description
from .sample import SampleValues
from .side_by_side import (
    compare_at,
    compare_maps,
    compare_views,
    default_image,
    default_weights,
    image_choices,
    weight_columns,
    weight_label,
    weight_runs,
    weights_note,
)
from .step import (
    LayerTable,
    Link,
    StepView,
    Table,
    inputs_label,
    step_label,
    step_view,
    step_views,
)
from .sweep import SweepView, lr_sweep, run_outcome
from .text import abbreviate, ordinal

__all__ = [
    "MAX_POINTS",
    "Curve",
    "Divergence",
    "Export",
    "Folder",
    "Heatmap",
    "Heatmaps",
    "LayerTable",
    "Link",
    "LiveRun",
    "SampleValues",
    "Snapshot",
    "StepView",
    "SweepView",
    "Table",
    "abbreviate",
    "compare_at",
    "compare_maps",
    "compare_views",
    "curve",
    "curves_note",
    "default_image",
    "default_weights",
    "export_html",
    "fingerprint",
    "first_divergence",
    "image_choices",
    "inputs_label",
    "last_step",
    "lr_sweep",
    "minmax_downsample",
    "model_description",
    "ordinal",
    "run_divergence",
    "run_outcome",
    "run_table",
    "scan",
    "snapshot",
    "step_label",
    "step_view",
    "step_views",
    "weight_columns",
    "weight_label",
    "weight_runs",
    "weights_note",
]
