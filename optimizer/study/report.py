"""Reports: the answer table (markdown), PNG plots and one HTML page embedding them."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from optimizer.science import answer as answer_mod
from optimizer.science.surrogate import Observation
from optimizer.study.manager import DistributionStatus, StudyStatus, completed_trials, study_status
from optimizer.study.shared import CurvePoint, curve, family_points
from optimizer.study.storage import observations, open_storage
from optimizer.study.studyfile import StudyConfig


def _fmt_params(params: Mapping[str, Any] | None) -> tuple[str, str, str]:
    if not params:
        return "-", "-", ""
    s = f"{params['scaling_factor']:.3g}" if "scaling_factor" in params else "-"
    p = f"{params['participation']:.2f}" if "participation" in params else "-"
    rest = ", ".join(f"{k}={v}" for k, v in params.items()
                     if k not in ("scaling_factor", "participation"))
    return s, p, rest


def answer_table(status: StudyStatus, *, epsilon: float = 0.02) -> str:
    """One markdown row per distribution: the optimum, where it lies (90% region of the
    argmax, and the epsilon-optimal region), the observed best and the verified lift."""
    head = ("| distribution | s* | p* | pass@10 at s*, p* [95% CI] | 90% region of (s*, p*) "
            f"| within {epsilon:g} of the best (P >= 0.9) | observed best (s, p): pass@10 "
            "+/- noise | lift over FedAvg [95% CI] | trials | state |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(_answer_row(d) for d in status.distributions) + "\n"


def _answer_row(d: DistributionStatus) -> str:
    ans = d.answer
    pred = ans.predicted if ans else None
    obs = ans.observed_best if ans else None
    s, p, rest = _fmt_params(pred.params if pred else None)
    if rest:
        p += f" ({rest})"
    ci = "-"
    if pred is not None:
        lo, hi = (pred.level_lower, pred.level_upper) if pred.level_lower is not None \
            else (pred.lower, pred.upper)
        ci = f"{pred.mean:.3f} [{lo:.3f}, {hi:.3f}]"
    regions = [r.describe() if r is not None else "-"
               for r in ((ans.argmax_region, ans.epsilon_region) if ans else (None, None))]
    o = "-"
    if obs is not None:
        os_, op, _ = _fmt_params(obs.params)
        o = f"({os_}, {op}): {obs.value:.3f} +/- {obs.stderr:.3f}"
    lift = d.verification.describe() if d.verification is not None else "not verified"
    state = "stopped by rule" if d.stopped else ("not started" if not d.exists else "")
    if d.predicted and d.heterogeneity is not None:
        state = f"prediction at h = {d.heterogeneity:.3f} (no trials of its own)"
    done = d.states.get("COMPLETE", 0)
    return (f"| {d.label} | {s} | {p} | {ci} | {regions[0]} | {regions[1]} | {o} | {lift} "
            f"| {done}/{d.n_trials} | {state} |")


def _axis_slice(cfg: StudyConfig, pred: answer_mod.Prediction, n: int = 120
                ) -> list[dict[str, Any]]:
    sf = next(p for p in cfg.space if p.name == "scaling_factor")
    assert sf.low is not None and sf.high is not None
    grid = np.exp(np.linspace(math.log(sf.low), math.log(sf.high), n)) if sf.log else \
        np.linspace(sf.low, sf.high, n)
    return [{**pred.params, "scaling_factor": float(x)} for x in grid]


def _save(fig: Any, ax: Any, path: Path, *, xlabel: str, title: str) -> Path:
    """Label a pass@10 plot, write it as PNG and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("pass@10")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_s_axis(ax: Any) -> None:
    """A log x axis labelled with plain numbers at 1-2-5 steps (matplotlib's default minor
    labels overlap on a short log axis)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [t for t in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 4, 5, 10) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_factor(cfg: StudyConfig, d: DistributionStatus, trials: Sequence[FrozenTrial],
                path: Path) -> Path:
    """pass@10 against the scaling factor: trials (coloured by participation) and the GP slice
    through the predicted optimum, mean +/- 1.96 SD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if done and "scaling_factor" in done[0].params:
        xs = [t.params["scaling_factor"] for t in done]
        ys = [float(t.value or 0.0) for t in done]
        cs = [t.params.get("participation", 0.5) for t in done]
        se = [o.stderr for o in observations(done)]  # the study's trial-vs-trial noise
        ax.errorbar(xs, ys, yerr=se, fmt="none", ecolor="0.7", zorder=1)
        sc = ax.scatter(xs, ys, c=cs, cmap="viridis", vmin=0, vmax=1, zorder=2, label="trials")
        fig.colorbar(sc, ax=ax, label="participation")
    pred = d.answer.predicted if d.answer else None
    if pred is not None and any(p.name == "scaling_factor" for p in cfg.space):
        surrogate = answer_mod.Surrogate(cfg.space, observations(done), seed=cfg.seed)
        rows = _axis_slice(cfg, pred)
        mean, sd = surrogate.predict(rows)
        x = [r["scaling_factor"] for r in rows]
        ax.plot(x, mean, color="C3", label=f"GP mean at p={pred.params.get('participation', 0):.2f}")
        ax.fill_between(x, mean - answer_mod.Z95 * sd, mean + answer_mod.Z95 * sd, color="C3",
                        alpha=0.15, label="95% credible band")
        ax.axvline(pred.params["scaling_factor"], color="C3", ls="--", lw=1)
        region = d.answer.argmax_region if d.answer else None
        if region is not None and region.n_points and "scaling_factor" in region.bounds:
            lo_s, hi_s = region.bounds["scaling_factor"]
            ax.axvspan(lo_s, hi_s, color="C1", alpha=0.12, label="90% region of s*")
    _log_s_axis(ax)
    return _save(fig, ax, path, xlabel="server scaling factor s", title=f"{cfg.name} / {d.label}")


