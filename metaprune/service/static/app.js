// metaprune's web page: runs, live progress, the Pareto front, exports, launches. Plain JS, no build.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmtCount = (n) => n == null ? "-" : n >= 1e9 ? (n / 1e9).toFixed(2) + "G" : n >= 1e6 ? (n / 1e6).toFixed(2) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "K" : String(n);
const pct = (v) => v == null ? "-" : (100 * v).toFixed(2) + "%";
const secs = (s) => s == null ? "-" : s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? (s / 60).toFixed(1) + " min" : Math.round(s) + " s";

async function api(path, opts = {}) {
  const r = await fetch(path, {credentials: "same-origin", headers: {"Content-Type": "application/json"}, ...opts});
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body && body.error ? body.error : `HTTP ${r.status}`);
  return body;
}

function bar(fraction) {
  if (fraction == null) return "";
  return `<span class="bar" title="${(100 * fraction).toFixed(0)}%"><div style="width:${(100 * fraction).toFixed(1)}%"></div></span>`;
}
const stateTag = (s) => `<span class="state ${esc(s)}">${esc(s)}</span>`;

// ---- live events: server-sent events, polling as the fallback ------------------------------------
let lastEvent = 0, source = null, pollTimer = null, onEvent = () => {};
function listen() {
  if (source || pollTimer) return;
  if (window.EventSource) {
    source = new EventSource(`/api/events/stream?after=${lastEvent}`);
    source.onmessage = (m) => { const e = JSON.parse(m.data); lastEvent = e.id; onEvent(e); };
    source.onerror = () => { source.close(); source = null; poll(); };
  } else poll();
}
function poll() {
  pollTimer = setInterval(async () => {
    try {
      const r = await api(`/api/events?after=${lastEvent}`);
      r.events.forEach((e) => { lastEvent = e.id; onEvent(e); });
    } catch (_) { /* keep polling */ }
  }, 2000);
}

// ---- runs list ------------------------------------------------------------------------------------
async function showRuns() {
  const [{runs}, configs] = await Promise.all([api("/api/runs"), api("/api/configs")]);
  const rows = runs.map((r) => {
    const m = r.meta_training, s = r.search, t = r.training;
    return `<tr data-run="${esc(r.name)}"><td><a href="#/run/${encodeURIComponent(r.name)}">${esc(r.name)}</a></td>
      <td>${esc(r.space)}</td>
      <td>${stateTag(m.state)} ${bar(m.fraction)} <span class="muted">${m.step ?? "-"}/${m.total_steps ?? "-"}</span></td>
      <td>${stateTag(s.state)} ${bar(s.fraction)} <span class="muted">${s.evaluated ?? 0} scored</span></td>
      <td>${stateTag(t.state)}</td>
      <td>${r.active_job ? `job ${r.active_job.id} ${stateTag(r.active_job.state)}` : ""}</td></tr>`;
  }).join("");
  $("#main").innerHTML = `<h2>Runs</h2>
    <table id="runs"><tr><th>run</th><th>space</th><th>meta-training</th><th>search</th><th>scratch training</th><th>job</th></tr>${rows ||
      '<tr><td colspan="6" class="muted">no runs yet: meta-train one below or with the CLI</td></tr>'}</table>
    <div class="panel"><h3>Meta-train a new PruningNet</h3>
    <form id="new-run"><label>name <input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}"></label>
    <label>config <select name="config">${configs.meta_train.map((c) => `<option${c === "smoke" ? " selected" : ""}>${esc(c)}</option>`).join("")}</select></label>
    <label>epochs <input name="epochs" type="number" min="1" placeholder="config's"></label>
    <button>start</button> <span class="error" id="new-run-error"></span></form></div>`;
  $("#new-run").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target), overrides = {};
    if (f.get("epochs")) overrides["train.epochs"] = Number(f.get("epochs"));
    try {
      await api("/api/runs", {method: "POST", body: JSON.stringify({name: f.get("name"), config: f.get("config"), overrides})});
      showRuns();
    } catch (e) { $("#new-run-error").textContent = e.message; }
  };
  onEvent = debounce(() => { if (location.hash === "" || location.hash === "#/") showRuns(); }, 1000);
  listen();
}

function debounce(fn, ms) { let t = null; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; }

// ---- one run ----------------------------------------------------------------------------------------
let current = null;  // {name, run, front, selected}

