// The experiment page: polls /api/v1/experiments every 2 s and redraws. Text always goes
// through textContent (route names, Envoy's and the runner's messages are data, not HTML).
"use strict";

const POLL_MS = 2000;
const CHARTS = [
  ["rps", "requests/s"], ["successRate", "success %"], ["p95Ms", "p95 duration (ms)"],
  ["ttftP50Ms", "p50 time to first token (ms)"], ["tokensPerSecond", "completion tokens/s"],
];
const COLORS = ["#4c7bd9", "#e08a2c", "#3a9d5d", "#b3261e", "#7b52ab", "#6b7280"];
const charts = new Map();  // route → {key, plots: [uPlot]}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const fmt = (x, unit = "") => (x === null || x === undefined ? "-" : `${Math.round(x * 100) / 100}${unit}`);
const time = (t) => new Date(t * 1000).toLocaleTimeString();

function splitsTable(route) {
  const table = el("table", {class: "splits"},
    el("tr", {}, el("th", {text: "match"}), el("th", {text: "destination"}), el("th", {text: "share"})));
  for (const group of route.groups) {
    for (const split of group.splits) {
      const share = el("td", {class: "num", "data-split": `${route.namespace}/${route.name}|${split.destination}`,
                              text: `${split.percent}%`});
      const bar = el("span", {class: `bar ${split.role || ""}`});
      bar.style.width = `${Math.max(1, split.percent * 1.5)}px`;
      table.append(el("tr", {}, el("td", {text: group.match}),
        el("td", {}, bar, `${split.destination}${split.role ? ` (${split.role})` : ""}`), share));
    }
  }
  return table;
}

function reportTable(report) {
  const table = el("table", {class: "report"}, el("tr", {},
    ...["variant", "requests", "success", "95% CI", "2xx", "4xx", "429", "5xx", "p50", "p95", "TTFT p50",
        "tokens/req", "tokens/s"].map((h) => el("th", {text: h}))));
  for (const v of report.variants) {
    const [low, high] = v.successRateCI;
    const s = v.statuses || {};
    table.append(el("tr", {"data-variant": v.role},
      el("td", {text: `${v.role}: ${v.name}`}), el("td", {class: "num", text: v.requests}),
      el("td", {class: "num", text: fmt(v.successRate, "%")}),
      el("td", {text: low === null ? "-" : `[${fmt(low)}, ${fmt(high)}]%`}),
      ...["2xx", "4xx", "429", "5xx"].map((k) => el("td", {class: "num", text: s[k] ?? "-"})),
      el("td", {class: "num", text: fmt(v.p50Ms, " ms")}), el("td", {class: "num", text: fmt(v.p95Ms, " ms")}),
      el("td", {class: "num", text: fmt(v.ttftP50Ms, " ms")}), el("td", {class: "num", text: fmt(v.completionTokens)}),
      el("td", {class: "num", text: fmt(v.tokensPerSecond)})));
  }
  return table;
}

function verdictLine(report) {
  if (report.pValue === null || report.difference === null) {
    return el("p", {class: "verdict", text: "A/B test: not testable yet (no requests in a variant)"});
  }
  const cls = report.verdict === "canary worse" ? "verdict-worse" : report.verdict === "canary better" ? "verdict-better" : "";
  return el("p", {class: "verdict"}, "A/B test: ", el("span", {class: cls, text: report.verdict}),
    ` (difference ${fmt(report.difference)} pp, p = ${report.pValue}, always valid over ${report.looks} looks,` +
    ` at ${report.confidence * 100}%)`);
}

async function act(route, action, out) {
  const token = document.getElementById("token").value || sessionStorage.getItem("modelroute-token") || "";
  sessionStorage.setItem("modelroute-token", token);
  out.textContent = `${action}…`;
  try {
    const reply = await fetch(`/api/v1/experiments/${route.namespace}/${route.name}/${action}`,
      {method: "POST", headers: {Authorization: `Bearer ${token}`}});
    const body = await reply.json();
    out.textContent = body.message;
  } catch (err) {
    out.textContent = `failed: ${err}`;
  }
}

