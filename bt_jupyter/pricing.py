"""What GPUs cost on Baseten: the widget's and the Training panel's cost figures read this
one table (Baseten's documented on-demand price per GPU-hour, USD). Where Baseten's API
lists an instance type's own price, that price wins (see ``server/cost.py``)."""

from __future__ import annotations

GPU_HOUR_PRICES: dict[str, float] = {
    "T4": 0.63,
    "L4": 0.85,
    "A10G": 1.21,
    "A100": 4.00,
    "H100": 6.50,
    "H100_40GB": 4.65,
    "H200": 7.50,
    "B200": 9.98,
}


def gpu_cost_per_hour(
    gpu_type: str | None,
    gpu_count: int,
    node_count: int,
    prices: dict[str, float] | None = None,
) -> float:
    """USD per hour of ``gpu_count`` GPUs on each of ``node_count`` nodes; 0 for CPU-only
    compute or a GPU with no known price."""
    if not gpu_type or gpu_count <= 0:
        return 0.0
    return (prices or GPU_HOUR_PRICES).get(gpu_type, 0.0) * gpu_count * max(1, node_count)
