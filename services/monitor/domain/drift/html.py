"""A self-contained HTML page for a drift report: inline CSS, JS and SVG, no network.

Built from the report's binned summaries only, so the page size does not depend on the row count.
The verdict banner is written by the script at load and the table is sorted by it (drifted first),
which lets a headless browser test prove the page really renders.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from services.monitor.domain.drift.report import DriftReport

CHART_WIDTH = 420
CHART_HEIGHT = 120
REFERENCE_COLOR = "#4c78a8"
CURRENT_COLOR = "#f58518"

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}
.banner{padding:14px 18px;border-radius:6px;font-size:18px;font-weight:600;margin-bottom:8px}
.banner.drift{background:#fde2e1;color:#8a1c1c}.banner.stable{background:#e3f4e1;color:#1d5e20}
.banner.pending{background:#eee}
.meta{color:#555;margin:4px 0 18px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e4e4}
th{cursor:pointer;user-select:none;background:#f6f6f6}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.yes{color:#b42318;font-weight:600}.no{color:#2e7d32}.skip{color:#777}
section{margin-top:22px;border-top:1px solid #ddd;padding-top:8px}
section h2{font-size:16px;margin:4px 0}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.stats{color:#444;font-size:13px}
"""

_SCRIPT = """
(function () {
  var summary = JSON.parse(document.getElementById("summary").textContent);
  var banner = document.getElementById("verdict");
  if (summary.status !== "ok") {
    banner.textContent = "No verdict: " + summary.status.replace("_", " ");
    banner.className = "banner pending";
  } else {
    banner.textContent = (summary.dataset_drift ? "Dataset drift detected" : "No dataset drift")
      + ": " + summary.number_of_drifted_columns + " of " + summary.number_of_columns
      + " columns drifted (" + (100 * summary.drift_share).toFixed(1) + "%, threshold "
      + (100 * summary.drift_share_threshold).toFixed(1) + "%)";
    banner.className = "banner " + (summary.dataset_drift ? "drift" : "stable");
  }
  var table = document.getElementById("columns");
  var body = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  function value(row, key) {
    var raw = row.getAttribute("data-" + key);
    var number = parseFloat(raw);
    return raw !== "" && !isNaN(number) ? number : raw;
  }
  function sortBy(keys, directions) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      for (var i = 0; i < keys.length; i++) {
        var x = value(a, keys[i]), y = value(b, keys[i]);
        if (x === y) continue;
        if (x === "") return 1;
        if (y === "") return -1;
        return (x < y ? -1 : 1) * directions[i];
      }
      return 0;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(headers, function (header) {
    header.addEventListener("click", function () {
      var direction = header.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
      sortBy([header.getAttribute("data-key"), "name"], [direction, 1]);
    });
  });
  sortBy(["drift", "name"], [-1, 1]);
  table.setAttribute("data-sorted", "drift");
})();
"""

_COLUMNS = [
    ("name", "Column"),
    ("type", "Type"),
    ("method", "Method"),
    ("score", "Score"),
    ("threshold", "Threshold"),
    ("drift", "Verdict"),
    ("missing", "Missing (current)"),
]


def render_html(report: DriftReport, title: str = "Data drift report") -> str:
    data = report.to_dict()
    summary = {key: value for key, value in data.items() if key != "columns"}
    # "</" inside a script element would end it early.
    summary_json = json.dumps(summary).replace("</", "<\\/")
    head = "".join(f'<th data-key="{key}" scope="col">{escape(label)}</th>' for key, label in _COLUMNS)
    rows = "".join(_row(index, name, column) for index, (name, column) in enumerate(data["columns"].items()))
    sections = "".join(_section(index, name, column) for index, (name, column) in enumerate(data["columns"].items()))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        '<div id="verdict" class="banner pending">The verdict needs JavaScript.</div>'
        f'<p class="meta">Reference rows: {data["reference_rows"]:,} &middot; '
        f"current rows: {data['current_rows']:,} &middot; columns tested: {data['number_of_columns']}</p>"
        f'<table id="columns"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
        f"{sections}"
        f'<script type="application/json" id="summary">{summary_json}</script>'
        f"<script>{_SCRIPT}</script></body></html>"
    )


