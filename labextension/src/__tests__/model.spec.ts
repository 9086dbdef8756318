import {
  buildMagicLine,
  filterCounts,
  filterJobs,
  formatBytes,
  formatElapsed,
  groupByProject,
  hasTrainMagic,
  liveElapsed,
  mergeLogs,
  runningCount,
  shellQuote,
  statusTone,
  withTrainMagic,
  type LogLine,
  type Project,
  type StatusShort
} from '../model';
import { job } from './fixtures';

const ALL: StatusShort[] = [
  'CREATED',
  'DEPLOYING',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'STOPPED',
  'DEPLOY_FAILED',
  'UNKNOWN'
];
const jobs = ALL.map((s, i) => job(`j${i}`, s));

describe('status filters', () => {
  it('running covers created, deploying and running only', () => {
    expect(filterJobs(jobs, 'running').map(j => j.status_short)).toEqual([
      'CREATED',
      'DEPLOYING',
      'RUNNING'
    ]);
  });

  it('failed covers FAILED and DEPLOY_FAILED; stopped and completed one each', () => {
    expect(filterJobs(jobs, 'failed').map(j => j.status_short)).toEqual(['FAILED', 'DEPLOY_FAILED']);
    expect(filterJobs(jobs, 'stopped').map(j => j.id)).toEqual(['j5']);
    expect(filterJobs(jobs, 'completed').map(j => j.id)).toEqual(['j3']);
  });

  it('all keeps every job in order, UNKNOWN included', () => {
    expect(filterJobs(jobs, 'all')).toEqual(jobs);
  });

  it('counts per filter', () => {
    expect(filterCounts(jobs)).toEqual({ all: 8, running: 3, completed: 1, failed: 2, stopped: 1 });
  });

  it('running count ignores ended and unknown jobs', () => {
    expect(runningCount(jobs)).toBe(3);
    expect(runningCount([job('a', 'STOPPED'), job('b', 'RUNNING')])).toBe(1);
    expect(runningCount([job('a', 'CREATED'), job('b', 'UNKNOWN')])).toBe(1);
    // waiting for capacity on Baseten is going on now too
    expect(runningCount([job('a', 'QUEUED'), job('b', 'PENDING')])).toBe(2);
    expect(runningCount([])).toBe(0);
  });

  it('tones colour the badge by status family', () => {
    expect(statusTone('RUNNING')).toBe('running');
    expect(statusTone('DEPLOY_FAILED')).toBe('danger');
    expect(statusTone('COMPLETED')).toBe('success');
    expect(statusTone('CREATED')).toBe('pending');
    expect(statusTone('STOPPED')).toBe('muted');
  });
});

describe('groupByProject', () => {
  const project = (name: string, updated: string): Project => ({
    id: `id-${name}`,
    name,
    created_at: updated,
    updated_at: updated
  });

  it('puts jobs under their projects, most recently active first', () => {
    const projects = [project('old', '2025-01-01T00:00:00Z'), project('new', '2025-01-02T00:00:00Z')];
    const list = [
      job('a', 'RUNNING', { project: 'old', updated_at: '2025-01-03T00:00:00Z' }),
      job('b', 'COMPLETED', { project: 'new' }),
      job('c', 'FAILED', { project: 'old' })
    ];
    const groups = groupByProject(projects, list, true);
    expect(groups.map(g => g.name)).toEqual(['old', 'new']);
    expect(groups[0].jobs.map(j => j.id)).toEqual(['a', 'c']);
  });

  it('keeps a job whose project is not listed, and drops empty projects unless asked', () => {
    const projects = [project('empty', '2025-01-05T00:00:00Z')];
    const list = [job('x', 'RUNNING', { project: 'unlisted' })];
    expect(groupByProject(projects, list, false).map(g => g.name)).toEqual(['unlisted']);
    const all = groupByProject(projects, list, true);
    expect(all.map(g => g.name)).toEqual(['empty', 'unlisted']);
    expect(all[1].project).toBeNull();
  });
});

