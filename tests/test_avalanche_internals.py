"""The private Avalanche API this package relies on, checked against the installed Avalanche.

Each test exercises one private symbol the way :mod:`avalanche_lvae` uses it;
when an Avalanche release changes it, the test fails with one message naming
the Avalanche version and the symbol (not a traceback from a training loop).
"""

import ast
import contextlib
from pathlib import Path

import pytest
import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from torch.utils.data import TensorDataset

from avalanche_lvae import avalanche_internals
from avalanche_lvae.avalanche_internals import AvalancheInternalsError, avalanche_version
from avalanche_lvae.preloading import PreloadedTaskBalancedDataLoader, is_tensor_backed
from avalanche_lvae.streams import benchmark_from_tensors

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Avalanche's private names; outside avalanche_internals.py none may be used in the package,
#: the examples or the benchmarks.
PRIVATE_NAMES = {
    "_flat_data",
    "_datasets",
    "_transform_groups",
    "_frozen_transform_groups",
    "_FlatDataWithTransform",
    "_make_pytorch_loader",
    "_create_samplers",
    "_make_data_loader_with_batched_sampler",
    "_obtain_common_dataloader_parameters",
}


@contextlib.contextmanager
def relied_on(symbol):
    """Turn any failure inside the block into one message naming Avalanche's version and the symbol."""
    failure = None
    try:
        yield
    except AvalancheInternalsError as error:  # already names the version and the symbol
        failure = str(error)
    except Exception as error:  # an AttributeError, a changed signature or a changed behaviour alike
        failure = (f"avalanche-lib {avalanche_version()} broke {symbol}, which avalanche_lvae relies on "
                   f"(see avalanche_lvae/avalanche_internals.py): {type(error).__name__}: {error}")
    if failure is not None:  # raised outside the except block: one message, no chained traceback
        pytest.fail(failure, pytrace=False)


def _tiny_experience_data():
    x, y = torch.rand(10, 1, 28, 28), torch.arange(10) % 3
    return benchmark_from_tensors([(x, y)], [(x, y)]).train_stream[0].dataset.train()


def test_dataset_tree():
    with relied_on("AvalancheDataset._flat_data / FlatData._datasets / _FlatDataWithTransform._transform_groups"):
        data = _tiny_experience_data()
        root = avalanche_internals.flat_data(data)
        children, groups = avalanche_internals.flat_data_node(root)
        assert len(groups) == 2 and all(g.current_group == "train" for g in groups)

        def leaves(node):
            layout = avalanche_internals.flat_data_node(node)
            return [node] if layout is None else [leaf for child in layout[0] for leaf in leaves(child)]

        assert all(isinstance(leaf, TensorDataset) for leaf in leaves(root)) and leaves(root)
        assert is_tensor_backed(data)
        # A transform set on the dataset must be visible in the tree read here.
        assert not is_tensor_backed(data.replace_current_transform_group(lambda x: x))
        assert not is_tensor_backed(data.eval().freeze_transforms().replace_current_transform_group(lambda x: x))
    assert avalanche_internals.flat_data(TensorDataset(torch.zeros(2))) is None


def test_loader_hook_builds_each_epochs_loader():
    with relied_on("MultiDatasetDataLoader._make_pytorch_loader and _create_samplers"):
        data = _tiny_experience_data()
        built, created = [], []

        class Spy(PreloadedTaskBalancedDataLoader):
            def make_pytorch_loader(self, batch_sampler):
                built.append(batch_sampler)
                return super().make_pytorch_loader(batch_sampler)

            def samplers_created(self, samplers):
                created.append(samplers)
                super().samplers_created(samplers)

        loader = Spy(data, batch_size=4, shuffle=False)
        epochs = [list(loader) for _ in range(2)]
        assert len(built) == 2 and len(created) == 2  # both called by Avalanche once per epoch
        reference = list(TaskBalancedDataLoader(data, batch_size=4, shuffle=False))
        for batches in epochs:
            assert len(batches) == len(reference) == 3
            assert all(torch.equal(a, b) for got, ref in zip(batches, reference) for a, b in zip(got, ref))


def test_batched_sampler_loader():
    with relied_on("avalanche.benchmarks.utils.data_loader._make_data_loader_with_batched_sampler"):
        sampler = [[0, 1], [2]]
        loader = avalanche_internals.loader_from_batch_sampler(
            TensorDataset(torch.arange(3)), sampler, dict(batch_size=7, shuffle=True, drop_last=True))
        assert [b[0].tolist() for b in loader] == [[0, 1], [2]]


def _naive_strategy(**kwargs):
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    model = torch.nn.Linear(2, 2)
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=5,
                 evaluator=EvaluationPlugin(loggers=[]), **kwargs)


def test_common_dataloader_parameters():
    with relied_on("BaseSGDTemplate._obtain_common_dataloader_parameters"):
        params = avalanche_internals.common_dataloader_parameters(_naive_strategy(), batch_size=5, shuffle=True)
        assert params["batch_size"] == 5 and params["shuffle"] is True


def test_template_members_used_by_the_lvae_templates():
    # LVAETemplateMixin (training.py) reads the template's loss module and extends its minibatch hook.
    criterion = torch.nn.CrossEntropyLoss()
    with relied_on("BaseSGDTemplate._criterion"):
        assert _naive_strategy(criterion=criterion)._criterion is criterion
    with relied_on("SupervisedProblem._unpack_minibatch"):
        from avalanche.training.templates.problem_type import SupervisedProblem

        assert callable(SupervisedProblem.__dict__["_unpack_minibatch"])


def test_synaptic_intelligence_extract_weights_is_a_class_level_staticmethod():
    # avalanche_fixes.synaptic_intelligence_weight_copies replaces it on the class.
    with relied_on("SynapticIntelligencePlugin.extract_weights"):
        from avalanche.training.plugins import SynapticIntelligencePlugin

        assert isinstance(SynapticIntelligencePlugin.__dict__["extract_weights"], staticmethod)


def test_a_missing_symbol_names_avalanche_version_and_symbol(monkeypatch):
    from avalanche.benchmarks.utils import data_loader

    monkeypatch.delattr(data_loader, "_make_data_loader_with_batched_sampler")
    loader = PreloadedTaskBalancedDataLoader(_tiny_experience_data(), batch_size=4)
    with pytest.raises(AvalancheInternalsError) as info:
        next(iter(loader))
    msg = str(info.value)
    assert f"avalanche-lib {avalanche_version()} has no" in msg and avalanche_version()[0].isdigit()
    assert "_make_data_loader_with_batched_sampler" in msg and "avalanche_internals.py" in msg

    data = AvalancheDataset([TensorDataset(torch.zeros(2))])
    del data._flat_data
    with pytest.raises(AvalancheInternalsError, match="AvalancheDataset._flat_data"):
        is_tensor_backed(data)  # never a silent False that would hide a missing transform check


def test_private_names_are_used_only_in_avalanche_internals():
    offenders = []
    for folder in ("avalanche_lvae", "examples", "benchmarks"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path.name == "avalanche_internals.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Attribute):
                    names = [node.attr]
                elif isinstance(node, ast.FunctionDef) and node.name.startswith(("_make", "_obtain")):
                    names = [node.name]  # overriding a private hook (a function of our own may be named _datasets)
                elif isinstance(node, ast.ImportFrom):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names = [node.value]
                offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {n}" for n in names if n in PRIVATE_NAMES]
    assert not offenders, "Avalanche private names outside avalanche_internals.py:\n" + "\n".join(offenders)
