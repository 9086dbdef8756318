/**
 * A saved job widget stays readable. When a notebook is reopened after its kernel has
 * gone, ipywidgets can no longer find the widget's model and shows "Error displaying
 * widget: model not found" (or "Loading widget..." for good) in place of the output. Our
 * widget saves its last known state as `text/html` (a `.btj-static` block) beside the
 * widget view; this wraps the notebook's widget renderer so that block is shown whenever
 * the live view cannot be, and takes it away again as soon as a live view appears.
 */

import type { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';

export const WIDGET_VIEW_MIME = 'application/vnd.jupyter.widget-view+json';
/** The class our widget's saved HTML carries; other widgets' outputs are left alone. */
export const SAVED_MARK = 'btj-static';
/** How long the live view has to appear before the saved state is shown instead. */
export const GRACE_MS = 600;

/** True when `html` is a bt_jupyter widget's saved state. */
export function isSavedJob(html: unknown): html is string {
  return typeof html === 'string' && html.includes(`class="${SAVED_MARK}"`);
}

/** The renderer's node holds a live view (an element), not only a message. */
function hasLiveView(node: HTMLElement, saved: HTMLElement): boolean {
  return Array.from(node.children).some(child => child !== saved);
}

/**
 * Keeps one widget renderer's output readable: while its node holds no live view (only
 * "Loading widget..." or "model not found"), the saved state is shown in it; as soon as
 * a view appears, the saved state goes.
 */
export class SavedState {
  readonly element = document.createElement('div');
  private readonly observer: MutationObserver;
  private timer = 0;

  constructor(private readonly node: HTMLElement) {
    this.element.className = 'btj-saved-output';
    this.observer = new MutationObserver(() => {
      if (this.live) {
        this.element.remove();
      } else if (!this.element.isConnected) {
        this.settleLater();
      }
    });
    this.observer.observe(node, { childList: true });
  }

  get live(): boolean {
    return hasLiveView(this.node, this.element);
  }

  /** The saved state to show when there is no live view (already sanitized HTML). */
  update(html: string): void {
    this.element.innerHTML = html;
    this.settleLater();
  }

  dispose(): void {
    this.observer.disconnect();
    window.clearTimeout(this.timer);
    this.element.remove();
  }

  private settleLater(): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.settle(), GRACE_MS);
  }

  private settle(): void {
    if (this.live || this.element.isConnected || !this.element.innerHTML) {
      return;
    }
    for (const child of Array.from(this.node.childNodes)) {
      if (child.nodeType === Node.TEXT_NODE) {
        child.remove(); // the renderer's "Loading widget..." / "model not found"
      }
    }
    this.node.append(this.element);
  }
}

function modelId(model: IRenderMime.IMimeModel): unknown {
  const view = model.data[WIDGET_VIEW_MIME] as { model_id?: unknown } | undefined;
  return view?.model_id;
}

const WRAPPED = Symbol('btj-saved-state');

/**
 * Wrap `rendermime`'s widget-view factory (registered by ipywidgets per notebook) once.
 * Called again later it is a no-op, so callers may call it whenever the factory may have
 * been replaced.
 */
export function keepSavedWidgetsReadable(rendermime: IRenderMimeRegistry): void {
  const factory = rendermime.getFactory(WIDGET_VIEW_MIME) as
    | (IRenderMime.IRendererFactory & { [WRAPPED]?: true })
    | undefined;
  if (!factory || factory[WRAPPED]) {
    return;
  }
  const wrapped: IRenderMime.IRendererFactory & { [WRAPPED]: true } = {
    [WRAPPED]: true,
    safe: factory.safe,
    mimeTypes: factory.mimeTypes,
    defaultRank: factory.defaultRank,
    createRenderer: options => {
      // The renderer itself is returned (ipywidgets finds its renderers by class to hand
      // them their widget manager); only its renderModel is extended.
      const renderer = factory.createRenderer(options);
      const renderModel = renderer.renderModel.bind(renderer);
      let saved: SavedState | null = null;
      let shownId: unknown;
      renderer.renderModel = (model: IRenderMime.IMimeModel): Promise<void> => {
        const html = model.data['text/html'];
        if (!isSavedJob(html)) {
          return renderModel(model);
        }
        saved ??= new SavedState(renderer.node);
        saved.update(options.sanitizer.sanitize(html));
        // the kernel refreshes the saved state as the job moves on: the live view of the
        // same widget stays as it is (its scroll position, filter and dialogs with it)
        if (saved.live && modelId(model) === shownId) {
          return Promise.resolve();
        }
        shownId = modelId(model);
        return renderModel(model);
      };
      renderer.disposed.connect(() => saved?.dispose());
      return renderer;
    }
  };
  rendermime.addFactory(wrapped, rendermime.getRank(WIDGET_VIEW_MIME));
}