def plot_map(cfg: StudyConfig, d: DistributionStatus, trials: Sequence[FrozenTrial],
             path: Path) -> Path:
    """The (s, p) plane: trials coloured by pass@10, the predicted optimum, the 90% region
    of the argmax and the epsilon-optimal region as boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if done:
        sc = ax.scatter([t.params["scaling_factor"] for t in done],
                        [t.params["participation"] for t in done],
                        c=[float(t.value or 0.0) for t in done], cmap="magma", zorder=3,
                        edgecolors="k", label="trials")
        fig.colorbar(sc, ax=ax, label="pass@10")
    ans = d.answer
    boxes = ((ans.argmax_region, "C0", "90% region of (s*, p*)"),
             (ans.epsilon_region, "C2", f"within {cfg.stop.epsilon:g} of the best (P >= 0.9)")
             ) if ans else ()
    for region, color, label in boxes:
        if region is None or not region.n_points:
            continue
        (s0, s1), (p0, p1) = region.bounds["scaling_factor"], region.bounds["participation"]
        ax.add_patch(Rectangle((s0, p0), s1 - s0, p1 - p0, fill=False, ec=color, lw=2,
                               label=label, zorder=2))
    if ans is not None and ans.predicted is not None:
        ax.scatter([ans.predicted.params["scaling_factor"]], [ans.predicted.params["participation"]],
                   marker="*", s=220, color="C3", zorder=4, label="predicted optimum")
    sf = next(p for p in cfg.space if p.name == "scaling_factor")
    ax.set_xlim(sf.low, sf.high)
    if sf.log:
        _log_s_axis(ax)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("participation p")
    ax.legend(loc="best", fontsize=7)
    ax.set_xlabel("server scaling factor s")
    ax.set_title(f"{cfg.name} / {d.label}: where the optimum is")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(cfg: StudyConfig, histories: Mapping[str, Sequence[FrozenTrial]],
                 path: Path) -> Path:
    """pass@10 per trial and the running best, one colour per distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (label, trials) in enumerate(histories.items()):
        done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                      key=lambda t: t.number)
        if not done:
            continue
        xs = [t.number for t in done]
        ys = [float(t.value) for t in done if t.value is not None]
        ax.plot(xs, ys, "o", color=f"C{i}", alpha=0.6, label=f"{label} trials")
        ax.step(xs, np.maximum.accumulate(ys), where="post", color=f"C{i}", label=f"{label} best")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, ax, path, xlabel="trial number", title=f"{cfg.name}: optimisation history")


