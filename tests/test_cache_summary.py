"""``%bt_cache`` and ``Client.cache()``: a project's training cache as ``truss train cache
summarize`` shows it (same folder totals, sort orders, CSV columns and JSON keys, checked
against truss's own code), from a real job that wrote its cache on the local service."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from bt_jupyter import api, spec
from bt_jupyter.cache_summary import SORTS, cache_view, human_bytes
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.widgets.cache import CacheTable
from tests.adversarial.checks import assert_one_clear_line
from tests.conftest import magics_on
from tests.helpers import submit, wait_terminal

truss_cache = pytest.importorskip("truss.cli.train.cache")
truss_common = pytest.importorskip("truss.cli.utils.common")
truss_types = pytest.importorskip("truss.remote.baseten.custom_types")

WRITE_CACHE = (
    'mkdir -p "$BT_PROJECT_CACHE_DIR/hub/models/tiny" "$BT_PROJECT_CACHE_DIR/datasets"'
    ' && head -c 3000000 /dev/zero > "$BT_PROJECT_CACHE_DIR/hub/models/tiny/weights.bin"'
    ' && head -c 1200 /dev/zero > "$BT_PROJECT_CACHE_DIR/hub/models/tiny/config.json"'
    ' && head -c 50000 /dev/zero > "$BT_PROJECT_CACHE_DIR/datasets/rows.arrow"'
)


@pytest.fixture(scope="module")
def cached_project(client: ApiClient) -> api.TrainingProjectV1:
    """A project whose job wrote a small cache (a model and a dataset)."""
    project = client.upsert_project(f"cache-{new_id()}")
    job = submit(
        client,
        project,
        [WRITE_CACHE],
        runtime=spec.Runtime(cache_config=spec.CacheConfig(enabled=True)),
    )
    assert wait_terminal(client, job).status == spec.TrainingJobStatus.COMPLETED
    return project


def _truss_rows(summary: api.GetCacheSummaryResponseV1, sort: str, order: str) -> list[tuple]:
    files = [truss_types.FileSummary(**f.model_dump()) for f in summary.file_summaries]
    rows = truss_cache.create_file_summary_with_directory_sizes(files)
    rows.sort(key=truss_cache._get_sort_key(sort), reverse=order == "desc")
    return [(r.file_summary.path, r.total_size) for r in rows]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", SORTS)
def test_rows_and_folder_totals_are_truss_s(
    client: ApiClient, cached_project: api.TrainingProjectV1, sort: str, order: str
) -> None:
    summary = client.cache_summary(cached_project.id)
    view = cache_view(summary, sort, order == "desc")  # type: ignore[arg-type]
    ours = [(r.path, r.size_bytes) for r in view.rows]
    theirs = _truss_rows(summary, sort, order)
    if sort in ("filepath", "size"):  # other keys tie: compare as sets
        assert ours == theirs
    assert sorted(ours) == sorted(theirs)
    assert view.total_bytes == sum(f.size_bytes for f in summary.file_summaries)


def test_sizes_read_as_truss_prints_them() -> None:
    for size in (0, 999, 1000, 1001, 1_500_000, 10**9 + 1, 3 * 10**12 + 5):
        assert human_bytes(size) == truss_common.format_bytes_to_human_readable(size)


def test_bt_cache_prints_csv_json_and_a_table_sorted_as_asked(
    local_home: Home, cached_project: api.TrainingProjectV1
) -> None:
    with magics_on(local_home, cached_project.name) as shell:
        with capture_output() as out:
            shell.run_line_magic("bt_cache", "--sort size --order desc -o csv")
        rows = list(csv.reader(io.StringIO(out.stdout)))
        assert rows[0] == _csv_header()
        assert rows[1][0] == "hub"  # the biggest folder first
        assert int(rows[1][1]) >= 3_001_200
        assert rows[1][2].endswith("MB")

        with capture_output() as out:
            shell.run_line_magic("bt_cache", f"{cached_project.name} -o json")
        document = json.loads(out.stdout)
        assert set(document) == {
            "timestamp", "project_id", "total_files", "total_size_bytes",
            "total_size_human_readable", "files",
        }  # fmt: skip
        assert document["project_id"] == cached_project.id
        paths = [f["path"] for f in document["files"]]
        assert paths == sorted(paths)
        assert "hub/models/tiny/weights.bin" in paths

        with capture_output() as out:  # no widget frontend here: the text table
            shell.run_line_magic("bt_cache", "")
        assert "hub/models/tiny/weights.bin" in out.stdout
        assert "3.00 MB" in out.stdout


def _csv_header() -> list[str]:
    """The header truss's CSV viewer writes."""
    with capture_output() as out:
        truss_cache.CSVViewer().output_no_cache_message("p")
    return next(csv.reader(io.StringIO(out.stdout)))


def test_the_widget_holds_every_row_and_reads_without_widgets(
    client: ApiClient, cached_project: api.TrainingProjectV1
) -> None:
    view = cache_view(client.cache_summary(cached_project.id), "size", True)
    table = CacheTable(view)
    try:
        assert [r["path"] for r in table.rows] == [r.path for r in view.rows]
        bundle = table._repr_mimebundle_()
        assert bundle is not None
        data, _ = bundle
        assert "application/vnd.jupyter.widget-view+json" in data
        assert "hub/models/tiny/weights.bin" in data["text/plain"]
        assert "<td>hub/models/tiny/weights.bin</td>" in data["text/html"]
    finally:
        table.close()


def test_a_project_in_two_teams_needs_team_and_an_unknown_one_is_named(
    ip: InteractiveShell, client: ApiClient
) -> None:
    name = f"cache-two-teams-{new_id()}"
    first = client.upsert_project(name, team_id="team-a")
    client.upsert_project(name, team_id="team-b")
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("bt_cache", name)
    assert_one_clear_line(str(refused.value), "several teams", "'team-a'", "--team")
    with capture_output() as out:
        ip.run_line_magic("bt_cache", f"{name} --team team-a -o json")
    assert json.loads(out.stdout)["project_id"] == first.id
    with pytest.raises(UsageError) as missing:
        ip.run_line_magic("bt_cache", "no-such-project-x")
    assert_one_clear_line(str(missing.value), "no project 'no-such-project-x'")
    with pytest.raises(UsageError) as bad_sort:
        ip.run_line_magic("bt_cache", "--sort sizes")
    assert "--sort" in str(bad_sort.value)


def test_an_empty_cache_says_how_to_fill_it() -> None:
    now = datetime.now(timezone.utc).isoformat()
    view = cache_view(
        api.GetCacheSummaryResponseV1(timestamp=now, project_id="p", file_summaries=[])
    )
    assert "0 entries, 0 B" in view.as_text()
    assert "--cache" in view.as_text()
