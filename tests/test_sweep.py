"""``functional-rl sweep`` (grid x seeds as vmapped agents) and ``plot``'s smoothing, CI bands and wall-time axis."""

import argparse
import json

import numpy as np
import pytest

import functional_rl as frl
from functional_rl.shell import checkpoint
from functional_rl.shell.cli import _make_config, main, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--set", "num_envs=2", "--set", "num_steps=64", "--set", "num_minibatches=2", "--set", "update_epochs=2",
        "--total-timesteps", "1024", "--no-compile", "--log-every", "4"]
LRS = {"learning_rate=0.001": 1e-3, "learning_rate=0.00025": 2.5e-4}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny eager sweep: 2 learning rates x seeds 0-1, 8 iterations of 128 steps per agent."""
    d = tmp_path_factory.mktemp("sweep") / "lr"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["sweep", "CartPole-v1", "--seeds", "0-1", "--set", "learning_rate=1e-3,2.5e-4", *TINY, "--run-dir", str(d)])
    assert rc == 0, out.getvalue()
    return d, out.getvalue()


def _run_dirs(d):
    return {(p, s): d / p / f"seed{s}" for p in LRS for s in (0, 1)}


def test_the_sweep_writes_one_run_dir_per_agent(sweep):
    d, out = sweep
    for (point, seed), run in _run_dirs(d).items():
        assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl"]
        rows = read_metrics(run / "metrics.jsonl")
        assert [r["iteration"] for r in rows] == list(range(1, 9))
        assert [r["agent_step"] for r in rows] == [128 * i for i in range(1, 9)]
        assert {"overview/reward", "losses/value_loss", "env/episodes"} <= set(rows[0])
        times = [r["wall_time"] for r in rows]
        assert times[0] > 0 and all(b > a for a, b in zip(times, times[1:]))
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt_000000001024.frl"]
        assert rows[-1]["optimizer/lr"] < LRS[point]  # annealed from this agent's own learning rate
    assert (d / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    # Progress in agents x steps; learning_rate is a graph input: one train_many call.
    assert "2 points x 2 seeds = 4 agents; graph inputs learning_rate in one train_many call" in out
    assert "training 4 agents x 128 steps/iter (2 envs x 64 steps) x 8 iterations = 4,096 agent-steps" in out
    assert "iteration     8/8  4 agents x     1,024 steps =        4,096 agent-steps" in out


def test_each_config_is_the_agents_exact_config_and_round_trips(sweep):
    d, _ = sweep
    for (point, seed), run in _run_dirs(d).items():
        expected = frl.PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, total_timesteps=1024,
                                 seed=seed, learning_rate=LRS[point])
        assert json.loads((run / "config.json").read_text()) == expected.to_dict()
        # `functional-rl train --config run/config.json` builds the same config.
        args = argparse.Namespace(config=str(run / "config.json"), set=None, env_id="CartPole-v1", total_timesteps=None, seed=None)
        assert _make_config(args) == expected
        state, saved, meta = checkpoint.load(run / "checkpoints" / "ckpt_000000001024.frl")
        assert saved == expected and meta == {"agent_step": 1024, "iteration": 8, "reason": "end", "compile": False}
        assert int(state.agent_step) == 1024 and state.envs.obs.shape == (2, 4)
        assert float(state.learner.hparams.learning_rate) == pytest.approx(LRS[point])


def _final_and_best(run):
    """The summary's definitions, recomputed from the file: episode-weighted mean of the last 10 iterations with episodes."""
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r.get("env/episodes")]
    windows = []
    for t in range(1, len(rows) + 1):
        last = rows[max(0, t - 10):t]
        windows.append(sum(r["overview/reward"] * r["env/episodes"] for r in last) / sum(r["env/episodes"] for r in last))
    return windows[-1], max(windows)


