// Devices: a device's state timeline, the transitions between states, the devices that change most.

import { get } from "../api.js";
import { draw, stackedBars, utc } from "../charts.js";
import { card, chartBox, el, number, table, when } from "../format.js";
import { go, linkTo, readState, windowOnly } from "../state.js";

const STATES = ["online", "maintenance", "offline", "error", "unknown"];

function sankey(transitions) {
  // Sources and targets are separate nodes ("from online", "to offline"): a state graph has
  // cycles, a sankey must not.
  const labels = [];
  const index = (label) => (labels.includes(label) ? labels.indexOf(label) : labels.push(label) - 1);
  const link = { source: [], target: [], value: [] };
  for (const t of transitions) {
    link.source.push(index(`from ${t.previous_state ?? "(first)"}`));
    link.target.push(index(`to ${t.new_state}`));
    link.value.push(t.count);
  }
  return [{ type: "sankey", arrangement: "snap", node: { label: labels, pad: 14, thickness: 14 }, link }];
}

function timeline(rows) {
  const ordered = [...rows].reverse(); // the list is newest first
  const states = [...new Set([...STATES, ...ordered.map((r) => r.new_state)])];
  return {
    traces: [{
      type: "scatter",
      mode: "lines+markers",
      line: { shape: "hv", width: 2 },
      marker: { size: 7 },
      x: ordered.map((r) => utc(r.timestamp)),
      y: ordered.map((r) => r.new_state),
      text: ordered.map((r) => `${r.previous_state ?? "–"} → ${r.new_state}${r.reason ? ` (${r.reason})` : ""}`),
      hovertemplate: "%{x}<br>%{text}<extra></extra>",
      name: "state",
    }],
    layout: { yaxis: { type: "category", categoryorder: "array", categoryarray: states, rangemode: "normal" }, showlegend: false, hovermode: "closest" },
  };
}

export async function render(root, ctx) {
  const { summary, series } = await ctx.load({
    summary: () => get("device-states/summary", { ...windowOnly(ctx.window), top: 15, limit: 50 }),
    series: () => get("device-states/timeseries", { ...ctx.window, group_by: "transition", top: 8 }),
  });
  if (!ctx.current()) return;
  const device = ctx.params.get("device") || summary.devices[0]?.device_id || "";
  const { history } = device
    ? await ctx.load({ history: () => get("device-states", { ...windowOnly(ctx.window), device_id: device, limit: 1000 }) })
    : { history: { data: [] } };
  if (!ctx.current()) return;
  const charts = { timeline: chartBox("state-timeline"), flows: chartBox("transitions", true), over: chartBox("transitions-over-time") };
  const input = el("input", { id: "device-filter", name: "device", list: "known-devices", value: device, placeholder: "device id" });
  const picker = el("form", { class: "filters", id: "device-form" },
    el("label", {}, "Device", input),
    el("datalist", { id: "known-devices" }, summary.devices.map((d) => el("option", { value: d.device_id }))),
    el("button", { type: "submit" }, "Show"));
  picker.addEventListener("submit", (event) => {
    event.preventDefault();
    const { page, params } = readState();
    if (input.value.trim()) params.set("device", input.value.trim());
    else params.delete("device");
    go(page, params);
  });
  root.replaceChildren(
    el("h1", {}, "Devices"),
    card(device ? `State timeline of ${device}` : "State timeline", picker, charts.timeline),
    el("div", { class: "grid" },
      card("Transitions between states", charts.flows),
      card("Transitions over time", charts.over),
    ),
    card("Devices that change most", table([
      { title: "Device", value: (d) => el("a", { href: linkTo("devices", { device: d.device_id }) }, d.device_id) },
      { title: "Service", value: (d) => d.service_name ?? "–" },
      { title: "Changes", value: (d) => number(d.changes), num: true },
      { title: "Last change", value: (d) => when(d.last_changed_at) },
    ], summary.devices, { name: "busiest-devices" })),
  );
  const line = timeline(history.data);
  await Promise.all([
    draw(charts.timeline, line.traces, line.layout),
    draw(charts.flows, sankey(summary.transitions), { margin: { l: 8, r: 8, t: 8, b: 8 } }),
    draw(charts.over, stackedBars(series), { barmode: "stack" }),
  ]);
}
