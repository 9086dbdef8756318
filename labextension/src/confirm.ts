/**
 * One confirm dialog for every destructive action: JupyterLab's own, for the job panel
 * and, through a DOM event, for the job widget too (the widget cannot import JupyterLab:
 * it also runs in frontends without this extension, where it uses its own dialog).
 */

import { Dialog, showDialog } from '@jupyterlab/apputils';

/** The event the job widget sends; a listener sets `handled` and calls `resolve`. */
export const CONFIRM_EVENT = 'bt-jupyter:confirm';

export interface ConfirmRequest {
  title: string;
  body: string;
  /** The accept button's label, e.g. "Stop job". */
  accept: string;
}

/** Ask with JupyterLab's dialog; true when the user accepted. */
export async function confirmAction(request: ConfirmRequest): Promise<boolean> {
  const result = await showDialog({
    title: request.title,
    body: request.body,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: request.accept })]
  });
  return result.button.accept;
}

interface ConfirmEventDetail extends Partial<ConfirmRequest> {
  handled?: boolean;
  resolve?: unknown;
}

/** Answer the job widget's confirm requests with `confirmAction`. */
export function answerWidgetConfirms(): void {
  document.addEventListener(CONFIRM_EVENT, event => {
    const detail = (event as CustomEvent<ConfirmEventDetail>).detail;
    if (
      !detail ||
      typeof detail.title !== 'string' ||
      typeof detail.body !== 'string' ||
      typeof detail.accept !== 'string' ||
      typeof detail.resolve !== 'function'
    ) {
      return;
    }
    const resolve = detail.resolve as (accepted: boolean) => void;
    detail.handled = true;
    void confirmAction({ title: detail.title, body: detail.body, accept: detail.accept }).then(resolve);
  });
}
