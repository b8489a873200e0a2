"""Markdown tables for each kind of results JSON that ``benchmarks/report.py`` puts in docs/results.md.

Each ``render_*`` takes one file's parsed JSON and returns the lines of its
table; none reads files or types a figure.
"""

from typing import Iterable, List, Sequence


def fmt(value, digits: int) -> str:
    """A number rounded to ``digits`` decimals, or ``-`` when it was not measured."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_run(data: dict) -> List[str]:
    """An ``avalanche-lvae run`` results file: one row per strategy, final figures."""
    rows = []
    for name, result in data["results"].items():
        per_row = result.get("final_component_purity_per_row")
        rows.append([
            name,
            fmt(result.get("final_avg_accuracy"), 3),
            fmt(result.get("final_avg_forgetting"), 3),
            fmt(result.get("final_neg_elbo"), 1),
            fmt(result.get("final_frechet_distance"), 1),
            fmt(result.get("final_component_purity"), 3),
            fmt(min(per_row) if per_row else None, 3),
            fmt(result.get("train_seconds"), 0),
        ])
    config = data["config"]
    settings = ", ".join(f"{key} {config[key]}" for key in ("n_experiences", "epochs", "batch_size", "seed")
                         if key in config)
    lines = [f"Settings: {settings}."]
    if "command" in data:
        lines.append(f"Command: `{data['command']}`")
    headers = ["strategy", "avg acc", "forgetting", "-ELBO", "FD", "row purity", "lowest row", "train s"]
    return lines + [""] + table(headers, rows)


def render_reproduction(data: dict) -> List[str]:
    """``benchmarks/reproduce_*.py``: final value of each metric, mean ± std over the seeds."""
    metrics = sorted({metric for summary in data["summary"].values() for metric in summary})
    digits = {"accuracy": 3, "neg_elbo": 1, "frechet_distance": 1, "component_purity": 3}
    rows = []
    for name, summary in data["summary"].items():
        cells = [name]
        for metric in metrics:
            if metric not in summary:
                cells.append("-")
                continue
            d = digits.get(metric, 3)
            cells.append(f"{summary[metric]['mean'][-1]:.{d}f} ± {summary[metric]['std'][-1]:.{d}f}")
        rows.append(cells)
    lines = [f"Command: `{data['command']}` (seeds {', '.join(str(s) for s in data['seeds'])})", ""]
    return lines + table(["strategy"] + [f"final {metric}" for metric in metrics], rows)


def render_speed(data: dict) -> List[str]:
    """``benchmarks/speed.py``: seconds per epoch and real samples per second at each experience."""
    strategies = data["strategies"]
    naive = strategies.get("naive", {})
    rows = []
    for name, per_experience in strategies.items():
        for experience, figures in per_experience.items():
            base = naive.get(experience, {}).get("seconds_per_epoch")
            ratio = None if base is None else figures["seconds_per_epoch"] / base
            rows.append([name, experience, fmt(figures["seconds_per_epoch"], 2),
                         fmt(figures["real_samples_per_second"], 0), fmt(ratio, 2)])
    lines = [f"Command: `{data['command']}` (batch {data['batch_size']}, {data['repeats']} interleaved repeats, "
             f"{data['torch_threads']} threads)", ""]
    return lines + table(["strategy", "experience", "s / epoch", "real samples / s", "time / naive's"], rows)


def render_summary(data: dict) -> List[str]:
    """Any other results file with a flat ``summary``: its scalar entries."""
    summary = data.get("summary", {})
    rows = [[key, f"{value:.4g}" if isinstance(value, float) else str(value)]
            for key, value in summary.items() if isinstance(value, (int, float, str, bool))]
    lines = [f"Command: `{data['command']}`", ""] if "command" in data else []
    return lines + table(["quantity", "value"], rows)


def render_task_free(data: dict) -> List[str]:
    """``benchmarks/task_free.py``: detected boundaries against the true ones, per stream (seeds joined by /)."""
    def per_seed(values, digits):
        return "/".join("-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v)) for v in values)

    rows = []
    for name, stream in data["streams"].items():
        summary = stream["summary"]
        rows.append([f"{name} ({stream['feed']})", stream["role"], str(stream["train_rows_per_experience"]),
                     str(len(stream["true_boundaries"])), per_seed(summary["recall"], 2),
                     per_seed(summary["precision"], 2), per_seed(summary["false_detections"], 0),
                     per_seed(summary["z_d_grown"], 0), per_seed(summary["accuracy_detected"], 3),
                     per_seed(summary["accuracy_given"], 3)])
    config = data["config"]
    lines = [f"Command: `{data['command']}` (seeds {', '.join(str(s) for s in config['seeds'])}, score "
             f"`{config['score']}`, a detection counts within {config['window']} rows after a true boundary)", ""]
    return lines + table(["stream (feed)", "role", "rows per experience", "true boundaries", "recall", "precision",
                          "false detections", "z_d grown", "accuracy, detected", "accuracy, given"], rows)


def render_scaling(data: dict) -> List[str]:
    """``benchmarks/scaling.py``: real samples per second and seconds per experience for 1 and N processes."""
    rows = [[run["arch"], str(run["world_size"]), run["precision"], run["device"],
             " / ".join(fmt(v, 1) for v in run["seconds_per_experience"]),
             " / ".join(fmt(v, 0) for v in run["real_samples_per_second"])] for run in data["runs"]]
    lines = [f"Command: `{data['command']}` ({data['backend']}, global batch {data['global_batch']}, "
             f"{data['cpu_cores']} CPU cores).", ""]
    if all(run["device"] == "cpu" for run in data["runs"]):
        lines += ["No GPU was available to run the GPU rows (dense and conv, fp32 and bf16 autocast), so none "
                  "are reported, and none is estimated.", ""]
    else:
        lines[0] += f" GPU: {data['gpu']}."
    return lines + table(["model", "processes", "precision", "device", "s per experience", "real samples / s"], rows)


def render_conv(data: dict) -> List[str]:
    """``benchmarks/speed.py --conv-only``: conv step time against dense, and accuracy and -ELBO of each model."""
    conv = data["conv_vs_dense"]
    quality = conv["permuted_mnist"]
    rows = []
    for name, step in conv["models"].items():
        trained = quality["models"].get(name, {})
        rows.append([name, str(step["parameters"]), fmt(step["seconds_per_step"] * 1e3, 0),
                     fmt(step["ratio_to_dense"], 1), fmt(trained.get("accuracy"), 3), fmt(trained.get("neg_elbo"), 1),
                     fmt(trained.get("train_seconds"), 0)])
    lines = [f"Command: `{conv['command']}` ({conv['torch_threads']} thread). Step: one training step (forward, "
             f"joint bound, backward, Adam) on {conv['batch_size']} rows, median of {conv['repeats']} rounds with "
             "the models interleaved. Quality: `LifelongVAEStrategy` with the library's defaults on permuted MNIST, "
             f"2 experiences of {quality['train_per_experience']} training and {quality['test_per_experience']} "
             f"test images, {quality['epochs']} epochs, batch {quality['batch_size']}, seed {quality['seed']}; "
             "final accuracy and -ELBO (nats per image) over both test sets. Widths whose step is more than "
             f"{conv['quality_max_ratio']:g} times dense's are timed only (`-`).", ""]
    return lines + table(["model", "parameters", "ms / step", "step / dense's", "final accuracy", "final -ELBO",
                          "train s"], rows)


def render_variants(data: dict) -> List[str]:
    """``benchmarks/defaults_ablation.py``: each default switched back, final accuracy and training time."""
    rows = [[name, fmt(result["final_avg_accuracy"], 3), fmt(result["train_seconds"], 0)]
            for name, result in data["variants"].items()]
    config = data["config"]
    lines = [f"Command: `{data['command']}` ({config['stream']}, {config['epochs']} epochs, batch "
             f"{config['batch_size']}, seed {config['seed']})", ""]
    return lines + table(["variant", "final avg accuracy", "train s"], rows)


def render_component_usage(data: dict) -> List[str]:
    """``benchmarks/component_usage.py``: per boundary, each permutation's share of test images on its own z_d
    value, and the share of each value's replay that shows its own permutation."""
    rows = [[str(b["experience"]),
             " ".join(fmt(row[p], 2) for p, row in enumerate(b["real_usage"])),
             " ".join(fmt(row[j], 2) for j, row in enumerate(b["replay_shares"]))]
            for b in data["boundaries"]]
    return table(["after experience", "permutation p on value p (p = 0, 1, ...)",
                  "replay of value j showing permutation j (j = 0, 1, ...)"], rows) + [
        "", f"`{data['command']}`; {data['n_test']} test images per permutation, {data['n_replay']} generated "
            f"images per value; the permutation detector names {fmt(data['detector_accuracy'], 3)} of real test "
            "images correctly."]
