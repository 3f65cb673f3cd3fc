// Errors: the groups by fingerprint, Sentry-style, with status, a sparkline, resolve and reopen.

import { get, patch } from "../api.js";
import { draw, sparkline, stackedBars } from "../charts.js";
import { card, chartBox, el, number, table, when } from "../format.js";
import { go, linkTo, readState, windowOnly } from "../state.js";

const FILTERS = {
  all: () => true,
  open: (g) => g.status !== "resolved",
  new: (g) => g.status === "new",
  regressed: (g) => g.status === "regressed",
  ongoing: (g) => g.status === "ongoing",
  resolved: (g) => g.status === "resolved",
};

// Sparklines: few enough buckets that 50 groups stay under the API's 10,000 points.
function sparkInterval(window) {
  const span = Date.parse(window.end_date) - Date.parse(window.start_date);
  return span <= 2 * 3600e3 ? "1m" : span <= 2 * 86400e3 ? "1h" : "1d";
}

export function statusBadge(status) {
  return el("span", { class: `badge ${status}`, dataset: { status } }, status);
}

export async function setResolved(group, resolved, button) {
  button.disabled = true;
  try {
    await patch(`errors/groups/${encodeURIComponent(group.fingerprint)}`, { service_name: group.service_name ?? undefined }, { resolved });
  } finally {
    button.disabled = false;
  }
}

export function resolveButton(group, after) {
  const resolved = group.status === "resolved";
  const button = el("button", {
    type: "button",
    class: resolved ? "quiet" : "",
    dataset: { action: resolved ? "reopen" : "resolve", fingerprint: group.fingerprint },
  }, resolved ? "Reopen" : "Resolve");
  button.addEventListener("click", async () => {
    try {
      await setResolved(group, !resolved, button);
      after();
    } catch (error) {
      if (error.status !== 401) alert(`Could not change the group: ${error.message}`);
    }
  });
  return button;
}

export async function render(root, ctx) {
  const shown = ctx.params.get("status") || "all";
  const { summary, sparks, categories } = await ctx.load({
    summary: () => get("errors/summary", { ...windowOnly(ctx.window), limit: 100 }),
    sparks: () => get("errors/timeseries", { ...ctx.window, interval: sparkInterval(ctx.window), group_by: "fingerprint", top: 50 }),
    categories: () => get("errors/timeseries", { ...ctx.window, group_by: "category", top: 10 }),
  });
  if (!ctx.current()) return;
  const pointsOf = new Map(sparks.series.filter((s) => !s.other).map((s) => [s.group, s.points]));
  const groups = summary.groups.filter(FILTERS[shown] || FILTERS.all);
  const counts = Object.fromEntries(Object.keys(FILTERS).map((k) => [k, summary.groups.filter(FILTERS[k]).length]));
  const picker = el("select", { id: "status-filter", name: "status" },
    Object.keys(FILTERS).map((k) => el("option", { value: k, selected: k === shown }, `${k} (${counts[k]})`)));
  picker.addEventListener("change", () => {
    const { page, params } = readState();
    params.set("status", picker.value);
    go(page, params);
  });
  const spark = new Map();
  const rows = table([
    { title: "Status", value: (g) => statusBadge(g.status) },
    { title: "Error", value: (g) => el("div", {},
        el("a", { href: linkTo("error-group", { fingerprint: g.fingerprint, group_service: g.service_name ?? "" }), class: "group-link" }, g.error_message),
        el("div", { class: "sub" }, [g.error_code, g.category, g.severity, g.service_name].filter(Boolean).join(" · "))) },
    { title: "Events", value: (g) => number(g.count), num: true },
    { title: "Users", value: (g) => number(g.users), num: true },
    { title: "First seen", value: (g) => when(g.first_seen_ever) },
    { title: "Last seen", value: (g) => when(g.last_seen) },
    { title: "Trend", value: (g) => {
        // The 50 biggest groups have a series; a smaller one's trend is not worth a chart.
        if (!pointsOf.has(g.fingerprint)) return el("span", { class: "muted" }, "–");
        const box = el("div", { class: "sparkline", dataset: { fingerprint: g.fingerprint } });
        spark.set(box, pointsOf.get(g.fingerprint));
        return box;
      } },
    { title: "", value: (g) => el("span", { class: "row-actions" }, resolveButton(g, () => ctx.rerender())) },
  ], groups, { name: "error-groups", empty: "No error group matches." });
  const over = chartBox("errors-by-category");
  root.replaceChildren(
    el("h1", {}, "Errors"),
    card("Errors over time by category", over),
    card(null, el("div", { class: "filters" }, el("label", {}, "Status", picker)), rows),
  );
  await Promise.all([
    draw(over, stackedBars(categories), { barmode: "stack" }),
    ...[...spark].map(([box, points]) => sparkline(box, points)),
  ]);
}
