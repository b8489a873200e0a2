"""Packaging for avalanche-lvae: a lifelong VAE strategy for Avalanche."""

from setuptools import find_packages, setup

setup(
    name="avalanche-lvae",
    version="0.1.0",
    description=(
        "Lifelong generative modelling (student-teacher VAE with a classifier) "
        "as an Avalanche continual-learning strategy."
    ),
    packages=find_packages(include=["avalanche_lvae", "avalanche_lvae.*"]),
    python_requires=">=3.10",
    install_requires=[
        "avalanche-lib>=0.6.0,<0.7",
        "torch",
        "torchvision",
        "numpy",
        "pytorch-fid",
        "tqdm",
        "matplotlib",
    ],
    # "benchmarks": the QP solver of Avalanche's GEM, for benchmarks/leaderboard.py.
    extras_require={"test": ["pytest", "pytest-timeout"], "benchmarks": ["quadprog"]},
    # `avalanche-lvae run <stream> [flags]`; also `python -m avalanche_lvae`.
    entry_points={"console_scripts": ["avalanche-lvae=avalanche_lvae.experiments.cli:main"]},
)
