/**
 * The state behind one job's detail panel: the job with its history, checkpoints and
 * deployments (polled until the job ends), its logs (followed), and the Stop and Deploy
 * actions. Pure (no JupyterLab imports); the panel only renders it and asks for
 * confirmation.
 */

import type { TrainingApi } from './api';
import { LogFollower, type LogFollowerOptions, type LogState } from './logs';
import {
  deploymentPending,
  type Backend,
  type Deployment,
  type Job,
  type JobDetail,
  type MetricRecord
} from './model';
import { messageOf, pollMs } from './store';

export interface JobViewState {
  detail: JobDetail | null;
  error: string | null;
  logs: LogState;
  stopping: boolean;
  /** Checkpoint names whose Deploy request is in flight. */
  deploying: ReadonlySet<string>;
  /** The job's `log_metrics` records (with the node of each). */
  metrics: MetricRecord[];
  /** The try-it box's last answer (or error) per deployment id. */
  answers: Readonly<Record<string, { text: string; error: boolean }>>;
  /** Deployment ids with a call or a stop in flight. */
  calling: ReadonlySet<string>;
}

/** How often a deployment on its way to ACTIVE is polled (at most). */
export const DEPLOY_POLL_MS = 1000;

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
      deploying: new Set(),
      metrics: [],
      answers: {},
      calling: new Set()
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

  /** Read the page of log lines before the first one shown. */
  readBack(): Promise<void> {
    return this.follower.readBack();
  }

  /** Follow (stream and scroll) the logs, or pause. */
  setFollow(on: boolean): void {
    if (on) {
      void this.follower.start();
    } else {
      this.follower.stop();
    }
  }

  /**
   * Fetch the job (and its metrics) now; keep polling while it has not ended or one of
   * its deployments is still on its way to ACTIVE or FAILED (one timer, however called).
   * A deployment is watched at least every second: a user who pressed Deploy waits on it.
   */
  async refresh(): Promise<void> {
    this.cancelTimer();
    const wasEnded = this._state.detail?.job.is_terminal ?? false;
    try {
      const [detail, metrics] = await Promise.all([
        this.api.job(this.backend, this.jobId),
        // an ended job's metrics do not change: fetched once more when it ends, then kept
        wasEnded && this._state.metrics.length > 0
          ? Promise.resolve(this._state.metrics)
          : this.api.metrics(this.backend, this.jobId).catch(() => this._state.metrics)
      ]);
      this.update({ detail, metrics, error: null });
      this.options.onJob?.(detail.job);
    } catch (error) {
      this.update({ error: messageOf(error) });
    }
    const detail = this._state.detail;
    const ended = detail?.job.is_terminal ?? false;
    const deploying = detail ? deploymentPending(detail.deployments) : false;
    this.cancelTimer(); // another refresh may have finished meanwhile
    if ((!ended || deploying) && !this.disposed) {
      const wait = deploying ? Math.min(this.pollMs, DEPLOY_POLL_MS) : this.pollMs;
      this.timer = setTimeout(() => void this.refresh(), wait);
    }
  }

  /** Send the try-it box's input to a deployment (through the server, which holds the key). */
  async tryDeployment(deploymentId: string, input: string): Promise<void> {
    this.update({ calling: new Set([...this._state.calling, deploymentId]) });
    let answer: { text: string; error: boolean };
    try {
      const text = await this.api.callDeployment(this.backend, this.jobId, deploymentId, input);
      answer = { text, error: false };
    } catch (error) {
      answer = { text: messageOf(error), error: true };
    }
    const calling = new Set(this._state.calling);
    calling.delete(deploymentId);
    this.update({ calling, answers: { ...this._state.answers, [deploymentId]: answer } });
  }

  async stopDeployment(deploymentId: string): Promise<Deployment> {
    this.update({ calling: new Set([...this._state.calling, deploymentId]) });
    try {
      const stopped = await this.api.stopDeployment(this.backend, this.jobId, deploymentId);
      const detail = this._state.detail;
      if (detail) {
        const deployments = detail.deployments.map(d => (d.id === stopped.id ? stopped : d));
        this.update({ detail: { ...detail, deployments } });
      }
      return stopped;
    } finally {
      const calling = new Set(this._state.calling);
      calling.delete(deploymentId);
      this.update({ calling });
      void this.refresh();
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
      const deployment = await this.api.deploy(this.backend, this.jobId, checkpoint);
      const detail = this._state.detail;
      if (detail && !detail.deployments.some(d => d.id === deployment.id)) {
        this.update({ detail: { ...detail, deployments: [...detail.deployments, deployment] } });
      }
      return deployment;
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
