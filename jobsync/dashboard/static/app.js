// The jobsync dashboard: draws /api/state and long-polls it for newer versions.
// No framework and no network beyond this server: every asset ships in the package.
// Node names, task ids and reasons are data: they are only ever set as text, never as HTML.
"use strict";

const ALARM = "#e5484d";
const HOT = "#ff8a00";
const state = { doc: null, receivedAt: 0, cell: 8, cols: 1 };

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function hash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

// A colour per owner that stays the same while others come and go; red is kept for alarms.
function colour(name) {
  const h = hash(name);
  const hue = 30 + (h % 300);
  const light = [42, 55, 68][(h >>> 9) % 3];
  return `hsl(${hue}, 58%, ${light}%)`;
}

function age(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "-";
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? "-" : "";
  if (s < 10) return `${sign}${s.toFixed(1)}s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  if (s < 86400) return `${sign}${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${sign}${Math.floor(s / 86400)}d`;
}

// Seconds since the document was read, so ages keep moving between versions.
function drift() {
  return (performance.now() - state.receivedAt) / 1000;
}

function drawMap(doc) {
  const canvas = document.getElementById("map");
  const map = doc.map;
  const total = map.cells.length;
  const width = Math.max(320, Math.min(1400, canvas.parentElement.clientWidth || 960));
  const cols = Math.max(1, Math.ceil(Math.sqrt(total * 2.6)));
  const cell = Math.max(2, Math.min(24, Math.floor(width / cols)));
  const rows = Math.ceil(total / cols);
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  state.cell = cell;
  state.cols = cols;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const colours = map.owners.map(colour);
  const gap = cell >= 6 ? 1 : 0;
  const drawn = {};
  let unowned = 0;
  for (let t = 0; t < total; t++) {
    const owner = map.cells[t];
    const x = (t % cols) * cell;
    const y = Math.floor(t / cols) * cell;
    if (owner < 0) {
      unowned++;
      ctx.fillStyle = ALARM;
    } else {
      drawn[map.owners[owner]] = (drawn[map.owners[owner]] || 0) + 1;
      ctx.fillStyle = colours[owner];
    }
    ctx.fillRect(x, y, cell - gap, cell - gap);
  }
  const inner = cell - gap;
  for (const t of map.pending) {
    const x = (t % cols) * cell;
    const y = Math.floor(t / cols) * cell;
    ctx.strokeStyle = "rgba(255,255,255,0.9)";
    ctx.lineWidth = Math.max(1, inner / 6);
    ctx.beginPath();
    ctx.moveTo(x, y + inner);
    ctx.lineTo(x + inner, y);
    ctx.stroke();
  }
  for (const t of map.pinned) {
    const x = (t % cols) * cell;
    const y = Math.floor(t / cols) * cell;
    ctx.fillStyle = "#1d2430";
    const r = Math.max(1, inner / 4);
    ctx.beginPath();
    ctx.arc(x + inner / 2, y + inner / 2, r, 0, 2 * Math.PI);
    ctx.fill();
  }
  for (const t of doc.hot || []) {
    const x = (t % cols) * cell;
    const y = Math.floor(t / cols) * cell;
    ctx.fillStyle = HOT;
    ctx.beginPath();
    ctx.moveTo(x + inner / 2, y);
    ctx.lineTo(x + inner, y);
    ctx.lineTo(x + inner, y + inner / 2);
    ctx.fill();
  }
  return { drawn, unowned };
}

function drawLegend(doc, drawn) {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  for (const name of doc.map.owners) {
    const item = el("li");
    item.dataset.owner = name;
    item.dataset.count = drawn[name] || 0;
    const swatch = el("span", null, "swatch");
    swatch.style.background = colour(name);
    item.append(swatch, el("span", name), el("strong", drawn[name] || 0));
    legend.append(item);
  }
}

function maintenance(node) {
  if (!node.drained) return "";
  let text = node.draining ? "draining" : "drained";
  if (node.drain_until) text += " until " + new Date(node.drain_until * 1000).toISOString().slice(11, 19) + "Z";
  if (node.drain_note) text += " (" + node.drain_note + ")";
  return text;
}

function drawWorkers(doc) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  const d = drift();
  for (const node of doc.nodes) {
    const row = el("tr");
    row.dataset.node = node.name;
    row.dataset.tokens = node.tokens;
    row.dataset.state = node.state;
    const name = el("td", node.name, node.leader ? "leader" : "");
    const health = el("td", node.health, "health-" + String(node.health).replace(/ /g, "-"));
    const capacity = node.capacity === undefined || node.capacity === null ? "-" : node.capacity;
    row.append(
      name,
      el("td", node.state),
      health,
      el("td", age(node.heartbeat_age_sec + d) + " ago"),
      el("td", node.state === "live" || node.state === "leaving" ? "in " + age(node.lease_expires_in_sec - d) : "ended"),
      el("td", node.tokens, "num"),
      el("td", node.pending_releases, "num"),
      el("td", capacity, "num"),
      el("td", maintenance(node), maintenance(node) ? "draining" : ""),
      el("td", node.incarnation, "num"),
    );
    body.append(row);
  }
  if (!doc.nodes.length) {
    const row = el("tr");
    const cell = el("td", "no worker rows");
    cell.colSpan = 10;
    row.append(cell);
    body.append(row);
  }
}

function membership(entry) {
  const before = new Set(entry.nodes_before);
  const after = new Set(entry.nodes_after);
  const joined = entry.nodes_after.filter((n) => !before.has(n));
  const left = entry.nodes_before.filter((n) => !after.has(n));
  const parts = [];
  if (joined.length) parts.push("joined: " + joined.join(", "));
  if (left.length) parts.push("gone: " + left.join(", "));
  return parts.join("; ") || "members unchanged (a lock or a hand-off): " + (entry.nodes_after.join(", ") || "(none)");
}

function drawTimeline(doc) {
  const list = document.getElementById("timeline");
  list.replaceChildren();
  const total = doc.total_tokens || 1;
  const d = drift();
  for (const entry of doc.recent_rebalances) {
    const item = el("li");
    item.dataset.generation = entry.generation;
    const when = el("div", age(entry.age_sec + d) + " ago", "when");
    const what = el("div");
    const why = el("div", `generation ${entry.generation}: ${entry.trigger}`, "why");
    const delta = el("div", `${membership(entry)} · moved ${entry.moved} token(s)` +
      (entry.unowned ? ` · ${entry.unowned} unowned` : "") + ` · by ${entry.leader}`, "delta");
    const bar = el("div", null, "bar");
    bar.style.width = `${Math.max(0.5, (100 * entry.moved) / total)}%`;
    what.append(why, delta, bar);
    item.append(when, what);
    list.append(item);
  }
  if (!doc.recent_rebalances.length) list.append(el("li", "no rebalance recorded"));
}

function drawLocks(doc) {
  const body = document.querySelector("#locks tbody");
  body.replaceChildren();
  for (const lock of doc.lock_rows) {
    const row = el("tr");
    row.dataset.task = lock.task_id;
    let status = lock.satisfied ? "met" : "unsatisfied: no live worker matches";
    if (!lock.decides) status = "overridden by an earlier lock on its token";
    row.append(
      el("td", lock.task_id),
      el("td", lock.token, "num"),
      el("td", lock.patterns.join(" → ")),
      el("td", lock.owner === null ? "(unowned)" : lock.owner, lock.owner === null ? "unsatisfied" : ""),
      el("td", status, lock.satisfied ? "" : "unsatisfied"),
      el("td", lock.created_by),
      el("td", lock.reason || ""),
    );
    body.append(row);
  }
  const pins = doc.unsatisfied_pins.length;
  const summary = document.getElementById("pins-summary");
  summary.textContent = `${doc.lock_rows.length} lock(s); ${pins} unsatisfied pin(s)` +
    (doc.lock_conflicts.length ? `; ${doc.lock_conflicts.length} token(s) with conflicting locks` : "");
  summary.className = pins ? "unsatisfied" : "";
}

function drawHeader(doc, unowned) {
  document.getElementById("site").textContent = doc.site;
  document.title = `jobsync · ${doc.site}`;
  document.getElementById("leader").textContent = doc.leader || "none";
  document.getElementById("generation").textContent = doc.generation;
  document.getElementById("total").textContent = doc.total_tokens;
  const u = document.getElementById("unowned");
  u.textContent = unowned;
  u.className = unowned ? "unsatisfied" : "";
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  const problems = document.getElementById("problems");
  problems.replaceChildren(...(doc.problems || []).map((p) => el("li", p)));
  const conn = document.getElementById("connection");
  if (doc.error) {
    conn.textContent = "database unreachable: " + doc.error;
    conn.className = "stale";
  } else {
    conn.textContent = "live";
    conn.className = "live";
  }
}

function render(doc) {
  if (!doc.map) {
    drawHeader({ site: "", problems: [], ...doc }, 0);
    return;
  }
  const { drawn, unowned } = drawMap(doc);
  drawLegend(doc, drawn);
  drawWorkers(doc);
  drawTimeline(doc);
  drawLocks(doc);
  drawHeader(doc, unowned);
  document.body.dataset.version = doc.version;
  window.jobsyncDashboard = { version: doc.version, counts: drawn, unowned, error: doc.error || null };
}

function showTip(event) {
  const doc = state.doc;
  const tip = document.getElementById("tip");
  if (!doc || !doc.map) return;
  const canvas = event.target;
  const scale = canvas.width / canvas.getBoundingClientRect().width;
  const x = Math.floor((event.offsetX * scale) / state.cell);
  const y = Math.floor((event.offsetY * scale) / state.cell);
  const t = y * state.cols + x;
  if (x >= state.cols || t < 0 || t >= doc.map.cells.length) {
    tip.hidden = true;
    return;
  }
  const owner = doc.map.cells[t];
  const lines = [`token ${t}`, owner < 0 ? "unowned" : `owner ${doc.map.owners[owner]}`];
  const locks = doc.lock_rows.filter((l) => l.token === t && l.decides);
  if (locks.length) lines.push(`pinned by ${locks[0].task_id}: ${locks[0].patterns.join(" → ")}`);
  if (doc.map.pending.includes(t)) lines.push("release in flight");
  if ((doc.hot || []).includes(t)) lines.push("hot");
  tip.textContent = lines.join("\n");
  tip.style.left = `${event.offsetX + 12}px`;
  tip.style.top = `${event.offsetY + 12}px`;
  tip.hidden = false;
}

async function poll() {
  let after = null;
  for (;;) {
    try {
      const url = after === null ? "/api/state" : `/api/state?after=${after}&wait=25`;
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const doc = await response.json();
      if (doc.version !== after) {
        state.doc = doc;
        state.receivedAt = performance.now();
        render(doc);
        after = doc.version;
      }
    } catch (error) {
      const conn = document.getElementById("connection");
      conn.textContent = "dashboard server unreachable; retrying";
      conn.className = "stale";
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

function tick() {
  if (state.doc && state.doc.map) {
    drawWorkers(state.doc);
    drawTimeline(state.doc);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("map");
  canvas.addEventListener("mousemove", showTip);
  canvas.addEventListener("mouseleave", () => { document.getElementById("tip").hidden = true; });
  window.addEventListener("resize", () => state.doc && state.doc.map && render(state.doc));
  setInterval(tick, 1000);
  poll();
});
