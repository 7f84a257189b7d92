// hub dashboard: polls /v1/stats, /v1/events, /v1/dlq and
// /v1/subscriptions, and calls the DLQ and subscription endpoints for its
// buttons. Every value is written with textContent, never as HTML.
"use strict";

const tokenKey = "hub.token";
const maxEvents = 50;
let lastStats = null;
let lastSeq = 0;
let events = [];
let eventsLoaded = false; // rows after the first load flash as new

function token() { return localStorage.getItem(tokenKey) || ""; }

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = { detail: text }; }
  }
  if (!resp.ok) {
    let msg = method + " " + path + ": " + resp.status;
    if (data && (data.detail || data.title)) msg += " " + (data.detail || data.title);
    if (resp.status === 401 || resp.status === 403) msg += " (paste a valid API token above)";
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// el builds an element; children are nodes or strings (as text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(tableId, rows, cols, empty) {
  const tbody = document.querySelector("#" + tableId + " tbody");
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: String(cols) }, empty))]));
}

function num(v) { return el("td", { class: "num" }, Math.round(v).toLocaleString()); }
function rate(v) { return el("td", { class: "num" }, v === null ? "–" : v.toFixed(v < 10 ? 2 : 0)); }
function bytes(v) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return el("td", { class: "num" }, (i ? v.toFixed(1) : String(v)) + " " + u[i]);
}
function when(s) {
  const d = new Date(s);
  return isNaN(d) ? "" : d.toLocaleTimeString();
}

