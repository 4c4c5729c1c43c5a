// metaprune's web page: runs, live progress, the Pareto front, exports, launches. Plain JS, no build.
//
// Safety rules of this file: every value the API returns comes from run files that someone else may
// have written, so it is data, never markup. Nodes are built with createElement and textContent (the
// `el` helper); no innerHTML anywhere; numbers are checked to be numbers before they are formatted;
// only names matching the run-name pattern go into links. The token travels in a header from
// sessionStorage (per origin: another port's page cannot read it), never in a cookie.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const num = (v) => (isNum(v) ? v : null);
const str = (v, n = 200) => (typeof v === "string" ? v.slice(0, n) : "");
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const fmtCount = (n) => !isNum(n) ? "-" : n >= 1e9 ? (n / 1e9).toFixed(2) + "G" : n >= 1e6 ? (n / 1e6).toFixed(2) + "M" :
  n >= 1e3 ? (n / 1e3).toFixed(1) + "K" : String(n);
const pct = (v) => isNum(v) ? (100 * v).toFixed(2) + "%" : "-";
const secs = (s) => !isNum(s) ? "-" : s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? (s / 60).toFixed(1) + " min" : Math.round(s) + " s";
const intText = (v) => Number.isInteger(v) ? String(v) : "-";

// el("td", {class: "x"}, "text", otherNode, ...): attributes by setAttribute (never on*), children
// as text nodes or nodes
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false || k.startsWith("on")) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}
const fill = (node, ...children) => { node.replaceChildren(); children.flat().forEach((c) => c != null && node.append(c instanceof Node ? c : String(c))); return node; };

// ---- the token: from ?token= once, then from this tab's sessionStorage ---------------------------
const TOKEN_KEY = "metaprune-token";
(function takeToken() {
  const u = new URL(location.href), t = u.searchParams.get("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, "", "/" + location.hash);  // out of the address bar and the history
  }
})();
const authHeaders = () => ({Authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "")});

async function api(path, opts = {}) {
  const headers = {...authHeaders(), ...(opts.body ? {"Content-Type": "application/json"} : {})};
  const r = await fetch(path, {credentials: "omit", ...opts, headers});
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body && typeof body.error === "string" ? body.error : `HTTP ${r.status}`);
  return body;
}

function bar(fraction) {
  if (!isNum(fraction)) return null;
  const f = Math.min(1, Math.max(0, fraction)), inner = el("div");
  inner.style.width = (100 * f).toFixed(1) + "%";  // CSSOM, allowed by the page's CSP
  return el("span", {class: "bar", title: (100 * f).toFixed(0) + "%"}, inner);
}
const STATES = ["none", "queued", "running", "done", "failed", "cancelled", "interrupted", "partial", "planned",
  "starting", "stopped", "damaged"];
const stateTag = (s) => el("span", {class: "state " + (STATES.includes(s) ? s : "damaged")}, str(s, 40) || "-");

// ---- live events: server-sent events over fetch (the header carries the token), polling fallback ----
let lastEvent = 0, listening = false, onEvent = () => {};
function handleEvent(e) {
  if (!e || !Number.isInteger(e.id) || typeof e.type !== "string" || typeof e.data !== "object" || e.data === null) return;
  lastEvent = Math.max(lastEvent, e.id);
  onEvent(e);
}
async function listen() {
  if (listening) return;
  listening = true;
  for (let failures = 0; failures < 3;) {
    try {
      const r = await fetch(`/api/events/stream?after=${lastEvent}`, {headers: authHeaders(), credentials: "omit"});
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          for (const line of block.split("\n"))
            if (line.startsWith("data: ")) { try { handleEvent(JSON.parse(line.slice(6))); } catch (_) { /* skip */ } }
        }
      }
      failures = 0;
    } catch (_) {
      failures++;
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
  setInterval(async () => {  // the stream keeps failing: poll
    try { (await api(`/api/events?after=${lastEvent}`)).events.forEach(handleEvent); } catch (_) { /* keep polling */ }
  }, 2000);
}

function debounce(fn, ms) { let t = null; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; }

