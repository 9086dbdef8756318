import { TrainingApi } from '../api';
import { JobController } from '../job';
import { LogFollower, type LogState } from '../logs';
import type { LogsPage } from '../model';
import { fakeServer, job } from './fixtures';

const line = (timestamp: number, message: string) => ({ timestamp, message, node: 0 });

describe('LogFollower', () => {
  it('fetches the tail, then long-polls with the cursor until done, without repeats', async () => {
    const pages: LogsPage[] = [
      { logs: [line(1, 'a'), line(2, 'b')], cursor: 'c1', done: false },
      { logs: [line(2, 'b'), line(3, 'c')], cursor: 'c2', done: false },
      { logs: [], cursor: 'c2', done: false },
      { logs: [line(4, 'd')], cursor: 'c3', done: true }
    ];
    const { request, calls } = fakeServer(() => ({ body: pages.shift() }));
    const states: LogState[] = [];
    const follower = new LogFollower(new TrainingApi(request, '/'), 'local', 'j', s => states.push(s));
    await follower.start();
    const last = states[states.length - 1];
    expect(last.lines.map(l => l.message)).toEqual(['a', 'b', 'c', 'd']);
    expect(last.done).toBe(true);
    expect(last.following).toBe(false);
    const params = calls.map(c => [c.url.searchParams.get('cursor'), c.url.searchParams.get('follow')]);
    expect(params).toEqual([
      ['', '0'],
      ['c1', '1'],
      ['c2', '1'],
      ['c2', '1']
    ]);
  });

  it('reads back through history a page at a time, on top of what it shows', async () => {
    const pages: LogsPage[] = [
      { logs: [line(5, 'e'), line(6, 'f')], cursor: 'c1', done: true, earlier: 'L5' },
      // the cloud reads back to the first millisecond shown: 'e' comes again, once
      { logs: [line(3, 'c'), line(4, 'd'), line(5, 'e')], cursor: '', done: false, earlier: 'L3' },
      { logs: [line(1, 'a'), line(2, 'b')], cursor: '', done: false, earlier: '' }
    ];
    const { request, calls } = fakeServer(() => ({ body: pages.shift() }));
    const follower = new LogFollower(new TrainingApi(request, '/'), 'local', 'j', () => undefined);
    await follower.start();
    expect(follower.state.earlier).toBe('L5');
    await follower.readBack();
    expect(follower.state.lines.map(l => l.message)).toEqual(['c', 'd', 'e', 'f']);
    expect(follower.state.readBack).toBe(2);
    await follower.readBack();
    await follower.readBack(); // at the start: nothing more is asked
    expect(follower.state.lines.map(l => l.message)).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(follower.state.earlier).toBe('');
    expect(calls.map(c => c.url.searchParams.get('before'))).toEqual([null, 'L5', 'L3']);
  });

  it('shows an error, retries after a pause, and gives up on 404', async () => {
    let n = 0;
    const { request } = fakeServer(() => {
      n += 1;
      if (n === 1) return { status: 503, body: { message: 'service restarting', reason: '' } };
      if (n === 2) return { body: { logs: [line(1, 'x')], cursor: 'c', done: false } };
      return { status: 404, body: { message: 'no job j', reason: 'Not Found' } };
    });
    const sleeps: number[] = [];
    const states: LogState[] = [];
    const follower = new LogFollower(new TrainingApi(request, '/'), 'local', 'j', s => states.push(s), {
      retryMs: 1234,
      sleep: async ms => {
        sleeps.push(ms);
      }
    });
    await follower.start();
    expect(sleeps).toEqual([1234]);
    expect(states.some(s => s.error === 'service restarting')).toBe(true);
    expect(follower.state.error).toBe('no job j');
    expect(follower.state.lines.map(l => l.message)).toEqual(['x']);
    expect(n).toBe(3);
  });

  it('stop() aborts the long-poll in flight', async () => {
    let seenSignal: AbortSignal | null | undefined;
    const request = (_url: string, init: RequestInit) => {
      seenSignal = init.signal;
      return new Promise<never>((_, reject) =>
        init.signal?.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })))
      );
    };
    const follower = new LogFollower(new TrainingApi(request, '/'), 'local', 'j', () => undefined);
    const running = follower.start();
    follower.stop();
    await running;
    expect(seenSignal?.aborted).toBe(true);
    expect(follower.state.following).toBe(false);
    expect(follower.state.error).toBeNull();
  });
});

describe('JobController', () => {
  it('stop reports the new job to the sidebar; a 409 reaches the caller with its message', async () => {
    let stopped = false;
    const { request } = fakeServer((url, init) => {
      if (url.pathname.endsWith('/stop')) {
        if (stopped) return { status: 409, body: { message: 'job j already ended', reason: 'Conflict' } };
        stopped = true;
        return { body: { job: job('j', 'STOPPED') } };
      }
      if (url.pathname.endsWith('/logs')) return { body: { logs: [], cursor: '', done: true } };
      expect(init.method).toBe('GET');
      return {
        body: { job: job('j', stopped ? 'STOPPED' : 'RUNNING'), history: [], checkpoints: [], deployments: [] }
      };
    });
    const seen: string[] = [];
    const controller = new JobController(new TrainingApi(request, '/'), 'local', 'j', {
      pollIntervalS: 60,
      onJob: j => seen.push(j.status_short)
    });
    await controller.refresh();
    expect(controller.state.detail?.job.status_short).toBe('RUNNING');
    await controller.stop();
    expect(seen).toContain('STOPPED');
    expect(controller.state.detail?.job.status_short).toBe('STOPPED');
    expect(controller.state.stopping).toBe(false);
    await expect(controller.stop()).rejects.toThrow('job j already ended');
    controller.dispose();
  });
});
