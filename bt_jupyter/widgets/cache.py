"""``%bt_cache``'s table: a project's cache, sortable by any column in the browser, with
the text table as the fallback where widgets do not render (terminals, nbconvert)."""

from __future__ import annotations

import html
from dataclasses import asdict
from typing import Any

import anywidget
import traitlets

from bt_jupyter.cache_summary import CacheView

_ESM = """
const COLUMNS = [["path", "path"], ["size_bytes", "size"], ["modified", "modified"],
                 ["type", "type"], ["permissions", "mode"]];
function render({ model, el }) {
  let key = "path", descending = false;
  const title = document.createElement("div");
  title.className = "btj-cache-title";
  const table = document.createElement("table");
  table.className = "btj-cache";
  const draw = () => {
    title.textContent = model.get("title");
    const rows = [...model.get("rows")].sort((a, b) => {
      const x = a[key], y = b[key];
      const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
      return descending ? -order : order;
    });
    const head = document.createElement("tr");
    for (const [field, label] of COLUMNS) {
      const th = document.createElement("th");
      th.textContent = label + (field === key ? (descending ? " \\u25BC" : " \\u25B2") : "");
      th.dataset.sort = field;
      th.addEventListener("click", () => {
        descending = field === key ? !descending : field === "size_bytes";
        key = field;
        draw();
      });
      head.append(th);
    }
    const body = rows.map((r) => {
      const tr = document.createElement("tr");
      for (const [field] of COLUMNS) {
        const td = document.createElement("td");
        td.textContent = field === "size_bytes" ? r.size
          : field === "modified" ? new Date(r.modified).toLocaleString() : r[field];
        tr.append(td);
      }
      return tr;
    });
    table.replaceChildren(head, ...body);
  };
  model.on("change:rows", draw);
  draw();
  el.append(title, table);
}
export default { render };
"""

_CSS = """
.btj-cache-title { font-weight: 600; margin: 4px 0; color: var(--jp-ui-font-color1, inherit); }
table.btj-cache { border-collapse: collapse; font-family: var(--jp-code-font-family, monospace);
  font-size: var(--jp-code-font-size, 12px); color: var(--jp-content-font-color1, inherit); }
table.btj-cache th { cursor: pointer; text-align: left; user-select: none;
  border-bottom: 1px solid var(--jp-border-color1, #ccc); padding: 2px 10px 2px 0; }
table.btj-cache td { padding: 1px 10px 1px 0; white-space: nowrap; }
table.btj-cache td:nth-child(2) { text-align: right; }
"""


class CacheTable(anywidget.AnyWidget):
    """The rows of a :class:`CacheView`; the browser sorts them (click a column)."""

    _esm = _ESM
    _css = _CSS
    title = traitlets.Unicode("").tag(sync=True)
    rows: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)

    def __init__(self, view: CacheView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view = view
        self.title = view.as_text().splitlines()[0]
        self.rows = [{**asdict(r), "size": r.size} for r in view.rows]

    def __repr__(self) -> str:
        return self.view.as_text()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        return {
            **data,
            "text/plain": self.view.as_text(),
            "text/html": _static(self.view),
        }, metadata


def _static(view: CacheView) -> str:
    """The table as static HTML (a saved notebook, nbconvert, GitHub)."""
    e = html.escape
    cells = "".join(
        f"<tr><td>{e(r.path)}</td><td>{e(r.size)}</td><td>{e(r.modified)}</td>"
        f"<td>{e(r.type)}</td><td>{e(r.permissions)}</td></tr>"
        for r in view.rows
    )
    return (
        f"<p>{e(view.as_text().splitlines()[0])}</p><table><tr><th>path</th><th>size</th>"
        f"<th>modified</th><th>type</th><th>mode</th></tr>{cells}</table>"
    )