def curve_table(points: Sequence[CurvePoint]) -> str:
    """s*(h) and p*(h) with the bounds of the 90% region, one markdown row per h."""
    head = ("| h | distribution | s* | s* 90% region | p* | p* 90% region | pass@10 at s*, p* |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = []
    for c in points:
        s_lo, s_hi = c.bounds.get("scaling_factor", (math.nan, math.nan))
        p_lo, p_hi = c.bounds.get("participation", (math.nan, math.nan))
        rows.append(f"| {c.h:.3f} | {c.label or '-'} | {c.params.get('scaling_factor', 0):.3g} "
                    f"| [{s_lo:.3g}, {s_hi:.3g}] | {c.params.get('participation', 0):.2f} "
                    f"| [{p_lo:.2f}, {p_hi:.2f}] | {c.mean:.3f} |")
    return head + "\n".join(rows) + "\n"


def plot_curve(cfg: StudyConfig, points: Sequence[CurvePoint],
               trials: Sequence[tuple[str, Observation]], path: Path) -> Path:
    """s*(h) and p*(h) from the shared surrogate with their 90% bands, trials on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    hs = [c.h for c in points]
    for ax, name, ylabel in ((axes[0], "scaling_factor", "server scaling factor s*"),
                             (axes[1], "participation", "participation p*")):
        lo = [c.bounds.get(name, (math.nan, math.nan))[0] for c in points]
        hi = [c.bounds.get(name, (math.nan, math.nan))[1] for c in points]
        ax.fill_between(hs, lo, hi, color="C0", alpha=0.18, label="90% region")
        ax.plot(hs, [c.params.get(name, math.nan) for c in points], color="C0", label="optimum")
        studied = [c for c in points if c.label]
        ax.scatter([c.h for c in studied], [c.params.get(name, math.nan) for c in studied],
                   marker="*", s=140, color="C3", zorder=4, label="studied distributions")
        if trials:
            sc = ax.scatter([o.params["heterogeneity"] for _, o in trials],
                            [o.params.get(name, math.nan) for _, o in trials],
                            c=[o.value for _, o in trials], cmap="magma", s=16, zorder=3,
                            edgecolors="none", label="trials")
            fig.colorbar(sc, ax=ax, label="pass@10")
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", fontsize=7)
    if any(p.name == "scaling_factor" and p.log for p in cfg.space):
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        axes[0].set_yscale("log")
        axes[0].yaxis.set_major_locator(FixedLocator([0.25, 0.5, 1, 2, 4]))
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axes[0].yaxis.set_minor_locator(NullLocator())
    axes[1].set_xlabel("heterogeneity h (mean TV distance of client label mixes)")
    axes[0].set_title(f"{cfg.name}: the optimum against heterogeneity (shared surrogate)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def write_report(cfg: StudyConfig, out_dir: str | Path) -> Path:
    """Write answer.md, one PNG per distribution, history.png and index.html; return the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status = study_status(cfg)
    table = answer_table(status, epsilon=cfg.stop.epsilon)
    histories: dict[str, list[FrozenTrial]] = {}
    images = []
    for d in status.distributions:
        if not d.exists:
            continue
        trials = completed_trials(cfg, d.label)
        histories[d.label] = trials
        images.append(plot_factor(cfg, d, trials, out / f"factor-{d.label}.png"))
        if {"scaling_factor", "participation"} <= {p.name for p in cfg.space}:
            images.append(plot_map(cfg, d, trials, out / f"map-{d.label}.png"))
    images.append(plot_history(cfg, histories, out / "history.png"))
    storage = open_storage(cfg.storage_url)
    points = curve(cfg, storage)
    curve_md = curve_table(points) if points else ""
    if points:
        images.append(plot_curve(cfg, points, family_points(cfg, storage), out / "curve.png"))
    section = "The optimum against heterogeneity (shared surrogate)"
    extra = f"\n## {section}\n\n{curve_md}" if curve_md else ""
    (out / "answer.md").write_text(f"# {cfg.name}\n\n{table}{extra}", encoding="utf-8")
    if curve_md:
        extra = f"<h2>{section}</h2>{_markdown_table_html(curve_md)}"
    body = extra + "\n".join(f"<figure>{_img(p)}</figure>" for p in images)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}"
            f"</title><style>body{{font-family:sans-serif;max-width:60em;margin:auto}}"
            f"table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px}}"
            f"</style></head><body><h1>{html.escape(cfg.name)}</h1>"
            f"<p>storage: <code>{html.escape(status.storage)}</code></p>"
            f"{_markdown_table_html(table)}{body}</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _markdown_table_html(table: str) -> str:
    lines = [ln for ln in table.strip().splitlines() if not ln.startswith("|---")]
    cells = [[html.escape(c.strip()) for c in ln.strip("|").split("|")] for ln in lines]
    head = "".join(f"<th>{c}</th>" for c in cells[0])
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
    return f"<table><tr>{head}</tr>{rows}</table>"
