"""``make demo``: run the main job end to end on what exists so far, and say what does not."""

from __future__ import annotations

import json

from bt_jupyter import api, spec


def quickstart_project() -> spec.TrainingProject:
    """The job the quickstart notebook submits: one CPU node, checkpoints on."""
    return spec.TrainingProject(
        name="quickstart",
        job=spec.TrainingJob(
            name="tiny-gpt",
            image=spec.Image(base_image="python:3.11-slim"),
            compute=spec.Compute(cpu_count=2, memory="4Gi"),
            runtime=spec.Runtime(
                start_commands=["python -m bt_jupyter.runtime"],
                checkpointing_config=spec.CheckpointingConfig(enabled=True),
            ),
        ),
    )


def main() -> None:
    project = quickstart_project()
    body = api.CreateTrainingJobRequestV1(training_job=api.CreateTrainingJobV1.of(project.job))
    print(f"Project {project.name!r}: the job request bt_jupyter sends to Baseten's API:")
    print(json.dumps(body.model_dump(mode="json"), indent=2))
    print(
        "\nThe embedded local service that runs this job is not built yet (issue 3): "
        "this demo validated the job against Baseten's concepts and stopped before submitting."
    )


if __name__ == "__main__":
    main()
