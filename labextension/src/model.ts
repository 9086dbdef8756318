/**
 * The data logic of the Training sidebar, free of JupyterLab imports so that jest can test
 * it directly: wire types of the server extension, status filters and grouping, elapsed
 * time, log merging, the running count and the `%%bt_train` line of "Run cell on Baseten".
 */

import { holdsMetric } from './metricLine';

/** Where a job runs: the embedded local service or Baseten's cloud. */
export type Backend = 'local' | 'baseten';

export const BACKENDS: readonly Backend[] = ['local', 'baseten'];

/** `status_short` as the server sends it. */
export type StatusShort =
  | 'PENDING'
  | 'QUEUED'
  | 'CREATED'
  | 'DEPLOYING'
  | 'RUNNING'
  | 'COMPLETED'
  | 'FAILED'
  | 'STOPPED'
  | 'DEPLOY_FAILED'
  | 'UNKNOWN';

export interface ServerConfig {
  backends: Backend[];
  default_backend: Backend;
  baseten_configured: boolean;
  version: string;
}

export interface Project {
  id: string;
  name: string;
  created_at: string;
  updated_at: string;
}

export interface Job {
  id: string;
  name: string | null;
  project: string;
  project_id: string;
  status: string;
  status_short: StatusShort;
  is_terminal: boolean;
  created_at: string;
  updated_at: string;
  elapsed_s: number;
  node_count: number;
  gpu: string | null;
  error_message: string | null;
  /** Why a PENDING or QUEUED job waits, or what a CREATED one is doing: not an error. */
  notice?: string | null;
}

/** A page of the job list (`GET bt-jupyter/jobs?limit=N`), newest first. */
export interface JobPage {
  jobs: Job[];
  /** Jobs in the whole list (the page is the newest of them). */
  total: number;
  /** Jobs of the whole list in each status (`status_short`). */
  status_counts: Partial<Record<StatusShort, number>>;
  /** Where the next page starts; null on the last page. */
  cursor: string | null;
}

/** A page as the server answered it; an older server answers every job, without counts. */
export function pageOf(reply: Partial<JobPage> & { jobs: Job[] }): JobPage {
  const counts: Partial<Record<StatusShort, number>> = {};
  for (const job of reply.jobs) {
    counts[job.status_short] = (counts[job.status_short] ?? 0) + 1;
  }
  return {
    jobs: reply.jobs,
    total: reply.total ?? reply.jobs.length,
    status_counts: reply.status_counts ?? counts,
    cursor: reply.cursor ?? null
  };
}

export interface HistoryEntry {
  status: string;
  status_short: StatusShort;
  at: string;
}

export interface Checkpoint {
  name: string;
  created_at: string;
  size_bytes: number | null;
  checkpoint_type: string | null;
  base_model: string | null;
  lora_rank: number | null;
}

export interface Deployment {
  id: string;
  name: string;
  status: string;
  url: string | null;
  checkpoint: string | null;
  /** "hf" (completions: a prompt), "model" (a class Model: JSON), "vllm" (Baseten). */
  kind?: string;
  error?: string | null;
}

/** What the job costs so far (the panel's header). */
export interface JobCost {
  gpu_hours: number;
  /** USD per hour: billed on Baseten; on the local backend what Baseten would charge. */
  per_hour: number;
  so_far: number;
  /** "baseten": Baseten's own instance price; "table": the documented table. */
  source: string;
  billed: boolean;
}

export interface JobDetail {
  job: Job;
  history: HistoryEntry[];
  checkpoints: Checkpoint[];
  deployments: Deployment[];
  cost?: JobCost;
}

/** One `log_metrics` record: step, time (epoch s), node, and the metric values. */
export interface MetricRecord {
  step: number | null;
  time: number;
  node: number | null;
  [name: string]: number | null;
}

// ------------------------------------------------------------------------------ compare

/** One run of a comparison: its status, swept values, and final/best of the ranking metric. */
export interface ComparedRun {
  id: string;
  label: string;
  status: StatusShort;
  swept: Record<string, string>;
  final: string;
  best: string;
}

