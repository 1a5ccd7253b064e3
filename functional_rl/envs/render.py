"""Pictures of env states: pure torch renderers for the built-in classic-control envs.

A renderer maps a batch of env states to RGB frames, uint8 ``[B, H, W, 3]``, with a few
tensor masks per shape (filled convex polygons, discs, a curve sampled at every pixel
column), the same scenes, sizes and colours as gymnasium's pygame renderers
(``gymnasium/envs/classic_control/*.py``) without the anti-aliasing. They are pure functions
of ``(env, state, params)``: no I/O, no host sync, so a frame can be drawn from any state,
e.g. a reset state.

=========================================  ==============  ==========================================
env                                        frame (H x W)   what is drawn
=========================================  ==============  ==========================================
``CartPole-v1``, ``CartPoleNoVelocity-v1``   400 x 600       track, cart, pole, axle
``Acrobot-v1``                              500 x 500       goal line, two links, joints
``MountainCar-v0``, ``MountainCarContinuous-v0``  400 x 600  hill, flag at the goal, car with wheels
``Pendulum-v1``                             500 x 500       rod, its end, the axle
``Catch-v0``                                24 px per cell  ball, paddle on a dark grid
=========================================  ==============  ==========================================

:func:`render` looks the renderer up by the env's class (a subclass uses its base's, as
``CartPoleNoVelocity`` uses ``CartPole``'s); :func:`register_renderer` adds one for your env.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> from functional_rl.envs import make
    >>> env = make("CartPole-v1")
    >>> _, state = env.reset(jr.key(0), env.default_params(), 2)
    >>> frames = render(env, state, env.default_params())
    >>> frames.shape, frames.dtype
    (torch.Size([2, 400, 600, 3]), torch.uint8)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from functional_rl.envs.acrobot import Acrobot
from functional_rl.envs.cartpole import CartPole
from functional_rl.envs.catch import Catch
from functional_rl.envs.mountain_car import MountainCar, MountainCarContinuous
from functional_rl.envs.pendulum import Pendulum

__all__ = ["render", "register_renderer", "renderer_for", "has_renderer", "render_fps", "NoRendererError"]

Renderer = Callable[[Any, Any, Any], torch.Tensor]

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


class NoRendererError(ValueError):
    """The env has no renderer; the message lists the envs that have one.

    Example:
        >>> from functional_rl.envs import make
        >>> renderer_for(make("MemoryCue-v0"))
        Traceback (most recent call last):
            ...
        functional_rl.envs.render.NoRendererError: MemoryCue has no renderer; envs with one: Acrobot, CartPole, Catch, MountainCar, MountainCarContinuous, Pendulum (and their subclasses); register one with functional_rl.envs.render.register_renderer(EnvClass, fn)
    """


# ------------------------------------------------------------------------- drawing on a canvas
class _Canvas(NamedTuple):
    """A frame being drawn: a colour index per pixel ``idx`` uint8 ``[B, H, W]`` into
    ``palette`` (RGB triples), so painting a shape writes one byte per pixel, and
    :func:`_rgb` turns it into the RGB frame once at the end."""

    idx: torch.Tensor
    palette: tuple[tuple[int, int, int], ...]


def _canvas(batch: int, height: int, width: int, color: tuple[int, int, int], device: Any) -> _Canvas:
    """A ``[B, H, W]`` canvas filled with ``color``."""
    return _Canvas(torch.zeros(batch, height, width, dtype=torch.uint8, device=device), (color,))


def _pixels(height: int, width: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in gymnasium's drawing coordinates (y up, origin at the bottom left):
    ``px`` float32 ``[1, 1, W]`` and ``py`` ``[1, H, 1]``; row 0 of the frame is the top."""
    px = torch.arange(width, dtype=torch.float32, device=device) + 0.5
    py = height - (torch.arange(height, dtype=torch.float32, device=device) + 0.5)
    return px[None, None, :], py[None, :, None]


def _paint(canvas: _Canvas, mask: torch.Tensor, color: tuple[int, int, int]) -> _Canvas:
    """``canvas`` with ``color`` where ``mask`` (bool ``[B, H, W]``, or broadcastable to it); a new canvas."""
    palette = canvas.palette if color in canvas.palette else (*canvas.palette, color)
    k = torch.tensor(palette.index(color), dtype=torch.uint8, device=canvas.idx.device)
    return _Canvas(torch.where(mask, k, canvas.idx), palette)


