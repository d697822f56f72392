// Chainwire dashboard: one EventSource (resumed from its last id after any disconnect,
// recreated when the browser gives up on it), REST for history and figures. No framework,
// no build step.
"use strict";

const params = new URLSearchParams(location.search);
const apiKey = params.get("key");
const withKey = (path) =>
  apiKey ? `${path}${path.includes("?") ? "&" : "?"}key=${encodeURIComponent(apiKey)}` : path;
const api = (path, options = {}) =>
  fetch(withKey(path), options).then(async (response) => {
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    return body;
  });

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 50;

function cell(text, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (title) td.title = title;
  return td;
}

function prepend(list, node) {
  list.prepend(node);
  while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
}

function btc(sats) {
  return `${(sats / 1e8).toFixed(8)} BTC`;
}

function short(hash) {
  return hash ? `${hash.slice(0, 10)}…${hash.slice(-6)}` : "";
}

// --- blocks --------------------------------------------------------------------------
const shownBlocks = new Set();
function showBlock(data) {
  if (shownBlocks.has(data.hash)) return;
  shownBlocks.add(data.hash);
  const row = document.createElement("tr");
  row.dataset.height = data.height;
  row.append(cell(String(data.height)), cell(short(data.hash), data.hash),
             cell(data.time ? new Date(data.time * 1000).toLocaleTimeString() : ""));
  prepend($("blocks"), row);
}

// --- alerts and activity -------------------------------------------------------------
function showLargeTx(data) {
  const li = document.createElement("li");
  li.className = "alert";
  li.textContent = `${btc(data.total_out_sats)} in ${short(data.txid)}` +
    (data.height ? ` (block ${data.height})` : " (mempool)");
  li.title = data.txid;
  prepend($("alerts"), li);
}

function showAddress(event) {
  const d = event.data;
  const li = document.createElement("li");
  const moved = d.received_sats ? `+${btc(d.received_sats)}` : `-${btc(d.sent_sats || 0)}`;
  li.textContent = `${event.key}: ${d.status} ${moved} (${short(d.txid)}` +
    `${d.confirmations ? `, ${d.confirmations} conf` : ""})`;
  li.title = d.txid;
  prepend($("activity"), li);
}

function showReorg(data) {
  const li = document.createElement("li");
  li.className = "alert";
  li.textContent = `reorg at height ${data.fork_height}: ` +
    `${(data.disconnected || []).length} block(s) replaced`;
  prepend($("alerts"), li);
}

// --- events per second ---------------------------------------------------------------
const WINDOW_SECONDS = 60;
const perSecond = new Map(); // epoch second -> events
function countEvents(n) {
  const now = Math.floor(Date.now() / 1000);
  perSecond.set(now, (perSecond.get(now) || 0) + n);
}

function drawRate() {
  const canvas = $("rate");
  const ctx = canvas.getContext("2d");
  const now = Math.floor(Date.now() / 1000);
  const values = [];
  for (let s = now - WINDOW_SECONDS + 1; s <= now; s++) values.push(perSecond.get(s) || 0);
  for (const s of perSecond.keys()) if (s <= now - WINDOW_SECONDS) perSecond.delete(s);
  const max = Math.max(1, ...values);
  const width = canvas.width / WINDOW_SECONDS;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#2563eb";
  values.forEach((v, i) => {
    const h = (v / max) * (canvas.height - 14);
    ctx.fillRect(i * width + 1, canvas.height - h, width - 2, h);
  });
  ctx.fillStyle = "#6b7280";
  ctx.fillText(`peak ${max}/s`, 4, 10);
  canvas.dataset.total = String(values.reduce((a, b) => a + b, 0));
}
setInterval(drawRate, 1000);

// --- the live stream -----------------------------------------------------------------
function onBatch(message) {
  const batch = JSON.parse(message.data);
  countEvents(batch.count);
  for (const event of batch.events) {
    if (batch.type === "block") showBlock(event.data);
    else if (batch.type === "tx.large") showLargeTx(event.data);
    else if (batch.type === "address") showAddress(event);
    else if (batch.type === "reorg") showReorg(event.data);
  }
}

