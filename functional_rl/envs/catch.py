"""Catch: a pixel task, pure and batched (bsuite's ``catch``, Osband et al. 2020, "Behaviour
Suite for Reinforcement Learning").

A ball starts in a random column of the top row of a ``rows x columns`` grid and falls one row
per step; a paddle on the bottom row starts in the middle column and moves left, stays or
moves right. When the ball reaches the bottom row the episode terminates with reward ``+1`` if
the paddle is under it, else ``-1`` (0 on every other step). The observation is the image:
float32 ``[B, 1, rows, columns]``, 1 where the ball or the paddle is, 0 elsewhere. Optimal
return 1; a uniformly random policy scores about -0.6 on the default 10 x 5 grid.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = Catch()
    >>> obs, state = env.reset(jr.key(0), env.default_params(), num_envs=2)
    >>> obs.shape, obs.sum(dim=(1, 2, 3)).tolist()  # [B, C, H, W]; one ball and one paddle
    (torch.Size([2, 1, 10, 5]), [2.0, 2.0])
"""

from __future__ import annotations

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["Catch", "CatchParams", "CatchState"]

ROWS, COLUMNS = 10, 5


@pytree_dataclass
class CatchParams:
    """No parameters: the grid size is static (it fixes the observation's shape); make a
    ``Catch(rows, columns)`` for another size.

    Example:
        >>> import torch.utils._pytree as pytree
        >>> pytree.tree_leaves(Catch().default_params())
        []
    """


@pytree_dataclass
class CatchState:
    """Ball column and row and paddle column: int64 ``[B]`` each (the ball's row is also the
    step count).

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> _, s = Catch().reset(jr.key(0), CatchParams(), 3)
        >>> s.ball_y.tolist(), s.paddle_x.tolist()
        ([0, 0, 0], [2, 2, 2])
    """

    ball_x: torch.Tensor
    ball_y: torch.Tensor
    paddle_x: torch.Tensor


class Catch(Environment):
    """Catch the falling ball with the paddle (module docstring).

    Observation float32 ``[B, 1, rows, columns]``. Action int64 ``[B]`` in ``{0, 1, 2}``:
    paddle left, stay, right (clipped at the walls). Episodes last ``rows - 1`` steps and end
    by termination.

    Example (a ball dropped straight onto the paddle in a 3 x 3 grid):
        >>> import functional_rl.kernel.random as jr
        >>> env, params = Catch(rows=3, columns=3), CatchParams()
        >>> s = CatchState(*(torch.tensor([v]) for v in (1, 0, 1)))
        >>> out = env.step(jr.key(0), s, torch.tensor([1]), params)
        >>> out.reward.tolist(), out.terminated.tolist()
        ([0.0], [False])
        >>> out = env.step(jr.key(1), out.state, torch.tensor([1]), params)
        >>> out.reward.tolist(), out.terminated.tolist(), out.final_obs[0, 0].tolist()
        ([1.0], [True], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    """

    id = "Catch-v0"
    action_space = Discrete(3)

    def __init__(self, rows: int = ROWS, columns: int = COLUMNS):
        if rows < 2 or columns < 1:
            raise ValueError(f"Catch needs rows >= 2 and columns >= 1, got rows={rows}, columns={columns}")
        self.rows, self.columns = rows, columns
        self.observation_space = Box(low=(0.0,) * (rows * columns), high=(1.0,) * (rows * columns), shape=(1, rows, columns))

    def default_params(self) -> CatchParams:
        """No parameters."""
        return CatchParams()

    def reset_env(self, keys: torch.Tensor, params: CatchParams) -> CatchState:
        """Ball in a uniformly random column of row 0 (env ``b`` from ``keys[b]``, int64
        ``[B, 2]``), paddle in the middle column."""
        B, device = keys.shape[0], keys.device
        ball_x = jr.randint(keys, (), 0, self.columns)
        row = torch.zeros(B, dtype=torch.int64, device=device)
        return CatchState(ball_x, row, torch.full((B,), self.columns // 2, dtype=torch.int64, device=device))

    def step_env(self, state: CatchState, action: torch.Tensor, params: CatchParams):
        """``(next_state, reward float32 [B], terminated bool [B])``: the paddle moves by
        ``action - 1``, the ball falls a row; on the bottom row the catch pays ``+-1``."""
        paddle = (state.paddle_x + action.to(torch.int64) - 1).clamp(0, self.columns - 1)
        ball_y = state.ball_y + 1
        landed = ball_y >= self.rows - 1
        reward = torch.where(landed, torch.where(paddle == state.ball_x, 1.0, -1.0), 0.0).to(torch.float32)
        return CatchState(state.ball_x.clone(), ball_y, paddle), reward, landed

    def get_obs(self, state: CatchState, params: CatchParams) -> torch.Tensor:
        """float32 ``[B, 1, rows, columns]``: 1 at the ball and at the paddle."""
        rows = torch.arange(self.rows, device=state.ball_y.device)
        cols = torch.arange(self.columns, device=state.ball_y.device)
        ball = (rows == state.ball_y[:, None])[:, :, None] & (cols == state.ball_x[:, None])[:, None, :]
        paddle = (rows == self.rows - 1)[None, :, None] & (cols == state.paddle_x[:, None])[:, None, :]
        return (ball | paddle).to(torch.float32)[:, None]

    def truncation(self, state: CatchState, params: CatchParams) -> torch.Tensor:
        """Never: bool ``[B]`` all ``False`` (every episode ends by termination)."""
        return torch.zeros_like(state.ball_y, dtype=torch.bool)


register("Catch-v0", Catch)