// ---- runs list ------------------------------------------------------------------------------------
async function showRuns() {
  const [{runs}, configs] = await Promise.all([api("/api/runs"), api("/api/configs")]);
  const rows = (Array.isArray(runs) ? runs : []).filter((r) => r && NAME_RE.test(r.name)).map((r) => {
    const m = r.meta_training || {}, s = r.search || {}, t = r.training || {}, j = r.active_job;
    return el("tr", {"data-run": r.name},
      el("td", {}, el("a", {href: "#/run/" + encodeURIComponent(r.name)}, r.name),
        r.damaged ? el("div", {class: "error damaged"}, "damaged: " + str(r.damaged, 300)) : null),
      el("td", {}, str(r.space, 80)),
      el("td", {}, stateTag(m.state), " ", bar(m.fraction), " ", el("span", {class: "muted"}, `${intText(m.step)}/${intText(m.total_steps)}`)),
      el("td", {}, stateTag(s.state), " ", bar(s.fraction), " ", el("span", {class: "muted"}, `${intText(s.evaluated ?? 0)} scored`)),
      el("td", {}, stateTag(t.state)),
      el("td", {}, j && Number.isInteger(j.id) ? [`job ${j.id} `, stateTag(j.state)] : ""));
  });
  const form = el("form", {id: "new-run"},
    el("label", {}, "name ", el("input", {name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}"})), " ",
    el("label", {}, "config ", el("select", {name: "config"},
      (configs.meta_train || []).map((c) => el("option", {selected: c === "smoke"}, str(c, 64))))), " ",
    el("label", {}, "epochs ", el("input", {name: "epochs", type: "number", min: 1, max: 10000, placeholder: "config's"})), " ",
    el("button", {}, "start"), " ", el("span", {class: "error", id: "new-run-error"}));
  fill($("#main"), el("h2", {}, "Runs"),
    el("table", {id: "runs"}, el("tr", {}, ["run", "space", "meta-training", "search", "scratch training", "job"].map((h) => el("th", {}, h))),
      rows.length ? rows : el("tr", {}, el("td", {colspan: 6, class: "muted"}, "no runs yet: meta-train one below or with the CLI"))),
    el("div", {class: "panel"}, el("h3", {}, "Meta-train a new PruningNet"), form));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form), overrides = {};
    if (f.get("epochs")) overrides["train.epochs"] = Number(f.get("epochs"));
    try {
      await api("/api/runs", {method: "POST", body: JSON.stringify({name: f.get("name"), config: f.get("config"), overrides})});
      showRuns();
    } catch (e) { $("#new-run-error").textContent = e.message; }
  });
  onEvent = debounce(() => { if (location.hash === "" || location.hash === "#/") showRuns(); }, 1000);
  listen();
}

// ---- one run ----------------------------------------------------------------------------------------
let current = null;  // {name, run, front, selected, baselines}

