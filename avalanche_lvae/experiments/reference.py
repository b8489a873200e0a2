"""The reference classifier of the Frechet distance for a run: its cache name, loading, and JSON summary.

The classifier (``avalanche_lvae.metrics.reference_classifier``) is trained
on all training data of the stream once and cached in
``benchmarks/results/cache/reference_<name>_seed<seed>.pt`` (or
``$LVAE_CACHE_DIR``); ``<name>`` identifies the data: ``permuted_mnist5``
for the full stream, ``permuted_mnist5_train2000`` with
``--max-train-per-experience 2000``. The cache key does not include the
training epochs: a cached file is reused whatever it was trained with (its
epochs are printed and stored in the results JSON).
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["reference_name", "build_reference", "reference_summary"]


def reference_name(stream_name: str, args) -> str:
    """Cache name of the reference classifier: it must identify the training data (the seed is added by the cache)."""
    name = f"{stream_name}{args.n_experiences}"
    if args.max_train_per_experience is not None:
        name += f"_train{args.max_train_per_experience}"
    return name


def build_reference(stream_name: str, benchmark, args, epochs: int):
    """The reference classifier of the Frechet distance: loaded from its cache file, or trained once.

    ``epochs`` is chosen per stream to keep a first run on a fresh machine
    short (about 100 s on one core for the full data).
    """
    from avalanche_lvae.metrics import reference_classifier

    ref = reference_classifier(reference_name(stream_name, args), benchmark.train_stream, benchmark.test_stream,
                               seed=args.seed, epochs=epochs, device=args.device)
    meta = ref.metadata
    print(f"reference classifier {meta['benchmark_name']}: {os.path.basename(meta['cache_path'])} "
          f"({meta['epochs']} epoch(s), test accuracy {meta['test_accuracy']:.4f})")
    return ref


def reference_summary(ref) -> Optional[dict]:
    """The ``reference_classifier`` entry of a results JSON (None without a reference)."""
    if ref is None:
        return None
    meta = ref.metadata
    keys = ("test_accuracy", "test_accuracy_per_experience", "epochs", "n_train", "train_seconds")
    return dict(name=meta["benchmark_name"], cache_file=os.path.basename(meta["cache_path"]),
                **{k: meta.get(k) for k in keys})
