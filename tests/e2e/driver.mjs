// Drives Debian's headless Chromium (never a downloaded browser) through playwright-core.
//
// Protocol: one JSON command per stdin line, one JSON answer per stdout line.
//   {"cmd": "visit", "url": "...", "timeoutMs": 15000, "resultVar": "__e2eResult"}
//     -> {"ok": true, "loaded": bool, "error": str|null, "initialized": [names],
//         "requests": [{"url", "method", "status", "failure"}], "console": [text]}
//   {"cmd": "close"} -> {"ok": true} and exit.
// One browser context serves every visit, so the browser HTTP cache carries over between
// visits exactly as it does between page loads of a real user.
import { createInterface } from 'node:readline'
import { chromium } from 'playwright-core'

const executablePath = process.env.CHROMIUM_BIN || '/usr/bin/chromium'

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

let browser
try {
  browser = await chromium.launch({
    executablePath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // No external network: every name but loopback fails to resolve at once.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  })
} catch (err) {
  reply({ ok: false, fatal: `cannot launch ${executablePath}: ${err.message}` })
  process.exit(2)
}
// A test's TLS proxy has a self-signed certificate.
const context = await browser.newContext({ ignoreHTTPSErrors: true })
const page = await context.newPage()

let requests = []
let consoleLines = []
page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), status: null, failure: null }))
page.on('requestfinished', async (r) => {
  const entry = requests.find((e) => e.url === r.url() && e.status === null && e.failure === null)
  const response = await r.response().catch(() => null)
  if (entry && response) entry.status = response.status()
})
page.on('requestfailed', (r) => {
  const entry = requests.find((e) => e.url === r.url() && e.status === null && e.failure === null)
  if (entry) entry.failure = r.failure()?.errorText ?? 'failed'
})
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`))
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`))

async function visit({ url, timeoutMs = 15000, resultVar = '__e2eResult' }) {
  requests = []
  consoleLines = []
  await page.goto(url, { waitUntil: 'load', timeout: timeoutMs })
  // The page sets window[resultVar] once analytics settles (page/index.html: __e2eResult once
  // AnalyticsBrowser.load settles; demo/page/index.html: demoResult once ready() resolves).
  await page.waitForFunction((name) => window[name] !== undefined, resultVar, { timeout: timeoutMs })
  await page.waitForLoadState('networkidle', { timeout: timeoutMs }).catch(() => {})
  const result = await page.evaluate((name) => ({
    initialized: window.__e2eInitialized || [],
    ...window[name],
  }), resultVar)
  return { ok: true, ...result, requests, console: consoleLines }
}

const rl = createInterface({ input: process.stdin })
reply({ ok: true, ready: true, version: browser.version() })
for await (const line of rl) {
  if (!line.trim()) continue
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    reply({ ok: false, error: `bad command line (not JSON): ${line}` })
    continue
  }
  if (cmd.cmd === 'close') break
  if (cmd.cmd !== 'visit') {
    reply({ ok: false, error: `unknown command ${JSON.stringify(cmd.cmd)} (visit, close)` })
    continue
  }
  try {
    reply(await visit(cmd))
  } catch (err) {
    reply({ ok: false, error: err.message, requests, console: consoleLines })
  }
}
await browser.close()
reply({ ok: true, closed: true })
process.exit(0)
