"""Training libraries report to the job with no bt_jupyter code in the cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bt_jupyter import runtime, trackers

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

TRAIN = """
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

class Mine(TrainerCallback):
    pass

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32))
rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 50, (32, 16))]
args = TrainingArguments(per_device_train_batch_size=4, max_steps=12, logging_steps=3,
                         save_steps=6, eval_strategy="steps", eval_steps=6, report_to="none",
                         use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows[:8],
                  callbacks=[Mine()])
print("callbacks", sorted(type(c).__name__ for c in trainer.callback_handler.callbacks))
print("report_to", trainer.args.report_to)
trainer.train()
"""


def _run_here(tmp_path: Path, script: str, checkpoint_dir: Path | None) -> str:
    """The script under the job runtime's hooks, in a fresh interpreter."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if checkpoint_dir is not None:
        env["BT_CHECKPOINT_DIR"] = str(checkpoint_dir)
    code = "from bt_jupyter import trackers\ntrackers.install()\n" + script
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _records(stdout: str) -> list[dict[str, float]]:
    """The records of a job's output, cut into lines as the runner and Baseten's log
    store cut it: at ``\n`` only (``str.splitlines`` would also cut at a bar's ``\r``)."""
    return [r for r in map(runtime.parse_metric, stdout.split("\n")) if r is not None]


SHARED_CASES = json.loads((Path(__file__).parent / "cases" / "metric_lines.json").read_text())[
    "cases"
]


@pytest.mark.parametrize("case", SHARED_CASES, ids=[c["name"] for c in SHARED_CASES])
def test_a_record_is_found_where_the_sidebar_and_the_widget_find_it(
    case: dict[str, Any],
) -> None:
    """The cases labextension/src/__tests__/metricLine.spec.ts checks the JS rule with."""
    assert runtime.parse_metric(case["message"]) == case["record"]


def test_a_trainer_reports_its_logs_and_checkpoints_with_the_users_callbacks_kept(
    tmp_path: Path,
) -> None:
    out = _run_here(tmp_path, TRAIN, tmp_path / "ckpt")
    records = _records(out)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert [step for step, _ in losses] == [3, 6, 9, 12]  # one per logging step
    assert all(0 < loss < 10 for _, loss in losses)
    assert [r["step"] for r in records if "eval_loss" in r] == [6, 12]
    assert any("learning_rate" in r and "grad_norm" in r for r in records)
    # speed figures are not model metrics: kept out of the charts
    assert not any("train_runtime" in r or "total_flos" in r for r in records)
    assert "'JobCallback'" in out
    assert "'Mine'" in out  # the user's own callback is kept
    assert "report_to []" in out  # their trackers are theirs: nothing added or removed
    # no output_dir chosen: the checkpoints are the job's
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint-12",
        "checkpoint-6",
    ]
    # the default name is left as a link to them
    assert (tmp_path / "trainer_output").resolve() == (tmp_path / "ckpt").resolve()


def test_a_relative_output_dir_is_the_jobs_and_an_absolute_one_elsewhere_is_warned_about(
    tmp_path: Path,
) -> None:
    node = tmp_path / "node"
    node.mkdir()
    script = TRAIN.replace('report_to="none"', 'report_to="none", output_dir="out/mine"')
    out = _run_here(node, script, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "checkpoint-12").is_dir()
    assert (node / "out" / "mine").is_symlink()  # the code's own path still leads there
    assert (node / "out" / "mine" / "checkpoint-12").is_dir()
    assert "[bt-warning]" not in out
    # a folder of that name that came with the bundle (a literal named it) is not hidden
    # behind a link: the widget says where the checkpoints went
    (tmp_path / "ckpt").rename(tmp_path / "first-ckpt")
    (node / "out" / "mine").unlink()
    (node / "out" / "mine").mkdir()
    (node / "out" / "mine" / "old.txt").write_text("from the notebook")
    out = _run_here(node, script, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "checkpoint-12").is_dir()
    assert "[bt-warning] mine in the working folder already holds files" in out
    # an absolute folder the user chose, outside the volume and the working folder: kept,
    # with a warning for the widget
    elsewhere = tmp_path / "elsewhere"
    script = TRAIN.replace('report_to="none"', f'report_to="none", output_dir="{elsewhere}"')
    out = _run_here(node, script, tmp_path / "ckpt2")
    assert (elsewhere / "checkpoint-12").is_dir()
    assert not (tmp_path / "ckpt2").exists()
    warned = [trackers.parse_warning(line) for line in out.splitlines()]
    assert any(w and w.startswith(f"Trainer output_dir {elsewhere} is outside") for w in warned)
    # without checkpointing the Trainer's default stands, and metrics still flow
    out = _run_here(node, TRAIN, None)
    assert (node / "trainer_output" / "checkpoint-12").is_dir()
    assert len([r for r in _records(out) if "loss" in r]) == 4


