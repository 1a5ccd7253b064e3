"""Videos of greedy episodes: the renderers, the frame convention (``sum_i (T_i + 1)`` frames,
the first one the reset state pixel for pixel), the gymnasium path and the CLI's errors."""

import sys

import numpy as np
import pytest
import torch

import functional_rl.kernel.random as jr
from functional_rl.envs import make
from functional_rl.envs.render import NoRendererError, render, renderer_for
from functional_rl.kernel.normalize import obs_norm_init, obs_norm_update
from functional_rl.kernel.policies import make_mlp_policy
from functional_rl.kernel.rollout import policy_input
from functional_rl.shell.callbacks import evaluate
from functional_rl.shell.cli import main
from functional_rl.shell.video import VideoError, greedy_states, record_video, write_video

iio = pytest.importorskip("imageio.v3")
pytest.importorskip("imageio_ffmpeg")

RENDERED = ["CartPole-v1", "CartPoleNoVelocity-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
            "Pendulum-v1", "Catch-v0"]


def _random_actions(env, key, n):
    space = env.action_space
    if hasattr(space, "n"):
        return jr.randint(key, (n,), 0, space.n)
    return jr.uniform(key, (n, *space.shape)) * 4 - 2


@pytest.mark.parametrize("env_id", RENDERED)
def test_each_renderer_draws_different_states_differently_and_equal_states_equally(env_id):
    env = make(env_id)
    params = env.default_params()
    _, state = env.reset(jr.key(1), params, 4)
    for t in range(6):  # move the envs apart
        state = env.step(jr.key(10 + t), state, _random_actions(env, jr.key(20 + t), 4), params).state
    frames = render(env, state, params)
    assert frames.dtype == torch.uint8 and frames.dim() == 4 and frames.shape[0] == 4 and frames.shape[-1] == 3
    assert frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0  # H.264 needs even sides
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(frames[i], frames[j]), f"{env_id}: envs {i} and {j} drew the same frame"
    twice = render(env, state, params)
    assert torch.equal(frames, twice)
    assert len({tuple(c) for c in frames[0].reshape(-1, 3).tolist()}) >= 2  # something is drawn on the background


def test_an_env_without_renderer_names_the_ones_that_have_one(tmp_path):
    env = make("MemoryCue-v0")
    with pytest.raises(NoRendererError, match="CartPole.*Pendulum"):
        renderer_for(env)
    policy = make_mlp_policy(env.observation_space, env.action_space)
    with pytest.raises(VideoError, match="MemoryCue has no renderer"):
        record_video(tmp_path / "m.gif", jr.key(0), policy.init(jr.key(0)), env, policy)
    assert not (tmp_path / "m.gif").exists()


@pytest.fixture(scope="module")
def cartpole():
    """A random CartPole policy (short episodes) seen through a non-trivial frozen normaliser."""
    env = make("CartPole-v1")
    policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(16,))
    norm = obs_norm_update(obs_norm_init((4,)), torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.1)
    return env, policy, policy.init(jr.key(3)), (lambda obs: policy_input(obs, norm))


def test_the_episodes_are_evaluate_s(cartpole):
    env, policy, params, obs_fn = cartpole
    states, returns, lengths = greedy_states(jr.key(5), params, env, policy, episodes=4, obs_fn=obs_fn)
    r, n = evaluate(jr.key(5), params, env, policy, episodes=4, obs_fn=obs_fn)
    assert torch.equal(returns, r) and torch.equal(lengths, n)
    assert len(states) == int(lengths.max()) + 1
    # the state after the last step is the terminal one (no auto-reset)
    last = states[int(lengths[0])]
    p = env.default_params()
    assert bool(((last.x.abs() > p.x_threshold) | (last.theta.abs() > p.theta_threshold))[0])


def test_gif_has_every_frame_and_the_first_is_the_reset_state_pixel_for_pixel(cartpole, tmp_path):
    env, policy, params, obs_fn = cartpole
    key, episodes = jr.key(11), 3
    result = record_video(tmp_path / "v.gif", key, params, env, policy, episodes=episodes, obs_fn=obs_fn, fps=50)
    assert result.frames == int((result.lengths + 1).sum())  # T_i + 1 frames per episode
    _, reset_state = env.reset(jr.split(key, 2)[0], env.default_params(), episodes)  # evaluate's reset key
    expected_first = render(env, reset_state, env.default_params())[0].numpy()
    decoded = iio.imread(tmp_path / "v.gif", index=None)[..., :3]
    assert np.array_equal(decoded[0], expected_first)
    states, _, lengths = greedy_states(key, params, env, policy, episodes=episodes, obs_fn=obs_fn)
    terminal = render(env, states[int(lengths[-1])], env.default_params())[-1].numpy()
    assert np.array_equal(decoded[-1], terminal)  # the video ends on the last episode's terminal state
    # GIF merges a frame identical to the previous one into it (adding the durations), never more
    assert 1 < len(decoded) <= result.frames


