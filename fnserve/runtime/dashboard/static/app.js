// fnserve dashboard: polls /dashboard/data and /monitor and draws them. No dependencies (air-gapped).
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "fnserve-dashboard-token";
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
let refreshes = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  return Number(value).toFixed(digits === undefined ? 2 : digits);
}

async function get(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  return { status: response.status, body };
}

// A line chart: one series per entry of `lines` ({label, colour, dash, values: [number|null]}).
function lineChart(name, caption, lines, unit) {
  const width = 320, height = 120, left = 42, bottom = 16, top = 8;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-chart": name });
  const all = lines.flatMap((l) => l.values.filter((v) => v !== null));
  const max = Math.max(1e-9, ...all) * 1.1;
  const n = Math.max(2, ...lines.map((l) => l.values.length));
  const x = (i) => left + (i / (n - 1)) * (width - left - 6);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  chart.append(svg("line", { class: "axis", x1: left, y1: y(0), x2: width - 6, y2: y(0) }));
  chart.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }));
  const label = (text, tx, ty, anchor) => {
    const t = svg("text", { x: tx, y: ty, "text-anchor": anchor || "end" });
    t.textContent = text;
    chart.append(t);
  };
  label(fmt(max / 1.1, max < 10 ? 2 : 0), left - 3, top + 8);
  label("0", left - 3, y(0));
  label("5 min ago", left, height - 3, "start");
  label("now", width - 6, height - 3);
  let drawn = 0;
  for (const line of lines) {
    let d = "";
    const dots = [];
    line.values.forEach((v, i) => {
      if (v === null) return;
      d += (d ? " L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
      // A dot per point too: traffic in one bucket only is a point, not a line.
      dots.push(svg("circle", { class: "point", cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 1.8,
        fill: line.colour }));
      drawn += 1;
    });
    if (!d) continue;
    const path = svg("path", { class: "line", d, stroke: line.colour, "data-series": line.label });
    if (line.dash) path.setAttribute("stroke-dasharray", "4 3");
    chart.append(path, ...dots);
  }
  chart.setAttribute("data-points", String(drawn));
  const legend = el("span", { class: "legend" });
  for (const line of lines.filter((l) => !l.dash)) {  // a dashed line shares its version's colour
    legend.append(el("span", { style: `background:${line.colour}` }), line.label);
  }
  return el("figure", {}, el("figcaption", {}, `${caption} (${unit}) `, legend), chart);
}

// "-" is a function without a checkpoint (or, on the gateway, a request no version reached).
const shown = (version) => (version === "-" ? "no version" : "v" + version);

