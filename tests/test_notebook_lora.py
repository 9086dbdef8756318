"""notebooks/finetune_lora.ipynb runs top to bottom in a real kernel (nbclient): the
longest notebook, in a file of its own so the test workers share the notebooks."""

from __future__ import annotations

import time

import pytest

from bt_jupyter.local.home import Home
from tests.test_notebooks import execute


@pytest.mark.timeout(900)
def test_lora_sft_trains_deploys_resumes_compares_and_loads_back(
    local_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL's SFTTrainer with a PEFT LoRA adapter, no bt_jupyter calls in the training
    code: the Trainer's own logs are the job's metrics and its checkpoints the job's."""
    started = time.monotonic()
    nb = execute("finetune_lora.ipynb", local_home, monkeypatch)
    print(f"finetune_lora.ipynb: {time.monotonic() - started:.1f} s")
    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    out = "\n".join(o.get("text", "") for o in outputs)
    shown = [o["data"] for o in outputs if "data" in o]
    assert out.count("status: COMPLETED") == 2
    losses = [float(x) for x in out.split("loss per logging step: [")[1].split("]")[0].split(",")]
    assert len(losses) == 16  # every 5 steps of 80
    assert losses[-1] < losses[0] / 2  # it learned the question format
    assert "checkpoints: ['checkpoint-40', 'checkpoint-80']" in out
    # the deployed adapter answers what it was taught
    assert "Q: What is the capital of France? A: ' Paris" in out
    assert "resuming from checkpoint-80" in out
    assert "resumed checkpoints: ['checkpoint-120']" in out
    # the comparison: a widget, with the table of differences as its text and HTML
    (table,) = [d for d in shown if "final loss" in d.get("text/plain", "")]
    assert "lora-sft-resumed" in table["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in table
    assert "<table" in table["text/html"]
    assert "in the notebook: ' Tokyo" in out