async function showRun(name) {
  const [run, configs] = await Promise.all([api(`/api/runs/${encodeURIComponent(name)}`), api("/api/configs")]);
  current = {name, run, front: null, selected: null, baselines: null};
  const budgetMacs = run.search?.budgets?.macs;
  $("#main").innerHTML = `<h2>${esc(name)} <span class="muted">${esc(run.space)} ${esc(JSON.stringify(run.options))}</span></h2>
    <div class="row">
      <div class="panel"><h3>Meta-training</h3><div id="meta-status"></div><div id="curve"></div></div>
      <div class="panel"><h3>Search</h3><div id="search-status"></div>
        <form id="search-form">
          <label>MACs budget <input name="max_macs" placeholder="e.g. 12M" size="8" value="${budgetMacs ? esc(fmtCount(budgetMacs)) : ""}"></label>
          <label>strategy <select name="strategy"><option>pareto</option><option>constrained</option></select></label>
          <label>config <select name="config">${configs.search.map((c) => `<option${c === "smoke" ? " selected" : ""}>${esc(c)}</option>`).join("")}</select></label>
          <label><input type="checkbox" name="overwrite" ${run.search.state !== "none" ? "checked" : ""}> replace the existing search</label>
          <button id="search-start">start search</button> <div class="error" id="search-error"></div>
        </form></div>
    </div>
    <div class="panel"><h3>Pareto front <span class="muted">proxy top-1 (PruningNet weights, BN re-estimated, search split) against MACs; click a point to select it</span></h3>
      <div id="front"></div><div id="selected" class="muted">no point selected</div></div>
    <div class="panel"><h3>Scratch training</h3><div id="report" class="muted">no results yet</div></div>
    <div class="panel"><h3>Jobs</h3><div id="jobs"></div></div>`;
  $("#search-form").onsubmit = startSearch;
  renderRunStatus(run);
  drawCurve(run.curve);
  await refreshFront();
  refreshReport();
  onEvent = (e) => onRunEvent(e);
  listen();
}

function renderRunStatus(run) {
  const m = run.meta_training, s = run.search;
  $("#meta-status").innerHTML = `${stateTag(m.state)} ${bar(m.fraction)} step ${m.step ?? "-"} / ${m.total_steps ?? "-"},
    loss ${m.loss ?? "-"}${m.loss_spikes ? `, <b>${m.loss_spikes} loss spike(s)</b>` : ""}`;
  $("#search-status").innerHTML = searchLine(s, null);
  const job = run.active_job;
  $("#jobs").innerHTML = `<table><tr><th>job</th><th>kind</th><th>state</th><th>command</th><th></th></tr>${(run.jobs || []).map((j) =>
    `<tr><td>${j.id}</td><td>${esc(j.kind)}</td><td>${stateTag(j.state)}${j.error ? ` <span class="error">${esc(j.error)}</span>` : ""}</td>
     <td><code>${esc(j.command)}</code></td><td>${["queued", "running"].includes(j.state) ? `<button data-cancel="${j.id}">cancel</button>` :
       ["interrupted", "cancelled", "failed"].includes(j.state) ? `<button data-resume="${j.id}">resume</button>` : ""}</td></tr>`).join("")}</table>`;
  document.querySelectorAll("[data-cancel]").forEach((b) => b.onclick = () => jobAction(b.dataset.cancel, "cancel"));
  document.querySelectorAll("[data-resume]").forEach((b) => b.onclick = () => jobAction(b.dataset.resume, "resume"));
  $("#search-start").disabled = !!job || !run.has_pruningnet;
}

function searchLine(s, p) {
  const src = p || s;
  const st = p ? "running" : s.state;
  return `<span id="search-state">${stateTag(st)}</span> ${bar(src.fraction)} generation ${src.generation ?? "-"} / ${src.generations ?? "-"},
    ${src.evaluated ?? 0} candidates scored, best so far ${pct(src.best_top1)}${p && p.eta_s != null ? `, ETA ${secs(p.eta_s)}` : ""}`;
}

async function jobAction(id, action) {
  try { await api(`/api/jobs/${id}/${action}`, {method: "POST"}); } catch (e) { alert(e.message); }
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
    $("#search-status").innerHTML = searchLine(current.run.search, e.data);
    refreshFront();
  } else if (e.type === "progress" && e.data.stage === "meta-train" && job) {
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
  if (!curve || !curve.length) { $("#curve").innerHTML = '<p class="muted">no meta-training steps logged yet</p>'; return; }
  if (!$("#curve")._fullLayout) $("#curve").innerHTML = "";
  Plotly.react("curve", [{x: curve.map((r) => r.step), y: curve.map((r) => r.loss), mode: "lines", name: "loss"},
    {x: curve.map((r) => r.step), y: curve.map((r) => r.train_top1), mode: "lines", name: "train top-1", yaxis: "y2"}],
    {margin: {l: 45, r: 45, t: 10, b: 35}, xaxis: {title: {text: "step"}}, yaxis: {title: {text: "loss"}},
     yaxis2: {overlaying: "y", side: "right", range: [0, 1], tickformat: ".0%", title: {text: "train top-1"}}, legend: {orientation: "h"}},
    {displayModeBar: false, responsive: true});
}

