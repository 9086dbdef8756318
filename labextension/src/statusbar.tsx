/** The status-bar item "⚙ N training": running jobs of the current backend; opens the sidebar. */

import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { useStore } from './components';
import { filterCountsOf } from './model';
import type { TrainingStore } from './store';

export class RunningJobsItem extends ReactWidget {
  constructor(
    private readonly store: TrainingStore,
    private readonly openSidebar: () => void
  ) {
    super();
    this.addClass('bt-StatusItem');
  }

  protected render(): JSX.Element {
    return <RunningJobs store={this.store} onClick={this.openSidebar} />;
  }
}

function RunningJobs(props: { store: TrainingStore; onClick: () => void }): JSX.Element {
  const state = useStore(props.store);
  const count = filterCountsOf(state.statusCounts).running;
  return (
    <span
      className={`jp-StatusBar-TextItem bt-StatusItem-text${count > 0 ? ' bt-mod-active' : ''}`}
      role="button"
      data-testid="bt-statusbar"
      title={`${count} training job${count === 1 ? '' : 's'} running on ${state.backend}: open the Training sidebar`}
      onClick={props.onClick}
    >
      ⚙ {count} training
    </span>
  );
}
