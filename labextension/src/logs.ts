/**
 * Follows a job's logs with the server's cursor: one tail request, then long-polls
 * (`follow=1`) that return as soon as lines arrive, until the server says `done`.
 * Pure (no JupyterLab imports) so the loop can be tested with a fake API.
 */

import { ApiError, type TrainingApi } from './api';
import { mergeLogs, prependLogs, type Backend, type LogLine } from './model';
import { messageOf } from './store';

export interface LogFollowerOptions {
  /** Lines of history fetched first. */
  tail?: number;
  /** Seconds one long-poll may wait on the server. */
  timeout?: number;
  /** Milliseconds to wait after a failed request before trying again. */
  retryMs?: number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface LogState {
  lines: LogLine[];
  done: boolean;
  error: string | null;
  following: boolean;
  /** Cursor of the lines before the first one held ('': the log's start is shown). */
  earlier: string;
  /** Lines read back through history: kept on top of the `MAX_LINES` newest. */
  readBack: number;
}

/** Newest lines a panel holds while following (plus those read back on request). */
export const MAX_LINES = 10000;

export class LogFollower {
  private cursor = '';
  private _state: LogState = {
    lines: [],
    done: false,
    error: null,
    following: false,
    earlier: '',
    readBack: 0
  };
  private readingBack = false;
  private controller: AbortController | null = null;
  private loop: Promise<void> | null = null;
  private readonly tail: number;
  private readonly timeout: number;
  private readonly retryMs: number;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;

  constructor(
    private readonly api: TrainingApi,
    private readonly backend: Backend,
    private readonly jobId: string,
    private readonly onChange: (state: LogState) => void,
    options: LogFollowerOptions = {}
  ) {
    this.tail = options.tail ?? 500;
    this.timeout = options.timeout ?? 20;
    this.retryMs = options.retryMs ?? 2000;
    this.sleep = options.sleep ?? abortableSleep;
  }

  get state(): LogState {
    return this._state;
  }

  /** Start (or resume from the cursor) following; a no-op while following or done. */
  start(): Promise<void> {
    if (this.loop || this._state.done) {
      return this.loop ?? Promise.resolve();
    }
    const controller = new AbortController();
    this.controller = controller;
    this.update({ following: true });
    this.loop = this.run(controller.signal).finally(() => {
      this.loop = null;
      this.controller = null;
      this.update({ following: false });
    });
    return this.loop;
  }

  /**
   * Read the `tail` lines before the first one held and put them on top: history a page
   * at a time, however long the log (the server reads only that page).
   */
  async readBack(): Promise<void> {
    const before = this._state.earlier;
    if (!before || this.readingBack) {
      return;
    }
    this.readingBack = true;
    try {
      const page = await this.api.logs(this.backend, this.jobId, { before, tail: this.tail });
      const lines = prependLogs(this._state.lines, page.logs);
      const readBack = this._state.readBack + (lines.length - this._state.lines.length);
      this.update({ lines, earlier: page.earlier ?? '', readBack, error: null });
    } catch (error) {
      this.update({ error: messageOf(error) });
    } finally {
      this.readingBack = false;
    }
  }

  /** Stop following; the request in flight is aborted. */
  stop(): void {
    this.controller?.abort();
  }

  private async run(signal: AbortSignal): Promise<void> {
    // The first request returns the tail at once; the later ones wait for new lines.
    let follow = this.cursor !== '';
    while (!signal.aborted) {
      try {
        const page = await this.api.logs(
          this.backend,
          this.jobId,
          { cursor: this.cursor, tail: this.tail, follow, timeout: this.timeout },
          signal
        );
        const first = this.cursor === '';
        this.cursor = page.cursor;
        const lines = mergeLogs(this._state.lines, page.logs, MAX_LINES + this._state.readBack);
        const earlier = first && this._state.lines.length === 0 ? page.earlier ?? '' : null;
        this.update({
          lines,
          done: page.done,
          error: null,
          ...(earlier === null ? {} : { earlier })
        });
        if (page.done) {
          return;
        }
        follow = true;
      } catch (error) {
        if (signal.aborted || isAbort(error)) {
          return;
        }
        this.update({ error: messageOf(error) });
        if (error instanceof ApiError && error.status === 404) {
          return;
        }
        await this.sleep(this.retryMs, signal);
      }
    }
  }

  private update(change: Partial<LogState>): void {
    this._state = { ...this._state, ...change };
    this.onChange(this._state);
  }
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && error.name === 'AbortError';
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}
