/**
 * The "Training" sidebar: projects and their jobs with live status and elapsed time, a
 * status filter and the backend switch. It only renders the shared store's state.
 */

import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { CopyButton, ErrorLine, StatusBadge, useNow, useStore } from './components';
import { trainingIcon } from './icons';
import {
  BACKENDS,
  FILTERS,
  filterCountsOf,
  filterJobs,
  formatAgo,
  formatElapsed,
  formatTime,
  groupByProject,
  isActive,
  liveElapsed,
  shortId,
  type Backend,
  type Job
} from './model';
import { JOB_PAGE, MAX_JOBS, type TrainingStore } from './store';

export const SIDEBAR_ID = 'bt-jupyter-training';

export type OpenJob = (backend: Backend, job: Job) => void;
export type CompareJobs = (backend: Backend, jobIds: string[]) => void;

export class TrainingSidebar extends ReactWidget {
  constructor(
    private readonly store: TrainingStore,
    private readonly openJob: OpenJob,
    private readonly compareJobs: CompareJobs
  ) {
    super();
    this.id = SIDEBAR_ID;
    this.addClass('bt-Sidebar');
    this.title.icon = trainingIcon;
    this.title.caption = 'Training';
  }

  protected render(): JSX.Element {
    return <SidebarView store={this.store} openJob={this.openJob} compareJobs={this.compareJobs} />;
  }
}

function SidebarView(props: {
  store: TrainingStore;
  openJob: OpenJob;
  compareJobs: CompareJobs;
}): JSX.Element {
  const { store, openJob, compareJobs } = props;
  const state = useStore(store);
  const visible = filterJobs(state.jobs, state.filter);
  // ticks every second while a job runs; "3m ago" needs no faster than the polls otherwise
  const now = useNow(visible.some(isActive));
  // of the whole list (the server counts it), not only of the page shown
  const counts = filterCountsOf(state.statusCounts);
  const groups = groupByProject(state.projects, visible, state.filter === 'all');
  const [collapsed, setCollapsed] = React.useState<ReadonlySet<string>>(new Set());
  // jobs ticked for "Compare", of the backend shown (switching backends clears them)
  const [picked, setPicked] = React.useState<readonly string[]>([]);
  React.useEffect(() => setPicked([]), [state.backend]);
  const pick = (jobId: string, on: boolean): void =>
    setPicked(on ? [...picked.filter(id => id !== jobId), jobId] : picked.filter(id => id !== jobId));
  const toggle = (name: string): void => {
    const next = new Set(collapsed);
    if (!next.delete(name)) {
      next.add(name);
    }
    setCollapsed(next);
  };

  return (
    <div className="bt-Sidebar-body">
      <header className="bt-Sidebar-header">
        <h2>Training</h2>
        <select
          className="bt-Sidebar-backend"
          aria-label="Backend"
          data-testid="bt-backend"
          value={state.backend}
          onChange={e => store.setBackend(e.target.value as Backend)}
        >
          {BACKENDS.map(b => (
            <option key={b} value={b}>
              {b}
            </option>
          ))}
        </select>
        <button
          className="bt-Button"
          title="Refresh now"
          disabled={state.loading}
          onClick={() => void store.refreshNow()}
        >
          ⟳
        </button>
      </header>
      <div className="bt-Filters" role="tablist" aria-label="Status filter">
        {FILTERS.map(f => (
          <button
            key={f.id}
            role="tab"
            aria-selected={state.filter === f.id}
            className={`bt-Filter${state.filter === f.id ? ' bt-mod-selected' : ''}`}
            data-testid={`bt-filter-${f.id}`}
            onClick={() => store.setFilter(f.id)}
          >
            {f.label} <span className="bt-Filter-count">{counts[f.id]}</span>
          </button>
        ))}
      </div>
      {state.backend === 'baseten' && state.config?.baseten_configured === false && (
        <p className="bt-Hint">
          No Baseten API key found: set BASETEN_API_KEY or run <code>truss login</code>.
        </p>
      )}
      {picked.length > 0 && (
        <div className="bt-Compare-bar">
          <button
            className="bt-Button"
            data-testid="bt-compare"
            disabled={picked.length < 2}
            title={picked.length < 2 ? 'Tick two jobs or more to compare them' : 'Compare the ticked jobs'}
            onClick={() => compareJobs(state.backend, [...picked])}
          >
            Compare {picked.length}
          </button>
          <button className="bt-Button" data-testid="bt-compare-clear" onClick={() => setPicked([])}>
            Clear
          </button>
        </div>
      )}
      <ErrorLine message={state.error} />
      {state.loaded && groups.length === 0 && (
        <p className="bt-Empty">
          {state.jobs.length === 0
            ? `No training jobs on ${state.backend} yet. Run a cell with %%bt_train.`
            : 'No jobs match this filter.'}
        </p>
      )}
      {!state.loaded && !state.error && <p className="bt-Empty">Loading…</p>}
      <ul className="bt-Projects">
        {groups.map(group => (
          <li key={group.name} className="bt-Project" data-testid="bt-project">
            <button
              className="bt-Project-title"
              aria-expanded={!collapsed.has(group.name)}
              onClick={() => toggle(group.name)}
            >
              <span className="bt-Project-caret">{collapsed.has(group.name) ? '▸' : '▾'}</span>
              <span className="bt-Project-name">{group.name}</span>
              <span className="bt-Filter-count">{group.jobs.length}</span>
            </button>
            {!collapsed.has(group.name) && (
              <ul className="bt-Jobs">
                {group.jobs.map(job => (
                  <li key={job.id} className="bt-JobRow">
                    <input
                      type="checkbox"
                      className="bt-Job-pick"
                      data-testid="bt-pick"
                      aria-label={`Compare ${job.name ?? job.id}`}
                      checked={picked.includes(job.id)}
                      onChange={e => pick(job.id, e.target.checked)}
                    />
                    <button
                      className="bt-Job"
                      data-testid="bt-job"
                      data-job-id={job.id}
                      title={
                        job.error_message ??
                        job.notice ??
                        `Open job ${job.id}, started ${formatTime(job.created_at)}`
                      }
                      onClick={() => openJob(state.backend, job)}
                    >
                      <StatusBadge status={job.status_short} />
                      <span className="bt-Job-name">{job.name ?? job.id}</span>
                      <span className="bt-Job-elapsed" data-testid="bt-elapsed">
                        {formatElapsed(liveElapsed(job, state.fetchedAt, now))}
                      </span>
                      <span className="bt-Job-meta">
                        <code className="bt-Job-id" data-testid="bt-job-id">
                          {shortId(job.id)}
                        </code>
                        {' · '}
                        <span data-testid="bt-job-ago">{formatAgo(job.created_at, Math.max(now, state.fetchedAt))}</span>
                        {' · '}
                        {job.gpu ?? 'CPU'}
                        {job.node_count > 1 ? ` × ${job.node_count} nodes` : ''}
                      </span>
                    </button>
                    <CopyButton text={job.id} what="job id" />
                  </li>
                ))}
              </ul>
            )}
          </li>
        ))}
      </ul>
      {state.total > state.jobs.length && (
        <p className="bt-Empty bt-More">
          <span data-testid="bt-shown">
            Newest {state.jobs.length.toLocaleString()} of {state.total.toLocaleString()} jobs
          </span>{' '}
          {state.limit < MAX_JOBS && (
            <button className="bt-Button" data-testid="bt-more" onClick={() => void store.showMore()}>
              Show {Math.min(JOB_PAGE, state.total - state.jobs.length)} more
            </button>
          )}
        </p>
      )}
    </div>
  );
}
