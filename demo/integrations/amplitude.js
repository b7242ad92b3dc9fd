// Amplitude: Segment's classic integration, @segment/analytics.js-integration-amplitude from npm,
// unchanged. Its vendor SDK tag points at cdn.amplitude.com; this entry points it at the
// copy of amplitude-js (the same npm release the integration names) that build.mjs writes
// beside it under /next-integrations/vendor/, so the demo needs no network but the edge.
var Amplitude = require('@segment/analytics.js-integration-amplitude')

var VENDOR = '/vendor/amplitude-js/' + __AMPLITUDE_JS_VERSION__ + '/amplitude.js.gz'

module.exports = function loader(scriptSrc) {
  // scriptSrc: {cdn}/next-integrations/integrations/amplitude/<v>/amplitude.dynamic.js.gz
  var base = scriptSrc.slice(0, scriptSrc.indexOf('/integrations/'))
  Amplitude.prototype.templates.library.attrs.src = base + VENDOR
  return Amplitude
}
