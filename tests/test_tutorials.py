"""Public tutorials, pasted unchanged under ``%%bt_train``, keep their results.

Six shapes (tiny models built from configs, local data, as an offline machine forces):
transformers' Trainer fine-tune, TRL's SFTTrainer quickstart, PEFT's LoRA quicktour,
Accelerate's ``nlp_example``, Lightning's LitAutoEncoder and PyTorch's quickstart. Each
cell is packaged as ``%%bt_train`` packages it and run as a node runs it (``python -m
bt_jupyter.runtime`` in the unpacked bundle, only ``$BT_CHECKPOINT_DIR`` and Baseten's
variables set); what the job lists is read with the local service's own checkpoint scan.
``test_magics`` and ``test_local_jobs`` cover the same path through the service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bt_jupyter import runtime
from bt_jupyter.local import checkpoints as local_checkpoints
from bt_jupyter.packaging import PackageOptions, package_cell

pytest.importorskip("transformers")

#: A tokenizer trained on a few lines (no hub): what the tutorials load by name.
TOKENIZER = """
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
_words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
_words.pre_tokenizer = pre_tokenizers.Whitespace()
_words.train_from_iterator([open("data.jsonl").read()], trainers.WordLevelTrainer(
    special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
tokenizer = PreTrainedTokenizerFast(tokenizer_object=_words, unk_token="[UNK]",
                                    pad_token="[PAD]", eos_token="[EOS]")
"""

MODEL = """
import torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64,
                                   vocab_size=len(tokenizer), pad_token_id=1))
