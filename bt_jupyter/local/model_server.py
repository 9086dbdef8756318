"""One serving process per local deployment: load a checkpoint, answer HTTP on 127.0.0.1.

Two ways to serve, as Baseten does:

- a Hugging Face checkpoint folder (``config.json`` + safetensors, or a LoRA adapter on
  its base model via peft) behind OpenAI-compatible ``/v1/completions`` and
  ``/v1/chat/completions`` (what Baseten's vLLM checkpoint deployments expose);
- a Truss-style ``class Model`` (``load(self)``, ``predict(self, request)``) from a
  ``%%bt_model`` cell, behind ``/predict``.

Started detached by the service; writes its log lines and status (DEPLOYING -> ACTIVE,
or FAILED with the reason) to the store. SIGTERM ends it (STOPPED).

Every request, health included, carries the local service's API key (``Authorization:
Api-Key <key>`` or ``Bearer <key>``, as a Baseten deployment wants its API key): the port
is on 127.0.0.1, but every user of this machine can reach that.
"""

from __future__ import annotations

import argparse
import hmac
import inspect
import json
import math
import os
import signal
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bt_jupyter.local import checkpoints
from bt_jupyter.local.home import Home, private_member
from bt_jupyter.local.log_sink import LogSink
from bt_jupyter.local.store import DeploymentRow, Store


class LoadFailed(Exception):
    pass


def checkpoint_path(home: Home, deployment: DeploymentRow) -> Path:
    """The served checkpoint's folder; UnsafePathError for a stored name leading out."""
    rank0 = home.job_dir(deployment.job_id) / "checkpoints" / "rank-0"
    return checkpoints.folder_of(rank0, deployment.checkpoint)


