// The Overview's spend chart: uPlot lines from the page's JSON block (#spend-data), one per
// model or team. Without JavaScript the table below it has the same numbers; with it, the
// table folds away (still one click open).
(function () {
  "use strict";
  var source = document.getElementById("spend-data");
  var target = document.getElementById("spend-chart");
  if (!source || !target || typeof window.uPlot !== "function") {
    return;
  }
  var data = JSON.parse(source.textContent);
  if (!data.series.length) {
    return;
  }
  // Distinct hues, each at least 3:1 against white.
  var palette = ["#0b5cad", "#b3261e", "#1a6b31", "#8a5300", "#6a3fa0", "#00707a", "#a0306e", "#4f5a65", "#1b1f24"];
  var money = function (u, v) { return v == null ? "—" : "$" + v.toFixed(v && Math.abs(v) < 0.01 ? 4 : 2); };
  var series = [{}];
  var columns = [data.x];
  data.series.forEach(function (s, i) {
    series.push({ label: s.label, stroke: palette[i % palette.length], width: 2, value: money });
    columns.push(s.values);
  });
  var width = function () { return Math.max(300, target.clientWidth || 600); };
  var plot = new window.uPlot({
    width: width(),
    height: 280,
    series: series,
    scales: { x: { time: true } },
    axes: [{}, { values: function (u, ticks) { return ticks.map(function (t) { return "$" + t; }); }, size: 70 }]
  }, columns, target);
  window.addEventListener("resize", function () { plot.setSize({ width: width(), height: 280 }); });
  var box = document.getElementById("spend-table-box");
  if (box) {
    box.open = false;
  }
})();
