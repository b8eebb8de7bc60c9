"""``scalefed study run|resume|status|best|report`` and ``scalefed serve``: the optimizer's CLI.

``serve`` reads its token from ``--token``, ``--token-file`` or $SCALEFED_OPTIMIZER_TOKEN,
and what its clients' studies may use from ``--config`` and the policy flags
(``optimizer.service.policy``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimizer.cli.verify import register_actions
from optimizer.study.backends import BACKEND_KINDS, SyntheticBackend
from optimizer.study.endpoints import SPEC_ACCEPTED, TrainerEndpoint
from optimizer.study.studyfile import StudyConfig, load_study_file
from trainer.errors import ConfigError
from trainer.service.rpc import OPTIMIZER_TOKEN_ENV, add_token_args


def _load(args: argparse.Namespace) -> StudyConfig:
    cfg = load_study_file(args.study_file)
    if getattr(args, "storage", None):
        if not args.storage.startswith(("sqlite:///", "postgresql")):
            raise ConfigError("--storage", f"unsupported URL {args.storage!r}",
                              accepted="sqlite:///PATH or postgresql://...")
        cfg = dataclasses.replace(cfg, storage=args.storage)
    return cfg


def _sigterm_to_interrupt() -> None:
    """Make ``kill`` (SIGTERM) as graceful as Ctrl-C: trials are cancelled and re-queued."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _run(args: argparse.Namespace, *, resume: bool) -> int:
    from tqdm import tqdm

    from optimizer.study.manager import backends_for, run_study, study_status
    from optimizer.study.report import answer_table
    from optimizer.study.runner import StudyRunner

    cfg = _load(args)
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError("--n-trials", f"must be >= 1, got {args.n_trials}", accepted=">= 1")
    synthetic = SyntheticBackend(delay_s=args.synthetic_delay) if args.backend == "synthetic" \
        else None
    endpoints = [TrainerEndpoint.parse(spec) for spec in args.trainer_endpoint] or None
    backends = backends_for(cfg, args.backend, synthetic=synthetic, endpoints=endpoints)
    bars: list[Any] = []

    def on_start(runner: StudyRunner) -> None:
        for bar in bars:
            bar.close()
        done = sum(1 for t in runner.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
        bars.append(tqdm(total=runner.n_trials, initial=min(done, runner.n_trials),
                         desc=runner.dist.label, unit="trial", disable=args.no_progress,
                         file=sys.stderr))

    def on_complete(trial: Any) -> None:
        if bars:
            bars[-1].update(1)
            bars[-1].set_postfix(last=f"{trial.value:.3f}")
        # One line per trial: on CPU a trial takes minutes, and a bar alone hides what it found.
        params = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(trial.params.items()))
        stderr = trial.user_attrs.get("stderr")
        seconds = float(trial.user_attrs.get("result", {}).get("seconds", float("nan")))
        tqdm.write(f"trial {trial.number}: {params}  pass@k={trial.value:.3f}"
                   + (f" ± {stderr:.3f}" if isinstance(stderr, float) else "")
                   + f"  ({seconds:.0f}s)", file=sys.stderr)

    _sigterm_to_interrupt()
    try:
        outcomes = run_study(cfg, backends, resume=resume, labels=args.distribution,
                             n_trials=args.n_trials, on_start=on_start, on_complete=on_complete)
    finally:
        for bar in bars:
            bar.close()
    for o in outcomes:
        print(f"{o.study_name}: {o.n_complete} complete, {o.n_failed} failed, ended by {o.ended}")
    print()
    print(answer_table(study_status(cfg), epsilon=cfg.stop.epsilon))
    return 0


def _status(args: argparse.Namespace) -> int:
    from optimizer.study.manager import study_status

    cfg = _load(args)
    status = study_status(cfg, with_answer=False)
    print(f"study {status.name}  storage {status.storage}")
    for d in status.distributions:
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(d.states.items())) or "no trials"
        extra = f"  stopped: {d.stopped}" if d.stopped else ""
        shown = d.study_name if d.exists else f"{d.study_name} (not started)"
        print(f"  {shown}: {states} (budget {d.n_trials}){extra}")
    return 0


