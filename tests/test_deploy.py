"""Deploy checkpoints on the local service: Hugging Face folders (full and LoRA) and
``class Model`` bundles, with the errors a user can run into."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import BtJupyterError, Client, Deployment, Job, load_hf, spec
from bt_jupyter.client import ApiError
from bt_jupyter.deployments import DeploymentFailed
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import PackageOptions, package_cell
from tests.helpers import INSTALL, bundle, requirements, wait_job

pytest.importorskip("transformers")

TINY_GPT = """
import os, pathlib, sys, torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

lines = ["the cat sat on the mat", "the dog sat on the log", "hello how are you"] * 4
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=150, special_tokens=["<unk>", "<eos>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
)
tok.train_from_iterator(lines, trainer)
hf = PreTrainedTokenizerFast(
    tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>"
)
torch.manual_seed(0)
config = GPT2Config(vocab_size=hf.vocab_size, n_positions=32, n_embd=32, n_layer=1, n_head=2)
model = GPT2LMHeadModel(config)
data = hf([l + "<eos>" for l in lines], padding=True, return_tensors="pt")
opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
for step in range(120):
    loss = model(**data, labels=data["input_ids"]).loss
    opt.zero_grad(); loss.backward(); opt.step()
out = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "checkpoint-120"
model.save_pretrained(out); hf.save_pretrained(out)
(pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "notes").mkdir()
(pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "notes" / "weights.txt").write_text("42")
print("final loss", loss.item())
"""

LORA = """
import os, pathlib, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
base = os.environ["BASE"]
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                       LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
tok = AutoTokenizer.from_pretrained(base)
batch = tok(["the cat sat on the mat"], return_tensors="pt")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for _ in range(3):
    loss = model(**batch, labels=batch["input_ids"]).loss
    opt.zero_grad(); loss.backward(); opt.step()
