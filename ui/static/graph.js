// Graph page: IR ops laid out by dagre (vendor/dagre), boxed by kernel, coloured by layer.
"use strict";
(function () {
  const svg = document.getElementById("graph");
  const PALETTE = ["#dbeafe", "#dcfce7", "#fef3c7", "#fce7f3", "#ede9fe", "#cffafe", "#fee2e2", "#ecfccb", "#e0e7ff", "#f5f5f4"];
  const layerColor = {};
  const colorOf = scope => scope ? (layerColor[scope] = layerColor[scope] || PALETTE[Object.keys(layerColor).length % PALETTE.length]) : "#ffffff";
  let graph, profile = [], size = {W: 1, H: 1}, scale = 1;

  // Big training graphs are wider than the column: start fitted, zoom with the buttons.
  function zoom(how) {
    const wrap = document.getElementById("graph-wrap");
    const fit = Math.min(1, (wrap.clientWidth - 4) / size.W);
    scale = how === "fit" ? fit : how === "in" ? Math.min(2, scale * 1.5) : how === "out" ? Math.max(0.1, scale / 1.5) : 1;
    svg.setAttribute("width", Math.round(size.W * scale));
    svg.setAttribute("height", Math.round(size.H * scale));
    document.getElementById("zoom-level").textContent = Math.round(scale * 100) + " %";
  }
  for (const how of ["fit", "in", "out", "one"]) document.getElementById("zoom-" + how).addEventListener("click", () => zoom(how));

  function timing(kernel) {
    const runs = profile.filter(p => p.name === kernel.name);
    if (!runs.length) return "not profiled";
    const ns = runs.reduce((s, p) => s + (p.time_ns || 0), 0) / runs.length;
    return UI.num(ns / 1000, 1) + " µs" + (runs.length > 1 ? ` (mean of ${runs.length} launches)` : "");
  }

  function select(index) {
    const k = graph.kernels.find(k => k.index === index);
    if (!k) return;
    const panel = document.getElementById("kernel-detail"), wasHidden = panel.hidden;
    panel.hidden = false;
    if (wasHidden && scale >= 0.5) zoom("fit");  // the graph column just got narrower
    for (const g of svg.querySelectorAll(".kernel.selected")) g.classList.remove("selected");
    const box = svg.querySelector(`.kernel[data-kernel="${index}"]`);
    if (box) {
      box.classList.add("selected");
      if (scale < 0.5) zoom("one");  // readable size, then bring the kernel into view
      box.scrollIntoView({block: "nearest", inline: "nearest"});
    }
    const prof = profile.find(p => p.name === k.name) || {};
    document.getElementById("kd-name").textContent = `kernel ${k.index}: ${k.name}`;
    document.getElementById("kd-name").dataset.kernel = k.index;
    const facts = [["Template", k.template], ["Global size", UI.shape(k.global_size)],
      ["Local size", k.local_size ? UI.shape(k.local_size) : "chosen by the driver"],
      ["Device", prof.device || graph.device || "–"], ["Measured time", timing(k)],
      ["Inputs (node ids)", (k.inputs || []).join(", ")], ["Output (node id)", k.output]];
    document.getElementById("kd-facts").replaceChildren(...facts.flatMap(([a, b]) => [UI.el("dt", {}, a), UI.el("dd", {}, b)]));
    document.querySelector("#kd-params tbody").replaceChildren(...Object.entries(k.params || {}).map(([p, v]) =>
      UI.el("tr", {}, UI.el("th", {}, p), UI.el("td", {}, UI.el("code", {}, typeof v === "string" ? v : JSON.stringify(v))))));
    const byId = Object.fromEntries(graph.nodes.map(n => [n.id, n]));
    document.getElementById("kd-ops").replaceChildren(...(k.fused_ops || []).map(id => {
      const n = byId[id] || {op: (k.ops || [])[0], shape: null, scope: ""};
      return UI.el("li", {}, UI.el("code", {}, `%${id} ${n.op}`), " ", UI.shape(n.shape), " ", UI.el("span", {class: "muted"}, n.scope || ""));
    }));
    const code = document.getElementById("kd-source");
    code.textContent = k.source;          // text, never HTML
    delete code.dataset.highlighted;
    if (window.hljs) hljs.highlightElement(code);

  }

  function drawOps() {
    const g = new dagre.graphlib.Graph({compound: true});
    g.setGraph({rankdir: "TB", nodesep: 14, ranksep: 34, marginx: 16, marginy: 24});
    g.setDefaultEdgeLabel(() => ({}));
    for (const k of graph.kernels) g.setNode("k" + k.index, {kernel: k});
    for (const n of graph.nodes) {
      const label = `${n.op} ${UI.shape(n.shape)}`;
      g.setNode("n" + n.id, {node: n, label, width: Math.max(70, 7 * label.length + 16), height: 26});
      if (n.kernel !== null && n.kernel !== undefined && g.hasNode("k" + n.kernel)) g.setParent("n" + n.id, "k" + n.kernel);
    }
    for (const n of graph.nodes) for (const s of n.srcs || []) if (g.hasNode("n" + s)) g.setEdge("n" + s, "n" + n.id);
    dagre.layout(g);
    size = {W: g.graph().width, H: g.graph().height};
    svg.setAttribute("viewBox", `0 0 ${size.W} ${size.H}`);
    zoom("fit");
    const layerClusters = UI.el("g", {}), edges = UI.el("g", {}), ops = UI.el("g", {});
    for (const id of g.nodes()) {
      const d = g.node(id);
      if (!d || !d.kernel) continue;
      const k = d.kernel;
      layerClusters.append(UI.el("g", {class: "kernel", "data-kernel": k.index, onclick: () => select(k.index)},
        UI.el("rect", {x: d.x - d.width / 2 - 6, y: d.y - d.height / 2 - 16, width: d.width + 12, height: d.height + 22, rx: 6}),
        UI.el("text", {x: d.x - d.width / 2, y: d.y - d.height / 2 - 4, class: "klabel"}, `k${k.index} ${k.name}`),
        UI.el("title", {}, `${k.name} (${k.template}) — click for source`)));
    }
    for (const e of g.edges()) {
      const pts = g.edge(e).points || [];
      if (pts.length) edges.append(UI.el("path", {class: "edge", d: "M" + pts.map(p => `${p.x},${p.y}`).join(" L")}));
    }
    for (const id of g.nodes()) {
      const d = g.node(id);
      if (!d || !d.node) continue;
      const n = d.node, fused = n.kernel !== null && n.kernel !== undefined;
      ops.append(UI.el("g", {class: "op" + (fused ? "" : " unfused"), "data-node": n.id,
          onclick: fused ? () => select(n.kernel) : null},
        UI.el("rect", {x: d.x - d.width / 2, y: d.y - d.height / 2, width: d.width, height: d.height, rx: 4, fill: colorOf(n.scope)}),
        UI.el("text", {x: d.x, y: d.y + 4, "text-anchor": "middle"}, d.label),
        UI.el("title", {}, `%${n.id} ${n.op} ${UI.shape(n.shape)} ${n.dtype}\nlayer: ${n.scope || "(none)"}\nkernel: ${fused ? n.kernel : "none (view or buffer)"}`)));
    }
    svg.replaceChildren(layerClusters, edges, ops);
  }

  // Kernel view: one box per kernel, an edge where a kernel reads what another wrote
  // (through any views between them). Much smaller than the op view on training graphs.
  function drawKernels() {
    const byId = Object.fromEntries(graph.nodes.map(n => [n.id, n])), memo = {};
    const producers = id => {
      if (memo[id]) return memo[id];
      const n = byId[id];
      memo[id] = new Set();
      if (!n) return memo[id];
      if (n.kernel !== null && n.kernel !== undefined) memo[id].add(n.kernel);
      else for (const s of n.srcs || []) for (const p of producers(s)) memo[id].add(p);
      return memo[id];
    };
    const g = new dagre.graphlib.Graph();
    g.setGraph({rankdir: "TB", nodesep: 16, ranksep: 30, marginx: 16, marginy: 16});
    g.setDefaultEdgeLabel(() => ({}));
    for (const k of graph.kernels) {
      const ops = k.ops || [];
      const label = `k${k.index} ${ops.slice(0, 4).join(" ")}${ops.length > 4 ? " …" : ""}`;
      g.setNode("k" + k.index, {kernel: k, label, width: Math.max(90, 7 * label.length + 16), height: 28});
    }
    for (const k of graph.kernels) {
      const own = new Set(k.fused_ops || []);
      for (const id of own) for (const s of (byId[id] || {}).srcs || []) {
        if (own.has(s)) continue;
        for (const p of producers(s)) if (p !== k.index && g.hasNode("k" + p)) g.setEdge("k" + p, "k" + k.index);
      }
    }
    dagre.layout(g);
    size = {W: g.graph().width, H: g.graph().height};
    svg.setAttribute("viewBox", `0 0 ${size.W} ${size.H}`);
    zoom("fit");
    const edges = UI.el("g", {}), boxes = UI.el("g", {});
    for (const e of g.edges()) {
      const pts = g.edge(e).points || [];
      if (pts.length) edges.append(UI.el("path", {class: "edge", d: "M" + pts.map(p => `${p.x},${p.y}`).join(" L")}));
    }
    for (const id of g.nodes()) {
      const d = g.node(id), k = d.kernel;
      const scope = ((graph.nodes.find(n => n.id === k.output) || {}).scope) || "";
      boxes.append(UI.el("g", {class: "kernel compact", "data-kernel": k.index, onclick: () => select(k.index)},
        UI.el("rect", {x: d.x - d.width / 2, y: d.y - d.height / 2, width: d.width, height: d.height, rx: 5, fill: colorOf(scope)}),
        UI.el("text", {x: d.x, y: d.y + 4, "text-anchor": "middle", class: "klabel"}, d.label),
        UI.el("title", {}, `${k.name} (${k.template})\nlayer: ${scope || "(none)"} — click for source`)));
    }
    svg.replaceChildren(edges, boxes);
  }

  function draw() {
    const view = document.getElementById("graph-view").value;
    (view === "kernels" ? drawKernels : drawOps)();
    const sel = document.querySelector("#kd-name").dataset.kernel;
    if (sel !== undefined) {
      const box = svg.querySelector(`.kernel[data-kernel="${sel}"]`);
      if (box) box.classList.add("selected");
    }
  }

  function layerList() {
    const scopes = {};
    for (const n of graph.nodes) {
      const s = scopes[n.scope || ""] = scopes[n.scope || ""] || {ops: 0, kernels: new Set()};
      s.ops++;
      if (n.kernel !== null && n.kernel !== undefined) s.kernels.add(n.kernel);
    }
    const names = Object.keys(scopes).sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));  // unscoped last
    const swatch = name => UI.el("svg", {width: 12, height: 12, class: "swatch"}, UI.el("rect", {width: 12, height: 12, fill: colorOf(name)}));
    const entry = name => UI.el("div", {class: "layer"},
      UI.el("div", {}, swatch(name), " ", UI.el("strong", {class: "layer-name"}, name || "(outside any layer)"),
        " ", UI.el("span", {class: "muted"}, `${scopes[name].ops} ops`)),
      UI.el("div", {class: "kernel-links"}, [...scopes[name].kernels].sort((a, b) => a - b).map(i =>
        UI.el("button", {type: "button", class: "klink", onclick: () => select(i)}, "k" + i))));
    document.getElementById("layer-list").replaceChildren(UI.el("h2", {}, "Layers"), ...names.map(entry));
  }

  (async () => {
    try {
      graph = await UI.json(UI.runUrl(UI.runId, "/graph"));
      profile = (await UI.json(UI.runUrl(UI.runId, "/kernels"))).kernels;
      document.getElementById("graph-device").textContent = graph.device ? "on " + graph.device : "";
      layerList();
      // the op view of a training step runs to hundreds of boxes: start with kernels then
      const viewSel = document.getElementById("graph-view");
      viewSel.value = graph.nodes.length > 150 ? "kernels" : "ops";
      viewSel.addEventListener("change", draw);
      draw();
      // the Runs page links here as #kernel=<name>
      const want = new URLSearchParams(location.hash.slice(1)).get("kernel");
      const linked = want && graph.kernels.find(k => k.name === want);
      if (linked) select(linked.index);
      document.body.dataset.ready = "1";
    } catch (e) {
      UI.showError("graph-error", e);
      document.body.dataset.ready = "error";
    }
  })();
})();