/** A metric record of a compared run: `series` is the run's label. */
export interface ComparedRecord {
  step: number | null;
  time: number | null;
  series: string;
  [name: string]: number | string | null;
}

/** `GET /bt-jupyter/compare`: the same view of several runs as `%bt_compare`. */
export interface Comparison {
  note: string;
  metrics: string[];
  metric: string;
  runs: ComparedRun[];
  series: ComparedRecord[];
  table: { name: string; values: string[]; differs: boolean }[];
  done: boolean;
}

/**
 * Compared records as chart records: each run becomes a "node" (its index), and the
 * labels map says which run each one is.
 */
export function comparedRecords(comparison: Comparison): {
  records: MetricRecord[];
  labels: Map<number, string>;
} {
  const index = new Map(comparison.runs.map((run, i) => [run.label, i]));
  const records = comparison.series.map(({ series, ...values }) => {
    const record: MetricRecord = { step: null, time: 0, node: index.get(series) ?? null };
    for (const [key, value] of Object.entries(values)) {
      if (typeof value === 'number' || value === null) {
        record[key] = value;
      }
    }
    record.time = typeof values.time === 'number' ? values.time : 0;
    return record;
  });
  return { records, labels: new Map(comparison.runs.map((run, i) => [i, run.label])) };
}

// ------------------------------------------------------------------------------ deployments

/** Deployment statuses on the way to serving (the panel keeps polling through them). */
export const DEPLOYMENT_PENDING: ReadonlySet<string> = new Set([
  'DEPLOYING',
  'BUILDING',
  'LOADING_MODEL',
  'WAKING_UP',
  'UPDATING',
  'CREATED'
]);
/** Statuses in which a deployment answers calls. */
export const DEPLOYMENT_SERVING: ReadonlySet<string> = new Set(['ACTIVE', 'SCALED_TO_ZERO']);

export function deploymentPending(deployments: readonly Pick<Deployment, 'status'>[]): boolean {
  return deployments.some(d => DEPLOYMENT_PENDING.has(d.status));
}

/** `$1.23` (or `$0.0042` below a cent, so a short local run does not read as free). */
export function formatUsd(value: number): string {
  if (!Number.isFinite(value) || value <= 0) {
    return '$0';
  }
  return value < 0.01 ? `$${value.toPrecision(2)}` : `$${value.toFixed(2)}`;
}

export interface LogLine {
  /** Epoch milliseconds. */
  timestamp: number;
  message: string;
  node: number | null;
}

export interface LogsPage {
  logs: LogLine[];
  /** Opaque: handed back unchanged to get the lines after this page. */
  cursor: string;
  /** The job is terminal and every line has been returned. */
  done: boolean;
  /** Where the lines before this page start, to read back through history ('': none). */
  earlier?: string;
}

// ------------------------------------------------------------------------------ statuses

/** Statuses of a job that has not ended yet (what the status bar counts). */
export const ACTIVE_STATUSES: ReadonlySet<StatusShort> = new Set<StatusShort>([
  'PENDING',
  'QUEUED',
  'CREATED',
  'DEPLOYING',
  'RUNNING'
]);

/** The sidebar's status filter; each one covers a few statuses. */
export type StatusFilter = 'all' | 'running' | 'completed' | 'failed' | 'stopped';

export interface FilterOption {
  id: StatusFilter;
  label: string;
  /** The statuses shown; `null` means every status. */
  statuses: ReadonlySet<StatusShort> | null;
}

export const FILTERS: readonly FilterOption[] = [
  { id: 'all', label: 'All', statuses: null },
  // "Running" includes jobs about to run: the user asks "what is going on now".
  { id: 'running', label: 'Running', statuses: ACTIVE_STATUSES },
  { id: 'completed', label: 'Completed', statuses: new Set(['COMPLETED']) },
  { id: 'failed', label: 'Failed', statuses: new Set(['FAILED', 'DEPLOY_FAILED']) },
  { id: 'stopped', label: 'Stopped', statuses: new Set(['STOPPED']) }
];

