"use strict";
UI.poll(async () => {
  const {runs} = await UI.json(UI.api);
  const tbody = document.querySelector("#runs tbody");
  tbody.replaceChildren(...runs.map(r => UI.el("tr", {"data-run-id": r.id},
    UI.el("td", {}, UI.el("a", {href: UI.pageUrl(r.id), class: "run-link"}, r.name), UI.el("div", {class: "muted small"}, r.id)),
    UI.el("td", {}, UI.el("span", {class: "status " + r.status}, r.status)),
    UI.el("td", {}, UI.time(r.created)),
    UI.el("td", {class: "num"}, UI.num(r.last_step)),
    UI.el("td", {class: "num"}, UI.num(r.last_epoch)),
    UI.el("td", {class: "num"}, UI.num(r.latest.loss)),
    UI.el("td", {class: "num"}, UI.num(r.latest.accuracy)),
    UI.el("td", {class: "num"}, UI.num(r.latest.samples_per_s, 0)),
    UI.el("td", {}, r.summary.device || r.config.device || "–"),
    UI.el("td", {}, UI.el("a", {href: UI.pageUrl(r.id, "/graph")}, "graph"), " ",
                    UI.el("a", {href: UI.pageUrl(r.id, "/layers")}, "layers")))));
  document.getElementById("runs-empty").hidden = runs.length > 0;
}, 3000);