model.save_pretrained(pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "lora-3")
"""


@pytest.fixture(scope="module")
def bt(local_home: Home) -> Iterator[Client]:
    with Client.local(local_home.root) as client:
        yield client


#: What the training scripts import: a job installs it, as on a Baseten node.
NEEDS = requirements("torch", "tokenizers", "transformers", "peft", "safetensors")


def _run(bt: Client, script: str, **env: str) -> Job:
    artifact = bt.api.upload_artifact(bundle({"train.py": script, **NEEDS}))[0]
    project = bt.api.upsert_project(f"deploy-{new_id()}")
    job = bt.api.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(
                start_commands=[INSTALL, "python train.py"],
                environment_variables=env,
                checkpointing_config=spec.CheckpointingConfig(enabled=True),
            ),
        ),
        [artifact],
    )
    return wait_job(Job(bt, job))


@pytest.fixture(scope="module")
def trained(bt: Client) -> Job:
    return _run(bt, TINY_GPT)


def _stopped(deployment: Deployment) -> None:
    deployment.stop()
    for _ in range(100):
        if deployment.refresh().status == "STOPPED":
            return
        import time

        time.sleep(0.1)
    raise AssertionError(f"deployment {deployment.id} did not stop: {deployment.status}")


@pytest.mark.timeout(300)
def test_hugging_face_checkpoint_serves_openai_compatible_completions(
    trained: Job, local_home: Home
) -> None:
    assert [c.checkpoint_id for c in trained.checkpoints()] == ["checkpoint-120", "notes"]
    deployment = trained.deploy("checkpoint-120", name="tiny").wait()
    assert deployment.status == "ACTIVE"
    text = deployment.complete("the cat", max_tokens=4)
    assert text.strip().startswith("sat")
    raw = httpx.post(
        f"{deployment.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3},
        headers={"Authorization": f"Api-Key {local_home.api_key()}"},  # as Baseten wants
    ).json()
    assert raw["object"] == "chat.completion"
    assert raw["choices"][0]["message"]["role"] == "assistant"
    assert raw["usage"]["completion_tokens"] == 3
    assert isinstance(deployment.chat("hello how"), str)
    assert any("Serving at" in line.message for line in deployment.logs())
    _stopped(deployment)
    with pytest.raises(DeploymentFailed, match="is STOPPED; deploy the checkpoint again"):
        deployment.complete("the cat")


@pytest.fixture(scope="module")
def lora(bt: Client, trained: Job, local_home: Home) -> Job:
    base = local_home.job_dir(trained.id) / "checkpoints" / "rank-0" / "checkpoint-120"
    return _run(bt, LORA, BASE=str(base))


@pytest.mark.timeout(300)
def test_a_lora_adapter_is_served_on_its_base_model(
    lora: Job, trained: Job, local_home: Home
) -> None:
    base = local_home.job_dir(trained.id) / "checkpoints" / "rank-0" / "checkpoint-120"
    (checkpoint,) = lora.checkpoints()
    assert checkpoint.checkpoint_type == "lora"
    assert checkpoint.base_model == str(base)
    deployment = lora.deploy().wait()
    assert deployment.checkpoint == "lora-3"
    assert isinstance(deployment.complete("the dog", max_tokens=3), str)
    assert any("LoRA adapter on base model" in line.message for line in deployment.logs())
    _stopped(deployment)


def _serving(deployment_id: str) -> bool:
    """Whether the process serving a deployment is still alive (STOPPED is recorded as
    the stop is sent; the process then unloads and exits)."""
    import psutil

    for process in psutil.process_iter(["cmdline", "status"]):
        line = process.info["cmdline"] or []
        if deployment_id in line and process.info["status"] != psutil.STATUS_ZOMBIE:
            return True
    return False


def _greedy(model: Any, tokenizer: Any, prompt: str) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return str(tokenizer.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True))


def test_load_hf_brings_a_full_checkpoint_and_a_lora_adapter_into_the_notebook(
    trained: Job, lora: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint = trained.checkpoints()[0]
    model, tokenizer = load_hf(checkpoint)  # downloaded first, into ./bt_checkpoints
    assert checkpoint.path == tmp_path / "bt_checkpoints" / trained.id / "checkpoint-120"
    assert _greedy(model, tokenizer, "the cat").strip().startswith("sat")
    (adapter,) = lora.checkpoints()
    model, tokenizer = load_hf(adapter)
    assert type(model).__name__.startswith("Peft")
    assert isinstance(_greedy(model, tokenizer, "the dog"), str)
    with pytest.raises(BtJupyterError, match="not a Hugging Face model folder"):
        load_hf(tmp_path)


def _model_bundle(cell: str) -> object:
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    return package_cell(cell, shell.user_ns, PackageOptions())


@pytest.mark.timeout(300)
def test_a_model_class_serves_any_checkpoint(trained: Job) -> None:
    model = _model_bundle(
        "import pathlib\n"
        "class Model:\n"
        "    def __init__(self, **kwargs):\n"
        "        self.dir = pathlib.Path(kwargs['checkpoint_dir'])\n"
        "    def load(self):\n"
        "        self.value = int((self.dir / 'weights.txt').read_text())\n"
        "    def predict(self, request):\n"
        "        return {'answer': self.value + request['x']}\n"
    )
    deployment = trained.deploy("notes", model=model).wait()  # type: ignore[arg-type]
    assert deployment.predict({"x": 1}) == {"answer": 43}
    _stopped(deployment)


@pytest.mark.timeout(300)
def test_a_failing_load_is_failed_with_its_traceback_in_the_logs(trained: Job) -> None:
    model = _model_bundle(
        "class Model:\n"
        "    def load(self):\n"
        "        raise FileNotFoundError('tokenizer.model is missing')\n"
        "    def predict(self, request):\n"
        "        return request\n"
    )
    deployment = trained.deploy("notes", model=model)  # type: ignore[arg-type]
    failure = r"FAILED: load failed: FileNotFoundError: tokenizer\.model is missing"
    with pytest.raises(DeploymentFailed, match=failure):
        deployment.wait()
    assert any(line.message.startswith("Traceback") for line in deployment.logs())


@pytest.mark.timeout(120)
def test_a_deployment_stopped_while_loading_ends_stopped(trained: Job) -> None:
    from tests.helpers import wait_for

    model = _model_bundle(
        "import time\n"
        "class Model:\n"
        "    def load(self):\n"
        "        while True:\n"
        "            time.sleep(0.01)\n"
        "    def predict(self, request):\n"
        "        return request\n"
    )
    deployment = trained.deploy("notes", model=model)  # type: ignore[arg-type]
    wait_for(
        lambda: any("Loading checkpoint" in line.message for line in deployment.logs()),
        60,
        "the model to start loading",
    )
    assert deployment.stop(timeout=20).status == "STOPPED"
    assert "Deployment stopped while loading" in [line.message for line in deployment.logs()]


def test_deploy_errors_are_clear_and_start_nothing(bt: Client, trained: Job) -> None:
    before = len(bt.api.deployments())
    with pytest.raises(
        ApiError, match="has no checkpoint 'checkpoint-9'; it has checkpoint-120, notes"
    ):
        trained.deploy("checkpoint-9")
    with pytest.raises(ApiError, match="notes is not a Hugging Face model folder"):
        trained.deploy("notes")
    empty = _run(bt, "print('no checkpoints')")
    with pytest.raises(ApiError, match=f"job {empty.id} has no checkpoints to deploy"):
        empty.deploy()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ApiError, match=f"port {port} is in use"):
            trained.deploy("checkpoint-120", port=port)
    assert len(bt.api.deployments()) == before


@pytest.mark.timeout(300)
def test_the_widget_deploys_tries_and_stops_a_checkpoint(trained: Job) -> None:
    from bt_jupyter.widgets.job import JobWidget
    from tests.helpers import wait_for

    widget = JobWidget(trained)
    sent: list[dict[str, object]] = []
    widget.send = sent.append  # type: ignore[method-assign]
    widget._on_message(widget, {"type": "deploy", "checkpoint": "checkpoint-120"}, [])

    def deployment(status: str) -> dict[str, object] | None:
        rows = [d for d in widget.deployments if d["status"] == status]
        return rows[0] if rows else None

    row = wait_for(lambda: deployment("ACTIVE"), 120, "the widget's deployment to be ACTIVE")
    assert row["checkpoint"] == "checkpoint-120"
    assert row["kind"] == "hf"
    widget._on_message(widget, {"type": "try", "id": row["id"], "input": "the cat"}, [])
    answer = wait_for(lambda: [m for m in sent if m["type"] == "try_result"], 60, "an answer")
    assert answer[0]["id"] == row["id"]
    assert str(answer[0]["text"]).strip().startswith("sat")
    widget._on_message(widget, {"type": "stop_deployment", "id": row["id"]}, [])
    wait_for(lambda: deployment("STOPPED"), 60, "the deployment to stop")
    wait_for(lambda: not _serving(str(row["id"])), 30, "the model server to exit")
    assert widget.watcher is not None
    widget.watcher.close()
