// Real-browser test of the client library and the demo page: headless Chromium (Debian's
// package) driven by playwright-core. The Rust e2e test `browser` starts the real stack
// (both workers under wrangler dev) and runs this script with:
//   SNIPPET_ORIGIN  http://127.0.0.1:PORT of the snippet
//   CLIENT_TOKEN    a client JWT (read write publish), ADMIN_TOKEN an operator JWT
//   ARTIFACTS       a folder for the screenshot
// It asks the harness to restart the backend (`RESTART_BACKEND`) or to kill the snippet
// with SIGKILL and start it again (`RESTART_SNIPPET`) by printing the word, and waits for
// `RESTARTED` on stdin. Each check is a node:test test; the runner's summary is the verdict.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const { SNIPPET_ORIGIN: origin, CLIENT_TOKEN: token, ADMIN_TOKEN: admin, ARTIFACTS: artifacts } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Flags for a closed network: without the background-networking ones Chromium keeps
// trying Google's hosts; --no-sandbox because CI runs as root.
const ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

/** Asks the harness to restart `what` (BACKEND or SNIPPET) and waits until it is back. */
async function restart(what) {
  process.stdout.write(`RESTART_${what}\n`);
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error("the harness closed stdin before RESTARTED");
    if (value.trim() === "RESTARTED") return;
  }
}

let browser;
before(async () => {
  assert.ok(origin && token && admin, "SNIPPET_ORIGIN, CLIENT_TOKEN and ADMIN_TOKEN are set");
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
});
after(async () => {
  await browser?.close();
  stdin.close();
});

/** A fresh page (its own browser context) on the demo with `fragment`. */
async function demo(fragment) {
  const context = await browser.newContext({ viewport: { width: 420, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // A CSP violation is no page error, but Chromium reports it on the console.
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy/i.test(m.text())) errors.push(m.text());
  });
  await page.goto(`${origin}/${fragment}`);
  return { page, errors };
}

const state = (page) => page.locator("#state").textContent();
const waitOpen = (page) =>
  page.waitForFunction(() => document.querySelector("#state")?.textContent?.includes("open"), null, { timeout: 20_000 });

/** The message bodies a page lists, in order. */
// Each <li> carries its message's text in data-body.
const bodies = (page) => page.$$eval("#messages li", (lis) => lis.map((li) => li.dataset.body));

async function say(page, name, text) {
  await page.fill("#name", name);
  await page.fill("#text", text);
  await page.click("#send");
}

/** Waits until `page` lists every one of `texts`. */
async function waitFor(page, texts, timeout = 20_000) {
  await page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll("#messages li")].map((li) => li.dataset.body);
      return want.every((w) => got.includes(w));
    },
    texts,
    { timeout },
  );
}

test("a page without a token is refused and says so", async () => {
  const { page } = await demo("");
  await page.waitForFunction(() => /token/i.test(document.querySelector("#banner")?.textContent ?? ""), null, {
    timeout: 10_000,
  });
  assert.match(await page.locator("#banner").textContent(), /token/i);
  assert.doesNotMatch(await state(page), /open/);
  await page.context().close();
});

test("a page with a forged token is refused by the snippet, and the page shows its reason", async () => {
  const forged = token.slice(0, -4) + (token.endsWith("AAAA") ? "BBBB" : "AAAA");
  const { page } = await demo(`#token=${forged}`);
  await page.waitForFunction(() => /failed/.test(document.querySelector("#state")?.textContent ?? ""), null, {
    timeout: 15_000,
  });
  const banner = await page.locator("#banner").textContent();
  assert.match(banner, /401|unauthori[sz]ed|signature|token/i, banner);
  await page.context().close();
});

test("the demo's files are served under a policy with no inline code, and every answer says nosniff", async () => {
  for (const path of ["/", "/demo.js", "/demo.css", "/client.js", "/help", "/__stats", "/nowhere"]) {
    const res = await fetch(`${origin}${path}`);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff", path);
  }
  const csp = (await fetch(`${origin}/`)).headers.get("content-security-policy") ?? "";
  assert.match(csp, /script-src 'self';/, csp);
  assert.match(csp, /style-src 'self';/, csp);
  assert.doesNotMatch(csp, /unsafe/, csp);
});

test("a stored message with an impossible time (at = 1e20) does not break the history", async () => {
  const tag = `h${Date.now() % 100000}`;
  const { page, errors } = await demo(`#token=${token}`);
  await waitOpen(page);
  // Stored the way any page with a write token could, over this origin's /rpc.
  const replies = await page.evaluate(
    async ({ token, tag }) => {
      const sql = async (sql, params = []) => {
        const res = await fetch("/rpc", {
          method: "POST",
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ jsonrpc: "2.0", method: "sql", params: { sql, params }, id: 1 }),
        });
        return { status: res.status, reply: await res.json() };
      };
      const insert = "insert into demo_messages(name, body, at) values (?, ?, ?)";
      return [
        await sql("create table if not exists demo_messages(id integer primary key autoincrement, name text not null, body text not null, at integer not null)"),
        await sql(insert, ["mallory", `${tag}-before`, Date.now()]),
        await sql("insert into demo_messages(name, body, at) values (?, ?, 1e20)", ["mallory", `${tag}-bad`]),
        await sql(insert, ["mallory", `${tag}-after`, Date.now()]),
      ];
    },
    { token, tag },
  );
  for (const r of replies) assert.ok(r.status === 200 && !r.reply.error, JSON.stringify(r));
  await page.reload();
  await waitOpen(page);
  await waitFor(page, [`${tag}-before`, `${tag}-bad`, `${tag}-after`]);
  const hasTime = (body) => page.$eval(`#messages li[data-body="${body}"]`, (li) => li.querySelector("time") !== null);
  assert.equal(await hasTime(`${tag}-before`), true);
  assert.equal(await hasTime(`${tag}-bad`), false, "shown without the time it cannot have");
  assert.doesNotMatch((await page.locator("#banner").textContent()) ?? "", /history/);
  assert.deepEqual(errors, [], "no uncaught errors, no CSP violation");
  await page.context().close();
});

