/** Small React pieces shared by the sidebar, the job panel and the status bar. */

import { Clipboard, Notification } from '@jupyterlab/apputils';
import { copyIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { StatusShort } from './model';
import { statusTone } from './model';
import type { StoreState, TrainingStore } from './store';

/** The store's state, re-rendering on every change. */
export function useStore(store: TrainingStore): StoreState {
  const [state, setState] = React.useState(store.state);
  React.useEffect(() => {
    setState(store.state);
    return store.subscribe(setState);
  }, [store]);
  return state;
}

/** `Date.now()` refreshed every second while `active`, so elapsed times tick. */
export function useNow(active: boolean): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!active) {
      return;
    }
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [active]);
  return now;
}

export function StatusBadge(props: { status: StatusShort }): JSX.Element {
  return (
    <span
      className={`bt-StatusBadge bt-StatusBadge-${statusTone(props.status)}`}
      data-testid="bt-status"
    >
      {props.status}
    </span>
  );
}

export function ErrorLine(props: { message: string | null }): JSX.Element | null {
  if (!props.message) {
    return null;
  }
  return (
    <div className="bt-Error" role="alert" data-testid="bt-error">
      {props.message}
    </div>
  );
}

/** A small "copy" button: the job id to paste into `%bt_job ID` or a ticket. */
export function CopyButton(props: { text: string; what: string }): JSX.Element {
  return (
    <button
      className="bt-Button bt-CopyButton"
      data-testid="bt-copy"
      title={`Copy the ${props.what} (${props.text})`}
      aria-label={`Copy the ${props.what}`}
      onClick={event => {
        event.stopPropagation();
        Clipboard.copyToSystem(props.text);
        Notification.info(`Copied ${props.what} ${props.text}`, { autoClose: 2000 });
      }}
    >
      <copyIcon.react tag="span" elementSize="small" />
    </button>
  );
}