async function showRun(name) {
  const [run, configs] = await Promise.all([api(`/api/runs/${encodeURIComponent(name)}`), api("/api/configs")]);
  current = {name, run, front: null, selected: null, baselines: null};
  const budgetMacs = num(run.search?.budgets?.macs);
  const options = run.options && typeof run.options === "object" ? JSON.stringify(run.options) : "";
  const form = el("form", {id: "search-form"},
    el("label", {}, "MACs budget ", el("input", {name: "max_macs", placeholder: "e.g. 12M", size: 8, value: budgetMacs ? fmtCount(budgetMacs) : ""})), " ",
    el("label", {}, "strategy ", el("select", {name: "strategy"}, el("option", {}, "pareto"), el("option", {}, "constrained"))), " ",
    el("label", {}, "config ", el("select", {name: "config"}, (configs.search || []).map((c) => el("option", {selected: c === "smoke"}, str(c, 64))))), " ",
    el("label", {}, el("input", {type: "checkbox", name: "overwrite", checked: run.search?.state !== "none"}), " replace the existing search"), " ",
    el("button", {id: "search-start"}, "start search"), " ", el("div", {class: "error", id: "search-error"}));
  fill($("#main"),
    el("h2", {}, name, " ", el("span", {class: "muted", id: "run-space"}, str(run.space, 80), " ", options.slice(0, 400))),
    run.damaged ? el("p", {class: "error damaged", id: "run-damaged"}, "damaged: " + str(run.damaged, 300)) : null,
    el("div", {class: "row"},
      el("div", {class: "panel"}, el("h3", {}, "Meta-training"), el("div", {id: "meta-status"}), el("div", {id: "curve"})),
      el("div", {class: "panel"}, el("h3", {}, "Search"), el("div", {id: "search-status"}), form)),
    el("div", {class: "panel"}, el("h3", {}, "Pareto front ", el("span", {class: "muted"},
      "proxy top-1 (PruningNet weights, BN re-estimated, search split) against MACs; click a point to select it")),
      el("div", {id: "front"}), el("div", {id: "selected", class: "muted"}, "no point selected")),
    el("div", {class: "panel"}, el("h3", {}, "Scratch training"), el("div", {id: "report", class: "muted"}, "no results yet")),
    el("div", {class: "panel"}, el("h3", {}, "Jobs"), el("div", {id: "jobs"})));
  form.addEventListener("submit", startSearch);
  renderRunStatus(run);
  drawCurve(run.curve);
  await refreshFront();
  refreshReport();
  onEvent = (e) => onRunEvent(e);
  listen();
}

function metaLine(m) {
  return [stateTag(m.state), " ", bar(m.fraction), ` step ${intText(m.step)} / ${intText(m.total_steps)}, loss ${isNum(m.loss) ? m.loss : "-"}`,
    Number.isInteger(m.loss_spikes) && m.loss_spikes > 0 ? [", ", el("b", {}, `${m.loss_spikes} loss spike(s)`)] : null,
    typeof m.note === "string" ? el("div", {class: "muted"}, str(m.note, 300)) : null];
}

function renderRunStatus(run) {
  fill($("#meta-status"), metaLine(run.meta_training || {}));
  fill($("#search-status"), searchLine(run.search || {}, null));
  const rows = (Array.isArray(run.jobs) ? run.jobs : []).filter((j) => j && Number.isInteger(j.id)).map((j) => {
    let action = null;
    if (["queued", "running"].includes(j.state)) action = el("button", {"data-cancel": j.id}, "cancel");
    else if (["interrupted", "cancelled", "failed"].includes(j.state)) action = el("button", {"data-resume": j.id}, "resume");
    if (action) action.addEventListener("click", () => jobAction(j.id, action.hasAttribute("data-cancel") ? "cancel" : "resume"));
    return el("tr", {}, el("td", {}, String(j.id)), el("td", {}, str(j.kind, 20)),
      el("td", {}, stateTag(j.state), j.error ? [" ", el("span", {class: "error"}, str(j.error, 500))] : null),
      el("td", {}, el("code", {}, str(j.command, 2000))), el("td", {}, action));
  });
  fill($("#jobs"), el("table", {}, el("tr", {}, ["job", "kind", "state", "command", ""].map((h) => el("th", {}, h))), rows));
  $("#search-start").disabled = !!run.active_job || !run.has_pruningnet;
}

function searchLine(s, p) {
  const src = p || s, st = p ? "running" : s.state;
  return [el("span", {id: "search-state"}, stateTag(st)), " ", bar(src.fraction),
    ` generation ${intText(src.generation)} / ${intText(src.generations)}, ${intText(src.evaluated ?? 0)} candidates scored, ` +
    `best so far ${isNum(src.best_loss) ? `loss ${src.best_loss.toFixed(4)}` : pct(src.best_top1)}${p && isNum(p.eta_s) ? `, ETA ${secs(p.eta_s)}` : ""}`];
}

async function jobAction(id, action) {
  try { await api(`/api/jobs/${Number(id)}/${action}`, {method: "POST"}); } catch (e) { alert(e.message); }
  reloadRun();
}

const reloadRun = debounce(async () => {
  if (!current) return;
  const run = await api(`/api/runs/${encodeURIComponent(current.name)}`);
  if (!!current.run.active_job !== !!run.active_job) current.baselines = null;  // a job started or ended
  current.run = run;
  renderRunStatus(run);
  drawCurve(run.curve);
  await refreshFront();
  refreshReport();
}, 300);

