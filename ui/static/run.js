// Run page: curves grow by polling ?since=<last step> while the run is live.
"use strict";
(function () {
  const rows = [];
  const curves = ["loss", "accuracy", "step_time_s", "samples_per_s"];

  function redraw() {
    const steps = rows.map(r => r.step);
    for (const k of curves) {
      const svg = document.getElementById("plot-" + k);
      Plot.draw(svg, steps, rows.map(r => r[k]), {zero: k === "accuracy", robust: k === "step_time_s" || k === "samples_per_s"});
    }
  }

  function facts(run) {
    const last = rows.length ? rows[rows.length - 1] : {};
    const items = [["Run id", run.id], ["Status", run.status], ["Started", UI.time(run.created)],
      ["Heartbeat", UI.age(run.heartbeat_age_s) + " ago"], ["Step", UI.num(run.last_step)],
      ["Epoch", UI.num(run.last_epoch)], ["Loss", UI.num(last.loss)], ["Accuracy", UI.num(last.accuracy)],
      ["Step time", UI.num(last.step_time_s) + " s"], ["Throughput", UI.num(last.samples_per_s, 0) + " samples/s"],
      ["Device", run.summary.device || run.config.device || "–"], ["Config", JSON.stringify(run.config)]];
    if (run.summary.error) items.push(["Error", run.summary.error]);
    if (run.note) items.push(["Note", run.note]);
    document.getElementById("run-facts").replaceChildren(...items.flatMap(([k, v]) => [UI.el("dt", {}, k), UI.el("dd", {}, v)]));
    const st = document.getElementById("run-status");
    st.textContent = run.status;
    st.className = "status " + run.status;
  }

  async function kernels() {
    const {kernels} = await UI.json(UI.runUrl(UI.runId, "/kernels"));
    const total = kernels.reduce((s, k) => s + (k.time_ns || 0), 0) || 1;
    document.querySelector("#kernels tbody").replaceChildren(...kernels.map((k, i) => UI.el("tr", {},
      UI.el("td", {class: "num"}, i), UI.el("td", {}, UI.el("a", {href: UI.pageUrl(UI.runId, "/graph") + "#kernel=" + encodeURIComponent(k.name), class: "kernel-link"}, UI.el("code", {}, k.name))), UI.el("td", {}, k.template),
      UI.el("td", {}, UI.shape(k.global_size)), UI.el("td", {}, UI.shape(k.local_size)),
      UI.el("td", {class: "num"}, UI.num((k.time_ns || 0) / 1000, 1)),
      UI.el("td", {class: "num"}, UI.num(100 * (k.time_ns || 0) / total, 1) + " %"),
      UI.el("td", {}, k.device || "–"))));
    document.getElementById("kernels-empty").hidden = kernels.length > 0;
  }

  let kernelsShown = false;
  UI.poll(async () => {
    const since = rows.length ? rows[rows.length - 1].step : -1;
    const m = await UI.json(UI.runUrl(UI.runId, "/metrics?since=" + since));
    rows.push(...m.metrics);
    if (m.metrics.length || !rows.length) redraw();
    const run = await UI.json(UI.runUrl(UI.runId));
    facts(run);
    if (!kernelsShown || m.metrics.length) { await kernels(); kernelsShown = true; }
    return run.status === "running" || run.status === "stale";  // stale may come back
  }, 2000);
})();