class RequireKey:
    """ASGI wrapper: every HTTP request must carry the key, or gets one 401 JSON line."""

    def __init__(self, app: ASGIApp, key: str, key_file: Path) -> None:
        self.app, self.key = app, key.encode()
        self.refusal = JSONResponse(
            {
                "code": "UNAUTHENTICATED",
                "message": "missing or wrong API key: send 'Authorization: Api-Key <key>' "
                f"(or Bearer) with the local service's key from {key_file}",
            },
            401,
            headers={"WWW-Authenticate": 'Api-Key realm="bt_jupyter deployment"'},
        )

    def allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() in (b"bearer", b"api-key") and hmac.compare_digest(
            given.strip(), self.key
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            await self.refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BadRequest(ValueError):
    """A request body that is not what the endpoint reads (400, one line)."""


async def json_body(request: Request, want_object: bool = True) -> Any:
    """The request's JSON; BadRequest (a 400) for a body that is not JSON (or no object)."""
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not JSON: send a JSON object") from None
    if want_object and not isinstance(body, dict):
        raise BadRequest(f"the request body is a JSON {type(body).__name__}: send an object")
    return body


def _number(body: dict[str, Any], name: str, default: float, kind: type[int] | type[float]) -> Any:
    """``body[name]`` as ``kind`` (int or float), finite; BadRequest naming it otherwise."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number, not {type(value).__name__}")
    try:
        number = kind(value)
    except (OverflowError, ValueError):
        raise BadRequest(f"{name} must be a finite number of sensible size") from None
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a finite number")
    return number


# --------------------------------------------------------------------------- Hugging Face


class HuggingFaceModel:
    """A causal LM from a checkpoint folder (full weights, or a LoRA adapter)."""

    model: Any  # transformers' / peft's model classes
    tokenizer: Any

    def __init__(self, path: Path, log: LogSink, job_work: Path | None = None) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise LoadFailed(
                "serving a Hugging Face checkpoint needs transformers: "
                "pip install 'bt_jupyter[serve]'"
            ) from None

        adapter = path / "adapter_config.json"
        if adapter.is_file():
            from peft import PeftModel

            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base:
                raise LoadFailed(f"the LoRA adapter {path.name} does not name its base model")
            # a relative base is where the job read it: its working folder (--include)
            if job_work is not None and not Path(base).is_absolute():
                near = (job_work / base).resolve()
                if near.is_relative_to(job_work.resolve()) and near.is_dir():
                    base = str(near)
            log.add(f"LoRA adapter on base model {base}")
            model = AutoModelForCausalLM.from_pretrained(base)
            self.model = PeftModel.from_pretrained(model, str(path))
            tokenizer_source = path if (path / "tokenizer_config.json").exists() else base
        elif (path / "config.json").is_file():
            self.model = AutoModelForCausalLM.from_pretrained(str(path))
            tokenizer_source = path
        else:
            raise LoadFailed(
                f"{path.name} is not a Hugging Face model folder (no config.json or "
                "adapter_config.json); deploy it with a %%bt_model class instead"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
        self.model.eval()

    def complete(self, prompt: str, max_tokens: int, temperature: float) -> tuple[str, int, int]:
        import torch

        inputs = self.tokenizer(prompt, return_tensors="pt")
        used = int(inputs["input_ids"].shape[1])
        config = self.model.config
        window = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None
        )
        if window:
            if used >= window:
                raise ValueError(f"the prompt is {used} tokens; this model's context is {window}")
            max_tokens = min(max_tokens, window - used)
        sample = temperature > 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new = output[0][inputs["input_ids"].shape[1] :]
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        return text, int(inputs["input_ids"].shape[1]), len(new)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            prompt = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            return str(prompt)
        lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
        return "\n".join([*lines, "assistant:"])


#: The most tokens one call may ask for (a local CPU model; and no unbounded loops).
MAX_TOKENS = 4096


def _tokens(body: dict[str, Any], default: int) -> int:
    tokens = _number(body, "max_tokens", default, int)
    if not 1 <= tokens <= MAX_TOKENS:
        raise BadRequest(f"max_tokens must be between 1 and {MAX_TOKENS}, not {tokens}")
    return int(tokens)


async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": {"message": str(exc)[:300]}}, 400)


def hf_app(model: HuggingFaceModel, name: str) -> FastAPI:
    app = FastAPI(title=f"bt_jupyter deployment {name}")

    app.exception_handler(ValueError)(_bad_request)

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await json_body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return JSONResponse({"error": {"message": "prompt must be a string"}}, 400)
        text, used, made = model.complete(
            prompt, _tokens(body, 16), _number(body, "temperature", 0.0, float)
        )
        return JSONResponse(
            {
                "id": f"cmpl-{time.time_ns()}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                "usage": usage(used, made),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await json_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return JSONResponse({"error": {"message": "messages must be a non-empty list"}}, 400)
        if not all(isinstance(m, dict) for m in messages):
            return JSONResponse({"error": {"message": "each message must be an object"}}, 400)
        text, used, made = model.complete(
            model.chat_prompt(messages),
            _tokens(body, 32),
            _number(body, "temperature", 0.0, float),
        )
        return JSONResponse(
            {
                "id": f"chatcmpl-{time.time_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length",
                    }
                ],
                "usage": usage(used, made),
            }
        )

    return app


# --------------------------------------------------------------------------- Truss-style Model


def load_model_class(bundle_dir: Path, checkpoint: Path) -> Any:
    """Run the ``%%bt_model`` cell from its bundle and instantiate its ``Model``."""
    sys.path.insert(0, str(bundle_dir))
    from bt_jupyter import runtime

    namespace = runtime.load_cell_namespace(bundle_dir / runtime.BUNDLE_DIR)
    cell = (bundle_dir / runtime.BUNDLE_DIR / "cell.py").read_text()
    exec(compile(cell, str(bundle_dir / runtime.BUNDLE_DIR / "cell.py"), "exec"), namespace)
    cls = namespace.get("Model")
    if not isinstance(cls, type):
        raise LoadFailed("the %%bt_model cell must define `class Model` (with load and predict)")
    offered = {"checkpoint_dir": checkpoint, "data_dir": checkpoint, "config": {}, "secrets": {}}
    parameters = inspect.signature(cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        instance = cls(**offered)
    else:
        instance = cls(**{k: v for k, v in offered.items() if k in parameters})
    if not hasattr(instance, "checkpoint_dir"):
        instance.checkpoint_dir = checkpoint
    if callable(getattr(instance, "load", None)):
        instance.load()
    if not callable(getattr(instance, "predict", None)):
        raise LoadFailed("class Model has no predict(self, request) method")
    return instance


def model_app(instance: Any, name: str) -> FastAPI:
    app = FastAPI(title=f"bt_jupyter deployment {name}")
    app.exception_handler(BadRequest)(_bad_request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        body = await json_body(request, want_object=False)
        try:
            result = instance.predict(body)
        except Exception as exc:
            traceback.print_exc()
            return JSONResponse({"error": {"message": f"{type(exc).__name__}: {exc}"}}, 500)
        return JSONResponse(result)

    return app


# --------------------------------------------------------------------------- main


class _Terminated(BaseException):
    """SIGTERM while the model loads."""


def serve(home: Home, deployment_id: str) -> int:
    store = Store(home.db)
    deployment = store.deployment(deployment_id)
    if deployment is None:
        return 2
    log = LogSink(store, deployment_id, [])
    folder = home.deployment_dir(deployment_id)
    server: uvicorn.Server | None = None

    def on_term(*_: object) -> None:
        # Runs on the main thread between bytecodes: touch no lock or connection here.
        if server is not None:
            server.should_exit = True  # a plain attribute that uvicorn's loop reads
        else:
            raise _Terminated  # unwinds the load, releasing whatever it holds

    signal.signal(signal.SIGTERM, on_term)
    try:
        log.add(f"Loading checkpoint {deployment.checkpoint} of job {deployment.job_id}")
        path = checkpoint_path(home, deployment)
        if deployment.kind == "model":
            with tarfile.open(folder / "model.tar") as tar:
                tar.extractall(folder / "bundle", filter=private_member)
            app = model_app(load_model_class(folder / "bundle", path), deployment.name)
        else:
            work = home.job_dir(deployment.job_id) / "work"
            app = hf_app(HuggingFaceModel(path, log, work), deployment.name)
        locked = RequireKey(app, home.api_key(), home.api_key_file)
        config = uvicorn.Config(locked, host="127.0.0.1", port=deployment.port, log_level="warning")
        server = uvicorn.Server(config)
    except _Terminated:
        log.add("Deployment stopped while loading")  # before the status: a reader of
        log.close()  # the final status finds the line
        store.update_deployment(deployment_id, status="STOPPED")
        return 0
    except Exception as exc:
        for line in traceback.format_exc().rstrip().splitlines():
            log.add(line, level="ERROR")
        reason = str(exc) if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
        store.update_deployment(
            deployment_id, status="FAILED", error_message=f"load failed: {reason}"
        )
        log.close()
        return 1
    original = server.startup

    async def startup(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        if server.started:
            store.update_deployment(deployment_id, status="ACTIVE")
            log.add(f"Serving at http://127.0.0.1:{deployment.port}")

    server.startup = startup  # type: ignore[method-assign]
    server.run()
    if not server.started:
        store.update_deployment(
            deployment_id,
            status="FAILED",
            error_message=f"could not listen on 127.0.0.1:{deployment.port} (port in use?)",
        )
    store.update_deployment(deployment_id, status="STOPPED")
    log.add("Deployment stopped")
    log.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bt_jupyter.local.model_server")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--deployment", required=True)
    args = parser.parse_args()
    os.umask(0o077)  # what it writes (the unpacked bundle) is for this user only
    return serve(Home(args.home), args.deployment)


if __name__ == "__main__":
    sys.exit(main())
