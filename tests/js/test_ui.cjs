// test_ui.cjs - the KV view in a real browser (Debian's chromium driven by puppeteer-core).
//
// Starts kvserve on kjv-tiny with an API key on a free port, opens the page, and checks:
// the key prompt (a wrong key is refused and asked again, the right one works, no URL ever
// carries it); a passkey prompt under `pyramid` and then `retrieval`: the output that
// appears equals what the API returns for the same request, the grid's kept and evicted
// cells per layer equal GET /v1/kv's final state of that sequence, and (in step mode) the
// view showed every decode step; compare mode shows both outputs and the difference of
// the kept sets; every request went to the server and nowhere else. Screenshots go into the
// build directory (KVSERVE_BUILD_DIR). Skips (exit 77) only when chromium is not installed.
"use strict";

const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const CHROMIUM = process.env.KVSERVE_CHROMIUM || "/usr/bin/chromium";
const BIN = process.env.KVSERVE_BIN;
const SHARED = process.env.KVSERVE_SHARED || path.join(__dirname, "..", "..", "..", "shared");
const SRC = process.env.KVSERVE_SRC || path.join(__dirname, "..", "..");
const OUT = process.env.KVSERVE_BUILD_DIR || os.tmpdir();
const KEY = "ui-test-key-" + process.pid;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

function modelPath() {
  for (const p of [path.join(SRC, "models", "kjv-tiny-q8_0.gguf"),
                   path.join(SHARED, "models", "kjv-tiny", "kjv-tiny-q8_0.gguf")])
    if (fs.existsSync(p)) return p;
  throw new Error("kjv-tiny not found");
}

// The passkey prompt of ../shared/models/kjv-tiny/README.md: held-out prose with the needle.
function passkeyPrompt(words, depth, key) {
  const text = fs.readFileSync(path.join(SHARED, "models", "kjv-tiny", "heldout-public.txt"), "utf8")
    .split(/\s+/).filter(Boolean).slice(200, 200 + words);
  const at = Math.floor(text.length * depth);
  const needle = `The pass key is ${key}. Remember it. ${key} is the pass key.`;
  return [...text.slice(0, at), needle, ...text.slice(at)].join(" ") + " What is the pass key? The pass key is";
}

