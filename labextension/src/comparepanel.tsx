/**
 * The sidebar's "Compare": several jobs in one panel, as `%bt_compare` shows them in a
 * notebook (the server builds the same view): a runs table ranked by a metric, their
 * curves on one chart per metric, and the facts that differed. Refreshed while any of
 * them runs.
 */

import { MainAreaWidget } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { TrainingApi } from './api';
import { MetricCharts } from './chart';
import { ErrorLine, StatusBadge } from './components';
import { trainingIcon } from './icons';
import { comparedRecords, type Backend, type Comparison } from './model';
import { messageOf } from './store';

export function comparePanelId(backend: Backend, jobIds: readonly string[]): string {
  return `bt-jupyter-compare-${backend}-${jobIds.join('-')}`;
}

interface CompareState {
  comparison: Comparison | null;
  error: string;
  metric: string;
}

/** Fetches the comparison, again every `pollIntervalS` until every run has ended. */
export class CompareController {
  state: CompareState = { comparison: null, error: '', metric: '' };
  private listeners = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;

  constructor(
    private readonly api: TrainingApi,
    readonly backend: Backend,
    readonly jobIds: readonly string[],
    private readonly pollIntervalS: number
  ) {}

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private set(next: Partial<CompareState>): void {
    this.state = { ...this.state, ...next };
    this.listeners.forEach(listener => listener());
  }

  setMetric(metric: string): void {
    this.set({ metric });
    void this.refresh();
  }

  async refresh(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    try {
      const comparison = await this.api.compare(this.backend, this.jobIds, this.state.metric);
      this.set({ comparison, error: '' });
      if (comparison.done) {
        return;
      }
    } catch (error) {
      this.set({ error: messageOf(error) });
    }
    if (!this.disposed) {
      this.timer = setTimeout(() => void this.refresh(), this.pollIntervalS * 1000);
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer !== null) {
      clearTimeout(this.timer);
    }
  }
}

export class ComparePanel extends MainAreaWidget<ReactWidget> {
  constructor(readonly controller: CompareController) {
    super({ content: ReactWidget.create(<CompareView controller={controller} />) });
    this.id = comparePanelId(controller.backend, controller.jobIds);
    this.addClass('bt-ComparePanel');
    this.title.icon = trainingIcon;
    this.title.label = `Compare ${controller.jobIds.length} jobs`;
    this.title.caption = `Jobs ${controller.jobIds.join(', ')} (${controller.backend})`;
    this.title.closable = true;
    void controller.refresh();
  }

  dispose(): void {
    this.controller.dispose();
    super.dispose();
  }
}

function useController(controller: CompareController): CompareState {
  const [, setTick] = React.useState(0);
  React.useEffect(() => controller.subscribe(() => setTick(n => n + 1)), [controller]);
  return controller.state;
}

function CompareView(props: { controller: CompareController }): JSX.Element {
  const { controller } = props;
  const { comparison, error } = useController(controller);
  const [onlyDifferences, setOnlyDifferences] = React.useState(true);
  const chart = React.useMemo(
    () => (comparison ? comparedRecords(comparison) : null),
    [comparison]
  );
  if (!comparison) {
    return (
      <div className="bt-Compare">
        <ErrorLine message={error} />
        {!error && <p className="bt-Empty">Loading…</p>}
      </div>
    );
  }
  const swept = [...new Set(comparison.runs.flatMap(run => Object.keys(run.swept)))];
  const metric = comparison.metric;
  const rows = comparison.table.filter(
    row => !onlyDifferences || row.differs || row.name === 'status'
  );
  return (
    <div className="bt-Compare" data-testid="bt-compare">
      <ErrorLine message={error} />
      {comparison.note && <p className="bt-Hint">{comparison.note}</p>}
      <h3>
        Runs
        {comparison.metrics.length > 0 && (
          <label className="bt-Compare-metric">
            rank by{' '}
            <select
              data-testid="bt-compare-metric"
              value={metric}
              onChange={e => controller.setMetric(e.target.value)}
            >
              {comparison.metrics.map(name => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
          </label>
        )}
      </h3>
      <table className="bt-Table" data-testid="bt-compare-runs">
        <thead>
          <tr>
            <th>run</th>
            <th>status</th>
            {swept.map(name => (
              <th key={name}>{name}</th>
            ))}
            <th>final {metric}</th>
            <th>best {metric}</th>
          </tr>
        </thead>
        <tbody>
          {comparison.runs.map(run => (
            <tr key={run.id}>
              <td>{run.label}</td>
              <td>
                <StatusBadge status={run.status} />
              </td>
              {swept.map(name => (
                <td key={name}>{run.swept[name] ?? ''}</td>
              ))}
              <td>{run.final}</td>
              <td>{run.best}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {chart && <MetricCharts records={chart.records} labels={chart.labels} />}
      <h3>
        What differed{' '}
        <label className="bt-Compare-only">
          <input
            type="checkbox"
            data-testid="bt-compare-only"
            checked={onlyDifferences}
            onChange={e => setOnlyDifferences(e.target.checked)}
          />{' '}
          only differences
        </label>
      </h3>
      <table className="bt-Table bt-Compare-facts" data-testid="bt-compare-facts">
        <thead>
          <tr>
            <th />
            {comparison.runs.map(run => (
              <th key={run.id}>{run.label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map(row => (
            <tr key={row.name} className={row.differs ? 'bt-mod-differs' : ''}>
              <th>{row.name}</th>
              {row.values.map((value, i) => (
                <td key={i}>{value}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