def _best(args: argparse.Namespace) -> int:
    from optimizer.study.manager import distribution_status, study_status
    from optimizer.study.report import answer_table

    cfg = _load(args)
    if not args.json:
        status = study_status(cfg)
        if args.distribution:  # listed or never run (predicted by the shared surrogate)
            status = dataclasses.replace(status, distributions=tuple(
                distribution_status(cfg, label) for label in args.distribution))
        print(answer_table(status, epsilon=cfg.stop.epsilon), end="")
        return 0
    labels = args.distribution or [d.label for d in cfg.distributions]
    out = {label: _jsonable(distribution_status(cfg, label)) for label in labels}
    print(json.dumps(out, indent=2, default=str))
    return 0


def _jsonable(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) \
        else obj


def _curve(args: argparse.Namespace) -> int:
    from optimizer.study.report import curve_table, plot_curve
    from optimizer.study.shared import curve, family_points
    from optimizer.study.storage import open_storage

    cfg = _load(args)
    storage = open_storage(cfg.storage_url)
    points = curve(cfg, storage, points=args.points)
    if not points:
        print(f"no curve yet: {cfg.name} needs 3 complete trials that carry a heterogeneity")
        return 1
    print(curve_table(points), end="")
    out = Path(args.out or f"runs/{cfg.name}-curve.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {plot_curve(cfg, points, family_points(cfg, storage), out)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from optimizer.study.report import write_report

    cfg = _load(args)
    page = write_report(cfg, args.out or f"runs/{cfg.name}-report")
    print(f"wrote {page} (and answer.md, PNGs beside it)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", help="study definition (TOML), e.g. studies/quickstart.toml")
    p.add_argument("--storage", metavar="URL",
                   help="override the study file's storage (sqlite:///PATH or postgresql://...)")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKEND_KINDS, default="inprocess",
                   help="where trials run: inprocess (this process, the study's trainer.function),"
                        " grpc (the study's trainer.endpoints), synthetic (known-optimum "
                        "stand-in, seconds per study) [default: inprocess]")
    p.add_argument("--distribution", action="append", metavar="LABEL",
                   help="only this distribution (iid, dirichlet-0.1, ...); repeatable")
    p.add_argument("--n-trials", type=int, metavar="N", help="override the per-distribution budget")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--synthetic-delay", type=float, default=0.0, metavar="S",
                   help="synthetic backend: seconds per simulated round (for crash drills)")
    p.add_argument("--trainer-endpoint", action="append", default=[], metavar="SPEC",
                   help=f"--backend grpc: use this worker instead of the study's endpoints: "
                        f"{SPEC_ACCEPTED}; repeatable")


def _token(args: argparse.Namespace) -> str | None:
    from trainer.service.rpc import read_token

    return read_token(args, OPTIMIZER_TOKEN_ENV)


def _policy(args: argparse.Namespace) -> Any:
    """The operator's policy: the --config file (if any), then the flags."""
    from optimizer.service.policy import OperatorPolicy, policy_with
    from optimizer.service.policyfile import load_policy

    base = load_policy(args.config) if args.config else OperatorPolicy()
    policy = policy_with(
        base, endpoints=[TrainerEndpoint.parse(spec) for spec in args.trainer_endpoint],
        trial_functions=args.allow_trial_fn, storage_root=args.storage_root,
        storage_urls=args.storage, study_dirs=args.study_dir)
    policy.check()
    return policy


def _serve(args: argparse.Namespace) -> int:
    from optimizer.service.server import OptimizerServerConfig, serve

    policy = _policy(args)
    config = OptimizerServerConfig(
        host=args.host, port=args.port, token=_token(args), tls_cert=args.tls_cert,
        tls_key=args.tls_key, backend=args.backend, synthetic_delay_s=args.synthetic_delay,
        policy=policy)
    studies = [load_study_file(path) for path in args.study]
    for path, cfg in zip(args.study, studies, strict=True):
        policy.admit_storage(cfg, field=f"--study {path}: storage")  # fail now, naming the file
    return serve(config, studies=studies)


