"""The GPU check's own logic, rehearsed on the CPU provider: known to work before a GPU is lent."""

import pytest

from bench.gpu_check import OBJECTIVES, main, parity_on_device
from nightowl.tasks.models import score


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_rehearsal_passes_parity_and_placement_for_every_objective(objective):
    ok, line = parity_on_device(objective, "cpu", rows=2_000, rounds=40)
    assert ok, line
    assert line.split()[0] == objective
    assert "on CPU" in line and "elsewhere" not in line


def test_without_a_usable_gpu_the_check_says_so_and_exits_2(capsys):
    if score.cuda_really_loads():
        pytest.skip("CUDA loads on this machine: bench/gpu_check.sh runs the real check here")
    assert main(["--rows", "1000"]) == 2
    assert capsys.readouterr().out.startswith("FAIL no usable GPU")
