import { holdsMetric, metricRecord } from '../metricLine';
// the cases bt_jupyter.runtime.parse_metric is tested with too (tests/test_runtime_metrics.py)
import shared from '../../../tests/cases/metric_lines.json';

describe('a metric record in a log line: the rule shared with Python', () => {
  it.each(shared.cases.map(c => [c.name, c.message, c.record] as const))(
    '%s',
    (_name, message, record) => {
      expect(metricRecord(message)).toEqual(record);
      expect(holdsMetric(message)).toBe(record !== null);
    }
  );
});
