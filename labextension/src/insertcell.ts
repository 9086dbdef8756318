/**
 * "Load in notebook" in the job widget: a code cell below the widget's cell, which the
 * user reads and runs (no hidden state in the kernel). The widget asks with a DOM event
 * (it cannot import JupyterLab); without this extension it copies the code instead.
 */

import { NotebookActions, type INotebookTracker } from '@jupyterlab/notebook';

export const INSERT_CELL_EVENT = 'bt-jupyter:insert-cell';

interface InsertCellDetail {
  code?: unknown;
  handled?: boolean;
}

/** Insert the requested code below the cell whose output sent the event. */
export function answerInsertCell(notebooks: INotebookTracker): void {
  document.addEventListener(INSERT_CELL_EVENT, event => {
    const detail = (event as CustomEvent<InsertCellDetail>).detail;
    const from = event.target;
    if (!detail || typeof detail.code !== 'string' || !(from instanceof Node)) {
      return;
    }
    const panel = notebooks.find(p => p.node.contains(from));
    if (!panel) {
      return;
    }
    const notebook = panel.content;
    const index = notebook.widgets.findIndex(cell => cell.node.contains(from));
    if (index < 0) {
      return;
    }
    notebook.activeCellIndex = index;
    notebook.deselectAll();
    NotebookActions.insertBelow(notebook);
    notebook.activeCell?.model.sharedModel.setSource(detail.code);
    detail.handled = true;
  });
}