let errTimer = null;
function showError(msg) {
  const box = document.getElementById("error");
  box.textContent = msg;
  box.hidden = false;
  clearTimeout(errTimer);
  errTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

async function refreshStats() {
  const s = await api("GET", "/v1/stats");
  const status = document.getElementById("status");
  status.textContent = s.jetstream_up ? "JetStream up" : "JetStream unreachable";
  status.className = "status " + (s.jetstream_up ? "up" : "down");
  document.getElementById("updated").textContent = "updated " + when(s.time);

  const dt = lastStats ? (Date.parse(s.time) - Date.parse(lastStats.time)) / 1000 : 0;
  const perSec = (now, before) => (dt > 0 && before !== undefined) ? Math.max(0, now - before) / dt : null;

  const received = Object.values(s.events_received).reduce((a, b) => a + b, 0);
  const receivedBefore = lastStats ? Object.values(lastStats.events_received).reduce((a, b) => a + b, 0) : undefined;
  const inRate = perSec(received, receivedBefore);
  const doors = Object.entries(s.events_received).map(([d, n]) => d + " " + Math.round(n)).join(", ");
  document.getElementById("intake").textContent =
    "events in: " + (inRate === null ? "–" : inRate.toFixed(2)) + "/s, " + Math.round(received) + " since start" + (doors ? " (" + doors + ")" : "");

  const rows = Object.keys(s.channels).sort().map((ch) => {
    const c = s.channels[ch].outcomes;
    const b = lastStats && lastStats.channels[ch] ? lastStats.channels[ch].outcomes : {};
    const o = (k) => c[k] || 0;
    const avg = s.channels[ch].attempts ? (1000 * s.channels[ch].attempt_seconds / s.channels[ch].attempts).toFixed(1) + " ms" : "–";
    return el("tr", { dataset: { channel: ch } },
      el("td", {}, ch),
      rate(perSec(o("delivered"), lastStats ? b.delivered || 0 : undefined)),
      rate(perSec(o("retry"), lastStats ? b.retry || 0 : undefined)),
      rate(perSec(o("failed"), lastStats ? b.failed || 0 : undefined)),
      num(o("delivered")), num(o("retry")),
      el("td", { class: "num" + (o("failed") ? " bad" : "") }, Math.round(o("failed")).toLocaleString()),
      num(o("dead_lettered")),
      el("td", { class: "num" }, avg));
  });
  fill("channels", rows, 9, "no deliveries yet");

  fill("consumers", s.consumers.map((c) => el("tr", {},
    el("td", {}, c.consumer), el("td", {}, c.stream),
    el("td", { class: "num" + (c.pending > 0 ? " warn" : "") }, Math.round(c.pending).toLocaleString()),
    num(c.ack_pending), num(c.redelivered))), 5, "no consumers");
  fill("streams", s.streams.map((st) => el("tr", {},
    el("td", {}, st.stream), num(st.messages), bytes(st.bytes))), 3, "no streams");
  document.getElementById("dlq-count").textContent = Math.round(s.dlq) + " waiting";
  const dlqChanged = lastStats && lastStats.dlq !== s.dlq;
  lastStats = s;
  if (dlqChanged) refreshDLQ().catch((e) => showError(e.message));
}

async function refreshEvents() {
  const r = await api("GET", "/v1/events?limit=" + maxEvents + (lastSeq ? "&after=" + lastSeq : ""));
  const fresh = new Set(r.items.map((e) => e.seq));
  if (r.items.length) {
    events = r.items.concat(events).slice(0, maxEvents);
  }
  if (r.last_seq < lastSeq) events = []; // the stream was reset
  lastSeq = r.last_seq;
  fill("events", events.map((e) => el("tr", { class: fresh.has(e.seq) && eventsLoaded ? "new" : "", dataset: { seq: String(e.seq), eventId: e.id } },
    el("td", { class: "num" }, String(e.seq)),
    el("td", {}, when(e.stored_at)),
    el("td", {}, el("code", {}, e.type)),
    el("td", {}, el("a", { href: "/v1/events/" + encodeURIComponent(e.id), target: "_blank", rel: "noopener", title: "delivery trace" }, e.id)),
    el("td", {}, e.source || ""),
    bytes(e.size))), 6, "no events yet");
  eventsLoaded = true;
}

async function refreshDLQ() {
  const r = await api("GET", "/v1/dlq?limit=100");
  fill("dlq", r.items.map((d) => el("tr", { dataset: { id: String(d.id) } },
    el("td", { class: "num" }, String(d.id)),
    el("td", {}, d.channel),
    el("td", {}, d.subscription),
    el("td", {}, el("a", { href: "/v1/events/" + encodeURIComponent(d.event_id || ""), target: "_blank", rel: "noopener" }, d.event_id || "")),
    el("td", { class: "num" }, String(d.attempts || 0)),
    el("td", {}, when(d.dead_at)),
    el("td", { class: "reason" }, d.reason || ""),
    el("td", {},
      // An invalid event has no subscription to go back to: fix it and publish it again.
      d.channel === "_invalid" ? null :
        el("button", { type: "button", dataset: { action: "replay", id: String(d.id) }, onclick: (ev) => act(ev.target, "POST", "/v1/dlq/" + d.id + "/replay") }, "Replay"),
      el("button", { type: "button", class: "danger", dataset: { action: "drop", id: String(d.id) }, onclick: (ev) => {
        if (confirm("Drop dead letter " + d.id + " for good?")) act(ev.target, "DELETE", "/v1/dlq/" + d.id);
      } }, "Drop")))), 8, "no dead letters");
}

async function refreshSubs() {
  const r = await api("GET", "/v1/subscriptions");
  fill("subs", r.items.map((s) => el("tr", { dataset: { id: s.id } },
    el("td", {}, s.id),
    el("td", {}, s.channel),
    el("td", {}, s.origin || ""),
    el("td", {}, el("code", {}, (s.events || []).join(" "))),
    el("td", {}, s.url || s.to || ""),
    el("td", { class: s.disabled ? "bad" : "ok", title: s.disabled_reason || "" }, s.disabled ? "disabled" + (s.disabled_reason ? ": " + s.disabled_reason : "") : "enabled"),
    el("td", {}, el("button", {
      type: "button", dataset: { action: s.disabled ? "enable" : "disable", id: s.id },
      onclick: (ev) => act(ev.target, "PATCH", "/v1/subscriptions/" + encodeURIComponent(s.id), { disabled: !s.disabled }),
    }, s.disabled ? "Enable" : "Disable")))), 7, "no subscriptions");
}

async function act(button, method, path, body) {
  button.disabled = true;
  try {
    await api(method, path, body);
  } catch (e) {
    showError(e.message);
  }
  await Promise.allSettled([refreshDLQ(), refreshSubs(), refreshStats()]);
}

function every(ms, f) {
  const run = async () => {
    try { await f(); } catch (e) { showError(e.message); }
    setTimeout(run, ms);
  };
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(tokenKey, input.value.trim());
    document.getElementById("error").hidden = true;
    Promise.allSettled([refreshStats(), refreshDLQ(), refreshSubs()]);
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    localStorage.removeItem(tokenKey);
    input.value = "";
  });
  every(2000, refreshStats);
  every(2000, refreshEvents);
  every(3000, refreshDLQ);
  every(5000, refreshSubs);
});