function onRunEvent(e) {
  if (!current) return;
  const job = current.run.jobs?.find((j) => j.id === e.job) || (current.run.active_job?.id === e.job ? current.run.active_job : null);
  if (e.type === "progress" && e.data.stage === "search" && job) {
    fill($("#search-status"), searchLine(current.run.search || {}, e.data));
    refreshFront();
  } else if (e.type === "progress" && e.data.stage === "meta-train" && job) {
    fill($("#meta-status"), metaLine(e.data));
    reloadRun();
  } else if (e.type === "state") {
    reloadRun();
  }
}

async function startSearch(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = {strategy: f.get("strategy"), config: f.get("config"), overwrite: f.get("overwrite") === "on"};
  if (f.get("max_macs")) body.max_macs = f.get("max_macs");
  $("#search-error").textContent = "";
  try {
    await api(`/api/runs/${encodeURIComponent(current.name)}/searches`, {method: "POST", body: JSON.stringify(body)});
    reloadRun();
  } catch (e) { $("#search-error").textContent = e.message; }
}

function drawCurve(curve) {
  const rows = (Array.isArray(curve) ? curve : []).filter((r) => r && isNum(r.step) && isNum(r.loss));
  if (!rows.length) { fill($("#curve"), el("p", {class: "muted"}, "no meta-training steps logged yet")); return; }
  if (!$("#curve")._fullLayout) fill($("#curve"));
  Plotly.react("curve", [{x: rows.map((r) => r.step), y: rows.map((r) => r.loss), mode: "lines", name: "loss"},
    {x: rows.map((r) => r.step), y: rows.map((r) => num(r.train_top1)), mode: "lines", name: "train top-1", yaxis: "y2"}],
    {margin: {l: 45, r: 45, t: 10, b: 35}, xaxis: {title: {text: "step"}}, yaxis: {title: {text: "loss"}},
     yaxis2: {overlaying: "y", side: "right", range: [0, 1], tickformat: ".0%", title: {text: "train top-1"}}, legend: {orientation: "h"}},
    {displayModeBar: false, responsive: true});
}

// a candidate as the page uses it: integers and finite numbers only (the API checks too)
function cleanCandidate(c) {
  if (!c || !Number.isInteger(c.id) || !isNum(c.macs) || !isNum(c.params) || !isNum(c.top1)) return null;
  const ch = c.channels && typeof c.channels === "object" ? Object.entries(c.channels) : [];
  if (!ch.every(([k, v]) => /^[A-Za-z0-9_.\-]{1,80}$/.test(k) && Number.isInteger(v))) return null;
  return {id: c.id, macs: c.macs, params: c.params, top1: c.top1, channels: Object.fromEntries(ch)};
}
const vecText = (c) => Object.entries(c.channels).map(([k, v]) => `${k}=${v}`).join(" ");
// Plotly hover labels read a few tags (<br>); only numbers go in
function hoverText(c) {
  const vec = Object.values(c.channels).map(String).join(",");
  return `id ${c.id}<br>MACs ${fmtCount(c.macs)}<br>params ${fmtCount(c.params)}<br>proxy top-1 ${pct(c.top1)}<br>channels [${vec.replace(/(([^,]*,){10})/g, "$1<br>")}]`;
}

async function refreshFront() {
  if (!current || current.run.search?.state === "none") { fill($("#front"), el("p", {class: "muted"}, "no search yet: start one above")); return; }
  const busy = !!current.run.active_job;
  let doc;
  try { doc = await api(`/api/runs/${encodeURIComponent(current.name)}/front`); }
  catch (e) { fill($("#front"), el("p", {class: "error"}, e.message)); return; }
  doc = {front: (doc.front || []).map(cleanCandidate).filter(Boolean), candidates: (doc.candidates || []).map(cleanCandidate).filter(Boolean),
         budgets: doc.budgets || {}, damaged: Number.isInteger(doc.damaged_records) ? doc.damaged_records : 0,
         baselines: current.baselines || (Array.isArray(doc.baselines) && doc.baselines.length ? doc.baselines : [])};
  current.front = doc;
  drawFront(doc);
  if (!busy && !current.baselines && current.run.search?.state === "done") {
    // uniform-width networks, scored by the PruningNet once the search is done and the run idle (cached)
    current.baselines = doc.baselines.length ? doc.baselines : [];
    if (!doc.baselines.length)
      api(`/api/runs/${encodeURIComponent(current.name)}/baselines`, {method: "POST", body: JSON.stringify({count: 3})})
        .then((b) => { current.baselines = b.baselines; current.front.baselines = b.baselines; drawFront(current.front); })
        .catch(() => { current.baselines = null; });
  }
}

