"""Write ``docs/results.md`` and README.md's headline table from the JSON files in ``benchmarks/results``.

No figure in the results document or in the README's headline table is typed
by hand: each is read here from the JSON that the measuring script wrote, so
the documents cannot drift from their data. ``tests/test_report.py`` checks
that the committed documents are what this script writes.

Usage (from the repository root)::

    python benchmarks/report.py           # rewrite docs/results.md and README.md's headline block
    python benchmarks/report.py --check   # exit 1 if either differs from what the JSON files give
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from report_tables import (fmt, render_component_usage, render_conv, render_reproduction, render_run, render_scaling,
                           render_speed, render_summary, render_task_free, render_variants, table)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
HEADLINE_START = "<!-- headline table: written by benchmarks/report.py -->"
HEADLINE_END = "<!-- end of headline table -->"


def load(name: str) -> dict:
    with open(RESULTS / name) as handle:
        return json.load(handle)


# The overrides of an entry's own hyperparameters (``leaderboard.py --learning-rate`` and the flags of
# ``leaderboard.ENTRY_OVERRIDES``), with their words in a table's heading. The entries' own values differ (SGD and
# Adam learning rates, classification weights), so only an override splits a table.
TABLE_OVERRIDES = {"learning_rate": "learning rate", "classification_weight": "classification weight",
                   "continuous_dim": "z_c dimensions", "continuous_consistency_weight": "z_c consistency weight",
                   "replay_size": "replayed rows", "component_prior": "component prior",
                   "replay_temperature": "replay temperature", "normalization": "normalization",
                   "component_anchor_weight": "component anchor weight"}
# Override values that the library no longer accepts, measured not to help: their runs' commands do not parse today.
REMOVED_CHOICES = {("normalization", "none"): "`normalization=\"none\"` (plain dense layers) is not a choice of "
                                              "`LifelongVAE`: this run measured it below BatchNorm and LayerNorm."}


def _protocol(entry: dict, overrides: dict) -> tuple:
    """(stream length, epochs, batch, seed, ((override, value), ...) of :data:`TABLE_OVERRIDES`) of an entry;
    older entries lack ``args``."""
    args = entry.get("args", {})
    return (args.get("n_experiences", 5), args.get("epochs"), args.get("train_mb_size"), args.get("seed", 0),
            tuple((key, overrides[key]) for key in TABLE_OVERRIDES if key in overrides))


def leaderboard_tables(files: Sequence[str], streams: Optional[Sequence[str]] = None,
                       largest_only: bool = False) -> List[str]:
    """``benchmarks/leaderboard.py`` runs: one table per stream and protocol (:func:`_protocol`).

    An entry of a later file replaces the same entry, at the same protocol, of
    an earlier one, so a run of a few entries (``--entries ... --out-dir``)
    updates a full run. Entries trained at other epochs or batch sizes (GEM and
    A-GEM keep the baselines' SGD settings) get a table of their own, so every
    table compares strategies at the same epochs and batch. ``largest_only``
    keeps, per stream, the table with the most entries (of seed 0; the newest run on a tie).
    """
    groups: Dict[tuple, Dict[str, tuple]] = {}
    for name in files:
        data = load(name)
        for entry_name, entry in data["entries"].items():
            strategy, _, stream = entry_name.rpartition("_")
            n_experiences, *protocol = _protocol(entry, data.get("overrides", {}))
            if stream == "pmnist" and n_experiences != 5:
                stream = f"pmnist{n_experiences}"
            threads = data.get("torch_threads", 1)  # older runs: one, as leaderboard.py's usage runs them
            run = f"`{data['command']}`" + (f" ({threads} threads)" if threads != 1 else "")
            groups.setdefault((stream, *protocol), {})[strategy] = (entry, run)
    lines: List[str] = []
    order = {key: i for i, key in enumerate(groups)}  # a later run breaks a tie: the newest protocol
    for stream in streams or sorted({key[0] for key in groups}):
        keys = sorted((key for key in groups if key[0] == stream),
                      key=lambda key: (-len(groups[key]), key[3], -order[key]))
        for key in keys[:1] if largest_only else keys:
            rows, sources = [], {}
            for strategy, (entry, run) in groups[key].items():
                sources.setdefault(run, len(sources) + 1)
                rows.append([strategy, fmt(entry["final_avg_accuracy"], 3), fmt(entry["final_avg_forgetting"], 3),
                             fmt(entry["train_seconds"], 0), str(sources[run])])
            protocol = f", {key[1]} epochs, batch {key[2]}" if key[1] is not None else ""
            protocol += f", seed {key[3]}" if key[3] else ""
            protocol += "".join(f", {TABLE_OVERRIDES[name]} {value if isinstance(value, str) else format(value, 'g')}"
                                for name, value in key[4])
            lines += ["", f"**{LEADERBOARD_STREAMS.get(stream, stream)}{protocol}**", ""]
            lines += table(["strategy", "final avg accuracy", "average forgetting", "train s", "run"], rows)
            lines += [""] + [f"Run {number}: {run}" for run, number in sources.items()]
            lines += [line for override in key[4] if override in REMOVED_CHOICES
                      for line in ("", REMOVED_CHOICES[override])]
    return lines[1:]


def leaderboard_files() -> List[str]:
    """Every leaderboard run under benchmarks/results, in name order (``leaderboard.json`` first)."""
    return [str(path.relative_to(RESULTS)) for path in sorted(RESULTS.rglob("leaderboard*.json"))
            if "entries" in load(str(path.relative_to(RESULTS)))]


LEADERBOARD_STREAMS = {
    "pmnist": "Permuted MNIST, 5 experiences",
    "pmnist10": "Permuted MNIST, 10 experiences",
    "smnist": "Split MNIST, class-incremental, 5 experiences x 2 classes",
    "sfmnist": "Split FashionMNIST, one class per experience",
}

# (file, section title, what the run shows, renderer), in the order of the document.
SECTIONS: List[tuple] = [
    ("defaults_ablation_a.json", "Why the defaults (1 of 2)",
     "Each default of `LifelongVAEStrategy` / `LifelongVAE` switched back alone (`classifier_on_latent`: "
     "`classifier_input=\"latent\"`; `no_distillation`: `distillation_temperature=None`; `classification_weight_*`; "
     "`with_info_restriction`: `info_weight=0.01`; `loss_weights_mixing`: `replay_mixing=\"loss_weights\"`), and "
     "the papers' equations (`paper_equations`).", render_variants),
    ("defaults_ablation_b.json", "Why the defaults (2 of 2)", "The other variants of the same protocol "
     "(`no_continuous_consistency`: `continuous_consistency_weight=0`).", render_variants),
    ("permuted_mnist_defaults.json", "Generation with the defaults: permuted MNIST",
     "`avalanche-lvae run permuted_mnist --strategies lvae` with the library's defaults (its `config` records "
     "`--continuous-consistency 1`, the default).", render_run),
    ("permuted_mnist_defaults_e10.json", "Generation with the defaults: permuted MNIST, 10 epochs",
     "`avalanche-lvae run permuted_mnist --strategies lvae --epochs 10 --batch-size 256`: the library's defaults "
     "at the protocol of `permuted_mnist_e10.json` (below, the example's settings of an earlier release: "
     "loss-weight mixing, classification weight 100, L_I), so that their -ELBO and FD compare.", render_run),
    ("permuted_mnist_no_zc_consistency.json", "Generation without the consistency on z_c: permuted MNIST",
     "The same run with `--continuous-consistency 0` (docs/method.md, D18).", render_run),
    ("split_mnist_defaults.json", "Generation with the defaults: split MNIST",
     "`avalanche-lvae run split_mnist --strategies lvae`, the defaults.", render_run),
    ("split_fmnist_e5.json", "Generation with the defaults: split FashionMNIST",
     "`avalanche-lvae run split_fmnist --strategies lvae`, the defaults; row purity is the share of each "
     "z_d row of the sample grid that the reference classifier assigns to that row's class.", render_run),
    ("split_fmnist_one_class.json", "Split FashionMNIST, one class per experience",
     "`avalanche-lvae run split_fmnist --strategies lvae,naive,ewc,gr --epochs 5 --batch-size 128 --component-prior "
     "fitted --replay-temperature 0.8`, i.e. `--preset one_class`: `ONE_CLASS_PER_EXPERIENCE` "
     "(docs/method.md, Defaults); the section above is the same stream without it. Seeds 1 and 2 "
     "(`split_fmnist_one_class_seed*.json`) and each option alone (`split_fmnist_e5_fitted.json`, "
     "`split_fmnist_e5_t08.json`) are listed below.", render_run),
    ("leaderboard_pmnist10_e10_large_cw784_lr3e-4_norm_layer_seed1/component_usage.json",
     "Which z_d value each permutation uses: 10-task permuted MNIST, no anchor",
     "`benchmarks/component_usage.py` on the models of the `lvae_large` run of the same folder (LayerNorm, lr 3e-4, "
     "classification weight 784, seed 1), saved after each experience (`leaderboard.py --save-models`; the saving "
     "run reproduced that folder's accuracies exactly and was stopped after experience 4). Left: the share of "
     "permutation p's test images whose most probable z_d value is p; right: the share of the images generated "
     "with z_d = j that show permutation j. Permutations 2 and 4 settle on the values of earlier ones, their own "
     "values replay other permutations, and they are hardly replayed at all: they are the experiences whose "
     "accuracy falls at every later boundary.", render_component_usage),
    ("leaderboard_pmnist10_e10_large_cw784_lr3e-4_norm_layer_anchor100_seed1/component_usage.json",
     "Which z_d value each permutation uses: 10-task permuted MNIST, component anchor",
     "The same measurement on the run of the same folder: the setting above with `--component-anchor-weight "
     "100` (`ComponentAnchorPlugin`, docs/method.md D19). Every permutation is on its own value and every value "
     "replays its own permutation through experience 6; from experience 7 on, some past permutations move to other "
     "values (permutation 0 to value 2, and value 2 then replays permutation 0), and a few values replay a mix. "
     "The anchor holds only the current experience's real images; the past ones are held by the consistency KL "
     "to the teacher's posterior.", render_component_usage),
    ("defaults_ablation_c.json", "Options that stay off by default",
     "The same protocol, each option against the variant it differs from in one setting: `hard_replay_labels` "
     "(`soft_replay_labels=False`) against `no_distillation`, `prior_replay_labels` (`replay_label_source=\"prior\"`) "
     "against `classifier_on_latent`, `forward_consistency_kl` (`reverse_kl=False`) "
     "and `fixed_discrete` (`LifelongVAE(discrete_dim=5)`, `grow_discrete=False`) "
     "against `defaults`.", render_variants),
    ("lgm_permuted_mnist.json", "Reproduction: LGM Exp. 5.2, permuted MNIST",
     "The papers' equations (`avalanche_lvae.presets`).", render_reproduction),
    ("lgm_split_mnist.json", "Reproduction: LGM Exp. 5.1, split MNIST (one class per experience)",
     "The papers' equations.", render_reproduction),
    ("lgm_split_fmnist.json", "Reproduction: LGM Exp. 5.1, split FashionMNIST",
     "The papers' equations.", render_reproduction),
    ("cclgm_fig4.json", "Reproduction: CCL-GM Fig. 4, MNIST, FashionMNIST, permuted MNIST",
     "The papers' equations.", render_reproduction),
    ("ablation_split_mnist.json", "Reproduction: LGM Exp. 6.2, the two regularisers",
     "Why the consistency KL and L_I are on: `both` against `consistency_only` (no L_I) and `neither`.",
     render_reproduction),
    ("speed.json", "Speed", "Training cost of one epoch per experience against the same model trained naively "
     "and Avalanche's GenerativeReplay, measured in lockstep in one process.", render_speed),
    ("speed.json", "Conv architecture against dense",
     "`LifelongVAE(arch=\"conv\", conv_width=w)` (LGM Eq. 14 at w = 32) against the dense model: cost of a "
     "training step and quality on 2-experience permuted MNIST.", render_conv),
    ("scaling.json", "Scaling: one and two processes",
     "Data-parallel training under `torchrun` (docs/distributed.md) on the machine's CPU cores.", render_scaling),
    ("task_free.json", "Task-free: boundaries detected, not given (all training images)",
     "`LifelongVAEStrategy(boundaries=\"detected\")` against the same model with the boundaries given "
     "(docs/task_free.md); calibration streams set the thresholds, tested streams were not used for them.",
     render_task_free),
    ("task_free_12k.json", "Task-free: the first 12,000 rows of each experience",
     "The same protocol on shorter experiences.", render_task_free),
    ("task_free_score_elbo.json", "Task-free without labels (`score=\"elbo\"`)",
     "The detector scoring the negative ELBO only.", render_task_free),
    ("long_run.json", "A long run: 20 experiences",
     "Every loss term stays finite and the step time stays flat as past distributions accumulate.",
     render_summary),
]


OPTION_RUNS = """The files below are runs of `avalanche-lvae run` (each file's `config` records every
setting it ran with, `command` where present). Pairs of runs that differ in one setting measure the
options that are not switched on by default:

- `replay_temperature` (the sharper reconstruction target for replay): `split_fmnist_e5_t08.json`
  (0.8) against `split_fmnist_e5.json` (1) on the defaults, `split_fmnist_one_class.json` against
  `split_fmnist_e5_fitted.json` with the fitted prior, and `split_fmnist_b64e10_t08.json` against
  `split_fmnist_b64e10.json`;
- `component_prior="fitted"`: `split_fmnist_e5_fitted.json` against `split_fmnist_e5.json` and
  `split_mnist_fitted.json` against `split_mnist_defaults.json` on the defaults, `split_fmnist_fitted.json`
  against `split_fmnist.json`, and `row_purity_fitted/row_purity_split_fmnist.json` against
  `row_purity_split_fmnist.json` (the `paper` row);
- `replay_mixing`: `permuted_mnist_e10_composition.json` against `permuted_mnist_e10.json`,
  `split_fmnist_composition.json` against `split_fmnist_fitted.json`, and
  `split_fmnist_seed1.json` against `split_fmnist_seed1_loss_weights.json`;
- `continuous_consistency_weight`, together with classification weight 20 (two settings change):
  `permuted_mnist_cw20_cc1.json` against `permuted_mnist_paper_defaults.json`;
- the removed decoder distillation: `split_fmnist_seed1_distill5.json` against
  `split_fmnist_seed1_loss_weights.json`, and the `distill_anchor*` rows of `row_purity_split_fmnist.json`."""


def renderer_for(data: dict) -> Callable[[dict], List[str]]:
    """The renderer of a file that SECTIONS does not list, from the keys it holds."""
    if "variants" in data:
        return render_variants
    if "boundaries" in data:
        return render_component_usage
    if "streams" in data:
        return render_task_free
    if "results" in data:
        return render_run
    if "per_seed" in data:
        return render_reproduction
    return render_summary


def results_document() -> str:
    lines = [
        "# Results",
        "",
        "Every table below is written by `python benchmarks/report.py` from the JSON file named in its "
        "heading, which the command under the heading wrote; none is typed by hand. Final average accuracy "
        "over all tasks seen, average forgetting, negative test ELBO over all seen test sets (nats per image, "
        "lower is better), Frechet distance of 10,000 generated images against all seen test sets (lower is "
        "better) and the sample grid's row purity (the share of each row's samples that a reference classifier "
        "assigns to the row's distribution), after the last experience. `-`: not measured, or the strategy has "
        "no generative model. Times are training seconds on a 2-core CPU.",
    ]
    boards = leaderboard_files()
    lines += ["", "## Leaderboard: Avalanche's strategies and lvae", "",
              "Avalanche's strategies on an MLP (2 x 512) and `LifelongVAEStrategy` with the library's defaults "
              "unless the entry says otherwise, evaluated on every test set after the last experience; "
              f"hyperparameters in `benchmarks/leaderboard.py`; data in {', '.join(f'`{b}`' for b in boards)}. "
              "Training seconds are of one thread (`OMP_NUM_THREADS=1`) unless a run's line gives more; the run "
              "with 384 replayed rows had two, which its JSON does not record. `lvae_large_real_replay` is "
              "`lvae_large` replaying real training images of the past experiences in place of generated ones "
              "(`benchmarks/real_image_replay.py`): it stores data, and bounds what a better generator could give.",
              ""] + leaderboard_tables(boards)
    listed = set(boards)
    for name, title, blurb, render in SECTIONS:
        if not (RESULTS / name).exists():
            continue
        listed.add(name)
        lines += ["", f"## {title}", "", f"`benchmarks/results/{name}`. {blurb}", ""] + render(load(name))
    lines += ["", "## Runs of the command line, by option", "", OPTION_RUNS]
    for path in sorted(RESULTS.rglob("*.json")):
        name = str(path.relative_to(RESULTS))
        if name in listed:
            continue
        data = load(name)
        lines += ["", f"## `{name}`", ""] + renderer_for(data)(data)
    return "\n".join(lines) + "\n"


def headline_table() -> str:
    return "\n".join(leaderboard_tables(leaderboard_files(), streams=HEADLINE_STREAMS, largest_only=True))


HEADLINE_STREAMS = ("smnist", "pmnist", "pmnist10")


def readme_with_headline(text: str) -> str:
    """README.md's text with the block between the headline markers rewritten."""
    start, end = text.find(HEADLINE_START), text.find(HEADLINE_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no headline block: put {HEADLINE_START!r} and {HEADLINE_END!r} "
                         "on their own lines where the table goes.")
    return text[: start + len(HEADLINE_START)] + "\n" + headline_table() + "\n" + text[end:]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a document differs from the JSON files")
    args = parser.parse_args(argv)
    wanted = {RESULTS_DOC: results_document(), README: readme_with_headline(README.read_text())}
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run python benchmarks/report.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