def _rgb(canvas: _Canvas) -> torch.Tensor:
    """The RGB frames uint8 ``[B, H, W, 3]`` of a canvas."""
    return torch.tensor(canvas.palette, dtype=torch.uint8, device=canvas.idx.device)[canvas.idx.long()]


def _polygon(px: torch.Tensor, py: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """bool ``[B, H, W]``: inside the convex polygon ``corners`` float ``[B, K, 2]`` (in order,
    either orientation): the pixel is on the same side of every edge."""
    pos = neg = None
    K = corners.shape[1]
    for k in range(K):  # edge k: the pixel's side is the sign of a*py - b*px + c, a [B, H, 1] + [B, 1, W] sum
        (x0, y0), (x1, y1) = corners[:, k].unbind(-1), corners[:, (k + 1) % K].unbind(-1)
        a, b = (x1 - x0)[:, None, None], (y1 - y0)[:, None, None]
        cross = a * (py - y0[:, None, None]) - b * (px - x0[:, None, None])
        pos = cross >= 0 if pos is None else pos & (cross >= 0)
        neg = cross <= 0 if neg is None else neg & (cross <= 0)
    return pos | neg


def _disc(px: torch.Tensor, py: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """bool ``[B, H, W]``: within ``radius`` of the centres ``cx``, ``cy`` float ``[B]``."""
    r = torch.as_tensor(radius, dtype=torch.float32, device=px.device).reshape(-1, 1, 1)
    return (px - cx[:, None, None]) ** 2 + (py - cy[:, None, None]) ** 2 <= r**2


def _box(px: torch.Tensor, py: torch.Tensor, x: torch.Tensor, y: torch.Tensor, angle: torch.Tensor, l: Any, r: Any, b: Any, t: Any) -> torch.Tensor:
    """bool ``[B, H, W]``: inside the box ``[l, r] x [b, t]`` rotated by ``angle`` (radians,
    counter-clockwise, as gymnasium's ``Vector2.rotate_rad``) and moved to ``(x, y)``, all
    ``[B]`` or floats. Each pixel is rotated back into the box's frame: ``u = c dx + s dy``,
    ``v = -s dx + c dy``, both a ``[B, H, 1] + [B, 1, W]`` sum."""
    l, r, b, t = (_f32(v, x)[:, None, None] for v in (l, r, b, t))
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    dx, dy = px - x[:, None, None], py - y[:, None, None]  # [B, 1, W], [B, H, 1]
    u = (c * dx - (l + r) / 2) + s * dy
    v = (c * dy - (b + t) / 2) - s * dx
    return (u.abs() <= (r - l) / 2) & (v.abs() <= (t - b) / 2)


def _f32(value: Any, like: torch.Tensor) -> torch.Tensor:
    """A parameter (float, or tensor broadcastable to ``[B]``) as float32 ``[B]`` next to ``like``."""
    return torch.as_tensor(value, dtype=torch.float32, device=like.device).expand(like.shape[0]).clone()


# ------------------------------------------------------------------------- the renderers
def render_cartpole(env: Any, state: Any, params: Any) -> torch.Tensor:
    """CartPole (gymnasium's scene): uint8 ``[B, 400, 600, 3]``.

    The world ``[-x_threshold, x_threshold]`` spans the width; the cart (50 x 30 px, black)
    rides the track at 100 px, the pole (10 px wide, ``2 * length`` long, tan) leans by
    ``theta`` from upright, clockwise for positive ``theta``.

    Example (an upright pole is a vertical tan bar above the cart's centre):
        >>> from functional_rl.envs import CartPoleState
        >>> s = CartPoleState(*torch.zeros(4, 1), torch.zeros(1, dtype=torch.int64))
        >>> frame = render_cartpole(CartPole(), s, CartPole().default_params())[0]
        >>> frame[200, 300].tolist(), frame[200, 320].tolist(), frame[300, 300].tolist()  # pole, sky, cart
        ([202, 152, 101], [255, 255, 255], [0, 0, 0])
    """
    x = state.x.to(torch.float32)
    H, W = 400, 600
    scale = W / (2 * _f32(params.x_threshold, x))
    pole_len = scale * 2 * _f32(params.length, x)
    pole_w, cart_w, cart_h, cart_y = 10.0, 50.0, 30.0, 100.0
    px, py = _pixels(H, W, x.device)
    cart_x = x * scale + W / 2
    axle_y = torch.full_like(x, cart_y + cart_h / 4)
    img = _canvas(x.shape[0], H, W, WHITE, x.device)
    img = _paint(img, (py - cart_y).abs() <= 0.5, BLACK)  # the track
    cart = _box(px, py, cart_x, torch.full_like(x, cart_y), torch.zeros_like(x), -cart_w / 2, cart_w / 2, -cart_h / 2, cart_h / 2)
    img = _paint(img, cart, BLACK)
    pole = _box(px, py, cart_x, axle_y, -state.theta.to(torch.float32), -pole_w / 2, pole_w / 2, -pole_w / 2, pole_len - pole_w / 2)
    img = _paint(img, pole, (202, 152, 101))
    return _rgb(_paint(img, _disc(px, py, cart_x, axle_y, pole_w / 2), (129, 132, 203)))


def render_acrobot(env: Any, state: Any, params: Any) -> torch.Tensor:
    """Acrobot (gymnasium's scene): uint8 ``[B, 500, 500, 3]``.

    The pivot is the centre; the first link hangs ``theta1`` from straight down, the second
    ``theta2`` from the first (teal, 0.2 m wide, yellow joints); the black line is the goal
    height, one link length above the pivot.

    Example (hanging straight down: teal below the pivot, white above):
        >>> from functional_rl.envs import AcrobotState
        >>> s = AcrobotState(*torch.zeros(4, 1), torch.zeros(1, dtype=torch.int64))
        >>> frame = render_acrobot(Acrobot(), s, Acrobot().default_params())[0]
        >>> frame[350, 250].tolist(), frame[150, 250].tolist()
        ([0, 204, 204], [255, 255, 255])
    """
    t1, t2 = state.theta1.to(torch.float32), state.theta2.to(torch.float32)
    H = W = 500
    l1, l2 = _f32(params.link_length_1, t1), torch.ones_like(t1)  # the second link is 1 m, as gymnasium's LINK_LENGTH_2
    bound = l1 + l2 + 0.2
    scale = W / (2 * bound)
    off = W / 2
    px, py = _pixels(H, W, t1.device)
    x1, y1 = off + l1 * scale * torch.sin(t1), off - l1 * scale * torch.cos(t1)
    x2, y2 = x1 + l2 * scale * torch.sin(t1 + t2), y1 - l2 * scale * torch.cos(t1 + t2)
    img = _canvas(t1.shape[0], H, W, WHITE, t1.device)
    goal_y = off + l1 * scale
    line = ((py - goal_y[:, None, None]).abs() <= 0.5) & ((px - off).abs() <= (bound * scale)[:, None, None])
    img = _paint(img, line, BLACK)
    half = 0.1 * scale
    for (xa, ya), (xb, yb), length in (((torch.full_like(t1, off), torch.full_like(t1, off)), (x1, y1), l1), ((x1, y1), (x2, y2), l2)):
        angle = torch.atan2(yb - ya, xb - xa)
        img = _paint(img, _box(px, py, xa, ya, angle, 0.0, length * scale, -half, half), (0, 204, 204))
        img = _paint(img, _disc(px, py, xa, ya, half), (204, 204, 0))
    return _rgb(img)


def render_mountain_car(env: Any, state: Any, params: Any) -> torch.Tensor:
    """MountainCar and MountainCarContinuous (gymnasium's scene): uint8 ``[B, 400, 600, 3]``.

    The hill ``0.45 sin(3 x) + 0.55`` (sampled at every pixel column), a flag at
    ``goal_position``, and the car (40 x 20 px, black, grey wheels) tilted with the slope.

    Example (the car at the valley's bottom is black; the hill line passes under it):
        >>> from functional_rl.envs import MountainCarState
        >>> s = MountainCarState(torch.tensor([-math.pi / 6]), torch.zeros(1), torch.zeros(1, dtype=torch.int64))
        >>> frame = render_mountain_car(MountainCar(), s, MountainCar().default_params())[0]
        >>> x = round((-math.pi / 6 + 1.2) * 600 / 1.8)
        >>> frame[400 - 10 - 33 - 10, x].tolist(), frame[50, x].tolist()  # car body, sky
        ([0, 0, 0], [255, 255, 255])
    """
    pos = state.position.to(torch.float32)
    H, W = 400, 600
    lo, hi = _f32(params.min_position, pos), _f32(params.max_position, pos)
    scale = W / (hi - lo)
    car_w, car_h, clearance = 40.0, 20.0, 10.0
    px, py = _pixels(H, W, pos.device)
    img = _canvas(pos.shape[0], H, W, WHITE, pos.device)

    def height(p: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * p) * 0.45 + 0.55

    s3 = scale[:, None, None]
    hill_y = height(px / s3 + lo[:, None, None]) * s3  # the curve at every pixel column, [B, 1, W]
    img = _paint(img, (py - hill_y).abs() <= 1.0, BLACK)
    goal = _f32(params.goal_position, pos)
    flag_x, flag_y1 = (goal - lo) * scale, height(goal) * scale
    flag_y2 = flag_y1 + 50
    pole = ((px - flag_x[:, None, None]).abs() <= 0.5) & (py >= flag_y1[:, None, None]) & (py <= flag_y2[:, None, None])
    img = _paint(img, pole, BLACK)
    flag = torch.stack([torch.stack([flag_x, flag_y2], -1), torch.stack([flag_x, flag_y2 - 10], -1),
                        torch.stack([flag_x + 25, flag_y2 - 5], -1)], dim=1)
    img = _paint(img, _polygon(px, py, flag), (204, 204, 0))
    angle = torch.cos(3 * pos)
    cx, cy = (pos - lo) * scale, clearance + height(pos) * scale
    img = _paint(img, _box(px, py, cx, cy, angle, -car_w / 2, car_w / 2, 0.0, car_h), BLACK)
    c, s = torch.cos(angle), torch.sin(angle)
    for wx in (car_w / 4, -car_w / 4):
        img = _paint(img, _disc(px, py, cx + wx * c, cy + wx * s, car_h / 2.5), (128, 128, 128))
    return _rgb(img)


def render_pendulum(env: Any, state: Any, params: Any) -> torch.Tensor:
    """Pendulum (gymnasium's scene without the torque arrow): uint8 ``[B, 500, 500, 3]``.

    A red rod of length ``l`` from the centre, upright at ``theta = 0`` and turning
    counter-clockwise with ``theta``, round at its end, on a black axle.

    Example (upright: red above the axle, white below):
        >>> from functional_rl.envs import PendulumState
        >>> s = PendulumState(torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.int64))
        >>> frame = render_pendulum(Pendulum(), s, Pendulum().default_params())[0]
        >>> frame[150, 250].tolist(), frame[350, 250].tolist(), frame[250, 250].tolist()
        ([204, 77, 77], [255, 255, 255], [0, 0, 0])
    """
    theta = state.theta.to(torch.float32)
    H = W = 500
    bound = 2.2
    scale = W / (2 * bound)
    off = torch.full_like(theta, W / 2)
    rod_len = _f32(params.l, theta) * scale
    rod_w = 0.2 * scale
    px, py = _pixels(H, W, theta.device)
    img = _canvas(theta.shape[0], H, W, WHITE, theta.device)
    angle = theta + math.pi / 2
    red = (204, 77, 77)
    img = _paint(img, _box(px, py, off, off, angle, 0.0, rod_len, -rod_w / 2, rod_w / 2), red)
    end_x, end_y = off + rod_len * torch.cos(angle), off + rod_len * torch.sin(angle)
    img = _paint(img, _disc(px, py, end_x, end_y, rod_w / 2) | _disc(px, py, off, off, rod_w / 2), red)
    return _rgb(_paint(img, _disc(px, py, off, off, 0.05 * scale), BLACK))


CATCH_CELL = 24  # pixels per grid cell


def render_catch(env: Any, state: Any, params: Any) -> torch.Tensor:
    """Catch: the grid scaled up ``CATCH_CELL`` px per cell, uint8 ``[B, 24 rows, 24 columns, 3]``:
    a dark background, the ball light blue, the paddle orange.

    Example (the ball at the top left, the paddle in the middle of the bottom row):
        >>> from functional_rl.envs import CatchState
        >>> s = CatchState(torch.tensor([0]), torch.tensor([0]), torch.tensor([2]))
        >>> frame = render_catch(Catch(), s, None)[0]
        >>> frame.shape, frame[12, 12].tolist(), frame[-12, 2 * 24 + 12].tolist(), frame[12, 60].tolist()
        (torch.Size([240, 120, 3]), [120, 200, 255], [255, 160, 40], [30, 30, 30])
    """
    rows = torch.arange(env.rows, device=state.ball_y.device)
    cols = torch.arange(env.columns, device=state.ball_y.device)
    ball = (rows == state.ball_y[:, None])[:, :, None] & (cols == state.ball_x[:, None])[:, None, :]
    paddle = (rows == env.rows - 1)[None, :, None] & (cols == state.paddle_x[:, None])[:, None, :]
    grid = ball.repeat_interleave(CATCH_CELL, 1).repeat_interleave(CATCH_CELL, 2)
    pad = paddle.repeat_interleave(CATCH_CELL, 1).repeat_interleave(CATCH_CELL, 2)
    img = _canvas(state.ball_y.shape[0], env.rows * CATCH_CELL, env.columns * CATCH_CELL, (30, 30, 30), state.ball_y.device)
    return _rgb(_paint(_paint(img, pad, (255, 160, 40)), grid, (120, 200, 255)))


# ------------------------------------------------------------------------- the registry
_RENDERERS: dict[type, Renderer] = {
    CartPole: render_cartpole,
    Acrobot: render_acrobot,
    MountainCar: render_mountain_car,
    MountainCarContinuous: render_mountain_car,
    Pendulum: render_pendulum,
    Catch: render_catch,
}


#: Frames per second of a video of each env, gymnasium's ``metadata["render_fps"]`` (Catch: 10).
_FPS: dict[type, int] = {CartPole: 50, Acrobot: 15, MountainCar: 30, MountainCarContinuous: 30, Pendulum: 30, Catch: 10}


def render_fps(env: Any, default: int = 30) -> int:
    """The frame rate at which ``env``'s episodes play in real time (gymnasium's
    ``render_fps``), ``default`` for an env without one.

    Example:
        >>> from functional_rl.envs import make
        >>> render_fps(make("CartPoleNoVelocity-v1")), render_fps(make("MemoryCue-v0"))
        (50, 30)
    """
    for cls in type(env).__mro__:
        if cls in _FPS:
            return _FPS[cls]
    return default


def register_renderer(env_class: type, fn: Renderer, fps: int | None = None) -> None:
    """Use ``fn(env, state, params) -> uint8 [B, H, W, 3]`` for ``env_class`` and its subclasses
    (videos of it play at ``fps`` frames per second if given).

    Example:
        >>> from functional_rl.envs import MemoryCue
        >>> register_renderer(MemoryCue, lambda env, s, p: torch.zeros(s.time.shape[0], 2, 2, 3, dtype=torch.uint8))
        >>> has_renderer(MemoryCue())
        True
        >>> _ = _RENDERERS.pop(MemoryCue)
    """
    _RENDERERS[env_class] = fn
    if fps is not None:
        _FPS[env_class] = int(fps)


def renderer_for(env: Any) -> Renderer:
    """The renderer of ``env``'s class, or of its nearest base class that has one.

    Raises:
        NoRendererError: no class in ``type(env).__mro__`` has a renderer.

    Example:
        >>> from functional_rl.envs import make
        >>> renderer_for(make("CartPoleNoVelocity-v1")) is render_cartpole
        True
    """
    for cls in type(env).__mro__:
        if cls in _RENDERERS:
            return _RENDERERS[cls]
    names = ", ".join(sorted(c.__name__ for c in _RENDERERS))
    raise NoRendererError(f"{type(env).__name__} has no renderer; envs with one: {names} (and their subclasses); "
                          "register one with functional_rl.envs.render.register_renderer(EnvClass, fn)")


def has_renderer(env: Any) -> bool:
    """Whether :func:`render` can draw ``env``'s states.

    Example:
        >>> from functional_rl.envs import make
        >>> has_renderer(make("Pendulum-v1")), has_renderer(make("MemoryCue-v0"))
        (True, False)
    """
    return any(cls in _RENDERERS for cls in type(env).__mro__)


def render(env: Any, state: Any, params: Any) -> torch.Tensor:
    """Frames of a batch of env states: uint8 ``[B, H, W, 3]`` (RGB, row 0 at the top).

    Args:
        env: a pure env with a renderer (:func:`renderer_for`).
        state: its state, leaves ``[B, ...]``.
        params: its parameters.

    Raises:
        NoRendererError: the env has no renderer.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> env = make("Catch-v0")
        >>> _, s = env.reset(jr.key(0), env.default_params(), 3)
        >>> render(env, s, env.default_params()).shape
        torch.Size([3, 240, 120, 3])
    """
    return renderer_for(env)(env, state, params)
