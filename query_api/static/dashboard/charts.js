// Every chart is Plotly.js (served by the service itself); this module only turns the API's
// series into Plotly traces and layouts, the same way on every page.

const CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
const FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1d2330" };
const BASE_LAYOUT = {
  font: FONT,
  margin: { l: 56, r: 16, t: 8, b: 36 },
  paper_bgcolor: "#fff",
  plot_bgcolor: "#fff",
  legend: { orientation: "h", y: -0.18, font: { size: 11 } },
  hovermode: "x unified",
  xaxis: { type: "date", gridcolor: "#eef0f4", title: { text: "" } },
  yaxis: { gridcolor: "#eef0f4", rangemode: "tozero", automargin: true },
};

// The API's instants are UTC ("...+00:00"); the charts show UTC wall time.
export const utc = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, "") : iso);

export const seriesName = (series, fallback = "all") =>
  series.other ? "other" : series.group === null || series.group === undefined ? fallback : String(series.group);

function layout(extra = {}) {
  return {
    ...BASE_LAYOUT,
    ...extra,
    xaxis: { ...BASE_LAYOUT.xaxis, ...(extra.xaxis || {}) },
    yaxis: { ...BASE_LAYOUT.yaxis, ...(extra.yaxis || {}) },
  };
}

function hasValues(traces) {
  return traces.some((trace) =>
    ["y", "x", "values", "value"].some((key) =>
      (trace[key] || (trace.link && trace.link[key]) || []).some((v) => v !== null && v !== undefined && v !== 0),
    ),
  );
}

// Draws ``traces`` into ``element``; an empty chart says so instead of showing blank axes.
export async function draw(element, traces, extraLayout = {}) {
  const empty = !hasValues(traces);
  element.dataset.empty = String(empty);
  const shown = layout(extraLayout);
  if (empty) {
    shown.annotations = [
      { text: "No data in this range", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
        font: { color: "#6b7385", size: 13 } },
    ];
  }
  await Plotly.react(element, traces, shown, CONFIG);
  element.dataset.drawn = "true";
  return element;
}

// One line per series of a time series answer; ``value(point)`` picks what is drawn.
export function lines(answer, value, { name = seriesName, dash, suffix = "" } = {}) {
  return answer.series.map((series) => ({
    type: "scatter",
    // Markers only where there are few points: over hundreds they hide the line.
    mode: series.points.length > 72 ? "lines" : "lines+markers",
    marker: { size: 4 },
    line: { width: 2, dash },
    connectgaps: false,
    name: `${name(series)}${suffix}`,
    x: series.points.map((point) => utc(point.bucket)),
    y: series.points.map(value),
  }));
}

export function stackedBars(answer, value = (point) => point.count, name = seriesName) {
  return answer.series.map((series) => ({
    type: "bar",
    name: name(series),
    x: series.points.map((point) => utc(point.bucket)),
    y: series.points.map(value),
  }));
}

export function horizontalBars(labels, values, name = "") {
  return [{ type: "bar", orientation: "h", name, y: labels, x: values, marker: { color: "#2f6fde" },
    hovertemplate: "%{y}: %{x}<extra></extra>" }];
}

export const barLayout = (labels) => ({
  hovermode: "closest",
  margin: { l: 12, r: 16, t: 8, b: 30 },
  xaxis: { type: "linear", rangemode: "tozero" },
  yaxis: { type: "category", autorange: "reversed", automargin: true, categoryorder: "array", categoryarray: labels },
  showlegend: false,
});

export async function sparkline(element, points) {
  const traces = [{
    type: "bar",
    x: points.map((point) => utc(point.bucket)),
    y: points.map((point) => point.count),
    marker: { color: "#c9372c" },
    hoverinfo: "skip",
  }];
  await Plotly.react(element, traces, {
    margin: { l: 0, r: 0, t: 0, b: 0 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    xaxis: { visible: false, type: "date" }, yaxis: { visible: false, rangemode: "tozero" }, showlegend: false,
    bargap: 0.15,
  }, { staticPlot: true, displayModeBar: false });
  element.dataset.drawn = "true";
  element.dataset.empty = String(!hasValues(traces));
}

export const percent = { yaxis: { tickformat: ".0%", rangemode: "tozero" } };
export const ms = { yaxis: { ticksuffix: " ms", rangemode: "tozero" } };
