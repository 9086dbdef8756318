/**
 * A job's detail panel in the main area: lifecycle, logs (follow), checkpoints with
 * Deploy, and Stop behind a confirmation. State and requests live in JobController.
 */

import { MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { MetricCharts } from './chart';
import { confirmAction } from './confirm';
import { CopyButton, ErrorLine, StatusBadge, useNow } from './components';
import { trainingIcon } from './icons';
import { JobController, type JobViewState } from './job';
import {
  DEPLOYMENT_PENDING,
  DEPLOYMENT_SERVING,
  formatAgo,
  formatBytes,
  formatClock,
  formatElapsed,
  formatTime,
  formatUsd,
  isActive,
  jobTitle,
  liveElapsed,
  visibleLogLines,
  type Backend,
  type Deployment,
  type JobCost
} from './model';
import { messageOf } from './store';

/** One panel per backend and job: opening a job twice shows the same panel. */
/** How often the tab title's "3m ago" is brought up to date. */
const TITLE_REFRESH_MS = 15_000;

export function jobPanelId(backend: Backend, jobId: string): string {
  return `bt-jupyter-job-${backend}-${jobId}`;
}

export class JobPanel extends MainAreaWidget<JobView> {
  constructor(readonly controller: JobController, label: string) {
    super({ content: new JobView(controller) });
    this.id = jobPanelId(controller.backend, controller.jobId);
    this.addClass('bt-JobPanel');
    this.title.icon = trainingIcon;
    this.title.label = label;
    this.title.caption = `Training job ${controller.jobId} (${controller.backend})`;
    this.title.closable = true;
    // `name · id · 3m ago`: reruns of one cell share a name, never an id and start time.
    // A panel reopened by the layout restorer knows only the id until the job arrives.
    controller.subscribe(() => this.updateTitle());
    this.titleTimer = setInterval(() => this.updateTitle(), TITLE_REFRESH_MS);
    controller.start();
  }

  private readonly titleTimer: ReturnType<typeof setInterval>;

  private updateTitle(): void {
    const job = this.controller.state.detail?.job;
    if (job) {
      this.title.label = jobTitle(job, Date.now());
      this.title.caption = `Training job ${job.name ? `${job.name} ` : ''}${job.id} (${this.controller.backend}), started ${formatTime(job.created_at)}`;
    }
  }

  dispose(): void {
    clearInterval(this.titleTimer);
    this.controller.dispose();
    super.dispose();
  }
}

export class JobView extends ReactWidget {
  constructor(private readonly controller: JobController) {
    super();
    this.addClass('bt-JobView');
  }

  protected render(): JSX.Element {
    return <JobDetailView controller={this.controller} />;
  }
}

function useController(controller: JobController): JobViewState {
  const [state, setState] = React.useState(controller.state);
  React.useEffect(() => {
    setState(controller.state);
    return controller.subscribe(setState);
  }, [controller]);
  return state;
}

async function confirmStop(controller: JobController): Promise<void> {
  const accepted = await confirmAction({
    title: 'Stop training job?',
    body: `Job ${controller.jobId} gets SIGTERM, then SIGKILL after a grace period. It cannot be resumed (a new job can load its checkpoints).`,
    accept: 'Stop job'
  });
  if (!accepted) {
    return;
  }
  try {
    await controller.stop();
    Notification.info(`Stop requested for job ${controller.jobId}`, { autoClose: 3000 });
  } catch (error) {
    Notification.error(`Could not stop job ${controller.jobId}: ${messageOf(error)}`);
  }
}

async function deploy(controller: JobController, checkpoint: string): Promise<void> {
  try {
    const deployment = await controller.deploy(checkpoint);
    Notification.success(
      `Deploying ${checkpoint} as ${deployment.name} (${deployment.status})` +
        (deployment.url ? `: ${deployment.url}` : ''),
      { autoClose: 5000 }
    );
  } catch (error) {
    Notification.error(`Could not deploy ${checkpoint}: ${messageOf(error)}`);
  }
}

async function confirmStopDeployment(controller: JobController, deployment: Deployment): Promise<void> {
  const accepted = await confirmAction({
    title: 'Stop deployment?',
    body: `Deployment ${deployment.name} (${deployment.id}) stops serving; its URL stops answering.`,
    accept: 'Stop deployment'
  });
  if (!accepted) {
    return;
  }
  try {
    await controller.stopDeployment(deployment.id);
  } catch (error) {
    Notification.error(`Could not stop deployment ${deployment.id}: ${messageOf(error)}`);
  }
}

/** GPU-hours and cost so far and per hour; on the local backend what Baseten would charge. */
function CostLine(props: { cost: JobCost | undefined; gpu: string | null }): JSX.Element | null {
  const { cost, gpu } = props;
  if (!cost) {
    return null;
  }
  const parts: string[] = [];
  if (gpu) {
    parts.push(`${cost.gpu_hours.toFixed(cost.gpu_hours < 10 ? 3 : 1)} GPU-h`);
  }
  if (cost.billed) {
    parts.push(`${formatUsd(cost.so_far)} so far`, `${formatUsd(cost.per_hour)}/h`);
  } else if (cost.per_hour > 0) {
    parts.push(`would cost ~${formatUsd(cost.per_hour)}/h on Baseten`);
  } else {
    parts.push('CPU only: no GPU cost');
  }
  return (
    <span
      className="bt-JobDetail-cost"
      data-testid="bt-cost"
      title={cost.source === 'baseten' ? "Baseten's price of this instance type" : "Baseten's documented per-GPU-hour prices"}
    >
      {parts.join(' · ')}
    </span>
  );
}

function DeploymentRow(props: { controller: JobController; state: JobViewState; deployment: Deployment }): JSX.Element {
  const { controller, state, deployment: d } = props;
  const [input, setInput] = React.useState(d.kind === 'model' ? '{}' : 'Hello');
  const serving = DEPLOYMENT_SERVING.has(d.status);
  const live = serving || DEPLOYMENT_PENDING.has(d.status);
  const busy = state.calling.has(d.id);
  const answer = state.answers[d.id];
  const tone = serving ? 'success' : DEPLOYMENT_PENDING.has(d.status) ? 'pending' : d.status === 'FAILED' ? 'danger' : 'muted';
  return (
    <li className="bt-Deployment" data-testid="bt-deployment" data-deployment-id={d.id}>
      <div className="bt-Deployment-head">
        <span className={`bt-StatusBadge bt-StatusBadge-${tone}`} data-testid="bt-deployment-status">
          {d.status}
        </span>
        <strong>{d.name}</strong>
        {d.checkpoint ? <span className="bt-Muted">{d.checkpoint}</span> : null}
        {d.url ? (
          <a href={d.url} target="_blank" rel="noopener noreferrer" data-testid="bt-deployment-url">
            {d.url}
          </a>
        ) : null}
        <span className="bt-JobDetail-spacer" />
        <button
          className="bt-Button bt-mod-warn"
          data-testid="bt-deployment-stop"
          disabled={!live || busy}
          onClick={() => void confirmStopDeployment(controller, d)}
        >
          Stop deployment
        </button>
      </div>
      {d.error ? <ErrorLine message={d.error} /> : null}
      {serving && (
        <form
          className="bt-TryIt"
          onSubmit={e => {
            e.preventDefault();
            void controller.tryDeployment(d.id, input);
          }}
        >
          <textarea
            className="bt-TryIt-input"
            data-testid="bt-try-input"
            aria-label={d.kind === 'model' ? 'JSON request' : 'Prompt'}
            placeholder={d.kind === 'model' ? 'JSON for predict()' : 'A prompt to complete'}
            rows={2}
            value={input}
            onChange={e => setInput(e.target.value)}
          />
          <button className="bt-Button" type="submit" data-testid="bt-try-send" disabled={busy}>
            {busy ? 'Sending…' : 'Send'}
          </button>
          {answer && (
            <pre className={`bt-TryIt-answer${answer.error ? ' bt-mod-error' : ''}`} data-testid="bt-try-answer">
              {answer.text}
            </pre>
          )}
        </form>
      )}
    </li>
  );
}

function JobDetailView(props: { controller: JobController }): JSX.Element {
  const { controller } = props;
  const state = useController(controller);
  const [fetchedAt, setFetchedAt] = React.useState(Date.now());
  React.useEffect(() => setFetchedAt(Date.now()), [state.detail]);
  const job = state.detail?.job ?? null;
  const now = useNow(job !== null && isActive(job));

  if (!state.detail || !job) {
    return (
      <div className="bt-JobDetail">
        <ErrorLine message={state.error} />
        {!state.error && <p className="bt-Empty">Loading job {controller.jobId}…</p>}
      </div>
    );
  }
  const { history, checkpoints, deployments } = state.detail;
  return (
    <div className="bt-JobDetail" data-testid="bt-job-detail">
      <header className="bt-JobDetail-header">
        <h2>{job.name ?? job.id}</h2>
        <StatusBadge status={job.status_short} />
        <code className="bt-JobId" data-testid="bt-job-id" title={job.id}>
          {job.id}
        </code>
        <CopyButton text={job.id} what="job id" />
        <span className="bt-JobDetail-ago" title={formatTime(job.created_at)}>
          started {formatAgo(job.created_at, now)}
        </span>
        <span className="bt-JobDetail-elapsed">{formatElapsed(liveElapsed(job, fetchedAt, now))}</span>
        <CostLine cost={state.detail.cost} gpu={job.gpu} />
        <span className="bt-JobDetail-spacer" />
        <button className="bt-Button" onClick={() => void controller.refresh()}>
          Refresh
        </button>
        <button
          className="bt-Button bt-mod-warn"
          data-testid="bt-stop"
          disabled={job.is_terminal || state.stopping}
          onClick={() => void confirmStop(controller)}
        >
          {state.stopping ? 'Stopping…' : 'Stop'}
        </button>
      </header>
      <dl className="bt-JobDetail-facts">
        <dt>Job</dt>
        <dd>{job.id}</dd>
        <dt>Project</dt>
        <dd>{job.project}</dd>
        <dt>Backend</dt>
        <dd>{controller.backend}</dd>
        <dt>Compute</dt>
        <dd>
          {job.gpu ?? 'CPU'} × {job.node_count} node{job.node_count === 1 ? '' : 's'}
        </dd>
        <dt>Created</dt>
        <dd>{formatTime(job.created_at)}</dd>
      </dl>
      <ErrorLine message={job.error_message ?? state.error} />
      {job.notice ? (
        <div className="bt-Notice" data-testid="bt-notice">
          {job.notice}
        </div>
      ) : null}

      <section>
        <h3>Lifecycle</h3>
        <ol className="bt-History" data-testid="bt-history">
          {history.map((entry, i) => (
            <li key={`${entry.at}-${i}`}>
              <StatusBadge status={entry.status_short} /> <time dateTime={entry.at}>{formatTime(entry.at)}</time>
            </li>
          ))}
        </ol>
      </section>

      <MetricCharts records={state.metrics} />

      <LogsSection controller={controller} state={state} nodeCount={job.node_count} />

      <section>
        <h3>Checkpoints</h3>
        {checkpoints.length === 0 ? (
          <p className="bt-Empty">No checkpoints yet.</p>
        ) : (
          <table className="bt-Table" data-testid="bt-checkpoints">
            <thead>
              <tr>
                <th>Name</th>
                <th>Created</th>
                <th>Size</th>
                <th>Type</th>
                <th>Base model</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {checkpoints.map(cp => (
                <tr key={cp.name}>
                  <td>{cp.name}</td>
                  <td>{formatTime(cp.created_at)}</td>
                  <td>{formatBytes(cp.size_bytes)}</td>
                  <td>
                    {cp.checkpoint_type ?? '–'}
                    {cp.lora_rank ? ` (rank ${cp.lora_rank})` : ''}
                  </td>
                  <td>{cp.base_model ?? '–'}</td>
                  <td>
                    <button
                      className="bt-Button"
                      data-testid="bt-deploy"
                      disabled={state.deploying.has(cp.name)}
                      onClick={() => void deploy(controller, cp.name)}
                    >
                      {state.deploying.has(cp.name) ? 'Deploying…' : 'Deploy'}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {deployments.length > 0 && (
          <>
            <h3>Deployments</h3>
            <ul className="bt-Deployments" data-testid="bt-deployments">
              {deployments.map(d => (
                <DeploymentRow key={d.id} controller={controller} state={state} deployment={d} />
              ))}
            </ul>
          </>
        )}
      </section>
    </div>
  );
}

/** The newest lines the log view draws (all of them are searched and downloaded). */
const MAX_RENDERED = 3000;

function LogsSection(props: {
  controller: JobController;
  state: JobViewState;
  nodeCount: number;
}): JSX.Element {
  const { controller, state, nodeCount } = props;
  const { logs } = state;
  const [follow, setFollow] = React.useState(true);
  const [showMetrics, setShowMetrics] = React.useState(false);
  const [search, setSearch] = React.useState('');
  const [node, setNode] = React.useState<number | null>(null);
  const box = React.useRef<HTMLDivElement>(null);
  const shown = React.useMemo(
    () => visibleLogLines(logs.lines, { showMetrics, search, node }),
    [logs.lines, showMetrics, search, node]
  );
  const most = MAX_RENDERED + logs.readBack; // what was read back is shown too
  const rendered = shown.length > most ? shown.slice(shown.length - most) : shown;
  React.useEffect(() => {
    if (follow && box.current) {
      box.current.scrollTop = box.current.scrollHeight;
    }
  }, [rendered, follow]);
  const toggle = (on: boolean): void => {
    setFollow(on);
    controller.setFollow(on);
  };
  const nodes = Array.from({ length: Math.max(1, nodeCount) }, (_, i) => i);
  return (
    <section>
      <h3>
        Logs
        <label className="bt-Follow">
          <input
            type="checkbox"
            data-testid="bt-follow"
            checked={follow && !logs.done}
            disabled={logs.done}
            onChange={e => toggle(e.target.checked)}
          />
          Follow
        </label>
        <label className="bt-Follow" title="Show the [bt-metric] lines the charts are drawn from">
          <input
            type="checkbox"
            data-testid="bt-show-metrics"
            checked={showMetrics}
            onChange={e => setShowMetrics(e.target.checked)}
          />
          Metric lines
        </label>
        {nodeCount > 1 && (
          <select
            className="bt-Logs-node"
            aria-label="Node"
            data-testid="bt-logs-node"
            value={node === null ? '' : String(node)}
            onChange={e => setNode(e.target.value === '' ? null : Number(e.target.value))}
          >
            <option value="">all nodes</option>
            {nodes.map(n => (
              <option key={n} value={n}>
                node {n}
              </option>
            ))}
          </select>
        )}
        <input
          className="bt-Logs-search"
          type="search"
          placeholder="Search logs"
          aria-label="Search logs"
          data-testid="bt-logs-search"
          value={search}
          onChange={e => setSearch(e.target.value)}
        />
        <span className="bt-Logs-count">
          {search || node !== null ? `${shown.length} of ` : ''}
          {logs.lines.length} lines{logs.done ? ' · complete' : ''}
        </span>
      </h3>
      <ErrorLine message={logs.error} />
      <div className="bt-Logs" data-testid="bt-logs" ref={box} role="log">
        {logs.earlier && (
          <button
            className="bt-Logs-earlier"
            data-testid="bt-logs-earlier"
            title="Read the lines before these (the log is read a page at a time)"
            onClick={() => {
              toggle(false); // reading history: stay where the reader is
              void controller.readBack();
            }}
          >
            Show earlier lines
          </button>
        )}
        {rendered.map((line, i) => (
          <div className="bt-LogLine" key={`${line.timestamp}-${i}`}>
            <span className="bt-LogLine-time">{formatClock(line.timestamp)} </span>
            <span className="bt-LogLine-node" data-testid="bt-log-node">
              {line.node === null ? '–' : line.node}{' '}
            </span>
            <span className="bt-LogLine-message">{line.message}</span>
          </div>
        ))}
      </div>
    </section>
  );
}