def test_mp4_has_exactly_sum_of_lengths_plus_one_frames(cartpole, tmp_path):
    import imageio_ffmpeg

    env, policy, params, obs_fn = cartpole
    result = record_video(tmp_path / "v.mp4", jr.key(12), params, env, policy, episodes=2, obs_fn=obs_fn)
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "v.mp4"))  # decodes the stream
    assert result.frames == int((result.lengths + 1).sum()) == frames
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "v.mp4"))
    assert next(reader)["size"] == (600, 400)  # (width, height)
    reader.close()


def test_a_gymnasium_env_is_filmed_through_its_rgb_array_render_terminal_frame_included(tmp_path):
    gym = pytest.importorskip("gymnasium")
    from functional_rl.envs import from_gymnasium

    class Counter(gym.Env):
        """Ends after 3 steps; its picture is filled with 40 x the step count."""

        metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

        def __init__(self, render_mode=None):
            self.render_mode = render_mode
            self.observation_space = gym.spaces.Box(0.0, 3.0, (1,), np.float32)
            self.action_space = gym.spaces.Discrete(2)
            self.t = 0

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.array([0.0], np.float32), {}

        def step(self, action):
            self.t += 1
            return np.array([self.t], np.float32), 1.0, self.t == 3, False, {}

        def render(self):
            return np.full((6, 8, 3), 40 * self.t, np.uint8)

    env = from_gymnasium(lambda: Counter(render_mode="rgb_array"), num_envs=2)
    policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(4,))
    result = record_video(tmp_path / "g.gif", jr.key(0), policy.init(jr.key(0)), env, policy, episodes=2)
    assert result.lengths.tolist() == [3, 3] and result.frames == 8
    decoded = iio.imread(tmp_path / "g.gif", index=None)[..., 0]
    assert [int(f[0, 0]) for f in decoded] == [0, 40, 80, 120, 0, 40, 80, 120]
    assert type(env.vec_env.envs[0]).__name__ == "Counter"  # the recorders were taken off again
    plain = from_gymnasium(lambda: Counter(), num_envs=1)
    with pytest.raises(VideoError, match="render_mode='rgb_array'"):
        record_video(tmp_path / "p.gif", jr.key(0), policy.init(jr.key(0)), plain, policy, episodes=1)


def test_write_video_refuses_bad_input(tmp_path):
    with pytest.raises(VideoError, match=r"\.mp4 or \.gif"):
        write_video(tmp_path / "x.avi", [np.zeros((2, 2, 3), np.uint8)], 10)
    with pytest.raises(VideoError, match="uint8"):
        write_video(tmp_path / "x.gif", [np.zeros((2, 2, 3), np.float32)], 10)
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "y.gif", [], 10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("video") / "run"
    assert main(["train", "CartPole-v1", "--no-compile", "--total-timesteps", "256", "--set", "num_envs=4",
                 "--set", "num_steps=32", "--set", "num_minibatches=2", "--set", "normalize_obs=true",
                 "--run-dir", str(d), "--progress", "none"]) == 0
    return d


def test_cli_eval_video_writes_the_episodes_eval_scores(run_dir, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1", "--seed", "3"]) == 0
    scored = capsys.readouterr().out
    out = tmp_path / "run.mp4"
    assert main(["eval", str(run_dir), "--video", str(out), "--seed", "3", "--fps", "25"]) == 0  # 1 episode by default
    line = capsys.readouterr().out
    assert out.stat().st_size > 0 and "frames" in line
    returns = [float(x) for x in line.split("returns [")[1].split("]")[0].split(",")]
    assert len(returns) == 1 and f"mean return {returns[0]:.2f}" in scored


@pytest.mark.parametrize("args, message", [
    (["--video", "{tmp}/x.avi"], "--video: the video file must end in .mp4 or .gif"),
    (["--video", "{tmp}/x.gif", "--fps", "0"], "--fps must lie in (0, 1000]"),
    (["--video", "{tmp}/x.gif", "--episodes", "0"], "--episodes must lie in [1,"),
])
def test_cli_video_errors_exit_2_with_one_line(run_dir, tmp_path, capsys, args, message):
    assert main(["eval", str(run_dir), *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_cli_video_without_the_extra_says_what_to_install(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    assert main(["eval", str(run_dir), "--video", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "functional-rl[video]"' in err and "imageio_ffmpeg" in err and "\n" not in err
