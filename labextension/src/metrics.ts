/**
 * `log_metrics` records as chart data: one chart per metric, one series per node where
 * nodes report separately, x as the step or the time, optional smoothing. Pure (no uPlot,
 * no DOM) so the shaping is tested with jest; chart.tsx only draws it.
 */

import type { MetricRecord } from './model';

export type XAxis = 'step' | 'time';

/** Keys of a record that are not metric values. */
const RESERVED = new Set(['step', 'time', 'node']);

export interface SeriesData {
  label: string;
  node: number | null;
  /** Aligned with the chart's `x`; null where this node has no value at that x. */
  values: (number | null)[];
}

export interface ChartData {
  metric: string;
  x: number[];
  series: SeriesData[];
}

/** The metric names in first-seen order. */
export function metricNames(records: readonly MetricRecord[]): string[] {
  const names: string[] = [];
  for (const record of records) {
    for (const [key, value] of Object.entries(record)) {
      if (!RESERVED.has(key) && typeof value === 'number' && !names.includes(key)) {
        names.push(key);
      }
    }
  }
  return names;
}

function xOf(record: MetricRecord, axis: XAxis, index: number): number {
  if (axis === 'time') {
    return record.time;
  }
  return typeof record.step === 'number' ? record.step : index;
}

/**
 * Exponential moving average with TensorBoard's debiasing (the first points are not
 * pulled towards zero); `weight` 0 returns the values unchanged. Gaps stay gaps.
 */
export function smooth(values: readonly (number | null)[], weight: number): (number | null)[] {
  const w = Math.min(Math.max(weight, 0), 0.999);
  if (w === 0) {
    return [...values];
  }
  let last = 0;
  let seen = 0;
  return values.map(value => {
    if (value === null || !Number.isFinite(value)) {
      return null;
    }
    last = last * w + (1 - w) * value;
    seen += 1;
    return last / (1 - Math.pow(w, seen));
  });
}

/**
 * One chart per metric; a series per node when more than one node reported it, named by
 * `labels` where given (the compared runs).
 */
export function buildCharts(
  records: readonly MetricRecord[],
  axis: XAxis,
  smoothing = 0,
  labels?: ReadonlyMap<number, string>
): ChartData[] {
  return metricNames(records).map(metric => {
    const byNode = new Map<number | null, Map<number, number>>();
    records.forEach((record, index) => {
      const value = record[metric];
      if (typeof value !== 'number') {
        return;
      }
      const node = record.node ?? null;
      let points = byNode.get(node);
      if (!points) {
        points = new Map();
        byNode.set(node, points);
      }
      points.set(xOf(record, axis, index), value);
    });
    const x = [...new Set([...byNode.values()].flatMap(points => [...points.keys()]))].sort(
      (a, b) => a - b
    );
    const nodes = [...byNode.keys()].sort((a, b) => (a ?? -1) - (b ?? -1));
    const multi = nodes.length > 1;
    const series = nodes.map(node => {
      const points = byNode.get(node)!;
      const raw = x.map(at => points.get(at) ?? null);
      return {
        label:
          (node !== null && labels?.get(node)) || (multi ? `${metric} · node ${node ?? '?'}` : metric),
        node,
        values: smooth(raw, smoothing)
      };
    });
    return { metric, x, series };
  });
}

/** Whether every value can go on a log scale (all positive). */
export function logScaleFits(chart: ChartData): boolean {
  return chart.series.every(s => s.values.every(v => v === null || v > 0));
}
