"""docs/results.md and README.md's headline table are what benchmarks/report.py writes from the JSON files."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def import_report():
    """benchmarks/report.py as a module (benchmarks/ is not a package; report.py imports its sibling)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.pop(0)
    return report


def test_results_document_and_headline_table_match_the_committed_json():
    # --check regenerates both documents in memory and compares them with the committed files.
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_a_changed_figure_makes_the_check_fail(tmp_path, monkeypatch):
    # The check compares figures, so a JSON edited after the document was written is caught.
    report = import_report()
    results = tmp_path / "results"
    results.mkdir()
    (results / "leaderboard.json").write_text(
        '{"command": "python benchmarks/leaderboard.py", "entries": {"lvae_smnist": {"final_avg_accuracy": 0.9, '
        '"final_avg_forgetting": 0.05, "train_seconds": 10.0}}}')
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.HEADLINE_START}\n{report.HEADLINE_END}\n")
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "RESULTS_DOC", tmp_path / "docs" / "results.md")
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.main([]) == 0
    assert "| lvae | 0.900 | 0.050 | 10 | 1 |" in readme.read_text()
    assert report.main(["--check"]) == 0
    (results / "leaderboard.json").write_text((results / "leaderboard.json").read_text().replace("0.9", "0.8"))
    assert report.main(["--check"]) == 1


def test_every_override_of_the_leaderboard_can_split_a_table():
    # report.TABLE_OVERRIDES names each hyperparameter that leaderboard.py overrides per entry, so that a run with a
    # new override flag cannot silently replace the run at the entry's own value.
    import importlib.util

    report = import_report()
    spec = importlib.util.spec_from_file_location("lvae_report_leaderboard", ROOT / "benchmarks" / "leaderboard.py")
    leaderboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaderboard)
    assert {"learning_rate", *leaderboard.ENTRY_OVERRIDES} == set(report.TABLE_OVERRIDES)


@pytest.mark.parametrize("override, heading", [('"learning_rate": 0.0001', "learning rate 0.0001"),
                                                ('"classification_weight": 784.0', "classification weight 784"),
                                                ('"continuous_dim": 100', "z_c dimensions 100"),
                                                ('"continuous_consistency_weight": 10.0',
                                                 "z_c consistency weight 10"),
                                                ('"replay_size": 384', "replayed rows 384"),
                                                ('"component_prior": "fitted"', "component prior fitted"),
                                                ('"replay_temperature": 0.8', "replay temperature 0.8"),
                                                ('"normalization": "layer"', "normalization layer")])
def test_an_overridden_hyperparameter_gets_its_own_table(tmp_path, monkeypatch, override, heading):
    # A run of the same entry with an entry-specific override (report.TABLE_OVERRIDES) must not replace the run
    # at the entry's own value.
    report = import_report()
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    entry = '"lvae_pmnist": {"final_avg_accuracy": %s, "final_avg_forgetting": 0.01, "train_seconds": 1.0}'
    (tmp_path / "leaderboard.json").write_text(
        '{"command": "own value", "overrides": {}, "entries": {%s}}' % (entry % "0.91"))
    (tmp_path / "leaderboard_override.json").write_text(
        '{"command": "overridden", "overrides": {%s}, "entries": {%s}}' % (override, entry % "0.92"))
    text = "\n".join(report.leaderboard_tables(report.leaderboard_files()))
    assert "| lvae | 0.910 |" in text and "| lvae | 0.920 |" in text
    assert f"**Permuted MNIST, 5 experiences, {heading}**" in text


def test_a_leaderboard_run_line_gives_its_thread_count_when_not_one(tmp_path, monkeypatch):
    report = import_report()
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    entry = '"%s_pmnist": {"final_avg_accuracy": 0.9, "final_avg_forgetting": 0.01, "train_seconds": 1.0}'
    for name, threads in (("naive", 1), ("ewc", 2)):
        (tmp_path / f"leaderboard_{name}.json").write_text(
            '{"command": "run %s", "overrides": {}, "torch_threads": %d, "entries": {%s}}'
            % (name, threads, entry % name))
    (tmp_path / "leaderboard_lwf.json").write_text(
        '{"command": "run lwf", "overrides": {}, "entries": {%s}}' % (entry % "lwf"))  # recorded no count
    text = "\n".join(report.leaderboard_tables(report.leaderboard_files()))
    assert "Run 1: `run ewc` (2 threads)" in text
    assert "Run 2: `run lwf`\n" in text + "\n" and "Run 3: `run naive`\n" in text + "\n"


def test_a_removed_choice_is_rejected_by_the_library_and_its_table_says_so(tmp_path, monkeypatch):
    # report.REMOVED_CHOICES explains commands that no longer parse; each value must really be refused today.
    from avalanche_lvae import LifelongVAE

    report = import_report()
    for name, value in report.REMOVED_CHOICES:
        with pytest.raises(ValueError, match=name):
            LifelongVAE(**{name: value})
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "leaderboard.json").write_text(
        '{"command": "plain", "overrides": {"normalization": "none"}, "entries": {"lvae_large_pmnist": '
        '{"final_avg_accuracy": 0.9, "final_avg_forgetting": 0.01, "train_seconds": 1.0}}}')
    text = "\n".join(report.leaderboard_tables(report.leaderboard_files()))
    assert report.REMOVED_CHOICES[("normalization", "none")] in text
