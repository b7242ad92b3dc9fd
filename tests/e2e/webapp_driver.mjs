// Drives Debian's headless Chromium (never a downloaded browser) through playwright-core for
// the web app's tests: one JSON command per stdin line, one JSON answer per stdout line.
//   {"cmd": "goto", "url"}            {"cmd": "click", "sel"}       {"cmd": "fill", "sel", "value"}
//   {"cmd": "check", "sel"}           {"cmd": "select", "sel", "value"}
//   {"cmd": "press", "key"}           {"cmd": "tabTo", "sel"}: Tab until the element has focus
//   {"cmd": "text", "sel"}            {"cmd": "count", "sel"}       {"cmd": "attr", "sel", "name"}
//   {"cmd": "viewport", "width", "height"}   {"cmd": "screenshot", "path"}
//   {"cmd": "eval", "js"}             {"cmd": "log"}: every request and console line so far
//   {"cmd": "close"}
// Every answer: {"ok": true, "url", "value"?} or {"ok": false, "error"}. Dialogs (confirm())
// are accepted. No name but 127.0.0.1 resolves, so a third-party request would fail and show.
import { createInterface } from 'node:readline'
import { chromium } from 'playwright-core'

const executablePath = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

let browser
try {
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  })
} catch (err) {
  reply({ ok: false, fatal: `cannot launch ${executablePath}: ${err.message}` })
  process.exit(2)
}
const context = await browser.newContext({ viewport: { width: 1100, height: 900 } })
const page = await context.newPage()
page.setDefaultTimeout(10000)
const requests = []
const consoleLines = []
page.on('request', (r) => requests.push(r.url()))
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`))
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`))
page.on('dialog', (d) => d.accept())

async function run(c) {
  switch (c.cmd) {
    case 'goto': await page.goto(c.url, { waitUntil: 'load' }); return null
    case 'click': await page.click(c.sel); await page.waitForLoadState('load'); return null
    case 'fill': await page.fill(c.sel, c.value); return null
    case 'check': await page.check(c.sel); return null
    case 'select': await page.selectOption(c.sel, c.value); return null
    case 'press': // (a key that submits a form: wait for the page it leads to)
      await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press(c.key)])
      return null
    case 'tabTo':
      for (let n = 0; n < 40; n++) {
        await page.keyboard.press('Tab')
        if (await page.evaluate((s) => document.activeElement?.matches(s), c.sel)) return n + 1
      }
      throw new Error(`Tab never reached ${c.sel}`)
    case 'text': return await page.textContent(c.sel)
    case 'count': return await page.locator(c.sel).count()
    case 'attr': return await page.getAttribute(c.sel, c.name)
    case 'viewport': await page.setViewportSize({ width: c.width, height: c.height }); return null
    case 'screenshot': await page.screenshot({ path: c.path, fullPage: true }); return c.path
    case 'eval': return await page.evaluate(c.js)
    case 'log': return { requests, console: consoleLines }
    default: throw new Error(`unknown command ${JSON.stringify(c.cmd)}`)
  }
}

const rl = createInterface({ input: process.stdin })
reply({ ok: true, ready: true, version: browser.version() })
for await (const line of rl) {
  if (!line.trim()) continue
  let c
  try { c = JSON.parse(line) } catch { reply({ ok: false, error: 'not JSON' }); continue }
  if (c.cmd === 'close') break
  try {
    reply({ ok: true, value: await run(c), url: page.url() })
  } catch (err) {
    reply({ ok: false, error: err.message, url: page.url() })
  }
}
await browser.close()
reply({ ok: true, closed: true })
process.exit(0)
