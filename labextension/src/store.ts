/**
 * The state the sidebar and the status bar share: backend, projects, jobs, filter, last
 * error. One poll loop for both, so two views never double the server's load. Pure (no
 * JupyterLab imports) so the polling can be tested with fake timers.
 */

import type { TrainingApi } from './api';
import {
  filterCountsOf,
  type Backend,
  type JobPage,
  type Job,
  type Project,
  type ServerConfig,
  type StatusFilter
} from './model';

export interface StoreState {
  backend: Backend;
  filter: StatusFilter;
  projects: Project[];
  /** The newest jobs: the first `limit` of the list (the sidebar's "Show more" adds a page). */
  jobs: Job[];
  /** Jobs in the whole list, and in each status: what the filters and status bar count. */
  total: number;
  statusCounts: JobPage['status_counts'];
  /** How many of the newest jobs are asked for. */
  limit: number;
  /** When `jobs` was fetched (epoch ms), to tick elapsed times between polls. */
  fetchedAt: number;
  /** The last refresh's error message; cleared by the next good refresh. */
  error: string | null;
  loading: boolean;
  /** Whether a refresh has completed (an empty list then means "no jobs"). */
  loaded: boolean;
  /** The server extension's config (backends, whether Baseten has an API key). */
  config: ServerConfig | null;
}

type Listener = (state: StoreState) => void;

/** How long (ms) a submit is expected after a `%%bt_train` cell starts, and the poll then. */
export const EXPECT_WINDOW_MS = 60_000;
export const EXPECT_POLL_MS = 1000;
/** Jobs a page of the sidebar holds ("Show more" asks for one more page). */
export const JOB_PAGE = 50;
/** The most jobs the server extension answers at once. */
export const MAX_JOBS = 1000;