async function startServer(dir, port) {
  const conf = path.join(dir, "kvserve.toml");
  fs.writeFileSync(conf, `[server]\nhost = "127.0.0.1"\nport = ${port}\napi_key = "${KEY}"\nthreads = 1\n` +
    `[model]\npath = "${modelPath()}"\nctx = 4096\n[kvcache]\nmemory_mb = 64\n` +
    `[kvcache.retrieval]\nspill_dir = "${path.join(dir, "spill")}"\n`);
  const proc = spawn(BIN, ["serve", "--config", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  proc.stderr.on("data", (d) => { log += d; });
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      if (r.ok) return { proc, log: () => log };
    } catch (e) { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill("SIGKILL");
  throw new Error("kvserve did not start: " + log);
}

async function api(base, p, body) {
  const opts = { headers: { Authorization: "Bearer " + KEY } };
  if (body) Object.assign(opts, { method: "POST", body: JSON.stringify(body),
                                  headers: { Authorization: "Bearer " + KEY, "Content-Type": "application/json" } });
  const r = await fetch(base + p, opts);
  assert.equal(r.status, 200, `${p}: ${r.status}`);
  return r.json();
}

// Sets a picker's policy and parameter fields.
async function setPolicy(page, picker, name, params) {
  await page.select(`${picker} select.policy`, name);
  for (const [k, v] of Object.entries(params)) {
    const sel = `${picker} [data-param="${k}"]`;
    await page.$eval(sel, (el, val) => { el.value = String(val); }, v);
  }
}

async function runAndWait(page) {
  await page.click("#run");
  await page.waitForFunction(() => kvView.panes.length > 0 && kvView.panes.every((p) => p.done && p.feedEnd),
                             { timeout: 120000 });
  return page.evaluate(() => kvView.panes.map((p) => ({
    seq: p.seq, text: p.text, frames: p.frames, genSeen: p.genSeen, feedEnd: p.feedEnd,
    layers: kvView.layerCounts(p), seen: p.frame.tokens_seen, heads: p.frame.n_head_kv,
    policy: p.frame.policy, generated: p.frame.generated_tokens,
    gridKept: p.node.querySelector(".grid").dataset.kept,
  })));
}

// The grid (per layer, summed over KV heads) against GET /v1/kv's final state of the sequence.
async function checkCounts(base, pane, expectEvictions) {
  const kv = await api(base, "/v1/kv");
  const fin = kv.finished.find((s) => s.id === pane.seq);
  assert.ok(fin, `sequence ${pane.seq} is not among /v1/kv's finished ones`);
  assert.equal(fin.policy, pane.policy);
  assert.equal(fin.tokens_seen, pane.seen, "tokens seen");
  let evicted = 0;
  fin.tokens_kept_per_layer.forEach((kept, l) => {
    assert.equal(pane.layers[l].kept, kept, `layer ${l}: kept cells`);
    assert.equal(pane.layers[l].evicted, fin.tokens_seen * pane.heads - kept - pane.layers[l].spilled,
                 `layer ${l}: evicted cells`);
    evicted += pane.layers[l].evicted;
  });
  if (expectEvictions) assert.ok(evicted > 0, "the policy evicted nothing: the check would be vacuous");
  else assert.equal(evicted, 0);
}

// The view changed during decode. In step mode the sequence waits for the view after every
// step, so the page must have shown every count of generated tokens before the last.
function checkLive(pane) {
  const seen = new Set(pane.genSeen);
  assert.ok(pane.generated > 2, "too short to watch");
  for (let g = 1; g < pane.generated; g++)
    assert.ok(seen.has(g), `no frame with ${g} generated tokens (${[...seen]})`);
}

// Hovering a retrieval cell inside a block selected in the last step shows the token, its
// position, the state and the block's score.
async function checkHover(page) {
  const at = await page.evaluate(() => {
    const pane = kvView.panes[0], f = pane.frame, canvas = pane.node.querySelector(".grid");
    const i = 2 * f.n_head_kv; // layer 2, head 0: sparse by default (dense_layers = 2)
    const cell = pane.cells[i], pos = cell.sel[0] + 5;
    const r = canvas.getBoundingClientRect(), sx = r.width / canvas.width, sy = r.height / canvas.height;
    const x = 44 + (pos + 0.5) * (canvas.width - 44) / f.tokens_seen, y = i * 15 + 6;
    return { x: r.left + x * sx, y: r.top + y * sy, pos, token: pane.tokens[pos], score: cell.ss[0] };
  });
  await page.mouse.move(at.x, at.y);
  const tip = await page.$eval("#tip", (el) => ({ hidden: el.hidden, text: el.textContent }));
  assert.ok(!tip.hidden, "the hover tip shows");
  assert.ok(tip.text.includes(`position ${at.pos}`), tip.text);
  assert.ok(tip.text.includes(JSON.stringify(at.token)), tip.text);
  assert.ok(tip.text.includes("layer 2, KV head 0: kept, selected"), tip.text);
  assert.ok(tip.text.includes(`block score ${at.score.toFixed(4)}`), tip.text);
}

async function main() {
  if (!fs.existsSync(CHROMIUM)) {
    console.log(`SKIP: ${CHROMIUM} is not installed (apt-get install chromium; scripts/setup.sh does it)`);
    process.exit(77);
  }
  const puppeteer = require("puppeteer-core");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvserve-ui-"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = await startServer(dir, port);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           `--user-data-dir=${path.join(dir, "chromium")}`],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1500, height: 1000 });
    const urls = [];
    page.on("request", (r) => urls.push(r.url()));
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    // Console errors other than the expected 401s (CSP violations, failed loads, ...).
    page.on("console", (m) => { if (m.type() === "error" && !/401/.test(m.text())) pageErrors.push(m.text()); });

    // The API key: asked for, a wrong one refused and asked again, the right one works.
    await page.goto(base + "/", { waitUntil: "load" });
    await page.waitForSelector("#key-dialog[open]");
    await page.type("#key-input", "wrong-key");
    await page.click("#key-ok");
    await page.waitForFunction(() => document.querySelector("#key-reason").textContent.includes("refused") &&
                               document.querySelector("#key-dialog").open);
    await page.type("#key-input", KEY);
    await page.click("#key-ok");
    await page.waitForFunction(() => kvView.ready === true);
    const names = await page.$$eval("#picker-a select.policy option", (o) => o.map((x) => x.value));
    // the picker offers exactly the registered policies, in registry order
    const reg = await (await fetch(`${base}/v1/kv/policies`, {headers: {Authorization: `Bearer ${KEY}`}})).json();
    assert.deepEqual(names, reg.data.map((p) => p.name));

    const prompt = passkeyPrompt(330, 0.35, "48213");
    await page.$eval("#prompt", (el, p) => { el.value = p; }, prompt);
    await page.$eval("#max-tokens", (el) => { el.value = "300"; });
    await page.$eval("#interval", (el) => { el.value = "10"; });

    const runs = {
      pyramid: { budget: 48, window: 8 },
      retrieval: { block_tokens: 16, top_k: 4, window: 64, n_sink: 4 },
    };
    const results = {};
    for (const [name, params] of Object.entries(runs)) {
      await setPolicy(page, "#picker-a", name, params);
      // pyramid step by step (every decode step shown), retrieval at the normal refresh
      if ((await page.$eval("#step", (el) => el.checked)) !== (name === "pyramid")) await page.click("#step");
      const [pane] = await runAndWait(page);
      assert.equal(pane.feedEnd, "finished");
      assert.ok(pane.text.length > 0, `${name}: no output`);
      const direct = await api(base, "/v1/completions", { prompt, max_tokens: 300, temperature: 0,
                                                          kv_policy: Object.assign({ name }, params) });
      assert.equal(pane.text, direct.choices[0].text, `${name}: the page's output differs from the API's`);
      await checkCounts(base, pane, name === "pyramid");
      if (name === "pyramid") checkLive(pane);
      const shown = await page.$eval(".output", (el) => el.textContent);
      assert.equal(shown, pane.text);
      if (name === "retrieval") await checkHover(page);
      await page.screenshot({ path: path.join(OUT, `ui-${name}.png`), fullPage: true });
      results[name] = pane;
      console.log(`${name}: seq ${pane.seq}, ${pane.frames} frames, kept/layer ` +
                  pane.layers.map((l) => l.kept).join(",") + `, output ${JSON.stringify(pane.text.slice(0, 40))}`);
    }

    // Compare mode: both outputs and where the kept sets differ.
    await page.click("#compare");
    await setPolicy(page, "#picker-a", "pyramid", runs.pyramid);
    await setPolicy(page, "#picker-b", "retrieval", runs.retrieval);
    await page.$eval("#max-tokens", (el) => { el.value = "8"; });
    const both = await runAndWait(page);
    assert.equal(both.length, 2);
    assert.ok(both.every((p) => p.text.length > 0));
    await page.waitForFunction(() => !document.querySelector("#diff").hidden);
    const summary = await page.$eval("#diff-summary", (el) => el.textContent);
    const onlyB = Number(/: (\d+) kept that/.exec(summary)[1]);
    assert.ok(onlyB > 0, "retrieval keeps what pyramid dropped: " + summary);
    for (const p of both) await checkCounts(base, p, p.policy === "pyramid");
    await page.screenshot({ path: path.join(OUT, "ui-compare.png"), fullPage: true });

    // Nothing but this server was contacted, and no URL carried the key.
    for (const u of urls) {
      assert.ok(u.startsWith(base + "/"), "request outside the server: " + u);
      assert.ok(!u.includes(KEY), "the key went into a URL: " + u);
    }
    assert.deepEqual(pageErrors, []);
    console.log(`ok: ${urls.length} requests, all to ${base}; screenshots in ${OUT}`);
  } finally {
    await browser.close();
    server.proc.kill("SIGTERM");
    await new Promise((r) => server.proc.on("exit", r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });
module.exports = { freePort, startServer, passkeyPrompt, setPolicy, runAndWait, KEY, CHROMIUM };
