"""Reliability: checkpoint / resume, determinism, the non-finite guard, bad input, memory.

``avalanche-lvae run`` runs in subprocesses (``python -m avalanche_lvae``) where a
fresh process matters (a resume after a crash, run-to-run determinism, peak
RSS) and in-process otherwise (fast). The crash is the runner's hidden test hook
``LVAE_RUN_CRASH_AT=<strategy>:<experience>``: ``os._exit`` right after
the first weight update of that experience, i.e. a ``kill -9`` in the middle
of it.
"""

import functools
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.models import SimpleMLP
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch.distributions import Normal

from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAENaive
from avalanche_lvae.losses import continuous_consistency_kl, information_restriction
from avalanche_lvae.metrics import (
    ReferenceClassifier,
    consistency_metrics,
    frechet_distance,
    frechet_distance_metrics,
    generated_samples_metrics,
    neg_elbo_metrics,
    reference_classifier,
)
from avalanche_lvae.plugins import (
    InformationRestrictionPlugin,
    PosteriorConsistencyPlugin,
    TeacherReplayPlugin,
    TeacherSwapPlugin,
)
from avalanche_lvae.streams import benchmark_from_tensors, experience_tensors, mnist_fashion_permuted, permuted_mnist
from avalanche_lvae.experiments.runner import CRASH_ENV_VAR as CRASH_ENV
from avalanche_lvae.experiments.runner import CRASH_EXIT_CODE
from avalanche_lvae.streams import split_fmnist
from test_examples import run_cli

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "avalanche_lvae", "run", "permuted_mnist"]
# Our strategy and an Avalanche one (GenerativeReplay: generator, dropout, its own RNG use).
RUN = ["--strategies", "lvae,gr", "--n-experiences", "4", "--max-train-per-experience", "300",
       "--max-test-per-experience", "100", "--epochs", "1", "--batch-size", "64", "--fd-samples", "200"]
TINY = ["--strategies", "lvae", "--n-experiences", "2", "--max-train-per-experience", "100",
        "--max-test-per-experience", "50", "--epochs", "1", "--batch-size", "50", "--no-frechet"]
NOT_REPRODUCIBLE = ("train_seconds", "peak_rss_mb", "resumed_after_experience")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture
def cache_env(workdir, monkeypatch):
    """In-process runs share the subprocesses' reference-classifier cache."""
    monkeypatch.setenv("LVAE_CACHE_DIR", str(workdir / "cache"))
    monkeypatch.delenv(CRASH_ENV, raising=False)


def run_script(workdir, args, crash_at=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LVAE_CACHE_DIR=str(workdir / "cache"))
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, *COMMAND, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def numbers(payload):
    """Every reproducible number of a results JSON."""
    results = {name: {k: v for k, v in r.items() if k not in NOT_REPRODUCIBLE}
               for name, r in payload["results"].items()}
    return results, payload["reference_classifier"]["test_accuracy"]


