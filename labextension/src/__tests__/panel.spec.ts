/** The job panel's logic (issue 15): deployments polled to ACTIVE, try-it and stop through
 * the server, charts' data, the log view's filters, titles that tell reruns apart, and
 * the store polling fast after a %%bt_train cell starts. */

import { TrainingApi } from '../api';
import { JobController } from '../job';
import { buildCharts, logScaleFits, metricNames, smooth } from '../metrics';
import {
  comparedRecords,
  formatAgo,
  formatUsd,
  jobTitle,
  visibleLogLines,
  type Comparison,
  type LogLine,
  type MetricRecord
} from '../model';
import { TrainingStore } from '../store';
import { fakeServer, job } from './fixtures';

const flush = () => new Promise(resolve => setTimeout(resolve, 0));

describe('JobController deployments', () => {
  beforeEach(() => jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick'] }));
  afterEach(() => jest.useRealTimers());

  it('keeps polling an ended job while its deployment is DEPLOYING, until ACTIVE', async () => {
    let polls = 0;
    const { request } = fakeServer(url => {
      if (url.pathname.endsWith('/metrics')) return { body: { metrics: [] } };
      if (url.pathname.endsWith('/logs')) return { body: { logs: [], cursor: '', done: true } };
      polls += 1;
      const status = polls < 4 ? 'DEPLOYING' : 'ACTIVE';
      return {
        body: {
          job: job('j', 'COMPLETED'),
          history: [],
          checkpoints: [],
          deployments: [{ id: 'd1', name: 'n', status, url: 'http://x', checkpoint: 'c', kind: 'hf' }]
        }
      };
    });
    const controller = new JobController(new TrainingApi(request, '/'), 'local', 'j', { pollIntervalS: 60 });
    await controller.refresh();
    expect(controller.state.detail?.deployments[0].status).toBe('DEPLOYING');
    for (let i = 0; i < 5 && controller.state.detail?.deployments[0].status !== 'ACTIVE'; i++) {
      await jest.advanceTimersByTimeAsync(1000); // a deployment is polled every second
    }
    expect(controller.state.detail?.deployments[0].status).toBe('ACTIVE');
    const before = polls;
    await jest.advanceTimersByTimeAsync(120_000);
    expect(polls).toBe(before); // ended job, deployment settled: no more polls
    controller.dispose();
  });

  it('try-it posts the input to the server and keeps the answer; errors are shown, not thrown', async () => {
    const { request, calls } = fakeServer((url, init) => {
      if (url.pathname.endsWith('/call')) {
        const body = JSON.parse(String(init.body)) as { input: string };
        if (body.input === 'bad') return { status: 400, body: { message: 'this deployment takes JSON', reason: 'bad_request' } };
        return { body: { text: `echo ${body.input}` } };
      }
      return { body: {} };
    });
    const controller = new JobController(new TrainingApi(request, '/'), 'local', 'j', { pollIntervalS: 60 });
    await controller.tryDeployment('d1', 'the cat');
    expect(controller.state.answers.d1).toEqual({ text: 'echo the cat', error: false });
    expect(calls[0].url.pathname).toBe('/bt-jupyter/jobs/j/deployments/d1/call');
    expect(calls[0].init.method).toBe('POST');
    await controller.tryDeployment('d1', 'bad');
    expect(controller.state.answers.d1).toEqual({ text: 'this deployment takes JSON', error: true });
    expect(controller.state.calling.size).toBe(0);
    controller.dispose();
  });
});

describe('metric charts data', () => {
  const records: MetricRecord[] = [
    { step: 1, time: 100, node: 0, loss: 4 },
    { step: 1, time: 100, node: 1, loss: 5 },
    { step: 2, time: 101, node: 0, loss: 2, lr: 0.1 },
    { step: 2, time: 101, node: 1, loss: 3 }
  ];

  it('one chart per metric, a series per node, x aligned with gaps', () => {
    expect(metricNames(records)).toEqual(['loss', 'lr']);
    const [loss, lr] = buildCharts(records, 'step');
    expect(loss.x).toEqual([1, 2]);
    expect(loss.series.map(s => s.label)).toEqual(['loss · node 0', 'loss · node 1']);
    expect(loss.series[1].values).toEqual([5, 3]);
    expect(lr.series).toHaveLength(1);
    expect(lr.series[0].label).toBe('lr');
    expect(lr.x).toEqual([2]); // each metric its own x: no gaps from other metrics
    expect(lr.series[0].values).toEqual([0.1]);
    expect(buildCharts(records, 'time')[0].x).toEqual([100, 101]);
  });

  it('compared runs are a series each, named after the run', () => {
    const comparison: Comparison = {
      note: '',
      metrics: ['loss'],
      metric: 'loss',
      runs: [
        { id: 'a', label: 'lr=0.1', status: 'COMPLETED', swept: {}, final: '1', best: '1' },
        { id: 'b', label: 'lr=0.3', status: 'RUNNING', swept: {}, final: '2', best: '2' }
      ],
      series: [
        { step: 0, time: 1, series: 'lr=0.1', loss: 3 },
        { step: 0, time: 1, series: 'lr=0.3', loss: 4 },
        { step: 1, time: 2, series: 'lr=0.3', loss: 2 }
      ],
      table: [],
      done: false
    };
    const { records, labels } = comparedRecords(comparison);
    expect(records.map(r => r.node)).toEqual([0, 1, 1]);
    const [loss] = buildCharts(records, 'step', 0, labels);
    expect(loss.series.map(s => s.label)).toEqual(['lr=0.1', 'lr=0.3']);
    expect(loss.series[0].values).toEqual([3, null]);
    expect(loss.series[1].values).toEqual([4, 2]);
  });

  it('smoothing is a debiased EMA; weight 0 leaves values alone; log scale needs positives', () => {
    expect(smooth([1, 2, null, 3], 0)).toEqual([1, 2, null, 3]);
    const s = smooth([10, 0], 0.5);
    expect(s[0]).toBeCloseTo(10); // not pulled towards zero at the start
    expect(s[1]).toBeCloseTo(10 / 3);
    expect(logScaleFits(buildCharts(records, 'step')[0])).toBe(true);
    expect(logScaleFits(buildCharts([{ step: 1, time: 1, node: 0, x: -1 }], 'step')[0])).toBe(false);
  });
});

describe('log view and titles', () => {
  const lines: LogLine[] = [
    { timestamp: 1, message: 'step 1', node: 0 },
    { timestamp: 2, message: '[bt-metric] {"step":1,"loss":1}', node: 0 },
    { timestamp: 3, message: 'Step 2 on node 1', node: 1 },
    { timestamp: 4, message: '  ', node: 0 }
  ];

  it('hides metric lines unless asked; filters by node and text (case-insensitive)', () => {
    const all = { showMetrics: false, search: '', node: null };
    expect(visibleLogLines(lines, all).map(l => l.timestamp)).toEqual([1, 3]);
    expect(visibleLogLines(lines, { ...all, showMetrics: true })).toHaveLength(3); // blank: no row
    expect(visibleLogLines(lines, { ...all, node: 1 }).map(l => l.timestamp)).toEqual([3]);
    expect(visibleLogLines(lines, { ...all, search: 'STEP 2' }).map(l => l.timestamp)).toEqual([3]);
  });

  it('titles carry the name, the short id and the relative start', () => {
    const now = Date.parse('2025-01-01T00:03:10Z');
    const a = job('abcdef123456', 'RUNNING', { name: 'train' });
    expect(jobTitle(a, now)).toBe('train · abcdef12 · 3m ago');
    expect(jobTitle(job('xyz', 'RUNNING'), Date.parse('2025-01-01T00:00:02Z'))).toBe('xyz · just now');
    expect(formatAgo('2025-01-01T00:00:00Z', Date.parse('2025-01-03T00:00:00Z'))).toBe('2d ago');
    expect(formatUsd(6.5)).toBe('$6.50');
    expect(formatUsd(0.00123)).toBe('$0.0012');
    expect(formatUsd(0)).toBe('$0');
  });
});

describe('TrainingStore after a %%bt_train cell starts', () => {
  it('polls every second until the new job appears, then at the set interval', async () => {
    let listing = [job('old', 'COMPLETED')];
    const { request } = fakeServer(url => {
      if (url.pathname.endsWith('/projects')) return { body: { projects: [] } };
      if (url.pathname.endsWith('/config')) return { body: { backends: ['local'] } };
      return { body: { jobs: listing } };
    });
    let pending: { fn: () => void; ms: number } | null = null;
    let clock = 0;
    const store = new TrainingStore(new TrainingApi(request, '/'), {
      backend: 'local',
      pollIntervalS: 5,
      now: () => clock,
      setTimer: (fn, ms) => (pending = { fn, ms }),
      clearTimer: () => (pending = null)
    });
    store.start();
    await flush();
    expect(pending!.ms).toBe(5000);
    store.expectJob();
    await flush();
    expect(pending!.ms).toBe(1000); // the job is not there yet: poll fast
    listing = [job('new', 'RUNNING'), ...listing];
    clock += 1000;
    pending!.fn();
    await flush();
    expect(store.runningCount).toBe(1);
    expect(pending!.ms).toBe(5000);
    store.dispose();
  });
});
