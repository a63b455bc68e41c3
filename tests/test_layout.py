"""ldvc/train/layout.py: processes x per-device batch x accumulation = the global batch, exactly;
impossible layouts fail before work with a message naming the keys and the valid choices."""

from __future__ import annotations

import pytest

from ldvc.train.layout import Layout, LayoutError, resolve_layout


@pytest.mark.parametrize(
    "batch,cap,procs,expected",
    [
        (16, None, 1, (1, 16, 1)),  # one GPU, no cap: the whole batch at once
        (16, None, 4, (4, 4, 1)),  # ZegCLIP: 4 GPUs x 4
        (16, None, 16, (16, 1, 1)),
        (16, 8, 1, (1, 8, 2)),  # memory cap on one GPU: 2 micro-steps of 8
        (16, 4, 1, (1, 4, 4)),
        (16, 4, 2, (2, 4, 2)),
        (16, 8, 4, (4, 4, 1)),  # the cap is above the share: no accumulation
        (16, 16, 4, (4, 4, 1)),
        (16, 3, 1, (1, 2, 8)),  # 3 does not divide 16: the largest divisor below the cap
        (16, 5, 2, (2, 4, 2)),
        (14, 4, 2, (2, 1, 7)),  # a prime share: exact but one image per micro-step
        (24, 5, 2, (2, 4, 3)),
        (1, None, 1, (1, 1, 1)),
    ],
)
def test_layout_arithmetic(batch: int, cap: int | None, procs: int, expected: tuple[int, int, int]) -> None:
    layout = resolve_layout(batch, cap, procs)
    assert (layout.processes, layout.per_device, layout.accumulation) == expected
    assert layout.global_batch == batch == layout.processes * layout.per_device * layout.accumulation
    assert layout.per_device_cap == cap
    if cap is not None:
        assert layout.per_device <= cap


def test_exhaustive_small_layouts_are_exact_and_maximal() -> None:
    for batch in range(1, 33):
        for procs in range(1, 9):
            for cap in [None, *range(1, batch + 1)]:
                if batch % procs:
                    with pytest.raises(LayoutError):
                        resolve_layout(batch, cap, procs)
                    continue
                lay = resolve_layout(batch, cap, procs)
                assert lay.global_batch == batch
                share = batch // procs
                if cap is None:
                    assert lay.per_device == share and lay.accumulation == 1
                else:
                    # no larger per-device batch within the cap splits the share exactly
                    assert lay.per_device <= cap
                    assert not [b for b in range(lay.per_device + 1, min(cap, share) + 1) if share % b == 0]


def test_impossible_layout_names_keys_process_count_and_choices() -> None:
    with pytest.raises(LayoutError) as err:
        resolve_layout(16, None, 3)
    msg = str(err.value)
    assert "train.batch_size = 16" in msg and "3 processes" in msg and "train.per_device_batch" in msg
    assert "multiple of 3 (e.g. 3, 6, 9, 12)" in msg  # valid batch sizes for this machine
    assert "run 1, 2, 4, 8, 16 processes" in msg  # valid process counts for this batch
    with pytest.raises(LayoutError, match="train.batch_size = 2 .* 4 processes"):
        resolve_layout(2, 1, 4)  # fewer images than GPUs


@pytest.mark.parametrize("batch,cap,procs,message", [
    (0, None, 1, "train.batch_size must be a positive integer"),
    (16, 0, 1, "train.per_device_batch must be null or a positive integer"),
    (16, None, 0, "the process count must be a positive integer"),
    (16, True, 1, "train.per_device_batch"),
])
def test_bad_values_fail(batch: int, cap: int | None, procs: int, message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        resolve_layout(batch, cap, procs)


def test_describe_is_one_line_and_says_when_the_cap_was_not_reachable() -> None:
    plain = resolve_layout(16, None, 4).describe()
    assert "\n" not in plain
    assert plain.startswith("global batch 16 = 4 process(es) x 4 image(s) per device x 1 accumulation step(s)")
    capped = resolve_layout(14, 4, 2).describe()
    assert "cap 4" in capped and "1 is the largest divisor of 7 below it" in capped
    exact = resolve_layout(16, 8, 1).describe()
    assert "cap 8)" in exact and "divisor" not in exact
    assert resolve_layout(16, 8, 1).as_dict() == {"processes": 1, "per_device_batch": 8, "grad_accumulation": 2,
                                                   "global_batch": 16, "per_device_cap": 8}


def test_layout_rejects_non_positive_fields() -> None:
    assert Layout(2, 1, 1).global_batch == 2  # positional form (processes, per_device, accumulation)
    with pytest.raises(LayoutError, match="accumulation"):
        Layout(1, 1, 0)
