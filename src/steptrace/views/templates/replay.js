// steptrace's exported replay: lays out the step the cursor is on from the data embedded in the
// page (computed by steptrace.views.export), draws the curves and a run's images and kernels
// (heatmaps, each cell's value on hover) as SVG, and moves the cursor with the buttons, the
// slider, the step box, the keyboard and clicks on a curve. Plain DOM, no library; every text
// goes in as text, never as markup.
(function () {
  "use strict";

  // The data: JSON, or (a long window) gzip-compressed JSON in base64, unpacked by the
  // browser's own DecompressionStream.
  function load() {
    var node = document.getElementById("steptrace-data");
    if (node.dataset.encoding !== "gzip+base64") return Promise.resolve(JSON.parse(node.textContent));
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser cannot unpack the replay (it needs " +
        "DecompressionStream: Chrome 80, Firefox 113, Safari 16.4 or later)"));
    }
    var bytes = Uint8Array.from(atob(node.textContent.trim()), function (c) { return c.charCodeAt(0); });
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }

  load().then(start, function (error) {
    var p = document.createElement("p");
    p.className = "warning";
    p.textContent = "Cannot show the replay: " + error.message;
    document.getElementById("panel").append(p);
  });

  function start(data) {
    var S = data.strings;
    var first = data.first;
    var last = data.last;
    var runs = data.runs;
    var COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2",
      "#ff9da6", "#9d755d", "#bab0ac"];
    var SVG_NS = "http://www.w3.org/2000/svg"; // a namespace name, not an address to fetch

    function text(i) { return S[i]; }

    function el(tag, className, content) {
      var node = document.createElement(tag);
      if (className) node.className = className;
      if (content !== undefined && content !== null) node.textContent = content;
      return node;
    }

    function svg(tag, attrs) {
      var node = document.createElementNS(SVG_NS, tag);
      Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
      return node;
    }

    function colour(i) { return COLORS[i % COLORS.length]; }

    document.querySelectorAll(".swatch[data-run]").forEach(function (s) {
      s.style.background = colour(Number(s.dataset.run));
    });

    // -- tables and the layer chain --------------------------------------------------------------

    function table(t, rowLabels) {
      var wrap = el("div", "table-wrap");
      var tab = el("table");
      var head = el("tr");
      if (rowLabels) head.append(el("th", null, ""));
      t.h.forEach(function (h) { head.append(el("th", null, text(h))); });
      var thead = el("thead");
      thead.append(head);
      tab.append(thead);
      var body = el("tbody");
      var changed = new Set(t.c || []);
      var width = t.h.length;
      t.r.forEach(function (row, j) {
        var tr = el("tr");
        if (rowLabels) tr.append(el("th", null, text(rowLabels[j])));
        row.forEach(function (cell, i) {
          tr.append(el("td", changed.has(j * width + i) ? "changed" : null, text(cell)));
        });
        body.append(tr);
      });
      tab.append(body);
      wrap.append(tab);
      return wrap;
    }

    // A box of the layer chain; a run of images says the shape of what the box gives.
    function box(layer, kind, formula, value, note, changed, shape) {
      var b = el("div", changed ? "box changed" : "box");
      var title = el("div", "layer", text(layer) + " ");
      title.append(el("span", "kind", text(kind)));
      b.append(title, el("div", "formula", text(formula)));
      if (shape !== undefined && text(shape)) b.append(el("div", "shape", text(shape)));
      b.append(el("div", "value", text(value)));
      if (text(note)) b.append(el("div", "note", text(note)));
      return b;
    }

    // -- images and kernels as heatmaps ------------------------------------------------------------

    // A value's display text as a number for its colour: a float's text, an exact fraction, or
    // an exact one whose huge integers were shortened ("12345…67890 (30 digits)"), by its size.
    function integer(t) {
      var m = /^(-?)(\d+)…\d+ \((\d+) digits\)$/.exec(t);
      if (m) return (m[1] ? -1 : 1) * Number(m[2]) * Math.pow(10, Number(m[3]) - m[2].length);
      return Number(t);
    }
    function number(t) {
      var parts = t.split("/");
      return parts.length === 2 ? integer(parts[0]) / integer(parts[1]) : integer(t);
    }
    // What a cell of a small grid says: a short fraction or integer as it is, anything else to
    // 3 significant digits (the whole value on hover).
    function cellLabel(t) {
      if (t.length <= 5 && !/[.e]/.test(t)) return t;
      var v = number(t);
      if (!isFinite(v)) return t;
      var short = String(Number(v.toPrecision(3)));
      return short.length > 6 ? String(Number(v.toPrecision(2))) : short;
    }
    // The dashboard's colour scale: blue below 0, orange above, pale at 0.
    var PALE = [242, 240, 235], BLUE = [33, 102, 172], ORANGE = [179, 88, 6];
    function heat(v, limit) {
      if (!isFinite(v)) return "#bbbbbb";
      var t = Math.max(-1, Math.min(1, v / limit));
      var to = t < 0 ? BLUE : ORANGE;
      var c = PALE.map(function (p, i) { return Math.round(p + (to[i] - p) * Math.abs(t)); });
      return "rgb(" + c.join(",") + ")";
    }

    var tip = el("div", "heat-tip");
    tip.hidden = true;
    document.body.append(tip);
    function showTip(e, lines) {
      tip.replaceChildren.apply(tip, lines.map(function (l) { return el("div", null, l); }));
      tip.hidden = false;
      tip.style.left = (e.pageX + 14) + "px";
      tip.style.top = (e.pageY + 14) + "px";
    }

    // A tensor's heatmaps (see steptrace.views.export._maps): [section, title, note, shape,
    // grids a row, values written, name, grid titles, grid places, texts, marked, mark, how].
    // A grid per channel (or kernel) on one colour scale, the values written in small grids,
    // the pooled maxima outlined; hovering a cell shows its name and value.
    function heatmaps(g) {
      var shape = g[3], h = shape[shape.length - 2], w = shape[shape.length - 1];
      var texts = g[9], marked = new Set(g[10]), written = g[5];
      var values = texts.map(function (i) { return number(text(i)); });
      var limit = values.reduce(function (m, v) { return isFinite(v) ? Math.max(m, Math.abs(v)) : m; }, 0) || 1;
      var px = written ? 38 : Math.max(4, Math.floor(260 / Math.max(h, w)));
      var figure = el("figure", "heatmaps");
      var caption = el("figcaption", null, text(g[1]) + " ");
      caption.append(el("span", "shape", shape.join(" × ")));
      figure.append(caption);
      var grids = el("div", "grids");
      grids.style.gridTemplateColumns = "repeat(" + g[4] + ", max-content)";
      g[7].forEach(function (title, n) {
        var one = el("div", "grid");
        one.append(el("div", "grid-title", text(title)));
        var plot = svg("svg", { width: w * px, height: h * px, viewBox: "0 0 " + w * px + " " + h * px,
          class: "heatmap", role: "img", "aria-label": text(g[1]) + ", " + text(title) });
        for (var i = 0; i < h; i++) {
          for (var j = 0; j < w; j++) {
            var at = n * h * w + i * w + j;
            var cell = svg("rect", { x: j * px, y: i * px, width: px, height: px,
              fill: heat(values[at], limit), class: "cell" });
            cell.dataset.cell = text(g[6]) + "[" + g[8][n].concat([i, j]).join(", ") + "]";
            cell.dataset.at = at;
            plot.append(cell);
            if (written) {
              var written_ = svg("text", { x: j * px + px / 2, y: i * px + px / 2 + 3, "text-anchor": "middle",
                class: Math.abs(values[at]) > 0.55 * limit ? "label dark" : "label" });
              written_.textContent = cellLabel(text(texts[at]));
              plot.append(written_);
            }
          }
        }
        marked.forEach(function (at) {
          if (Math.floor(at / (h * w)) !== n) return;
          var k = at % (h * w);
          plot.append(svg("rect", { x: (k % w) * px + 1, y: Math.floor(k / w) * px + 1,
            width: px - 2, height: px - 2, class: "pooled" }));
        });
        plot.addEventListener("mousemove", function (e) {
          var c = e.target;  // labels and outlines let the pointer through to their cell
          if (!c.classList.contains("cell")) { tip.hidden = true; return; }
          var lines = [c.dataset.cell + " = " + text(texts[Number(c.dataset.at)])];
          if (marked.has(Number(c.dataset.at)) && text(g[11])) lines.push(text(g[11]));
          showTip(e, lines);
        });
        plot.addEventListener("mouseleave", function () { tip.hidden = true; });
        one.append(plot);
        grids.append(one);
      });
      figure.append(grids);
      var scale = el("div", "heat-scale");
      scale.append(el("span", "swatch"), label(-limit) + " … 0 … " + label(limit));
      scale.firstChild.style.background = "linear-gradient(90deg, " + heat(-1, 1) + ", " + heat(0, 1) + ", " + heat(1, 1) + ")";
      figure.append(scale);
      if (text(g[2])) figure.append(el("p", "caption", text(g[2])));
      return figure;
    }

    // Boxes left to right, as the values (or δ) flow; each arrow kept with the box it points
    // at, so that a wrapped chain never ends a row with an arrow pointing at nothing.
    function chain(boxes) {
      var c = el("div", "chain");
      boxes.forEach(function (b, i) {
        var link = el("div", "link");
        if (i) link.append(el("div", "arrow", "→"));
        link.append(b);
        c.append(link);
      });
      return c;
    }

    // -- one step of one run, as the dashboard's replay page shows it ---------------------------

    var SECTIONS = ["1–2: data input and forward pass", "3: loss", "4: backward pass"];

    // A step of the replay: [label, header, changes, changes are news, forward chain (value,
    // note, changed per box), backward chain (formula, value, note, changed per box), tables
    // ([header, rows, changed cells] each), update, updated values, update note, moved], and in
    // a run of images [its heatmaps, the kernels' notes].
    function stepPanel(run, v) {
      var tables = v[6].map(function (t) { return { h: run.heads[t[0]], r: t[1], c: t[2] }; });
      var images = v[11] ? v[11][0] : [];
      function drawn(section) {
        return images.filter(function (g) { return g[0] === section; }).map(heatmaps);
      }
      var out = [el("h2", "step-label", text(v[0])), el("p", "caption", text(v[1]))];
      out.push(el("p", v[3] ? "changes" : "caption", text(v[2])));
      var lead = el("p");
      lead.append(el("strong", null, "Layer chain"), " " + run.model +
        " — forward: the values flowing from the data input to the loss");
      out.push(lead);
      out.push(chain(run.chain.map(function (c, i) {
        var f = v[4].slice(3 * i, 3 * i + 3);
        return box(c[0], c[1], c[2], f[0], f[1], f[2], c[3]);
      })));
      out.push(el("p", null, "backward: δ flowing back from the loss to the input"));
      out.push(chain(run.back.map(function (c, i) {
        var b = v[5].slice(4 * i, 4 * i + 4);
        return box(c[0], c[1], b[0], b[1], b[2], b[3], c[2]);
      })));
      SECTIONS.forEach(function (title, i) {
        out.push(el("h3", null, title));
        if (i !== 1) out.push.apply(out, drawn(i ? 1 : 0));  // forward's, δ's: before the table
        if (tables[i].h.length) out.push(table(tables[i]));
      });
      out.push(el("h3", null, "5: update the weights — ŵ = w − α·grad"));
      out.push.apply(out, drawn(2));
      if (v[11]) v[11][1].forEach(function (n) { out.push(el("p", "caption", text(n))); });
      v[8].forEach(function (r) { out.push(el("p", "result", text(r))); });
      if (text(v[7])) out.push(el("pre", "update", text(v[7])));
      if (tables[3].h.length && tables[3].r.length) out.push(table(tables[3]));
      out.push(el("p", v[10] ? "moved" : "caption", text(v[9])));
      return out;
    }

    // Runs of images compared at a step: [heatmaps (a tensor's, side by side or the
    // difference), notes]; the tensor and the way shown are picked once for every step.
    var picked = { tensor: null, how: 0 };
    function comparedImages(m) {
      var groups = m[0];
      if (!groups.length) return [];
      var tensors = [];
      groups.forEach(function (g) { if (tensors.indexOf(g[6]) < 0) tensors.push(g[6]); });
      if (tensors.indexOf(picked.tensor) < 0) picked.tensor = tensors[0];
      var out = [el("h2", null, "Images and kernels")];
      var controls = el("div", "image-controls");
      var choose = el("select");
      choose.setAttribute("aria-label", "Image or kernels to compare");
      tensors.forEach(function (t) {
        var o = el("option", null, text(t));
        o.value = t;
        o.selected = t === picked.tensor;
        choose.append(o);
      });
      choose.addEventListener("change", function () { picked.tensor = Number(choose.value); render(current); });
      controls.append(choose);
      ["side by side", "difference"].forEach(function (name, how) {
        var l = el("label");
        var r = el("input");
        r.type = "radio";
        r.name = "how";
        r.checked = picked.how === how;
        r.addEventListener("change", function () { picked.how = how; render(current); });
        l.append(r, " " + name);
        controls.append(l);
      });
      out.push(controls);
      var shown = groups.filter(function (g) { return g[6] === picked.tensor && g[12] === picked.how; });
      m[1].forEach(function (n) { if (text(n)) out.push(el("p", "caption", text(n))); });
      out.push.apply(out, shown.map(heatmaps));
      return out;
    }

    // -- curves ------------------------------------------------------------------------------------

    var H = 230, M = { l: 64, r: 12, t: 12, b: 28 };

    function ticks(lo, hi, n) {
      if (!(hi > lo)) return [lo];
      var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
      var err = (hi - lo) / n / step;
      step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
      var out = [];
      for (var k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) {
        out.push(Number((k * step).toPrecision(12)));  // 2, not 2.0000000000000004
      }
      return out;
    }

    function label(v) {
      if (v === 0) return "0";
      var a = Math.abs(v);
      return a >= 1e5 || a < 1e-3 ? v.toExponential(2) : String(Number(v.toPrecision(4)));
    }

    // One chart: a line per run, the cursor as a dashed rule, red rules where runs diverge.
    // Clicking puts the cursor on the step under the pointer.
    function chart(title, curves, log, wide) {
      var W = wide ? 900 : 560;  // the width drawn in: a narrow chart's text stays readable
      var figure = el("figure", wide ? "wide" : null);
      figure.append(el("figcaption", null, title));
      var plot = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img",
        "aria-label": title + " per step" });
      figure.append(plot);
      var x0 = first, x1 = Math.max(last, first + 1);
      var values = [];
      curves.forEach(function (c) {
        c.curve.v.forEach(function (v) { if (v !== null && (!log || v > 0)) values.push(v); });
      });
      var lo = values.length ? Math.min.apply(null, values) : 0;
      var hi = values.length ? Math.max.apply(null, values) : 1;
      var f = log ? function (v) { return Math.log10(v); } : function (v) { return v; };
      var y0 = f(lo), y1 = f(hi);
      if (y1 === y0) { y0 -= log ? 1 : Math.abs(y0) * 0.1 || 1; y1 += log ? 1 : Math.abs(y1) * 0.1 || 1; }
      function X(s) { return M.l + (s - x0) / (x1 - x0) * (W - M.l - M.r); }
      function Y(v) { return H - M.b - (f(v) - y0) / (y1 - y0) * (H - M.t - M.b); }
      var yt = log ? ticks(y0, y1, 4).map(function (e) { return Math.pow(10, e); }) : ticks(y0, y1, 4);
      yt.forEach(function (v) {
        plot.append(svg("line", { x1: M.l, x2: W - M.r, y1: Y(v), y2: Y(v), class: "grid" }));
        var t = svg("text", { x: M.l - 6, y: Y(v) + 4, "text-anchor": "end" });
        t.textContent = label(v);
        plot.append(t);
      });
      ticks(x0, x1, 6).filter(function (s) { return s === Math.round(s); }).forEach(function (s) {
        var t = svg("text", { x: X(s), y: H - 8, "text-anchor": "middle" });
        t.textContent = s.toLocaleString("en");
        plot.append(t);
      });
      plot.append(svg("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: "axis" }));
      plot.append(svg("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis" }));
      curves.forEach(function (c) {
        var points = [];
        var flush = function () {
          if (points.length > 1) {
            plot.append(svg("polyline", { points: points.join(" "), fill: "none",
              stroke: colour(c.index), "stroke-width": 1.6 }));
          } else if (points.length === 1) {
            var p = points[0].split(",");
            plot.append(svg("circle", { cx: p[0], cy: p[1], r: 2.5, fill: colour(c.index) }));
          }
          points = [];
        };
        c.curve.s.forEach(function (s, i) {
          var v = c.curve.v[i];
          if (v === null || (log && v <= 0)) { flush(); return; }
          points.push(X(s).toFixed(1) + "," + Y(v).toFixed(1));
        });
        flush();
        if (c.curve.s.length <= 60) {
          c.curve.s.forEach(function (s, i) {
            var v = c.curve.v[i];
            if (v !== null && (!log || v > 0)) {
              plot.append(svg("circle", { cx: X(s), cy: Y(v), r: 2.5, fill: colour(c.index) }));
            }
          });
        }
        var d = runs[c.index].divergence;
        if (d && d.step >= first && d.step <= last) {
          var mark = svg("line", { x1: X(d.step), x2: X(d.step), y1: M.t, y2: H - M.b, class: "diverged" });
          var why = svg("title", {});
          why.textContent = runs[c.index].name + " diverges at step " + d.step + ": " + d.why;
          mark.append(why);
          plot.append(mark);
        }
      });
      var rule = svg("line", { y1: M.t, y2: H - M.b, class: "cursor" });
      plot.append(rule);
      plot.addEventListener("click", function (e) {
        var box = plot.getBoundingClientRect();
        var x = (e.clientX - box.left) / box.width * W;
        go(Math.round(x0 + (x - M.l) / (W - M.l - M.r) * (x1 - x0)));
      });
      if (curves.length > 1 && wide) {
        var legend = el("div", "legend");
        curves.forEach(function (c) {
          var item = el("span");
          var sw = el("span", "swatch");
          sw.style.background = colour(c.index);
          item.append(sw, runs[c.index].name);
          legend.append(item);
        });
        figure.append(legend);
      }
      var notes = curves.map(function (c) { return c.curve.note; });
      var skipped = log ? curves.reduce(function (n, c) {
        return n + c.curve.v.filter(function (v) { return v !== null && v <= 0; }).length;
      }, 0) : 0;
      var note = notes.every(function (n) { return n === notes[0]; }) ? notes[0] : notes.join("; ");
      if (skipped) note += " · " + skipped + " value(s) ≤ 0 not drawn on the log axis";
      figure.append(el("div", "chart-note", note));
      return {
        node: figure,
        cursor: function (step) { rule.setAttribute("x1", X(step)); rule.setAttribute("x2", X(step)); },
      };
    }

    var charts = [];
    var chartsBox = document.getElementById("charts");
    var logLoss = false;

    function drawCharts() {
      chartsBox.replaceChildren();
      charts = [];
      var loss = runs.map(function (r, i) { return { index: i, curve: r.loss }; });
      var positive = loss.some(function (c) { return c.curve.v.some(function (v) { return v > 0; }); });
      var lossChart = chart("loss", loss, logLoss, true);
      if (positive) {
        var toggle = el("label", "chart-note");
        var box = el("input");
        box.type = "checkbox";
        box.checked = logLoss;
        box.addEventListener("change", function () { logLoss = box.checked; drawCharts(); go(current); });
        toggle.append(box, " log scale");
        lossChart.node.querySelector("figcaption").append(" ", toggle);
      }
      charts.push(lossChart);
      (data.weights || []).forEach(function (w) {
        var curves = runs.map(function (r, i) { return { index: i, curve: w.curves[r.name] }; })
          .filter(function (c) { return c.curve; });
        charts.push(chart(w.label, curves, false, false));
      });
      charts.forEach(function (c) { chartsBox.append(c.node); });
    }

    // -- the cursor ------------------------------------------------------------------------------

    var panel = document.getElementById("panel");
    var slider = document.getElementById("slider");
    var jump = document.getElementById("jump");
    var prev = document.getElementById("prev");
    var next = document.getElementById("next");
    var current = first;

    function render(step) {
      if (data.mode === "replay") {
        var run = runs[0];
        var v = run.views[step - first];
        panel.replaceChildren.apply(panel, v ? stepPanel(run, v)
          : [el("p", "warning", "Step " + step + " is not in this file.")]);
        return;
      }
      var side = data.tables[step - first];
      panel.replaceChildren(el("h2", "step-label", "All runs at step " + step),
        table({ h: side.h, r: side.r, c: [] }, side.i));
      if (side.m) panel.append.apply(panel, comparedImages(side.m));
    }

    function go(step) {
      if (!isFinite(step)) return;
      step = Math.min(Math.max(Math.round(step), first), last);
      current = step;
      slider.value = step;
      if (document.activeElement !== jump) jump.value = step;
      prev.disabled = step <= first;
      next.disabled = step >= last;
      render(step);
      charts.forEach(function (c) { c.cursor(step); });
      if (history.replaceState) history.replaceState(null, "", "#step=" + step);
    }

    prev.addEventListener("click", function () { go(current - 1); });
    next.addEventListener("click", function () { go(current + 1); });
    slider.addEventListener("input", function () { go(Number(slider.value)); });
    jump.addEventListener("change", function () { go(Number(jump.value)); });
    jump.addEventListener("keydown", function (e) { if (e.key === "Enter") go(Number(jump.value)); });

    var KEYS = { ArrowLeft: -1, ArrowRight: 1, PageUp: -10, PageDown: 10 };
    document.addEventListener("keydown", function (e) {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.target instanceof HTMLInputElement && e.target.type !== "checkbox") return; // it moves
      if (e.key in KEYS) { go(current + KEYS[e.key]); e.preventDefault(); }
      else if (e.key === "Home") { go(first); e.preventDefault(); }
      else if (e.key === "End") { go(last); e.preventDefault(); }
    });

    var asked = /^#step=(\d+)$/.exec(location.hash);
    drawCharts();
    go(asked ? Number(asked[1]) : first);
  }
})();
