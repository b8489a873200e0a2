"""The examples and the ``avalanche-lvae`` command run end to end on small slices and write the documented results.

The example scripts are loaded by file path: avalanche-lib installs a
top-level ``examples`` package that would shadow ours.
"""

import ast
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avalanche_lvae.experiments import cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ALL_STRATEGIES = ("lvae", "naive", "ewc", "gr", "lwf", "si", "cumulative")
GENERATIVE = ("lvae", "naive", "ewc", "cumulative")
RESULT_KEYS = {
    "final_avg_accuracy", "final_avg_forgetting", "avg_accuracy_per_experience", "accuracy_per_experience",
    "final_neg_elbo", "neg_elbo_per_experience", "final_frechet_distance", "frechet_distance_per_experience",
    "final_component_purity", "component_purity_per_experience", "final_component_purity_per_row",
    "component_purity_per_row_per_experience",
    "train_seconds", "peak_rss_mb", "resumed_after_experience",
}
LVAE_FLAGS = ("--arch", "--continuous-dim", "--classification-weight", "--consistency-weight", "--info-weight",
              "--continuous-consistency", "--replay-labels", "--replay-mixing", "--replay-temperature",
              "--component-prior")


def load_example(name: str):
    """Import ``examples/<name>.py`` as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"lvae_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(stream: str, argv) -> int:
    """``avalanche-lvae run <stream> <argv>`` in this process; returns the exit code."""
    return cli.main(["run", stream, *map(str, argv)])


@pytest.fixture(autouse=True)
def private_reference_cache(tmp_path, monkeypatch):
    # Reference classifiers trained by these tests stay out of benchmarks/results/cache.
    monkeypatch.setenv("LVAE_CACHE_DIR", str(tmp_path / "cache"))


# ------------------------------------------------------------------ the examples
@pytest.mark.parametrize("name", ["permuted_mnist", "split_mnist", "split_fmnist"])
def test_examples_are_self_contained_and_their_main_defaults_to_the_full_run(name):
    source = (EXAMPLES / f"{name}.py").read_text()
    imported = [node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert not [m for m in imported if m.split(".")[-1].startswith("_") or "experiments" in m], imported
    assert "sys.path" not in source and len(source.splitlines()) <= 110
    defaults = {k: p.default for k, p in inspect.signature(load_example(name).main).parameters.items()}
    assert defaults["max_train_per_experience"] is None and defaults["max_test_per_experience"] is None
    assert 'if __name__ == "__main__":\n    main()' in source  # no flags: the full run


def test_no_private_helper_modules_in_examples():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["permuted_mnist.py", "split_fmnist.py", "split_mnist.py"]


def test_permuted_mnist_example_reports_accuracy_elbo_and_frechet_distance(data_root, capsys):
    results = load_example("permuted_mnist").main(n_experiences=2, epochs=1, batch_size=64,
                                                  max_train_per_experience=200, max_test_per_experience=100,
                                                  fd_samples=100)
    assert 0.0 <= results["Top1_Acc_Stream/eval_phase/test_stream/Task000"] <= 1.0
    assert 50 < results["NegELBO_Stream/eval_phase/test_stream/Task000"] < 2000
    assert results["FrechetDistance_Stream/eval_phase/test_stream/Task000"] >= 0
    assert "after 2 experiences: average accuracy" in capsys.readouterr().out


def test_split_mnist_example_compares_with_generative_replay(data_root):
    results = load_example("split_mnist").main(n_experiences=5, epochs=1, batch_size=50,
                                               max_train_per_experience=150, max_test_per_experience=50)
    assert list(results) == ["LifelongVAEStrategy", "GenerativeReplay"]
    for accuracies in results.values():
        assert len(accuracies) == 5 and all(0.0 <= a <= 1.0 for a in accuracies)


def test_split_fmnist_example_writes_one_grid_row_per_experience(data_root, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    grid = load_example("split_fmnist").main(n_experiences=5, epochs=1, batch_size=50, max_train_per_experience=100,
                                             max_test_per_experience=50, images_per_row=4, output=str(out))
    # make_grid: 28-pixel images with 2 pixels of padding around each: 5 rows (z_d values) x 4 columns.
    assert tuple(grid.shape) == (3, 2 + 5 * 30, 2 + 4 * 30)
    assert Image.open(out).size == (2 + 4 * 30, 2 + 5 * 30)


# ------------------------------------------------------------------ the command line
def test_permuted_mnist_runs_every_strategy_and_writes_results_and_plots(data_root, tmp_path, capsys):
    out, plots = tmp_path / "results.json", tmp_path / "plots"
    code = run_cli("permuted_mnist", [
        "--strategies", ",".join(ALL_STRATEGIES), "--n-experiences", "2", "--max-train-per-experience", "150",
        "--max-test-per-experience", "100", "--epochs", "1", "--batch-size", "64", "--fd-samples", "100",
        "--results-json", str(out), "--plots", str(plots),
    ])
    printed = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "permuted_mnist" and payload["config"]["n_experiences"] == 2
    reference = payload["reference_classifier"]
    assert reference["name"] == "permuted_mnist2_train150" and reference["epochs"] == 1
    assert 0.0 <= reference["test_accuracy"] <= 1.0
    assert list(payload["results"]) == list(ALL_STRATEGIES)
    for name, r in payload["results"].items():
        assert set(r) == RESULT_KEYS, name
        assert len(r["accuracy_per_experience"]) == 2 and len(r["accuracy_per_experience"][1]) == 2
        assert r["final_avg_accuracy"] == r["avg_accuracy_per_experience"][-1]
        assert 0.0 <= r["final_avg_accuracy"] <= 1.0
        if name in GENERATIVE:
            assert len(r["neg_elbo_per_experience"]) == 2 and 50 < r["final_neg_elbo"] < 2000
            assert len(r["frechet_distance_per_experience"]) == 2 and r["final_frechet_distance"] >= 0
        else:
            assert r["final_neg_elbo"] is None and r["frechet_distance_per_experience"] is None
        if name == "lvae":  # the row purity of the sample grid needs z_d value j = experience j
            purity = r["component_purity_per_experience"]
            assert len(purity) == 2 and r["final_component_purity"] == purity[-1] and 0 <= purity[-1] <= 1
            rows = r["final_component_purity_per_row"]
            assert len(rows) == 2 and sum(rows) / 2 == pytest.approx(purity[-1])
            history = r["component_purity_per_row_per_experience"]
            assert [len(h) for h in history] == [1, 2] and history[-1] == rows
            assert sum(history[0]) == pytest.approx(purity[0])
        else:
            assert r["final_component_purity"] is None and r["component_purity_per_experience"] is None
            assert r["final_component_purity_per_row"] is None
            assert r["component_purity_per_row_per_experience"] is None
        assert r["resumed_after_experience"] is None
    # The table has an FD column; the PNGs are there.
    assert "FD" in printed.splitlines()[printed.splitlines().index("permuted_mnist: 2 experiences, 1 epoch(s) "
                                                                    "each, seed 0") + 1]
    for png in ("accuracy.png", "neg_elbo.png", "frechet_distance.png", "samples_lvae.png", "samples_naive.png"):
        assert (plots / png).stat().st_size > 0, png
    assert (plots / "lvae" / "samples_test_after_exp001.png").exists()


def test_split_fmnist_runs_without_frechet(data_root, tmp_path):
    out = tmp_path / "results.json"
    code = run_cli("split_fmnist", [
        "--strategies", "lvae,si", "--n-experiences", "5", "--max-train-per-experience", "100",
        "--max-test-per-experience", "50", "--epochs", "1", "--batch-size", "50", "--no-frechet",
        "--results-json", str(out),
    ])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "split_fmnist" and payload["reference_classifier"] is None
    lvae = payload["results"]["lvae"]
    assert len(lvae["neg_elbo_per_experience"]) == 5 and lvae["final_frechet_distance"] is None
    assert lvae["final_component_purity"] is None  # it needs the reference classifier too
    assert len(payload["results"]["si"]["accuracy_per_experience"][-1]) == 5


def test_split_mnist_is_five_experiences_of_two_classes_by_default(data_root, tmp_path):
    out = tmp_path / "results.json"
    code = run_cli("split_mnist", ["--strategies", "lvae,naive", "--max-train-per-experience", "60",
                                   "--max-test-per-experience", "30", "--epochs", "1", "--batch-size", "30",
                                   "--no-frechet", "--results-json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "split_mnist" and payload["config"]["n_experiences"] == 5
    for r in payload["results"].values():
        assert [len(row) for row in r["accuracy_per_experience"]] == [1, 2, 3, 4, 5]


def test_help_exits_zero_and_lists_the_flags(capsys):
    assert run_cli("permuted_mnist", ["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--checkpoint-dir", "--plots", "--no-frechet", "--fd-samples", "--results-json",
                 "--max-train-per-experience", "--dataset-root", "--device", "--strategies") + LVAE_FLAGS:
        assert flag in text
    for removed in ("--decoder-distillation", "--component-anchor", "--aggregate-posterior"):
        assert removed not in text
    assert cli.main(["run", "permuted_mnist", "--component-anchor", "1"]) == 2
    assert "unrecognized arguments: --component-anchor" in capsys.readouterr().err


def test_lvae_flags_default_to_the_library_and_reproductions_pin_the_papers_equations():
    from types import SimpleNamespace

    from avalanche_lvae.experiments.arguments import build_run_parser
    from avalanche_lvae.experiments.reproduction import PAPER_EQUATIONS, Experiment, strategy_args
    from avalanche_lvae.experiments.stream_specs import STREAMS
    from avalanche_lvae.experiments.strategies import lvae_settings
    from avalanche_lvae.presets import PAPER_MODEL, PAPER_STRATEGY

    for spec in STREAMS.values():  # one set of defaults: no stream overrides a setting of the lifelong model
        args = build_run_parser("run", spec).parse_args([])
        assert all(getattr(args, flag[2:].replace("-", "_")) is None for flag in LVAE_FLAGS), spec.name
        assert lvae_settings(args) == ({}, {})
    args = build_run_parser("run", STREAMS["split_fmnist"]).parse_args(
        ["--classification-weight", "100", "--replay-labels", "posterior", "--continuous-dim", "8"])
    model_kwargs, strategy_kwargs = lvae_settings(args)
    assert model_kwargs == {"continuous_dim": 8}
    assert strategy_kwargs == {"classification_weight": 100.0, "replay_label_source": "posterior"}

    reproduce = SimpleNamespace(strategies=["lvae"], n_experiences=10, epochs=3, batch_size=256, dataset_root=None,
                                device="cpu", fd_samples=100, max_train_per_experience=None,
                                max_test_per_experience=None)
    experiment = Experiment(name="x", title="x", stream=None, reference_name="x", reference_epochs=1,
                            baselines_of="split_fmnist", n_experiences=10)
    pinned = strategy_args(experiment, reproduce)
    assert {key: getattr(pinned, key) for key in PAPER_EQUATIONS} == PAPER_EQUATIONS
    model_kwargs, strategy_kwargs = lvae_settings(pinned)
    assert model_kwargs == PAPER_MODEL
    assert strategy_kwargs == {**PAPER_STRATEGY, "replay_mixing": "loss_weights"}


def test_one_class_preset_sets_the_fitted_prior_and_sharper_replay_and_flags_still_override():
    from avalanche_lvae.experiments.arguments import build_run_parser
    from avalanche_lvae.experiments.stream_specs import STREAMS
    from avalanche_lvae.experiments.strategies import lvae_settings, make_strategy
    from avalanche_lvae.plugins import ComponentPriorPlugin, TeacherReplayPlugin
    from avalanche_lvae.presets import ONE_CLASS_PER_EXPERIENCE

    parser = build_run_parser("run", STREAMS["split_fmnist"])
    assert lvae_settings(parser.parse_args(["--preset", "one_class"])) == ({}, ONE_CLASS_PER_EXPERIENCE)
    args = parser.parse_args(["--preset", "one_class", "--replay-temperature", "0.9"])
    assert lvae_settings(args)[1] == {"component_prior": "fitted", "replay_temperature": 0.9}
    strategy, _ = make_strategy("lvae", parser.parse_args(["--preset", "one_class"]), 10)
    [replay] = [p for p in strategy.plugins if isinstance(p, TeacherReplayPlugin)]
    assert replay.temperature == 0.8
    assert any(isinstance(p, ComponentPriorPlugin) for p in strategy.plugins)


def test_replay_temperature_reaches_the_lvae_strategy_and_rejects_zero(capsys):
    from avalanche_lvae.experiments.arguments import build_run_parser
    from avalanche_lvae.experiments.stream_specs import STREAMS
    from avalanche_lvae.experiments.strategies import make_strategy
    from avalanche_lvae.plugins import TeacherReplayPlugin

    args = build_run_parser("run", STREAMS["split_fmnist"]).parse_args(["--replay-temperature", "0.5"])
    strategy, _ = make_strategy("lvae", args, 10)
    [replay] = [p for p in strategy.plugins if isinstance(p, TeacherReplayPlugin)]
    assert replay.temperature == 0.5
    assert run_cli("split_fmnist", ["--replay-temperature", "0"]) == 2
    assert "--replay-temperature: expected a finite positive number" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["-m", "avalanche_lvae", "--help"],
                                     ["-m", "avalanche_lvae", "run", "split_mnist", "--help"]])
def test_python_m_avalanche_lvae_help(command):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if command[-2:] == ["split_mnist", "--help"]:
        assert "usage: python -m avalanche_lvae run split_mnist" in done.stdout and "--strategies" in done.stdout
    else:
        assert "usage: python -m avalanche_lvae" in done.stdout and "run" in done.stdout


def test_console_script_is_declared_and_its_target_is_main(capsys):
    tree = ast.parse((REPO / "setup.py").read_text())
    [call] = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    [entry_points] = [k.value for k in call.keywords if k.arg == "entry_points"]
    assert ast.literal_eval(entry_points) == {"console_scripts": ["avalanche-lvae=avalanche_lvae.experiments.cli:main"]}
    assert cli.main(["--help"]) == 0  # what the console script calls, with sys.argv[1:]
    assert "usage: avalanche-lvae" in capsys.readouterr().out
    assert cli.main(["run", "no_such_stream"]) == 2
    assert "invalid choice: 'no_such_stream'" in capsys.readouterr().err
