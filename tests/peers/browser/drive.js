// drive.js: the dashboard in a real browser (Debian's chromium, headless, through puppeteer-core)
// for tests/integration/test_dashboard.py. Usage:
//   node drive.js user  URL TOKEN OUTDIR   sign in, submit a job from the form, watch its progress
//                                          bar move and its image appear
//   node drive.js ops   URL TOKEN OUTDIR   sign in as an operator; prints "READY" when the fleet
//                                          view shows, then watches the worker count go 0 -> N -> 0
// Prints one JSON line with what it saw, and the screenshot paths; exits 1 on a failure.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const puppeteer = require("puppeteer-core");

const [mode, url, token, outdir] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60000;

async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "pingvas-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM, headless: true, userDataDir: profile,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  return { browser, profile };
}

async function signIn(page, errors) {
  page.on("pageerror", (e) => errors.push("pageerror: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
  await page.goto(url + "/", { waitUntil: "load" });
  await page.type("#token", token);
  await page.keyboard.press("Tab"); // the keyboard alone reaches the button
  await page.keyboard.press("Enter");
  await page.waitForSelector("#who:not([hidden])", { timeout: TIMEOUT });
  await page.waitForFunction(() => document.getElementById("live").textContent === "live",
    { timeout: TIMEOUT });
}

async function shot(page, name, shots) {
  const p = path.join(outdir, name);
  await page.screenshot({ path: p, fullPage: true });
  shots.push(p);
}

async function userFlow(page, out) {
  await page.waitForFunction(() => document.getElementById("credits-available").textContent !== "-",
    { timeout: TIMEOUT });
  out.credits_before = +(await page.$eval("#credits-available", (e) => e.textContent));
  await page.type("#f-prompt", "a lighthouse at dawn, from the dashboard");
  await page.$eval("#f-steps", (e) => { e.value = ""; });
  await page.type("#f-steps", "30");
  // Every value each job's progress bar shows until its image is there, by job id, recorded in
  // the page from before the submit: no value between two looks is lost, and none shown before
  // this script learns the job's id either (on a loaded machine the job can run its 1.5 s
  // before the id is read back).
  await page.evaluate(() => {
    window.__seen = {};
    const look = () => {
      for (const li of document.querySelectorAll("#jobs li[data-id]")) {
        const p = li.querySelector("progress");
        if (p && p.value > 0) (window.__seen[li.dataset.id] ||= []).push(p.value);
      }
    };
    new MutationObserver(look).observe(document.getElementById("jobs"),
      { subtree: true, childList: true, attributes: true });
  });
  await page.click("#submit");
  await page.waitForSelector("li.job", { timeout: TIMEOUT });
  out.job_id = await page.$eval("li.job", (e) => e.dataset.id);
  await page.waitForFunction((id) => (window.__seen[id] || []).some((v) => v > 0 && v < 100),
    { timeout: TIMEOUT }, out.job_id);
  await shot(page, "user-progress.png", out.screenshots);
  await page.waitForFunction((id) => {
    const img = document.querySelector(`li[data-id="${id}"] img`);
    return img && img.complete && img.naturalWidth > 0;
  }, { timeout: TIMEOUT }, out.job_id);
  out.progress_seen = await page.evaluate((id) => window.__seen[id] || [], out.job_id);
  out.status = await page.$eval(`li[data-id="${out.job_id}"]`, (e) => e.dataset.status);
  out.image_width = await page.$eval(`li[data-id="${out.job_id}"] img`, (e) => e.naturalWidth);
  await page.waitForFunction(() => [...document.querySelectorAll("#ledger td")]
    .some((td) => td.textContent === "charge"), { timeout: TIMEOUT });
  out.credits_after = +(await page.$eval("#credits-available", (e) => e.textContent));
  out.ledger_rows = await page.$$eval("#ledger tr", (r) => r.length);
  await shot(page, "user-done.png", out.screenshots);
  await page.setViewport({ width: 390, height: 844, isMobile: true }); // a phone: reloads, and
  // the session's token signs in again
  await page.waitForFunction((id) => {
    const img = document.querySelector(`li[data-id="${id}"] img`);
    return img && img.complete && img.naturalWidth > 0;
  }, { timeout: TIMEOUT }, out.job_id);
  await shot(page, "user-phone.png", out.screenshots);
}

async function opsFlow(page, out) {
  await page.waitForSelector("#ops-view:not([hidden])", { timeout: TIMEOUT });
  const workers = () => page.$eval("#worker-count", (e) => +e.textContent);
  await page.waitForFunction(() => +document.getElementById("worker-count").textContent === 0,
    { timeout: TIMEOUT });
  out.workers_at_start = await workers();
  await page.evaluate(() => {
    window.__counts = [];
    const look = () => window.__counts.push(+document.getElementById("worker-count").textContent);
    new MutationObserver(look).observe(document.getElementById("worker-count"),
      { subtree: true, childList: true, characterData: true });
  });
  console.log("READY"); // the test submits jobs now
  await page.waitForFunction(() => window.__counts.some((c) => c > 0), { timeout: TIMEOUT });
  await page.waitForFunction(() => document.querySelectorAll("#chart path").length === 2 &&
    document.querySelectorAll("#workers tr").length > 0, { timeout: TIMEOUT });
  try { // the picture is better with a worker at work; it is not what the test checks
    await page.waitForFunction(() => [...document.querySelectorAll("#workers td")]
      .some((td) => td.textContent === "busy"), { timeout: 10000, polling: "mutation" });
    out.busy_seen = true;
  } catch (e) { out.busy_seen = false; }
  await shot(page, "ops-busy.png", out.screenshots);
  await page.waitForFunction(() => window.__counts.some((c) => c > 0) &&
    +document.getElementById("worker-count").textContent === 0, { timeout: TIMEOUT });
  out.counts = await page.evaluate(() => window.__counts);
  out.max_workers = Math.max(...out.counts);
  out.scaling_marks = await page.$$eval("#chart line[stroke-dasharray]", (l) => l.length);
  out.failures = await page.$$eval("#failures li", (l) => l.map((x) => x.textContent));
  out.cost_shown = await page.$eval("#cost", (e) => !e.hidden);
  await shot(page, "ops-idle.png", out.screenshots);
}

(async () => {
  const out = { mode, screenshots: [], errors: [] };
  const { browser, profile } = await launch();
  let ok = false;
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    await signIn(page, out.errors);
    if (mode === "user") await userFlow(page, out); else await opsFlow(page, out);
    ok = true;
  } catch (e) {
    out.failure = String(e && e.stack || e);
    try {
      const pages = await browser.pages();
      if (pages.length) await shot(pages[pages.length - 1], mode + "-failure.png", out.screenshots);
    } catch (e2) { /* the failure above is what matters */ }
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(out));
  process.exit(ok ? 0 : 1);
})();
