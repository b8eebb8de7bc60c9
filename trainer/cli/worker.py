"""``scalefed trainer serve|info|cancel``: run a trainer worker, or query one.

The token can come from ``--token``, ``--token-file`` or $SCALEFED_TRAINER_TOKEN
(a file or the environment keeps it out of ``ps`` output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from trainer.contract import DEFAULT_TRIAL_FN
from trainer.service.rpc import TRAINER_TOKEN_ENV, add_token_args, read_token


def register(subparsers: Any) -> None:
    """Add ``trainer`` and its sub-commands to the ``scalefed`` parser."""
    parser = subparsers.add_parser("trainer", help="run or query a gRPC trainer worker")
    sub = parser.add_subparsers(dest="trainer_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="serve trials over gRPC until SIGTERM")
    serve.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--capacity", type=int, default=1, help="trials at once (default 1)")
    serve.add_argument("--devices", type=_devices, default=(), metavar="LIST",
                       help="serve one trial per device: CUDA indices or names, comma-separated "
                            "(e.g. 0,1,2,3 or cuda:0,cpu); the capacity is their number, and a "
                            "trial with device auto takes a free one. Default: no list, each "
                            "trial runs where its device setting says (auto: the first GPU, "
                            "else the CPU)")
    add_token_args(serve, TRAINER_TOKEN_ENV)
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables TLS)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key")
    serve.add_argument("--trial-fn", default=DEFAULT_TRIAL_FN,
                       help="module:function running one trial (default %(default)s)")
    serve.add_argument("--min-scaling-factor", type=float, default=0.1,
                       help="smallest accepted scaling factor (default %(default)s)")
    serve.add_argument("--max-scaling-factor", type=float, default=5.0,
                       help="largest accepted scaling factor (default %(default)s)")
    serve.add_argument("--allow-model", action="append", default=[], metavar="MODEL",
                       help="accept this model name (repeatable; default: the presets "
                            "smollm2-135m and tiny-random)")
    serve.add_argument("--model-root", action="append", default=[], type=Path, metavar="DIR",
                       help="also accept model directories under DIR (repeatable)")
    serve.add_argument("--allow-corpus", action="append", default=[], metavar="SOURCE",
                       help="accept this corpus besides stdlib, e.g. hf:ID (repeatable)")
    serve.add_argument("--corpus-root", action="append", default=[], type=Path, metavar="DIR",
                       help="also accept source trees and data files under DIR (repeatable)")
    serve.add_argument("--model", help="model for requests that name none")
    serve.add_argument("--problems", help="HumanEval subset for requests that name none")
    serve.add_argument("--budget-profile", default="default", help="profile name reported by info")
    serve.add_argument("--worker-name", help="name reported in events (default host:port)")
    serve.add_argument("--grace", type=float, default=30.0,
                       help="seconds running trials may finish on SIGTERM (default %(default)s)")
    serve.set_defaults(func=_serve)

    info = sub.add_parser("info", help="print a worker's GetInfo as JSON")
    _add_client_args(info)
    info.set_defaults(func=_info)

    cancel = sub.add_parser("cancel", help="cancel a running trial")
    _add_client_args(cancel)
    cancel.add_argument("trial_id", help="id of the trial to cancel")
    cancel.set_defaults(func=_cancel)


def _add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="worker address host:port")
    add_token_args(parser, TRAINER_TOKEN_ENV)
    parser.add_argument("--tls-ca", type=Path, help="PEM root certificate(s) (enables TLS)")
    parser.add_argument("--tls", action="store_true", help="TLS with the system root certificates")


def _devices(text: str) -> tuple[str, ...]:
    """``0,1`` -> ``("cuda:0", "cuda:1")``; names (cpu, cuda:N) pass through."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        name = f"cuda:{item}" if item.isdigit() else item
        if name == "cuda":
            name = "cuda:0"
        if name not in ("cpu",) and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a device: use CUDA indices (0,1) or cpu, cuda:N")
        out.append(name)
    return tuple(out)


def _token(args: argparse.Namespace) -> str | None:
    return read_token(args, TRAINER_TOKEN_ENV)


def _serve(args: argparse.Namespace) -> int:
    from trainer.contract import load_trial_function
    from trainer.service.server import ServerConfig, serve
    from trainer.service.worker import WorkerPolicy

    policy = WorkerPolicy(
        min_scaling_factor=args.min_scaling_factor, max_scaling_factor=args.max_scaling_factor,
        allowed_models=tuple(args.allow_model), model_roots=tuple(args.model_root),
        allowed_corpora=tuple(args.allow_corpus), corpus_roots=tuple(args.corpus_root),
        default_model=args.model, default_problems=args.problems)
    from trainer.devices import resolve_device

    for device in args.devices:  # refuse at start a device this host does not have
        resolve_device(device)
    config = ServerConfig(
        host=args.host, port=args.port, capacity=args.capacity, devices=args.devices,
        token=_token(args),
        tls_cert=args.tls_cert, tls_key=args.tls_key, policy=policy,
        budget_profile=args.budget_profile, worker_name=args.worker_name,
        grace_seconds=args.grace)
    return serve(config, trial_fn=load_trial_function(args.trial_fn))


def _client(args: argparse.Namespace) -> Any:
    from trainer.service.client import TrainerClient

    roots = args.tls_ca.read_bytes() if args.tls_ca else None
    return TrainerClient(args.target, token=_token(args), tls=args.tls, root_certificates=roots)


def _info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.get_info()
        data = dataclasses.asdict(info)
        data["health"] = client.health()
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        cancelled = client.cancel_trial(args.trial_id)
    print(f"{args.trial_id}: {'cancel requested' if cancelled else 'not running'}")
    return 0 if cancelled else 1
