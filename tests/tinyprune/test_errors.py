"""The error hierarchy: exit codes and typed payloads."""

from __future__ import annotations

import pytest

from tinyprune.errors import BudgetExceededError, ConfigError, unknown_name_message


def test_budget_error_carries_the_export_result_and_the_old_name_warns() -> None:
    result = object()
    err = BudgetExceededError("over budget", result=result)
    assert err.exit_code == 3 and err.result is result
    with pytest.warns(DeprecationWarning, match="renamed .result"):
        assert err.report is result


def test_unknown_name_message_suggests_the_closest_name_only_when_close() -> None:
    names = ["bn_scale", "l1", "random", "tailored"]
    assert "(did you mean 'tailored'?)" in unknown_name_message("criterion", "tailord", names)
    assert "did you mean" not in unknown_name_message("criterion", "zzzz", names)
    assert ConfigError("x").exit_code == 2
