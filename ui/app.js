// kvserve KV view: playground, live cache grid, compare mode.
// Talks only to this server: /v1/kv/policies (picker fields), /v1/completions (SSE output),
// /v1/kv/stream (SSE frames of one sequence), /v1/kv (running sequences). Every request
// carries the API key as an Authorization header; SSE is read with fetch() streaming (not
// EventSource) so that the key never goes into a URL.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { key: "", policies: null, panes: [], seqTimer: null };
window.kvView = state; // read by the browser test

// ------------------------------------------------------------------ HTTP with the key

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}

let keyWaiters = [];
function askKey(reason) {
  $("#key-reason").textContent = reason;
  const dlg = $("#key-dialog");
  if (!dlg.open) dlg.showModal();
  $("#key-input").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}
$("#key-form").addEventListener("submit", () => {
  state.key = $("#key-input").value.trim();
  $("#key-input").value = "";
  const w = keyWaiters;
  keyWaiters = [];
  w.forEach((f) => f());
});
$("#key-button").addEventListener("click", () => askKey("Enter the API key for this server."));

// fetch() that asks for the key on 401 and retries.
async function api(url, opts) {
  for (;;) {
    const o = Object.assign({}, opts || {});
    o.headers = headers(o.headers);
    const res = await fetch(url, o);
    if (res.status !== 401) return res;
    await askKey(state.key ? "That API key was refused. Try again." : "This server needs an API key.");
  }
}

async function errorText(res) {
  try { return (await res.json()).error.message; } catch (e) { return res.status + " " + res.statusText; }
}

// Reads a server-sent-event stream; onEvent(event, data) per event.
async function readSSE(res, onEvent) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let ev = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) ev = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (data) onEvent(ev, data);
    }
  }
}

