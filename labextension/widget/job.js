import "./job.css"; // esbuild emits it next to the bundle: static/job.css
// Front end of the live job widget (anywidget ESM). The kernel sends bounded state:
// `log_tail` holds the newest lines, each with a sequence number, so this view appends
// only lines it has not seen and keeps its own bounded buffer.
const KEEP = 5000;
const STEPS = ["PENDING", "QUEUED", "CREATED", "DEPLOYING", "RUNNING", "COMPLETED"];
/** Steps a job may skip (Baseten shows them only while it waits for capacity). */
const WAITING = ["PENDING", "QUEUED"];
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function short(status) {
  return (status || "").replace("TRAINING_JOB_", "");
}

function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function elapsed(header, status, history) {
  const start = history.find((h) => short(h.status) === "RUNNING") || history[0];
  if (!start) return "";
  const endEntry = ["COMPLETED", "FAILED", "STOPPED", "DEPLOY_FAILED"].includes(short(status))
    ? history[history.length - 1]
    : null;
  const end = endEntry ? new Date(endEntry.at) : new Date();
  const seconds = Math.max(0, Math.round((end - new Date(start.at)) / 1000));
  const m = Math.floor(seconds / 60);
  return `${m}m ${String(seconds % 60).padStart(2, "0")}s`;
}

function plot(records) {
  const keys = [...new Set(records.flatMap((r) => Object.keys(r)))].filter(
    (k) => !["step", "time"].includes(k),
  );
  const box = el("div", { class: "btj-plot" });
  if (!keys.length) {
    box.append(el("div", { class: "btj-muted" }, "No metrics yet: call log_metrics(step=..., loss=...)"));
    return box;
  }
  const W = 420, H = 140, P = 28;
  const xs = records.map((r, i) => (r.step ?? i));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "btj-svg");
  keys.forEach((key, n) => {
    const points = records.filter((r) => typeof r[key] === "number");
    if (!points.length) return;
    const ys = points.map((r) => r[key]);
    const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const span = y1 - y0 || 1;
    const path = points
      .map((r, i) => {
        const x = P + ((((r.step ?? i) - x0) / ((x1 - x0) || 1)) * (W - 2 * P));
        const y = H - P - (((r[key] - y0) / span) * (H - 2 * P));
        return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      })
      .join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
    line.setAttribute("d", path);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLORS[n % COLORS.length]);
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  });
  box.append(svg);
  const legend = el("div", { class: "btj-legend" });
  keys.forEach((key, n) => {
    const last = [...records].reverse().find((r) => typeof r[key] === "number");
    legend.append(
      el("span", { style: `color:${COLORS[n % COLORS.length]}` }, `■ ${key} ${last ? Number(last[key]).toPrecision(4) : ""}`),
    );
  });
  box.append(legend);
  return box;
}

