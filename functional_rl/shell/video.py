"""Watch the agent: videos of greedy episodes, as MP4 or GIF (``functional-rl eval RUN_DIR --video``).

::

    functional-rl eval RUN_DIR --video out.mp4 [--episodes N] [--fps F] [--seed S]
    functional-rl eval RUN_DIR --video out.gif

The episodes are the greedy ones ``functional-rl eval`` scores (the same key, so the same
episodes and returns): ``N`` envs run in parallel until each has ended its first episode,
actions ``policy.distribution.mode`` (among the legal actions under a mask, a Box mean
clipped to the bounds), observations through the run's frozen normaliser. The video shows the
episodes one after another; episode ``i`` of length ``T_i`` gives ``T_i + 1`` frames (the
reset state, then the state after every step, the last one the terminal or truncated state),
so a video of ``N`` episodes has ``sum_i (T_i + 1)`` frames. A pure env's frames are drawn
from its states by :mod:`functional_rl.envs.render`; a gymnasium env's come from its own
``render()`` (build it with ``render_mode="rgb_array"``).

MP4 is H.264 (``imageio-ffmpeg``; lossy, small); GIF is lossless for these few-colour
frames, but large and held in memory until written, so keep it to short clips. Install the
writers with ``pip install "functional-rl[video]"``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.shell.callbacks import greedy_action

__all__ = ["VideoError", "VideoResult", "video_format", "write_video", "record_video", "greedy_states"]

FORMATS = (".mp4", ".gif")
#: Frames rendered at once (a pure env): bounds the memory of the drawing masks.
RENDER_CHUNK = 16


class VideoError(ValueError):
    """A video cannot be written as asked: a bad file extension, a missing writer package,
    an env that cannot be drawn. The message says what to change or install.

    Example:
        >>> video_format("out.avi")
        Traceback (most recent call last):
            ...
        functional_rl.shell.video.VideoError: the video file must end in .mp4 or .gif, got 'out.avi'
    """


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """What :func:`record_video` wrote: the ``path``, the number of ``frames``, and the
    episodes' ``returns`` float32 ``[N]`` and ``lengths`` int64 ``[N]`` (steps; episode ``i``
    is ``lengths[i] + 1`` frames).

    Example:
        >>> r = VideoResult(Path("a.gif"), 5, torch.tensor([3.0]), torch.tensor([4]))
        >>> r.frames == int((r.lengths + 1).sum())
        True
    """

    path: Path
    frames: int
    returns: torch.Tensor
    lengths: torch.Tensor


def video_format(path: str | Path) -> str:
    """``"mp4"`` or ``"gif"`` from the file's extension (case-insensitive).

    Raises:
        VideoError: another extension.

    Example:
        >>> video_format("runs/cartpole.MP4"), video_format("a.gif")
        ('mp4', 'gif')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise VideoError(f"the video file must end in .mp4 or .gif, got {str(path)!r}")
    return suffix[1:]


def _writer_modules(fmt: str) -> Any:
    """``imageio`` (and for MP4 a check that ``imageio_ffmpeg`` is there), or a VideoError
    saying what to install."""
    try:
        import imageio
        if fmt == "mp4":
            import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio's FFMPEG plugin uses)
    except ImportError as e:
        raise VideoError(f"writing a .{fmt} video needs imageio{' and imageio-ffmpeg' if fmt == 'mp4' else ''} "
                         f"({e.name} is missing): pip install \"functional-rl[video]\"") from e
    return imageio


