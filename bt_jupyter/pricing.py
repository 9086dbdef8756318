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


#: Baseten meters usage by the minute at "the per-minute price for its instance type"
#: (docs.baseten.co/observability/usage); the ``price`` of an instance type listed by its
#: API is read as that USD price per minute, for the whole instance (one node).
MINUTES_PER_HOUR = 60
#: A listed price this far (either way) from the documented table is taken for a misread
#: unit or a bad row: the table answers instead.
LISTED_PRICE_TOLERANCE = 10.0


def listed_price_per_hour(
    price_per_minute: float, gpu_type: str | None, gpu_count: int
) -> float | None:
    """USD per hour of one instance from Baseten's listed per-minute price; None when it
    is not a plausible price for that many GPUs of that type (see the table)."""
    if price_per_minute <= 0:
        return None
    per_hour = price_per_minute * MINUTES_PER_HOUR
    documented = gpu_cost_per_hour(gpu_type, gpu_count, 1)
    if documented and not (
        documented / LISTED_PRICE_TOLERANCE <= per_hour <= documented * LISTED_PRICE_TOLERANCE
    ):
        return None
    return per_hour
