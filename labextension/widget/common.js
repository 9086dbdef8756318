import uPlot from "uplot";
// What the job widget and the runs widget (compare, sweeps) share: DOM building, copy
// buttons and the uPlot charts, themed from JupyterLab's CSS variables.
const SERIES_VARS = ["--btj-s1", "--btj-s2", "--btj-s3", "--btj-s4", "--btj-s5", "--btj-s6"];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}


/** Where the labextension is loaded, it answers this with JupyterLab's own dialog. */
export const CONFIRM_EVENT = "bt-jupyter:confirm";

/**
 * `confirmThen(title, body, accept, action)` for a view: JupyterLab's dialog where the
 * labextension answers CONFIRM_EVENT (widgets and panels ask alike), else a themed one
 * drawn in `dialog`.
 */
export function asker(root, dialog) {
  return (title, body, accept, action) => {
    const request = { title, body, accept, handled: false, resolve: (yes) => { if (yes) action(); } };
    root.dispatchEvent(new CustomEvent(CONFIRM_EVENT, { detail: request, bubbles: true }));
    if (request.handled) return;
    const ok = el("button", { class: "btj-primary", "data-testid": "confirm-ok" }, accept);
    const cancel = el("button", { "data-testid": "confirm-cancel" }, "Cancel");
    const close = () => dialog.replaceChildren();
    ok.addEventListener("click", () => { close(); action(); });
    cancel.addEventListener("click", close);
    dialog.replaceChildren(el("div", { class: "btj-dialog-box" }, el("b", {}, title), el("div", {}, body),
      el("div", { class: "btj-buttons" }, cancel, ok)));
    ok.focus();
  };
}

export const short = (status) => (status || "").replace("TRAINING_JOB_", "");
export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

export function themeColors(root) {
  const css = getComputedStyle(root);
  const get = (name) => css.getPropertyValue(name).trim();
  return { fg: get("--btj-fg"), muted: get("--btj-muted"), grid: get("--btj-grid"), series: SERIES_VARS.map(get) };
}

export function withAlpha(color, alpha) {
  // a faint copy of a series colour for the raw line under a smoothed one
  return `color-mix(in srgb, ${color} ${Math.round(alpha * 100)}%, transparent)`;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    const done = document.execCommand("copy");
    area.remove();
    return done;
  }
}

