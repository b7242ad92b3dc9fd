// Progressive enhancement only: every page works without this file.
// * <time data-local>: shown in the browser's local time zone.
// * <time data-countdown>: a live countdown until that instant ("live everywhere").
// * <form data-confirm="...">: asks before submitting (a delete, a rollback).
// * catalog configure: the connection modes the selected source allows.
(function () {
  'use strict'
  function local(el) {
    var d = new Date(el.getAttribute('datetime'))
    if (isNaN(d)) return null
    el.title = el.getAttribute('datetime')
    el.textContent = d.toLocaleString()
    return d
  }
  function countdown(el, d) {
    var out = document.createElement('span')
    out.className = 'muted'
    out.setAttribute('aria-live', 'off')
    el.after(out)
    function tick() {
      var s = Math.round((d - Date.now()) / 1000)
      if (s <= 0) { out.textContent = ' — live everywhere now'; return }
      var m = Math.floor(s / 60)
      out.textContent = ' — in ' + (m ? m + ' min ' : '') + (s % 60) + ' s'
      setTimeout(tick, 1000)
    }
    tick()
  }
  document.querySelectorAll('time[data-local]').forEach(function (el) {
    var d = local(el)
    if (d && el.hasAttribute('data-countdown')) countdown(el, d)
  })
  document.querySelectorAll('form[data-confirm]').forEach(function (f) {
    f.addEventListener('submit', function (e) {
      if (!window.confirm(f.getAttribute('data-confirm'))) e.preventDefault()
    })
  })
  var radios = document.querySelectorAll('input[name=source][data-modes]')
  function modes() {
    var chosen = document.querySelector('input[name=source]:checked')
    if (!chosen) return
    var allowed = chosen.getAttribute('data-modes').split(' ')
    document.querySelectorAll('input[name=connection_mode]').forEach(function (m) {
      m.disabled = allowed.indexOf(m.value) < 0
      if (m.disabled && m.checked) m.checked = false
    })
    var first = document.querySelector('input[name=connection_mode]:not(:disabled)')
    if (first && !document.querySelector('input[name=connection_mode]:checked')) first.checked = true
  }
  radios.forEach(function (r) { r.addEventListener('change', modes) })
  modes()
})()
