/*! HOMEPOT analytics browser tracker | Apache-2.0 */
/* No dependencies.
 *
 *   <script src="https://ANALYTICS-HOST/tracker.js" defer></script>
 *
 * Records page_view (load and single-page navigation, with the time spent on the previous page),
 * page_leave (with the time spent on the page), click (elements with data-track or an id),
 * search (typed into input[type=search] or [data-track-search] fields, debounced) and
 * form_submit, plus custom events: HomepotAnalytics.track("device_added", {type: "pos"}).
 * Nothing typed is ever read except the value of marked search fields (never a password field).
 *
 * Events are sent in batches (every few seconds, or sooner once enough are queued); what is left
 * when the page is hidden or closed goes out with navigator.sendBeacon (or a keepalive fetch when
 * a token must go with it); what the browser refuses to send is kept and sent on the next page.
 * Options come from data-* attributes of the script tag or HomepotAnalytics.init({...}).
 */
(function (window, document) {
  "use strict";
  if (!window || !document || (window.HomepotAnalytics && window.HomepotAnalytics.version)) return;

  var VERSION = "1.0.0";
  var INTAKE_PATH = "/api/v1/analytics/user-activities";
  var KEY = "homepot_analytics_";
  var SESSION_IDLE_MS = 30 * 60 * 1000;
  var MAX_QUEUE = 1000; // events held while the service is unreachable; the oldest go first
  var UNLOAD_CHUNK_CHARS = 20000; // x3 bytes (worst-case UTF-8) stays under the 64 KiB beacon budget
  var MAX_PENDING = 300; // events kept in localStorage for the next page when nothing could send them
  var INTERACTIVE = "a,button,input,select,textarea,summary,label,[role=button],[role=link],[role=tab],[role=menuitem]";
  var SEARCH_FIELDS = "input[type=search],input[data-track-search],textarea[data-track-search]";

  var script = document.currentScript;
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
    trackForms: true
  };
  var started = false;
  var queue = [];
  var page = null; // {url, start}
  var sendSize = 100; // events per request
  var timer = null;
  var inFlight = null; // the batch a request is carrying
  var leaving = false; // the page is being hidden or closed: no new asynchronous sends
  var retryDelay = 0;
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
    queue.push(event);
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    if (leaving) return true; // sendAllNow takes it
    if (queue.length >= config.batchSize) flush();
    else schedule(config.flushIntervalMs);
    return true;
  }

  function schedule(delay) {
    if (!timer) timer = setTimeout(function () { timer = null; flush(); }, delay);
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

  function request(body, token) {
    // text/plain keeps a token-less request "simple": no CORS preflight. The service reads JSON
    // whatever the Content-Type. A token needs Authorization, and so a preflight.
    var headers = { "Content-Type": "text/plain;charset=UTF-8" };
    if (token) headers.Authorization = "Bearer " + token;
    return window.fetch(config.endpoint, {
      method: "POST",
      body: body,
      headers: headers,
      credentials: "omit",
      keepalive: body.length <= UNLOAD_CHUNK_CHARS
    });
  }

  function flush() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (inFlight || !queue.length || !config.endpoint) return;
    if (typeof window.fetch !== "function") { sendAllNow(); return; }
    var batch = queue.splice(0, sendSize);
    inFlight = batch;
    tokenLater().then(function (token) {
      return request(JSON.stringify(batch), token);
    }).then(function (response) {
      inFlight = null;
      if (response.status === 413 && batch.length > 1) {
        // Too big together: send them again in smaller batches.
        queue = batch.concat(queue);
        sendSize = Math.max(1, Math.min(sendSize, Math.ceil(batch.length / 2)));
      } else if (response.status === 429 || response.status >= 500) {
        throw new Error("HTTP " + response.status);
      }
      // 2xx: stored. Other 4xx: this request can never succeed, so it is not resent.
      retryDelay = 0;
      if (queue.length) schedule(queue.length >= config.batchSize ? 0 : config.flushIntervalMs);
    }).catch(function () {
      inFlight = null;
      queue = batch.concat(queue);
      if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
      retryDelay = Math.min(Math.max(1000, retryDelay * 2), 60000);
      schedule(retryDelay);
    });
  }

  function chunks(events) {
    var out = [], current = [], size = 2;
    for (var i = 0; i < events.length; i++) {
      var length = JSON.stringify(events[i]).length + 1;
      if (current.length && size + length > UNLOAD_CHUNK_CHARS) { out.push(current); current = []; size = 2; }
      current.push(events[i]);
      size += length;
    }
    if (current.length) out.push(current);
    return out;
  }

  function sendAllNow() {
    // The page is going away: hand everything to the browser now; it sends after the page is gone.
    // A batch still in flight goes again (a plain fetch dies with the page): events keep their id
    // and time, so the service stores a twice-sent event once.
    if (timer) { clearTimeout(timer); timer = null; }
    leaving = true;
    try { flushPendingSearches(); } finally { leaving = false; }
    if ((!queue.length && !inFlight) || !config.endpoint) return;
    var events = (inFlight || []).concat(queue);
    queue = [];
    var token = tokenNow();
    var parts = chunks(events);
    for (var i = 0; i < parts.length; i++) {
      if (!sendOne(parts[i], token)) keepPending(parts[i]);
    }
  }

  function sendOne(events, token) {
    var body = JSON.stringify(events);
    if (token && typeof window.fetch === "function") {
      // sendBeacon cannot carry an Authorization header; a keepalive fetch can, and outlives the page.
      try {
        request(body, token).then(function (response) {
          if (response.status === 429 || response.status >= 500) keepPending(events);
        }, function () { keepPending(events); });
        return true;
      } catch (e) { /* fall through to the beacon: stored anonymous rather than lost */ }
    }
    var nav = window.navigator;
    if (nav && typeof nav.sendBeacon === "function") {
      try {
        if (nav.sendBeacon(config.endpoint, new Blob([body], { type: "text/plain;charset=UTF-8" }))) return true;
      } catch (e) { /* refused: keep it for the next page */ }
    }
    return false;
  }

  function keepPending(events) {
    var kept = [];
    try { kept = JSON.parse(storageGet("pending") || "[]"); } catch (e) { kept = []; }
    kept = kept.concat(events);
    storageSet("pending", JSON.stringify(kept.slice(-MAX_PENDING)));
  }

  function resendPending() {
    var kept = null;
    try { kept = JSON.parse(storageGet("pending") || "null"); } catch (e) { kept = null; }
    storageRemove("pending");
    // Each event keeps its id and time, so one that did arrive after all is not stored twice.
    if (kept && kept.length && !optedOut()) {
      queue = kept.concat(queue);
      schedule(0);
    }
  }

  // --- what is tracked ----------------------------------------------------------------------------
  function onNavigate() {
    var url = currentPage();
    if (!page || url === page.url) return; // replaceState of the same page is not a page view
    var now = Date.now(), previous = page;
    page = { url: url, start: now };
    if (config.trackPageViews) record("page_view", { duration_ms: now - previous.start }, { previous_page: previous.url });
  }

  function onClick(event) {
    if (!config.trackClicks) return;
    var target = event.target;
    if (target && target.nodeType !== 1) target = target.parentElement;
    if (!target || !target.closest || target.closest("[data-track-ignore]")) return;
    var el = target.closest("[data-track]"), id = null;
    if (el) {
      id = attr(el, "data-track") || attr(el, "id");
    } else {
      // The nearest control decides; an id on a distant wrapper (<div id="app">) does not count.
      el = target.closest(INTERACTIVE);
      id = attr(el, "id");
      if (!id && attr(target, "id")) { el = target; id = attr(target, "id"); }
    }
    if (id) record("click", { element_id: id }, { tag: el.tagName.toLowerCase() });
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
    sendAllNow();
  }

  function onPageShow(event) {
    // Back from the back/forward cache: the page is viewed again, without a new load.
    if (!event.persisted) return;
    page = { url: currentPage(), start: Date.now() };
    if (config.trackPageViews) record("page_view", {}, null);
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
    if (data.optOut !== undefined && data.optOut !== "false") options.disabled = true;
    return options;
  }

  function init(options) {
    configure(options || {});
    if (!config.endpoint && script && script.src) {
      try { config.endpoint = new URL(INTAKE_PATH, script.src).href; } catch (e) { /* no URL support */ }
    }
    if (started || !config.endpoint) return api;
    started = true;
    page = { url: currentPage(), start: Date.now() };
    document.addEventListener("click", safely(onClick), true);
    document.addEventListener("input", safely(onInput), true);
    document.addEventListener("keydown", safely(onKeyDown), true);
    document.addEventListener("submit", safely(onSubmit), true);
    document.addEventListener("visibilitychange", safely(function () {
      if (document.visibilityState === "hidden") sendAllNow();
      else resendPending(); // back again: what could not leave while hidden goes now
    }));
    window.addEventListener("pagehide", safely(onPageHide));
    window.addEventListener("pageshow", safely(onPageShow));
    window.addEventListener("popstate", safely(onNavigate));
    window.addEventListener("hashchange", safely(onNavigate));
    patchHistory("pushState");
    patchHistory("replaceState");
    resendPending();
    if (config.trackPageViews) record("page_view", {}, null);
    return api;
  }

  var api = {
    version: VERSION,
    init: safely(init),
    track: safely(function (activityType, extraData, fields) {
      var allowed = {};
      if (fields) {
        allowed.element_id = fields.element_id;
        allowed.search_query = fields.search_query;
        allowed.duration_ms = fields.duration_ms;
      }
      return record(activityType, allowed, extraData);
    }),
    flush: safely(flush),
    optOut: safely(function () {
      storageSet("opt_out", "1");
      queue = [];
      storageRemove("pending");
      storageRemove("session");
    }),
    optIn: safely(function () { storageRemove("opt_out"); }),
    isOptedOut: safely(optedOut),
    sessionId: safely(function () { return optedOut() ? null : sessionId(Date.now()); })
  };
  window.HomepotAnalytics = api;

  if (script && script.getAttribute("data-auto") !== "false") api.init(fromScriptTag());
})(typeof window !== "undefined" ? window : null, typeof document !== "undefined" ? document : null,
  /* module URL */ null);