function drawFront(doc) {
  const frontIds = new Set(doc.front.map((c) => c.id));
  const others = doc.candidates.filter((c) => !frontIds.has(c.id));
  const traces = [
    {x: others.map((c) => c.macs), y: others.map((c) => c.top1), mode: "markers", name: "candidates",
     marker: {color: "#bbb", size: 6}, text: others.map(hoverText), hovertemplate: "%{text}<extra></extra>", customdata: others.map((c) => c.id)},
    {x: doc.front.map((c) => c.macs), y: doc.front.map((c) => c.top1), mode: "lines+markers", name: "Pareto front",
     marker: {color: "#2563eb", size: 9}, line: {shape: "hv"}, text: doc.front.map(hoverText), hovertemplate: "%{text}<extra></extra>",
     customdata: doc.front.map((c) => c.id)},
  ];
  const base = (doc.baselines || []).filter((b) => b && isNum(b.macs) && isNum(b.top1) && isNum(b.ratio));
  if (base.length)
    traces.push({x: base.map((b) => b.macs), y: base.map((b) => b.top1), mode: "markers", name: "uniform width",
      marker: {color: "#f59e0b", size: 10, symbol: "diamond"}, hovertemplate: "uniform ~%{text}x<br>MACs %{x:.3s}<br>proxy top-1 %{y:.2%}<extra></extra>",
      text: base.map((b) => b.ratio.toFixed(2))});
  const shapes = [];
  const budget = num(doc.budgets?.macs) || parseCount($("#search-form [name=max_macs]")?.value);
  if (budget) shapes.push({type: "line", x0: budget, x1: budget, yref: "paper", y0: 0, y1: 1, line: {dash: "dash", color: "#dc2626"}});
  if (!$("#front")._fullLayout) fill($("#front"));  // drop the "no search yet" text
  Plotly.react("front", traces, {margin: {l: 55, r: 20, t: 10, b: 45}, hovermode: "closest", shapes,
    xaxis: {title: {text: "MACs (conv + linear, BN folded; the papers' FLOPs)"}}, yaxis: {title: {text: "proxy top-1"}, tickformat: ".0%"},
    legend: {orientation: "h"}}, {displayModeBar: false, responsive: true});
  const gd = $("#front");
  gd.removeAllListeners?.("plotly_click");
  gd.on("plotly_click", (d) => { const p = d.points[0]; if (p && Number.isInteger(p.customdata)) select(p.customdata); });
  if (doc.damaged) fill($("#selected"), `${doc.damaged} damaged search record(s) left out`);
  if (current.selected != null) select(current.selected);
}

function parseCount(s) {
  const m = /^\s*([0-9.]+)\s*([kKmMgGtT]?)\s*$/.exec(s || "");
  return m ? Number(m[1]) * ({"": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12}[m[2].toLowerCase()]) : null;
}

// an export: POST (it writes RUN/exports/ and may start a process), then the answer saved as a file
async function download(body, button) {
  const err = $("#export-error");
  err.textContent = "";
  button.disabled = true;
  try {
    const r = await fetch(`/api/runs/${encodeURIComponent(current.name)}/export`, {method: "POST", credentials: "omit",
      headers: {...authHeaders(), "Content-Type": "application/json"}, body: JSON.stringify(body)});
    if (!r.ok) {
      const doc = r.headers.get("content-type")?.includes("json") ? await r.json() : {};
      throw new Error(typeof doc.error === "string" ? doc.error : `HTTP ${r.status}`);
    }
    const m = /filename="([A-Za-z0-9._-]+)"/.exec(r.headers.get("content-disposition") || "");
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", {href: url, download: m ? m[1] : "export"});
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) { err.textContent = e.message; }
  finally { button.disabled = false; }
}