function render({ model, el: root }) {
  root.classList.add("btj");
  const lines = [];
  let lastSeq = 0;
  let follow = true;
  let filter = "";
  let node = "all";

  const header = el("div", { class: "btj-header" });
  const stepper = el("div", { class: "btj-stepper" });
  const error = el("div", { class: "btj-error" });
  const notice = el("div", { class: "btj-notice", "data-testid": "notice" });
  const buttons = el("div", { class: "btj-buttons" });
  const logBox = el("pre", { class: "btj-logs", "data-testid": "logs" });
  const logInfo = el("span", { class: "btj-muted" });
  const search = el("input", { type: "search", placeholder: "filter logs", class: "btj-search" });
  const nodeSelect = el("select", { class: "btj-node" });
  const followBox = el("input", { type: "checkbox", checked: "" });
  const plotBox = el("div");
  const resources = el("div", { class: "btj-muted", "data-testid": "resources" });
  const ckptBox = el("div");
  const deployBox = el("div");

  const stop = el("button", { class: "btj-stop", "data-testid": "stop" }, "Stop");
  const refresh = el("button", {}, "Refresh");
  const recreate = el("button", {}, "Recreate");
  const download = el("button", {}, "Download log");
  stop.addEventListener("click", () => {
    if (window.confirm(`Stop job ${model.get("header").id}?`)) model.send({ type: "stop" });
  });
  refresh.addEventListener("click", () => model.send({ type: "refresh" }));
  recreate.addEventListener("click", () => model.send({ type: "recreate" }));
  download.addEventListener("click", () => model.send({ type: "download" }));
  buttons.append(stop, refresh, recreate, download);

  search.addEventListener("input", () => { filter = search.value.toLowerCase(); drawLogs(); });
  nodeSelect.addEventListener("change", () => { node = nodeSelect.value; drawLogs(); });
  followBox.addEventListener("change", () => { follow = followBox.checked; if (follow) drawLogs(); });

  const controls = el("div", { class: "btj-controls" }, search, nodeSelect,
    el("label", {}, followBox, " follow"), logInfo);

  root.append(header, stepper, notice, error, buttons,
    el("details", { open: "" }, el("summary", {}, "Logs"), controls, logBox),
    el("details", { open: "" }, el("summary", {}, "Metrics"), resources, plotBox),
    el("details", { open: "" }, el("summary", {}, "Checkpoints"), ckptBox, deployBox));

  function drawHeader() {
    const h = model.get("header");
    const status = model.get("status");
    const history = model.get("history");
    const cost = h.cost_per_hour ? ` · ~$${(h.cost_per_hour).toFixed(2)}/h` : "";
    header.replaceChildren(
      el("div", { class: "btj-title" }, el("b", {}, h.name || h.id), " ",
        el("span", { class: `btj-badge btj-${short(status).toLowerCase()}`, "data-testid": "status" }, short(status))),
      el("div", { class: "btj-muted" },
        [h.id, `project ${h.project}`, h.backend, h.compute, h.base_image,
          `created ${fmtTime(h.created)}`, `elapsed ${elapsed(h, status, history)}`]
          .filter(Boolean).join(" · ") + cost),
    );
    const reached = new Map(history.map((x) => [short(x.status), x.at]));
    const final = short(status);
    const steps = ["FAILED", "STOPPED", "DEPLOY_FAILED"].includes(final) ? [...STEPS.slice(0, -1), final] : STEPS;
    stepper.replaceChildren(...steps.filter((s) => !WAITING.includes(s) || reached.has(s) || s === final).map((s) =>
      el("span", { class: `btj-step ${reached.has(s) ? "btj-done" : ""} ${s === final ? "btj-current" : ""}` },
        s, el("small", {}, reached.has(s) ? ` ${fmtTime(reached.get(s))}` : ""))));
    error.textContent = model.get("error") || "";
    notice.textContent = model.get("notice") || "";
    stop.disabled = ["COMPLETED", "FAILED", "STOPPED", "DEPLOY_FAILED"].includes(final);
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
    if (follow) drawLogs();
  }

  function drawLogs() {
    const shown = lines.filter((l) => (node === "all" || String(l.node) === node) &&
      (!filter || l.message.toLowerCase().includes(filter)));
    logBox.textContent = shown.map((l) => `${l.node === null ? "[runner]" : `[${l.node}]`} ${l.message}`).join("\n");
    logBox.scrollTop = logBox.scrollHeight;
    logInfo.textContent = ` ${model.get("log_count").toLocaleString()} lines (showing the last ${shown.length})`;
  }

  const deploy = (checkpoint) => model.send({ type: "deploy", checkpoint });

  function drawCheckpoints() {
    const rows = model.get("checkpoints");
    if (!rows.length) { ckptBox.replaceChildren(el("div", { class: "btj-muted" }, "No checkpoints yet")); return; }
    ckptBox.replaceChildren(
      el("button", { "data-testid": "deploy-latest", onclick: () => deploy("latest") }, "Deploy latest"),
      el("table", { class: "btj-table" },
        el("tr", {}, el("th", {}, "name"), el("th", {}, "node"), el("th", {}, "type"), el("th", {}, "size"), el("th", {}, "created"), el("th", {}, "")),
        ...rows.map((c) => el("tr", {}, el("td", {}, c.name), el("td", {}, (c.nodes || []).join(", ")), el("td", {}, c.type),
          el("td", {}, `${(c.size / 1e6).toFixed(2)} MB`), el("td", {}, fmtTime(c.created)),
          el("td", {}, el("button", { onclick: () => deploy(c.name) }, "Deploy"))))));
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
          el("span", { class: "btj-muted" }, `${d.checkpoint} · ${d.url}`)),
        d.error ? el("div", { class: "btj-error" }, d.error) : "",
        live ? el("div", { class: "btj-controls" }, input,
          el("button", { onclick: () => model.send({ type: "try", id: d.id, input: input.value }) }, "Send"),
          el("button", { onclick: () => model.send({ type: "stop_deployment", id: d.id }) }, "Stop deployment")) : "",
        answer);
    }));
  }

  model.on("change:header", drawHeader);
  model.on("change:status", drawHeader);
  model.on("change:history", drawHeader);
  model.on("change:error", drawHeader);
  model.on("change:notice", drawHeader);
  model.on("change:log_tail", takeLogs);
  model.on("change:metrics", () => plotBox.replaceChildren(plot(model.get("metrics"))));
  model.on("change:checkpoints", drawCheckpoints);
  model.on("change:resources", () => {
    resources.textContent = model.get("resources").map((r) =>
      `node ${r.node}: CPU ${(100 * r.cpu).toFixed(0)}% · ${(r.memory_bytes / 1e9).toFixed(2)} GB` +
      (r.gpu === null ? "" : ` · GPU ${(100 * r.gpu).toFixed(0)}%`)).join("   ");
  });
  model.on("change:deployments", drawDeployments);
  model.on("msg:custom", (msg) => {
    if (msg.type === "try_result") { answers.set(msg.id, msg.text); drawDeployments(); }
    if (msg.type === "error") { error.textContent = msg.message; }
    if (msg.type === "log_file") {
      const url = URL.createObjectURL(new Blob([msg.text], { type: "text/plain" }));
      const a = el("a", { href: url, download: msg.name });
      document.body.append(a); a.click(); a.remove();
      URL.revokeObjectURL(url);
    }
  });
  drawHeader(); takeLogs(); drawCheckpoints(); drawDeployments();
  plotBox.replaceChildren(plot(model.get("metrics")));
  const timer = setInterval(drawHeader, 1000);
  return () => clearInterval(timer);
}

export default { render };
