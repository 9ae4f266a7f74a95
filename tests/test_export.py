"""``steptrace export``: a replay as one self-contained HTML file. What the file holds (the
data the page lays out, checked against the dashboard's own views), that it refers to nothing
outside itself, the window of steps, the command and its errors; and, in Debian's Chromium
with every network request refused, that it steps through the article's run."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import steptrace
from steptrace import open_trace, views
from steptrace.errors import ConfigError, TraceError, WriteError
from steptrace.views.export import DEFAULT_WINDOW, MAX_WINDOW, export_html, replay_data, window
from tests import dashboard_runs as runs
from tests.image_runs import record_images

ARTICLE_UPDATE = "ŵ = (1/200, 23199997/11600, 17400001/5800)"


def embedded(page: str) -> dict[str, Any]:
    """The data the page carries, unpacked as its script unpacks it."""
    match = re.search(
        r'<script type="application/json" id="steptrace-data" data-encoding="([^"]+)">'
        r"(.*?)</script>",
        page,
        re.S,
    )
    assert match, "no data in the page"
    encoding, payload = match.groups()
    if encoding == "gzip+base64":
        payload = gzip.decompress(base64.b64decode(payload)).decode()
    else:
        assert encoding == "json"
    data: dict[str, Any] = json.loads(payload)
    return data


class Step:
    """One step of an exported replay, its texts looked up."""

    def __init__(self, data: dict[str, Any], run: dict[str, Any], record: list[Any]) -> None:
        s = data["strings"]
        self.label, self.header, self.changes = s[record[0]], s[record[1]], s[record[2]]
        self.forward = [s[i] for i in record[4][0::3]]
        self.notes = [s[i] for i in record[4][1::3]]
        self.back = [s[i] for i in record[5][1::4]]
        self.back_notes = [s[i] for i in record[5][2::4]]
        self.tables = [
            {"headers": [s[h] for h in run["heads"][t[0]]],
             "rows": [[s[c] for c in row] for row in t[1]], "changed": t[2]}
            for t in record[6]
        ]  # fmt: skip
        self.update, self.results, self.note = s[record[7]], [s[i] for i in record[8]], s[record[9]]
        self.moved = bool(record[10])


def steps_of(data: dict[str, Any]) -> list[Step]:
    run = data["runs"][0]
    return [Step(data, run, record) for record in run["views"]]


# -- what the file holds -------------------------------------------------------------------------


def test_the_articles_run_exports_its_three_steps_as_the_dashboard_shows_them(
    traces: Path,
) -> None:
    run = open_trace(runs.article(traces))
    data = replay_data({"article": run}, 0, 2)
    assert (data["mode"], data["first"], data["last"]) == ("replay", 0, 2)
    meta = data["runs"][0]
    assert (meta["name"], meta["steps"], meta["status"], meta["lr"], meta["numerics"]) == (
        "article", 3, "complete", "1", "exact"
    )  # fmt: skip
    assert meta["model"] == "input(3) → linear(1) → relu → squared_error"
    s = data["strings"]
    assert [[s[i] for i in box] for box in meta["chain"]] == [
        ["input", "data", "x"], ["L1", "input", "o1 = x"], ["L2", "linear(1)", "o2 = w · o1"],
        ["L3", "relu", "o3 = o2 if o2 ≥ 0 else 0"], ["Loss", "squared_error", "½ (o3 − y_truth)²"],
    ]  # fmt: skip
    step = steps_of(data)[2]
    assert (step.label, step.header) == ("step 2 (3rd data input)",
                                         "epoch 0 · dataset row 2 · exact · α = 1")  # fmt: skip
    assert step.changes.startswith("Changed since step 1: x, o1, o2, o3, loss")
    assert step.forward == ["(0, 2000, 3000)", "(0, 2000, 3000)", "0", "0", "1/2"]
    assert step.back == ["-1", "-1", "(-1/200, 3/11600, -1/5800);  (0, -2000, -3000)",
                         "(-1/200, 3/11600, -1/5800)"]  # fmt: skip
    assert step.back_notes[1] == "gate open"
    assert step.results == [ARTICLE_UPDATE]
    assert step.update.endswith("= (1/200, 23199997/11600, 17400001/5800)")
    weights = step.tables[3]
    assert weights["headers"] == ["weight", "w", "grad", "ŵ = w − α·grad", "moved"]
    assert [row[3] for row in weights["rows"]] == ["1/200", "23199997/11600", "17400001/5800"]
    assert weights["changed"] == [7, 8, 12, 13]  # w_2's and w_3's gradient and ŵ
    assert (step.note, step.moved) == ("The update moved w_2, w_3.", True)
    first = steps_of(data)[0]
    assert first.changes == "First step: nothing to compare with."
    assert all(not t["changed"] for t in first.tables)
    loss = meta["loss"]
    assert (loss["s"], loss["v"], loss["note"]) == ([0, 1, 2], [0.0, 0.0, 0.5],
                                                    "every step shown (steps 0 to 2)")  # fmt: skip


def test_every_exported_step_says_what_the_dashboards_step_view_says(traces: Path) -> None:
    trace = open_trace(runs.lr_sweep(traces, ("1e-9",), epochs=20)[0])
    data = replay_data({"run": trace}, 5, 40)
    exported = steps_of(data)
    assert len(exported) == 36
    for step, mine in zip(range(5, 41), exported, strict=True):
        view = views.step_view(trace, step, "run")
        assert (mine.label, mine.header, mine.changes) == (
            view.label, view.header(), view.changes_text()
        )  # fmt: skip
        assert mine.forward == [link.value for link in view.chain()]
        assert mine.back == [link.value for link in view.backward_chain()]
        assert (mine.update, mine.results, mine.note) == (
            view.update_text(), view.update_results(), view.update_note()
        )  # fmt: skip
        tables = (view.forward_table(), view.loss_table(), view.backward_table(),
                  view.weights_table())  # fmt: skip
        for got, table in zip(mine.tables, tables, strict=True):
            assert got["headers"] == list(table.frame.columns)
            assert got["rows"] == table.frame.values.tolist()
            flat = table.changed.to_numpy().ravel().nonzero()[0].tolist()
            assert got["changed"] == flat


def test_a_two_layer_run_exports_every_layer(traces: Path) -> None:
    trace = open_trace(runs.two_layer(traces))
    data = replay_data({"two-layer": trace}, 0, 5)
    s = data["strings"]
    meta = data["runs"][0]
    assert [s[box[0]] for box in meta["chain"]] == ["input", "L1", "L2", "L3", "L4", "L5", "Loss"]
    step = steps_of(data)[0]
    # Step 0 worked by hand in tests/test_replay.py.
    assert step.forward[2:6] == ["(0, 39/40)", "(0, 39/40)", "-13/40", "-13/4000"]
    assert step.back_notes[1] == "gate closed"  # L5, leaky_relu
    weights = {row[0]: row for row in step.tables[3]["rows"]}
    assert weights["b2_2"][3] == "1199987/12000000"
    assert weights["w4_1"][4] == "no"
    assert step.results[0].startswith("ŵ2 = ((")
    assert step.results[1] == "b̂2 = (13/8000000, 1199987/12000000)"
    assert len(step.results) == 3  # ŵ2, b̂2, ŵ4
    assert "\n" in step.update  # a matrix's rows, a line each
    assert step.tables[0]["headers"][:3] == ["x", "o1 = L1(x)", "o2 = L2(o1)"]


def test_several_runs_export_the_comparison_at_one_cursor(traces: Path) -> None:
    lr1 = open_trace(runs.article(traces, "lr1", "1"))
    lr01 = open_trace(runs.article(traces, "lr0.1", "1/10"))
    two = open_trace(runs.two_layer(traces))
    data = replay_data({"lr1": lr1, "lr0.1": lr01, "two-layer": two}, 0, 5)
    assert (data["mode"], data["first"], data["last"]) == ("compare", 0, 5)
    assert [r["steps"] for r in data["runs"]] == [3, 3, 6]
    s = data["strings"]
    at2 = data["tables"][2]
    assert [s[h] for h in at2["h"]] == ["lr1", "lr0.1", "two-layer"]
    rows = {s[label]: [s[c] for c in row] for label, row in zip(at2["i"], at2["r"], strict=True)}
    expected = views.compare_at({"lr1": lr1, "lr0.1": lr01, "two-layer": two}, 2)
    assert rows["ŵ"] == expected.loc["ŵ"].tolist() == [
        "(1/200, 23199997/11600, 17400001/5800)", "(1/200, 2319997/11600, 1740001/5800)", "—"
    ]  # fmt: skip
    at4 = data["tables"][4]
    rows4 = {s[label]: [s[c] for c in row] for label, row in zip(at4["i"], at4["r"], strict=True)}
    assert rows4["loss"][:2] == ["no step 4 (last: 2)", "no step 4 (last: 2)"]
    # The first run's weights, drawn for the runs of its model; loss for every run.
    assert [w["column"] for w in data["weights"]] == ["w2_after_1_1", "w2_after_1_2",
                                                      "w2_after_1_3"]  # fmt: skip
    assert sorted(data["weights"][1]["curves"]) == ["lr0.1", "lr1"]
    assert [len(r["loss"]["s"]) for r in data["runs"]] == [3, 3, 6]


# -- the file --------------------------------------------------------------------------------------


def test_the_file_refers_to_nothing_outside_itself(traces: Path, tmp_path: Path) -> None:
    out = tmp_path / "article.html"
    path = runs.article(traces)
    done = export_html([path], out)
    page = out.read_text(encoding="utf-8")
    assert done.size == len(page.encode()) and done.size < 40_000  # 24 kB when written
    assert "<title>article · steptrace replay</title>" in page
    assert "default-src 'none'" in page  # and the browser is told to load nothing
    lowered = page.lower()
    for outside in ("<link", "@import", "url(", " src=", " href=", "//cdn", "fonts.g"):
        assert outside not in lowered, outside
    # The one address in the page is SVG's namespace name, which is never fetched.
    assert re.findall(r"https?://[^\s\"')]+", page) == ["http://www.w3.org/2000/svg"]
    assert embedded(page) == replay_data({"article": open_trace(path)}, 0, 2)
    kb = -(-done.size // 1000)
    assert done.describe() == f"{out}: steps 0 to 2 of article (3 steps); {kb} kB"


def test_a_long_window_is_compressed_and_small(traces: Path, tmp_path: Path) -> None:
    run = runs.lr_sweep(traces, ("1e-9",), epochs=400)[0]  # 1,200 steps, float64
    out = tmp_path / "window.html"
    done = export_html([run], out)
    assert (done.first, done.last, done.steps) == (0, DEFAULT_WINDOW - 1, {"sweep": 1200})
    page = out.read_text(encoding="utf-8")
    assert 'data-encoding="gzip+base64"' in page
    assert done.size < 450_000  # ~350 kB for a thousand float64 steps of the article's model
    data = embedded(page)
    assert len(data["runs"][0]["views"]) == DEFAULT_WINDOW
    assert "This file holds steps 0 to 999 of the run's 1,200 recorded steps" in page


def test_texts_from_the_run_are_escaped(tmp_path: Path) -> None:
    traces = tmp_path / "t"
    traces.mkdir()
    path = runs.article(traces).rename(traces / "a<b>&'c")  # not a name steptrace would give
    out = tmp_path / "x.html"
    export_html([path], out)
    page = out.read_text(encoding="utf-8")
    assert "<b>" not in page
    assert "<title>a&lt;b&gt;&amp;&#39;c · steptrace replay</title>" in page
    assert embedded(page)["runs"][0]["name"] == "a<b>&'c"


def test_a_run_being_recorded_is_exported_as_far_as_it_got(traces: Path, tmp_path: Path) -> None:
    growing = runs.Growing(traces)
    growing.flush()
    out = tmp_path / "growing.html"
    done = export_html([growing.path], out)
    assert (done.first, done.last) == (0, 149)
    page = out.read_text(encoding="utf-8")
    assert "<strong>growing</strong> was still being recorded when exported." in page
    growing.finish()


# -- the window ---------------------------------------------------------------------------------


def test_the_window_of_steps() -> None:
    assert window(2) == (0, 2)
    assert window(5_999) == (0, DEFAULT_WINDOW - 1)
    assert window(5_999, 100) == (100, 1_099)
    assert window(5_999, 10, 19) == (10, 19)
    assert window(50, 10, 900) == (10, 50)  # cut at the last step
    assert window(5_999, 5_999) == (5_999, 5_999)
    assert window(10**6, 0, MAX_WINDOW - 1) == (0, MAX_WINDOW - 1)
    with pytest.raises(ConfigError, match="--to 9 comes before --from 10"):
        window(100, 10, 9)
    with pytest.raises(TraceError, match="no step 3 to export: the runs' steps are 0 to 2"):
        window(2, 3)
    with pytest.raises(ConfigError, match="at most 20,000"):
        window(10**6, 0, MAX_WINDOW)
    with pytest.raises(TraceError, match="no recorded steps"):
        window(-1)


# -- the command --------------------------------------------------------------------------------


def test_export_command_writes_the_file_and_says_what_it_holds(traces, run_cli, tmp_path):
    run = runs.article(traces)
    out = tmp_path / "article.html"
    result = run_cli("export", run, "--html", out)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{re.escape(str(out))}: steps 0 to 2 of article \(3 steps\); \d+ kB\n",
                        result.stdout)  # fmt: skip
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_export_command_of_several_runs_and_a_window(traces, run_cli, tmp_path):
    paths = runs.lr_sweep(traces, ("1e-9", "1e-8"), epochs=10)
    out = tmp_path / "compare.html"
    result = run_cli("export", *paths, "--html", out, "--from", "5", "--to", "9")
    assert result.exit_code == 0, result.output
    assert "steps 5 to 9 of sweep-lr1e-9 (30 steps), sweep-lr1e-8 (30 steps)" in result.stdout
    data = embedded(out.read_text(encoding="utf-8"))
    assert (data["mode"], data["first"], data["last"], len(data["tables"])) == ("compare", 5, 9, 5)


def test_export_help_has_examples(run_cli):
    result = run_cli("export", "-h")
    assert result.exit_code == 0
    assert "Example:" in result.output and "--html" in result.output and "--from" in result.output


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["{missing}", "--html", "{out}"], "Error: no trace at '{missing}'", 2),
        (["{traces}", "--html", "{out}"],
         "Error: '{traces}' is a folder of runs; name the runs to export (e.g. '{traces}/<run>')",
         2),
        (["{run}", "--html", "{out}", "--from", "3"],
         "Error: no step 3 to export: the runs' steps are 0 to 2", 2),
        (["{run}", "--html", "{out}", "--from", "2", "--to", "1"],
         "Error: --to 1 comes before --from 2 (see 'steptrace export -h')", 2),
        (["{run}", "--html", "{out}", "--from", "-1"],
         "Error: Invalid value for '--from': -1 is not in the range x>=0. "
         "(see 'steptrace export -h')", 2),
        (["{run}", "--html", "{nowhere}"],
         "Error: cannot write '{nowhere}': No such file or directory", 1),
        (["{run}", "--html", "{traces}"],
         "Error: Invalid value for '--html': File '{traces}' is a directory. "
         "(see 'steptrace export -h')", 2),
        (["{run}"], "Error: Missing option '--html'. (see 'steptrace export -h')", 2),
    ],
)  # fmt: skip
def test_export_errors_are_one_line(traces, run_cli, tmp_path, args, message, code):
    run = runs.article(traces)
    where = {"missing": tmp_path / "missing", "traces": traces, "run": run,
             "out": tmp_path / "out.html", "nowhere": tmp_path / "no" / "out.html"}  # fmt: skip
    result = run_cli("export", *[a.format(**where) for a in args])
    assert result.exit_code == code
    assert (result.stdout, result.stderr.strip()) == ("", message.format(**where))
    assert not (tmp_path / "out.html").exists()
    assert not list(tmp_path.glob(".*.tmp")) and not list(traces.glob(".*.tmp"))


def test_export_of_a_run_with_no_steps_says_so(traces, tmp_path) -> None:
    growing = runs.Growing(traces)
    with pytest.raises(TraceError, match="run growing has no recorded steps yet"):
        export_html([growing.path], tmp_path / "x.html")
    growing.finish()


def test_export_html_refuses_nothing_to_export(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name at least one run"):
        export_html([], tmp_path / "x.html")


def test_a_file_that_cannot_be_written_is_a_write_error(traces, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = runs.article(traces)
    with pytest.raises(WriteError, match="Not a directory"):
        export_html([run], blocker / "x.html")
    with pytest.raises(WriteError, match="it is a folder; name an .html file"):
        export_html([run], tmp_path)


def test_a_link_is_followed_and_a_pipe_is_left_alone(traces, tmp_path) -> None:
    run = runs.article(traces)
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    done = export_html([run], link)
    assert link.is_symlink() and real.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert done.size == real.stat().st_size
    pipe = tmp_path / "pipe.html"
    os.mkfifo(pipe)
    with pytest.raises(WriteError, match="it is not a file"):
        export_html([run], pipe)
    assert stat.S_ISFIFO(pipe.stat().st_mode)


def test_two_runs_of_one_name_are_told_apart_by_their_path(tmp_path: Path) -> None:
    a = steptrace.record("seed", lr="1", numerics="exact", out=tmp_path / "a", name="run").path
    b = steptrace.record("seed", lr="1/2", numerics="exact", out=tmp_path / "b", name="run").path
    done = export_html([a, b], tmp_path / "x.html")
    assert done.runs == (str(a), str(b))


# -- runs of images --------------------------------------------------------------------------------


def heatmaps_of(data: dict[str, Any], group: list[Any]) -> dict[str, Any]:
    """One tensor's heatmaps in the file (see steptrace.views.export._maps), texts looked up."""
    s = data["strings"]
    section, title, note, shape, per_row, written, name, titles, leads, texts, marked, mark, how = (
        group
    )
    h, w = shape[-2:]
    flat = [s[i] for i in texts]
    return {
        "section": section, "title": s[title], "note": s[note], "shape": shape, "per_row": per_row,
        "written": written, "name": s[name], "titles": [s[t] for t in titles], "leads": leads,
        "grids": [[flat[g * h * w + i * w : g * h * w + (i + 1) * w] for i in range(h)]
                  for g in range(len(titles))],
        "marked": [(p // (h * w), (p % (h * w)) // w, p % w) for p in marked],
        "mark": s[mark], "how": how,
    }  # fmt: skip


def test_an_image_runs_file_holds_its_heatmaps(tmp_path: Path) -> None:
    run = record_images(tmp_path, "1/10", name="cnn").path
    trace = open_trace(run)
    data = replay_data({"cnn": trace}, 0, 1)
    s = data["strings"]
    meta = data["runs"][0]
    # The chain's boxes say their shapes.
    assert [s[box[3]] for box in meta["chain"]] == [
        "2 × 4 × 4", "2 × 4 × 4", "2 × 4 × 4", "2 × 4 × 4", "2 × 2 × 2", "8", "1", ""]  # fmt: skip
    assert [s[box[2]] for box in meta["back"]][:3] == ["1", "8", "2 × 2 × 2"]
    for step, record in enumerate(meta["views"]):
        view = views.step_view(trace, step)
        groups, notes = record[11]
        drawn = [heatmaps_of(data, g) for g in groups]
        assert [(d["section"], d["name"]) for d in drawn] == [
            (0, "x"), (0, "o1"), (0, "o2"), (0, "o3"), (0, "o4"),
            (1, "d5"), (1, "d4"), (1, "d3"), (1, "d2"), (1, "d1"),
            (2, "w2_before"), (2, "grad_w2"), (2, "w2_after"), (2, "w2_change"),
        ]  # fmt: skip
        for d in drawn:
            tensor = {"w2_change": "w2_after"}.get(d["name"], d["name"])
            values = steptrace.load_tensor(trace, tensor, exact=True)[step]
            if d["name"] == "w2_change":
                values = values - steptrace.load_tensor(trace, "w2_before", exact=True)[step]
            expected = values.reshape(-1, *values.shape[-2:])
            assert d["grids"] == np.vectorize(str, otypes=[object])(expected).tolist(), d["name"]
            assert d["shape"] == list(values.shape) and d["written"] == 1
        o3, d4 = drawn[3], drawn[6]
        chosen = {(c, i, j) for c, m in enumerate(view.forward_maps()[3].maps) for i, j in m.marked}
        assert set(o3["marked"]) == set(d4["marked"]) == chosen and len(chosen) == 8
        assert o3["mark"] == "kept by L4's max pooling" and "reading order" in o3["note"]
        assert drawn[10]["titles"] == ["out 0 ← in 0", "out 0 ← in 1", "out 1 ← in 0",
                                       "out 1 ← in 1"]  # fmt: skip
        assert drawn[10]["leads"] == [[0, 0], [0, 1], [1, 0], [1, 1]]
        assert [s[n] for n in notes] == [view.kernel_note(2)]
    # Step 0 by hand (tests/test_views.py): channel 1's cells kept at (0, 3), (1, 0), (2, 0),
    # (2, 2), on ties the first in reading order.
    first = heatmaps_of(data, meta["views"][0][11][0][3])
    assert sorted((i, j) for c, i, j in first["marked"] if c == 1) == [(0, 3), (1, 0), (2, 0),
                                                                        (2, 2)]  # fmt: skip
    # The tables hold no images; the page says so by drawing them from the heatmaps.
    assert steps_of(data)[0].tables[0]["headers"] == ["o5 = L5(o4)", "o6 = L6(o5)"]
    page = tmp_path / "cnn.html"
    export_html([run], page)
    assert embedded(page.read_text(encoding="utf-8")) == data


def test_a_comparison_of_image_runs_holds_their_maps_and_differences(tmp_path: Path) -> None:
    a = open_trace(record_images(tmp_path, "1/10", name="a").path)
    b = open_trace(record_images(tmp_path, "1/2", name="b").path)
    both = {"a": a, "b": b}
    data = replay_data(both, 0, 1)
    for step, side in enumerate(data["tables"]):
        groups, notes = side["m"]
        drawn = [heatmaps_of(data, g) for g in groups]
        assert [(d["name"], d["how"]) for d in drawn] == [("o2", 0), ("o2", 1), ("w2_after", 0),
                                                          ("w2_after", 1)]  # fmt: skip
        o2 = {key: steptrace.load_tensor(t, "o2", exact=True)[step] for key, t in both.items()}
        texts = np.vectorize(str, otypes=[object])
        assert drawn[0]["grids"] == texts(o2["a"]).tolist() + texts(o2["b"]).tolist()
        assert drawn[0]["titles"] == ["a · channel 0", "a · channel 1", "b · channel 0",
                                      "b · channel 1"]  # fmt: skip
        assert drawn[0]["per_row"] == 2
        assert drawn[1]["grids"] == texts(o2["b"] - o2["a"]).tolist()
        assert drawn[1]["titles"] == ["b − a · channel 0", "b − a · channel 1"]
        w = {key: steptrace.load_tensor(t, "w2_after", exact=True)[step]
             for key, t in both.items()}  # fmt: skip
        assert drawn[3]["grids"] == texts((w["b"] - w["a"]).reshape(4, 3, 3)).tolist()
        assert [data["strings"][n] for n in notes] == [""] * 4
    # Runs without images keep their comparison as it was.
    assert "m" not in replay_data({"lr1": open_trace(runs.article(tmp_path / "t", "lr1")),
                                   "lr2": open_trace(runs.article(tmp_path / "t", "lr2", "2"))},
                                  0, 2)["tables"][0]  # fmt: skip
