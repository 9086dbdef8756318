/**
 * A job's detail panel in the main area: lifecycle, logs (follow), checkpoints with
 * Deploy, and Stop behind a confirmation. State and requests live in JobController.
 */

import { Dialog, MainAreaWidget, Notification, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ErrorLine, StatusBadge, useNow } from './components';
import { trainingIcon } from './icons';
import { JobController, type JobViewState } from './job';
import {
  formatBytes,
  formatElapsed,
  formatLogLine,
  formatTime,
  isActive,
  liveElapsed,
  type Backend
} from './model';
import { messageOf } from './store';

/** One panel per backend and job: opening a job twice shows the same panel. */
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
    // a panel reopened by the layout restorer knows only the id until the job arrives
    controller.subscribe(state => {
      if (state.detail) {
        this.title.label = state.detail.job.name ?? state.detail.job.id;
      }
    });
    controller.start();
  }

  dispose(): void {
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
  const result = await showDialog({
    title: 'Stop training job?',
    body: `Job ${controller.jobId} gets SIGTERM, then SIGKILL after a grace period. It cannot be resumed (a new job can load its checkpoints).`,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop job' })]
  });
  if (!result.button.accept) {
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
        <span className="bt-JobDetail-elapsed">{formatElapsed(liveElapsed(job, fetchedAt, now))}</span>
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

      <LogsSection controller={controller} state={state} multiNode={job.node_count > 1} />

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
            <ul className="bt-Deployments">
              {deployments.map(d => (
                <li key={d.id}>
                  {d.name} · {d.status}
                  {d.checkpoint ? ` · ${d.checkpoint}` : ''}
                  {d.url ? (
                    <>
                      {' · '}
                      <code>{d.url}</code>
                    </>
                  ) : null}
                </li>
              ))}
            </ul>
          </>
        )}
      </section>
    </div>
  );
}

function LogsSection(props: {
  controller: JobController;
  state: JobViewState;
  multiNode: boolean;
}): JSX.Element {
  const { controller, state, multiNode } = props;
  const { logs } = state;
  const [follow, setFollow] = React.useState(true);
  const pre = React.useRef<HTMLPreElement>(null);
  React.useEffect(() => {
    if (follow && pre.current) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [logs.lines, follow]);
  const toggle = (on: boolean): void => {
    setFollow(on);
    controller.setFollow(on);
  };
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
        <span className="bt-Logs-count">
          {logs.lines.length} lines{logs.done ? ' · complete' : ''}
        </span>
      </h3>
      <ErrorLine message={logs.error} />
      <pre className="bt-Logs" data-testid="bt-logs" ref={pre}>
        {logs.lines.map(line => formatLogLine(line, multiNode)).join('\n')}
      </pre>
    </section>
  );
}
