// readme_shot.cjs - the README's picture of the view (docs/img/kv-view.png): compare mode,
// pyramid vs retrieval on one ~1900-token passkey prompt (4x kjv-tiny's trained context).
// Not a test; run by hand:  KVSERVE_BIN=build/kvserve node tests/js/readme_shot.cjs [OUT.png]
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const puppeteer = require("puppeteer-core");
const t = require("./test_ui.cjs");

async function main() {
  const out = process.argv[2] || path.join(__dirname, "..", "..", "docs", "img", "kv-view.png");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvserve-shot-"));
  const port = await t.freePort();
  const server = await t.startServer(dir, port);
  const browser = await puppeteer.launch({
    executablePath: t.CHROMIUM, headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           `--user-data-dir=${path.join(dir, "chromium")}`],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1600, height: 1000 });
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForSelector("#key-dialog[open]");
    await page.type("#key-input", t.KEY);
    await page.click("#key-ok");
    await page.waitForFunction(() => kvView.ready === true);
    await page.$eval("#prompt", (el, p) => { el.value = p; }, t.passkeyPrompt(1450, 0.3, "71946"));
    await page.$eval("#max-tokens", (el) => { el.value = "8"; });
    await page.click("#compare");
    await t.setPolicy(page, "#picker-a", "pyramid", { budget: 256 });
    await t.setPolicy(page, "#picker-b", "retrieval", { top_k: 16, window: 256, dense_layers: 0, chunk: 128 });
    const panes = await t.runAndWait(page);
    for (const p of panes) console.log(`${p.policy}: ${p.seen} tokens seen, output ${JSON.stringify(p.text)}`);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: out, fullPage: true });
    console.log("wrote " + out);
  } finally {
    await browser.close();
    server.proc.kill("SIGTERM");
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
