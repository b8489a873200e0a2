"""Which z_d value each permutation uses, and what each value replays: a lifelong VAE on permuted MNIST, boundary
by boundary.

Replay generates past distribution j with z_d fixed to j (LGM Sec. 4.3), so it replays every past permutation
only if permutation j's images were encoded on value j. For each model saved by
``benchmarks/leaderboard.py --save-models DIR`` (``model_exp<i>.pt``: trained through experience i, the teacher
of experience i + 1) this measures

- ``real_usage[p]``: over the first ``--n-test`` test images of permutation p <= i, the share whose most
  probable z_d value under q(z_d|x) is each value (row p of a usage matrix; ``real_usage[p][p]`` is the share on
  its own value);
- ``replay_shares[j]``: over ``--n-replay`` images generated with z_d = j as the teacher replays them (z_c from
  the model's prior, the Bernoulli means), the share that shows each permutation (``replay_shares[j][j]`` is the
  row purity of value j).

Which permutation a generated image shows is read without a trained reference: each of the stream's permutations
is undone in turn, and the image is assigned to the one that gives the smoothest 28 x 28 picture (least total
variation). Random pixel permutations destroy the smoothness of a digit, so on real test images this names the
permutation without error (``detector_accuracy`` in the JSON).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/leaderboard.py --entries lvae_large_pmnist --n-experiences 10 ... \\
        --save-models /tmp/models
    OMP_NUM_THREADS=1 python benchmarks/component_usage.py --models /tmp/models/lvae_large_pmnist \\
        --out benchmarks/results/<run>/component_usage.json
"""

import argparse
import os
import sys
from pathlib import Path

import torch

from avalanche_lvae.data import load_tensors
from avalanche_lvae.experiments.reproduction import STREAM_SEED, command_line
from avalanche_lvae.experiments.results import write_json_atomic
from avalanche_lvae.streams import pixel_permutations

SIDE = 28


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """``[n, 784]`` -> ``[n]``: the sum of absolute differences between neighbouring pixels."""
    grid = images.view(-1, SIDE, SIDE)
    return ((grid[:, 1:] - grid[:, :-1]).abs().sum((1, 2)) + (grid[:, :, 1:] - grid[:, :, :-1]).abs().sum((1, 2)))


def detect_permutation(images: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """``[n]`` index of the permutation (rows of ``permutations``, as ``x.flatten(1)[:, perm]`` applied them)
    whose inverse makes each image smoothest."""
    scores = []
    for perm in permutations:
        undone = torch.empty_like(images)
        undone[:, perm] = images
        scores.append(total_variation(undone))
    return torch.stack(scores, 1).argmin(1)


def shares(values: torch.Tensor, size: int) -> list:
    return [round(share, 4) for share in (torch.bincount(values, minlength=size).float() / len(values)).tolist()]


@torch.no_grad()
def measure(models_dir: Path, n_test: int, n_replay: int, dataset_root=None) -> dict:
    test_images = load_tensors("MNIST", False, dataset_root)[0][:n_test].flatten(1).float()
    paths = sorted(models_dir.glob("model_exp*.pt"), key=lambda path: int(path.stem.removeprefix("model_exp")))
    if not paths:
        raise ValueError(f"{models_dir} holds no model_exp<i>.pt: save them with leaderboard.py --save-models.")
    permutations = torch.stack([torch.arange(SIDE * SIDE)] + pixel_permutations(len(paths) - 1, STREAM_SEED))
    permuted = [test_images[:, perm] for perm in permutations]
    truth = torch.arange(len(permutations)).repeat_interleave(n_test)
    detector_accuracy = (detect_permutation(torch.cat(permuted), permutations) == truth).float().mean().item()
    boundaries = []
    torch.manual_seed(0)
    for i, path in enumerate(paths):
        model = torch.load(path, weights_only=False).eval()
        values = model.discrete_dim
        if values < i + 1:
            raise ValueError(f"{path} has {values} z_d values after {i + 1} experiences: this measures a model that "
                             "grows one value per experience (LifelongVAEStrategy's grow_discrete=True).")
        real_usage = [shares(model.encode(permuted[p].view(-1, 1, SIDE, SIDE))[2].argmax(-1), values)
                      for p in range(i + 1)]
        replay_shares = [shares(detect_permutation(model.sample(n_replay, component=j)[0].flatten(1),
                                                   permutations[: i + 1]), i + 1)
                         for j in range(i + 1)]
        boundaries.append(dict(experience=i, real_usage=real_usage, replay_shares=replay_shares))
    return dict(detector_accuracy=detector_accuracy, n_test=n_test, n_replay=n_replay, boundaries=boundaries)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=Path, help="a folder of model_exp<i>.pt")
    parser.add_argument("--out", required=True, type=Path, help="the JSON file to write")
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-replay", type=int, default=1000)
    parser.add_argument("--dataset-root", default=None)
    args = parser.parse_args(argv)
    try:
        result = measure(args.models, args.n_test, args.n_replay, args.dataset_root)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out.parent, exist_ok=True)
    write_json_atomic(str(args.out), dict(command=command_line(__file__, argv), **result))
    for boundary in result["boundaries"]:
        i = boundary["experience"]
        own = [row[p] for p, row in enumerate(boundary["real_usage"])]
        purity = [row[j] for j, row in enumerate(boundary["replay_shares"])]
        print(f"after experience {i}: own-value share {own}, replay purity {purity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
