"""JAX anchor for benchmarks/run.py: rejax PPO on gymnax CartPole-v1 (run in a JAX interpreter).

rejax (Liesen et al., https://github.com/keraJLi/rejax) jits the whole training run. Settings
mirror CleanRL's CartPole PPO: 8 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4,
gamma .99, lambda .95, clip .2, ent .01, vf .5, max_grad_norm .5, 64x64 tanh.
Differences we cannot switch off: rejax has no learning-rate annealing (constant 2.5e-4),
and it reports no training-episode returns, so "return" here is rejax's own evaluation of
the current policy (16 episodes every 10 iterations) and time-to-475 is interpolated
within the jitted run (compile end + run time x fraction of steps at the first evaluation
>= 475). Reference: DESIGN.md ("Compilation") measured rejax at ~145k steps/s single seed
on this machine, ~5 s compile.

    <jax python> benchmarks/_rejax_child.py '{"mode": "throughput"|"solve", "t_spawn": <time.time()>, "total": N[, "seeds": S]}'
"""

import json
import resource
import sys
import time

spec = json.loads(sys.argv[1])
t_spawn = spec["t_spawn"]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from rejax import PPO  # noqa: E402
from rejax.evaluate import evaluate  # noqa: E402

jax.config.update("jax_platforms", "cpu")

HP = dict(
    env="CartPole-v1", num_envs=8, num_steps=128, num_epochs=4, num_minibatches=4,
    learning_rate=2.5e-4, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, clip_eps=0.2,
    ent_coef=0.01, vf_coef=0.5, agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)},
    normalize_observations=False,
)
ITER = 8 * 128


def run_once(total: int, eval_every: int | None, seeds: int = 0):
    """AOT-compile and run one training of ``total`` steps (``seeds`` > 0: that many trainings
    vmapped in one jitted call, rejax's own way to train many seeds); returns (compile_s,
    run_s, evals, steps per seed, compile_wall)."""
    if eval_every is None:  # pure training: one trivial "evaluation" at the end
        algo = PPO.create(**HP, total_timesteps=total, eval_freq=total, skip_initial_evaluation=True)
        algo = algo.replace(eval_callback=lambda a, ts, rng: jnp.zeros(()))
    else:
        algo = PPO.create(**HP, total_timesteps=total, eval_freq=eval_every, skip_initial_evaluation=True)
        env, env_params = algo.env, algo.env_params

        def cb(a, ts, rng):
            _, returns = evaluate(a.make_act(ts), rng, env, env_params, 16, env_params.max_steps_in_episode)
            return returns.mean()

        algo = algo.replace(eval_callback=cb)
    rng = jax.random.PRNGKey(1)
    train = algo.train
    if seeds:
        rng, train = jax.random.split(rng, seeds), jax.vmap(algo.train)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(rng).compile()
    t1 = time.perf_counter()
    compile_wall = time.time()
    ts, evals = compiled(rng)
    jax.block_until_ready(ts)
    run_s = time.perf_counter() - t1
    steps = -(-total // (eval_every or total)) * -(-(eval_every or total) // ITER) * ITER
    return t1 - t0, run_s, evals, steps, compile_wall


out = {}
if spec["mode"] == "solve":
    every = 10 * ITER
    compile_s, run_s, evals, steps, compile_wall = run_once(spec["total"], every)
    evals = [float(x) for x in jax.device_get(evals)]
    out["first_s"] = compile_s
    out["final_return"] = evals[-1]
    hit = next((i for i, r in enumerate(evals) if r >= 475), None)
    if hit is not None:
        frac = (hit + 1) * every / steps
        out["t475"] = (compile_wall - t_spawn) + run_s * frac
    out["solve_run_sps_incl_eval"] = steps / run_s
# steady-state training throughput: a separate jitted run without evaluation, timed after compile
total = spec.get("throughput_total", 100 * ITER)
seeds = spec.get("seeds", 0)
compile_s, run_s, _, steps, _ = run_once(total, None, seeds)
out.setdefault("first_s", compile_s)
out["sps"] = max(seeds, 1) * steps / run_s  # aggregate over seeds
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
