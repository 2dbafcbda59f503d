// Drives sgraf-cli serve's page in Debian's chromium: load /?q=..., answer
// the access-token prompt (a wrong token first, then the right one), check
// the results appear, open one, check its region boxes are drawn and a word
// highlights its regions, save a screenshot, and check a reload does not ask
// again. Usage: SGRAF_TEST_TOKEN=TOKEN node test.mjs BASE_URL QUERY SCREENSHOT
// (without SGRAF_TEST_TOKEN the server is expected to need none).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, query, shot] = process.argv.slice(2);
if (!base || !query || !shot) {
  console.error("usage: node test.mjs BASE_URL QUERY SCREENSHOT");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "sgraf-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1100, height: 800 },
});
const fail = (msg) => { throw new Error(msg); };
try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const token = process.env.SGRAF_TEST_TOKEN || "";
  await page.goto(base + "/?q=" + encodeURIComponent(query));
  if (token) {
    // The page asks for the token; a wrong one is refused and asked again.
    await page.waitForSelector("#login.open", { timeout: 30000 });
    if ((await page.locator(".card.result").count()) !== 0) fail("results shown before the token");
    await page.fill("#token", "not-" + token);
    await page.click("#login-go");
    await page.waitForSelector("#login-msg.bad", { timeout: 10000 });
    if (!(await page.isVisible("#login.open"))) fail("a wrong token closed the prompt");
    await page.screenshot({ path: shot.replace(/\.png$/, "") + "-token.png" });
    await page.fill("#token", token);
    await page.click("#login-go");
    await page.waitForSelector("#login.open", { state: "hidden", timeout: 10000 });
  }
  await page.waitForSelector(".card.result", { timeout: 30000 });
  const names = await page.locator(".card .name").evaluateAll((ns) => ns.map((n) => n.title));
  if (names.some((f) => f.startsWith("/"))) fail(`absolute paths shown: ${names}`);
  await page.waitForFunction(() => /\d+ images?/.test(document.getElementById("info").textContent), null, { timeout: 10000 });
  const n = await page.locator(".card.result").count();
  if (n < 2) fail(`expected results, found ${n}`);
  if ((await page.inputValue("#q")) !== query) fail("the query box does not hold ?q=");
  const scores = await page.locator(".card .score").allTextContents();
  const nums = scores.map(Number);
  if (nums.some((s, i) => i > 0 && s > nums[i - 1])) fail(`scores not in order: ${scores}`);
  // Thumbnails load for photos.
  const photo = page.locator(".card.result img").first();
  await photo.waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll(".card img")].every((i) => i.complete && i.naturalWidth > 0));
  await page.locator(".card.result", { has: page.locator("img") }).first().click();
  await page.waitForSelector("#stage svg rect.box", { timeout: 30000 });
  const boxes = await page.locator("#stage svg rect.box").count();
  if (boxes < 1) fail("no region boxes drawn");
  await page.waitForFunction(() => { const i = document.querySelector("#stage img"); return i && i.complete && i.naturalWidth > 0; });
  // Hovering a word changes which regions are shaded.
  const words = page.locator("#words .word");
  if ((await words.count()) < 3) fail("the query's words are not shown");
  const fills = () => page.locator("#stage svg rect.box").evaluateAll((rs) => rs.map((r) => r.getAttribute("fill")).join("|"));
  const before = await fills();
  await words.nth(1).hover();
  const after = await fills();
  if (!(await words.nth(1).evaluate((w) => w.classList.contains("on")))) fail("hovered word not highlighted");
  if (before === after) console.warn("note: hovering another word shaded the same regions");
  await words.nth(2).click();
  const strongest = await page.locator('#stage svg rect.box[stroke="#dc2626"]').count();
  if (strongest < 1) fail("no strongest region outlined");
  if (errors.length) fail("page errors: " + errors.join("; "));
  await page.screenshot({ path: shot });
  // A reload in the same tab does not ask again (the token is kept).
  await page.reload();
  await page.waitForSelector(".card.result", { timeout: 30000 });
  if (await page.isVisible("#login.open")) fail("the token was asked for again after a reload");
  await page.waitForFunction(() => [...document.querySelectorAll(".card img")].every((i) => i.complete && i.naturalWidth > 0));
  if (errors.length) fail("page errors: " + errors.join("; "));
  console.log(`ok: ${n} results, ${boxes} boxes${token ? ", token prompt" : ""}; screenshot ${shot}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
