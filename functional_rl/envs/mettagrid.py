"""mettagrid, the reference trainer's multi-agent gridworld, as registered env ids.

Needs the optional extra: ``pip install "functional-rl[mettagrid]"`` (mettagrid needs Python
>= 3.11). Everything else in the library works without it: mettagrid is imported only when
one of these ids is built, and a missing install raises :class:`MettagridMissingError`
saying what to install.

Ids (each a :func:`~functional_rl.envs.pettingzoo_adapter.from_pettingzoo` adapter over
``mettagrid.envs.pettingzoo_env.MettaGridPettingZooEnv``; one row per agent per copy, so
``PPOConfig.num_envs`` must be a multiple of the agent count; the copies are decided at the
first reset):

* ``mettagrid/small``: :func:`small_config`, a 9 x 9 room (a wall border around 7 x 7 free
  cells) with 4 agents and 6 heart sources; an agent that moves into a source gets a heart
  (reward 1); 64-step episodes; a 7 x 7 observation window of 48 tokens; actions noop and the
  four moves. Random actions earn a little (about 5 hearts per agent per episode), a policy
  that stays next to a source and keeps using it earns up to 64.
* ``mettagrid/navigation``: ``mettagrid.builder.envs.make_navigation(4)`` as mettagrid ships it
  (a hard task: random actions earn nothing in thousands of steps).

Observations are tokens (:class:`~functional_rl.kernel.token_policy.TokenBox`, ``(tokens, 3)``
uint8): train with ``PPOConfig(policy="token")`` (the grid encoder) or ``"token_pool"``.

Maps: mettagrid places objects at random. Each copy's reset is seeded from the run's keys
and the seed is also set on the copy's map builder (mettagrid seeds map generation only
when the map builder's config carries a seed), so a run's maps follow its seed.

Example:
    >>> from functional_rl.envs import list_envs
    >>> "mettagrid/small" in list_envs(host=True) and "mettagrid/navigation" in list_envs(host=True)
    True
"""

from __future__ import annotations

from typing import Any

