/**
 * The REST client of the server extension (`{base_url}bt-jupyter/...`). The transport is
 * injected: JupyterLab passes `ServerConnection.makeRequest` (token and XSRF), tests pass a
 * fake, so this module stays free of JupyterLab imports.
 */

import type {
  Backend,
  Comparison,
  Deployment,
  Job,
  JobDetail,
  JobPage,
  LogsPage,
  MetricRecord,
  Project,
  ServerConfig
} from './model';
import { pageOf } from './model';

/** The slice of `fetch`'s Response that the client reads. */
export interface ResponseLike {
  ok: boolean;
  status: number;
  statusText: string;
  text(): Promise<string>;
}

/** `(url, init) => Response`, like `fetch`. */
export type RequestFn = (url: string, init: RequestInit) => Promise<ResponseLike>;

/** A request the server answered with an error; `message` is the server's own words. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

type Query = Record<string, string | number | boolean | undefined | null>;

export interface JobsQuery {
  project?: string;
  status?: string;
  /** At most this many jobs, the newest first (the server allows 1..1000); all if unset. */
  limit?: number;
  /** The `cursor` of the page before: the jobs after its last one. */
  cursor?: string;
}

export interface LogsQuery {
  cursor?: string;
  tail?: number;
  follow?: boolean;
  /** Seconds the server may hold a follow request before answering with no lines. */
  timeout?: number;
  node?: number;
  /** A page's `earlier` cursor: the `tail` lines before it, instead of after `cursor`. */
  before?: string;
}

export class TrainingApi {
  /** @param baseUrl the Jupyter server's base URL, ending with `/`. */
  constructor(
    private readonly request: RequestFn,
    private readonly baseUrl: string
  ) {}

  url(path: string, query: Query = {}): string {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) {
        params.set(key, typeof value === 'boolean' ? (value ? '1' : '0') : String(value));
      }
    }
    const search = params.toString();
    return `${this.baseUrl}bt-jupyter/${path}${search ? `?${search}` : ''}`;
  }

  async config(): Promise<ServerConfig> {
    return this.call<ServerConfig>('GET', 'config');
  }

  async projects(backend: Backend): Promise<Project[]> {
    return (await this.call<{ projects: Project[] }>('GET', 'projects', { backend })).projects;
  }

  async jobs(backend: Backend, query: JobsQuery = {}): Promise<Job[]> {
    return (await this.jobPage(backend, query)).jobs;
  }

  /** A page of the job list, with how many jobs there are in all and in each status. */
  async jobPage(backend: Backend, query: JobsQuery = {}): Promise<JobPage> {
    const reply = await this.call<Partial<JobPage> & { jobs: Job[] }>('GET', 'jobs', { backend, ...query });
    return pageOf(reply);
  }

  async job(backend: Backend, jobId: string): Promise<JobDetail> {
    return this.call<JobDetail>('GET', `jobs/${encodeURIComponent(jobId)}`, { backend });
  }

  async logs(
    backend: Backend,
    jobId: string,
    query: LogsQuery = {},
    signal?: AbortSignal
  ): Promise<LogsPage> {
    const { cursor = '', tail = 500, follow = false, timeout = 20, node, before } = query;
    return this.call<LogsPage>(
      'GET',
      `jobs/${encodeURIComponent(jobId)}/logs`,
      { backend, cursor, tail, follow, timeout, node, before },
      undefined,
      signal
    );
  }

  async stop(backend: Backend, jobId: string): Promise<Job> {
    const path = `jobs/${encodeURIComponent(jobId)}/stop`;
    return (await this.call<{ job: Job }>('POST', path, { backend }, {})).job;
  }

  async deploy(backend: Backend, jobId: string, checkpoint = 'latest'): Promise<Deployment> {
    const path = `jobs/${encodeURIComponent(jobId)}/deploy`;
    const reply = await this.call<{ deployment: Deployment }>('POST', path, { backend }, { checkpoint });
    return reply.deployment;
  }

  /** Several jobs side by side (the sidebar's Compare panel), ranked by `metric`. */
  async compare(backend: Backend, jobIds: readonly string[], metric = ''): Promise<Comparison> {
    return this.call<Comparison>('GET', 'compare', { backend, jobs: jobIds.join(','), metric });
  }

  async metrics(backend: Backend, jobId: string): Promise<MetricRecord[]> {
    const path = `jobs/${encodeURIComponent(jobId)}/metrics`;
    return (await this.call<{ metrics: MetricRecord[] }>('GET', path, { backend })).metrics;
  }

  /** The try-it box: the server calls the deployment with its key; the page never sees it. */
  async callDeployment(
    backend: Backend,
    jobId: string,
    deploymentId: string,
    input: string
  ): Promise<string> {
    const path = `jobs/${encodeURIComponent(jobId)}/deployments/${encodeURIComponent(deploymentId)}/call`;
    return (await this.call<{ text: string }>('POST', path, { backend }, { input })).text;
  }

  async stopDeployment(backend: Backend, jobId: string, deploymentId: string): Promise<Deployment> {
    const path = `jobs/${encodeURIComponent(jobId)}/deployments/${encodeURIComponent(deploymentId)}/stop`;
    return (await this.call<{ deployment: Deployment }>('POST', path, { backend }, {})).deployment;
  }

  private async call<T>(
    method: 'GET' | 'POST',
    path: string,
    query: Query = {},
    body?: unknown,
    signal?: AbortSignal
  ): Promise<T> {
    const init: RequestInit = { method, signal };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    const response = await this.request(this.url(path, query), init);
    const text = await response.text();
    if (!response.ok) {
      throw errorFrom(response, text);
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(
        `The server sent something other than JSON for ${path} (HTTP ${response.status}).`,
        response.status,
        'bad-json'
      );
    }
  }
}

/**
 * An ApiError with the server's `message` when the body is the documented error JSON;
 * otherwise the body text or the HTTP status, so the user never sees an empty error.
 */
export function errorFrom(response: ResponseLike, text: string): ApiError {
  let message = '';
  let reason = response.statusText || '';
  try {
    const body = JSON.parse(text) as { message?: unknown; reason?: unknown };
    if (typeof body.message === 'string') {
      message = body.message;
    }
    if (typeof body.reason === 'string') {
      reason = body.reason;
    }
  } catch {
    // Jupyter answers an unknown path with an HTML page: say what that most likely means.
    const html = text.trimStart().startsWith('<');
    if (html && response.status === 404) {
      message =
        'HTTP 404 Not Found: the bt_jupyter server extension is not answering ' +
        '(is it enabled? see `jupyter server extension list`)';
    } else if (!html) {
      message = text.trim().slice(0, 500);
    }
  }
  if (!message) {
    message = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
  }
  return new ApiError(message, response.status, reason);
}
