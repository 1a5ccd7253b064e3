"""The ``functional-rl`` command line.

    functional-rl train CartPole-v1 [--total-timesteps N] [--seed S] [--set key=value ...]
    functional-rl list-envs

Bad arguments print one line and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise UsageError(f"malformed --set {item!r}: expected key=value, e.g. --set learning_rate=1e-3")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def _load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {path!r} does not exist")
    if p.suffix == ".json":
        return json.loads(p.read_text())
    if p.suffix == ".toml":
        import tomllib

        return tomllib.loads(p.read_text())
    raise UsageError(f"config file {path!r}: use a .json or .toml file")


def _make_config(args: argparse.Namespace):
    from functional_rl.config import PPOConfig

    d: dict[str, Any] = {}
    if getattr(args, "config", None):
        d.update(_load_config_file(args.config))
    d.update(_parse_sets(args.set or []))
    d["env_id"] = args.env_id
    if args.total_timesteps is not None:
        d["total_timesteps"] = args.total_timesteps
    if args.seed is not None:
        d["seed"] = args.seed
    try:
        return PPOConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from functional_rl.callbacks import ConsoleLogger, JSONLWriter
    from functional_rl.envs import UnknownEnvError, make
    from functional_rl.loop import functional_training_loop

    config = _make_config(args)
    try:
        env = make(config.env_id)
    except UnknownEnvError as e:
        raise UsageError(str(e)) from e
    torch.set_num_threads(args.threads)
    callbacks: list[Any] = [ConsoleLogger(every=args.log_every)]
    if args.run_dir:
        run_dir = Path(args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        callbacks.append(JSONLWriter(run_dir / "metrics.jsonl"))
    functional_training_loop(config, env=env, callbacks=callbacks, compile=not args.no_compile)
    return 0


def cmd_list_envs(args: argparse.Namespace) -> int:
    from functional_rl.envs import list_envs, make

    for env_id in list_envs():
        env = make(env_id)
        a = env.action_space
        kind = f"Discrete({a.n})" if hasattr(a, "n") else f"Box{tuple(a.shape)}"
        print(f"{env_id:28s} obs {tuple(env.observation_space.shape)}  actions {kind}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="functional-rl", description="Train PPO agents with functional_rl.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent on a registered environment")
    train.add_argument("env_id", help="environment id, see `functional-rl list-envs`")
    train.add_argument("--config", help="a .toml or .json file of PPOConfig fields")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    train.add_argument("--total-timesteps", type=int, dest="total_timesteps")
    train.add_argument("--seed", type=int)
    train.add_argument("--run-dir", dest="run_dir", help="directory for config.json and metrics.jsonl")
    train.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile)")
    train.add_argument("--log-every", type=int, default=10, help="iterations between progress lines")
    train.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for small nets)")
    train.set_defaults(func=cmd_train)

    envs = sub.add_parser("list-envs", help="list the registered pure environments")
    envs.set_defaults(func=cmd_list_envs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as e:
        print(f"functional-rl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
