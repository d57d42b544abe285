// The campaign page's live chart: image and fragment accuracy (left axis, 0..1) and
// loss (right axis) per round, drawn as SVG from the points the page was rendered with
// and redrawn on every "rounds" server-sent event.
(function () {
  "use strict";
  var svg = document.getElementById("chart");
  var script = document.currentScript;
  if (!svg) return;
  var NS = "http://www.w3.org/2000/svg";
  var W = 640, H = 260, L = 44, R = 48, T = 12, B = 30;
  var lastPoints = [];

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function draw(points) {
    lastPoints = points;
    // Draw in the pixels the chart has, so its labels stay readable on a phone.
    W = Math.max(320, Math.min(900, svg.clientWidth || 640));
    H = W < 500 ? 220 : 260;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("data-points", String(points.length));
    var maxRound = 1, maxLoss = 0;
    points.forEach(function (p) { maxRound = Math.max(maxRound, p.round + 1); maxLoss = Math.max(maxLoss, p.loss); });
    if (maxLoss <= 0) maxLoss = 1;
    var x = function (r) { return L + (W - L - R) * (r + 0.5) / maxRound; };
    var yAcc = function (a) { return T + (H - T - B) * (1 - a); };
    var yLoss = function (l) { return T + (H - T - B) * (1 - l / maxLoss); };
    for (var i = 0; i <= 4; i++) {
      var v = i / 4, y = yAcc(v);
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e6ef" }));
      svg.appendChild(el("text", { x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6478" }, Math.round(v * 100) + "%"));
      svg.appendChild(el("text", { x: W - R + 6, y: y + 4, "font-size": 11, fill: "#c77700" }, (maxLoss * v).toFixed(2)));
    }
    svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#5b6478" }, "round"));
    if (points.length === 0) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#5b6478" }, "no evaluated round yet"));
      return;
    }
    [["img", "#2857c5", yAcc], ["frag", "#1b7a3a", yAcc], ["loss", "#c77700", yLoss]].forEach(function (s) {
      var pts = points.map(function (p) { return x(p.round).toFixed(1) + "," + s[2](p[s[0]]).toFixed(1); }).join(" ");
      svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: s[1], "stroke-width": 2 }));
      points.forEach(function (p) {
        var c = el("circle", { cx: x(p.round), cy: s[2](p[s[0]]), r: 3, fill: s[1] });
        c.appendChild(el("title", {}, "round " + p.round + ": " + s[0] + " " + (s[0] === "loss" ? p.loss.toFixed(3) : (100 * p[s[0]]).toFixed(1) + "%")));
        svg.appendChild(c);
      });
    });
    points.forEach(function (p) {
      svg.appendChild(el("text", { x: x(p.round), y: H - B + 14, "text-anchor": "middle", "font-size": 10, fill: "#5b6478" }, String(p.round)));
    });
  }

  var data = document.getElementById("chart-data");
  draw(data ? JSON.parse(data.textContent || "[]") || [] : []);
  window.addEventListener("resize", function () { draw(lastPoints); });
  var url = script && script.getAttribute("data-events");
  if (!url || !window.EventSource) return;
  var es = new EventSource(url);
  es.addEventListener("rounds", function (ev) {
    var msg = JSON.parse(ev.data);
    draw(msg.points || []);
    var st = document.getElementById("state");
    if (st && msg.state) { st.textContent = msg.state; st.className = "state " + msg.state; }
    var rd = document.getElementById("round");
    if (rd && msg.round) rd.textContent = msg.round;
  });
  window.addEventListener("pagehide", function () { es.close(); });
})();