def test_summary_numbers_equal_those_recomputed_from_the_metrics(sweep):
    d, _ = sweep
    summary = json.loads((d / "summary.json").read_text())
    assert summary["env_id"] == "CartPole-v1" and summary["seeds"] == [0, 1] and summary["window"] == 10
    assert [p["name"] for p in summary["points"]] == list(LRS)
    table = (d / "summary.md").read_text()
    for p in summary["points"]:
        assert p["values"] == {"learning_rate": LRS[p["name"]]}
        assert p["runs"] == [f"{p['name']}/seed0", f"{p['name']}/seed1"]
        finals, bests = zip(*(_final_and_best(d / r) for r in p["runs"]))
        for key, values in (("final", finals), ("best", bests)):
            s = p[key]
            assert s["values"] == pytest.approx(list(values), rel=1e-12)
            assert s["n"] == 2 and s["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert s["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            # With two seeds the bootstrap means are x0, (x0 + x1) / 2 or x1: the CI lies between them.
            assert min(values) - 1e-9 <= s["ci_lo"] <= s["mean"] <= s["ci_hi"] <= max(values) + 1e-9
        f = p["final"]
        assert f"| {p['name']} | 2 | {f['mean']:.1f} ± {f['std']:.1f} | [{f['ci_lo']:.1f}, {f['ci_hi']:.1f}] |" in table


def test_eval_and_resume_work_on_a_sweep_run_dir(sweep, capsys):
    d, _ = sweep
    run = d / "learning_rate=0.001" / "seed1"
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    assert "CartPole-v1 ckpt_000000001024.frl (step 1,024): mean return" in capsys.readouterr().out
    copy = d.parent / "resumed"
    import shutil

    shutil.copytree(run, copy)
    assert main(["resume", str(copy), "--total-timesteps", "1280", "--progress", "none"]) == 0
    rows = read_metrics(copy / "metrics.jsonl")
    assert [r["agent_step"] for r in rows][-3:] == [1024, 1152, 1280]
    assert rows[-1]["wall_time"] > rows[-3]["wall_time"]  # the clock continues from the sweep's


def test_a_structural_key_runs_one_train_many_per_value(tmp_path, capsys):
    rc = main(["sweep", "CartPole-v1", "--seeds", "3", "--set", "num_envs=2,4", "--set", "num_steps=32",
               "--set", "num_minibatches=2", "--set", "update_epochs=1", "--total-timesteps", "256", "--no-compile",
               "--run-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "structural num_envs: one train_many per value" in out
    assert "training 1 agents x 64 steps/iter (2 envs x 32 steps)" in out
    assert "training 1 agents x 128 steps/iter (4 envs x 32 steps)" in out
    for n in (2, 4):
        run = tmp_path / "s" / f"num_envs={n}" / "seed3"
        assert json.loads((run / "config.json").read_text())["num_envs"] == n
        state, _, _ = checkpoint.load(checkpoint.latest_checkpoint(run / "checkpoints"))
        assert state.envs.obs.shape == (n, 4)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "5-2"], "the range 5-2 runs backwards"),
    (["--seeds", ""], "an empty part"),
    (["--seeds", "0,x"], "'x' is not a seed or a range"),
    (["--seeds", "0,1,1"], "seed 1 is given twice"),
    (["--seeds", "0-1", "--set", "gama=0.9,0.99"], "--set 'gama': unknown config key"),
    (["--seeds", "0-1", "--set", "gama=0.9"], "unknown PPOConfig key 'gama'"),
    (["--seeds", "0-1", "--set", "learning_rate="], "has an empty value"),
    (["--seeds", "0-1", "--set", "learning_rate=1e-3,,1e-4"], "has an empty value"),
    (["--seeds", "0-1", "--set", "learning_rate=1e-3,0.001"], "lists the value '0.001' twice"),
    (["--seeds", "0-1", "--set", "seed=1,2"], "give the seeds with --seeds"),
    (["--seeds", "0-1", "--set", "prio_alpha=0.5,0.7"], "cannot sweep prio_alpha"),
    (["--seeds", "0-1", "--set", "learning_rate=-1,1e-3"], "learning_rate"),
    (["--seeds", "0-1", "--smooth", "ema:2"], "must lie in [0, 1)"),
    (["--seeds", "0-10000"], "more than 4096 seeds"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    rc = main(["sweep", "CartPole-v1", *args, "--no-compile", "--run-dir", str(tmp_path / "s")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("functional-rl: error: ") and message in lines[0], captured.err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------- plot
def test_plot_smooths_one_run_and_bands_several_on_steps_or_wall_time(sweep, tmp_path, capsys):
    d, _ = sweep
    runs = [str(p) for p in _run_dirs(d).values()]
    for extra, name in ((["--smooth", "window:3"], "one.png"), (["--x", "time"], "time.png"), (["--smooth", "none"], "raw.png")):
        targets = runs[:1] if name == "one.png" else runs
        assert main(["plot", *targets, "--out", str(tmp_path / name), *extra]) == 0
        png = (tmp_path / name).read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 5000
    assert main(["plot", runs[0], "--smooth", "median:3", "--out", str(tmp_path / "x.png")]) == 2
    assert "not understood" in capsys.readouterr().err


def test_plot_draws_the_bootstrap_mean_and_band(sweep, tmp_path, monkeypatch):
    """The multi-run band is the bootstrap CI of the smoothed runs' mean, labelled with the number of runs."""
    import matplotlib.axes

    from functional_rl.shell.curves import align, bootstrap_ci, smooth

    d, _ = sweep
    runs = [d / "learning_rate=0.001" / f"seed{s}" for s in (0, 1)]
    drawn = {}
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", lambda self, x, lo, hi, **kw: drawn.update(band=(x, lo, hi)))
    real_plot = matplotlib.axes.Axes.plot

    def plot(self, *args, **kw):
        if "label" in kw:
            drawn[kw["label"]] = args
        return real_plot(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "band.png")]) == 0
    curves = []
    for run in runs:
        rows = [r for r in read_metrics(run / "metrics.jsonl") if r["overview/reward"] is not None]
        curves.append(([r["agent_step"] for r in rows], smooth([r["overview/reward"] for r in rows], "ema:0.9")))
    grid, ys = align(curves)
    mean, lo, hi = bootstrap_ci(ys, seed=0)
    x, y = drawn["mean of 2 runs, 95% bootstrap CI"]
    np.testing.assert_allclose(x, grid)
    np.testing.assert_allclose(y, mean)
    np.testing.assert_allclose(drawn["band"][1], lo)
    np.testing.assert_allclose(drawn["band"][2], hi)


def test_plot_x_time_needs_wall_time(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"agent_step": 64, "iteration": 1, "overview/reward": 9.0}) + "\n")
    assert main(["plot", str(run), "--x", "time", "--out", str(tmp_path / "t.png")]) == 2
    assert "rows without wall_time" in capsys.readouterr().err
    assert main(["plot", str(run), "--out", str(tmp_path / "s.png")]) == 0