export function isActive(job: Pick<Job, 'status_short'>): boolean {
  return ACTIVE_STATUSES.has(job.status_short);
}

export function matchesFilter(job: Pick<Job, 'status_short'>, filter: StatusFilter): boolean {
  const option = FILTERS.find(f => f.id === filter);
  return !option || option.statuses === null || option.statuses.has(job.status_short);
}

export function filterJobs<T extends Pick<Job, 'status_short'>>(
  jobs: readonly T[],
  filter: StatusFilter
): T[] {
  return jobs.filter(job => matchesFilter(job, filter));
}

/** How many jobs each filter would show (the numbers beside the filter buttons). */
export function filterCounts(jobs: readonly Pick<Job, 'status_short'>[]): Record<StatusFilter, number> {
  const counts = { all: 0, running: 0, completed: 0, failed: 0, stopped: 0 };
  for (const option of FILTERS) {
    counts[option.id] = filterJobs(jobs, option.id).length;
  }
  return counts;
}

/** Jobs that have not ended: the "⚙ N training" of the status bar. */
export function runningCount(jobs: readonly Pick<Job, 'status_short'>[]): number {
  return jobs.filter(isActive).length;
}

/** How many jobs of the whole list each filter would show, from its counts per status. */
export function filterCountsOf(statusCounts: JobPage['status_counts']): Record<StatusFilter, number> {
  const counts = { all: 0, running: 0, completed: 0, failed: 0, stopped: 0 };
  for (const option of FILTERS) {
    for (const [status, count] of Object.entries(statusCounts)) {
      if (option.statuses === null || option.statuses.has(status as StatusShort)) {
        counts[option.id] += count ?? 0;
      }
    }
  }
  return counts;
}

/** A CSS modifier per status, so the badge colour follows the status family. */
export function statusTone(
  status: StatusShort
): 'pending' | 'running' | 'success' | 'danger' | 'muted' {
  switch (status) {
    case 'CREATED':
    case 'DEPLOYING':
      return 'pending';
    case 'RUNNING':
      return 'running';
    case 'COMPLETED':
      return 'success';
    case 'FAILED':
    case 'DEPLOY_FAILED':
      return 'danger';
    default:
      return 'muted';
  }
}

export interface ProjectGroup {
  name: string;
  project: Project | null;
  jobs: Job[];
}

/**
 * Jobs under their projects, most recently active project first. Projects the list does not
 * name (a job seen before the project list refreshed) still get a group; empty projects are
 * kept only when `keepEmpty` (the "All" filter shows them so a new project is visible).
 */
export function groupByProject(
  projects: readonly Project[],
  jobs: readonly Job[],
  keepEmpty: boolean
): ProjectGroup[] {
  const groups = new Map<string, ProjectGroup>();
  for (const project of projects) {
    groups.set(project.name, { name: project.name, project, jobs: [] });
  }
  for (const job of jobs) {
    let group = groups.get(job.project);
    if (!group) {
      group = { name: job.project, project: null, jobs: [] };
      groups.set(job.project, group);
    }
    group.jobs.push(job);
  }
  const latest = (g: ProjectGroup): string =>
    [g.project?.updated_at ?? '', ...g.jobs.map(j => j.updated_at)].reduce((a, b) =>
      a > b ? a : b
    );
  return [...groups.values()]
    .filter(g => keepEmpty || g.jobs.length > 0)
    .sort((a, b) => (latest(b) > latest(a) ? 1 : latest(b) < latest(a) ? -1 : 0));
}

// ------------------------------------------------------------------------------ time

/** `elapsed_s` as a short human string: 42s, 3m 05s, 1h 02m, 2d 03h. */
export function formatElapsed(seconds: number): string {
  const s = Math.max(0, Math.floor(Number.isFinite(seconds) ? seconds : 0));
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }
  return `${Math.floor(s / 86400)}d ${pad(Math.floor((s % 86400) / 3600))}h`;
}

