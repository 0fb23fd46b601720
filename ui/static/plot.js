// Minimal SVG line plot: no dependency needed for a few curves of a few thousand points.
"use strict";
const Plot = {
  W: 480, H: 240, M: {l: 56, r: 12, t: 10, b: 28},

  draw(svg, xs, ys, opts) {
    opts = opts || {};
    while (svg.firstChild) svg.firstChild.remove();
    const pts = xs.map((x, i) => [x, ys[i]]).filter(p => p[1] !== null && p[1] !== undefined && isFinite(p[1]));
    const {l, r, t, b} = Plot.M, w = Plot.W - l - r, h = Plot.H - t - b;
    svg.append(UI.el("rect", {x: l, y: t, width: w, height: h, class: "frame"}));
    if (!pts.length) {
      svg.append(UI.el("text", {x: l + w / 2, y: t + h / 2, class: "empty", "text-anchor": "middle"}, "no data yet"));
      svg.dataset.points = "0";
      return;
    }
    let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
    let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
    let off = 0;
    if (opts.robust && pts.length >= 8) {
      // Step times have a few huge outliers (the first step compiles kernels, epoch ends
      // evaluate); scale to the bulk of the points and clip the rest to the frame.
      const ys = pts.map(p => p[1]).sort((a, b) => a - b), med = ys[ys.length >> 1];
      const mad = ys.map(y => Math.abs(y - med)).sort((a, b) => a - b)[ys.length >> 1] || Math.abs(med) * 0.05 || 1;
      const lo = Math.max(y0, med - 8 * mad), hi = Math.min(y1, med + 8 * mad);
      off = pts.filter(p => p[1] < lo || p[1] > hi).length;
      if (off) [y0, y1] = [lo, hi];
    }
    if (opts.zero) y0 = Math.min(0, y0);
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 += Math.abs(y0) * 0.1 || 1; y0 -= Math.abs(y0) * 0.1 || 0; }
    const sx = x => l + (x - x0) / (x1 - x0) * w;
    const sy = y => t + h - (Math.min(y1, Math.max(y0, y)) - y0) / (y1 - y0) * h;
    // enough decimals to tell neighbouring ticks apart, no more
    const dec = Math.max(0, Math.min(6, Math.ceil(-Math.log10((y1 - y0) / 4)) + 1));
    for (let i = 0; i <= 4; i++) {
      const v = y0 + (y1 - y0) * i / 4, y = sy(v);
      svg.append(UI.el("line", {x1: l, x2: l + w, y1: y, y2: y, class: "gridline"}));
      svg.append(UI.el("text", {x: l - 4, y: y + 4, "text-anchor": "end", class: "tick"}, Math.abs(v) >= 1e5 ? v.toExponential(2) : v.toFixed(dec)));
    }
    for (let i = 0; i <= 4; i++) {
      const v = x0 + (x1 - x0) * i / 4;
      svg.append(UI.el("text", {x: sx(v), y: t + h + 18, "text-anchor": "middle", class: "tick"}, Math.round(v)));
    }
    svg.append(UI.el("polyline", {class: "line", points: pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ")}));
    if (pts.length <= 60) for (const p of pts) svg.append(UI.el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, class: "dot"}, UI.el("title", {}, p[0] + ": " + UI.num(p[1]))));
    if (off) svg.append(UI.el("text", {x: l + w - 4, y: t + 12, "text-anchor": "end", class: "tick"},
      `${off} point${off > 1 ? "s" : ""} off scale, clipped (max ${UI.num(Math.max(...pts.map(p => p[1])), 3)})`));
    svg.dataset.points = String(pts.length);
  },

  // Histogram {counts, edges} as bars.
  hist(svg, hist) {
    while (svg.firstChild) svg.firstChild.remove();
    const W = 240, H = 80, n = hist.counts.length, max = Math.max(1, ...hist.counts);
    svg.setAttribute("viewBox", `0 0 ${W} ${H + 14}`);
    hist.counts.forEach((c, i) => {
      const bh = c / max * H;
      svg.append(UI.el("rect", {x: i * W / n, y: H - bh, width: W / n - 1, height: bh, class: "bar"},
        UI.el("title", {}, `[${UI.num(hist.edges[i], 3)}, ${UI.num(hist.edges[i + 1], 3)}): ${c}`)));
    });
    svg.append(UI.el("text", {x: 0, y: H + 12, class: "tick"}, UI.num(hist.edges[0], 3)));
    svg.append(UI.el("text", {x: W, y: H + 12, class: "tick", "text-anchor": "end"}, UI.num(hist.edges[n], 3)));
  },
};
