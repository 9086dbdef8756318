/** Test data and a fake transport shared by the specs. */

import type { RequestFn, ResponseLike } from '../api';
import type { Job, StatusShort } from '../model';

export function job(id: string, status: StatusShort, extra: Partial<Job> = {}): Job {
  return {
    id,
    name: null,
    project: 'p',
    project_id: 'pid',
    status: `TRAINING_JOB_${status}`,
    status_short: status,
    is_terminal: ['COMPLETED', 'FAILED', 'STOPPED', 'DEPLOY_FAILED'].includes(status),
    created_at: '2025-01-01T00:00:00Z',
    updated_at: '2025-01-01T00:00:00Z',
    elapsed_s: 10,
    node_count: 1,
    gpu: null,
    error_message: null,
    ...extra
  };
}

export interface Call {
  url: URL;
  init: RequestInit;
}

/** A transport answering from `handler`; records every call. */
export function fakeServer(
  handler: (url: URL, init: RequestInit) => { status?: number; body: unknown } | Promise<{ status?: number; body: unknown }>
): { request: RequestFn; calls: Call[] } {
  const calls: Call[] = [];
  const request: RequestFn = async (url, init) => {
    const parsed = new URL(url, 'http://lab.test');
    calls.push({ url: parsed, init });
    const { status = 200, body } = await handler(parsed, init);
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const response: ResponseLike = {
      ok: status >= 200 && status < 300,
      status,
      statusText: status === 200 ? 'OK' : 'Error',
      text: async () => text
    };
    return response;
  };
  return { request, calls };
}
