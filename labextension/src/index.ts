/**
 * bt-jupyter: the Training sidebar, job panels, the running-jobs status item and the
 * "Run cell on Baseten" command, wired to JupyterLab. The logic lives in model/api/store/
 * job/logs; this file only connects them to the shell, the settings and the commands.
 */

import {
  ILayoutRestorer,
  type JupyterFrontEnd,
  type JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, type NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { TrainingApi } from './api';
import { CompareController, ComparePanel, comparePanelId } from './comparepanel';
import { answerWidgetConfirms } from './confirm';
import { answerInsertCell } from './insertcell';
import { trainingIcon } from './icons';
import { JobController } from './job';
import { JobPanel, jobPanelId } from './jobpanel';
import { hasTrainMagic, type Backend, type MagicDefaults } from './model';
import { runCellOnBaseten } from './runcell';
import { keepSavedWidgetsReadable } from './savedwidget';
import { SIDEBAR_ID, TrainingSidebar } from './sidebar';
import { RunningJobsItem } from './statusbar';
import { TrainingStore } from './store';

const PLUGIN_ID = 'bt-jupyter:plugin';

/** The widget's "Open in Training sidebar" asks for a job's panel with this DOM event. */
export const OPEN_JOB_EVENT = 'bt-jupyter:open-job';

interface OpenJobDetail {
  jobId?: unknown;
  projectId?: unknown;
  backend?: unknown;
}

export namespace CommandIDs {
  export const runCell = 'bt-jupyter:run-cell-on-baseten';
  export const openSidebar = 'bt-jupyter:open-sidebar';
  export const openJob = 'bt-jupyter:open-job';
}

interface Settings extends MagicDefaults {
  pollInterval: number;
}

const DEFAULTS: Settings = { backend: 'local', project: '', pollInterval: 5 };

function readSettings(settings: ISettingRegistry.ISettings | null): Settings {
  if (!settings) {
    return DEFAULTS;
  }
  const c = settings.composite as Record<string, unknown>;
  return {
    backend: c.defaultBackend === 'baseten' ? 'baseten' : 'local',
    project: typeof c.defaultProject === 'string' ? c.defaultProject : '',
    pollInterval: typeof c.pollInterval === 'number' ? c.pollInterval : DEFAULTS.pollInterval
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Training sidebar, job panels and "Run cell on Baseten" for bt_jupyter.',
  autoStart: true,
  optional: [ISettingRegistry, IStatusBar, INotebookTracker, ICommandPalette, ILayoutRestorer],
  activate: async (
    app: JupyterFrontEnd,
    registry: ISettingRegistry | null,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ): Promise<void> => {
    const notebook7 = app.name === 'Jupyter Notebook';
    const serverSettings = ServerConnection.makeSettings();
    const api = new TrainingApi(
      (url, init) => ServerConnection.makeRequest(url, init, serverSettings),
      serverSettings.baseUrl
    );
    const settings = registry ? await registry.load(PLUGIN_ID).catch(() => null) : null;
    let current = readSettings(settings);

    const store = new TrainingStore(api, {
      backend: current.backend,
      pollIntervalS: current.pollInterval
    });
    const panels = new WidgetTracker<JobPanel>({ namespace: 'bt-jupyter-jobs' });
    settings?.changed.connect(() => {
      current = readSettings(settings);
      store.setPollInterval(current.pollInterval);
      panels.forEach(panel => panel.controller.setPollInterval(current.pollInterval));
    });

    const openJob = (backend: Backend, jobId: string, label?: string): JobPanel => {
      const existing = panels.find(p => p.id === jobPanelId(backend, jobId));
      if (existing) {
        app.shell.activateById(existing.id);
        return existing;
      }
      const controller = new JobController(api, backend, jobId, {
        pollIntervalS: current.pollInterval,
        onJob: job => {
          if (backend === store.state.backend) {
            store.upsertJob(job);
          }
        }
      });
      const panel = new JobPanel(controller, label ?? jobId);
      void panels.add(panel);
      // Notebook 7's main area holds the one notebook of the page: the panel goes right.
      app.shell.add(panel, notebook7 ? 'right' : 'main', { rank: 1000 });
      app.shell.activateById(panel.id);
      return panel;
    };

    const compares = new WidgetTracker<ComparePanel>({ namespace: 'bt-jupyter-compare' });
    const compareJobs = (backend: Backend, jobIds: string[]): void => {
      const existing = compares.find(p => p.id === comparePanelId(backend, jobIds));
      if (existing) {
        app.shell.activateById(existing.id);
        return;
      }
      const panel = new ComparePanel(
        new CompareController(api, backend, jobIds, current.pollInterval)
      );
      void compares.add(panel);
      app.shell.add(panel, notebook7 ? 'right' : 'main', { rank: 1000 });
      app.shell.activateById(panel.id);
    };
    const sidebar = new TrainingSidebar(
      store,
      (backend, job) => openJob(backend, job.id, job.name ?? job.id),
      compareJobs
    );
    app.shell.add(sidebar, 'left', { rank: 650 });
    restorer?.add(sidebar, SIDEBAR_ID);
    store.start();

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'Show Training Sidebar',
      icon: trainingIcon,
      execute: () => app.shell.activateById(SIDEBAR_ID)
    });
    app.commands.addCommand(CommandIDs.openJob, {
      label: 'Open Training Job',
      describedBy: {
        args: {
          type: 'object',
          properties: { jobId: { type: 'string' }, backend: { type: 'string', enum: ['local', 'baseten'] } },
          required: ['jobId']
        }
      },
      execute: args => {
        const backend: Backend = args.backend === 'baseten' ? 'baseten' : 'local';
        openJob(backend, String(args.jobId));
      }
    });

    // Job panels open at the last session's end reopen (and follow their logs again).
    void restorer?.restore(panels, {
      command: CommandIDs.openJob,
      args: panel => ({ jobId: panel.controller.jobId, backend: panel.controller.backend }),
      name: panel => panel.id
    });

    // The job widget (any notebook frontend) checks this flag to offer "Open in Training
    // sidebar", and asks with a DOM event: no import between the two bundles.
    document.body.dataset.btJupyterSidebar = '1';
    answerWidgetConfirms();
    document.addEventListener(OPEN_JOB_EVENT, event => {
      const detail = ((event as CustomEvent).detail ?? {}) as OpenJobDetail;
      if (typeof detail.jobId !== 'string' || !detail.jobId) {
        return;
      }
      const backend: Backend =
        detail.backend === 'baseten' || detail.backend === 'local'
          ? detail.backend
          : store.state.backend;
      openJob(backend, detail.jobId);
    });

    // A %%bt_train cell submits a job: poll fast from the moment it starts (the status bar
    // and sidebar show the job within a second), and refresh when it has run.
    NotebookActions.executionScheduled.connect((_, { cell }) => {
      if (cell.model.type === 'code' && hasTrainMagic(cell.model.sharedModel.getSource())) {
        store.expectJob();
      }
    });
    NotebookActions.executed.connect((_, { cell }) => {
      if (cell.model.type === 'code' && hasTrainMagic(cell.model.sharedModel.getSource())) {
        void store.refreshNow();
      }
    });

    if (notebooks) {
      // ipywidgets puts its widget renderer into each notebook's rendermime (when the
      // notebook opens, and again once its kernel is ready): wrap it after each of these.
      const keepReadable = (panel: NotebookPanel): void => {
        const wrap = () => keepSavedWidgetsReadable(panel.content.rendermime);
        void Promise.resolve().then(wrap);
        void panel.sessionContext.ready.then(() => window.setTimeout(wrap, 0));
      };
      notebooks.forEach(keepReadable);
      notebooks.widgetAdded.connect((_, panel) => keepReadable(panel));
      answerInsertCell(notebooks);

      app.commands.addCommand(CommandIDs.runCell, {
        label: 'Run Cell on Baseten',
        caption: 'Run the active cell as a %%bt_train job with the default backend and project',
        icon: trainingIcon,
        isEnabled: () => notebooks.activeCell?.model.type === 'code',
        execute: async () => {
          const panel = notebooks.currentWidget;
          if (panel) {
            store.expectJob();
            await runCellOnBaseten(panel, current);
            void store.refreshNow();
          }
        }
      });
      notebooks.activeCellChanged.connect(() => app.commands.notifyCommandChanged(CommandIDs.runCell));
    }

    if (palette) {
      const category = 'Baseten Training';
      palette.addItem({ command: CommandIDs.openSidebar, category });
      if (notebooks) {
        palette.addItem({ command: CommandIDs.runCell, category });
      }
    }

    if (statusBar) {
      statusBar.registerStatusItem('bt-jupyter:running-jobs', {
        item: new RunningJobsItem(store, () => app.shell.activateById(SIDEBAR_ID)),
        align: 'left',
        rank: 50
      });
    }
  }
};

export default plugin;