// EventSource resumes by itself (with Last-Event-ID) after a network error, but any
// non-200 answer (a proxy's 502 while Chainwire restarts, a 429) closes it for good. Then
// a new one is made from the last id seen (`?last_event_id=`), after a growing pause.
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
let lastEventId = null;
let retryMs = RETRY_MIN_MS;

function setConnection(state, text) {
  const status = $("connection");
  status.textContent = text;
  status.dataset.state = state;
}

function remember(message) {
  if (!message.lastEventId) return;
  lastEventId = message.lastEventId;
  $("last-seq").textContent = lastEventId; // where a new stream would resume
}

function connect() {
  const path = lastEventId === null ? "/events"
    : `/events?last_event_id=${encodeURIComponent(lastEventId)}`;
  const source = new EventSource(withKey(path));
  source.addEventListener("start", (message) => {
    // The server's first message: where this stream starts (its id is the resume point).
    remember(message);
    retryMs = RETRY_MIN_MS;
    setConnection("live", "live");
  });
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      setConnection("reconnecting", "reconnecting");
      return;
    }
    source.close();
    const wait = Math.round(retryMs * (0.8 + 0.4 * Math.random()));
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    setConnection("down", `disconnected, retrying in ${Math.ceil(wait / 1000)} s`);
    setTimeout(connect, wait);
  };
  for (const type of ["block", "reorg", "address", "tx.large", "fees", "server"]) {
    source.addEventListener(type, (message) => { remember(message); onBatch(message); });
  }
  source.addEventListener("gap", (message) => {
    const gap = JSON.parse(message.data);
    const li = document.createElement("li");
    li.textContent = `missed batches ${gap.from}–${gap.to} (${gap.reason})`;
    prepend($("activity"), li);
  });
}

// --- figures -------------------------------------------------------------------------
async function refreshStats() {
  try {
    const stats = await api("/api/v1/stats");
    const rows = stats.pool.servers.map((s) => {
      const tr = document.createElement("tr");
      tr.append(cell(s.url), cell(s.state), cell(s.height ?? "–"), cell(s.latency_ms ?? "–"));
      return tr;
    });
    $("servers").replaceChildren(...rows);
    const b = stats.batcher;
    const figures = {
      "events batched": b.events_batched, "batches": b.batches_created,
      "messages saved": b.events_saved, "flushes (size/time)":
        `${b.flushes_size}/${b.flushes_time}`,
      "window latency avg": `${Math.round((b.window_latency_seconds_avg || 0) * 1000)} ms`,
      "clients (sse/ws)": `${stats.hub.clients.sse || 0}/${stats.hub.clients.ws || 0}`,
    };
    $("batcher").replaceChildren(...Object.entries(figures).flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = String(v);
      return [dt, dd];
    }));
    $("connection").dataset.stats = "ok";
  } catch (error) {
    // Its own attribute: a failed refresh must not hide the stream's state.
    $("connection").dataset.stats = "error";
  }
}

$("watch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const address = $("watch-address").value.trim();
  const status = $("watch-status");
  try {
    const result = await api("/api/v1/watch", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ addresses: [address] }),
    });
    status.textContent = result.added.length ? `watching ${address}` : `already watching ${address}`;
    $("watch-address").value = "";
  } catch (error) {
    status.textContent = error.message;
  }
});

async function start() {
  const health = await fetch("/healthz").then((r) => r.json()).catch(() => ({}));
  $("network").textContent = health.network || "?";
  try {
    const recent = await api("/api/v1/blocks/recent?limit=10");
    recent.blocks.slice().reverse().forEach((e) => showBlock(e.data));
    const large = await api("/api/v1/transactions/large?limit=10");
    large.transactions.slice().reverse().forEach((e) => showLargeTx(e.data));
  } catch (error) {
    $("watch-status").textContent = error.message;
  }
  connect();
  refreshStats();
  setInterval(refreshStats, 3000);
}
start();
