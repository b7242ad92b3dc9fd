// Braze (integrations key "Appboy"): a small classic integration over the real Braze Web SDK,
// @braze/web-sdk from npm, bundled in. Segment's own classic Appboy integration is not
// published on npm, so this is NOT Segment's code: it maps identify / track / page onto the
// SDK the way that integration documents (changeUser, custom attributes, logCustomEvent,
// logPurchase for "Order Completed"), with the settings the bundle carries.
var integration = require('@segment/analytics.js-integration')
var braze = require('@braze/web-sdk')

var ENDPOINTS = {
  us: 'sdk.iad-01.braze.com', us02: 'sdk.iad-02.braze.com', us03: 'sdk.iad-03.braze.com',
  us04: 'sdk.iad-04.braze.com', us05: 'sdk.iad-05.braze.com', us06: 'sdk.iad-06.braze.com',
  us08: 'sdk.iad-08.braze.com', eu: 'sdk.fra-01.braze.eu', eu02: 'sdk.fra-02.braze.eu',
}

var Appboy = integration('Appboy')
  .global('braze')
  .option('apiKey', '')
  .option('datacenter', 'us')
  .option('customEndpoint', '')
  .option('trackAllPages', false)
  .option('trackNamedPages', false)

Appboy.prototype.initialize = function () {
  var options = this.options
  var baseUrl = options.customEndpoint || ENDPOINTS[options.datacenter] || ENDPOINTS.us
  braze.initialize(options.apiKey, { baseUrl: baseUrl })
  braze.openSession()
  window.braze = braze
  this.ready()
}

Appboy.prototype.loaded = function () {
  return window.braze === braze
}

Appboy.prototype.identify = function (identify) {
  var userId = identify.userId()
  if (userId) braze.changeUser(String(userId))
  var user = braze.getUser()
  if (!user) return
  var traits = identify.traits()
  if (identify.email()) user.setEmail(identify.email())
  if (identify.firstName()) user.setFirstName(identify.firstName())
  if (identify.lastName()) user.setLastName(identify.lastName())
  Object.keys(traits).forEach(function (key) {
    if (['email', 'firstName', 'lastName', 'id', 'userId'].indexOf(key) === -1) {
      user.setCustomUserAttribute(key, traits[key])
    }
  })
}

Appboy.prototype.track = function (track) {
  if (track.event() === 'Order Completed') {
    ;(track.products() || []).forEach(function (p) {
      braze.logPurchase(String(p.product_id || p.sku || 'unknown'), Number(p.price) || 0,
        track.currency(), Number(p.quantity) || 1)
    })
    return
  }
  braze.logCustomEvent(track.event(), track.properties())
}

Appboy.prototype.page = function (page) {
  var opts = this.options
  if (opts.trackAllPages || (opts.trackNamedPages && page.name())) {
    braze.logCustomEvent(page.event(page.fullName()), page.properties())
  }
}

module.exports = function loader() {
  return Appboy
}
