/**
 * "Run cell on Baseten": put the `%%bt_train` line of the settings' defaults in front of the
 * active code cell (unless it has one) and run it.
 */

import { Notification } from '@jupyterlab/apputils';
import { NotebookActions, type NotebookPanel } from '@jupyterlab/notebook';

import { withTrainMagic, type MagicDefaults } from './model';

/** `%%bt_train` exists only after `%load_ext bt_jupyter`; load it quietly (a no-op if loaded). */
async function loadMagics(panel: NotebookPanel): Promise<void> {
  await panel.sessionContext.ready;
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel) {
    return; // running the cell starts a kernel; the magic then reports what is missing
  }
  const info = await kernel.info;
  if (info.language_info.name !== 'python') {
    return;
  }
  // Not awaited: the kernel runs requests in order, so this precedes the cell's execution
  // even while the kernel is busy with an earlier cell.
  kernel.requestExecute({ code: '%load_ext bt_jupyter', silent: true, store_history: false });
}

export async function runCellOnBaseten(
  panel: NotebookPanel,
  defaults: MagicDefaults
): Promise<void> {
  const notebook = panel.content;
  const cell = notebook.activeCell;
  if (!cell || cell.model.type !== 'code') {
    Notification.warning('Select a code cell to run on Baseten.', { autoClose: 4000 });
    return;
  }
  const source = cell.model.sharedModel.getSource();
  let next: string;
  try {
    next = withTrainMagic(source, defaults);
  } catch (error) {
    Notification.error((error as Error).message, { autoClose: 6000 });
    return;
  }
  if (next !== source) {
    cell.model.sharedModel.setSource(next);
  }
  notebook.deselectAll(); // run this cell only, not a multi-cell selection
  await loadMagics(panel).catch(() => undefined);
  await NotebookActions.run(notebook, panel.sessionContext);
}
