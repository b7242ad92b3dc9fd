// Builds the device-mode integration scripts a settings document names, in the shape
// analytics-next's plugins/ajs-destination/loader.ts loads:
//   <out>/integrations/<p>/<version>/<p>.dynamic.js.gz  setting window['<p>Deps'] = [] and
//   window['<p>Loader'], which sets window['<p>Integration'] (p: the integrations key in lower
//   case, first '.' dropped, spaces to '-'; version: integrations[key].versionSettings.version).
// Every script is bundled with esbuild from npm packages (demo/package-lock.json): nothing is
// fetched but the npm registry, at `npm ci` time. The edge serves <out> at /next-integrations/.
//
//   node demo/build.mjs --settings settings.json --out DIR
// Prints one JSON line per integration key: {"key", "path", "bytes", "source"} or, for a key
// it has no recipe for, {"key", "skipped"}.
import { build } from 'esbuild'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const HERE = dirname(fileURLToPath(import.meta.url))
const require_ = (p) => JSON.parse(readFileSync(join(HERE, 'node_modules', p, 'package.json')))
const AMPLITUDE_JS = require_('amplitude-js').version

const RECIPES = {
  amplitude: {
    entry: './integrations/amplitude.js',
    source: `@segment/analytics.js-integration-amplitude@${require_('@segment/analytics.js-integration-amplitude').version} (Segment's classic integration), vendor SDK amplitude-js@${AMPLITUDE_JS} served by the edge`,
    vendor: { path: `vendor/amplitude-js/${AMPLITUDE_JS}/amplitude.js.gz`, file: 'amplitude-js/amplitude.js' },
  },
  appboy: {
    entry: './integrations/appboy.js',
    source: `demo/integrations/appboy.js (not Segment's classic Appboy integration, which npm does not publish) over @braze/web-sdk@${require_('@braze/web-sdk').version}`,
  },
}

function normalizeName(name) {
  return name.toLowerCase().replace('.', '').replace(/\s+/g, '-')
}

function args(argv) {
  const out = {}
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1]
  if (!out.settings || !out.out) {
    console.error('usage: node demo/build.mjs --settings settings.json --out DIR')
    process.exit(2)
  }
  return out
}

function write(path, data) {
  mkdirSync(dirname(path), { recursive: true })
  const gz = gzipSync(data, { level: 9 })
  writeFileSync(path, gz)
  return gz.length
}

const { settings, out } = args(process.argv.slice(2))
const document = JSON.parse(readFileSync(settings, 'utf8'))
for (const [key, config] of Object.entries(document.integrations || {})) {
  if (key === 'Segment.io') continue
  const p = normalizeName(key)
  const recipe = RECIPES[p]
  if (!recipe) {
    console.log(JSON.stringify({ key, skipped: 'no recipe in demo/build.mjs' }))
    continue
  }
  const version = config?.versionSettings?.override ?? config?.versionSettings?.version ?? 'latest'
  const entry = `
    var loader = require(${JSON.stringify(recipe.entry)})
    var src = (document.currentScript && document.currentScript.src) || ''
    window[${JSON.stringify(p + 'Deps')}] = []
    window[${JSON.stringify(p + 'Loader')}] = function () {
      window[${JSON.stringify(p + 'Integration')}] = loader(src)
    }
  `
  const result = await build({
    stdin: { contents: entry, resolveDir: HERE, sourcefile: `${p}.entry.js` },
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'es2017',
    minify: true,
    legalComments: 'inline',
    define: { global: 'window', __AMPLITUDE_JS_VERSION__: JSON.stringify(AMPLITUDE_JS) },
    logLevel: 'error',
  })
  const path = `integrations/${p}/${version}/${p}.dynamic.js.gz`
  const bytes = write(join(out, path), result.outputFiles[0].contents)
  if (recipe.vendor) {
    write(join(out, recipe.vendor.path), readFileSync(join(HERE, 'node_modules', recipe.vendor.file)))
  }
  console.log(JSON.stringify({ key, path: `/next-integrations/${path}`, bytes, source: recipe.source }))
}