"""

DATA = "".join(
    f'{{"text": "the capybara number {i} sits by the river and eats grass"}}\n' for i in range(24)
)


def run_like_a_node(tmp_path: Path, cell: str) -> tuple[str, Path]:
    """``cell`` packaged from a notebook folder holding ``data.jsonl``, then run as a
    node runs it; (its output, its checkpoint folder ``rank-0``'s parent)."""
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / "data.jsonl").write_text(DATA)
    bundle = package_cell(cell, {}, PackageOptions(notebook_dir=notebook))
    node = tmp_path / "node"
    for path, data in bundle.files.items():
        (node / path).parent.mkdir(parents=True, exist_ok=True)
        (node / path).write_bytes(bytes(data))
    checkpoints = tmp_path / "checkpoints"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BT_CHECKPOINT_DIR": str(checkpoints / "rank-0"),
        "BT_TRAINING_JOB_ID": "tutorial",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(  # bytes: a progress bar's \r stays where it was printed
        [sys.executable, "-m", "bt_jupyter.runtime"],
        cwd=node,
        env=env,
        capture_output=True,
        timeout=600,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, out[-2000:] + done.stderr.decode(errors="replace")[-4000:]
    return out, checkpoints


def listed(checkpoints: Path) -> list[str]:
    """The model checkpoints the job lists (the local service's scan, Baseten's layout)."""
    return [c.name for c in local_checkpoints.scan("tutorial", checkpoints)]


def kept_files(checkpoints: Path) -> set[str]:
    """The files the cell wrote that the job keeps, by working-folder path."""
    root = checkpoints / "rank-0" / runtime.OUTPUTS_DIR / runtime.FILES_DIR
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def records(out: str) -> list[dict[str, Any]]:
    return [r for r in map(runtime.parse_metric, out.split("\n")) if r is not None]


TRAINER = (
    TOKENIZER
    + MODEL
    + """
from datasets import load_dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

dataset = load_dataset("json", data_files="data.jsonl", split="train")
tokenized = dataset.map(lambda rows: tokenizer(rows["text"]), batched=True, remove_columns=["text"])
training_args = TrainingArguments(output_dir="test_trainer", eval_strategy="epoch",
                                  num_train_epochs=2, per_device_train_batch_size=8,
                                  logging_steps=1, report_to="none", use_cpu=True)
trainer = Trainer(model=model, args=training_args, train_dataset=tokenized,
                  eval_dataset=tokenized,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
trainer.train()
trainer.save_model()
reloaded = GPT2LMHeadModel.from_pretrained("test_trainer/checkpoint-6")
print("reloaded", type(reloaded).__name__)
"""
)


def test_the_trainer_tutorial_keeps_its_checkpoints_with_its_own_output_dir(
    tmp_path: Path,
) -> None:
    """transformers' "Fine-tune a pretrained model": ``output_dir="test_trainer"``,
    untouched; its checkpoints are the job's, and its own path still opens them."""
    out, checkpoints = run_like_a_node(tmp_path, TRAINER)
    assert listed(checkpoints) == ["checkpoint-6", "."]
    assert (checkpoints / "rank-0" / "checkpoint-6" / "model.safetensors").is_file()
    assert (checkpoints / "rank-0" / "model.safetensors").is_file()  # save_model()
    assert "reloaded GPT2LMHeadModel" in out
    assert [r["epoch"] for r in records(out) if "eval_loss" in r] == [1.0, 2.0]
    assert "[bt-warning]" not in out


SFT = (
    TOKENIZER
    + MODEL
    + """
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

dataset = load_dataset("json", data_files="data.jsonl", split="train")
training_args = SFTConfig(output_dir="Qwen2.5-0.5B-SFT", max_steps=4, save_steps=2,
                          logging_steps=1, report_to="none", use_cpu=True, bf16=False)
trainer = SFTTrainer(model=model, processing_class=tokenizer, args=training_args,
                     train_dataset=dataset)
trainer.train()
"""
)


def test_trl_quickstart_keeps_checkpoints_in_its_default_output_dir(tmp_path: Path) -> None:
    """TRL's README quickstart: ``SFTConfig(output_dir="Qwen2.5-0.5B-SFT")`` (the name
    TRL gives when there are no args; with none TRL asks for bf16, which a CPU lacks)."""
    pytest.importorskip("trl")
    out, checkpoints = run_like_a_node(tmp_path, SFT)
    assert listed(checkpoints)[:2] == ["checkpoint-2", "checkpoint-4"]
    link = tmp_path / "node" / "Qwen2.5-0.5B-SFT"
    assert link.is_symlink()  # the name TRL chose still leads to them
    assert (link / "checkpoint-4").is_dir()
    assert [r["step"] for r in records(out) if "loss" in r] == [1, 2, 3, 4]


PEFT = (
    TOKENIZER
    + MODEL
    + """
from datasets import load_dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

peft_config = LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=8,
                         lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"])
model = get_peft_model(model, peft_config)
model.print_trainable_parameters()
dataset = load_dataset("json", data_files="data.jsonl", split="train")
tokenized = dataset.map(lambda rows: tokenizer(rows["text"]), batched=True, remove_columns=["text"])
training_args = TrainingArguments(output_dir="your-name/tiny-lora", learning_rate=1e-3,
                                  per_device_train_batch_size=8, num_train_epochs=1,
                                  save_strategy="epoch", report_to="none", use_cpu=True)
trainer = Trainer(model=model, args=training_args, train_dataset=tokenized,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
trainer.train()
model.save_pretrained("output_dir")
"""
)


def test_the_peft_quicktour_keeps_its_lora_checkpoint_and_its_saved_adapter(
    tmp_path: Path,
) -> None:
    pytest.importorskip("peft")
    _, checkpoints = run_like_a_node(tmp_path, PEFT)
    found = {c.name: c for c in local_checkpoints.scan("tutorial", checkpoints)}
    assert found["checkpoint-3"].checkpoint_type == "lora"
    # save_pretrained("output_dir") in the working folder: one of the job's files
    assert {"output_dir/adapter_config.json", "output_dir/adapter_model.safetensors"} <= (
        kept_files(checkpoints)
    )
    assert "output_dir" not in found  # files are never model checkpoints


ACCELERATE = (
    TOKENIZER
    + MODEL
    + """
import json
from accelerate import Accelerator
from torch.utils.data import DataLoader

accelerator = Accelerator(cpu=True)
rows = [tokenizer(json.loads(line)["text"])["input_ids"] for line in open("data.jsonl")]
batches = DataLoader([torch.tensor(r) for r in rows], batch_size=8)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model, optimizer, batches = accelerator.prepare(model, optimizer, batches)
for epoch in range(2):
    for batch in batches:
        loss = model(input_ids=batch, labels=batch).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    accelerator.print(f"epoch {epoch}: loss {loss.item():.3f}")
accelerator.wait_for_everyone()
accelerator.save_model(model, "my_model")
"""
)


def test_accelerates_example_keeps_the_model_it_saves(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    out, checkpoints = run_like_a_node(tmp_path, ACCELERATE)
    assert "epoch 1: loss" in out
    assert "my_model/model.safetensors" in kept_files(checkpoints)
    assert listed(checkpoints) == []


LIGHTNING = """
import lightning as L
import torch
from torch import nn, optim, utils

encoder = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))
decoder = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))

class LitAutoEncoder(L.LightningModule):
    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def training_step(self, batch, batch_idx):
        x = batch.view(batch.size(0), -1)
        loss = nn.functional.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return optim.Adam(self.parameters(), lr=1e-3)

autoencoder = LitAutoEncoder(encoder, decoder)
torch.manual_seed(0)
train_loader = utils.data.DataLoader(torch.rand(64, 28, 28), batch_size=4)
trainer = L.Trainer(limit_train_batches=16, max_epochs=1, log_every_n_steps=2,
                    accelerator="cpu", callbacks=[L.pytorch.callbacks.TQDMProgressBar()])
trainer.fit(model=autoencoder, train_dataloaders=train_loader)
print("best", trainer.checkpoint_callback.best_model_path)
"""


def test_lightnings_autoencoder_keeps_its_checkpoint_and_every_metric_past_the_bar(
    tmp_path: Path,
) -> None:
    pytest.importorskip("lightning")
    out, checkpoints = run_like_a_node(tmp_path, LIGHTNING)
    assert listed(checkpoints) == ["lightning"]
    saved = list((checkpoints / "rank-0" / "lightning").glob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch=0-step=16.ckpt"]
    assert [r["step"] for r in records(out) if "train_loss" in r] == [1, 3, 5, 7, 9, 11, 13, 15]
    # its logger's own files are kept as the job's files
    assert any(p.startswith("lightning_logs/version_0/") for p in kept_files(checkpoints))


PYTORCH = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
training_data = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
train_dataloader = DataLoader(training_data, batch_size=16)

class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(nn.Linear(28 * 28, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))

model = NeuralNetwork()
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
for t in range(2):
    for X, y in train_dataloader:
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"Epoch {t + 1} loss: {loss.item():>7f}")
torch.save(model.state_dict(), "model.pth")
print("Saved PyTorch Model State to model.pth")
"""


def test_pytorchs_quickstart_keeps_model_pth(tmp_path: Path) -> None:
    import torch

    _, checkpoints = run_like_a_node(tmp_path, PYTORCH)
    assert kept_files(checkpoints) == {"model.pth"}
    kept = checkpoints / "rank-0" / runtime.OUTPUTS_DIR / runtime.FILES_DIR / "model.pth"
    state = torch.load(kept, weights_only=True)
    assert set(state) == {
        "linear_relu_stack.0.weight",
        "linear_relu_stack.0.bias",
        "linear_relu_stack.2.weight",
        "linear_relu_stack.2.bias",
    }
    assert listed(checkpoints) == []  # a file is not a model checkpoint