function canaryBox(route, actions) {
  const c = route.canary;
  const box = el("div", {class: "canary"}, el("h3", {text: "rollout"}),
    el("p", {}, el("span", {class: "phase", "data-phase": "", text: c.phase}),
      ` stable ${c.stableWeight}% / canary ${c.canaryWeight}%` +
      (c.lastSuccessRate === null ? "" : `, last interval success ${c.lastSuccessRate}%`)));
  if (c.message) box.append(el("p", {class: "muted", text: c.message}));
  if (c.report) box.append(reportTable(c.report), verdictLine(c.report));
  if (actions.enabled) {
    const out = el("span", {class: "message"});
    for (const action of actions.allowed) {
      const button = el("button", {"data-action": action, text: action});
      button.addEventListener("click", () => act(route, action, out));
      box.append(button);
    }
    box.append(out);
  }
  if (c.history && c.history.length) {
    const list = el("table", {class: "history"});
    for (const e of [...c.history].reverse()) {
      list.append(el("tr", {}, el("td", {class: "muted", text: time(e.at)}), el("td", {text: e.action}),
        el("td", {class: "num", text: `${e.stableWeight}/${e.canaryWeight}`}), el("td", {text: e.message})));
    }
    box.append(el("h3", {text: "history"}), list);
  }
  return box;
}

function drawCharts(key, container, destinations, series) {
  const data = (metric) => [series.times, ...destinations.map((d) => (series.variants[d] || {})[metric] || [])];
  const chartKey = destinations.join(",");
  let entry = charts.get(key);
  if (!entry || entry.key !== chartKey) {
    entry = {key: chartKey, node: el("div", {class: "charts"}), plots: []};
    for (const [metric, title] of CHARTS) {
      const options = {
        title, width: 330, height: 170, class: "chart",
        series: [{}, ...destinations.map((d, i) => ({label: d, stroke: COLORS[i % COLORS.length], width: 1.5,
                                                      spanGaps: false}))],
        axes: [{}, {size: 50}], legend: {live: false},
        scales: metric === "successRate" ? {y: {range: [0, 100]}} : {},
      };
      entry.plots.push(new uPlot(options, data(metric), entry.node));
    }
    charts.set(key, entry);
  } else {
    CHARTS.forEach(([metric], i) => entry.plots[i].setData(data(metric)));
  }
  container.append(entry.node);
}

function render(doc) {
  const main = document.getElementById("routes");
  main.replaceChildren();
  document.getElementById("token-box").hidden = !doc.actions.enabled;
  const lead = doc.mode === "kubernetes" && !doc.leading ? " (this replica does not lead: charts are the leader's)" : "";
  document.getElementById("status").textContent = `${doc.mode} mode, updated ${time(doc.generatedAt)}${lead}`;
  if (!doc.routes.length) main.append(el("p", {class: "muted", text: "No ModelRoute is served."}));
  for (const route of doc.routes) {
    const key = `${route.namespace}/${route.name}`;
    const card = el("section", {class: "route", "data-route": key},
      el("h2", {text: `ModelRoute ${key}`}), el("p", {class: "muted", text: `front door ${route.frontDoor || "-"}`}),
      splitsTable(route));
    if (route.canary) card.append(canaryBox(route, doc.actions));
    const destinations = [...new Set(route.groups.flatMap((g) => g.splits.map((s) => s.destination)))].sort();
    card.append(el("h3", {text: `per variant (${doc.series.step} s points, every gateway)`}));
    drawCharts(key, card, destinations, doc.series);
    main.append(card);
  }
}

async function poll() {
  try {
    const reply = await fetch("/api/v1/experiments", {cache: "no-store"});
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    render(await reply.json());
  } catch (err) {
    document.getElementById("status").textContent = `cannot reach the control plane: ${err.message}`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
