// One error group: status, counts, occurrences over time, the latest stack trace, and the latest
// occurrences with the request each came from and its trace.

import { get } from "../api.js";
import { draw, stackedBars } from "../charts.js";
import { card, chartBox, el, msText, number, statusClass, table, tile, traceLink, when } from "../format.js";
import { linkTo, windowOnly } from "../state.js";
import { resolveButton, statusBadge } from "./errors.js";

function requestCell(occurrence) {
  const request = occurrence.request;
  if (!request) return el("span", { class: "muted" }, "not stored");
  return el("span", {},
    `${request.method} ${request.endpoint} `,
    el("span", { class: statusClass(request.status_code) }, String(request.status_code)),
    ` · ${msText(request.response_time_ms)}`);
}

export async function render(root, ctx) {
  const fingerprint = ctx.params.get("fingerprint") || "";
  const service = ctx.params.get("group_service") || ctx.window.service_name;
  if (!fingerprint) throw new Error("no fingerprint in the link");
  const scope = { ...ctx.window, service_name: service || undefined };
  const { group, series } = await ctx.load({
    group: () => get(`errors/groups/${encodeURIComponent(fingerprint)}`, { ...windowOnly(scope), occurrences: 25 }),
    series: () => get("errors/timeseries", { ...scope, fingerprint }),
  });
  if (!ctx.current()) return;
  const chart = chartBox("occurrences");
  root.replaceChildren(
    el("p", {}, el("a", { href: linkTo("errors") }, "← All error groups")),
    el("h1", {}, statusBadge(group.status), " ", group.error_message),
    el("p", { class: "muted" }, [group.error_code, group.category, group.severity, group.service_name, `fingerprint ${group.fingerprint}`].filter(Boolean).join(" · ")),
    el("p", {}, resolveButton(group, () => ctx.rerender())),
    el("div", { class: "tiles" },
      tile("events in range", number(group.count)),
      tile("open", number(group.unresolved)),
      tile("affected users", number(group.users)),
      tile("first seen", when(group.first_seen_ever)),
      tile("last seen", when(group.last_seen)),
      tile("last resolved", when(group.last_resolved_at)),
    ),
    card("Occurrences over time", chart),
    card("Stack trace (latest occurrence)", group.stack_trace ? el("pre", { class: "stack" }, group.stack_trace) : el("p", { class: "empty" }, "No stack trace recorded.")),
    group.context ? card("Context (latest occurrence)", el("pre", {}, JSON.stringify(group.context, null, 2))) : null,
    card("Recent occurrences", table([
      { title: "When", value: (o) => when(o.timestamp) },
      { title: "Request", value: requestCell },
      { title: "User", value: (o) => o.user_id ?? o.request?.user_id ?? "–" },
      { title: "Device", value: (o) => o.device_id ?? "–" },
      { title: "Resolved", value: (o) => (o.resolved ? `yes, ${when(o.resolved_at)}` : "no") },
      { title: "Trace", value: traceLink },
    ], group.occurrences, { name: "occurrences" })),
  );
  await draw(chart, stackedBars(series, (p) => p.count, () => "occurrences"), { showlegend: false });
}
