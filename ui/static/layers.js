// Layers page: parameters, weight histograms, and activations for one chosen test sample.
"use strict";
(function () {
  const form = document.getElementById("sample-form"), input = document.getElementById("sample");
  input.value = new URLSearchParams(location.search).get("sample") || "0";

  function statLine(s) {
    return `mean ${UI.num(s.mean)} · std ${UI.num(s.std)} · min ${UI.num(s.min)} · max ${UI.num(s.max)} · zeros ${UI.num(100 * s.zeros, 1)} %`;
  }
  function histogram(s) {
    const svg = UI.el("svg", {class: "hist"});
    if (s && s.hist) Plot.hist(svg, s.hist);
    return svg;
  }
  // Values as shaded cells: an image keeps its shape, channels [C, H, W] become a grid of
  // H x W tiles, a flat vector wraps at 16. Cells shrink so the card keeps its width.
  function heat(values, shape) {
    const dims = shape.filter((d, i) => !(i === 0 && d === 1 && shape.length > 1));  // drop batch 1
    let C = 1, H = 1, W = values.length;
    if (dims.length >= 3) [C, H, W] = [dims.slice(0, -2).reduce((a, b) => a * b, 1), dims[dims.length - 2], dims[dims.length - 1]];
    else if (dims.length === 2) [H, W] = dims;
    else [H, W] = [Math.ceil(values.length / Math.min(16, values.length)), Math.min(16, values.length)];
    const per = Math.ceil(Math.sqrt(C)), rowsOfTiles = Math.ceil(C / per), gap = C > 1 ? 3 : 0;
    const c = Math.max(2, Math.min(14, Math.floor((280 - gap * per) / (per * W))));
    const tw = W * c + gap, th = H * c + gap;
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const svg = UI.el("svg", {class: "heat", width: per * tw, height: rowsOfTiles * th, viewBox: `0 0 ${per * tw} ${rowsOfTiles * th}`});
    values.forEach((v, i) => {
      const ch = Math.floor(i / (H * W)), j = i % (H * W);
      const x = (ch % per) * tw + (j % W) * c, y = Math.floor(ch / per) * th + Math.floor(j / W) * c;
      const g = Math.round(255 - 215 * (v - lo) / span);
      svg.append(UI.el("rect", {x, y, width: Math.max(1, c - (c > 4 ? 1 : 0)), height: Math.max(1, c - (c > 4 ? 1 : 0)),
        fill: `rgb(${g},${g},${Math.min(255, g + 30)})`}, UI.el("title", {}, (C > 1 ? `channel ${ch}: ` : "") + UI.num(v))));
    });
    return svg;
  }

  async function load() {
    const sample = input.value;
    let r;
    try {
      r = await UI.json(UI.runUrl(UI.runId, "/layers?sample=" + encodeURIComponent(sample)));
      UI.showError("layers-error", r.activations_error ? new Error("activations: " + r.activations_error) : null);
    } catch (e) { UI.showError("layers-error", e); return; }
    document.getElementById("sample-info").textContent = r.input ? `label ${r.input.label} · predicted ${r.input.prediction}` : "";
    const iv = document.getElementById("input-view");
    iv.replaceChildren(...(r.input ? [UI.el("h2", {}, "Input"), heat(r.input.values, r.input.shape.length >= 2 ? r.input.shape : [8, 8])] : []));
    document.getElementById("layers").replaceChildren(...r.layers.map(l => UI.el("section", {class: "layer-card", "data-layer": l.name},
      UI.el("h2", {}, UI.el("span", {class: "layer-name"}, l.name || "(top level)"), " ",
        UI.el("span", {class: "muted"}, `${l.param_count.toLocaleString()} parameters · output ${UI.shape(l.activation ? l.activation.shape : l.output_shape)}`)),
      l.ops.length ? UI.el("p", {class: "muted small"}, `IR ops: ${l.ops.map(o => o.op).join(", ")} · kernels: ${l.kernels.map(k => "k" + k).join(", ") || "–"}`) : null,
      UI.el("div", {class: "cards"},
        ...l.params.map(p => UI.el("div", {class: "card"}, UI.el("h3", {}, UI.el("code", {}, p.name), " ", UI.shape(p.shape)),
          histogram(p.stats), UI.el("p", {class: "small"}, statLine(p.stats)))),
        l.activation ? UI.el("div", {class: "card activation"}, UI.el("h3", {}, "Activation ", UI.shape(l.activation.shape)),
          l.activation.values ? heat(l.activation.values, l.activation.shape) : null,
          histogram(l.activation.stats), UI.el("p", {class: "small"}, statLine(l.activation.stats))) : null))));
    document.body.dataset.ready = "1";
  }
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    history.replaceState(null, "", "?sample=" + encodeURIComponent(input.value));
    load();
  });
  load();
})();
