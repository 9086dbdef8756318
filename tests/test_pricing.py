"""What a job costs: Baseten's listed per-minute instance prices and the documented table."""

from __future__ import annotations

import pytest

from bt_jupyter.pricing import GPU_HOUR_PRICES, gpu_cost_per_hour, listed_price_per_hour


def test_the_documented_table_prices_gpus_times_nodes() -> None:
    assert gpu_cost_per_hour("H100", 8, 2) == pytest.approx(GPU_HOUR_PRICES["H100"] * 16)
    assert gpu_cost_per_hour(None, 0, 1) == 0.0
    assert gpu_cost_per_hour("NOT_A_GPU", 1, 1) == 0.0


def test_a_listed_price_is_per_minute_for_the_whole_instance() -> None:
    per_minute = GPU_HOUR_PRICES["H100"] * 8 / 60  # what Baseten would list for H100:8
    assert listed_price_per_hour(per_minute, "H100", 8) == pytest.approx(
        GPU_HOUR_PRICES["H100"] * 8
    )
    # a GPU the table does not know: the listed price is all there is
    assert listed_price_per_hour(0.5, "MI300X", 1) == pytest.approx(30.0)


@pytest.mark.parametrize("price", [0.0, -1.0, GPU_HOUR_PRICES["H100"] * 8, 1e-6])
def test_an_implausible_listed_price_gives_way_to_the_table(price: float) -> None:
    """An hourly figure read as per-minute (60x too high), a zero, a negative or a price
    far too low is not shown as Baseten's price."""
    assert listed_price_per_hour(price, "H100", 8) is None