/**
 * Elapsed seconds now: the server's figure plus the time since it was fetched, for jobs
 * still active (so the sidebar ticks between polls); ended jobs keep the server's figure.
 */
export function liveElapsed(job: Pick<Job, 'elapsed_s' | 'status_short'>, fetchedAtMs: number, nowMs: number): number {
  if (!isActive(job)) {
    return job.elapsed_s;
  }
  return job.elapsed_s + Math.max(0, nowMs - fetchedAtMs) / 1000;
}

/** How long ago an ISO time was: "just now", "42s ago", "3m ago", "2h ago", "5d ago". */
export function formatAgo(iso: string, nowMs: number): string {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) {
    return '';
  }
  const s = Math.max(0, Math.floor((nowMs - t) / 1000));
  if (s < 5) {
    return 'just now';
  }
  if (s < 60) {
    return `${s}s ago`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ago`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ago`;
  }
  return `${Math.floor(s / 86400)}d ago`;
}

/** The first 8 characters of a job id: enough to tell same-named jobs apart. */
export function shortId(id: string): string {
  return id.length > 8 ? id.slice(0, 8) : id;
}

/** A panel's tab title: `name · id · 3m ago` (the name alone cannot tell reruns apart). */
export function jobTitle(job: Pick<Job, 'id' | 'name' | 'created_at'>, nowMs: number): string {
  const ago = formatAgo(job.created_at, nowMs);
  return [job.name ?? null, shortId(job.id), ago || null].filter(Boolean).join(' · ');
}

/** An ISO time as local `HH:MM:SS` (today) or `YYYY-MM-DD HH:MM:SS`. */
export function formatTime(iso: string, now: Date = new Date()): string {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) {
    return iso;
  }
  const pad = (n: number): string => String(n).padStart(2, '0');
  const clock = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  if (t.toDateString() === now.toDateString()) {
    return clock;
  }
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${clock}`;
}

/** Bytes as B / KB / MB / GB (powers of 1024), for the checkpoints table. */
export function formatBytes(bytes: number | null): string {
  if (bytes === null || !Number.isFinite(bytes)) {
    return '–';
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

// ------------------------------------------------------------------------------ logs

const logKey = (line: LogLine): string => `${line.timestamp}\u0000${line.node}\u0000${line.message}`;

/**
 * Append `incoming` to `existing` without repeating lines already shown, keeping the order
 * the server sent. Only lines no newer than the last one shown can be repeats (a re-sent
 * tail after a reconnect); they are matched as a multiset against the shown lines of the
 * same period, so a message printed twice in one millisecond is still shown twice.
 * Keeps at most `max` lines (the oldest go), so a long job cannot grow the page forever.
 */
export function mergeLogs(
  existing: readonly LogLine[],
  incoming: readonly LogLine[],
  max = 10000
): LogLine[] {
  if (incoming.length === 0) {
    return existing.length > max ? existing.slice(existing.length - max) : [...existing];
  }
  const last = existing.length ? existing[existing.length - 1].timestamp : -Infinity;
  const since = Math.min(...incoming.map(l => l.timestamp));
  const seen = new Map<string, number>();
  for (let i = existing.length - 1; i >= 0 && existing[i].timestamp >= since; i--) {
    const key = logKey(existing[i]);
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  const merged = [...existing];
  for (const line of incoming) {
    if (line.timestamp <= last) {
      const key = logKey(line);
      const count = seen.get(key) ?? 0;
      if (count > 0) {
        seen.set(key, count - 1);
        continue;
      }
    }
    merged.push(line);
  }
  return merged.length > max ? merged.slice(merged.length - max) : merged;
}

/**
 * Put `older` (a page read back through history) before `existing`. The page may end
 * with lines of the millisecond `existing` starts with (the cloud reads back by time):
 * those already shown are dropped, matched as a multiset as in `mergeLogs`.
 */
export function prependLogs(existing: readonly LogLine[], older: readonly LogLine[]): LogLine[] {
  if (existing.length === 0) {
    return [...older];
  }
  const first = existing[0].timestamp;
  const seen = new Map<string, number>();
  for (let i = 0; i < existing.length && existing[i].timestamp <= first; i++) {
    const key = logKey(existing[i]);
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  const kept = older.filter(line => {
    if (line.timestamp < first) {
      return true;
    }
    const count = seen.get(logKey(line)) ?? 0;
    seen.set(logKey(line), count - 1);
    return count <= 0;
  });
  return [...kept, ...existing];
}

export function isMetricLine(line: Pick<LogLine, 'message'>): boolean {
  return holdsMetric(line.message);
}

export interface LogViewFilter {
  /** Show `[bt-metric]` lines (hidden by default: the chart shows them). */
  showMetrics: boolean;
  /** Case-insensitive text to find; empty shows every line. */
  search: string;
  /** Only this node's lines; null for all. */
  node: number | null;
}

/** The lines the log view shows under its toggles, search and node choice (no blanks). */
export function visibleLogLines(lines: readonly LogLine[], filter: LogViewFilter): LogLine[] {
  const needle = filter.search.trim().toLowerCase();
  return lines.filter(
    line =>
      line.message.trim() !== '' && // a node's blank line is no row of its own
      (filter.showMetrics || !isMetricLine(line)) &&
      (filter.node === null || line.node === filter.node) &&
      (!needle || line.message.toLowerCase().includes(needle))
  );
}

/** A clock time with milliseconds, for the log view's time column. */
export function formatClock(timestamp: number): string {
  const t = new Date(timestamp);
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}`;
}

