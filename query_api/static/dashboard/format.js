// Small DOM and number helpers shared by the pages.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const card = (title, ...children) => el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...children);
export const chartBox = (name, tall = false) => el("div", { class: `chart${tall ? " tall" : ""}`, dataset: { chart: name } });

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
export const pct = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`);
export const msText = (value) => (value === null || value === undefined ? "–" : `${number(value, value < 10 ? 1 : 0)} ms`);
export const when = (iso) => (iso ? `${iso.slice(0, 19).replace("T", " ")}` : "–");

// columns: [{title, value(row) -> Node|string, num}]
export function table(columns, rows, { empty = "Nothing in this range.", name } = {}) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  return el(
    "table",
    { dataset: { table: name || "" } },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : "" }, c.title)))),
    el(
      "tbody",
      {},
      rows.map((row) => el("tr", {}, columns.map((c) => el("td", { class: c.num ? "num" : "" }, c.value(row))))),
    ),
  );
}

export const tile = (label, value) => el("div", { class: "tile" }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));

export function statusClass(code) {
  return `status-${String(code)[0]}xx`;
}

export function traceLink(row) {
  if (row.trace_url) return el("a", { href: row.trace_url, target: "_blank", rel: "noopener", class: "trace" }, "trace ↗");
  return row.trace_id ? el("code", { title: "Set HOMEPOT_ANALYTICS_JAEGER_URL for a link" }, row.trace_id.slice(0, 12)) : "–";
}