export function copyButton(text, label = "copy") {
  const button = el("button", { class: "btj-copy", title: `copy ${text}`, "data-testid": "copy" }, label);
  button.addEventListener("click", async () => {
    const done = await copyText(text());
    button.textContent = done ? "copied" : "copy failed";
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}

export function ema(values, alpha) {
  let last = null;
  return values.map((v) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return null;
    last = last === null ? v : alpha * last + (1 - alpha) * v;
    return last;
  });
}

/**
 * Metric records -> one panel per metric: {name, x: [...], series: [{label, values}]}.
 * Records of different runs (`series`: the run's label) or nodes that report separately
 * are a series each.
 */
export function panels(records, xKey) {
  const names = [...new Set(records.flatMap((r) => Object.keys(r)))].filter(
    (k) => !["step", "time", "node", "series"].includes(k),
  );
  const keyOf = (r) => r.series ?? r.node ?? null;
  const byRun = records.some((r) => r.series !== undefined);
  const nodes = [...new Set(records.map(keyOf))];
  return names.map((name) => {
    const rows = records.filter((r) => typeof r[name] === "number");
    const xOf = (r, i) => (xKey === "time" ? r.time : (r.step ?? i));
    const xs = [...new Set(rows.map(xOf))].filter((x) => typeof x === "number").sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const series = nodes
      .map((node) => {
        const values = new Array(xs.length).fill(null);
        rows.forEach((r, i) => {
          if (keyOf(r) === node && index.has(xOf(r, i))) values[index.get(xOf(r, i))] = r[name];
        });
        const label = byRun ? String(node) : nodes.length > 1 ? `${name} node ${node ?? "-"}` : name;
        return { label, values };
      })
      .filter((s) => s.values.some((v) => v !== null));
    return { name, x: xs, series };
  });
}

/** One uPlot per metric, redrawn in place while the set of series stays the same. */
export class Charts {
  /** `look`: the panels' height and what an empty chart area says. */
  constructor(box, root, look = {}) {
    this.box = box;
    this.root = root;
    this.plots = new Map();
    this.key = "";
    this.options = { x: "step", smoothing: 0, log: false, ...(look.options || {}) };
    this.height = look.height || 150;
    this.empty = look.empty ?? "No metrics yet: call log_metrics(step=..., loss=...)";
  }

  width() {
    return Math.max(260, Math.min(560, (this.box.clientWidth || 480) - 8));
  }

  draw(records, force = false) {
    this.records = records;
    if (!this.root.isConnected) {
      // not in the page yet: its theme's colours cannot be read; draw once it is
      requestAnimationFrame(() => this.draw(this.records, force));
      return;
    }
    const found = panels(records, this.options.x);
    if (!found.length) {
      this.clear();
      this.box.replaceChildren(this.empty ? el("div", { class: "btj-muted" }, this.empty) : "");
      return;
    }
    const key = JSON.stringify([this.options, found.map((p) => [p.name, p.series.map((s) => s.label)])]);
    if (force || key !== this.key) {
      this.clear();
      this.box.replaceChildren();
      this.key = key;
      for (const panel of found) this.plots.set(panel.name, this.create(panel));
    }
    for (const panel of found) this.plots.get(panel.name).setData(this.data(panel));
  }

  data(panel) {
    const { smoothing, log } = this.options;
    const clean = (values) => values.map((v) => (log && v !== null && v <= 0 ? null : v));
    const columns = [panel.x];
    for (const s of panel.series) {
      if (smoothing > 0) columns.push(clean(s.values), clean(ema(s.values, smoothing)));
      else columns.push(clean(s.values));
    }
    return columns;
  }

  create(panel) {
    const colors = themeColors(this.root);
    this.themed = Boolean(colors.fg);
    const axis = { stroke: colors.fg, grid: { stroke: colors.grid, width: 1 }, ticks: { stroke: colors.grid, width: 1 } };
    const series = [{ label: this.options.x === "time" ? "time" : "step", value: (u, v) => (v === null ? "–" : this.options.x === "time" ? new Date(v * 1000).toLocaleTimeString() : String(v)) }];
    panel.series.forEach((s, n) => {
      const color = colors.series[n % colors.series.length] || colors.fg;
      const value = (u, v) => (v === null || v === undefined ? "–" : Number(v).toPrecision(4));
      if (this.options.smoothing > 0) {
        series.push({ label: `${s.label} (raw)`, stroke: withAlpha(color, 0.35), width: 1, value, spanGaps: true, points: { show: false } });
        series.push({ label: s.label, stroke: color, width: 1.5, value, spanGaps: true, points: { show: false } });
      } else {
        series.push({ label: s.label, stroke: color, width: 1.5, value, spanGaps: true, points: { show: panel.x.length < 60 } });
      }
    });
    const wrap = el("div", { class: "btj-chart", "data-testid": `chart-${panel.name}` }, el("div", { class: "btj-chart-title" }, panel.name));
    this.box.append(wrap);
    return new uPlot(
      {
        width: this.width(),
        height: this.height,
        series,
        scales: { x: { time: this.options.x === "time" }, y: this.options.log ? { distr: 3 } : {} },
        axes: [{ ...axis, label: this.options.x, labelSize: 16 }, { ...axis, size: 56 }],
        cursor: { drag: { x: true, y: false } },
        legend: { live: true },
      },
      this.data(panel),
      wrap,
    );
  }

  resize() {
    if (this.plots.size && !this.themed) { this.draw(this.records || [], true); return; }
    for (const plot of this.plots.values()) plot.setSize({ width: this.width(), height: this.height });
  }

  clear() {
    for (const plot of this.plots.values()) plot.destroy();
    this.plots.clear();
    this.key = "";
  }
}

