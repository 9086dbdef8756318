import { TrainingApi } from '../api';
import { TrainingStore } from '../store';
import { fakeServer, job } from './fixtures';

/** Timers under the test's control: `fire()` runs the pending poll. */
function manualTimers() {
  let pending: { fn: () => void; ms: number } | null = null;
  return {
    setTimer: (fn: () => void, ms: number) => (pending = { fn, ms }),
    clearTimer: () => (pending = null),
    get pending() {
      return pending;
    },
    fire() {
      const p = pending;
      pending = null;
      p?.fn();
    }
  };
}

const flush = () => new Promise(resolve => setTimeout(resolve, 0));

describe('TrainingStore', () => {
  it('polls projects and jobs for the chosen backend at the set interval', async () => {
    let listing = [job('a', 'RUNNING'), job('b', 'COMPLETED')];
    const { request, calls } = fakeServer(url => {
      if (url.pathname.endsWith('/projects')) return { body: { projects: [] } };
      if (url.pathname.endsWith('/config')) return { body: { backends: ['local', 'baseten'] } };
      return { body: { jobs: listing } };
    });
    const timers = manualTimers();
    const store = new TrainingStore(new TrainingApi(request, '/'), {
      backend: 'local',
      pollIntervalS: 3,
      ...timers
    });
    const seen: number[] = [];
    store.subscribe(state => seen.push(state.jobs.length));
    store.start();
    await flush();
    expect(store.runningCount).toBe(1);
    expect(store.state.loaded).toBe(true);
    expect(timers.pending?.ms).toBe(3000);

    listing = [job('a', 'STOPPED'), job('b', 'COMPLETED'), job('c', 'RUNNING'), job('d', 'DEPLOYING')];
    timers.fire();
    await flush();
    expect(store.runningCount).toBe(2);
    expect(store.state.jobs.map(j => j.id)).toEqual(['a', 'b', 'c', 'd']);
    const jobCalls = calls.filter(c => c.url.pathname.endsWith('/jobs'));
    expect(jobCalls).toHaveLength(2);
    expect(jobCalls.every(c => c.url.searchParams.get('backend') === 'local')).toBe(true);
    expect(seen.length).toBeGreaterThan(2);
    store.dispose();
    expect(timers.pending).toBeNull();
  });

  it('keeps the last jobs and shows the server message when a refresh fails', async () => {
    let fail = false;
    const { request } = fakeServer(url => {
      if (fail) return { status: 500, body: { message: 'database is locked', reason: 'x' } };
      if (url.pathname.endsWith('/projects')) return { body: { projects: [] } };
      if (url.pathname.endsWith('/config')) return { body: {} };
      return { body: { jobs: [job('a', 'RUNNING')] } };
    });
    const timers = manualTimers();
    const store = new TrainingStore(new TrainingApi(request, '/'), { backend: 'local', pollIntervalS: 1, ...timers });
    store.start();
    await flush();
    fail = true;
    timers.fire();
    await flush();
    expect(store.state.error).toBe('database is locked');
    expect(store.state.jobs.map(j => j.id)).toEqual(['a']);
    expect(timers.pending).not.toBeNull(); // polling goes on after an error
    fail = false;
    timers.fire();
    await flush();
    expect(store.state.error).toBeNull();
    store.dispose();
  });

  it('switching backend clears the list and drops a late reply for the old backend', async () => {
    const releases: Array<() => void> = [];
    const { request } = fakeServer(async url => {
      const backend = url.searchParams.get('backend');
      if (url.pathname.endsWith('/projects')) return { body: { projects: [] } };
      if (url.pathname.endsWith('/config')) return { body: {} };
      if (backend === 'local') await new Promise<void>(r => releases.push(r));
      return { body: { jobs: [job(`${backend}-job`, 'RUNNING')] } };
    });
    const timers = manualTimers();
    const store = new TrainingStore(new TrainingApi(request, '/'), { backend: 'local', pollIntervalS: 5, ...timers });
    store.start();
    await flush();
    store.setBackend('baseten');
    await flush();
    releases.forEach(r => r());
    await flush();
    expect(store.state.backend).toBe('baseten');
    expect(store.state.jobs.map(j => j.id)).toEqual(['baseten-job']);
    store.dispose();
  });

  it('upsertJob replaces a job at once (Stop) and the filter is kept in state', () => {
    const store = new TrainingStore(new TrainingApi(fakeServer(() => ({ body: {} })).request, '/'), {
      backend: 'local',
      pollIntervalS: 5
    });
    store.upsertJob(job('a', 'RUNNING'));
    store.upsertJob(job('a', 'STOPPED'));
    expect(store.state.jobs.map(j => j.status_short)).toEqual(['STOPPED']);
    store.setFilter('failed');
    expect(store.state.filter).toBe('failed');
  });
});
