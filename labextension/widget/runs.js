import "uplot/dist/uPlot.min.css";
import { Charts, asker, el } from "./common.js";
import "./job.css";
import "./runs.css";
// Front end of the runs widget (anywidget ESM): `%bt_compare` and the sweep widget.
// The kernel sends one row per run, every run's metric records (`series` names the run),
// and the facts table; this view charts the runs together and shows what differed.
const TERMINAL = ["COMPLETED", "FAILED", "STOPPED", "DEPLOY_FAILED", "NOT SUBMITTED", "CANCELLED"];

function render({ model, el: root }) {
  root.classList.add("btj", "btj-runs");
  const title = el("div", { class: "btj-title", "data-testid": "runs-title" });
  const note = el("div", { class: "btj-notice", "data-testid": "runs-note" });
  const message = el("div", { class: "btj-muted", "data-testid": "runs-message" });
  const runsBox = el("div", { "data-testid": "runs" });
  const chartBox = el("div", { class: "btj-charts", "data-testid": "runs-charts" });
  const tableBox = el("div", { "data-testid": "facts" });
  const dialog = el("div", { class: "btj-dialog", role: "dialog" });
  const charts = new Charts(chartBox, root, { empty: "No metric is common to these runs yet" });

  const metricSelect = el("select", { "data-testid": "rank-metric" });
  const deployBest = el("button", { class: "btj-primary", "data-testid": "deploy-best" }, "Deploy best");
  const stopAll = el("button", { class: "btj-stop", "data-testid": "stop-all" }, "Stop all");
  const xSelect = el("select", {}, el("option", { value: "step" }, "x: step"), el("option", { value: "time" }, "x: time"));
  const smooth = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0" });
  const logScale = el("input", { type: "checkbox" });
  const onlyDiff = el("input", { type: "checkbox", checked: "", "data-testid": "only-differences" });
  const redraw = () => charts.draw(model.get("series"), true);
  xSelect.addEventListener("change", () => { charts.options.x = xSelect.value; redraw(); });
  smooth.addEventListener("input", () => { charts.options.smoothing = Number(smooth.value); redraw(); });
  logScale.addEventListener("change", () => { charts.options.log = logScale.checked; redraw(); });
  onlyDiff.addEventListener("change", drawTable);
  metricSelect.addEventListener("change", () => model.send({ type: "metric", name: metricSelect.value }));

  const confirmThen = asker(root, dialog);

  deployBest.addEventListener("click", () => {
    const metric = model.get("metric");
    confirmThen("Deploy the best run?", `The latest checkpoint of the ended run with the best ${metric} is deployed.`,
      "Deploy", () => model.send({ type: "deploy_best", metric }));
  });
  stopAll.addEventListener("click", () => confirmThen("Stop the sweep?",
    "Every running job of the sweep is stopped and no more are submitted.", "Stop all",
    () => model.send({ type: "stop_all" })));

  const sweepControls = el("div", { class: "btj-controls" }, el("label", {}, "rank by ", metricSelect), deployBest, stopAll);
  root.append(title, note, sweepControls, message, dialog, runsBox,
    el("details", { open: "" }, el("summary", {}, "Metrics"),
      el("div", { class: "btj-controls" }, xSelect, el("label", {}, "smoothing ", smooth), el("label", {}, logScale, " log scale")),
      chartBox),
    el("details", { open: "" }, el("summary", {}, "What differed"),
      el("div", { class: "btj-controls" }, el("label", {}, onlyDiff, " only differences")), tableBox));

  function drawHead() {
    title.replaceChildren(el("b", {}, model.get("title")));
    note.textContent = model.get("note");
    message.textContent = model.get("message");
    const metrics = model.get("metrics");
    const metric = model.get("metric");
    if ([...metricSelect.options].map((o) => o.value).join() !== metrics.join()) {
      metricSelect.replaceChildren(...metrics.map((m) => el("option", { value: m }, m)));
    }
    metricSelect.value = metric;
    const sweep = model.get("mode") === "sweep";
    stopAll.hidden = !sweep;
    stopAll.disabled = model.get("done");
    deployBest.disabled = !metric || !model.get("runs").some((r) => r.best || r.final);
    deployBest.textContent = metric ? `Deploy best by ${metric}` : "Deploy best";
  }

  function drawRuns() {
    const rows = model.get("runs");
    const metric = model.get("metric");
    const names = [...new Set(rows.flatMap((r) => Object.keys(r.swept || {})))];
    const sweep = model.get("mode") === "sweep";
    const bests = rows.map((r) => Number.parseFloat(r.best || r.final)).filter(Number.isFinite);
    const lowerBetter = /loss|err|perplexity|ppl|mse|mae/i.test(metric);
    const top = bests.length ? (lowerBetter ? Math.min(...bests) : Math.max(...bests)) : null;
    const head = el("tr", {}, el("th", {}, "run"), el("th", {}, "status"), ...names.map((n) => el("th", {}, n)),
      el("th", {}, metric ? `final ${metric}` : "final"), el("th", {}, metric ? `best ${metric}` : "best"), sweep ? el("th", {}, "") : "");
    const body = rows.map((r) => {
      const status = r.status || "";
      const isTop = top !== null && Number.parseFloat(r.best || r.final) === top;
      return el("tr", { class: isTop ? "btj-best" : "", "data-testid": "run-row" },
        el("td", {}, r.label), el("td", {}, el("span", { class: `btj-badge btj-${status.toLowerCase().replace(/ /g, "-")}` }, status)),
        ...names.map((n) => el("td", {}, (r.swept || {})[n] ?? "")),
        el("td", {}, r.final || ""), el("td", {}, r.best || ""),
        sweep ? el("td", {}, el("button", { disabled: !r.id || TERMINAL.includes(status) ? "" : null,
          onclick: () => model.send({ type: "stop", id: r.id }) }, "Stop")) : "");
    });
    runsBox.replaceChildren(el("table", { class: "btj-table" }, head, ...body));
  }

  function drawTable() {
    const rows = model.get("table").filter((r) => !onlyDiff.checked || r.differs || r.name === "status");
    const labels = model.get("runs").filter((r) => r.id).map((r) => r.label);
    tableBox.replaceChildren(el("table", { class: "btj-table btj-facts" },
      el("tr", {}, el("th", {}, ""), ...labels.map((l) => el("th", {}, l))),
      ...rows.map((r) => el("tr", { class: r.differs ? "btj-differs" : "" },
        el("th", {}, r.name), ...r.values.map((v) => el("td", {}, v))))));
  }

  model.on("change:title", drawHead);
  model.on("change:note", drawHead);
  model.on("change:message", drawHead);
  model.on("change:metrics", drawHead);
  model.on("change:metric", () => { drawHead(); drawRuns(); });
  model.on("change:done", drawHead);
  model.on("change:runs", () => { drawHead(); drawRuns(); drawTable(); });
  model.on("change:series", () => charts.draw(model.get("series")));
  model.on("change:table", drawTable);
  const resized = new ResizeObserver(() => charts.resize());
  resized.observe(chartBox);
  const themed = new MutationObserver(redraw);
  themed.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });
  drawHead(); drawRuns(); drawTable();
  charts.draw(model.get("series"));
  return () => { resized.disconnect(); themed.disconnect(); charts.clear(); };
}

export default { render };
