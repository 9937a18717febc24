// pingvas dashboard: plain JavaScript, no dependencies. The token lives in sessionStorage and
// goes only into Authorization headers. Live updates come from GET /api/v1/events, read with
// fetch() (EventSource cannot send a header); nothing polls.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["completed", "failed", "canceled"]);
// live: what the event stream last said of each job (applyLive). reads: each job's read in
// flight (refreshJob), by the number of the read.
const st = { token: null, sub: "", admin: false, user: false, jobs: new Map(), order: [],
  live: new Map(), reads: new Map(), nreads: 0, abort: null, points: [], scaling: [],
  workerState: new Map(), fleetTimer: null, creditsTimer: null, costTimer: null, tab: "user" };

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

function claims(token) {
  try {
    const p = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(p + "===".slice((p.length + 3) % 4)));
  } catch (e) { return null; }
}

async function api(method, path, body) {
  const h = { Authorization: "Bearer " + st.token };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers: h,
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { status: r.status, data };
}

function errText(r) {
  const e = r.data && r.data.error;
  return e ? e.message + (e.field ? " (" + e.field + ")" : "") : "HTTP " + r.status;
}

// ---- sign-in ----

async function signIn(token) {
  const c = claims(token);
  if (!c || !c.sub) return "that is not a pingvas token (a JWT from 'pingvas token NAME')";
  st.token = token; st.sub = c.sub; st.admin = c.role === "admin";
  // An operator token opens the fleet view; any other must belong to a user of this server.
  if (!st.admin) {
    const r = await api("GET", "/api/v1/credits");
    if (r.status !== 200) { st.token = null; return errText(r); }
  }
  st.user = !st.admin;
  sessionStorage.setItem("pingvas-token", token);
  $("signin").hidden = true; $("who").hidden = false;
  $("who-name").textContent = st.sub + (st.admin ? " (operator)" : "");
  $("tabs").hidden = !(st.user && st.admin);
  $("tab-user").hidden = !st.user; $("tab-ops").hidden = !st.admin;
  showTab(st.user ? "user" : "ops");
  startStream();
  return null;
}

function signOut(msg) {
  sessionStorage.removeItem("pingvas-token");
  if (st.abort) st.abort.abort();
  st.token = null; st.jobs.clear(); st.order = []; st.live.clear(); st.reads.clear();
  $("jobs").replaceChildren();
  for (const id of ["user-view", "ops-view", "who", "tabs"]) $(id).hidden = true;
  $("signin").hidden = false; $("signin-error").textContent = msg || "";
  $("token").value = ""; $("token").focus();
}

function showTab(tab) {
  st.tab = tab;
  $("user-view").hidden = tab !== "user"; $("ops-view").hidden = tab !== "ops";
  $("tab-user").setAttribute("aria-selected", String(tab === "user"));
  $("tab-ops").setAttribute("aria-selected", String(tab === "ops"));
}

// ---- live events ----

function setLive(on) {
  $("live").textContent = on ? "live" : "reconnecting";
  $("live").classList.toggle("on", on);
}

