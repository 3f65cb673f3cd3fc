/*! HOMEPOT analytics browser tracker | Apache-2.0 */
/* No dependencies. The service serves this file minified and compressed as /tracker.js, and as an
 * ES module as /tracker.mjs (the same code; the endpoint then comes from import.meta.url).
 *
 *   <script>
 *     window.HomepotAnalytics ||= { q: [], init(...a) { this.q.push(["init", a]); }, track(...a) { this.q.push(["track", a]); } };
 *     HomepotAnalytics.init({ getToken: () => localStorage.getItem("token") });
 *   </script>
 *   <script src="https://ANALYTICS-HOST/tracker.js" defer></script>
 *
 * The stub queues calls made before this file has run; it replays them (init first, with its
 * options: a queued init means no start without them), then takes the stub's place. Without a
 * queued init the tag alone starts it (options from its data-* attributes; data-auto="false" not).
 *
 * Records page_view (load and single-page navigation, with the time spent on the previous page),
 * page_leave (with the time spent on the page), click (named by the clicked element's own
 * data-track or id, else by a container's data-track), search (typed into input[type=search] or
 * [data-track-search] fields, debounced) and form_submit, plus custom events:
 * HomepotAnalytics.track("device_added", {type: "pos"}). Nothing typed is ever read except the
 * value of marked search fields (never a password field).
 *
 * Delivery: every event is kept in localStorage (one entry per event id) until the service has
 * acknowledged it (a 2xx answer). Batches leave every few seconds (sooner once enough are queued);
 * when the page is hidden or closed the rest leaves by keepalive fetch (sendBeacon where that is
 * missing). Whatever was not acknowledged, because the page was gone before the answer or the
 * service was unreachable, is sent again by the next page load; the service stores an event id
 * once, so a resend is harmless. 5xx, 429 and network errors: exponential back-off, and after
 * maxAttempts failures in a row this page stops trying (one console warning). A permanent refusal
 * (another 4xx; a 413 only once a single event is refused) drops the batch (one console warning).
 */