test("two pages talk through the snippet in order, lose nothing across a backend restart and a killed snippet, and the stats show one upstream", async () => {
  const tag = `t${Date.now() % 100000}`;
  const a = await demo(`#token=${token}&stats=${admin}`);
  const b = await demo(`#token=${token}&stats=${admin}`);
  await waitOpen(a.page);
  await waitOpen(b.page);

  // In order: each page's own messages arrive at the other in the order they were sent.
  const fromA = Array.from({ length: 5 }, (_, i) => `${tag}-a${i}`);
  const fromB = Array.from({ length: 5 }, (_, i) => `${tag}-b${i}`);
  for (let i = 0; i < 5; i++) {
    await say(a.page, "alice", fromA[i]);
    await say(b.page, "bob", fromB[i]);
  }
  await waitFor(b.page, fromA);
  await waitFor(a.page, fromB);
  for (const [page, want] of [[b.page, fromA], [a.page, fromB]]) {
    const got = (await bodies(page)).filter((x) => want.includes(x));
    assert.deepEqual(got, want, "in the order sent");
  }

  // One upstream for the tenant, however many pages.
  const stats = await (await fetch(`${origin}/__stats`, { headers: { Authorization: `Bearer ${admin}` } })).json();
  assert.equal(stats.upstreamsOpen, 1, JSON.stringify(stats));
  assert.ok(stats.activeClients >= 2, `activeClients ${stats.activeClients}`);
  const listed = stats.upstreams.filter((u) => u.tenant === "default");
  assert.equal(listed.length, 1);
  assert.ok(listed[0].streams >= 2, JSON.stringify(listed));
  // The page shows the same figures, and its heartbeat's RTT.
  await b.page.waitForFunction(
    () =>
      Number(document.querySelector('[data-stat="active-clients"]')?.textContent) >= 2 &&
      /ms/.test(document.querySelector("#rtt")?.textContent ?? ""),
    null,
    { timeout: 15_000 },
  );

  // The stats panel charts this isolate's last minutes (plain SVG): at least three polls
  // drawn, one upstream for both pages.
  await b.page.waitForFunction(() => Number(document.querySelector('[data-chart="rate"]')?.dataset.points) >= 3, null, {
    timeout: 15_000,
  });
  for (const key of ["rate", "batch", "rtt", "upstreams"]) {
    const points = await b.page.$eval(`[data-chart="${key}"] polyline`, (p) => p.getAttribute("points").trim().split(" "));
    assert.ok(points.length >= 3 && points.every((xy) => /^-?[\d.]+,-?[\d.]+$/.test(xy)), `${key}: ${points}`);
  }
  assert.match(await b.page.locator('[data-chart="upstreams"] figcaption').textContent(), /upstreams: 1\b/);

  mkdirSync(artifacts, { recursive: true });
  await b.page.screenshot({ path: join(artifacts, "demo.png"), fullPage: true });
  await b.page.locator("#stats").screenshot({ path: join(artifacts, "stats.png") });

  // The backend's runtime restarts mid-session, then the snippet is killed (SIGKILL) and
  // started again. A keeps sending throughout. With sessions (PROTOCOL.md §14) nothing is
  // lost and nothing runs twice: after the backend restart the snippet re-attaches the
  // pages' sessions on its new upstream (their sockets stay open); after the snippet's
  // death the pages reconnect and resume. One message is sent while A is disconnected: it
  // waits in the client's queue.
  const sent = [];
  const sendSome = async (label, n) => {
    for (let i = 0; i < n; i++) {
      sent.push(`${tag}-${label}${i}`);
      await say(a.page, "alice", sent.at(-1));
      await new Promise((r) => setTimeout(r, 150));
    }
  };
  const backend = restart("BACKEND");
  await sendSome("r", 12); // "r": B already said b0…b4
  await backend;
  const snippet = restart("SNIPPET");
  await a.page.waitForFunction(() => !/\bopen\b/.test(document.querySelector("#state")?.textContent ?? ""), null, {
    timeout: 20_000,
  });
  sent.push(`${tag}-queued`);
  await say(a.page, "alice", sent.at(-1));
  await snippet;
  await waitOpen(a.page);
  await waitOpen(b.page);
  await sendSome("k", 6);
  await waitFor(b.page, sent, 30_000);

  const failedOnA = await a.page.$$eval("#messages li.failed", (lis) => lis.map((li) => li.dataset.body));
  assert.deepEqual(failedOnA, [], "no message failed on A");
  // Each insert ran exactly once: counted in the database, not on a page (which shows a
  // row once however often it arrives).
  const res = await fetch(`${origin}/rpc`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "sql",
      params: { sql: "select body, count(*) from demo_messages where body like ? group by body", params: [`${tag}-%`] } }),
  });
  const { result } = await res.json();
  const counts = Object.fromEntries(result.rows);
  for (const text of sent) assert.equal(counts[text], 1, `${text} stored ${counts[text] ?? 0} times`);
  assert.deepEqual(a.errors, [], "no uncaught errors on page A");
  assert.deepEqual(b.errors, [], "no uncaught errors on page B");
  await a.page.context().close();
  await b.page.context().close();
});
