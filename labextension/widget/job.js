import "uplot/dist/uPlot.min.css";
import { Charts, asker, copyButton, copyText, el, fmtTime, short } from "./common.js";
// the rule the sidebar and Python share (tests/cases/metric_lines.json)
import { holdsMetric } from "../src/metricLine.ts";
import "./job.css"; // esbuild emits both next to the bundle: static/job.css
// Front end of the live job widget (anywidget ESM). The kernel sends bounded state:
// `log_tail` holds the newest lines, each with a sequence number, so this view appends
// only lines it has not seen and keeps its own bounded buffer.
const KEEP = 5000;
const STEPS = ["PENDING", "QUEUED", "CREATED", "DEPLOYING", "RUNNING", "COMPLETED"];
/** Steps a job may skip (Baseten shows them only while it waits for capacity). */
const WAITING = ["PENDING", "QUEUED"];
const TERMINAL = ["COMPLETED", "FAILED", "STOPPED", "DEPLOY_FAILED"];
/** A job still running whose kernel said nothing for this long is "disconnected". */
const SILENCE_MS = 20_000;
/** How long the kernel has to answer a ping before the view says "disconnected". */
const PONG_MS = 5_000;
/** A live session warns this long before it stops itself for idleness. */
const LIVE_WARN_S = 120;
/** The event the Training sidebar (labextension) listens for; it sets the flag below. */
export const OPEN_JOB_EVENT = "bt-jupyter:open-job";
/** The labextension answers this by inserting a code cell below the widget's cell. */
export const INSERT_CELL_EVENT = "bt-jupyter:insert-cell";

const isBlank = (message) => !message.trim();

/** Seconds the job has run (or ran): from RUNNING (else its first status) to its end. */
function runSeconds(status, history) {
  const start = history.find((h) => short(h.status) === "RUNNING") || history[0];
  if (!start) return 0;
  const end = TERMINAL.includes(short(status)) ? new Date(history[history.length - 1].at) : new Date();
  return Math.max(0, (end - new Date(start.at)) / 1000);
}

