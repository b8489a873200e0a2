"""The experiment runner behind ``avalanche-lvae run`` and the reproduction scripts of ``benchmarks/``.

One concept per module:

- :mod:`.cli`: the ``avalanche-lvae`` command (``main``) and ``run <stream>`` (``run_stream``);
- :mod:`.stream_specs`: the streams the runner knows and their sizes;
- :mod:`.arguments`: the flags of ``run`` and their checks (one ``error:`` line, exit code 2);
- :mod:`.strategies`: the strategies compared, their metrics, and :func:`~.strategies.lvae_settings`,
  the one place where flags become the lifelong model's arguments;
- :mod:`.runner`: train / evaluate / checkpoint one strategy, experience by experience;
- :mod:`.checkpoints`: atomic per-experience checkpoints and resuming;
- :mod:`.reference`: the Frechet distance's reference classifier of a run;
- :mod:`.results`: the printed table and the results JSON;
- :mod:`.plots`: the ``--plots`` PNGs;
- :mod:`.reproduction`: a paper experiment over several seeds (``benchmarks/reproduce_*.py``);
- :mod:`.seed_summary`: mean and std over seeds, their table and figure.
"""
