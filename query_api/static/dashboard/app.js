// The dashboard's shell: sign-in, the page router, the time range and service pickers.
// Each page module draws itself from the query API; the URL hash holds the whole view.

import { get, session } from "./api.js";
import { el } from "./format.js";
import { RangeError_, isoToLocalInput, localInputToIso, readState, go, timeWindow, href } from "./state.js";
import * as overview from "./pages/overview.js";
import * as errors from "./pages/errors.js";
import * as errorGroup from "./pages/error_group.js";
import * as jobs from "./pages/jobs.js";
import * as devices from "./pages/devices.js";
import * as frontend from "./pages/frontend.js";
import * as requests from "./pages/requests.js";

const PAGES = { overview, errors, "error-group": errorGroup, jobs, devices, frontend, requests };
const NAV_OF = { "error-group": "errors" };
const $ = (selector) => document.querySelector(selector);
let renderCount = 0;
// What the last render measured; the browser test reads it.
window.dashboard = { ready: false };

function showSignIn(message = "") {
  $(".top").hidden = true;
  $("#page").replaceChildren();
  $("#sign-in").hidden = false;
  $("#sign-in-message").textContent = message;
  document.body.dataset.view = "sign-in";
}

async function signIn(token) {
  session.keep(token.trim());
  try {
    await get("requests", { limit: 1 });
  } catch (error) {
    session.end();
    const reasons = {
      401: "This token is not valid (expired, forged, or signed with another secret).",
      403: "This token is not an admin's: the dashboard is for admins only.",
    };
    showSignIn(reasons[error.status] || error.message);
    return false;
  }
  return true;
}

const SERVICES_KEY = "homepot-analytics.services";
const SERVICES_FOR_MS = 5 * 60e3; // a new service appears in the picker within minutes

async function loadServices() {
  const cached = JSON.parse(sessionStorage.getItem(SERVICES_KEY) || "null");
  if (cached && Date.now() - cached.at < SERVICES_FOR_MS) return cached.names;
  const window = { start_date: new Date(Date.now() - 30 * 86400e3).toISOString(), interval: "1d", group_by: "service_name", top: 50 };
  const tables = ["requests", "jobs", "errors", "device-states", "user-activities"];
  const answers = await Promise.allSettled(tables.map((table) => get(`${table}/timeseries`, window)));
  const names = new Set();
  for (const answer of answers) {
    if (answer.status !== "fulfilled") continue;
    for (const series of answer.value.series) if (!series.other && series.group) names.add(series.group);
  }
  const sorted = [...names].sort();
  sessionStorage.setItem(SERVICES_KEY, JSON.stringify({ at: Date.now(), names: sorted }));
  return sorted;
}

async function fillServices(selected) {
  const picker = $("#service");
  let names = [];
  try {
    names = await loadServices();
  } catch (_) {
    // The list is a convenience: the page itself reports a failing API.
  }
  if (selected && !names.includes(selected)) names = [...names, selected];
  picker.replaceChildren(el("option", { value: "" }, "All services"), ...names.map((n) => el("option", { value: n }, n)));
  picker.value = selected || "";
}

function syncControls(params) {
  const range = params.get("range") || "1h";
  $("#range").value = range;
  $("#custom-range").hidden = range !== "custom";
  if (range === "custom") {
    $("#start").value = isoToLocalInput(params.get("start"));
    $("#end").value = isoToLocalInput(params.get("end"));
  }
  $("#service").value = params.get("service") || "";
  for (const link of document.querySelectorAll("#pages a")) {
    const { page } = readState();
    link.classList.toggle("active", link.dataset.page === (NAV_OF[page] || page));
    // The nav keeps the range and service.
    const keep = new URLSearchParams();
    for (const name of ["range", "start", "end", "service"]) if (params.get(name)) keep.set(name, params.get(name));
    link.href = href(link.dataset.page, keep);
  }
}

function updateParams(change) {
  const { page, params } = readState();
  for (const [name, value] of Object.entries(change)) {
    if (value) params.set(name, value);
    else params.delete(name);
  }
  params.delete("cursor"); // a new window or service starts paging again
  go(page, params);
}