function fmtSeconds(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

/** The theme's colours, read from CSS variables (job.css maps them to JupyterLab's). */
function render({ model, el: root }) {
  root.classList.add("btj", "btj-live");
  // marks the view once the kernel updated the output with the job's final state
  const markFinal = () => { if (model.get("final_output")) root.dataset.final = "1"; };
  markFinal();
  model.on("change:final_output", markFinal);
  const lines = [];
  let lastSeq = 0;
  let follow = true;
  let filter = "";
  let node = "all";
  let showMetrics = false;
  let showTimes = false;
  let disconnected = false;
  let lastBeat = { value: model.get("beat"), seen: Date.now() };
  let pinged = null; // the timer of an unanswered ping

  const header = el("div", { class: "btj-header" });
  const stepper = el("div", { class: "btj-stepper" });
  const banner = el("div", { class: "btj-banner", "data-testid": "disconnected" });
  const error = el("div", { class: "btj-error" });
  const notice = el("div", { class: "btj-notice", "data-testid": "notice" });
  const warnings = el("div", { class: "btj-notice", "data-testid": "warnings" });
  const liveLine = el("div", { class: "btj-live", "data-testid": "live-session" });
  const outputs = el("div", { class: "btj-muted", "data-testid": "outputs" });
  const buttons = el("div", { class: "btj-buttons" });
  const logBox = el("pre", { class: "btj-logs", "data-testid": "logs" });
  const logInfo = el("span", { class: "btj-muted" });
  const search = el("input", { type: "search", placeholder: "filter logs", class: "btj-search" });
  const nodeSelect = el("select", { class: "btj-node" });
  const followBox = el("input", { type: "checkbox", checked: "", "data-testid": "follow" });
  const metricBox = el("input", { type: "checkbox", "data-testid": "show-metrics" });
  const timeBox = el("input", { type: "checkbox", "data-testid": "show-times" });
  const chartBox = el("div", { class: "btj-charts", "data-testid": "charts" });
  const resources = el("div", { class: "btj-muted", "data-testid": "resources" });
  const sessionBox = el("div", { class: "btj-sessions", "data-testid": "sessions" });
  const ckptBox = el("div");
  const filesBox = el("div", { "data-testid": "files" });
  const deployBox = el("div");
  const dialog = el("div", { class: "btj-dialog", role: "dialog", "data-testid": "confirm" });
  const charts = new Charts(chartBox, root);
  const systemBox = el("div", { class: "btj-charts btj-system", "data-testid": "system-charts" });
  const systemCharts = new Charts(systemBox, root, { options: { x: "time" }, height: 90, empty: "" });

  const confirmThen = asker(root, dialog);

  const jobId = () => model.get("header").id;
  const stop = el("button", { class: "btj-stop", "data-testid": "stop" }, "Stop");
  const refresh = el("button", { "data-testid": "refresh" }, "Refresh");
  const recreate = el("button", { "data-testid": "recreate" }, "Recreate");
  const download = el("button", { "data-testid": "download" }, "Download log");
  const openSidebar = el("button", { "data-testid": "open-sidebar", hidden: "" }, "Open in Training sidebar");
  stop.addEventListener("click", () =>
    confirmThen("Stop training job?", `Job ${jobId()} gets SIGTERM, then SIGKILL after a grace period. `
      + "It cannot be resumed (a new job can load its checkpoints).", "Stop job", () => model.send({ type: "stop" })));
  refresh.addEventListener("click", () => model.send({ type: "refresh" }));
  recreate.addEventListener("click", () =>
    confirmThen("Recreate job?", `Start a new job with the same settings as ${jobId()}; this widget then shows the new job.`,
      "Recreate", () => model.send({ type: "recreate" })));
  download.addEventListener("click", () => model.send({ type: "download" }));
  openSidebar.addEventListener("click", () => {
    const h = model.get("header");
    document.dispatchEvent(new CustomEvent(OPEN_JOB_EVENT, { detail: { jobId: h.id, project: h.project, backend: h.backend } }));
  });
  const actions = [stop, refresh, recreate, download];
  buttons.append(...actions, openSidebar);

  search.addEventListener("input", () => { filter = search.value.toLowerCase(); drawLogs(); });
  nodeSelect.addEventListener("change", () => { node = nodeSelect.value; drawLogs(); });
  followBox.addEventListener("change", () => { follow = followBox.checked; if (follow) drawLogs(); });
  metricBox.addEventListener("change", () => { showMetrics = metricBox.checked; drawLogs(); });
  timeBox.addEventListener("change", () => { showTimes = timeBox.checked; drawLogs(); });

  const controls = el("div", { class: "btj-controls" }, search, nodeSelect,
    el("label", {}, followBox, " follow"), el("label", {}, timeBox, " timestamps"),
    el("label", {}, metricBox, " metric lines"), logInfo);

  const xSelect = el("select", { "data-testid": "chart-x" }, el("option", { value: "step" }, "x: step"), el("option", { value: "time" }, "x: time"));
  const smooth = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", "data-testid": "smoothing" });
  const logScale = el("input", { type: "checkbox", "data-testid": "log-scale" });
  // every node of a multi-node Trainer reports: the leader's by default, the others offered
  const metricNode = el("select", { "data-testid": "metric-node", hidden: "" });
  let chartNode = "0";
  const nodeMetrics = () => {
    const records = model.get("metrics");
    const nodes = [...new Set(records.map((r) => r.node).filter((n) => n !== undefined && n !== null))].sort((a, b) => a - b);
    metricNode.hidden = nodes.length < 2;
    const wanted = ["all", ...nodes.map(String)];
    if (metricNode.options.length !== wanted.length) {
      metricNode.replaceChildren(...wanted.map((n) => el("option", { value: n }, n === "all" ? "metrics: all nodes" : `metrics: node ${n}`)));
      metricNode.value = chartNode;
    }
    if (chartNode === "all" || nodes.length < 2) return records;
    return records.filter((r) => r.node === undefined || r.node === null || String(r.node) === chartNode);
  };
  metricNode.addEventListener("change", () => { chartNode = metricNode.value; redraw(); });
  const redraw = () => charts.draw(nodeMetrics(), true);
  xSelect.addEventListener("change", () => { charts.options.x = xSelect.value; redraw(); });
  smooth.addEventListener("input", () => { charts.options.smoothing = Number(smooth.value); redraw(); });
  logScale.addEventListener("change", () => { charts.options.log = logScale.checked; redraw(); });
  const chartControls = el("div", { class: "btj-controls" }, metricNode, xSelect,
    el("label", {}, "smoothing ", smooth), el("label", {}, logScale, " log scale"));

  root.append(header, stepper, banner, notice, warnings, liveLine, error, outputs, sessionBox, buttons, dialog,
    el("details", { open: "" }, el("summary", {}, "Logs"), controls, logBox),
    el("details", { open: "" }, el("summary", {}, "Metrics"), resources, chartControls, chartBox,
      el("details", {}, el("summary", {}, "System: CPU, memory, GPUs, disk per node"), systemBox)),
    el("details", { open: "" }, el("summary", {}, "Checkpoints"), ckptBox, deployBox),
    el("details", { open: "" }, el("summary", {}, "Files the cell wrote"), filesBox));

  function drawHeader() {
    const h = model.get("header");
    const status = model.get("status");
    const history = model.get("history");
    const seconds = runSeconds(status, history);
    const hours = seconds / 3600;
    const costs = [];
    if (h.gpus && h.gpu_type) costs.push(`${(h.gpus * hours).toFixed(2)} GPU-h`);
    if (h.cost_per_hour) costs.push(`~$${(h.cost_per_hour * hours).toFixed(2)} so far · ~$${h.cost_per_hour.toFixed(2)}/h`);
    else if (h.baseten_cost_per_hour) costs.push(`would cost ~$${h.baseten_cost_per_hour.toFixed(2)}/h on Baseten`);
    header.replaceChildren(
      el("div", { class: "btj-title" }, el("b", {}, h.name || h.id), " ",
        el("span", { class: `btj-badge btj-${short(status).toLowerCase()}`, "data-testid": "status" }, short(status)),
        " ", el("code", { class: "btj-id", "data-testid": "job-id" }, h.id || ""), copyButton(() => h.id)),
      el("div", { class: "btj-muted", "data-testid": "meta" },
        [`project ${h.project}`, h.backend, h.compute, h.base_image,
          `created ${fmtTime(h.created)}`, `elapsed ${fmtSeconds(seconds)}`, ...costs]
          .filter(Boolean).join(" · ")),
    );
    const reached = new Map(history.map((x) => [short(x.status), x.at]));
    const final = short(status);
    const steps = ["FAILED", "STOPPED", "DEPLOY_FAILED"].includes(final) ? [...STEPS.slice(0, -1), final] : STEPS;
    stepper.replaceChildren(...steps.filter((s) => !WAITING.includes(s) || reached.has(s) || s === final).map((s) =>
      el("span", { class: `btj-step ${reached.has(s) ? "btj-done" : ""} ${s === final ? "btj-current" : ""}` },
        s, el("small", {}, reached.has(s) ? ` ${fmtTime(reached.get(s))}` : ""))));
    error.textContent = model.get("error") || "";
    notice.textContent = model.get("notice") || "";
    warnings.replaceChildren(...model.get("warnings").map((w) => el("div", {}, `⚠ ${w}`)));
    drawLive(TERMINAL.includes(short(status)));
    outputs.textContent = model.get("outputs") || "";
    openSidebar.hidden = document.body.dataset.btJupyterSidebar !== "1";
    const ended = TERMINAL.includes(final);
    stop.disabled = ended || disconnected;
    for (const b of [refresh, recreate, download]) b.disabled = disconnected;
    if (ended && follow) drawLogs(); // the end of the log ("Job COMPLETED") is in view
  }

  /** A live session: its idle countdown (the session stops itself after its timeout
   * with no cell), a warning in its last WARN_S. */
  function drawLive(ended) {
    const live = model.get("live");
    if (!live || !live.idle_timeout_s || ended) { liveLine.replaceChildren(); return; }
    const timeout = live.idle_timeout_s;
    const parts = [el("b", {}, live.post_mortem ? "Failed process kept for %bt_debug" : "Live session"),
      ` · ${live.nodes} node(s) · %%bt_remote runs cells in it`];
    let warn = false;
    if (live.busy) parts.push(" · running a cell");
    else if (live.idle_since) {
      const idle = Math.max(0, Date.now() / 1000 - live.idle_since);
      const left = Math.max(0, timeout - idle);
      warn = left <= LIVE_WARN_S;
      parts.push(` · idle ${fmtSeconds(idle)} of ${fmtSeconds(timeout)}`,
        warn ? el("span", { "data-testid": "live-warning" }, ` · stops in ${fmtSeconds(left)} without a cell`)
          : ` · stops in ${fmtSeconds(left)} without a cell`);
    } else parts.push(` · stops after ${fmtSeconds(timeout)} without a cell`);
    liveLine.className = `btj-live${warn ? " btj-live-warn" : ""}`;
    liveLine.replaceChildren(...parts);
  }

  /** The kernel is gone: say so, stop the clock, and disable what needs it. */
  function markDisconnected(why) {
    if (disconnected) return;
    disconnected = true;
    clearInterval(timer);
    root.classList.remove("btj-live");
    root.classList.add("btj-disconnected");
    const command = () => `%bt_job ${jobId()}`;
    banner.replaceChildren(el("span", {}, `disconnected (${why}) — re-attach with `),
      el("code", {}, command()), copyButton(command));
    dialog.replaceChildren();
    drawHeader();
    charts.draw(nodeMetrics());
    for (const b of ckptBox.querySelectorAll("button")) b.disabled = true;
    for (const b of filesBox.querySelectorAll("button")) b.disabled = true;
    for (const b of deployBox.querySelectorAll("button")) b.disabled = true;
  }

  function takeLogs() {
    for (const line of model.get("log_tail")) {
      if (line.seq > lastSeq) { lines.push(line); lastSeq = line.seq; }
    }
    if (lines.length > KEEP) lines.splice(0, lines.length - KEEP);
    const nodes = ["all", ...new Set(lines.map((l) => l.node).filter((n) => n !== null))];
    if (nodeSelect.options.length !== nodes.length) {
      nodeSelect.replaceChildren(...nodes.map((n) => el("option", { value: n }, n === "all" ? "all nodes" : `node ${n}`)));
      nodeSelect.value = node;
    }
    drawLogs();
  }

  const scrollToEnd = () => { if (follow) logBox.scrollTop = logBox.scrollHeight; };

  function drawLogs() {
    const shown = lines.filter((l) => !isBlank(l.message) && (showMetrics || !holdsMetric(l.message)) &&
      (node === "all" || String(l.node) === node) && (!filter || l.message.toLowerCase().includes(filter)));
    const stamp = (l) => (showTimes && l.ts ? `${new Date(l.ts).toISOString().slice(11, 23)} ` : "");
    logBox.textContent = shown.map((l) => `${stamp(l)}${l.node === null ? "[runner]" : `[${l.node}]`} ${l.message}`).join("\n");
    scrollToEnd();
    logInfo.textContent = ` ${model.get("log_count").toLocaleString()} lines (showing ${shown.length})`;
  }

  // Follow: whenever the log becomes visible (Run All scrolls it into view, a cell is
  // re-attached by notebook windowing, a collapsed section opens), its end is in view.
  const seen = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) scrollToEnd(); });
  seen.observe(logBox);
  const resized = new ResizeObserver(() => { scrollToEnd(); charts.resize(); systemCharts.resize(); });
  resized.observe(logBox);
  resized.observe(chartBox);

  const deploy = (checkpoint) => model.send({ type: "deploy", checkpoint });
  const fetched = new Map(); // checkpoint name -> what its download says
  const snippet = el("div", { "data-testid": "load-snippet" });

  /** "Load in notebook": a code cell the user runs (no hidden state); where no
   * labextension inserts it (VS Code, Colab), the code is copied and shown. */
  function loadInNotebook(name) {
    const h = model.get("header");
    const code = `from bt_jupyter import Client, load_hf\n\n`
      + `checkpoint = Client.named(${JSON.stringify(h.backend || "local")}).job(${JSON.stringify(h.id)}).checkpoint(${JSON.stringify(name)})\n`
      + `model, tokenizer = load_hf(checkpoint)  # downloads it first, into ./bt_checkpoints/`;
    offerCell(code, snippet, "the checkpoint");
  }

  /** Insert ``code`` as a cell below (the labextension answers), else copy and show it. */
  function offerCell(code, into, what) {
    const request = { code, handled: false };
    root.dispatchEvent(new CustomEvent(INSERT_CELL_EVENT, { detail: request, bubbles: true }));
    if (request.handled) { into.replaceChildren(el("span", { class: "btj-muted" }, `Inserted a cell below: run it to load ${what}.`)); return; }
    copyText(code).then((done) => into.replaceChildren(
      el("span", { class: "btj-muted" }, done ? "Copied; paste it into a cell and run it:" : "Paste this into a cell and run it:"),
      el("pre", { class: "btj-answer" }, code)));
  }

  function drawCheckpoints() {
    const rows = model.get("checkpoints");
    if (!rows.length) { ckptBox.replaceChildren(el("div", { class: "btj-muted" }, "No checkpoints yet")); return; }
    const size = (c) => (c.writing ? `writing… ${c.size ? `${(c.size / 1e6).toFixed(2)} MB` : ""}` : `${(c.size / 1e6).toFixed(2)} MB`);
    ckptBox.replaceChildren(
      el("button", { "data-testid": "deploy-latest", onclick: () => deploy("latest") }, "Deploy latest"),
      el("table", { class: "btj-table" },
        el("tr", {}, el("th", {}, "name"), el("th", {}, "node"), el("th", {}, "type"), el("th", {}, "size"), el("th", {}, "created"), el("th", {}, ""), el("th", {}, "")),
        ...rows.map((c) => el("tr", {}, el("td", {}, c.name), el("td", {}, (c.nodes || []).join(", ")), el("td", {}, c.type),
          el("td", { "data-testid": "checkpoint-size" }, size(c)), el("td", {}, fmtTime(c.created)),
          el("td", {}, el("button", { onclick: () => deploy(c.name) }, "Deploy"), " ",
            el("button", { "data-testid": "download-checkpoint", disabled: c.writing ? "" : null, onclick: () => {
              fetched.set(c.name, "downloading…"); drawCheckpoints(); model.send({ type: "download_checkpoint", checkpoint: c.name });
            } }, "Download"), " ",
            el("button", { "data-testid": "load-checkpoint", onclick: () => loadInNotebook(c.name) }, "Load in notebook")),
          el("td", { class: "btj-muted", "data-testid": "checkpoint-fetched" }, fetched.get(c.name) || "")))),
      snippet);
    if (disconnected) for (const b of ckptBox.querySelectorAll("button")) b.disabled = true;
  }

  const fileFetched = new Map(); // file path -> what its download says
  const fileSnippet = el("div", { "data-testid": "file-snippet" });
  function loadFileInNotebook(path) {
    const h = model.get("header");
    const code = `from bt_jupyter import Client\n\n`
      + `files = {f.path: f for f in Client.named(${JSON.stringify(h.backend || "local")}).job(${JSON.stringify(h.id)}).files()}\n`
      + `value = files[${JSON.stringify(path)}].load()  # downloads it first, into ./bt_files/`;
    offerCell(code, fileSnippet, "the file");
  }

  /** What the cell wrote into its working folder (kept by the job, not model checkpoints). */
  function drawFiles() {
    const rows = model.get("files").filter((f) => f.node === 0);
    if (!rows.length) {
      filesBox.replaceChildren(el("div", { class: "btj-muted" }, "None yet: what the cell saves in its working folder (model.pth, a plot, a CSV) is kept here when it ends"));
      return;
    }
    filesBox.replaceChildren(el("table", { class: "btj-table" },
      el("tr", {}, el("th", {}, "path"), el("th", {}, "size"), el("th", {}, ""), el("th", {}, "")),
      ...rows.map((f) => el("tr", { "data-testid": "file" }, el("td", {}, el("code", {}, f.path)),
        el("td", {}, f.size < 1e6 ? `${(f.size / 1e3).toFixed(1)} kB` : `${(f.size / 1e6).toFixed(1)} MB`),
        el("td", {}, el("button", { "data-testid": "download-file", onclick: () => {
          fileFetched.set(f.path, "downloading…"); drawFiles(); model.send({ type: "download_file", path: f.path });
        } }, "Download"), " ",
          el("button", { "data-testid": "load-file", onclick: () => loadFileInNotebook(f.path) }, "Load in notebook")),
        el("td", { class: "btj-muted", "data-testid": "file-fetched" }, fileFetched.get(f.path) || "")))),
    fileSnippet);
    if (disconnected) for (const b of filesBox.querySelectorAll("button")) b.disabled = true;
  }

  const answers = new Map();
  function drawDeployments() {
    const rows = model.get("deployments");
    deployBox.replaceChildren(...rows.map((d) => {
      const input = el("input", { class: "btj-search", placeholder: d.kind === "model" ? '{"x": 1}' : "prompt" });
      const answer = el("pre", { class: "btj-answer", "data-testid": `answer-${d.id}` }, answers.get(d.id) || "");
      const live = d.status === "ACTIVE";
      return el("div", { class: "btj-deployment", "data-testid": "deployment" },
        el("div", {}, el("b", {}, d.name), " ",
          el("span", { class: `btj-badge btj-${d.status.toLowerCase()}` }, d.status), " ",
          el("span", { class: "btj-muted" }, `${d.checkpoint} · `),
          d.url ? el("a", { href: d.url, target: "_blank", rel: "noopener" }, d.url) : ""),
        d.error ? el("div", { class: "btj-error" }, d.error) : "",
        live ? el("div", { class: "btj-controls" }, input,
          el("button", { onclick: () => model.send({ type: "try", id: d.id, input: input.value }) }, "Send"),
          el("button", { onclick: () => confirmThen("Stop deployment?",
            `Deployment ${d.name} (${d.id}) stops serving; its URL stops answering.`, "Stop deployment",
            () => model.send({ type: "stop_deployment", id: d.id })) }, "Stop deployment")) : "",
        answer);
    }));
  }

  /** The job's interactive sessions, per node, as `truss train logs` prints them. */
  function drawSessions() {
    const found = model.get("sessions");
    if (!found.length) { sessionBox.replaceChildren(); return; }
    const head = el("tr", {}, ...["node", "auth code", "where to enter it", "expires in", "working directory"]
      .map((h) => el("th", {}, h)));
    const rows = found.map((s) => el("tr", {},
      el("td", {}, s.replica_id),
      el("td", {}, el("code", {}, s.auth_code), " ", copyButton(() => s.auth_code)),
      el("td", {}, el("a", { href: s.auth_url, target: "_blank", rel: "noopener noreferrer" }, s.auth_url)),
      el("td", {}, s.expires_in || ""),
      el("td", {}, el("code", {}, s.working_directory || ""))));
    sessionBox.replaceChildren(el("b", {}, "Interactive sessions"), el("table", {}, head, ...rows));
  }

  function drawResources() {
    resources.textContent = model.get("resources").map((r) =>
      `node ${r.node}: CPU ${(100 * r.cpu).toFixed(0)}% · ${(r.memory_bytes / 1e9).toFixed(2)} GB` +
      (r.gpu === null ? "" : ` · GPU ${(100 * r.gpu).toFixed(0)}%`)).join("   ");
  }

  /** A kernel that was only silent (busy in native code) speaks again: live again. */
  function reconnect() {
    if (!disconnected) return;
    disconnected = false;
    root.classList.add("btj-live");
    root.classList.remove("btj-disconnected");
    banner.replaceChildren();
    timer = setInterval(tick, 1000);
    drawHeader(); drawCheckpoints(); drawDeployments();
  }

  function checkBeat() {
    const beat = model.get("beat");
    if (beat !== lastBeat.value) {
      lastBeat = { value: beat, seen: Date.now() };
      clearTimeout(pinged); pinged = null;
      reconnect();
    }
    const running = !TERMINAL.includes(short(model.get("status")));
    if (running && Date.now() - lastBeat.seen > SILENCE_MS) ping();
  }

  model.on("change:header", drawHeader);
  model.on("change:status", drawHeader);
  model.on("change:history", drawHeader);
  model.on("change:error", drawHeader);
  model.on("change:notice", drawHeader);
  model.on("change:warnings", drawHeader);
  model.on("change:outputs", drawHeader);
  model.on("change:live", drawHeader);
  model.on("change:log_tail", takeLogs);
  model.on("change:metrics", () => charts.draw(nodeMetrics()));
  model.on("change:checkpoints", drawCheckpoints);
  model.on("change:files", drawFiles);
  model.on("change:resources", drawResources);
  model.on("change:sessions", drawSessions);
  model.on("change:system_metrics", () => systemCharts.draw(model.get("system_metrics")));
  model.on("change:deployments", drawDeployments);
  model.on("change:beat", checkBeat);
  // ipywidgets sets the model's comm dead when the kernel restarts or goes away
  // ipywidgets marks the model's comm dead when the kernel restarts or goes away; other
  // frontends may not: a ping the kernel does not answer says the same
  function ping() {
    if (disconnected || pinged) return;
    pinged = setTimeout(() => markDisconnected("the kernel restarted or stopped"), PONG_MS);
    try { model.send({ type: "ping" }); } catch { markDisconnected("the kernel restarted or stopped"); }
  }
  model.on("comm_live_update", ping);
  model.on("msg:custom", (msg) => {
    if (msg.type === "pong") { clearTimeout(pinged); pinged = null; reconnect(); }
    if (msg.type === "try_result") { answers.set(msg.id, msg.text); drawDeployments(); }
    if (msg.type === "checkpoint_downloaded") { fetched.set(msg.checkpoint, msg.text); drawCheckpoints(); }
    if (msg.type === "file_downloaded") { fileFetched.set(msg.path, msg.text); drawFiles(); }
    if (msg.type === "error") { error.textContent = msg.message; }
    if (msg.type === "log_file") {
      const url = URL.createObjectURL(new Blob([msg.text], { type: "text/plain" }));
      const a = el("a", { href: url, download: msg.name });
      document.body.append(a); a.click(); a.remove();
      URL.revokeObjectURL(url);
    }
  });
  // the theme changed (light <-> dark): uPlot's colours are read again
  const themed = new MutationObserver(() => {
    charts.draw(nodeMetrics(), true);
    systemCharts.draw(model.get("system_metrics"), true);
  });
  themed.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light"] });

  // A view of a model restored from a saved notebook (or of a kernel long silent): ask
  // the kernel at once rather than after SILENCE_MS.
  if (Date.now() / 1000 - model.get("beat") > SILENCE_MS / 1000) ping();
  const tick = () => { drawHeader(); checkBeat(); };
  let timer = setInterval(tick, 1000);
  drawHeader(); takeLogs(); drawCheckpoints(); drawFiles(); drawDeployments(); drawResources(); drawSessions();
  charts.draw(nodeMetrics());
  systemCharts.draw(model.get("system_metrics"));
  return () => {
    clearInterval(timer);
    seen.disconnect();
    resized.disconnect();
    themed.disconnect();
    charts.clear();
    systemCharts.clear();
  };
}

export default { render };