def _even(frame: np.ndarray) -> np.ndarray:
    """``frame`` padded by repeating its last row/column to even sides (H.264's 4:2:0 needs them)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | Path, frames: Iterable[Any], fps: float) -> int:
    """Write RGB ``frames`` (each uint8 ``[H, W, 3]``, numpy or torch; all of one size) to
    ``path`` (.mp4 or .gif) at ``fps`` frames per second; return how many were written.

    MP4 frames are streamed to ffmpeg (H.264, ``yuv420p``, odd sides padded by one pixel);
    a GIF is assembled in memory. A GIF player shows a frame identical to the one before as
    a longer display of that one (Pillow merges them and adds their durations).

    Raises:
        VideoError: bad extension, no frames, a frame that is not ``[H, W, 3]`` uint8, or a
            missing package.

    Example:
        >>> import tempfile, imageio.v3 as iio
        >>> frames = [np.full((4, 6, 3), 40 * i, dtype=np.uint8) for i in range(3)]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     n = write_video(f"{d}/x.gif", frames, fps=10)
        ...     back = iio.imread(f"{d}/x.gif", index=None)
        >>> n, back.shape[0], bool((back[2, ..., :3] == 80).all())
        (3, 3, True)
    """
    fmt = video_format(path)
    if not (fps > 0):
        raise VideoError(f"fps must be > 0, got {fps}")
    imageio = _writer_modules(fmt)
    count, shape = 0, None
    if fmt == "mp4":
        writer = imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=1, quality=8)
    else:
        import imageio.v3 as iio
        writer = iio.imopen(str(path), "w", plugin="pillow")
    try:
        for frame in frames:
            a = frame.cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3 or (shape is not None and a.shape != shape):
                raise VideoError(f"frame {count} must be uint8 [H, W, 3] like the first ({shape}), got {a.dtype} {a.shape}")
            shape = a.shape
            if fmt == "mp4":
                writer.append_data(_even(a))
            else:
                writer.write(a, duration=1000.0 / fps, loop=0, is_batch=False)
            count += 1
    finally:
        writer.close()
    if count == 0:
        Path(path).unlink(missing_ok=True)
        raise VideoError("no frames to write")
    return count


# ---------------------------------------------------------------------------- greedy episodes
def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape + (1,) * (like.dim() - mask.dim()))


def greedy_states(
    key: torch.Tensor, params: Any, env: Any, policy: Any, *, episodes: int = 1, env_params: Any = None,
    max_steps: int = 100_000, obs_fn: Any = None, last_action_size: int = 0,
) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
    """The env states of ``episodes`` greedy episodes of a pure env, run in parallel.

    The same episodes as :func:`~functional_rl.shell.callbacks.evaluate` with the same
    arguments (the same keys, actions and returns), but each env stops at the end of its
    first episode instead of auto-resetting, so the terminal state is kept: ``states[t]``
    is the state after ``t`` steps (leaves ``[N, ...]``), env ``i``'s frozen from step
    ``lengths[i]`` on.

    Returns:
        ``(states, returns float32 [N], lengths int64 [N])`` with ``len(states) ==
        max(lengths) + 1``.

    Raises:
        VideoError: ``env`` is not a pure :class:`~functional_rl.envs.base.Environment`.

    Example (the returns are ``evaluate``'s):
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> from functional_rl.shell.callbacks import evaluate
        >>> env = make("CartPole-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space)
        >>> params = policy.init(jr.key(0))
        >>> states, returns, lengths = greedy_states(jr.key(7), params, env, policy, episodes=3)
        >>> len(states) == int(lengths.max()) + 1, bool(torch.equal(returns, evaluate(jr.key(7), params, env, policy, episodes=3)[0]))
        (True, True)
    """
    from functional_rl.envs.base import Environment
    from functional_rl.kernel.rollout import encode_action, policy_input
    from functional_rl.kernel.struct import map_fields

    if not isinstance(env, Environment):
        raise VideoError(f"{type(env).__name__} is not a pure Environment: record a gymnasium env with record_video, "
                         "which uses its render_mode='rgb_array'")
    if episodes < 1:
        raise VideoError(f"episodes must be >= 1, got {episodes}")
    env_params = env.default_params() if env_params is None else env_params
    k_reset = jr.split(key, 2)[0]  # evaluate's reset key
    with torch.no_grad():
        obs, env_state = env.reset(k_reset, env_params, episodes)
        returns = torch.zeros(episodes, dtype=torch.float32, device=obs.device)
        lengths = torch.zeros(episodes, dtype=torch.int64, device=obs.device)
        done = torch.zeros(episodes, dtype=torch.bool, device=obs.device)
        last_action = torch.zeros(episodes, last_action_size, device=obs.device)
        carry = policy.initial_carry(episodes).to(obs.device) if getattr(policy, "initial_carry", None) is not None else None
        states = [env_state]
        for _ in range(max_steps):
            x = policy_input(obs if obs_fn is None else obs_fn(obs), last_action=last_action if last_action_size else None)
            action, carry = greedy_action(policy, params, env, env_state, env_params, x, carry)
            env._check_action(env_state, action)
            nxt, reward, terminated = env.step_env(env_state, action, env_params)
            truncated = env.truncation(nxt, env_params)
            alive = ~done
            returns = returns + torch.where(alive, reward.to(returns.dtype), torch.zeros_like(returns))
            lengths = lengths + alive.to(torch.int64)
            if last_action_size:
                last_action = encode_action(action, last_action_size, getattr(env.action_space, "nvec", None))
            done = done | terminated | truncated
            env_state = map_fields(lambda n, o: torch.where(_rows(alive, n), n, o), nxt, env_state)
            obs = env.get_obs(env_state, env_params)
            states.append(env_state)
            if bool(done.all()):  # a host sync per step, as in evaluate
                break
    return states, returns, lengths


def _env_row(tree: Any, i: int, batch: int) -> Any:
    """Env ``i``'s parameters: every tensor leaf ``[B, ...]`` indexed at ``i`` (others kept)."""
    def pick(x: Any) -> Any:
        return x[i] if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == batch else x
    return pytree.tree_map(pick, tree)


def _pure_frames(env: Any, states: list[Any], lengths: torch.Tensor, env_params: Any) -> Iterator[torch.Tensor]:
    """Episode after episode, frame after frame: uint8 ``[H, W, 3]`` drawn from the states."""
    from functional_rl.envs.render import render
    from functional_rl.kernel.struct import map_fields

    batch = int(lengths.shape[0])
    for i, length in enumerate(lengths.tolist()):
        params_i = _env_row(env_params, i, batch)
        for t0 in range(0, length + 1, RENDER_CHUNK):
            chunk = states[t0:min(length + 1, t0 + RENDER_CHUNK)]
            stacked = map_fields(lambda *xs: torch.stack([x[i] for x in xs]), *chunk)
            yield from render(env, stacked, params_i)


class _FrameRecorder:
    """Wraps one gymnasium sub-env: renders after its first reset and after each step of its
    first episode (before the vector env's same-step auto-reset replaces the final state)."""

    def __init__(self, env: Any):
        self.env, self.frames, self.resets = env, [], 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kwargs: Any) -> Any:
        out = self.env.reset(**kwargs)
        self.resets += 1
        if self.resets == 1:
            self.frames.append(np.asarray(self.env.render()))
        return out

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        if self.resets == 1:
            self.frames.append(np.asarray(self.env.render()))
        return out


def _gymnasium_episodes(key: torch.Tensor, params: Any, env: Any, policy: Any, episodes: int, max_steps: int,
                        obs_fn: Any, last_action_size: int) -> tuple[list[list[np.ndarray]], torch.Tensor, torch.Tensor]:
    """``evaluate``'s episodes on a gymnasium adapter, with each sub-env's first-episode frames."""
    from functional_rl.shell.callbacks import evaluate

    subs = getattr(env.vec_env, "envs", None)
    if subs is None:
        raise VideoError(f"{env.id}: videos need a SyncVectorEnv (from_gymnasium builds one)")
    if episodes != env.num_envs:
        raise VideoError(f"{env.id}: the gymnasium env runs {env.num_envs} envs, so a video has {env.num_envs} episodes; "
                         f"got episodes={episodes}: build it with from_gymnasium(..., num_envs={episodes})")
    bad = [getattr(s, "render_mode", None) for s in subs if getattr(s, "render_mode", None) != "rgb_array"]
    if bad:
        raise VideoError(f"{env.id}: its render_mode is {bad[0]!r}; build it with "
                         f"from_gymnasium({env.id!r}, num_envs={episodes}, render_mode='rgb_array')")
    recorders = [_FrameRecorder(s) for s in subs]
    env.vec_env.envs = recorders
    try:
        returns, lengths = evaluate(key, params, env, policy, episodes=episodes, max_steps=max_steps, obs_fn=obs_fn,
                                    last_action_size=last_action_size)
    finally:
        env.vec_env.envs = subs
    return [r.frames[: int(n) + 1] for r, n in zip(recorders, lengths.tolist())], returns, lengths


def record_video(
    path: str | Path, key: torch.Tensor, params: Any, env: Any, policy: Any, *, episodes: int = 1,
    fps: float | None = None, env_params: Any = None, max_steps: int = 100_000, obs_fn: Any = None,
    last_action_size: int = 0,
) -> VideoResult:
    """Write a video of ``episodes`` greedy episodes to ``path`` (.mp4 or .gif).

    The episodes are :func:`~functional_rl.shell.callbacks.evaluate`'s for the same
    arguments (:func:`greedy_states`); episode ``i`` gives ``lengths[i] + 1`` frames. A pure
    env is drawn by :func:`functional_rl.envs.render.render`; a gymnasium adapter
    (:func:`~functional_rl.envs.from_gymnasium` with ``render_mode="rgb_array"`` and
    ``num_envs=episodes``) by its sub-envs' ``render()``.

    Args:
        path: the file; its extension picks the format.
        key: int64 ``[2]``, the evaluation key. params, env, policy: as for ``evaluate``.
        episodes: N. fps: frames per second (default: the env's real-time rate,
            :func:`~functional_rl.envs.render.render_fps`).
        obs_fn, last_action_size: how the policy sees observations
            (:func:`~functional_rl.shell.callbacks.state_policy_input`).

    Raises:
        VideoError: bad extension, missing package, an env without a renderer.

    Example:
        >>> import tempfile
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("Catch-v0")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     result = record_video(f"{d}/catch.gif", jr.key(0), policy.init(jr.key(1)), env, policy, episodes=2)
        >>> result.lengths.tolist(), result.frames  # Catch's episodes last 9 steps: 2 x (9 + 1) frames
        ([9, 9], 20)
    """
    from functional_rl.envs.render import NoRendererError, render_fps, renderer_for

    video_format(path)
    if getattr(env, "is_pure", True):
        try:
            renderer_for(env)
        except NoRendererError as e:
            raise VideoError(str(e)) from e
        _writer_modules(video_format(path))
        env_params = env.default_params() if env_params is None else env_params
        states, returns, lengths = greedy_states(key, params, env, policy, episodes=episodes, env_params=env_params,
                                                 max_steps=max_steps, obs_fn=obs_fn, last_action_size=last_action_size)
        frames: Iterable[Any] = _pure_frames(env, states, lengths, env_params)
        rate = fps or render_fps(env)
    else:
        _writer_modules(video_format(path))
        clips, returns, lengths = _gymnasium_episodes(key, params, env, policy, episodes, max_steps, obs_fn, last_action_size)
        frames = (f for clip in clips for f in clip)
        rate = fps or env.vec_env.envs[0].metadata.get("render_fps") or 30
    count = write_video(path, frames, rate)
    return VideoResult(Path(path), count, returns, lengths)


# ---------------------------------------------------------------------------- the CLI
def add_eval_options(ev: argparse.ArgumentParser) -> None:
    """``--video FILE`` and ``--fps F`` for ``functional-rl eval``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_eval_options(p)
        >>> p.parse_args(["--video", "a.gif", "--fps", "12"]).fps
        12.0
    """
    ev.add_argument("--video", metavar="FILE", help="write the greedy episodes (default 1 with --video) as a video: "
                                                    "FILE.mp4 (needs imageio-ffmpeg) or FILE.gif; pip install \"functional-rl[video]\"")
    ev.add_argument("--fps", type=float, default=None, metavar="F",
                    help="frames per second of the video (default: the env's real-time rate, e.g. 50 for CartPole)")


def cmd_eval_video(args: argparse.Namespace) -> int:
    """``functional-rl eval RUN_DIR --video FILE``: write the greedy episodes of the latest
    checkpoint as a video and print their returns (those ``eval`` prints with the same
    ``--episodes`` and ``--seed``)."""
    from functional_rl.shell import cli
    from functional_rl.shell.callbacks import eval_params, state_policy_input
    from functional_rl.shell.validate import short

    episodes = 1 if args.episodes is None else args.episodes
    if not 1 <= episodes <= cli.MAX_EPISODES:
        raise cli.UsageError(f"--episodes must lie in [1, {cli.MAX_EPISODES:,}], got {short(episodes)}")
    if args.fps is not None and not (0 < args.fps <= 1000):
        raise cli.UsageError(f"--fps must lie in (0, 1000], got {short(args.fps)}")
    try:
        _writer_modules(video_format(args.video))
    except VideoError as e:
        raise cli.UsageError(f"--video: {e}") from e
    run_dir = cli._existing_run_dir(args.run_dir)
    config = cli._run_config(run_dir)
    env = cli._make_env(config.env_id)
    try:
        from functional_rl.envs.render import renderer_for
        renderer_for(env)
    except ValueError as e:
        raise cli.UsageError(f"--video: {e}") from e
    path, state, _ = cli._latest_state(run_dir, config)
    torch.set_num_threads(args.threads)
    policy = cli._make_policy(config, env)
    key = jr.fold_in(jr.key(args.seed), int(state.iteration))  # eval's key: the same episodes
    result = record_video(args.video, key, eval_params(state), env, policy, episodes=episodes, fps=args.fps,
                          **state_policy_input(state))
    r = result.returns.to(torch.float64)
    print(f"{config.env_id} {path.name} (step {int(state.agent_step):,}): wrote {args.video}: {episodes} greedy "
          f"episode{'s' if episodes > 1 else ''}, {result.frames} frames; returns {[round(float(x), 2) for x in r]}, "
          f"lengths {result.lengths.tolist()}")
    return 0
