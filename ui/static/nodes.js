"use strict";
UI.poll(async () => {
  const r = await UI.json(UI.api.replace(/\/runs$/, "/nodes"));
  document.getElementById("nodes-source").textContent = r.source;
  UI.showError("nodes-error", r.error ? new Error("node status unavailable: " + r.error) : null);
  document.querySelector("#nodes tbody").replaceChildren(...r.nodes.map(n => UI.el("tr", {},
    UI.el("td", {}, n.address || n.name || "–"),
    UI.el("td", {}, (n.devices || []).join(", ")),
    UI.el("td", {}, UI.el("span", {class: "status " + (n.state || "")}, n.state || "–")),
    UI.el("td", {class: "num"}, UI.age(n.heartbeat_age_s)),
    UI.el("td", {class: "num"}, n.step_time_s == null ? "–" : UI.num(n.step_time_s * 1000, 1) + " ms"),
    UI.el("td", {class: "num"}, UI.num(n.samples_per_s, 0)),
    UI.el("td", {class: "num"}, n.share == null ? "–" : UI.num(100 * n.share, 1) + " %"),
    UI.el("td", {class: "num"}, n.allreduce_gbps == null ? "–" : UI.num(n.allreduce_gbps, 2) + " GB/s"))));
  document.getElementById("nodes-empty").hidden = r.nodes.length > 0;
}, 2000);
