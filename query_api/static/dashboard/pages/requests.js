// Requests: the list with every filter of GET /requests and cursor paging, each row linked to
// its trace.

import { get } from "../api.js";
import { el, msText, number, statusClass, table, traceLink, when } from "../format.js";
import { card } from "../format.js";
import { go, readState, windowOnly } from "../state.js";

const FILTERS = [
  ["endpoint", "Endpoint", "/api/v1/devices"],
  ["route", "Route", "/api/v1/devices/{device_id}"],
  ["method", "Method", "GET"],
  ["status_code", "Status", "404"],
  ["min_status_code", "Status ≥", "500"],
  ["max_status_code", "Status ≤", "599"],
  ["min_response_time_ms", "Time ≥ (ms)", "100"],
  ["max_response_time_ms", "Time ≤ (ms)", ""],
  ["user_id", "User", ""],
  ["trace_id", "Trace id", "32 hex"],
];
const PAGE_SIZE = 50;

function filterForm(params) {
  const inputs = FILTERS.map(([name, label, placeholder]) =>
    name === "method"
      ? el("label", {}, label, el("select", { name, id: `filter-${name}` },
          ["", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].map((m) =>
            el("option", { value: m, selected: (params.get(name) || "") === m }, m || "any"))))
      : el("label", {}, label, el("input", { name, id: `filter-${name}`, value: params.get(name) || "", placeholder })));
  const form = el("form", { class: "filters", id: "request-filters" }, inputs,
    el("button", { type: "submit" }, "Filter"),
    el("button", { type: "button", class: "quiet", id: "clear-filters" }, "Clear"));
  const apply = (values) => {
    const { page, params: current } = readState();
    for (const [name] of FILTERS) {
      const value = (values.get(name) || "").trim();
      if (value) current.set(name, value);
      else current.delete(name);
    }
    current.delete("cursor");
    go(page, current);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply(new FormData(form));
  });
  form.querySelector("#clear-filters").addEventListener("click", () => apply(new Map()));
  return form;
}

export async function render(root, ctx) {
  const params = ctx.params;
  const filters = Object.fromEntries(FILTERS.map(([name]) => [name, params.get(name) || undefined]));
  const { page } = await ctx.load({
    page: () => get("requests", { ...windowOnly(ctx.window), ...filters, limit: PAGE_SIZE, cursor: params.get("cursor") || undefined }),
  });
  if (!ctx.current()) return;
  const next = el("button", { type: "button", id: "next-page", disabled: !page.next_cursor }, "Next page →");
  next.addEventListener("click", () => {
    const { page: name, params: current } = readState();
    current.set("cursor", page.next_cursor);
    go(name, current);
  });
  const first = el("button", { type: "button", class: "quiet", id: "first-page", disabled: !params.get("cursor") }, "First page");
  first.addEventListener("click", () => {
    const { page: name, params: current } = readState();
    current.delete("cursor");
    go(name, current);
  });
  root.replaceChildren(
    el("h1", {}, "Requests"),
    card(null, filterForm(params)),
    card(null,
      table([
        { title: "When", value: (r) => when(r.timestamp) },
        { title: "Service", value: (r) => r.service_name ?? "–" },
        { title: "Method", value: (r) => r.method },
        { title: "Endpoint", value: (r) => el("div", {}, r.endpoint, r.route && r.route !== r.endpoint ? el("div", { class: "sub" }, r.route) : null) },
        { title: "Status", value: (r) => el("span", { class: statusClass(r.status_code) }, String(r.status_code)) },
        { title: "Time", value: (r) => msText(r.response_time_ms), num: true },
        { title: "User", value: (r) => (r.user_id ? r.user_id.slice(0, 14) : "–") },
        { title: "Bytes out", value: (r) => number(r.response_size_bytes), num: true },
        { title: "Error", value: (r) => (r.error_message ? r.error_message.slice(0, 80) : "") },
        { title: "Trace", value: traceLink },
      ], page.data, { name: "requests", empty: "No request matches these filters in this range." }),
      el("div", { class: "pager" }, first, next, el("span", { class: "muted", id: "page-size" }, `${page.data.length} rows`)),
    ),
  );
}