const vecText = (c) => Object.entries(c.channels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
function hoverText(c) {
  const vec = Object.values(c.channels || {}).join(",");
  return `id ${c.id}<br>MACs ${fmtCount(c.macs)}<br>params ${fmtCount(c.params)}<br>proxy top-1 ${pct(c.top1)}<br>channels [${vec.replace(/(([^,]*,){10})/g, "$1<br>")}]`;
}

async function refreshFront() {
  if (!current || current.run.search.state === "none") { $("#front").innerHTML = '<p class="muted">no search yet: start one above</p>'; return; }
  const busy = !!current.run.active_job;
  let doc;
  try { doc = await api(`/api/runs/${encodeURIComponent(current.name)}/front`); }
  catch (e) { $("#front").innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  doc.baselines = current.baselines || [];
  current.front = doc;
  drawFront(doc);
  if (!busy && !current.baselines) {
    // uniform-width networks, scored by the PruningNet once the run is idle (a few seconds, then cached)
    current.baselines = [];
    api(`/api/runs/${encodeURIComponent(current.name)}/front?baselines=3&candidates=false`)
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
  if (doc.baselines && doc.baselines.length)
    traces.push({x: doc.baselines.map((b) => b.macs), y: doc.baselines.map((b) => b.top1), mode: "markers", name: "uniform width",
      marker: {color: "#f59e0b", size: 10, symbol: "diamond"}, hovertemplate: "uniform ~%{text}x<br>MACs %{x:.3s}<br>proxy top-1 %{y:.2%}<extra></extra>",
      text: doc.baselines.map((b) => b.ratio.toFixed(2))});
  const shapes = [];
  const budget = doc.budgets?.macs || parseCount($("#search-form [name=max_macs]")?.value);
  if (budget) shapes.push({type: "line", x0: budget, x1: budget, yref: "paper", y0: 0, y1: 1, line: {dash: "dash", color: "#dc2626"}});
  if (!$("#front")._fullLayout) $("#front").innerHTML = "";  // drop the "no search yet" text
  Plotly.react("front", traces, {margin: {l: 55, r: 20, t: 10, b: 45}, hovermode: "closest", shapes,
    xaxis: {title: {text: "MACs (conv + linear, BN folded; the papers' FLOPs)"}}, yaxis: {title: {text: "proxy top-1"}, tickformat: ".0%"},
    legend: {orientation: "h"}}, {displayModeBar: false, responsive: true});
  const gd = $("#front");
  gd.removeAllListeners?.("plotly_click");
  gd.on("plotly_click", (d) => { const p = d.points[0]; if (p && p.customdata != null) select(p.customdata); });
  if (current.selected != null) select(current.selected);
}


function parseCount(s) {
  const m = /^\s*([0-9.]+)\s*([kKmMgGtT]?)\s*$/.exec(s || "");
  return m ? Number(m[1]) * ({"": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12}[m[2].toLowerCase()]) : null;
}

function select(id) {
  const c = current.front.candidates.find((x) => x.id === id) || current.front.front.find((x) => x.id === id);
  if (!c) return;
  current.selected = id;
  const base = `/api/runs/${encodeURIComponent(current.name)}/export?candidate=${id}`;
  $("#selected").innerHTML = `<b>candidate ${id}</b>: ${fmtCount(c.macs)} MACs, ${fmtCount(c.params)} params, proxy top-1 ${pct(c.top1)}
    <div class="vec">${esc(vecText(c))}</div>
    <a id="export-json" href="${base}&format=json" download>download spec (JSON)</a> ·
    <a id="export-onnx" href="${base}&format=onnx" download>ONNX (random init)</a> ·
    <a id="export-onnx-w" href="${base}&format=onnx&with_weights=true" download>ONNX with PruningNet weights</a> ·
    <button id="train-selected">train from scratch with its uniform baseline</button> <span class="error" id="train-error"></span>`;
  $("#train-selected").onclick = async () => {
    try {
      await api(`/api/runs/${encodeURIComponent(current.name)}/trainings`, {method: "POST", body: JSON.stringify({candidate: id, recipe: "smoke"})});
      reloadRun();
    } catch (e) { $("#train-error").textContent = e.message; }
  };
}

async function refreshReport() {
  if (!current || current.run.training.state !== "done") return;
  try {
    const r = await api(`/api/runs/${encodeURIComponent(current.name)}/report`);
    const cols = Object.keys(r.results[0] || {}).filter((k) => !["channels", "failed", "trials", "spec"].includes(k) && typeof r.results[0][k] !== "object");
    $("#report").innerHTML = `<table><tr>${cols.map((k) => `<th>${esc(k)}</th>`).join("")}</tr>${r.results.map((row) =>
      `<tr>${cols.map((k) => `<td>${esc(typeof row[k] === "number" ? +row[k].toFixed(4) : row[k])}</td>`).join("")}</tr>`).join("")}</table>
      <p class="muted">Kendall's tau (proxy vs scratch top-1): ${r.kendall.tau == null ? "-" : r.kendall.tau.toFixed(3)} over ${r.kendall.n} network(s)</p>`;
  } catch (e) { /* no results */ }
}

// test and automation hook: the page position of a front point (a real mouse can then hover it)
window.metaprunePointPosition = (i) => {
  const gd = $("#front"), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, c = current.front.front[i];
  const box = gd.getBoundingClientRect();
  return {x: box.left + xa._offset + xa.l2p(c.macs), y: box.top + ya._offset + ya.l2p(c.top1), id: c.id};
};

function route() {
  const m = /^#\/run\/(.+)$/.exec(location.hash);
  current = null;
  (m ? showRun(decodeURIComponent(m[1])) : showRuns()).catch((e) => { $("#main").innerHTML = `<p class="error">${esc(e.message)}</p>`; });
}
window.addEventListener("hashchange", route);
route();