// Reads the SSE stream; reconnects after a drop with Last-Event-ID (the server resumes from its
// durable log, so nothing is missed). onOpen runs on every (re)connection.
async function startStream() {
  const ctrl = new AbortController();
  st.abort = ctrl;
  let last = null, backoff = 500;
  while (!ctrl.signal.aborted) {
    try {
      const h = { Authorization: "Bearer " + st.token, Accept: "text/event-stream" };
      if (last !== null) h["Last-Event-ID"] = String(last);
      const r = await fetch("/api/v1/events", { headers: h, signal: ctrl.signal });
      if (r.status === 401 || r.status === 403) { signOut("the token was refused"); return; }
      if (r.status !== 200) throw new Error("HTTP " + r.status);
      setLive(true); backoff = 500;
      loadAll(); // after the stream is open: no change falls between the two
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
          if (ev) { last = ev.id; onEvent(ev.kind, ev.data); }
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function parseEvent(block) {
  const f = {};
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(": ");
    if (i > 0) f[line.slice(0, i)] = line.slice(i + 2);
  }
  if (!f.data || !f.id) return null;
  try { return { id: f.id, kind: f.event || "message", data: JSON.parse(f.data) }; }
  catch (e) { return null; }
}

function onEvent(kind, d) {
  if (st.user && (kind === "job" || kind === "progress")) userEvent(kind, d);
  if (st.admin) {
    if (kind === "worker") st.workerState.set(d.id, d.state);
    if (kind === "scaling") st.scaling.push({ t: Date.parse(d.time), tier: d.tier, from: d.from, to: d.to, reason: d.reason });
    if (kind === "job" || kind === "worker" || kind === "scaling") scheduleFleet();
    if (kind === "job" && d.status === "completed") scheduleCost();
  }
}

function loadAll() {
  if (st.user) { loadJobs(); loadCredits(); }
  if (st.admin) { loadFleet(); loadCost(); }
}

// ---- user view ----

async function loadJobs() {
  const r = await api("GET", "/api/v1/generation?limit=50");
  if (r.status !== 200) return;
  st.jobs.clear(); st.order = [];
  for (const j of r.data.jobs) { st.jobs.set(j.id, applyLive(j)); st.order.push(j.id); }
  renderJobs();
}

// Reads job id and shows it. The answer may have left the server before events the stream has
// delivered since (a job claimed while its create's answer was on its way): applyLive keeps
// what those said, so a stale answer never takes a job back to "queued" and hides its progress.
// One read at a time shows a job; with again, a new read supersedes the one in flight.
async function refreshJob(id, again) {
  if (st.reads.has(id) && !again) return;
  const n = ++st.nreads;
  st.reads.set(id, n);
  let r = null;
  try { r = await api("GET", "/api/v1/generation/" + encodeURIComponent(id)); } catch (e) { r = null; }
  if (st.reads.get(id) !== n) return; // superseded
  st.reads.delete(id);
  if (!r || r.status !== 200) return;
  if (!st.jobs.has(id)) st.order.unshift(id);
  st.jobs.set(id, applyLive(r.data));
  renderJob(r.data);
}

// Job j as the event stream last described it (its status, attempts, error and progress); j.
function applyLive(j) {
  const l = st.live.get(j.id);
  if (l) Object.assign(j, l);
  return j;
}

// Records what event d says of its job, then shows the job, or reads it when it is not shown yet.
function userEvent(kind, d) {
  const l = st.live.get(d.id) || {};
  if (kind === "progress") {
    if (l.status !== undefined && l.status !== "in_progress") return; // a late one
    l.status = "in_progress";
    l.progress = { step: d.step, steps: d.steps };
  } else {
    l.status = d.status; l.attempts = d.attempts; l.error_message = d.error_message;
    if (d.status !== "in_progress") l.progress = null;
  }
  st.live.set(d.id, l);
  const j = st.jobs.get(d.id);
  if (!j) { refreshJob(d.id); return; }
  renderJob(applyLive(j));
  if (kind === "job" && FINAL.has(d.status)) { refreshJob(d.id, true); scheduleCredits(); }
}

function scheduleCredits() {
  clearTimeout(st.creditsTimer);
  st.creditsTimer = setTimeout(loadCredits, 200);
}

function renderJobs() {
  const ul = $("jobs");
  ul.replaceChildren(...st.order.map((id) => jobNode(st.jobs.get(id))));
  $("jobs-empty").hidden = st.order.length > 0;
}

function renderJob(j) {
  const old = document.querySelector(`li[data-id="${CSS.escape(j.id)}"]`);
  if (old) old.replaceWith(jobNode(j)); else renderJobs();
}

function jobNode(j) {
  const li = el("li", { class: "job", "data-id": j.id, "data-status": j.status });
  li.append(el("div", { class: "prompt", text: j.prompt }));
  li.append(el("div", { class: "meta" },
    el("span", { class: "status " + j.status, text: j.status.replace("_", " ") }),
    ` ${j.width}x${j.height}, ${j.steps} steps, seed ${j.seed}` +
    (j.credits_charged ? `, ${j.credits_charged} credits` : "")));
  if (j.status === "in_progress" || j.status === "queued") {
    const p = el("progress", { max: "100", "aria-label": "progress of " + j.prompt.slice(0, 40) });
    if (j.progress && j.progress.steps) {
      p.value = Math.round(100 * j.progress.step / j.progress.steps);
      li.append(p, el("div", { class: "meta", text: `step ${j.progress.step} of ${j.progress.steps}` }));
    } else {
      li.append(p, el("div", { class: "meta", text: j.status === "queued" ? "waiting for a worker" : "starting" }));
    }
    const b = el("button", { type: "button", class: "secondary", text: "Cancel" });
    b.addEventListener("click", async () => {
      b.disabled = true;
      const r = await api("POST", `/api/v1/generation/${encodeURIComponent(j.id)}/cancel`);
      if (r.status !== 200) { b.disabled = false; alert(errText(r)); }
    });
    li.append(b);
  }
  if (j.status === "completed" && j.image_url)
    li.append(el("img", { src: j.image_url, alt: "image for: " + j.prompt.slice(0, 80), loading: "lazy",
      width: String(j.width), height: String(j.height) }));
  if (j.webhook)
    li.append(el("div", { class: "meta", text: `webhook ${j.webhook.state}` +
      (j.webhook.attempts ? `, ${j.webhook.attempts} attempt(s)` : "") +
      (j.webhook.last_error && j.webhook.state !== "delivered" ? `: ${j.webhook.last_error}` : "") }));
  if (j.error_message && j.status !== "completed")
    li.append(el("div", { class: "error", text: j.error_message }));
  return li;
}

async function loadCredits() {
  const r = await api("GET", "/api/v1/credits");
  if (r.status !== 200) return;
  const c = r.data;
  $("credits-available").textContent = c.available;
  $("credits-balance").textContent = c.balance;
  $("credits-reserved").textContent = c.reserved;
  $("credits-rate").textContent = c.rate_per_gpu_second;
  $("ledger").replaceChildren(...c.ledger.map((e) => el("tr", {},
    el("td", { text: new Date(e.created_at).toLocaleString() }), el("td", { text: e.kind }),
    el("td", { text: String(e.amount) }), el("td", { text: String(e.balance_after) }))));
}

function formBody(form) {
  const b = { prompt: form.prompt.value, negative_prompt: form.negative_prompt.value,
    model: form.model.value || "sd15", width: +form.width.value, height: +form.height.value,
    steps: +form.steps.value, cfg_scale: +form.cfg_scale.value };
  if (form.seed.value !== "") b.seed = +form.seed.value;
  if (form.webhook_url.value.trim() !== "") b.webhook_url = form.webhook_url.value.trim();
  return b;
}

async function submitJob(ev) {
  ev.preventDefault();
  const form = ev.target;
  $("create-error").textContent = "";
  $("submit").disabled = true;
  try {
    const r = await api("POST", "/api/v1/generation/create", formBody(form));
    if (r.status !== 201 && r.status !== 200) { $("create-error").textContent = errText(r); return; }
    if (!st.jobs.has(r.data.id)) {
      st.order.unshift(r.data.id);
      st.jobs.set(r.data.id, applyLive(r.data));
    }
    renderJobs();
    scheduleCredits();
  } finally { $("submit").disabled = false; }
}

// ---- operator view ----

function scheduleFleet() {
  if (st.fleetTimer) return;
  st.fleetTimer = setTimeout(() => { st.fleetTimer = null; loadFleet(); }, 250);
}

function scheduleCost() {
  if (st.costTimer) return;
  st.costTimer = setTimeout(() => { st.costTimer = null; loadCost(); }, 1000);
}

function dur(s) {
  if (s == null) return "-";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

async function loadFleet() {
  const r = await api("GET", "/api/v1/fleet");
  if (r.status !== 200) return;
  const f = r.data;
  let backlog = 0, workers = 0;
  $("tiers").replaceChildren(...Object.entries(f.tiers).map(([name, t]) => {
    backlog += t.queued + t.running; workers += t.workers;
    return el("tr", { "data-tier": name }, el("th", { scope: "row", text: name }),
      el("td", { text: String(t.queued) }), el("td", { text: String(t.running) }),
      el("td", { class: "workers", text: String(t.workers) }), el("td", { text: String(t.idle_workers) }));
  }));
  st.points.push({ t: Date.now(), backlog, workers });
  if (st.points.length > 2000) st.points.shift();
  if (st.scaling.length === 0 && f.scaling_events.length)
    st.scaling = f.scaling_events.map((e) => ({ t: Date.parse(e.time), tier: e.tier, from: e.from, to: e.to, reason: e.reason }));
  $("worker-count").textContent = String(f.workers.length);
  $("workers").replaceChildren(...f.workers.map((w) => el("tr", {},
    el("td", { text: w.id }), el("td", { text: w.tier }),
    el("td", { text: st.workerState.get(w.id) || w.state }), el("td", { text: dur(w.uptime_s) }),
    el("td", { text: dur(w.cold_start_s) }), el("td", { text: dur(w.busy_s) }))));
  $("failures").replaceChildren(...f.failures.map((x) => el("li", {},
    el("strong", { text: x.user + " " }), el("code", { text: x.id.slice(0, 8) }),
    ` ${new Date(x.time).toLocaleTimeString()}: ${x.error_message || "failed"}`)));
  $("failures-empty").hidden = f.failures.length > 0;
  $("scaling").replaceChildren(...st.scaling.slice(-10).reverse().map((e) => el("li", {
    text: `${new Date(e.t).toLocaleTimeString()} ${e.tier} ${e.from} -> ${e.to}: ${e.reason}` })));
  drawChart();
}

// A hand-written SVG timeline: backlog and workers as step lines, scaling decisions as marks.
function drawChart() {
  const W = 800, H = 220, L = 34, R = 10, T = 10, B = 24, NS = "http://www.w3.org/2000/svg";
  const pts = st.points;
  const now = Date.now(), t0 = Math.min(pts.length ? pts[0].t : now, now - 10000);
  const tmax = Math.max(now, t0 + 1000);
  const ymax = Math.max(2, ...pts.map((p) => Math.max(p.backlog, p.workers)));
  const x = (t) => L + (W - L - R) * (t - t0) / (tmax - t0);
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, a) => { const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(a)) e.setAttribute(k, v); svg.append(e); return e; };
  add("line", { class: "axis", x1: L, y1: y(0), x2: W - R, y2: y(0) });
  add("line", { class: "axis", x1: L, y1: T, x2: L, y2: y(0) });
  for (const v of [0, Math.ceil(ymax / 2), ymax])
    add("text", { x: 4, y: y(v) + 4 }).textContent = String(v);
  add("text", { x: L, y: H - 6 }).textContent = new Date(t0).toLocaleTimeString();
  add("text", { x: W - R - 60, y: H - 6 }).textContent = new Date(tmax).toLocaleTimeString();
  st.scaling.filter((e) => e.t >= t0).forEach((e, i) => {
    add("line", { x1: x(e.t), y1: T, x2: x(e.t), y2: y(0), stroke: "#bf8700", "stroke-dasharray": "3 3" });
    add("text", { x: x(e.t) + 3, y: T + 10 + 12 * (i % 4) }).textContent = `${e.from}\u2192${e.to}`;
  });
  const step = (key) => {
    if (!pts.length) return "";
    let d = `M${x(pts[0].t)},${y(pts[0][key])}`;
    for (let i = 1; i < pts.length; i++) d += `H${x(pts[i].t)}V${y(pts[i][key])}`;
    return d + `H${x(now)}`;
  };
  add("path", { d: step("backlog"), fill: "none", stroke: "#1f6feb", "stroke-width": 2 });
  add("path", { d: step("workers"), fill: "none", stroke: "#1a7f37", "stroke-width": 2 });
  $("chart").replaceChildren(svg);
  $("chart").setAttribute("aria-label", `backlog ${pts.length ? pts[pts.length - 1].backlog : 0}, ` +
    `workers ${pts.length ? pts[pts.length - 1].workers : 0}`);
}

async function loadCost() {
  const r = await api("GET", "/api/v1/cost");
  if (r.status !== 200) { $("cost").hidden = true; return; }
  const c = r.data;
  const usd = (v) => "$" + (v || 0).toFixed(v < 1 ? 4 : 2);
  const items = [["total", usd(c.total_usd)], ["images", String(c.images)],
    ["per image", usd(c.per_image_usd)], ["GPU utilization", Math.round(100 * c.gpu_utilization) + " %"],
    ["idle cost", usd(c.idle_usd)], ["loading cost", usd(c.loading_usd)],
    ["lower bound", usd(c.lower_bound_usd)]];
  $("cost-summary").replaceChildren(...items.map(([k, v]) =>
    el("div", {}, el("dt", { text: k }), el("dd", { text: v }))));
  $("cost").hidden = false;
}

// ---- start ----

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = await signIn($("token").value.trim());
    $("signin-error").textContent = msg || "";
  });
  $("signout").addEventListener("click", () => signOut());
  $("create-form").addEventListener("submit", submitJob);
  $("tab-user").addEventListener("click", () => showTab("user"));
  $("tab-ops").addEventListener("click", () => { showTab("ops"); drawChart(); });
  const saved = sessionStorage.getItem("pingvas-token");
  if (saved) signIn(saved).then((msg) => { if (msg) signOut(msg); });
  else $("token").focus();
});