function select(id) {
  const c = current.front.candidates.find((x) => x.id === id) || current.front.front.find((x) => x.id === id);
  if (!c) return;
  current.selected = id;
  const json = el("button", {id: "export-json", class: "link"}, "download spec (JSON)");
  const onnx = el("button", {id: "export-onnx", class: "link"}, "ONNX (random init)");
  const onnxW = el("button", {id: "export-onnx-w", class: "link"}, "ONNX with PruningNet weights");
  const train = el("button", {id: "train-selected"}, "train from scratch with its uniform baseline");
  json.addEventListener("click", () => download({candidate: id, format: "json"}, json));
  onnx.addEventListener("click", () => download({candidate: id, format: "onnx"}, onnx));
  onnxW.addEventListener("click", () => download({candidate: id, format: "onnx", with_weights: true}, onnxW));
  train.addEventListener("click", async () => {
    try {
      await api(`/api/runs/${encodeURIComponent(current.name)}/trainings`, {method: "POST", body: JSON.stringify({candidate: id, recipe: "smoke"})});
      reloadRun();
    } catch (e) { $("#train-error").textContent = e.message; }
  });
  fill($("#selected"), el("b", {}, `candidate ${id}`), `: ${fmtCount(c.macs)} MACs, ${fmtCount(c.params)} params, proxy top-1 ${pct(c.top1)}`,
    el("div", {class: "vec"}, vecText(c)), json, " · ", onnx, " · ", onnxW, " · ", train, " ",
    el("span", {class: "error", id: "export-error"}), " ", el("span", {class: "error", id: "train-error"}));
}

async function refreshReport() {
  if (!current || current.run.training?.state !== "done") return;
  try {
    const r = await api(`/api/runs/${encodeURIComponent(current.name)}/report`);
    const rows = (Array.isArray(r.results) ? r.results : []).filter((x) => x && typeof x === "object");
    const cols = Object.keys(rows[0] || {}).filter((k) => !["channels", "failed", "trials", "spec"].includes(k) && typeof rows[0][k] !== "object").slice(0, 20);
    const cell = (v) => isNum(v) ? String(+v.toFixed(4)) : typeof v === "string" ? str(v) : typeof v === "boolean" ? String(v) : "-";
    const tau = r.kendall && isNum(r.kendall.tau) ? r.kendall.tau.toFixed(3) : "-";
    fill($("#report"), el("table", {}, el("tr", {}, cols.map((k) => el("th", {}, k))),
      rows.map((row) => el("tr", {}, cols.map((k) => el("td", {}, cell(row[k])))))),
      el("p", {class: "muted"}, `Kendall's tau (proxy vs scratch top-1): ${tau} over ${intText(r.kendall?.n)} network(s)`));
  } catch (e) { /* no results */ }
}

// test and automation hook: the page position of a front point (a real mouse can then hover it)
window.metaprunePointPosition = (i) => {
  const gd = $("#front"), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, c = current.front.front[i];
  const box = gd.getBoundingClientRect();
  return {x: box.left + xa._offset + xa.l2p(c.macs), y: box.top + ya._offset + ya.l2p(c.top1), id: c.id};
};

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    fill($("#main"), el("p", {class: "error"}, "No token: open the address `metaprune serve` printed (it ends in ?token=...)."));
    return;
  }
  const m = /^#\/run\/(.+)$/.exec(location.hash);
  current = null;
  let name = null;
  try { name = m ? decodeURIComponent(m[1]) : null; } catch (_) { name = ""; }
  if (m && !NAME_RE.test(name)) { fill($("#main"), el("p", {class: "error"}, "not a run name")); return; }
  (m ? showRun(name) : showRuns()).catch((e) => { fill($("#main"), el("p", {class: "error"}, e.message)); });
}
window.addEventListener("hashchange", route);
route();
