"""Handles on served checkpoints: a local serving process, or a model on Baseten.

Both answer ``predict``, ``complete`` and ``chat`` alike; they differ only in where the
status comes from and which URL a call goes to, so the waiting and calling live here once.
"""

from __future__ import annotations

import time
from typing import Any

from bt_jupyter import api, serving_api
from bt_jupyter.client import ApiClient, model_url
from bt_jupyter.errors import ApiError, DeploymentFailed


class Deployment:
    """A checkpoint being served: ``.predict()``, ``.chat()``, ``.complete()``, ``.stop()``."""

    #: Statuses on the way to serving, and those in which calls are answered.
    PENDING: frozenset[str] = frozenset({"DEPLOYING"})
    SERVING: frozenset[str] = frozenset({"ACTIVE"})
    #: Prefix of the OpenAI-compatible routes.
    openai_prefix = ""
    #: How long ``wait()`` waits by default: a local process loads in seconds.
    wait_timeout = 300.0

    def __init__(self, rest: ApiClient) -> None:
        self.rest = rest

    def __repr__(self) -> str:
        return f"<Deployment {self.id} {self.name} [{self.status}] {self.url}>"

    # what each kind of deployment says about itself
    id: str
    name: str
    checkpoint: str
    #: "hf" (OpenAI-compatible completions), "model" (a %%bt_model class), "vllm" (Baseten)
    kind: str

    @property
    def status(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def error_message(self) -> str | None:
        return None

    def refresh(self) -> Deployment:
        raise NotImplementedError

    def logs(self) -> list[api.LogV1]:
        raise NotImplementedError

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _request_stop(self) -> None:
        raise NotImplementedError

    def _model_field(self) -> dict[str, str]:
        """The OpenAI ``model`` field, where the server serves several (LoRA adapters)."""
        return {}

    # shared behaviour

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> Deployment:
        """Block until it serves; raise with the reason if it failed or was stopped."""
        timeout = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while self.refresh().status in self.PENDING:
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {self.id} is still {self.status} after {timeout}s")
            time.sleep(poll)
        if self.status not in self.SERVING:
            raise DeploymentFailed(
                f"deployment {self.id} {self.status}: {self.error_message or 'see its logs()'}"
            )
        return self

    def _call(self, path: str, body: dict[str, Any]) -> Any:
        if self.refresh().status not in self.SERVING:
            raise DeploymentFailed(
                f"deployment {self.id} is {self.status}"
                + (f" ({self.error_message})" if self.error_message else "")
                + "; deploy the checkpoint again to use it"
            )
        return self._post(path, body)

    def predict(self, request: Any) -> Any:
        """``POST /predict`` of a ``%%bt_model`` deployment."""
        return self._call("/predict", request)

    def complete(self, prompt: str, max_tokens: int = 16, temperature: float = 0.0) -> str:
        answer = self._call(
            f"{self.openai_prefix}/v1/completions",
            {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
            | self._model_field(),
        )
        return str(answer["choices"][0]["text"])

    def chat(
        self, messages: str | list[dict[str, str]], max_tokens: int = 32, temperature: float = 0.0
    ) -> str:
        """OpenAI-style chat; a string is one user message."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        answer = self._call(
            f"{self.openai_prefix}/v1/chat/completions",
            {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
            | self._model_field(),
        )
        return str(answer["choices"][0]["message"]["content"])

    def stop(self, timeout: float = 30) -> Deployment:
        """Stop serving and wait (up to ``timeout`` s) until it has stopped."""
        self._request_stop()
        deadline = time.monotonic() + timeout
        while self.refresh().status in self.PENDING | self.SERVING:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return self


class LocalDeployment(Deployment):
    """A serving process of the local service (``/v1/local/deployments``)."""

    def __init__(self, rest: ApiClient, wire: api.LocalDeploymentV1) -> None:
        super().__init__(rest)
        self._wire = wire
        self.id, self.name, self.checkpoint = wire.id, wire.name, wire.checkpoint
        self.kind = wire.kind

    @property
    def status(self) -> str:
        return self._wire.status

    @property
    def url(self) -> str:
        return self._wire.url

    @property
    def error_message(self) -> str | None:
        return self._wire.error_message

    def refresh(self) -> LocalDeployment:
        self._wire = self.rest.deployment(self.id)
        return self

    def logs(self) -> list[api.LogV1]:
        return self.rest.deployment_logs(self.id)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        # The serving port wants the service's API key, which ``rest`` sends with every
        # request (an absolute URL leaves its base URL aside); never a widget's business.
        try:
            response = self.rest.request(
                "POST", f"{self.url}{path}", json=body, timeout=300, retry_ambiguous=False
            )
        except ApiError as exc:
            raise DeploymentFailed(f"{path}: HTTP {exc.status}: {exc.message}") from None
        return response.json()

    def _request_stop(self) -> None:
        self._wire = self.rest.stop_deployment(self.id)


class CloudDeployment(Deployment):
    """A model version on Baseten, made from a checkpoint and served by vLLM."""

    PENDING = frozenset(
        {"BUILDING", "DEPLOYING", "LOADING_MODEL", "WAKING_UP", "UPDATING", "CREATED"}
    )
    SERVING = frozenset({"ACTIVE", "SCALED_TO_ZERO"})
    openai_prefix = "/sync"
    wait_timeout = 1800.0  # building a vLLM image and loading weights takes minutes

    def __init__(
        self,
        rest: ApiClient,
        version: serving_api.ModelVersionV1,
        checkpoint: str,
        served_model: str | None = None,
    ) -> None:
        super().__init__(rest)
        self.id, self.name, self.model_id = version.id, version.name, version.model_id
        self.checkpoint, self.kind = checkpoint, "vllm"
        self._served_model = served_model
        self._status = "BUILDING"

    @property
    def status(self) -> str:
        return self._status

    @property
    def url(self) -> str:
        return f"{model_url(self.rest.base_url, self.model_id)}/deployment/{self.id}"

    def refresh(self) -> CloudDeployment:
        self._status = self.rest.model_deployment(self.model_id, self.id).status
        return self

    def logs(self) -> list[api.LogV1]:
        return self.rest.model_deployment_logs(self.model_id, self.id)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self.rest.invoke_model(self.model_id, self.id, path, body)

    def _request_stop(self) -> None:
        self.rest.deactivate_model_deployment(self.model_id, self.id)

    def _model_field(self) -> dict[str, str]:
        return {"model": self._served_model} if self._served_model else {}