/** One log line as text: `HH:MM:SS.mmm [node N] message`. */
export function formatLogLine(line: LogLine, multiNode: boolean): string {
  const t = new Date(line.timestamp);
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  const clock = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}.${pad(t.getMilliseconds(), 3)}`;
  const node = multiNode && line.node !== null ? ` [node ${line.node}]` : '';
  return `${clock}${node} ${line.message}`;
}

// ------------------------------------------------------------------------------ magic line

export interface MagicDefaults {
  backend: Backend;
  /** Empty: let the notebook decide (`%bt_project` or the magic's default). */
  project: string;
}

/** POSIX shell quoting, as Python's `shlex.quote` (the magic parses with `shlex.split`). */
export function shellQuote(value: string): string {
  if (value === '') {
    return "''";
  }
  if (/^[\w@%+=:,./-]+$/.test(value)) {
    return value;
  }
  return `'${value.replace(/'/g, `'"'"'`)}'`;
}

/** `%%bt_train --backend local --project NAME` from the settings' defaults. */
export function buildMagicLine(defaults: MagicDefaults): string {
  const parts = ['%%bt_train', '--backend', defaults.backend];
  const project = defaults.project.trim();
  if (project) {
    parts.push('--project', shellQuote(project));
  }
  return parts.join(' ');
}

/** The first line of a cell that IPython reads as a cell magic (blank lines skipped). */
function firstLine(source: string): string {
  const line = source.split('\n').find(l => l.trim() !== '');
  return line === undefined ? '' : line.trim();
}

export function hasTrainMagic(source: string): boolean {
  return /^%%bt_train(\s|$)/.test(firstLine(source));
}

/**
 * The cell source with the `%%bt_train` line in front, unchanged when it already starts
 * with one. A cell with another cell magic cannot take a second one: that is an error the
 * user should see rather than a cell that fails inside the job.
 */
export function withTrainMagic(source: string, defaults: MagicDefaults): string {
  if (hasTrainMagic(source)) {
    return source;
  }
  const first = firstLine(source);
  if (first.startsWith('%%')) {
    const other = first.split(/\s/)[0];
    throw new Error(`This cell starts with ${other}; a cell can have only one cell magic.`);
  }
  return `${buildMagicLine(defaults)}\n${source}`;
}