(function (window, document, moduleUrl) {
  "use strict";
  if (!window || !document) return;
  var existing = window.HomepotAnalytics;
  if (existing && existing.version) return; // loaded twice

  var VERSION = "1.1.0";
  var INTAKE_PATH = "/api/v1/analytics/user-activities";
  var KEY = "homepot_analytics_";
  var EVENT_KEY = KEY + "event_"; // + event id: one localStorage entry per unacknowledged event
  var SESSION_IDLE_MS = 30 * 60 * 1000;
  var MAX_KEPT = 1000; // unacknowledged events kept; past that the oldest go
  var MAX_AGE_MS = 6 * 24 * 3600 * 1000; // the service re-times events over 7 days old: no resend then
  var LEAVE_BUDGET = 60000; // bytes: browsers send at most 64 KiB of keepalive requests after a page
  var RESEND_AFTER_MS = 10000; // what a page handed to the browser on leaving has this long to arrive
  var QUEUED = 1, SENDING = 2;
  var INTERACTIVE = "a,button,input,select,textarea,summary,label,[role=button],[role=link],[role=tab],[role=menuitem]";
  var SEARCH_FIELDS = "input[type=search],input[data-track-search],textarea[data-track-search]";

  var script = moduleUrl ? null : document.currentScript;
  var base = moduleUrl || (script && script.src) || null;
  var config = {
    endpoint: null,
    flushIntervalMs: 3000,
    batchSize: 20,
    searchDebounceMs: 800,
    includeQuery: false,
    respectDoNotTrack: true,
    disabled: false,
    getToken: null,
    trackPageViews: true,
    trackClicks: true,
    trackSearches: true,
    trackForms: true,
    retryDelayMs: 1000, // the first back-off; it doubles up to maxRetryDelayMs
    maxRetryDelayMs: 60000,
    maxAttempts: 8, // failed sends in a row before this page stops trying
    // "include": the host app's session cookie goes along (its user, verified by the service); the
    // service allows it for the origins it lists. "omit" where it is configured with origin "*".
    credentials: "include"
  };
  var started = false;
  var queue = []; // events to send, oldest first (entries no longer QUEUED are skipped)
  var state = {}; // event id -> QUEUED | SENDING, until acknowledged or dropped
  var kept = 0; // ids in state
  var handed = {}; // id -> event handed to a keepalive request or beacon while leaving, unanswered
  var page = null; // {url, start}
  var sendSize = 100; // events per request (halved on 413)
  var timer = null, timerAt = 0;
  var inFlight = null; // the batch a regular request is carrying
  var leaving = false; // the page is being hidden or closed: no new asynchronous sends
  var failures = 0; // failed sends in a row
  var halted = false; // maxAttempts reached: nothing more is sent from this page
  var warned = {};
  var lastToken = null;
  var memory = {}; // stands in for localStorage where it is blocked
  var searchTimers = typeof Map === "function" ? new Map() : null;
  var lastSearch = typeof WeakMap === "function" ? new WeakMap() : null;

  // --- small helpers ---------------------------------------------------------------------------
  function storageGet(key) {
    try { return window.localStorage.getItem(KEY + key); } catch (e) { return memory[key] || null; }
  }
  function storageSet(key, value) {
    try { window.localStorage.setItem(KEY + key, value); } catch (e) { memory[key] = value; }
  }
  function storageRemove(key) {
    try { window.localStorage.removeItem(KEY + key); } catch (e) { /* blocked */ }
    delete memory[key];
  }
  function safely(fn) {
    // The tracker must never break the page it watches.
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { return undefined; }
    };
  }
  function warn(key, message) {
    if (warned[key]) return;
    warned[key] = true;
    try { window.console.warn("HomepotAnalytics: " + message); } catch (e) { /* no console */ }
  }
  function uuid() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = "";
    for (var j = 0; j < 16; j++) h += (b[j] + 256).toString(16).slice(1) + (j === 3 || j === 5 || j === 7 || j === 9 ? "-" : "");
    return h;
  }
  function attr(el, name) {
    // getAttribute, not el.id / form.name: a form field named "id" shadows form.id.
    var value = el && el.getAttribute ? el.getAttribute(name) : null;
    return value ? value : null;
  }

  // --- consent, session, page ----------------------------------------------------------------------
  function optedOut() {
    if (config.disabled || storageGet("opt_out") === "1") return true;
    var nav = window.navigator || {};
    return !!config.respectDoNotTrack &&
      (nav.doNotTrack === "1" || window.doNotTrack === "1" || nav.globalPrivacyControl === true);
  }

  function sessionId(now) {
    var session = null;
    try { session = JSON.parse(storageGet("session") || "null"); } catch (e) { session = null; }
    if (!session || !session.id || !(now - session.last < SESSION_IDLE_MS)) session = { id: uuid(), last: now };
    session.last = now;
    storageSet("session", JSON.stringify(session));
    return session.id;
  }

  function currentPage() {
    var l = window.location;
    var url = l.pathname + (config.includeQuery ? l.search : "");
    // Hash routers (#/devices) navigate within the hash; a plain #anchor is not a page.
    if (/^#!?\//.test(l.hash)) url += config.includeQuery ? l.hash : l.hash.split("?")[0];
    return url;
  }

  // --- the outbox: every unacknowledged event, in memory and in localStorage -------------------------
  function keep(event, handedAt) {
    // handedAt: when it was handed to a request that may outlive the page (the next page waits a little).
    var entry = handedAt ? { e: event, h: handedAt } : { e: event };
    try { window.localStorage.setItem(EVENT_KEY + event.event_id, JSON.stringify(entry)); } catch (e) { /* full or blocked: this page only */ }
  }

  function isStored(id) {
    try { return window.localStorage.getItem(EVENT_KEY + id) !== null; } catch (e) { return false; }
  }

  function settle(events) {
    // Acknowledged, or refused for good: forgotten here and in localStorage.
    for (var i = 0; i < events.length; i++) {
      var id = events[i].event_id;
      if (state[id]) { delete state[id]; kept--; }
      delete handed[id];
      try { window.localStorage.removeItem(EVENT_KEY + id); } catch (e) { /* blocked */ }
    }
  }

  function add(event) {
    if (state[event.event_id]) return;
    state[event.event_id] = QUEUED;
    kept++;
    queue.push(event);
  }

  function requeue(events) {
    // Not acknowledged: to the front of the queue again (unless acknowledged meanwhile).
    for (var i = events.length - 1; i >= 0; i--) {
      if (state[events[i].event_id] === SENDING) {
        state[events[i].event_id] = QUEUED;
        queue.unshift(events[i]);
      }
    }
  }

  function take(count) {
    var batch = [];
    while (queue.length && batch.length < count) {
      var event = queue.shift();
      if (state[event.event_id] === QUEUED) {
        state[event.event_id] = SENDING;
        batch.push(event);
      }
    }
    return batch;
  }

  function trim() {
    while (kept > MAX_KEPT && queue.length) {
      var oldest = queue.shift();
      if (state[oldest.event_id] === QUEUED) settle([oldest]);
    }
  }

  function storedEntries() {
    var keys = [], entries = [], ls;
    try {
      ls = window.localStorage;
      for (var i = 0; i < ls.length; i++) if (String(ls.key(i)).indexOf(EVENT_KEY) === 0) keys.push(ls.key(i));
      for (var j = 0; j < keys.length; j++) {
        var entry = null;
        try { entry = JSON.parse(ls.getItem(keys[j])); } catch (e) { entry = null; }
        if (entry && entry.e && keys[j] === EVENT_KEY + entry.e.event_id) entries.push(entry);
        else ls.removeItem(keys[j]);
      }
    } catch (e) { /* blocked */ }
    return entries;
  }

  function loadStored() {
    // What earlier pages (or the last visit) recorded and the service has not acknowledged.
    var old = null;
    try { old = JSON.parse(storageGet("pending") || "null"); } catch (e) { old = null; }
    if (old && old.length) for (var i = 0; i < old.length; i++) if (old[i] && old[i].event_id) keep(old[i], 0);
    storageRemove("pending"); // tracker 1.0 kept them under one key
    var entries = storedEntries(), now = Date.now(), later = [], wait = 0;
    entries.sort(function (a, b) { return (a.e.timestamp || 0) - (b.e.timestamp || 0); });
    for (var j = 0; j < entries.length; j++) {
      var event = entries[j].e, handedAt = entries[j].h || 0;
      if (optedOut() || !(now - event.timestamp < MAX_AGE_MS)) settle([event]);
      else if (handedAt <= now && now < handedAt + RESEND_AFTER_MS) {
        // The last page's keepalive request (with its user's token) may still be on its way:
        // give it time to land first; a resend is stored once all the same.
        later.push(event);
        wait = Math.max(wait, handedAt + RESEND_AFTER_MS - now);
      } else add(event);
    }
    if (later.length) {
      setTimeout(safely(function () {
        for (var k = 0; k < later.length; k++) if (isStored(later[k].event_id)) add(later[k]);
        trim();
        if (!failures && !halted) schedule(0);
      }), wait);
    }
    trim();
    return queue.length;
  }

  function reclaim() {
    // The page is back (shown again, or restored from the back/forward cache): what was handed to
    // the browser on the way out and never answered goes again.
    var events = [];
    for (var id in handed) if (Object.prototype.hasOwnProperty.call(handed, id)) events.push(handed[id]);
    handed = {};
    events.sort(function (a, b) { return a.timestamp - b.timestamp; });
    requeue(events);
  }

  // --- recording -------------------------------------------------------------------------------------
  function record(type, fields, extra) {
    if (!started || optedOut() || typeof type !== "string" || !type) return false;
    var now = Date.now();
    var event = {
      event_id: uuid(),
      activity_type: type,
      session_id: sessionId(now),
      page_url: page ? page.url : currentPage(),
      timestamp: now
    };
    for (var key in fields) if (fields[key] !== null && fields[key] !== undefined) event[key] = fields[key];
    if (extra && typeof extra === "object") event.extra_data = extra;
    add(event);
    keep(event);
    trim();
    if (leaving || halted || failures) return true; // handOff takes it, or the back-off timer does
    if (queue.length >= config.batchSize) flush();
    else schedule(config.flushIntervalMs);
    return true;
  }

  function schedule(delay) {
    // The sooner of the timer already set and this one.
    var at = Date.now() + delay;
    if (timer && timerAt <= at) return;
    if (timer) clearTimeout(timer);
    timerAt = at;
    timer = setTimeout(safely(function () { timer = null; flush(); }), delay);
  }

  function offline() {
    return window.navigator && window.navigator.onLine === false;
  }

  function tokenNow() {
    // getToken may return a string or a Promise of one; on page close only a string can be waited for.
    if (typeof config.getToken !== "function") return null;
    try {
      var token = config.getToken();
      if (token && typeof token.then === "function") {
        token.then(function (value) { lastToken = value || null; }, function () {});
        return lastToken;
      }
      lastToken = token || null;
    } catch (e) { /* no token: anonymous */ }
    return lastToken;
  }

  function tokenLater() {
    if (typeof config.getToken !== "function") return Promise.resolve(null);
    return Promise.resolve().then(config.getToken).then(function (value) {
      lastToken = value || null;
      return lastToken;
    }, function () { return null; });
  }

  function post(body, token, keepalive) {
    // text/plain keeps a token-less request "simple": no CORS preflight. The service reads JSON
    // whatever the Content-Type. A token needs Authorization, and so a preflight.
    var headers = { "Content-Type": "text/plain;charset=UTF-8" };
    if (token) headers.Authorization = "Bearer " + token;
    return window.fetch(config.endpoint, {
      method: "POST",
      body: body,
      headers: headers,
      credentials: config.credentials,
      keepalive: keepalive
    });
  }

  function answered(batch, status) {
    if (status >= 200 && status < 300) {
      failures = 0;
      settle(batch);
    } else if (status === 413 && batch.length > 1) {
      // Too big together: again in halves.
      sendSize = Math.max(1, Math.ceil(batch.length / 2));
      requeue(batch);
      schedule(0);
      return;
    } else if (status === 408 || status === 429 || status >= 500) {
      failed(batch, "HTTP " + status);
      return;
    } else {
      // Any other answer (403 origin, 413 for one event, 422 ...) would be the same next time.
      settle(batch);
      warn("status" + status, "the service refused " + batch.length + " event(s) with HTTP " + status + "; dropped");
    }
    if (queue.length && !halted) schedule(queue.length >= config.batchSize ? 0 : config.flushIntervalMs);
  }

  function failed(batch, reason) {
    requeue(batch); // kept in localStorage all along
    if (offline()) return; // no attempt counted: the "online" event resumes
    failures++;
    if (timer) { clearTimeout(timer); timer = null; }
    if (failures >= config.maxAttempts) {
      halted = true;
      warn("halted", reason + " (" + failures + " attempts); " + kept + " event(s) kept for the next page");
      return;
    }
    var delay = Math.min(config.maxRetryDelayMs, config.retryDelayMs * Math.pow(2, failures - 1));
    schedule(delay * (0.8 + Math.random() * 0.4));
  }

  function flush() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (inFlight || halted || leaving || !queue.length || !config.endpoint || offline()) return;
    if (typeof window.fetch !== "function") { handOff(false); return; }
    var batch = take(sendSize);
    if (!batch.length) return;
    inFlight = batch;
    tokenLater().then(function (token) {
      return post(JSON.stringify(batch), token, false);
    }).then(safely(function (response) {
      inFlight = null;
      answered(batch, response.status);
    }), safely(function () {
      inFlight = null;
      failed(batch, "the service could not be reached");
    }));
  }

  function resume() {
    // Online again, or the page shown again: one more try if this page had stopped trying.
    if (halted) { halted = false; failures = config.maxAttempts - 1; }
    flush();
  }

  function handOff(final) {
    // The page is hidden (final: closed): what is queued goes now, by requests that outlive the
    // page. Those still unanswered when it is gone stay in localStorage for the next page; when
    // final, so does a regular request under way (a plain fetch dies with its page).
    if (timer) { clearTimeout(timer); timer = null; }
    leaving = true;
    try { flushPendingSearches(); } finally { leaving = false; }
    if (halted || !config.endpoint || offline()) return;
    var events = take(MAX_KEPT);
    if (final && inFlight) {
      var under = [];
      for (var i = 0; i < inFlight.length; i++) if (state[inFlight[i].event_id] === SENDING && !handed[inFlight[i].event_id]) under.push(inFlight[i]);
      events = under.concat(events);
    }
    var token = tokenNow(), budget = LEAVE_BUDGET, parts = chunks(events), now = Date.now();
    for (var j = 0; j < parts.length; j++) {
      var body = JSON.stringify(parts[j]), size = bytes(body);
      if (size <= budget && leave(parts[j], body, token)) {
        budget -= size;
        for (var k = 0; k < parts[j].length; k++) keep(parts[j][k], now);
      } else requeue(parts[j]); // kept in localStorage: the next page sends it
    }
  }

  function chunks(events) {
    var out = [], current = [], size = 2;
    for (var i = 0; i < events.length; i++) {
      var length = bytes(JSON.stringify(events[i])) + 1;
      if (current.length && (size + length > LEAVE_BUDGET || current.length >= sendSize)) { out.push(current); current = []; size = 2; }
      current.push(events[i]);
      size += length;
    }
    if (current.length) out.push(current);
    return out;
  }

  function bytes(text) {
    try { return new Blob([text]).size; } catch (e) { return text.length * 3; }
  }

  function leave(events, body, token) {
    for (var i = 0; i < events.length; i++) handed[events[i].event_id] = events[i];
    if (typeof window.fetch === "function") {
      try {
        post(body, token, true).then(safely(function (response) {
          unhand(events);
          answered(events, response.status);
        }), safely(function () {
          unhand(events);
          failed(events, "the service could not be reached");
        }));
        return true;
      } catch (e) { /* no keepalive: a beacon (without the token: anonymous rather than lost) */ }
    }
    var nav = window.navigator;
    if (nav && typeof nav.sendBeacon === "function") {
      try {
        if (nav.sendBeacon(config.endpoint, new Blob([body], { type: "text/plain;charset=UTF-8" }))) return true;
      } catch (e) { /* refused */ }
    }
    unhand(events);
    return false;
  }

  function unhand(events) {
    for (var i = 0; i < events.length; i++) delete handed[events[i].event_id];
  }

  // --- what is tracked ----------------------------------------------------------------------------
  function onNavigate() {
    var url = currentPage();
    if (!page || url === page.url) return; // replaceState of the same page is not a page view
    var now = Date.now(), previous = page;
    page = { url: url, start: now };
    if (config.trackPageViews) record("page_view", { duration_ms: now - previous.start }, { previous_page: previous.url });
  }

  function clickName(target) {
    // The clicked element's own name: data-track or id on the element clicked, or on an element
    // between it and the control it is in (an id on a distant wrapper, <div id="app">, does not count).
    var control = target.closest(INTERACTIVE), el, name;
    for (el = target; el; el = el.parentElement) {
      name = attr(el, "data-track") || attr(el, "id");
      if (name) return { el: el, name: name };
      if (!control || el === control) break;
    }
    // Only then a container's: <form data-track="signup">, <nav data-track="menu">.
    for (el = (control || target).parentElement; el && (el = el.closest("[data-track]")); el = el.parentElement) {
      name = attr(el, "data-track") || attr(el, "id");
      if (name) return { el: el, name: name };
    }
    return null;
  }

  function onClick(event) {
    if (!config.trackClicks) return;
    var target = event.target;
    if (target && target.nodeType !== 1) target = target.parentElement;
    if (!target || !target.closest || target.closest("[data-track-ignore]")) return;
    var named = clickName(target);
    if (named) record("click", { element_id: named.name }, { tag: named.el.tagName.toLowerCase() });
  }

  function searchField(el) {
    return el && el.matches && el.matches(SEARCH_FIELDS) && el.type !== "password" ? el : null;
  }

  function searchName(el) {
    var marked = attr(el, "data-track-search");
    return (marked && marked !== "true" ? marked : null) || attr(el, "id") || attr(el, "name");
  }

  function emitSearch(el) {
    if (searchTimers && searchTimers.has(el)) { clearTimeout(searchTimers.get(el)); searchTimers.delete(el); }
    var query = String(el.value || "").trim().slice(0, 512);
    var last = lastSearch ? lastSearch.get(el) : null;
    if (!query || query === last) return;
    if (lastSearch) lastSearch.set(el, query);
    record("search", { element_id: searchName(el), search_query: query }, null);
  }

  function flushPendingSearches(within) {
    if (!searchTimers) return;
    searchTimers.forEach(function (_, el) { if (!within || within.contains(el)) emitSearch(el); });
  }

  function onInput(event) {
    var el = config.trackSearches ? searchField(event.target) : null;
    if (!el || !searchTimers) return;
    if (searchTimers.has(el)) clearTimeout(searchTimers.get(el));
    searchTimers.set(el, setTimeout(safely(function () { emitSearch(el); }), config.searchDebounceMs));
  }

  function onKeyDown(event) {
    var el = config.trackSearches && event.key === "Enter" ? searchField(event.target) : null;
    if (el) emitSearch(el);
  }

  function onSubmit(event) {
    var form = event.target;
    if (!config.trackForms || !form || !form.closest || form.closest("[data-track-ignore]")) return;
    flushPendingSearches(form);
    var id = attr(form, "data-track") || attr(form, "id") || attr(form, "name");
    record("form_submit", { element_id: id }, null);
  }

  function onPageHide() {
    leaving = true;
    try {
      if (page) record("page_leave", { duration_ms: Date.now() - page.start }, null);
    } finally { leaving = false; }
    handOff(true);
  }

  function onPageShow(event) {
    // Back from the back/forward cache: the page is viewed again, without a new load.
    if (!event.persisted) return;
    reclaim();
    page = { url: currentPage(), start: Date.now() };
    if (config.trackPageViews) record("page_view", {}, null);
    resume();
  }

  function patchHistory(name) {
    var original = window.history && window.history[name];
    if (typeof original !== "function") return;
    window.history[name] = function () {
      var result = original.apply(this, arguments);
      safely(onNavigate)();
      return result;
    };
  }

  // --- public API ----------------------------------------------------------------------------------
  function configure(options) {
    for (var key in options) if (Object.prototype.hasOwnProperty.call(config, key) && options[key] !== undefined) config[key] = options[key];
  }

  function fromScriptTag() {
    var options = {};
    if (!script) return options;
    var data = script.dataset || {};
    var numbers = { flushInterval: "flushIntervalMs", batchSize: "batchSize", searchDebounce: "searchDebounceMs" };
    if (data.endpoint) options.endpoint = data.endpoint;
    for (var name in numbers) if (data[name] && !isNaN(Number(data[name]))) options[numbers[name]] = Number(data[name]);
    if (data.includeQuery !== undefined) options.includeQuery = data.includeQuery !== "false";
    if (data.respectDnt === "false") options.respectDoNotTrack = false;
    if (data.credentials) options.credentials = data.credentials;
    if (data.optOut !== undefined && data.optOut !== "false") options.disabled = true;
    return options;
  }

  function init(options) {
    configure(options || {});
    if (!config.endpoint && base) {
      try { config.endpoint = new URL(INTAKE_PATH, base).href; } catch (e) { /* no URL support */ }
    }
    if (started || !config.endpoint) return api;
    started = true;
    page = { url: currentPage(), start: Date.now() };
    document.addEventListener("click", safely(onClick), true);
    document.addEventListener("input", safely(onInput), true);
    document.addEventListener("keydown", safely(onKeyDown), true);
    document.addEventListener("submit", safely(onSubmit), true);
    document.addEventListener("visibilitychange", safely(function () {
      if (document.visibilityState === "hidden") handOff(false);
      else { reclaim(); resume(); }
    }));
    window.addEventListener("pagehide", safely(onPageHide));
    window.addEventListener("pageshow", safely(onPageShow));
    window.addEventListener("online", safely(resume));
    window.addEventListener("popstate", safely(onNavigate));
    window.addEventListener("hashchange", safely(onNavigate));
    patchHistory("pushState");
    patchHistory("replaceState");
    var stored = loadStored();
    if (config.trackPageViews) record("page_view", {}, null);
    if (stored) schedule(0);
    return api;
  }

  // The stub's object becomes the tracker, so references to it taken earlier keep working.
  var calls = existing && existing.q && typeof existing.q.length === "number" ? existing.q : null;
  var api = calls ? existing : {};
  api.version = VERSION;
  api.init = safely(init);
  api.track = safely(function (activityType, extraData, fields) {
    var allowed = {};
    if (fields) {
      allowed.element_id = fields.element_id;
      allowed.search_query = fields.search_query;
      allowed.duration_ms = fields.duration_ms;
    }
    return record(activityType, allowed, extraData);
  });
  api.flush = safely(flush);
  api.optOut = safely(function () {
    storageSet("opt_out", "1");
    var events = [], entries = storedEntries();
    for (var i = 0; i < entries.length; i++) events.push(entries[i].e);
    for (var id in state) if (Object.prototype.hasOwnProperty.call(state, id)) events.push({ event_id: id });
    settle(events);
    queue = [];
    storageRemove("session");
  });
  api.optIn = safely(function () { storageRemove("opt_out"); });
  api.isOptedOut = safely(optedOut);
  api.sessionId = safely(function () { return optedOut() ? null : sessionId(Date.now()); });
  delete api.q;
  window.HomepotAnalytics = api;

  // Replay the stub's calls: every queued init's options first (over the tag's), then the rest.
  var initOptions = [], later = [];
  for (var c = 0; calls && c < calls.length; c++) {
    var call = calls[c] || [], args = Array.prototype.slice.call(call[1] || []);
    if (call[0] === "init") initOptions.push(args[0] || {});
    else if (typeof api[call[0]] === "function") later.push([call[0], args]);
  }
  configure(fromScriptTag());
  if (initOptions.length || (script && script.getAttribute("data-auto") !== "false")) {
    for (var o = 0; o < initOptions.length; o++) configure(initOptions[o]);
    api.init();
  }
  for (var l = 0; l < later.length; l++) api[later[l][0]].apply(api, later[l][1]);
})(typeof window !== "undefined" ? window : null, typeof document !== "undefined" ? document : null,
  /* module URL */ null);
