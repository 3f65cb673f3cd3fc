// The view's state lives in the URL hash (#/page?range=24h&service=api&...), so a link reopens
// the same view. Presets are relative to now, like Grafana's "last 24 hours"; custom ranges are
// absolute UTC instants.

export const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
export const DEFAULT_PAGE = "overview";

export function readState() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  if (!params.get("range")) params.set("range", "1h");
  return { page: path || DEFAULT_PAGE, params };
}

export function href(page, params) {
  const query = params.toString();
  return `#/${page}${query ? `?${query}` : ""}`;
}

// Keep the shared parameters (range, service) and replace the page's own.
export function linkTo(page, own = {}, from = readState().params) {
  const params = new URLSearchParams();
  for (const name of ["range", "start", "end", "service"]) {
    if (from.get(name)) params.set(name, from.get(name));
  }
  for (const [name, value] of Object.entries(own)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, value);
  }
  return href(page, params);
}

export function go(page, params) {
  location.hash = href(page, params);
}

// "2026-12-02T13:00" (a datetime-local value, meant as UTC) <-> an ISO instant.
export const localInputToIso = (value) => (value ? `${value}:00+00:00` : "");
export const isoToLocalInput = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : "");

export class RangeError_ extends Error {}

// The window and the bucket width every page asks for.
export function timeWindow(params, now = Date.now()) {
  let start;
  let end;
  if (params.get("range") === "custom") {
    start = Date.parse(params.get("start") || "");
    end = Date.parse(params.get("end") || "");
    if (Number.isNaN(start) || Number.isNaN(end)) throw new RangeError_("Pick a start and an end for the custom range.");
    if (start >= end) throw new RangeError_("The custom range's start must be before its end.");
  } else {
    end = now;
    start = now - (RANGES[params.get("range")] || RANGES["1h"]);
  }
  const span = end - start;
  // The finest interval that keeps a chart under ~300 buckets; 5m, 1h and 1d read the rollups.
  const interval = span <= 2 * 3600e3 ? "1m" : span <= 24 * 3600e3 ? "5m" : span <= 14 * 86400e3 ? "1h" : "1d";
  return {
    start_date: new Date(start).toISOString(),
    end_date: new Date(end).toISOString(),
    interval,
    service_name: params.get("service") || undefined,
  };
}

// The window parameters of summaries and lists (no interval).
export function windowOnly(window) {
  const { interval, ...rest } = window;
  return rest;
}
