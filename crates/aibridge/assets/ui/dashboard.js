// aibridge operator dashboard: live cooldown countdowns, the usage chart (uPlot), and a
// confirmation before a form that asks for one. Loaded with `defer`; no inline script anywhere
// (the content security policy forbids it). Every page works without this file.
(function () {
  "use strict";

  // The server's clock at render time: countdowns run on it, whatever the browser's clock says.
  var serverNow = Number(document.body.getAttribute("data-now-ms")) || Date.now();
  var skew = Date.now() - serverNow;

  function tick() {
    var spans = document.querySelectorAll("span.countdown[data-until-ms]");
    for (var i = 0; i < spans.length; i++) {
      var el = spans[i];
      var until = Number(el.getAttribute("data-until-ms")) + skew;
      var left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      el.textContent = String(left);
      if (left === 0) {
        el.classList.add("done");
      }
    }
    return spans.length;
  }

  if (tick() > 0) {
    window.setInterval(tick, 1000);
  }

  // <form data-confirm="…">: asked before it is sent.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  var PALETTE = [
    "#2457c5", "#e07b1a", "#1c9c5a", "#c0392b", "#8e44ad",
    "#16a2b8", "#b58900", "#d63384", "#5d6677", "#2e7d32", "#9aa4b5",
  ];

  function fill(hex) {
    return hex + "b3"; // 70 % opaque
  }

  function drawUsageChart() {
    var holder = document.getElementById("usage-chart");
    var source = document.getElementById("usage-data");
    if (!holder || !source || typeof window.uPlot === "undefined") {
      return;
    }
    var data;
    try {
      data = JSON.parse(source.textContent);
    } catch (e) {
      return;
    }
    if (!data.days || data.days.length === 0 || !data.series || data.series.length === 0) {
      return;
    }
    var uPlot = window.uPlot;
    // Stacked: series k is drawn at the sum of series 0..k, tallest first, so each lower one
    // paints over the part of the bar that is its own.
    var sums = [];
    var running = data.days.map(function () { return 0; });
    data.series.forEach(function (s) {
      running = running.map(function (v, i) { return v + (s.values[i] || 0); });
      sums.push(running.slice());
    });
    var series = [{ label: "day", value: function (u, v, si, idx) {
      return idx == null ? "—" : data.labels[idx];
    } }];
    var columns = [data.days];
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 80] }) : undefined;
    for (var k = data.series.length - 1; k >= 0; k--) {
      (function (k) {
        var color = PALETTE[k % PALETTE.length];
        series.push({
          label: data.series[k].label,
          stroke: color,
          fill: fill(color),
          width: 1,
          paths: bars,
          points: { show: false },
          value: function (u, v, si, idx) {
            return idx == null ? "—" : Number(data.series[k].values[idx]).toLocaleString();
          },
        });
      })(k);
      columns.push(sums[k]);
    }
    // Fixed ranges (uPlot may ask again with the last range): half a day either side of the
    // first and last day, and from 0 to just above the tallest stack.
    var xMin = data.days[0] - 43200;
    var xMax = data.days[data.days.length - 1] + 43200;
    var top = Math.max.apply(null, running.concat([1])) * 1.05;
    var width = function () {
      return Math.max(320, holder.clientWidth || 800);
    };
    var plot = new uPlot({
      width: width(),
      height: 320,
      series: series,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      scales: {
        x: {
          time: true,
          range: function () { return [xMin, xMax]; },
        },
        y: {
          range: function () { return [0, top]; },
        },
      },
      axes: [
        {
          // One tick per day (every few days when there are many), labelled YYYY-MM-DD (UTC).
          splits: function () {
            var every = Math.ceil(data.days.length / 12);
            return data.days.filter(function (d, i) { return i % every === 0; });
          },
          values: function (u, splits) {
            return splits.map(function (s) { return data.labels[data.days.indexOf(s)] || ""; });
          },
        },
        {
          size: 70,
          values: function (u, ticks) {
            return ticks.map(function (t) { return Number(t).toLocaleString(); });
          },
        },
      ],
    }, columns, holder);
    window.addEventListener("resize", function () {
      plot.setSize({ width: width(), height: 320 });
    });
  }

  drawUsageChart();
})();