export interface StoreOptions {
  backend: Backend;
  pollIntervalS: number;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export class TrainingStore {
  private _state: StoreState;
  private readonly listeners = new Set<Listener>();
  private pollMs: number;
  private timer: unknown = null;
  private running = false;
  /** Bumped on every backend change so a late reply for the old backend is dropped. */
  private generation = 0;
  private inflight: Promise<void> | null = null;
  private inflightGeneration = -1;
  /** While a submit is expected (epoch ms): poll every second until a new job appears. */
  private expectUntil = 0;
  private knownIds: ReadonlySet<string> = new Set();
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (handle: unknown) => void;

  constructor(
    readonly api: TrainingApi,
    options: StoreOptions
  ) {
    this.now = options.now ?? Date.now;
    this.setTimer = options.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? (h => clearTimeout(h as ReturnType<typeof setTimeout>));
    this.pollMs = pollMs(options.pollIntervalS);
    this._state = {
      backend: options.backend,
      filter: 'all',
      projects: [],
      jobs: [],
      total: 0,
      statusCounts: {},
      limit: JOB_PAGE,
      fetchedAt: this.now(),
      error: null,
      loading: false,
      loaded: false,
      config: null
    };
  }

  get state(): StoreState {
    return this._state;
  }

  get runningCount(): number {
    return filterCountsOf(this._state.statusCounts).running;
  }

  /** Ask for one more page of older jobs (kept on every poll after). */
  showMore(): Promise<void> {
    this.update({ limit: Math.min(MAX_JOBS, this._state.limit + JOB_PAGE) });
    return this.refreshNow();
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Start polling (refreshes at once). */
  start(): void {
    if (this.running) {
      return;
    }
    this.running = true;
    void this.api.config().then(
      config => this.update({ config }),
      () => undefined // the job list's refresh reports the same failure
    );
    void this.tick();
  }

  dispose(): void {
    this.running = false;
    this.cancelTimer();
    this.listeners.clear();
  }

  setFilter(filter: StatusFilter): void {
    this.update({ filter });
  }

  setBackend(backend: Backend): void {
    if (backend === this._state.backend) {
      return;
    }
    this.generation += 1;
    this.update({
      backend,
      projects: [],
      jobs: [],
      total: 0,
      statusCounts: {},
      limit: JOB_PAGE,
      error: null,
      loaded: false
    });
    void this.refreshNow();
  }

  setPollInterval(seconds: number): void {
    this.pollMs = pollMs(seconds);
    if (this.running && this.timer !== null) {
      this.schedule();
    }
  }

  /** Replace one job with a fresher copy (after Stop) without waiting for the next poll. */
  upsertJob(job: Job): void {
    const old = this._state.jobs.find(j => j.id === job.id);
    const jobs = old ? this._state.jobs.map(j => (j.id === job.id ? job : j)) : [job, ...this._state.jobs];
    const statusCounts = { ...this._state.statusCounts };
    if (old) {
      statusCounts[old.status_short] = Math.max(0, (statusCounts[old.status_short] ?? 0) - 1);
    }
    statusCounts[job.status_short] = (statusCounts[job.status_short] ?? 0) + 1;
    this.update({ jobs, statusCounts, total: this._state.total + (old ? 0 : 1) });
  }

  /**
   * A job is about to be submitted (a `%%bt_train` cell started): refresh now and then
   * every second until a job the list did not have shows up or `windowMs` passes, so the
   * status bar and the sidebar show it at once instead of at the next slow poll.
   */
  expectJob(windowMs = EXPECT_WINDOW_MS): void {
    this.knownIds = new Set(this._state.jobs.map(j => j.id));
    this.expectUntil = this.now() + windowMs;
    void this.refreshNow();
  }

  /** Whether the store is polling fast for a job it was told to expect. */
  get expecting(): boolean {
    return this.expectUntil > this.now();
  }

  /** Refresh now and restart the poll interval from here. */
  async refreshNow(): Promise<void> {
    this.cancelTimer();
    await this.tick();
  }

  /** One refresh; concurrent calls for the same backend share the request in flight. */
  refresh(): Promise<void> {
    if (!this.inflight || this.inflightGeneration !== this.generation) {
      const inflight: Promise<void> = this.load().finally(() => {
        if (this.inflight === inflight) {
          this.inflight = null;
        }
      });
      this.inflight = inflight;
      this.inflightGeneration = this.generation;
    }
    return this.inflight;
  }

  private async tick(): Promise<void> {
    try {
      await this.refresh();
    } finally {
      if (this.running) {
        this.schedule();
      }
    }
  }

  private async load(): Promise<void> {
    const generation = this.generation;
    const backend = this._state.backend;
    this.update({ loading: true });
    try {
      const [projects, page] = await Promise.all([
        this.api.projects(backend),
        this.api.jobPage(backend, { limit: this._state.limit })
      ]);
      if (generation === this.generation) {
        const jobs = page.jobs;
        if (this.expecting && jobs.some(j => !this.knownIds.has(j.id))) {
          this.expectUntil = 0; // it arrived: back to the settings' interval
        }
        this.update({
          projects,
          jobs,
          total: page.total,
          statusCounts: page.status_counts,
          fetchedAt: this.now(),
          error: null,
          loading: false,
          loaded: true
        });
      }
    } catch (error) {
      if (generation === this.generation) {
        this.update({ error: messageOf(error), loading: false });
      }
    }
  }

  private schedule(): void {
    this.cancelTimer();
    this.timer = this.setTimer(() => {
      this.timer = null;
      void this.tick();
    }, this.expecting ? Math.min(this.pollMs, EXPECT_POLL_MS) : this.pollMs);
  }

  private cancelTimer(): void {
    if (this.timer !== null) {
      this.clearTimer(this.timer);
      this.timer = null;
    }
  }

  private update(change: Partial<StoreState>): void {
    this._state = { ...this._state, ...change };
    for (const listener of [...this.listeners]) {
      listener(this._state);
    }
  }
}

/** Seconds from the settings as milliseconds, never below one second. */
export function pollMs(seconds: number): number {
  return Math.max(1, Number.isFinite(seconds) ? seconds : 5) * 1000;
}

export function messageOf(error: unknown): string {
  if (error instanceof Error && error.message) {
    return error.message;
  }
  return String(error) || 'Unknown error';
}