def test_a_trainer_that_cannot_travel_is_named_with_what_to_send_instead(
    tmp_path: Path,
) -> None:
    """``--out trainer`` (a weakref inside): the notebook is told what to send instead."""
    script = TRAIN + (  # trained: as the cell leaves it
        "import cloudpickle\n"
        "from bt_jupyter.runtime import NotSent\n"
        "try:\n"
        "    cloudpickle.dumps(trainer)\n"
        "    print('pickled')\n"
        "except Exception as exc:\n"
        "    print(NotSent.of('trainer', trainer, exc))\n"
    )
    said = _run_here(tmp_path, script, tmp_path / "ckpt").splitlines()[-1]
    assert said.startswith("--out trainer (transformers.trainer.Trainer) was not sent back: ")
    assert said.endswith(
        "send trainer.state.log_history (its metrics) or trainer.model.state_dict() instead"
    )


def test_the_hook_never_breaks_an_import(tmp_path: Path) -> None:
    """A transformers without DEFAULT_CALLBACKS (a future release): the import still
    works and the job says once what it could not do."""
    package = tmp_path / "transformers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "trainer.py").write_text("VALUE = 42\n")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, '.')\n"
            "from bt_jupyter import trackers; trackers.install()\n"
            "import transformers.trainer as t; print('value', t.VALUE)\n"
            "import inspect; print(len(inspect.getsource(t)))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "value 42" in done.stdout
    assert "could not connect transformers.trainer to the job" in done.stdout


# A job whose cell trains with a Trainer and calls nothing of bt_jupyter, its metrics per
# logging step and its checkpoints listed: tests/test_notebooks.py runs
# notebooks/finetune_lora.ipynb (TRL's SFTTrainer, a Trainer) and checks exactly that.


def test_accelerate_logs_reach_the_job_through_its_tracker(tmp_path: Path) -> None:
    script = (
        "from accelerate import Accelerator\n"
        "from bt_jupyter.trackers import accelerate_tracker\n"
        "accelerator = Accelerator(cpu=True, log_with=[accelerate_tracker()])\n"
        "accelerator.init_trackers('run', config={'lr': 0.1})\n"
        "for step in range(3):\n"
        "    accelerator.log({'loss': 1.0 / (step + 1), 'note': 'text is skipped'}, step=step)\n"
        "accelerator.end_training()\n"
    )
    records = _records(_run_here(tmp_path, script, None))
    assert [(r["step"], r["loss"]) for r in records] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert all("note" not in r for r in records)


LIGHTNING = """
import torch
import lightning.pytorch as pl

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

torch.manual_seed(0)
data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
trainer = pl.Trainer(max_steps=6, log_every_n_steps=2, enable_checkpointing=False,
                     enable_progress_bar=PROGRESS_BAR, enable_model_summary=False,
                     default_root_dir="logs", accelerator="cpu",
                     callbacks=[pl.callbacks.TQDMProgressBar()] if PROGRESS_BAR else [])
trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
print("loggers", sorted(type(lg).__name__ for lg in trainer.loggers))
"""


@pytest.mark.parametrize("bar", [False, True], ids=["no-progress-bar", "progress-bar"])
def test_a_lightning_trainer_logs_to_the_job_through_its_entry_point(
    tmp_path: Path, bar: bool
) -> None:
    """The job's folder carries bt_jupyter's in-job modules and the entry point metadata,
    as a bundle does: Lightning finds the logger by itself, beside its own. With a tqdm
    progress bar (Lightning's default where rich is not installed), each record lands
    after the bar's ``\r`` on its line, and is read all the same."""
    pytest.importorskip("lightning")
    from bt_jupyter.packaging.bundle import in_job_files

    for path, data in in_job_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    done = subprocess.run(  # bytes: text mode would turn the bar's \r into \n
        [sys.executable, "-c", f"PROGRESS_BAR = {bar}\n{LIGHTNING}"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = done.stdout.decode()
    records = _records(stdout)
    assert [r["step"] for r in records if "train_loss" in r] == [1, 3, 5]
    if bar:  # the case this guards: a record after the bar's text, on the bar's line
        lines = stdout.split("\n")
        after_bar = [x for x in lines if "[bt-metric] " in x and not x.startswith("[bt-")]
        assert len(after_bar) == 3, stdout[-2000:]
    assert "JobLogger" in stdout
    assert "CSVLogger" in stdout or "TensorBoardLogger" in stdout  # its own kept