function setStatus(text, isError) {
  const s = $("#status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

// ------------------------------------------------------------------ policy picker

// Builds the fields of one picker from GET /v1/kv/policies (no hand-written parameters).
function buildPicker(fs, initial) {
  const legend = fs.querySelector("legend").outerHTML;
  fs.innerHTML = legend;
  const sel = document.createElement("select");
  sel.className = "policy";
  for (const p of state.policies.data) sel.add(new Option(p.name, p.name));
  sel.value = initial || state.policies.default;
  const fields = document.createElement("span");
  fields.style.display = "contents";
  const label = document.createElement("label");
  label.append("policy ", sel);
  fs.append(label, fields);
  const render = () => {
    fields.innerHTML = "";
    const pol = state.policies.data.find((p) => p.name === sel.value);
    for (const prm of pol.params) {
      const l = document.createElement("label");
      let input;
      if (prm.type === "enum") {
        input = document.createElement("select");
        for (const c of prm.choices) input.add(new Option(c, c));
        input.value = prm.default;
      } else {
        input = document.createElement("input");
        input.type = "number";
        input.min = prm.min; input.max = prm.max; input.step = prm.step; input.value = prm.default;
        l.title = `${prm.type} ${prm.min}..${prm.max}` + (prm.power_of_two ? ", a power of two" : "") +
          `, default ${prm.default}`;
      }
      input.dataset.param = prm.name;
      input.dataset.type = prm.type;
      input.dataset.default = prm.default;
      l.append(prm.name + " ", input);
      fields.append(l);
    }
  };
  sel.addEventListener("change", render);
  render();
  if (!state.policies.allow_request_override) sel.disabled = true;
}

// {"name": ..., changed params...} for the completion request.
function pickerValue(fs) {
  const out = { name: fs.querySelector("select.policy").value };
  for (const input of fs.querySelectorAll("[data-param]")) {
    if (String(input.value) === String(input.dataset.default)) continue;
    out[input.dataset.param] = input.dataset.type === "enum" ? input.value : Number(input.value);
  }
  return out;
}

async function loadPolicies() {
  const res = await api("/v1/kv/policies");
  if (!res.ok) throw new Error(await errorText(res));
  state.policies = await res.json();
  buildPicker($("#picker-a"), state.policies.default);
  buildPicker($("#picker-b"), state.policies.data.some((p) => p.name === "retrieval") ? "retrieval" : null);
}

// ------------------------------------------------------------------ panes: one per sequence

function newPane(title) {
  const node = $("#view-template").content.firstElementChild.cloneNode(true);
  $("#views").append(node);
  const pane = {
    node, title, frame: null, cells: [], tokens: [], history: [], frames: 0, genSeen: [],
    text: "", done: false, seq: null, finished: false, abort: new AbortController(),
  };
  node.querySelector(".title").textContent = title;
  const grid = node.querySelector(".grid");
  grid.addEventListener("mousemove", (e) => hover(pane, grid, e));
  grid.addEventListener("mouseleave", () => { $("#tip").hidden = true; });
  state.panes.push(pane);
  return pane;
}

function clearPanes() {
  for (const p of state.panes) p.abort.abort();
  state.panes = [];
  $("#views").innerHTML = "";
  $("#diff").hidden = true;
}

// Applies one feed frame: cells are deltas ("keep k integers of the old runs, then r").
function applyFrame(pane, f) {
  if (f.reset) { pane.cells = []; pane.tokens = []; }
  for (const c of f.cells) {
    const old = pane.cells[c.c] || { runs: [] };
    const cell = { runs: old.runs.slice(0, c.k).concat(c.r), n: c.n, sel: old.sel, ss: old.ss };
    if (c.s) { cell.sel = c.s; cell.ss = c.ss; }
    pane.cells[c.c] = cell;
  }
  const t = f.tokens;
  for (let i = 0; i < t.text.length; i++) pane.tokens[t.from + i] = t.text[i];
  pane.frame = f;
  pane.seq = f.seq;
  pane.frames++;
  if (!f.finished) pane.genSeen.push(f.generated_tokens); // the view while it runs
  if (f.spill) pane.history.push({ hit: f.spill.hot_hit_rate, read: f.spill.spill_bytes_read,
                                       written: f.spill.spill_bytes_written });
  pane.finished = f.finished;
  render(pane);
  renderDiff();
}

// Counts what the grid shows for cell i: kept, spilled, evicted positions.
function cellCounts(pane, i) {
  const f = pane.frame, cell = pane.cells[i];
  let kept = 0;
  for (let j = 1; j < cell.runs.length; j += 2) kept += cell.runs[j];
  let spilled = 0;
  const layer = Math.floor(i / f.n_head_kv);
  if (f.spill && layer >= f.spill.spill_layer0)
    spilled = Math.max(0, f.spill.spill_to - f.spill.spill_from);
  return { kept, spilled, evicted: f.tokens_seen - kept - spilled };
}

// Per layer: kept and evicted summed over KV heads (what GET /v1/kv reports per layer).
function layerCounts(pane) {
  const f = pane.frame, out = [];
  for (let l = 0; l < f.n_layer; l++) {
    const s = { kept: 0, evicted: 0, spilled: 0 };
    for (let h = 0; h < f.n_head_kv; h++) {
      const c = cellCounts(pane, l * f.n_head_kv + h);
      s.kept += c.kept; s.evicted += c.evicted; s.spilled += c.spilled;
    }
    out.push(s);
  }
  return out;
}
state.layerCounts = layerCounts;

// ------------------------------------------------------------------ drawing

const ROW = 12, GAP = 3, LABEL = 44;
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function fitCanvas(canvas, height) {
  const w = Math.max(300, Math.floor(canvas.clientWidth || 900));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== height) canvas.height = height;
  return canvas.getContext("2d");
}

function drawRuns(ctx, runs, x0, y, scale, h, color, lo, hi) {
  ctx.fillStyle = color;
  for (let j = 0; j < runs.length; j += 2) {
    const a = Math.max(runs[j], lo), b = Math.min(runs[j] + runs[j + 1], hi);
    if (b > a) ctx.fillRect(x0 + a * scale, y, Math.max(1, (b - a) * scale), h);
  }
}

function drawCell(ctx, f, cell, layer, y, scale) {
  const seen = f.tokens_seen;
  ctx.fillStyle = css("--evicted");
  ctx.fillRect(LABEL, y, seen * scale, ROW);
  if (f.spill && layer >= f.spill.spill_layer0)
    drawRuns(ctx, [f.spill.spill_from, f.spill.spill_to - f.spill.spill_from], LABEL, y, scale,
             ROW, css("--spilled"), 0, seen);
  drawRuns(ctx, cell.runs, LABEL, y, scale, ROW, css("--kept"), f.sink, f.window_from);
  drawRuns(ctx, cell.runs, LABEL, y, scale, ROW, css("--sink"), 0, f.sink);
  drawRuns(ctx, cell.runs, LABEL, y, scale, ROW, css("--window"), f.window_from, seen);
  if (cell.sel) drawRuns(ctx, cell.sel, LABEL, y + 3, scale, ROW - 6, css("--selected"), 0, seen);
}

function render(pane) {
  const f = pane.frame, node = pane.node;
  const n = f.n_layer * f.n_head_kv;
  const canvas = node.querySelector(".grid");
  const ctx = fitCanvas(canvas, n * (ROW + GAP));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scale = (canvas.width - LABEL) / Math.max(1, f.tokens_seen);
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  const counts = [];
  for (let i = 0; i < n; i++) {
    const l = Math.floor(i / f.n_head_kv), h = i % f.n_head_kv, y = i * (ROW + GAP);
    ctx.fillStyle = css("--fg");
    ctx.fillText(`L${l} H${h}`, 0, y + ROW / 2);
    if (pane.cells[i]) {
      drawCell(ctx, f, pane.cells[i], l, y, scale);
      counts.push(cellCounts(pane, i));
    }
  }
  canvas.dataset.kept = counts.map((c) => c.kept).join(",");
  canvas.dataset.evicted = counts.map((c) => c.evicted).join(",");
  canvas.dataset.seen = f.tokens_seen;
  canvas.dataset.generated = f.generated_tokens;
  renderStats(pane);
  renderBars(pane);
  renderChart(pane);
}

function renderStats(pane) {
  const f = pane.frame;
  const parts = [`seq ${f.seq}`, f.policy, `${f.tokens_seen} tokens seen`,
                 `${f.prompt_tokens} prompt + ${f.generated_tokens} generated`];
  if (f.ttft_ms >= 0) parts.push(`TTFT ${f.ttft_ms.toFixed(1)} ms`);
  if (f.tokens_per_s > 0) parts.push(`${f.tokens_per_s.toFixed(0)} tokens/s`);
  if (f.spill) {
    const r = f.spill;
    parts.push(r.spill_bytes_written > 0 ? `hot-set hit rate ${(100 * r.hot_hit_rate).toFixed(1)}%` : "nothing spilled",
               `blocks ${r.blocks_ram} in RAM, ${r.blocks_disk} on disk`);
    if (r.spill_bytes_written > 0) parts.push(`spill read ${fmtBytes(r.spill_bytes_read)}, written ${fmtBytes(r.spill_bytes_written)}`);
  }
  parts.push(f.finished ? "finished" : "running");
  pane.node.querySelector(".stats").textContent = parts.join(" · ");
}

function fmtBytes(b) {
  return b >= 1 << 20 ? (b / (1 << 20)).toFixed(1) + " MiB" : b >= 1024 ? (b / 1024).toFixed(1) + " KiB" : b + " B";
}

// Per-layer bars: mean tokens kept per KV head against the policy's budget; then the pool.
// Built with the DOM and CSSOM: the page's CSP forbids inline style attributes.
function barRow(box, name, frac, markFrac, text) {
  const label = document.createElement("span");
  label.textContent = name;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("i");
  fill.style.width = (100 * Math.min(1, frac)).toFixed(2) + "%";
  bar.append(fill);
  if (markFrac !== null) {
    const mark = document.createElement("b");
    mark.style.left = (100 * Math.min(1, markFrac)).toFixed(2) + "%";
    bar.append(mark);
  }
  const value = document.createElement("span");
  value.textContent = text;
  box.append(label, bar, value);
}

function renderBars(pane) {
  const f = pane.frame, box = pane.node.querySelector(".bars");
  box.replaceChildren();
  const lc = layerCounts(pane);
  for (let l = 0; l < f.n_layer; l++) {
    const kept = lc[l].kept / f.n_head_kv, budget = f.budget[l];
    const full = Math.max(budget > 0 ? budget : 0, f.tokens_seen, 1);
    barRow(box, `layer ${l}`, kept / full, budget > 0 ? budget / full : null,
           `${kept.toFixed(0)} / ${budget > 0 ? budget : "all"} per head`);
  }
  const p = f.pool;
  barRow(box, "pool", p.bytes_used / Math.max(1, p.bytes_budget), null,
         `${fmtBytes(p.bytes_used)} / ${fmtBytes(p.bytes_budget)}`);
}

// Retrieval: hot-set hit rate (line) and spill bytes read per frame (bars) over time.
function renderChart(pane) {
  const canvas = pane.node.querySelector(".chart");
  // Only once something spilled: before that the hit rate and reads are all zero.
  if (!pane.history.length || !pane.history[pane.history.length - 1].written) return;
  canvas.hidden = false;
  const ctx = fitCanvas(canvas, 70);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const hs = pane.history, n = hs.length, w = canvas.width / Math.max(n, 2);
  let maxRead = 1;
  for (let i = 1; i < n; i++) maxRead = Math.max(maxRead, hs[i].read - hs[i - 1].read);
  ctx.fillStyle = css("--spilled");
  for (let i = 1; i < n; i++) {
    const d = (hs[i].read - hs[i - 1].read) / maxRead * 60;
    ctx.fillRect(i * w, 68 - d, Math.max(1, w - 1), d);
  }
  ctx.strokeStyle = css("--selected");
  ctx.beginPath();
  hs.forEach((s, i) => { const y = 68 - s.hit * 60; i ? ctx.lineTo(i * w, y) : ctx.moveTo(i * w, y); });
  ctx.stroke();
  ctx.fillStyle = css("--fg");
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(`hot-set hit rate (line, 0-100%) and spill bytes read per frame (bars, max ${fmtBytes(maxRead)})`, 4, 10);
}

function hover(pane, canvas, e) {
  const f = pane.frame;
  if (!f) return;
  const r = canvas.getBoundingClientRect();
  const x = (e.clientX - r.left) * canvas.width / r.width, y = (e.clientY - r.top) * canvas.height / r.height;
  const i = Math.floor(y / (ROW + GAP)), pos = Math.floor((x - LABEL) / ((canvas.width - LABEL) / Math.max(1, f.tokens_seen)));
  const tip = $("#tip");
  if (i < 0 || i >= f.n_layer * f.n_head_kv || pos < 0 || pos >= f.tokens_seen || !pane.cells[i]) {
    tip.hidden = true;
    return;
  }
  const cell = pane.cells[i], layer = Math.floor(i / f.n_head_kv);
  const inRuns = (runs) => { for (let j = 0; j < runs.length; j += 2) if (pos >= runs[j] && pos < runs[j] + runs[j + 1]) return j / 2; return -1; };
  let what = inRuns(cell.runs) >= 0 ? (pos < f.sink ? "sink" : pos >= f.window_from ? "window" : "kept") : "evicted";
  if (what === "evicted" && f.spill && layer >= f.spill.spill_layer0 && pos >= f.spill.spill_from && pos < f.spill.spill_to) what = "spilled to disk";
  let score = "";
  const s = cell.sel ? inRuns(cell.sel) : -1;
  if (s >= 0) { what += ", selected"; score = `\nblock score ${cell.ss[s].toFixed(4)}`; }
  tip.textContent = `${JSON.stringify(pane.tokens[pos] || "")}  position ${pos}\nlayer ${layer}, KV head ${i % f.n_head_kv}: ${what}${score}`;
  tip.style.left = e.clientX + 12 + "px";
  tip.style.top = e.clientY + 12 + "px";
  tip.hidden = false;
}

// Compare mode: per cell, positions kept by A only / B only / both / neither.
function renderDiff() {
  const [a, b] = state.panes;
  if (state.panes.length !== 2 || !a.frame || !b.frame || !a.compare) return;
  const fa = a.frame, fb = b.frame;
  if (fa.n_layer !== fb.n_layer || fa.n_head_kv !== fb.n_head_kv) return;
  $("#diff").hidden = false;
  const n = fa.n_layer * fa.n_head_kv, seen = Math.max(fa.tokens_seen, fb.tokens_seen);
  const canvas = $("#diff-canvas"), ctx = fitCanvas(canvas, n * (ROW + GAP));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scale = (canvas.width - LABEL) / Math.max(1, seen);
  let onlyA = 0, onlyB = 0;
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  for (let i = 0; i < n; i++) {
    const y = i * (ROW + GAP);
    ctx.fillStyle = css("--fg");
    ctx.fillText(`L${Math.floor(i / fa.n_head_kv)} H${i % fa.n_head_kv}`, 0, y + ROW / 2);
    if (!a.cells[i] || !b.cells[i]) continue;
    const ka = bitset(a.cells[i].runs, seen), kb = bitset(b.cells[i].runs, seen);
    let start = 0;
    const cls = (p) => (ka[p] ? 1 : 0) + (kb[p] ? 2 : 0);
    const colors = [css("--none"), css("--only-a"), css("--only-b"), css("--both")];
    for (let p = 1; p <= seen; p++) {
      if (p < seen && cls(p) === cls(start)) continue;
      ctx.fillStyle = colors[cls(start)];
      ctx.fillRect(LABEL + start * scale, y, Math.max(1, (p - start) * scale), ROW);
      start = p;
    }
    for (let p = 0; p < seen; p++) { if (ka[p] && !kb[p]) onlyA++; if (kb[p] && !ka[p]) onlyB++; }
  }
  $("#diff-summary").textContent = `${a.title}: ${onlyA} (position, head) pairs kept that ${b.title} dropped; ` +
    `${b.title}: ${onlyB} kept that ${a.title} dropped.`;
}

function bitset(runs, n) {
  const bits = new Uint8Array(n);
  for (let j = 0; j < runs.length; j += 2) bits.fill(1, runs[j], Math.min(n, runs[j] + runs[j + 1]));
  return bits;
}

// ------------------------------------------------------------------ feed and completions

async function follow(pane, query) {
  const ms = Math.min(2000, Math.max(10, Number($("#interval").value) || 100));
  const res = await api(`/v1/kv/stream?${query}&interval_ms=${ms}`, { signal: pane.abort.signal });
  if (!res.ok) throw new Error(await errorText(res));
  await readSSE(res, (ev, data) => {
    const obj = JSON.parse(data);
    if (ev === "end") { pane.feedEnd = obj.reason; return; }
    applyFrame(pane, obj);
  });
}

async function complete(pane, tag, policy) {
  const body = { prompt: $("#prompt").value, max_tokens: Number($("#max-tokens").value),
                 temperature: Number($("#temperature").value), stream: true, kv_policy: policy };
  const res = await api("/v1/completions", { method: "POST", signal: pane.abort.signal,
    headers: { "Content-Type": "application/json", "X-KV-View": tag }, body: JSON.stringify(body) });
  const out = pane.node.querySelector(".output");
  if (!res.ok) { out.textContent = await errorText(res); out.classList.add("error"); pane.done = true; return; }
  await readSSE(res, (ev, data) => {
    if (data === "[DONE]") return;
    const obj = JSON.parse(data);
    if (obj.choices && obj.choices.length) { pane.text += obj.choices[0].text; out.textContent = pane.text; }
  });
  pane.done = true;
}

function randomTag() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function run() {
  clearPanes();
  const compare = $("#compare").checked;
  const pickers = compare ? [$("#picker-a"), $("#picker-b")] : [$("#picker-a")];
  const jobs = pickers.map((fs, i) => {
    const policy = pickerValue(fs);
    const pane = newPane((compare ? "ABCD"[i] + ": " : "") + JSON.stringify(policy));
    pane.compare = compare;
    const tag = randomTag();
    // The feed first: it waits for the tagged sequence, so even its prefill is seen.
    const feed = follow(pane, "tag=" + tag + ($("#step").checked ? "&step=1" : "")).catch((e) => { if (e.name !== "AbortError") setStatus(e.message, true); });
    const gen = complete(pane, tag, policy);
    return Promise.all([feed, gen]);
  });
  setStatus("running...");
  $("#run").disabled = true;
  try { await Promise.all(jobs); setStatus("done"); } catch (e) { if (e.name !== "AbortError") setStatus(e.message, true); }
  $("#run").disabled = false;
}

async function watch() {
  const id = $("#seq-list").value;
  if (!id) return;
  clearPanes();
  const pane = newPane("sequence " + id);
  try { await follow(pane, "seq=" + encodeURIComponent(id)); setStatus(`sequence ${id}: ${pane.feedEnd || "ended"}`); }
  catch (e) { if (e.name !== "AbortError") setStatus(e.message, true); }
}

async function refreshSeqs() {
  try {
    const res = await api("/v1/kv");
    if (!res.ok) return;
    const kv = await res.json();
    const sel = $("#seq-list"), cur = sel.value;
    sel.innerHTML = '<option value="">-</option>';
    for (const s of kv.sequences) sel.add(new Option(`${s.id} (${s.policy}, ${s.tokens_seen} tokens)`, s.id));
    sel.value = cur && [...sel.options].some((o) => o.value === cur) ? cur : "";
  } catch (e) { /* the server may be restarting */ }
}

$("#run").addEventListener("click", run);
$("#watch").addEventListener("click", watch);
$("#compare").addEventListener("change", (e) => { $("#picker-b").hidden = !e.target.checked; });

(async function start() {
  try {
    await loadPolicies();
    setStatus("ready");
    state.ready = true;
    refreshSeqs();
    state.seqTimer = setInterval(refreshSeqs, 2000);
  } catch (e) {
    setStatus("cannot load the policies: " + e.message, true);
  }
})();