def _register_policy(p: argparse.ArgumentParser) -> None:
    """What a client's study may use: it picks among these and cannot widen them."""
    g = p.add_argument_group(
        "what studies may use (a StartStudy/ResumeStudy client picks among these)")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help="server config file (TOML) with the settings below; flags add to it")
    g.add_argument("--trainer-endpoint", action="append", default=[], metavar="SPEC",
                   help="a trainer worker studies may use and that gets the trainer token: "
                        f"{SPEC_ACCEPTED} (ca= implies TLS; token default "
                        "$SCALEFED_TRAINER_TOKEN); repeatable. None: --backend grpc runs nothing")
    g.add_argument("--allow-trial-fn", action="append", default=[], metavar="MODULE:FN",
                   help="a trial function --backend inprocess may run; repeatable "
                        "[default: trainer.trial:run_trial]")
    g.add_argument("--storage-root", type=Path, metavar="DIR",
                   help="SQLite storages must lie under DIR; a study without storage gets "
                        "DIR/NAME.db [default: runs]")
    g.add_argument("--storage", action="append", default=[], metavar="URL",
                   help="a further storage URL allowed as written (e.g. postgresql://...); the "
                        "first is the default for studies without storage; repeatable")
    g.add_argument("--study-dir", action="append", default=[], type=Path, metavar="DIR",
                   help="a directory StartStudy/ResumeStudy may read study_file from; "
                        "repeatable [default: studies]")


def _register_serve(subparsers: Any) -> None:
    text = ("serve the OptimizerService over gRPC (StartStudy, ResumeStudy, StopStudy, "
            "ListStudies, GetStudy, GetBest) until SIGTERM")
    p = subparsers.add_parser("serve", help=text, description=text)
    p.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    add_token_args(p, OPTIMIZER_TOKEN_ENV)
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables TLS)")
    p.add_argument("--tls-key", type=Path, help="PEM private key")
    p.add_argument("--backend", choices=BACKEND_KINDS, default="grpc",
                   help="where studies run their trials: grpc (the --trainer-endpoint workers "
                        "a study names, or all), inprocess (an --allow-trial-fn function in "
                        "this process), synthetic (known-optimum stand-in) [default: grpc]")
    p.add_argument("--study", action="append", default=[], metavar="FILE",
                   help="register a stored study so GetBest/GetStudy/ResumeStudy know it "
                        "(repeatable)")
    p.add_argument("--synthetic-delay", type=float, default=0.0, metavar="S",
                   help="synthetic backend: seconds per simulated round")
    _register_policy(p)
    p.set_defaults(func=_serve)


def register(subparsers: Any) -> None:
    """Add ``scalefed study ...`` and ``scalefed serve`` to the top-level parser."""
    _register_serve(subparsers)
    study = subparsers.add_parser(
        "study", help="run, resume and inspect optimisation studies",
        description="Optuna studies (GP surrogate, one per data distribution) over the server "
                    "scaling factor and participation rate, scored by HumanEval pass@10.")
    sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int], bool]] = [
        ("run", "start a study (or join it if it exists with the same definition)",
         lambda a: _run(a, resume=False), True),
        ("resume", ("continue a stored study after Ctrl-C, kill -9 or a crash: expired "
                    "trials are failed and re-queued, nothing is lost or run twice"),
         lambda a: _run(a, resume=True), True),
        ("status", "trial counts per distribution", _status, False),
        ("best", ("the answer table: predicted optimum with its credible interval and the "
                  "observed best"), _best, False),
        ("report", "write PNG plots, an HTML page and answer.md", _report, False),
        ("curve", ("s*(h) and p*(h) with their credible regions from the surrogate shared "
                   "across distributions (h: heterogeneity of the split), and a PNG"),
         _curve, False),
    ]
    for name, text, func, runs in commands:
        p = sub.add_parser(name, help=text, description=text)
        _common(p)
        if runs:
            _run_options(p)
        if name == "best":
            p.add_argument("--json", action="store_true", help="machine-readable output")
            p.add_argument("--distribution", action="append", metavar="LABEL",
                           help="only this distribution; a label never run (e.g. "
                                "dirichlet-0.3) is predicted at the heterogeneity of its "
                                "split; repeatable")
        if name == "report":
            p.add_argument("--out", metavar="DIR", help="output folder [runs/<name>-report]")
        if name == "curve":
            p.add_argument("--out", metavar="PNG", help="the plot [runs/<name>-curve.png]")
            p.add_argument("--points", type=int, default=11, metavar="N",
                           help="values of h evenly over [0, 1], besides the studied ones")
        p.set_defaults(func=func)
    register_actions(sub, common=_common, load=_load)