__all__ = ["MettagridMissingError", "small_config", "navigation_config", "make_mettagrid", "MAKERS", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "functional-rl[mettagrid]"'


class MettagridMissingError(ImportError):
    """mettagrid is not installed (or not importable here); the message says how to install it.

    Example:
        >>> issubclass(MettagridMissingError, ImportError)
        True
    """


def _import() -> None:
    try:
        import mettagrid  # noqa: F401
        import mettagrid.envs.pettingzoo_env  # noqa: F401
    except ImportError as e:
        raise MettagridMissingError(
            f"the mettagrid environments need the optional mettagrid package (Python >= 3.11): {INSTALL_HINT} ({e})"
        ) from e


def small_config(num_agents: int = 4, sources: int = 6, max_steps: int = 64, size: int = 9, window: int = 7,
                 num_tokens: int = 48) -> Any:
    """The ``MettaGridConfig`` of ``mettagrid/small``: a ``size x size`` room with a wall
    border, ``num_agents`` agents and ``sources`` heart sources placed at random, reward 1 per
    heart, ``max_steps`` per episode, a ``window x window`` view of ``num_tokens`` tokens.

    Raises:
        MettagridMissingError: mettagrid is not installed.
    """
    _import()
    from mettagrid.builder import building
    from mettagrid.config.game_value import InventoryValue
    from mettagrid.config.handler_config import Handler
    from mettagrid.config.mettagrid_config import (
        ActionsConfig, AgentConfig, GameConfig, GridObjectConfig, MettaGridConfig, MoveActionConfig, NoopActionConfig,
    )
    from mettagrid.config.mutation.resource_mutation import updateActor
    from mettagrid.config.obs_config import ObsConfig
    from mettagrid.config.reward_config import reward
    from mettagrid.map_builder.random_map import RandomMapBuilder

    source = GridObjectConfig(name="heart_source", on_use_handler=Handler(mutations=[updateActor({"heart": 1})]))
    return MettaGridConfig(game=GameConfig(
        num_agents=num_agents, max_steps=max_steps, resource_names=["heart"],
        objects={"wall": building.wall, "heart_source": source},
        actions=ActionsConfig(move=MoveActionConfig(enabled=True), noop=NoopActionConfig(enabled=True)),
        agent=AgentConfig(rewards={"heart": reward(InventoryValue(item="heart"))}),
        obs=ObsConfig(width=window, height=window, num_tokens=num_tokens),
        map_builder=RandomMapBuilder.Config(agents=num_agents, width=size, height=size, border_width=1,
                                            objects={"heart_source": sources}),
    ))


def navigation_config(num_agents: int = 4) -> Any:
    """mettagrid's own navigation task, ``mettagrid.builder.envs.make_navigation(num_agents)``.

    Raises:
        MettagridMissingError: mettagrid is not installed.
    """
    _import()
    from mettagrid.builder.envs import make_navigation

    return make_navigation(num_agents)


def make_mettagrid(cfg: Any, env_id: str, num_envs: int | None = None):
    """A :func:`~functional_rl.envs.pettingzoo_adapter.from_pettingzoo` adapter over ``num_envs``
    copies (``None``: decided at the first reset) of ``MettaGridPettingZooEnv(Simulator(), cfg)``,
    with a :class:`~functional_rl.kernel.token_policy.TokenBox` observation space built from the
    config's window and feature ids (their normalisations as the feature scales).

    Raises:
        MettagridMissingError: mettagrid is not installed.
    """
    _import()
    from mettagrid.envs.pettingzoo_env import MettaGridPettingZooEnv
    from mettagrid.simulator import Simulator

    from functional_rl.envs.pettingzoo_adapter import from_pettingzoo
    from functional_rl.kernel.token_policy import TokenBox

    features = cfg.game.id_map().features()
    num_features = max(f.id for f in features) + 1
    scale = [1.0] * num_features
    for f in features:
        scale[f.id] = float(f.normalization) if f.normalization and f.normalization > 0 else 1.0
    obs = cfg.game.obs
    space = TokenBox.of(num_tokens=obs.num_tokens, num_features=num_features, grid=(obs.height, obs.width), feature_scale=tuple(scale))
    return from_pettingzoo(lambda: _SeededMaps(MettaGridPettingZooEnv, Simulator, cfg), num_envs, env_id=env_id,
                           observation_space=space)


class _SeededMaps:
    """``MettaGridPettingZooEnv`` whose maps follow the ``reset`` seed: mettagrid seeds a map
    builder only when its config carries a seed (else it draws fresh entropy), so each copy
    keeps its own config and sets the map builder's seed to the reset's before resetting."""

    def __init__(self, env_cls: Any, simulator_cls: Any, cfg: Any):
        self._cfg = cfg.model_copy(deep=True)
        self._seedable = hasattr(self._cfg.game.map_builder, "seed")
        self.env = env_cls(simulator_cls(), self._cfg)

    def reset(self, seed: int | None = None, options: Any = None):
        if seed is not None and self._seedable:
            self._cfg.game.map_builder.seed = int(seed)
        return self.env.reset(seed=seed, options=options)

    def __getattr__(self, name: str) -> Any:  # everything else is the env's
        return getattr(self.env, name)


#: env id -> (config maker, number of agents), for the registry and ``list-envs``.
MAKERS = {"mettagrid/small": (small_config, 4), "mettagrid/navigation": (navigation_config, 4)}


def _factory(env_id: str):
    def build(num_envs: int | None = None, **config_kwargs: Any):
        maker, _ = MAKERS[env_id]
        return make_mettagrid(maker(**config_kwargs), env_id, num_envs)

    build.num_agents = MAKERS[env_id][1]  # list-envs reads it without building the env
    return build