def _row(index: int, name: str, column: dict[str, Any]) -> str:
    tested = column["status"] == "ok"
    if tested:
        verdict = '<span class="yes">drift</span>' if column["drift"] else '<span class="no">no drift</span>'
    else:
        verdict = f'<span class="skip">{escape(column["status"].replace("_", " "))}</span>'
    attributes = {
        "name": name,
        "type": column["column_type"],
        "method": column["method"] or "",
        "score": "" if column["score"] is None else repr(column["score"]),
        "threshold": "" if column["threshold"] is None else repr(column["threshold"]),
        # Sorts drifted (2) before stable (1) before untested (0).
        "drift": str(2 if column["drift"] else 1 if tested else 0),
        "missing": "" if column["missing_share"] is None else repr(column["missing_share"]),
    }
    data_attributes = " ".join(f'data-{key}="{escape(value)}"' for key, value in attributes.items())
    cells = [
        f'<a href="#column-{index}">{escape(name)}</a>',
        escape(column["column_type"]),
        escape(column["method"] or ""),
        _number(column["score"]),
        _number(column["threshold"]),
        verdict,
        _percent(column["missing_share"]),
    ]
    rendered = "".join(
        f'<td class="num">{cell}</td>' if position in (3, 4, 6) else f"<td>{cell}</td>"
        for position, cell in enumerate(cells)
    )
    return f"<tr {data_attributes}>{rendered}</tr>"


def _section(index: int, name: str, column: dict[str, Any]) -> str:
    notes = []
    if column["reason"]:
        notes.append(escape(column["reason"]))
    new = column["new_categories"]
    if new and new["count"]:
        examples = ", ".join(escape(example) for example in new["examples"])
        noun = "category" if new["count"] == 1 else "categories"
        notes.append(f"{new['count']} new {noun} ({_percent(new['share'])} of current rows): {examples}")
    for side in ("reference", "current"):
        stats = column[side]
        if stats:
            notes.append(f"{side}: {_side_stats(stats)}")
    chart = _chart(column["reference"], column["current"])
    legend = (
        f'<div class="legend"><span style="background:{REFERENCE_COLOR}"></span>reference'
        f'<span style="background:{CURRENT_COLOR}"></span>current (share of rows per bin)</div>'
    )
    body = "".join(f'<p class="stats">{note}</p>' for note in notes)
    return f'<section id="column-{index}"><h2>{escape(name)}</h2>{body}{chart}{legend if chart else ""}</section>'


def _side_stats(stats: dict[str, Any]) -> str:
    shown = ["count", "missing_share", "unique", "mean", "std", "min", "median", "max", "top", "top_share"]
    parts = []
    for key in shown:
        if stats.get(key) is None:
            continue
        value = stats[key]
        text = _percent(value) if key.endswith("share") else _number(value) if isinstance(value, float) else value
        parts.append(f"{key.replace('_', ' ')} {escape(str(text))}")
    return ", ".join(parts)


def _chart(reference: dict[str, Any] | None, current: dict[str, Any] | None) -> str:
    """Side-by-side bars of each side's share of rows per bin."""
    histograms = [side["histogram"] if side else None for side in (reference, current)]
    present = [histogram for histogram in histograms if histogram and histogram["counts"]]
    if not present:
        return ""
    first = present[0]
    if "edges" in first:
        labels = [f"{first['edges'][0]:.4g}", f"{first['edges'][-1]:.4g}"]
        tooltips = [f"{low:.4g} to {high:.4g}" for low, high in zip(first["edges"], first["edges"][1:], strict=False)]
    else:
        labels = []
        tooltips = first["labels"]
    bins = len(first["counts"])
    plot_height = CHART_HEIGHT - 18
    slot = CHART_WIDTH / bins
    bar = max(slot / 2 - 1, 0.5)
    shares = [
        [count / (sum(histogram["counts"]) or 1) for count in histogram["counts"]]
        if histogram and histogram["counts"]
        else []
        for histogram in histograms
    ]
    # The tallest bar of either side fills the plot, so small shares stay visible.
    scale = plot_height / (max(max(side, default=0) for side in shares) or 1)
    shapes = []
    for offset, (side, color) in enumerate(zip(shares, (REFERENCE_COLOR, CURRENT_COLOR), strict=True)):
        for position, share in enumerate(side):
            height = share * scale
            x = position * slot + offset * bar + 0.5
            shapes.append(
                f'<rect x="{x:.1f}" y="{plot_height - height:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{color}"><title>{escape(str(tooltips[position]))}: {share:.1%}</title></rect>'
            )
    if labels:
        shapes.append(f'<text x="0" y="{CHART_HEIGHT - 4}" font-size="11">{escape(labels[0])}</text>')
        shapes.append(
            f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT - 4}" font-size="11" text-anchor="end">'
            f"{escape(labels[1])}</text>"
        )
    elif bins <= 12:
        for position, label in enumerate(tooltips):
            shapes.append(
                f'<text x="{position * slot + slot / 2:.1f}" y="{CHART_HEIGHT - 4}" font-size="11" '
                f'text-anchor="middle">{escape(str(label)[:12])}</text>'
            )
    return (
        f'<svg width="{CHART_WIDTH}" height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
        f'role="img" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="0" y1="{plot_height}" x2="{CHART_WIDTH}" y2="{plot_height}" stroke="#999"/>'
        f"{''.join(shapes)}</svg>"
    )


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"
