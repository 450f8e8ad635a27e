"""CarRacing environments: stock gymnasium ``CarRacing-v3`` or the pixel-identical :class:`FastCarRacing`.

Importing this package registers ``wm/FastCarRacing-v3`` with gymnasium.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import gymnasium as gym

from wm.envs.fast_car_racing import FastCarRacing

# Gymnasium versions whose CarRacing-v3 the fast renderer was checked against, pixel for pixel: the equality
# tests pass on 1.2.0, 1.3.0 and 1.4.0 (each formats the score text differently), and 1.2.1-1.2.3 ship
# car_racing.py and car_dynamics.py byte-identical to 1.2.0.
VERIFIED_GYMNASIUM = ">=1.2,<1.5"

FAST_ID = "wm/FastCarRacing-v3"

if FAST_ID not in gym.registry:
    # Same registration arguments as gymnasium's own CarRacing-v3.
    gym.register(
        id=FAST_ID,
        entry_point="wm.envs.fast_car_racing:FastCarRacing",
        max_episode_steps=1000,
        reward_threshold=900,
    )


def make_car_racing(fast: bool = True, max_episode_steps: int = 1000, **kwargs) -> gym.Env:
    """CarRacing-v3 wrapped as ``gym.make`` wraps it (TimeLimit, OrderEnforcing), minus the env checker.

    ``fast`` selects :class:`FastCarRacing` instead of the stock class; both produce identical
    observations, rewards and flags. ``kwargs`` go to the env constructor (``render_mode``,
    ``domain_randomize``, ``continuous``, ``lap_complete_percent``).
    """
    return gym.make(
        FAST_ID if fast else "CarRacing-v3",
        max_episode_steps=max_episode_steps,
        disable_env_checker=True,
        **kwargs,
    )


@contextmanager
def blind(env: gym.Env, on: bool = True) -> Iterator[None]:
    """Within the block (if `on`), a :class:`FastCarRacing` env does not draw its observations: they are all
    zeros, while physics, rewards, flags and info stay those of the drawn game. For a policy that reads no
    frames. The stock env keeps drawing."""
    env = env.unwrapped
    if not (on and isinstance(env, FastCarRacing)):
        yield
        return
    env.blind = True
    try:
        yield
    finally:
        env.blind = False


__all__ = ["FAST_ID", "VERIFIED_GYMNASIUM", "FastCarRacing", "blind", "make_car_racing"]
