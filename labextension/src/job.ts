/**
 * The state behind one job's detail panel: the job with its history, checkpoints and
 * deployments (polled until the job ends), its logs (followed), and the Stop and Deploy
 * actions. Pure (no JupyterLab imports); the panel only renders it and asks for
 * confirmation.
 */

import type { TrainingApi } from './api';
import { LogFollower, type LogFollowerOptions, type LogState } from './logs';
import type { Backend, Deployment, Job, JobDetail } from './model';
import { messageOf, pollMs } from './store';

export interface JobViewState {
  detail: JobDetail | null;
  error: string | null;
  logs: LogState;
  stopping: boolean;
  /** Checkpoint names whose Deploy request is in flight. */
  deploying: ReadonlySet<string>;
}

export interface JobControllerOptions {
  pollIntervalS: number;
  /** Told about every fresh copy of the job, so the sidebar need not wait for its poll. */
  onJob?: (job: Job) => void;
  logs?: LogFollowerOptions;
}

export class JobController {
  private _state: JobViewState;
  private readonly listeners = new Set<(state: JobViewState) => void>();
  private readonly follower: LogFollower;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  private pollMs: number;

  constructor(
    readonly api: TrainingApi,
    readonly backend: Backend,
    readonly jobId: string,
    private readonly options: JobControllerOptions
  ) {
    this.pollMs = pollMs(options.pollIntervalS);
    this.follower = new LogFollower(api, backend, jobId, logs => this.update({ logs }), options.logs);
    this._state = {
      detail: null,
      error: null,
      logs: this.follower.state,
      stopping: false,
      deploying: new Set()
    };
  }

  get state(): JobViewState {
    return this._state;
  }

  subscribe(listener: (state: JobViewState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    void this.refresh();
    void this.follower.start();
  }

  setPollInterval(seconds: number): void {
    this.pollMs = pollMs(seconds);
  }

  /** Follow (stream and scroll) the logs, or pause. */
  setFollow(on: boolean): void {
    if (on) {
      void this.follower.start();
    } else {
      this.follower.stop();
    }
  }

  /** Fetch the job now; keep polling while it has not ended (one timer, however called). */
  async refresh(): Promise<void> {
    this.cancelTimer();
    try {
      const detail = await this.api.job(this.backend, this.jobId);
      this.update({ detail, error: null });
      this.options.onJob?.(detail.job);
    } catch (error) {
      this.update({ error: messageOf(error) });
    }
    const ended = this._state.detail?.job.is_terminal ?? false;
    this.cancelTimer(); // another refresh may have finished meanwhile
    if (!ended && !this.disposed) {
      this.timer = setTimeout(() => void this.refresh(), this.pollMs);
    }
  }

  private cancelTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Ask the server to stop the job; errors (e.g. 409, already ended) are thrown. */
  async stop(): Promise<Job> {
    this.update({ stopping: true });
    try {
      const job = await this.api.stop(this.backend, this.jobId);
      this.mergeJob(job);
      return job;
    } finally {
      this.update({ stopping: false });
      void this.refresh();
    }
  }

  async deploy(checkpoint: string): Promise<Deployment> {
    this.update({ deploying: new Set([...this._state.deploying, checkpoint]) });
    try {
      return await this.api.deploy(this.backend, this.jobId, checkpoint);
    } finally {
      const deploying = new Set(this._state.deploying);
      deploying.delete(checkpoint);
      this.update({ deploying });
      void this.refresh();
    }
  }

  dispose(): void {
    this.disposed = true;
    this.follower.stop();
    this.cancelTimer();
    this.listeners.clear();
  }

  private mergeJob(job: Job): void {
    const detail = this._state.detail;
    if (detail) {
      this.update({ detail: { ...detail, job } });
    }
    this.options.onJob?.(job);
  }

  private update(change: Partial<JobViewState>): void {
    if (this.disposed) {
      return;
    }
    this._state = { ...this._state, ...change };
    for (const listener of [...this.listeners]) {
      listener(this._state);
    }
  }
}
