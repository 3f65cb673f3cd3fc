// Jobs: success rate per type over time, duration percentiles, top error codes, the devices that
// fail most.

import { get } from "../api.js";
import { barLayout, draw, horizontalBars, lines, ms, percent, stackedBars } from "../charts.js";
import { card, chartBox, el, msText, number, pct, table, tile, when } from "../format.js";
import { linkTo, windowOnly } from "../state.js";

export async function render(root, ctx) {
  const { series, summary, devices } = await ctx.load({
    series: () => get("jobs/timeseries", { ...ctx.window, group_by: "job_type", top: 10 }),
    summary: () => get("jobs/summary", { ...windowOnly(ctx.window), top: 5 }),
    devices: () => get("jobs/failing-devices", { ...windowOnly(ctx.window), top: 10 }),
  });
  if (!ctx.current()) return;
  const codes = new Map();
  for (const type of summary.job_types) {
    for (const code of type.top_error_codes) codes.set(code.error_code, (codes.get(code.error_code) || 0) + code.count);
  }
  const topCodes = [...codes].sort((a, b) => b[1] - a[1]).slice(0, 10);
  const charts = {
    success: chartBox("success-rate"),
    duration: chartBox("duration", true),
    runs: chartBox("runs"),
    codes: chartBox("error-codes"),
  };
  const total = summary.total;
  root.replaceChildren(
    el("h1", {}, "Jobs"),
    el("div", { class: "tiles" },
      tile("jobs", number(total?.count ?? 0)),
      tile("success rate", pct(total?.success_rate)),
      tile("failed", number(total?.failed ?? 0)),
      tile("timed out", number(total?.timed_out ?? 0)),
      tile("p95 duration", msText(total?.p95_duration_ms)),
    ),
    el("div", { class: "grid" },
      card("Success rate per job type", charts.success),
      card("Duration p50 / p95 per job type", charts.duration),
      card("Runs per job type", charts.runs),
      card("Top error codes", charts.codes),
    ),
    el("div", { class: "grid" },
      card("Job types", table([
        { title: "Type", value: (t) => t.job_type },
        { title: "Service", value: (t) => t.service_name ?? "–" },
        { title: "Runs", value: (t) => number(t.count), num: true },
        { title: "Success", value: (t) => pct(t.success_rate), num: true },
        { title: "p50", value: (t) => msText(t.p50_duration_ms), num: true },
        { title: "p95", value: (t) => msText(t.p95_duration_ms), num: true },
        { title: "Top error codes", value: (t) => t.top_error_codes.map((c) => `${c.error_code} (${c.count})`).join(", ") || "–" },
      ], summary.job_types, { name: "job-types" })),
      card("Devices that fail most", table([
        { title: "Device", value: (d) => el("a", { href: linkTo("devices", { device: d.device_id }) }, d.device_id) },
        { title: "Service", value: (d) => d.service_name ?? "–" },
        { title: "Jobs", value: (d) => number(d.jobs), num: true },
        { title: "Failed", value: (d) => number(d.failures), num: true },
        { title: "Failure rate", value: (d) => pct(d.failure_rate), num: true },
        { title: "Last failure", value: (d) => when(d.last_failed_at) },
      ], devices.devices, { name: "failing-devices", empty: "No device failed a job in this range." })),
    ),
  );
  const duration = [
    ...lines(series, (p) => p.p50_duration_ms, { dash: "dot", suffix: " p50" }),
    ...lines(series, (p) => p.p95_duration_ms, { suffix: " p95" }),
  ];
  const labels = topCodes.map(([code]) => code);
  await Promise.all([
    draw(charts.success, lines(series, (p) => p.success_rate), percent),
    draw(charts.duration, duration, ms),
    draw(charts.runs, stackedBars(series), { barmode: "stack" }),
    draw(charts.codes, horizontalBars(labels, topCodes.map(([, n]) => n), "jobs"), barLayout(labels)),
  ]);
}
