"""MCConfig: the documented defaults, and a ValueError naming the field for any config that
cannot work (contract §4, "MCConfig")."""

import pytest

from spec.implementation import mc


def test_defaults_match_contract():
    """The defaults are the ones contract §4 lists."""
    cfg = mc.MCConfig()
    expected = dict(block_size=32, max_lod=2, budget=8192, recent_tokens=64,
                    expand_threshold=0.1, collapse_threshold=0.1, swap_margin=0.2,
                    min_residency=2, max_actions=64, block_score="mean")
    got = {k: getattr(cfg, k) for k in expected}
    assert got == expected, f"MCConfig() = {got}, contract §4 says {expected}"


def test_config_is_frozen():
    """A config is an immutable value."""
    cfg = mc.MCConfig()
    with pytest.raises(AttributeError):
        cfg.budget = 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("block_size", 1), ("block_size", 0), ("block_size", 2.5), ("block_size", True),
        ("max_lod", 0), ("max_lod", -1), ("max_lod", 10),
        ("budget", 0), ("budget", -5),
        ("recent_tokens", -1),
        ("expand_threshold", -0.1), ("expand_threshold", float("nan")),
        ("collapse_threshold", float("inf")), ("swap_margin", -1.0),
        ("min_residency", -1), ("max_actions", 0),
        ("block_score", "median"),
    ],
)
def test_invalid_field_raises_value_error_naming_it(field, value):
    """Each impossible field value raises ValueError whose message names the field."""
    with pytest.raises(ValueError, match=field) as info:
        mc.MCConfig(**{field: value})
    assert str(value) in str(info.value) or repr(value) in str(info.value), (
        f"MCConfig({field}={value!r}) error does not show the value: {info.value}"
    )


def test_budget_smaller_than_protected_tail_is_rejected():
    """budget < recent_tokens cannot hold the LOD0 tail: ValueError naming both."""
    with pytest.raises(ValueError, match="budget") as info:
        mc.MCConfig(budget=32, recent_tokens=64)
    assert "recent_tokens" in str(info.value), str(info.value)


def test_budget_equal_to_tail_is_allowed():
    """The tail alone may fill the budget (everything older is then evicted)."""
    mc.MCConfig(budget=64, recent_tokens=64)