async function render() {
  const count = ++renderCount;
  const { page, params } = readState();
  const module = PAGES[page];
  const root = $("#page");
  window.dashboard = { page, ready: false };
  document.body.dataset.ready = "false";
  document.body.dataset.view = page;
  syncControls(params);
  if (!module) {
    root.replaceChildren(el("p", { class: "banner" }, `No page “${page}”.`));
    return;
  }
  const started = performance.now();
  let dataMs = 0;
  const ctx = {
    params,
    window: null,
    current: () => count === renderCount,
    rerender: () => render(),
    // Runs the page's API calls at once; the time until the last answer is the page's data time.
    async load(calls) {
      const begun = performance.now();
      const names = Object.keys(calls);
      const values = await Promise.all(names.map((name) => calls[name]()));
      dataMs += performance.now() - begun;
      return Object.fromEntries(names.map((name, i) => [name, values[i]]));
    },
  };
  try {
    ctx.window = timeWindow(params);
    root.replaceChildren(el("p", { class: "loading" }, "Loading…"));
    await module.render(root, ctx);
    if (!ctx.current()) return;
    window.dashboard = { page, ready: true, dataMs, renderMs: performance.now() - started };
  } catch (error) {
    if (!ctx.current() || error.status === 401) return;
    const text = error instanceof RangeError_ ? error.message : `Could not load this page: ${error.message}`;
    root.replaceChildren(el("div", { class: "banner", role: "alert" }, text));
    window.dashboard = { page, ready: true, error: text, dataMs };
  }
  document.body.dataset.ready = "true";
}

function start() {
  session.onExpired = (message) => {
    sessionStorage.setItem("homepot-analytics.return-to", location.hash);
    showSignIn(`Signed out: ${message} Sign in again.`);
  };
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await signIn($("#token").value)) enter();
  });
  $("#sign-out").addEventListener("click", () => {
    session.end();
    sessionStorage.removeItem(SERVICES_KEY);
    showSignIn("Signed out.");
  });
  $("#range").addEventListener("change", () => {
    const range = $("#range").value;
    if (range === "custom") {
      // Start from the window shown now.
      const shown = timeWindow(readState().params);
      $("#custom-range").hidden = false;
      $("#start").value = isoToLocalInput(shown.start_date);
      $("#end").value = isoToLocalInput(shown.end_date);
      return;
    }
    updateParams({ range, start: "", end: "" });
  });
  $("#controls").addEventListener("submit", (event) => {
    event.preventDefault();
    updateParams({ range: "custom", start: localInputToIso($("#start").value), end: localInputToIso($("#end").value) });
  });
  $("#service").addEventListener("change", () => updateParams({ service: $("#service").value }));
  window.addEventListener("hashchange", () => signInFromLink() || (session.token() && render()));
  if (signInFromLink()) return;
  if (session.token()) enter();
  else showSignIn();
}

// A sign-in link carries the token in the fragment (#token=...), which never reaches a server log.
function signInFromLink() {
  const fromLink = new URLSearchParams(location.hash.replace(/^#/, "")).get("token");
  if (!fromLink) return false;
  history.replaceState(null, "", location.pathname + location.search + "#/overview");
  signIn(fromLink).then((ok) => ok && enter());
  return true;
}

function enter() {
  $("#sign-in").hidden = true;
  $(".top").hidden = false;
  const back = sessionStorage.getItem("homepot-analytics.return-to");
  sessionStorage.removeItem("homepot-analytics.return-to");
  if (back && back !== location.hash) {
    location.hash = back; // renders on hashchange
  } else {
    render();
  }
  fillServices(readState().params.get("service"));
}

if (typeof Plotly === "undefined") {
  document.body.replaceChildren(
    el("div", { class: "banner", role: "alert" },
      "The charting library did not load: the service needs the 'dashboard' extra (pip install 'homepot-analytics[dashboard]')."),
  );
} else {
  start();
}
