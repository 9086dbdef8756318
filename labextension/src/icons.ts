/** The Training sidebar's icon: a loss curve falling over steps (themed via jp-icon3). */

import { LabIcon } from '@jupyterlab/ui-components';

const trainingSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 3h2v16h16v2H3z"/>
    <path d="M7.7 6.3 10 12.1l2.4-2.2 2.7 4.6 2.5-1.6 2.2 3.3-1.7 1.1-1.1-1.7-2.6 1.7-2.3-3.9-2.7 2.4L6.2 7.1z"/>
  </g>
</svg>`;

export const trainingIcon = new LabIcon({ name: 'bt-jupyter:training', svgstr: trainingSvg });