describe('elapsed time', () => {
  it.each([
    [0, '0s'],
    [59.9, '59s'],
    [60, '1m 00s'],
    [185, '3m 05s'],
    [3600, '1h 00m'],
    [3725, '1h 02m'],
    [86400 + 3 * 3600 + 59, '1d 03h'],
    [-5, '0s'],
    [Number.NaN, '0s']
  ])('%p seconds is %p', (seconds, text) => {
    expect(formatElapsed(seconds)).toBe(text);
  });

  it('ticks for active jobs only', () => {
    expect(liveElapsed(job('a', 'RUNNING'), 1000, 6000)).toBe(15);
    expect(liveElapsed(job('a', 'STOPPED'), 1000, 6000)).toBe(10);
    expect(liveElapsed(job('a', 'RUNNING'), 6000, 1000)).toBe(10);
  });

  it('formats sizes', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GB');
    expect(formatBytes(null)).toBe('–');
  });
});

describe('mergeLogs', () => {
  const line = (timestamp: number, message: string, node: number | null = 0): LogLine => ({
    timestamp,
    message,
    node
  });

  it('appends new lines in the order received', () => {
    const merged = mergeLogs([line(1, 'a')], [line(2, 'b'), line(3, 'c')]);
    expect(merged.map(l => l.message)).toEqual(['a', 'b', 'c']);
  });

  it('drops a re-sent overlap but keeps what follows it', () => {
    const shown = [line(1, 'a'), line(2, 'b'), line(3, 'c')];
    const merged = mergeLogs(shown, [line(2, 'b'), line(3, 'c'), line(4, 'd')]);
    expect(merged.map(l => l.message)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('keeps a message printed twice in the same millisecond', () => {
    const merged = mergeLogs([line(5, 'tick')], [line(5, 'tick'), line(5, 'tick')]);
    expect(merged.map(l => l.message)).toEqual(['tick', 'tick']);
  });

  it('keeps a late line of another node that is not a repeat', () => {
    const merged = mergeLogs([line(1, 'x', 0), line(9, 'y', 0)], [line(5, 'x', 1)]);
    expect(merged.map(l => `${l.node}:${l.message}`)).toEqual(['0:x', '0:y', '1:x']);
  });

  it('does not modify its inputs and caps the length, oldest first out', () => {
    const shown = [line(1, 'a'), line(2, 'b')];
    const merged = mergeLogs(shown, [line(3, 'c')], 2);
    expect(merged.map(l => l.message)).toEqual(['b', 'c']);
    expect(shown).toHaveLength(2);
  });
});

describe('the %%bt_train line', () => {
  it('carries backend and project', () => {
    expect(buildMagicLine({ backend: 'local', project: 'my-project' })).toBe(
      '%%bt_train --backend local --project my-project'
    );
    expect(buildMagicLine({ backend: 'baseten', project: '  ' })).toBe('%%bt_train --backend baseten');
  });

  it('quotes like shlex.quote', () => {
    expect(shellQuote('sft_run-1.2')).toBe('sft_run-1.2');
    expect(shellQuote('my project')).toBe("'my project'");
    expect(shellQuote("bob's")).toBe(`'bob'"'"'s'`);
    expect(shellQuote('')).toBe("''");
    expect(buildMagicLine({ backend: 'local', project: 'my project' })).toBe(
      "%%bt_train --backend local --project 'my project'"
    );
  });

  it('is prepended once', () => {
    const defaults = { backend: 'local' as const, project: 'p' };
    const once = withTrainMagic('print(1)', defaults);
    expect(once).toBe('%%bt_train --backend local --project p\nprint(1)');
    expect(withTrainMagic(once, { backend: 'baseten', project: 'q' })).toBe(once);
  });

  it('recognises an existing magic after blank lines, but not a longer name', () => {
    expect(hasTrainMagic('\n  %%bt_train --gpu H100:8\nx = 1')).toBe(true);
    expect(hasTrainMagic('%%bt_train')).toBe(true);
    expect(hasTrainMagic('%%bt_trainer\nx')).toBe(false);
    expect(hasTrainMagic('x = 1  # %%bt_train')).toBe(false);
  });

  it('refuses a cell that already has another cell magic', () => {
    expect(() => withTrainMagic('%%time\nx = 1', { backend: 'local', project: '' })).toThrow(
      /starts with %%time/
    );
  });
});
