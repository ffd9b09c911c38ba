"""The seam this project uses into a Ray Data execution: one more backpressure policy on a Dataset's DataContext.

Ray Data builds each execution's policies from its context once the operators exist, so a policy class can
both watch the graph (the bound on seeds in flight) and adjust what its operators keep (the block-stats cap).
"""

from __future__ import annotations

from typing import Callable


def add_policy(context, make_policy: Callable[[], type], settings: dict) -> None:
    """Add the class ``make_policy()`` builds to ``context``'s backpressure policies (once, by name), with its
    ``settings`` as context config (ray_seams checks at start-up that this Ray has the seam)."""
    from ray.data._internal.execution.backpressure_policy import (
        ENABLED_BACKPRESSURE_POLICIES, ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY)
    policy = make_policy()
    policies = context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ENABLED_BACKPRESSURE_POLICIES)
    context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
                       [*(p for p in policies if p.__name__ != policy.__name__), policy])
    for key, value in settings.items():
        context.set_config(key, value)
