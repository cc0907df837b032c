// Draws every [data-series] element as a uPlot line chart of [[unix seconds, value], ...].
(function () {
  function draw(el) {
    var points = JSON.parse(el.dataset.series || "[]");
    if (!points.length) { el.textContent = "No data yet."; return; }
    var xs = points.map(function (p) { return p[0]; });
    var ys = points.map(function (p) { return p[1]; });
    new uPlot({
      width: el.clientWidth || 800, height: 240,
      scales: {
        // One report alone would stretch the time axis over years: show the hour around it.
        x: { time: true, range: function (u, min, max) { return min === max ? [min - 3600, max + 3600] : [min, max]; } },
        y: { range: [0, 1] },
      },
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return Math.round(v * 100) + " %"; }); } }],
      series: [{}, { label: "drift share", stroke: "#3b5bdb", width: 2, fill: "rgba(59,91,219,0.08)", points: { show: true } }],
    }, [xs, ys], el);
  }
  document.querySelectorAll("[data-series]").forEach(draw);
})();