def digests(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.pkl"))}


def error_lines(stderr):
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def uninterrupted(data_root, workdir):
    done = run_script(workdir, RUN + ["--results-json", workdir / "uninterrupted.json"])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((workdir / "uninterrupted.json").read_text())


# ------------------------------------------------------------------ checkpoint / resume
def test_resume_after_a_crash_is_bitwise_identical_and_a_divergence_keeps_the_checkpoint(
        uninterrupted, workdir, cache_env, capsys):
    ck, out = workdir / "ck", workdir / "resumed.json"
    # 1. Killed in the middle of experience 2 (the third), after its first update.
    crashed = run_script(workdir, RUN + ["--checkpoint-dir", ck, "--results-json", out], crash_at="lvae:2")
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    assert sorted(digests(ck / "lvae")) == ["ckpt_exp000.pkl", "ckpt_exp001.pkl"] and not out.exists()
    before = digests(ck / "lvae")

    # 2. Resumed with --lr 1e6: the non-finite guard stops experience 2 with exit code 1 and one
    #    line naming experience and iteration; no checkpoint is written or changed.
    assert run_cli("permuted_mnist", RUN + ["--checkpoint-dir", ck, "--lr", "1e6", "--results-json", out]) == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "non-finite" in errors[0], errors
    assert "experience 2, iteration" in errors[0] and "checkpoint" in errors[0]
    assert digests(ck / "lvae") == before and not out.exists()

    # 3. Resumed with the original flags in a fresh process: the same numbers, bit for bit.
    resumed = run_script(workdir, RUN + ["--checkpoint-dir", ck, "--results-json", out])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["results"]["lvae"]["resumed_after_experience"] == 1
    assert payload["results"]["gr"]["resumed_after_experience"] is None  # never checkpointed before
    assert numbers(payload) == numbers(uninterrupted)
    assert sorted(digests(ck / "lvae")) == ["ckpt_exp002.pkl", "ckpt_exp003.pkl"]  # the newest two are kept


@pytest.fixture(scope="module")
def two_checkpoints(data_root, workdir):
    folder = workdir / "tiny_ck"
    assert run_cli("permuted_mnist", TINY + ["--checkpoint-dir", folder]) == 0
    assert sorted(digests(folder / "lvae")) == ["ckpt_exp000.pkl", "ckpt_exp001.pkl"]
    return folder


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_is_named_and_the_previous_one_resumes(two_checkpoints, tmp_path, damage, capsys):
    folder = tmp_path / "ck"
    shutil.copytree(two_checkpoints, folder)
    newest, previous = folder / "lvae" / "ckpt_exp001.pkl", folder / "lvae" / "ckpt_exp000.pkl"
    kept = digests(folder / "lvae")["ckpt_exp000.pkl"]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncate" else random.Random(0).randbytes(4096))
    main = functools.partial(run_cli, "permuted_mnist")
    out = tmp_path / "results.json"
    assert main(TINY + ["--checkpoint-dir", str(folder), "--results-json", str(out)]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(newest) in errors[0] and "delete it" in errors[0], errors
    assert str(previous) in errors[0] and not out.exists()
    assert digests(folder / "lvae")["ckpt_exp000.pkl"] == kept
    # Following the advice resumes from the previous checkpoint.
    newest.unlink()
    assert main(TINY + ["--checkpoint-dir", str(folder), "--results-json", str(out)]) == 0
    assert json.loads(out.read_text())["results"]["lvae"]["resumed_after_experience"] == 0


def test_resume_with_other_flags_is_refused(two_checkpoints, tmp_path, capsys):
    folder = tmp_path / "ck"
    shutil.copytree(two_checkpoints, folder)
    main = functools.partial(run_cli, "permuted_mnist")
    assert main(TINY + ["--checkpoint-dir", str(folder), "--seed", "1"]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "--seed 0 (now 1)" in errors[0], errors


# ------------------------------------------------------------------ determinism
def test_same_seed_gives_the_same_numbers_and_another_seed_other_numbers(uninterrupted, workdir, cache_env):
    again = run_script(workdir, RUN + ["--results-json", workdir / "again.json"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert numbers(json.loads((workdir / "again.json").read_text())) == numbers(uninterrupted)
    out = workdir / "seed1.json"
    assert run_cli("permuted_mnist", RUN + ["--seed", "1", "--results-json", out]) == 0
    other, _ = numbers(json.loads(out.read_text()))
    same, _ = numbers(uninterrupted)
    for name in same:
        assert other[name]["accuracy_per_experience"] != same[name]["accuracy_per_experience"], name
    assert other["lvae"]["neg_elbo_per_experience"] != same["lvae"]["neg_elbo_per_experience"]


# ------------------------------------------------------------------ memory
MEMORY_SCRIPT = r"""
import gc, json, resource, types
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin
from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.streams import benchmark_from_tensors

N_EXP = 10
g = torch.Generator().manual_seed(0)
data = [(torch.rand(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)) for _ in range(N_EXP)]
bm = benchmark_from_tensors(data, [(x[:64], y[:64]) for x, y in data])
SKIP = (type, types.ModuleType, types.FunctionType, types.MethodType, torch.Tensor, str, bytes)

def reachable_models(root):
    # Every LifelongVAE reachable from the strategy (not walking into classes, modules, functions).
    seen, stack, found = set(), [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, SKIP):
            continue
        seen.add(id(obj))
        if isinstance(obj, LifelongVAE):
            found.add(id(obj))
        stack.extend(gc.get_referents(obj))
    return len(found)

class Probe(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.counts = []
    def count(self, strategy, when):
        gc.collect()
        self.counts.append(dict(when=when, exp=strategy.clock.train_exp_counter,
                                in_gc=sum(isinstance(o, LifelongVAE) for o in gc.get_objects()),
                                reachable=reachable_models(strategy)))
    def before_training_iteration(self, strategy, **kwargs):
        if strategy.clock.train_exp_iterations == 0:  # after the teacher swap
            self.count(strategy, "start")
    def after_training_exp(self, strategy, **kwargs):
        self.count(strategy, "end")

RNGManager.set_random_seeds(0)
model = LifelongVAE()
probe = Probe()
strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                               train_mb_size=64, train_epochs=1, eval_mb_size=64, plugins=[probe],
                               evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
peak_kb, param_bytes = [], []
for i in range(N_EXP):
    strategy.train(bm.train_stream[i])
    strategy.eval(bm.test_stream[: i + 1])
    gc.collect()
    peak_kb.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    param_bytes.append(sum(p.numel() * p.element_size() for p in strategy.model.parameters()))
print(json.dumps(dict(counts=probe.counts, peak_kb=peak_kb, param_bytes=param_bytes,
                      discrete_dim=strategy.model.discrete_dim)))
"""


def test_one_teacher_and_flat_memory_over_ten_experiences():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["discrete_dim"] == 10
    for record in report["counts"]:
        expected = 1 if record["exp"] == 0 else 2  # the student, plus exactly one teacher from exp 1 on
        assert record["in_gc"] == expected and record["reachable"] == expected, record
    # Peak RSS from the end of experience 1 (teacher and replay in place) to the end: at most what
    # z_d's growth adds (student, teacher, gradients, two Adam moments: 5 copies) plus 5 %.
    peak, params = report["peak_kb"], report["param_bytes"]
    growth = (peak[-1] - peak[1]) * 1024
    allowed = 5 * (params[-1] - params[1]) + 0.05 * peak[1] * 1024
    assert growth <= allowed, (peak, params)


# ------------------------------------------------------------------ bad input
def _images(n=16, **kw):
    return torch.rand(n, 1, 28, 28, **kw), torch.randint(0, 10, (n,))


def _experience(x, y):
    return benchmark_from_tensors([(x, y)], [(x, y)]).train_stream[0]


def _lvae_strategy(**kwargs):
    model = LifelongVAE(hidden_dim=16)
    return LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()), train_mb_size=8,
                               evaluator=EvaluationPlugin(loggers=[]), **kwargs)


def _mlp_naive(plugins=None, metrics=()):
    model = SimpleMLP(num_classes=10, input_size=784, hidden_size=16, hidden_layers=1)
    return Naive(model=model, optimizer=torch.optim.Adam(model.parameters()), criterion=torch.nn.CrossEntropyLoss(),
                 train_mb_size=8, eval_mb_size=8, plugins=plugins, evaluator=EvaluationPlugin(*metrics, loggers=[]))


def _output():
    return LifelongVAE(hidden_dim=16)(torch.rand(4, 1, 28, 28))


BAD_CALLS = {
    # model (more in test_model.py)
    "model: float64 images": (lambda tmp: LifelongVAE(hidden_dim=16)(_images(4, dtype=torch.float64)[0]), "dtype"),
    "model: size as text": (lambda tmp: LifelongVAE(hidden_dim="64"), "hidden_dim"),
    # losses (more in test_losses.py)
    "loss: sample weights of another size": (
        lambda tmp: JointBoundLoss()(_output(), torch.arange(4), sample_weights=torch.ones(3) / 3), "sample_weights"),
    "loss: negative sample weights": (
        lambda tmp: JointBoundLoss()(_output(), torch.arange(4), sample_weights=-torch.ones(4)), "non-negative"),
    "loss: Gaussian KL of other sizes": (lambda tmp: continuous_consistency_kl(
        Normal(torch.zeros(4, 3), 1.0), Normal(torch.zeros(4, 2), 1.0)), "same shape"),
    "loss: L_I of a non-LVAE": (lambda tmp: information_restriction(torch.nn.Linear(2, 2), 4), "LifelongVAE"),
    # strategy (more in test_strategy.py)
    "strategy: replay as text": (lambda tmp: _lvae_strategy(replay="no"), "replay"),
    "strategy: NaN pixels": (lambda tmp: _lvae_strategy().train(_experience(
        torch.full((16, 1, 28, 28), float("nan")), torch.zeros(16, dtype=torch.long))), "NaN"),
    "strategy: float64 pixels": (lambda tmp: _lvae_strategy().train(_experience(*_images(dtype=torch.float64))),
                                 "dtype"),
    "strategy: LVAENaive over SimpleMLP": (lambda tmp: LVAENaive(
        model=SimpleMLP(), optimizer=None), "LifelongVAE"),
    # plugins
    "plugin: replay_size 0": (lambda tmp: TeacherReplayPlugin(replay_size=0), "replay_size"),
    "plugin: soft_labels as text": (lambda tmp: TeacherReplayPlugin(soft_labels="yes"), "soft_labels"),
    "plugin: negative consistency weight": (
        lambda tmp: PosteriorConsistencyPlugin(consistency_weight=-1.0), "consistency_weight"),
    "plugin: infinite L_I weight": (lambda tmp: InformationRestrictionPlugin(weight=float("inf")), "weight"),
    "plugin: fractional L_I samples": (lambda tmp: InformationRestrictionPlugin(samples=2.5), "samples"),
    "strategy: infinite info weight": (lambda tmp: _lvae_strategy(info_weight=float("inf")), "info_weight"),
    "plugin: reverse_kl as text": (lambda tmp: PosteriorConsistencyPlugin(reverse_kl="no"), "reverse_kl"),
    "plugin: grow_discrete as text": (lambda tmp: TeacherSwapPlugin(grow_discrete="False"), "grow_discrete"),
    "plugin: swap on a SimpleMLP": (lambda tmp: _mlp_naive(plugins=[TeacherSwapPlugin()]).train(
        _experience(*_images())), "TeacherSwapPlugin needs"),
    # metrics (non-generative models: test_metrics.py)
    "metric: 0 importance samples": (lambda tmp: neg_elbo_metrics(importance_samples=0), "importance_samples"),
    "metric: reference without features": (lambda tmp: frechet_distance_metrics(torch.nn.Linear(2, 2)), "features"),
    "metric: 0 FD samples": (lambda tmp: frechet_distance_metrics(ReferenceClassifier(), n_samples=0), "n_samples"),
    "metric: 0 images per row": (lambda tmp: generated_samples_metrics(n_per_component=0), "n_per_component"),
    "metric: NaN features": (lambda tmp: frechet_distance(torch.full((5, 3), float("nan")), torch.rand(5, 3)), "NaN"),
    "metric: bad reference name": (lambda tmp: reference_classifier(
        "my data!", [_experience(*_images())], cache_dir=tmp), "benchmark_name"),
    "metric: reference on no data": (lambda tmp: reference_classifier("x", [], cache_dir=tmp), "at least one"),
    "metric: consistency without teacher": (lambda tmp: _mlp_naive(metrics=consistency_metrics()).eval(
        [_experience(*_images())]), "teacher"),
    # streams (more in test_data_streams.py)
    "stream: missing dataset folder": (lambda tmp: permuted_mnist(dataset_root=tmp / "nowhere"), "LVAE_DATA_DIR"),
    "stream: 4 does not divide 10": (lambda tmp: split_fmnist(n_experiences=4), "divide"),
    "stream: negative cap": (lambda tmp: mnist_fashion_permuted(max_train_per_experience=-5),
                             "max_train_per_experience"),
    "stream: empty dataset": (lambda tmp: experience_tensors(
        torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0))), "empty"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_package_entry_points_reject_bad_input_clearly(case, tmp_path):
    call, message = BAD_CALLS[case]
    expected = FileNotFoundError if case.startswith("stream: missing") else ValueError
    with pytest.raises(expected, match=message):
        call(tmp_path)


BAD_ARGV = [
    (["--strategies", "lvae,foo"], "unknown strategy 'foo'"),
    (["--strategies", "lvae,lvae"], "twice"),
    (["--n-experiences", "0"], "positive integer"),
    (["--epochs", "-1"], "positive integer"),
    (["--batch-size", "2.5"], "positive integer"),
    (["--lr", "nan"], "finite positive"),
    (["--lr", "0"], "finite positive"),
    (["--ewc-lambda", "-1"], "non-negative"),
    (["--max-train-per-experience", "0"], "positive integer"),
    (["--fd-samples", "0"], "positive integer"),
    (["--seed", "-3"], "non-negative"),
    (["--arch", "resnet"], "invalid choice"),
    (["--device", "nonsense"], "not a torch device"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--dataset-root", "{tmp}/nowhere"], "LVAE_DATA_DIR"),
    (["--results-json", "{tmp}/missing/results.json"], "does not exist"),
    (["--checkpoint-dir", "{tmp}/a_file"], "not a folder"),
    (["--plots", "{tmp}/a_file"], "not a folder"),
    (["split_fmnist", "--n-experiences", "3"], "does not divide"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGV, ids=[" ".join(a) for a, _ in BAD_ARGV])
def test_cli_rejects_bad_input_with_one_error_line(argv, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    stream = "permuted_mnist"
    if argv[0] == "split_fmnist":
        stream, argv = argv[0], argv[1:]
    out = tmp_path / "results.json"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--results-json" not in argv:
        argv += ["--results-json", str(out)]
    assert run_cli(stream, argv + ["--max-train-per-experience", "50"] * ("--max-train" not in " ".join(argv))) == 2
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and error_lines(stderr) == lines and message in lines[0], stderr
    assert not out.exists()


def _final_digests(stream, evaluate: str):
    """Student and teacher digests after training ``stream``; evaluating never, between experiences, or every epoch."""
    from avalanche.training.determinism.rng_manager import RNGManager

    from avalanche_lvae.distributed import replica_digest

    RNGManager.set_random_seeds(0)
    model = LifelongVAE(hidden_dim=32)
    # Every metric that draws random numbers: sampled reconstructions (-ELBO), generated grids.
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters()), train_mb_size=50,
                                   train_epochs=2, eval_mb_size=100, eval_every=1 if evaluate == "periodic" else -1,
                                   evaluator=EvaluationPlugin(neg_elbo_metrics(), generated_samples_metrics(),
                                                              loggers=[]))
    for i, experience in enumerate(stream.train_stream):
        if evaluate == "periodic":
            strategy.train(experience, eval_streams=[stream.test_stream[: i + 1]])
        else:
            strategy.train(experience)
        if evaluate == "between":
            strategy.eval(stream.test_stream[: i + 1])
    return replica_digest(strategy.model), replica_digest(strategy.teacher)


def test_evaluating_leaves_the_training_run_unchanged(data_root):
    # The LVAE templates evaluate on a fork of torch's generators: whether and how often a run is
    # evaluated changes no weight of the student or of the teacher (the replay, noise and L_I draws
    # of the next experience are the same).
    stream = permuted_mnist(n_experiences=3, max_train_per_experience=200, max_test_per_experience=100,
                            dataset_root=data_root, seed=0)
    never = _final_digests(stream, "never")
    assert _final_digests(stream, "between") == never
    assert _final_digests(stream, "periodic") == never
