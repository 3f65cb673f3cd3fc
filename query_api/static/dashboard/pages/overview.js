// Overview: per service, requests/min, 4xx and 5xx rates and p50/p95/p99 over time; the slowest
// and the most failing routes.

import { get } from "../api.js";
import { draw, lines, ms, percent, seriesName } from "../charts.js";
import { card, chartBox, el, msText, number, pct, table, tile } from "../format.js";
import { linkTo, windowOnly } from "../state.js";

const routeName = (row) => `${row.method} ${row.route ?? "(no route matched)"}`;

function routeLink(row) {
  return el("a", { href: linkTo("requests", { route: row.route, method: row.method, ...(row.service_name ? { service: row.service_name } : {}) }) }, routeName(row));
}

export async function render(root, ctx) {
  const { series, summary } = await ctx.load({
    series: () => get("requests/timeseries", { ...ctx.window, group_by: "service_name", top: 10 }),
    summary: () => get("requests/summary", { ...windowOnly(ctx.window), limit: 500 }),
  });
  if (!ctx.current()) return;
  const total = summary.total;
  const charts = {
    rate: chartBox("requests-per-minute"),
    server: chartBox("server-error-rate"),
    client: chartBox("client-error-rate"),
    latency: chartBox("latency", true),
  };
  const routes = summary.routes;
  const slowest = [...routes].filter((r) => r.p95_ms !== null).sort((a, b) => b.p95_ms - a.p95_ms).slice(0, 10);
  const failing = [...routes]
    .filter((r) => r.server_errors + r.client_errors > 0)
    .sort((a, b) => b.server_errors - a.server_errors || b.error_rate - a.error_rate || b.client_errors - a.client_errors)
    .slice(0, 10);
  const service = { title: "Service", value: (r) => r.service_name ?? "–" };
  root.replaceChildren(
    el("h1", {}, "Overview"),
    el("div", { class: "tiles" },
      tile("requests", number(total?.count ?? 0)),
      tile("requests / min", number(total ? total.count / ((Date.parse(ctx.window.end_date) - Date.parse(ctx.window.start_date)) / 60e3) : 0, 1)),
      tile("5xx rate", pct(total?.error_rate)),
      tile("4xx rate", pct(total?.client_error_rate)),
      tile("p95", msText(total?.p95_ms)),
    ),
    el("div", { class: "grid" },
      card("Requests / min per service", charts.rate),
      card("Latency p50 / p95 / p99 per service", charts.latency),
      card("5xx rate per service", charts.server),
      card("4xx rate per service", charts.client),
    ),
    el("div", { class: "grid" },
      card("Slowest routes (p95)", table([
        { title: "Route", value: routeLink }, service,
        { title: "Requests", value: (r) => number(r.count), num: true },
        { title: "p50", value: (r) => msText(r.p50_ms), num: true },
        { title: "p95", value: (r) => msText(r.p95_ms), num: true },
        { title: "p99", value: (r) => msText(r.p99_ms), num: true },
      ], slowest, { name: "slowest-routes" })),
      card("Most failing routes", table([
        { title: "Route", value: routeLink }, service,
        { title: "Requests", value: (r) => number(r.count), num: true },
        { title: "5xx", value: (r) => number(r.server_errors), num: true },
        { title: "5xx rate", value: (r) => pct(r.error_rate), num: true },
        { title: "4xx rate", value: (r) => pct(r.client_error_rate), num: true },
      ], failing, { name: "failing-routes", empty: "No failing route in this range." })),
    ),
  );
  const perMinute = (point) => point.rate_per_s * 60;
  const latency = ["p50_ms", "p95_ms", "p99_ms"].flatMap((key, i) =>
    lines(series, (point) => point[key], { dash: ["dot", "dash", "solid"][i], suffix: ` ${key.slice(0, 3)}` }));
  await Promise.all([
    draw(charts.rate, lines(series, perMinute, { name: (s) => seriesName(s) })),
    draw(charts.server, lines(series, (point) => point.server_error_rate), percent),
    draw(charts.client, lines(series, (point) => point.client_error_rate), percent),
    draw(charts.latency, latency, ms),
  ]);
}
