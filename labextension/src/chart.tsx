/**
 * The job panel's metric charts, drawn by uPlot: one chart per metric with its own y
 * scale, step (or time) on x, values under the cursor in the legend, smoothing, a log
 * scale, one series per node where nodes report separately. Colours are JupyterLab's CSS
 * variables read when drawing, and charts are redrawn when the theme changes.
 */

import * as React from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { buildCharts, logScaleFits, type ChartData, type XAxis } from './metrics';
import type { MetricRecord } from './model';

/** Series colours, in order: JupyterLab theme variables (they follow light and dark). */
const SERIES_VARS = [
  '--jp-brand-color1',
  '--jp-warn-color1',
  '--jp-success-color1',
  '--jp-error-color1',
  '--jp-accent-color1',
  '--jp-info-color1'
];

function cssVar(name: string, fallback: string): string {
  const value = getComputedStyle(document.body).getPropertyValue(name).trim();
  return value || fallback;
}

/**
 * The theme's small UI font as a canvas font: resolved by the browser to pixels first
 * (the variables hold `em` sizes and quoted family lists a canvas may not take as is).
 */
function canvasFont(): string {
  const probe = document.createElement('span');
  probe.style.font = 'var(--jp-ui-font-size0) var(--jp-ui-font-family)';
  probe.style.fontSize = 'var(--jp-ui-font-size0)';
  probe.style.fontFamily = 'var(--jp-ui-font-family)';
  document.body.appendChild(probe);
  const style = getComputedStyle(probe);
  const font = `${style.fontSize || '11px'} ${style.fontFamily || 'sans-serif'}`;
  probe.remove();
  return font;
}

interface Theme {
  text: string;
  grid: string;
  series: string[];
  font: string;
}

function readTheme(): Theme {
  const text = cssVar('--jp-ui-font-color1', 'currentColor');
  return {
    text,
    grid: cssVar('--jp-border-color2', 'rgba(128,128,128,0.3)'),
    series: SERIES_VARS.map(v => cssVar(v, text)),
    font: canvasFont()
  };
}

/** The theme, re-read whenever JupyterLab switches it (it sets attributes on body). */
function useTheme(): Theme {
  const [theme, setTheme] = React.useState(readTheme);
  React.useEffect(() => {
    const observer = new MutationObserver(() => setTheme(readTheme()));
    observer.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-name', 'data-jp-theme-light'] });
    return () => observer.disconnect();
  }, []);
  return theme;
}

function formatValue(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return '–';
  }
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? value.toExponential(3) : String(+value.toPrecision(5));
}

function options(chart: ChartData, axis: XAxis, log: boolean, width: number, theme: Theme): uPlot.Options {
  const axisStyle = {
    stroke: theme.text,
    font: theme.font,
    grid: { stroke: theme.grid, width: 1 },
    ticks: { stroke: theme.grid, width: 1 }
  };
  return {
    width,
    height: 180,
    title: chart.metric,
    scales: {
      x: { time: axis === 'time' },
      y: log ? { distr: 3 } : {}
    },
    axes: [
      { ...axisStyle, label: axis === 'time' ? 'time' : 'step', labelFont: theme.font },
      { ...axisStyle, size: 60, values: (_u, ticks) => ticks.map(t => formatValue(t)) }
    ],
    cursor: { drag: { x: true, y: false } },
    legend: { live: true },
    series: [
      { label: axis === 'time' ? 'time' : 'step', value: axis === 'time' ? '{HH}:{mm}:{ss}' : (_u, v) => (v === null ? '–' : String(v)) },
      ...chart.series.map((s, i) => ({
        label: s.label,
        stroke: theme.series[i % theme.series.length],
        width: 1.5,
        spanGaps: true,
        points: { show: chart.x.length < 40 },
        value: (_u: uPlot, v: number | null) => formatValue(v)
      }))
    ]
  };
}

function UPlotChart(props: { chart: ChartData; axis: XAxis; log: boolean; theme: Theme }): JSX.Element {
  const { chart, axis, log, theme } = props;
  const host = React.useRef<HTMLDivElement>(null);
  const plot = React.useRef<uPlot | null>(null);
  const shape = `${axis}|${log}|${chart.series.map(s => s.label).join(',')}|${theme.text}|${theme.series.join(',')}`;
  const data = React.useMemo(
    () => [chart.x, ...chart.series.map(s => s.values)] as uPlot.AlignedData,
    [chart]
  );

  // (re)create when what the axes and series are changes; otherwise only new data
  React.useEffect(() => {
    const element = host.current;
    if (!element) {
      return;
    }
    const width = Math.max(240, element.clientWidth || 480);
    plot.current = new uPlot(options(chart, axis, log, width, theme), data, element);
    const resize = new ResizeObserver(() => {
      const w = element.clientWidth;
      if (plot.current && w > 0 && Math.abs(w - plot.current.width) > 2) {
        plot.current.setSize({ width: w, height: 180 });
      }
    });
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape]);
  React.useEffect(() => {
    plot.current?.setData(data);
  }, [data]);
  return <div className="bt-Chart" data-testid="bt-chart" data-metric={chart.metric} ref={host} />;
}

export function MetricCharts(props: {
  records: MetricRecord[];
  labels?: ReadonlyMap<number, string>;
}): JSX.Element | null {
  const [axis, setAxis] = React.useState<XAxis>('step');
  const [smoothing, setSmoothing] = React.useState(0);
  const [log, setLog] = React.useState(false);
  const theme = useTheme();
  const charts = React.useMemo(
    () => buildCharts(props.records, axis, smoothing, props.labels),
    [props.records, axis, smoothing, props.labels]
  );
  if (charts.length === 0) {
    return null;
  }
  return (
    <section className="bt-Metrics" data-testid="bt-metrics">
      <h3>
        Metrics
        <span className="bt-Metrics-controls">
          <label>
            x{' '}
            <select data-testid="bt-chart-x" value={axis} onChange={e => setAxis(e.target.value as XAxis)}>
              <option value="step">step</option>
              <option value="time">time</option>
            </select>
          </label>
          <label title="Exponential moving average (0: raw values)">
            smoothing{' '}
            <input
              type="range"
              data-testid="bt-chart-smoothing"
              min={0}
              max={0.99}
              step={0.01}
              value={smoothing}
              onChange={e => setSmoothing(Number(e.target.value))}
            />{' '}
            {smoothing.toFixed(2)}
          </label>
          <label>
            <input type="checkbox" data-testid="bt-chart-log" checked={log} onChange={e => setLog(e.target.checked)} /> log
            scale
          </label>
        </span>
      </h3>
      <div className="bt-Charts">
        {charts.map(chart => (
          <UPlotChart
            key={chart.metric}
            chart={chart}
            axis={axis}
            log={log && logScaleFits(chart)}
            theme={theme}
          />
        ))}
      </div>
    </section>
  );
}