// Scheduled retraining (the gateway on local and docker): the last run and the next one.
function renderTraining(t) {
  const when = (at) => new Date(at * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  const last = t.last_run;
  let said = "no run yet";
  if (last) {
    said = `last run ${when(last.started)}: ${last.outcome}`;
    if (last.version !== null) said += ` (published v${last.version})`;
  }
  if (t.running) said += " · running now";
  const next = t.next_run ? `next ${when(t.next_run)}` : "not scheduled";
  return el("p", { class: "training", "data-training": last ? last.outcome : "none" },
    `retraining ${t.schedule || "–"}: ${said} · ${next}`);
}

// A rollout (the gateway with a [rollout] policy): its stage or how it ended, and the last decisions.
function renderRollout(r) {
  const state = r.status === "active"
    ? `stage ${r.stage}/${r.stages}, ${r.describe}${r.paused ? " (paused)" : ""}`
    : r.status;
  const box = el("div", { class: "rollout", "data-rollout": r.status },
    el("p", {}, `rollout of v${r.candidate} (stable v${r.stable}): ${state}`));
  const time = (at) => new Date(at * 1000).toISOString().slice(11, 19);
  const list = el("ul", {}, ...r.decisions.map((d) => el("li", {}, `${time(d.at)} ${d.message}`)));
  box.append(list);
  return box;
}

function renderFunction(fn) {
  const box = el("section", { class: "fn", "data-function": fn.name });
  box.append(el("h2", {}, fn.name));
  if (fn.training) box.append(renderTraining(fn.training));
  if (fn.rollout) box.append(renderRollout(fn.rollout));
  const head = ["version", "weight", "replicas ready/desired", "requests/s", "p50 ms", "p99 ms",
    "error rate", "mean batch"];
  const table = el("table", {}, el("tr", {}, ...head.map((h) => el("th", {}, h))));
  for (const v of fn.versions) {
    const m = v.last_minute;
    const cell = (field, text) => el("td", { "data-field": field }, text);
    table.append(el("tr", { "data-version": v.version },
      cell("version", (v.version === "-" ? "–" : v.version) + (v.serving ? " (serving)" : "")),
      cell("weight", v.weight === null ? "–" : v.weight),
      cell("replicas", v.desired === null ? String(v.ready) : `${v.ready}/${v.desired}`),
      cell("requests_per_s", fmt(m.requests_per_s)),
      cell("p50_ms", fmt(m.p50_ms)),
      cell("p99_ms", fmt(m.p99_ms)),
      cell("error_rate", m.requests ? (100 * m.error_rate).toFixed(1) + " %" : "–"),
      cell("mean_batch", fmt(m.mean_batch, 1))));
  }
  box.append(table);
  const series = (key, dash, suffix) => fn.versions.map((v, i) => ({
    label: shown(v.version) + (suffix || ""), colour: COLOURS[i % COLOURS.length], dash,
    values: v.points.map((p) => p[key]),
  }));
  const charts = el("div", { class: "charts" });
  charts.append(lineChart("requests_per_s", "request rate", series("requests_per_s"), "req/s"));
  charts.append(lineChart("latency_ms", "latency p50, p99 dashed",
    [...series("p50_ms", false), ...series("p99_ms", true, " p99")], "ms"));
  charts.append(lineChart("error_rate", "error rate", series("error_rate"), "share"));
  charts.append(lineChart("mean_batch", "batch size", series("mean_batch"), "instances"));
  box.append(charts);
  return box;
}

// Reference and live shares of one feature's bins, as bars side by side.
function histogram(feature) {
  const bins = feature.bins || [];
  const width = Math.max(200, 26 * bins.length + 40), height = 110, bottom = 18, top = 6;
  const chart = svg("svg", { width, height, "data-histogram": feature.name });
  const values = [...(feature.reference || []), ...(feature.live || [])];
  const max = Math.max(1e-9, ...values);
  const slot = (width - 20) / Math.max(1, bins.length);
  const bar = (share, i, offset, kind) => {
    const h = (share / max) * (height - top - bottom);
    chart.append(svg("rect", {
      class: kind, x: (10 + i * slot + offset).toFixed(1), y: (height - bottom - h).toFixed(1),
      width: (slot / 2 - 2).toFixed(1), height: h.toFixed(1),
    }));
  };
  bins.forEach((name, i) => {
    if (feature.reference) bar(feature.reference[i] || 0, i, 0, "reference");
    bar((feature.live || [])[i] || 0, i, slot / 2, "live");
    const t = svg("text", { x: (10 + i * slot + slot / 2).toFixed(1), y: height - 4, "text-anchor": "middle" });
    t.textContent = name.length > 7 ? name.slice(0, 6) + "…" : name;
    chart.append(t);
  });
  return chart;
}

function renderDrift(monitor) {
  const out = el("div", {});
  for (const [name, fn] of Object.entries(monitor.functions || {})) {
    for (const [version, v] of Object.entries(fn.versions || {})) {
      const box = el("section", { class: "fn", "data-drift": `${name}@${version}` });
      const window = v.window || {};
      box.append(el("h3", {}, `${name} version ${version}`),
        el("p", { class: "muted" }, `${window.samples ?? 0} samples over ${window.seconds ?? "?"} s`
          + (v.note ? ` — ${v.note}` : "")));
      for (const f of v.features || []) {
        const score = `PSI ${fmt(f.psi, 3)} (threshold ${fmt(f.psi_threshold, 2)}), `
          + `JS ${fmt(f.js, 3)} (threshold ${fmt(f.js_threshold, 2)})`;
        box.append(el("figure", { "data-feature": f.name },
          el("figcaption", { class: f.drifted ? "drifted" : "" },
            `${f.name} (${f.role}, ${f.type}): ${score}${f.drifted ? " — drifted" : ""}`,
            el("span", { class: "legend" }, el("span", { class: "" , style: "background:#94a3b8" }),
              "reference", el("span", { style: "background:#2563eb" }), "live")),
          histogram(f)));
      }
      out.append(box);
    }
  }
  if (!out.childElementCount) out.append(el("p", { class: "muted" }, "no function has monitoring data yet"));
  return out;
}

function needToken(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const data = await get("/dashboard/data");
    if (data.status === 401) {
      needToken(sessionStorage.getItem(TOKEN_KEY) ? "that token was refused" : "");
      return;
    }
    if (data.status !== 200) throw new Error((data.body && data.body.error) || `HTTP ${data.status}`);
    document.getElementById("login").hidden = true;
    document.getElementById("source").textContent = data.body.source;
    const main = document.getElementById("functions");
    main.replaceChildren(...data.body.functions.map(renderFunction));
    if (!data.body.functions.length) main.append(el("p", { class: "muted" }, "no functions"));
    const monitor = await get("/monitor");
    const drift = document.getElementById("drift");
    if (monitor.status === 200 && monitor.body) drift.replaceChildren(renderDrift(monitor.body));
    else if (monitor.status === 404) drift.replaceChildren(el("p", { class: "muted" }, "monitoring not available"));
    else drift.replaceChildren(el("p", { class: "error" }, `monitoring: HTTP ${monitor.status}`));
    error.hidden = true;
    refreshes += 1;
    const updated = document.getElementById("updated");
    updated.textContent = "updated " + new Date().toLocaleTimeString();
    updated.setAttribute("data-refreshes", String(refreshes));
  } catch (exc) {
    error.hidden = false;
    error.textContent = "could not refresh: " + exc.message;
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
