/**
 * Where a log line holds a metric record: the same rule as bt_jupyter.runtime.parse_metric,
 * tested with the same cases (tests/cases/metric_lines.json). Pure: the sidebar (model.ts)
 * and the notebook widget (widget/job.js, bundled by esbuild) both import it.
 *
 * The record need not start the line: a progress bar (tqdm, Lightning's) redraws with `\r`
 * and no newline, so a record printed meanwhile lands after the bar. The last prefix
 * counts, up to the next `\r`, without colour codes.
 */

export const METRIC_PREFIX = '[bt-metric] ';

// eslint-disable-next-line no-control-regex
const ESCAPE = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

/** The record a log message holds, or null. */
export function metricRecord(message: string): Record<string, unknown> | null {
  const at = message.lastIndexOf(METRIC_PREFIX);
  if (at < 0) {
    return null;
  }
  let text = message.slice(at + METRIC_PREFIX.length).split('\r', 1)[0];
  if (text.includes('\x1b')) {
    text = text.replace(ESCAPE, '');
  }
  try {
    const record: unknown = JSON.parse(text);
    return record !== null && typeof record === 'object' && !Array.isArray(record)
      ? (record as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** Whether a log message holds a metric record (the log views hide such lines). */
export function holdsMetric(message: string): boolean {
  return metricRecord(message) !== null;
}
