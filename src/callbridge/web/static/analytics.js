// The /analytics page: draws the figures the server put in #analytics-data (Chart.js, vendored).
(function () {
  "use strict";
  function start() {
    var source = document.getElementById("analytics-data");
    if (!source || typeof window.Chart === "undefined") { return; }
    var report = JSON.parse(source.textContent);
    var labels = report.groups.map(function (g) { return g.key === null ? "(none)" : String(g.key); });
    function series(name) { return report.groups.map(function (g) { return g[name]; }); }
    var canvas = document.getElementById("a-chart");
    var chart = new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: [
          { label: "answered", data: series("answered"), backgroundColor: "#2e7d32", stack: "calls" },
          { label: "missed", data: series("missed"), backgroundColor: "#c62828", stack: "calls" },
          { label: "abandoned", data: series("abandoned"), backgroundColor: "#ef6c00", stack: "calls" },
          { label: "answer rate %", type: "line", yAxisID: "rate", borderColor: "#1565c0",
            data: report.groups.map(function (g) { return g.answer_rate === null ? null : Math.round(g.answer_rate * 1000) / 10; }) }
        ]
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "calls" } },
          rate: { position: "right", min: 0, max: 100, grid: { drawOnChartArea: false } }
        }
      }
    });
    canvas.dataset.ready = "1";
    window.analyticsChart = chart;
    var heat = document.getElementById("a-heat");
    if (heat) {
      var most = Math.max.apply(null, [1].concat(series("offered")));
      report.groups.forEach(function (g) {
        var cell = document.createElement("span");
        cell.className = "heat-cell";
        cell.title = g.key + ": " + g.offered + " offered";
        cell.textContent = g.offered ? String(g.offered) : "";
        cell.style.backgroundColor = "rgba(21, 101, 192, " + (g.offered / most).toFixed(2) + ")";
        heat.appendChild(cell);
      });
    }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
