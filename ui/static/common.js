// Shared helpers. Every string from the API goes into the DOM as a text node (never
// innerHTML), so names recorded by a run cannot inject markup.
"use strict";
const UI = {
  runId: document.body.dataset.runId,
  api: document.body.dataset.api,  // ".../api/runs"

  el(tag, attrs, ...children) {
    const svg = ["svg", "g", "rect", "text", "path", "polyline", "circle", "line", "title"].includes(tag);
    const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "onclick") e.addEventListener("click", v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  },

  async json(url) {
    const r = await fetch(url, {headers: {"Accept": "application/json"}});
    const body = await r.json().catch(() => ({message: r.statusText}));
    if (!r.ok) throw new Error(body.message || r.statusText);
    return body;
  },

  runUrl(id, suffix) { return UI.api + "/" + encodeURIComponent(id) + (suffix || ""); },
  pageUrl(id, suffix) { return UI.api.replace(/\/api\/runs$/, "/runs/") + encodeURIComponent(id) + (suffix || ""); },

  num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return v.toFixed(digits === undefined ? (Number.isInteger(v) ? 0 : 4) : digits);
  },
  age(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  },
  time(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; },
  shape(s) { return s ? "[" + s.join(", ") + "]" : "–"; },

  showError(id, err) {
    const p = document.getElementById(id);
    if (!p) return;
    p.hidden = !err;
    p.textContent = err ? String(err.message || err) : "";
  },

  // Poll fn every ms until it returns false; errors are shown, polling continues.
  poll(fn, ms, errorId) {
    let stopped = false;
    const tick = async () => {
      try { if ((await fn()) === false) stopped = true; UI.showError(errorId, null); }
      catch (e) { UI.showError(errorId, e); }
      if (!stopped) setTimeout(tick, ms);
    };
    tick();
  },
};
