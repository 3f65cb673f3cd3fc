// Frontend: page views over time, top pages, top searches, sessions per day, click targets.

import { get } from "../api.js";
import { barLayout, draw, horizontalBars, stackedBars } from "../charts.js";
import { card, chartBox, el, number, table } from "../format.js";
import { windowOnly } from "../state.js";

export async function render(root, ctx) {
  const { series, summary, sessions, clicks } = await ctx.load({
    series: () => get("user-activities/timeseries", { ...ctx.window, group_by: "activity_type", top: 10 }),
    summary: () => get("user-activities/summary", { ...windowOnly(ctx.window), top: 10 }),
    sessions: () => get("user-activities/sessions", windowOnly(ctx.window)),
    clicks: () => get("user-activities/click-targets", { ...windowOnly(ctx.window), top: 10 }),
  });
  if (!ctx.current()) return;
  const views = { ...series, series: series.series.filter((s) => s.group === "page_view") };
  const pages = summary.top_pages.map((p) => `${p.page_url}${ctx.window.service_name || !p.service_name ? "" : ` (${p.service_name})`}`);
  const searches = summary.top_searches.map((s) => s.search_query);
  const targets = clicks.targets.map((t) => `${t.element_id} · ${t.page_url ?? "?"}`);
  const charts = {
    views: chartBox("page-views"),
    activity: chartBox("activity-types"),
    sessions: chartBox("sessions-per-day"),
    pages: chartBox("top-pages"),
    searches: chartBox("top-searches"),
    clicks: chartBox("click-targets"),
  };
  root.replaceChildren(
    el("h1", {}, "Frontend"),
    el("div", { class: "grid" },
      card("Page views over time", charts.views),
      card("Activity by type", charts.activity),
      card("Sessions per day (UTC)", charts.sessions),
      card("Top pages", charts.pages),
      card("Top searches", charts.searches),
      card("Click targets", charts.clicks),
    ),
    card("Activity types", table([
      { title: "Type", value: (t) => t.activity_type },
      { title: "Service", value: (t) => t.service_name ?? "–" },
      { title: "Events", value: (t) => number(t.count), num: true },
      { title: "Users", value: (t) => number(t.users), num: true },
      { title: "Sessions", value: (t) => number(t.sessions), num: true },
    ], summary.activity_types, { name: "activity-types" })),
  );
  const days = sessions.days;
  await Promise.all([
    draw(charts.views, stackedBars(views, (p) => p.count, () => "page views"), { showlegend: false }),
    draw(charts.activity, stackedBars(series), { barmode: "stack" }),
    draw(charts.sessions, [
      { type: "bar", name: "sessions", x: days.map((d) => d.day), y: days.map((d) => d.sessions) },
      { type: "bar", name: "users", x: days.map((d) => d.day), y: days.map((d) => d.users) },
    ], { xaxis: { type: "date", tickformat: "%Y-%m-%d", dtick: 86400000 } }),
    draw(charts.pages, horizontalBars(pages, summary.top_pages.map((p) => p.count), "events"), barLayout(pages)),
    draw(charts.searches, horizontalBars(searches, summary.top_searches.map((s) => s.count), "searches"), barLayout(searches)),
    draw(charts.clicks, horizontalBars(targets, clicks.targets.map((t) => t.clicks), "clicks"), barLayout(targets)),
  ]);
}
