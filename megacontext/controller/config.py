"""`MCConfig`: the controller's configuration, validated at construction (contract §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

BLOCK_SCORE_MODES = ("mean", "max")


@dataclass(frozen=True)
class MCConfig:
    """The focus controller's configuration (contract §4.2): frozen, validated at construction.

    Fields (meaning; unit; default; valid range):
      block_size          K: tokens per LOD1 gist, and LOD-l gists per LOD-(l+1) gist;
                          tokens; 32; int >= 2. `span(l) = K**l`.
      max_lod             the coarsest level of detail; levels; 2; int in [1, 9] (the LOD map
                          prints a level as one digit).
      budget              W_max, entries the working context may hold (each entry costs one
                          slot, whatever it covers); slots; 8192; int >= 1 and >= recent_tokens.
      recent_tokens       length of the protected tail [T - recent_tokens, T), always LOD0;
                          tokens; 64; int >= 0.
      expand_threshold    a gist expands only if its score is strictly greater; score units
                          (LensNet scores lie in (-1, 1)); 0.1; finite, >= 0.
      collapse_threshold  a group collapses voluntarily only if its group score is strictly
                          below -collapse_threshold; score units; 0.1; finite, >= 0.
      swap_margin         an expand-for-collapse swap needs score - group_score > swap_margin;
                          score units; 0.2; finite, >= 0.
      min_residency       hysteresis: an entry is acted on (outside forced collapses) only once
                          its residency reaches this; focus steps; 2; int >= 0.
      max_actions         expansions plus non-forced collapses per focus step (a swap counts
                          two); actions; 64; int >= 1.
      block_score         how member scores aggregate into a group score: "mean" (float64 sum
                          in position order / K) or "max" (conservative); "mean".

    Raises `ConfigError` (a `ValueError`) naming the field and value for a wrong type (bools
    are refused), a value out of range, `budget < recent_tokens` (the LOD0 tail can be neither
    collapsed nor evicted), or `block_size**max_lod > 2**62` (spans must fit in int64).
    """

    block_size: int = 32  # K: tokens per LOD1 gist, LOD-l gists per LOD-(l+1) gist
    max_lod: int = 2  # coarsest level
    budget: int = 8192  # W_max: slots in the working context (every entry costs one)
    recent_tokens: int = 64  # protected tail, always at LOD0
    expand_threshold: float = 0.1  # expand a gist only if its score exceeds this
    collapse_threshold: float = 0.1  # voluntarily collapse a group only below -this
    swap_margin: float = 0.2  # expand-for-collapse swap needs score - group_score > this
    min_residency: int = 2  # hysteresis: focus steps an entry must live before it is acted on
    max_actions: int = 64  # actions per focus step (forced collapses excepted)
    block_score: str = "mean"  # how member scores aggregate into a group score

    def __post_init__(self):
        def need_int(name, minimum):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"MCConfig.{name} must be an int, got {v!r}")
            if v < minimum:
                raise ConfigError(f"MCConfig.{name} must be >= {minimum}, got {v}")

        def need_nonneg_float(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"MCConfig.{name} must be a finite number, got {v!r}")
            if v < 0:
                raise ConfigError(f"MCConfig.{name} must be >= 0, got {v}")

        need_int("block_size", 2)
        need_int("max_lod", 1)
        if self.max_lod > 9:  # the LOD map (contract §9) shows a level as one digit
            raise ConfigError(f"MCConfig.max_lod must be <= 9, got {self.max_lod}")
        need_int("budget", 1)
        need_int("recent_tokens", 0)
        need_int("min_residency", 0)
        need_int("max_actions", 1)
        for name in ("expand_threshold", "collapse_threshold", "swap_margin"):
            need_nonneg_float(name)
        if self.block_score not in BLOCK_SCORE_MODES:
            raise ConfigError(
                f"MCConfig.block_score must be one of {BLOCK_SCORE_MODES}, got {self.block_score!r}"
            )
        if self.budget < self.recent_tokens:
            # The protected tail is LOD0 and can be neither collapsed nor evicted.
            raise ConfigError(
                f"MCConfig.budget ({self.budget}) is smaller than the protected tail "
                f"recent_tokens ({self.recent_tokens}): no working context can satisfy both"
            )
        if self.block_size**self.max_lod > 2**62:
            raise ConfigError(
                f"MCConfig: span(max_lod) = {self.block_size}**{self.max_lod} overflows int64"
            )

    def span(self, lod: int) -> int:
        """Tokens covered by one entry of level `lod`: `K**lod`."""
        return self.block_size**lod

    def tail_start(self, T: int) -> int:
        """First token of the protected tail `[T - recent_tokens, T)` (0 if T is short)."""
        return max(T - self.recent_tokens, 0)
