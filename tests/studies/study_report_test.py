"""Study reports on synthetic sweeps: grouping, intervals, targets, relative drops, files."""

import csv
import dataclasses
import io
import json
import math

import numpy as np
import pytest

from fedjax_med.studies import document, figures, grid, results, stats, tables
from fedjax_med.studies.specs import (
  BarFigure,
  CurveFigure,
  HeatmapFigure,
  Post,
  Relative,
  ReportSpec,
  SiteWins,
  Study,
  Target,
)


def make_study(**report):
  return Study(
      name="toy", preset="cpu", base="configs/quickstart.py",
      grids=({"data": {"d1": {}, "d2": {}}, "setting": {"central": {}, "fed": {}}},),
      seeds=(0, 1, 2), report=ReportSpec(table=("data", "setting"), **report),
      description="Toy study.\n\n  python launch/sweep.py --study=x\n\nMore text.",
  )


# Final accuracy of each (data, setting, seed) and its evaluation curve.
ACC = {("d1", "central", 0): 0.90, ("d1", "central", 1): 0.86, ("d1", "central", 2): 0.88,
       ("d1", "fed", 0): 0.80, ("d1", "fed", 1): 0.70, ("d1", "fed", 2): 0.84,
       ("d2", "central", 0): 0.60, ("d2", "central", 1): 0.62, ("d2", "central", 2): 0.64,
       ("d2", "fed", 0): 0.50, ("d2", "fed", 1): 0.55}  # (d2, fed, 2) never finished


def write_runs(sweep_dir, study):
  for run in grid.expand(study):
    key = (run.axes["data"], run.axes["setting"], int(run.axes["seed"]))
    d = sweep_dir / run.name
    d.mkdir(parents=True)
    curve = [{"round": r, "split": "test", "accuracy": a, "auc": 0.5, "loss": 1.0,
              "elapsed_s": 10.0 * r, "bytes_up": 1_000_000 * r}
             for r, a in ((1, 0.5), (2, 0.83), (3, ACC.get(key, 0.4)))]
    analysis = {"round": 3, "split": "analysis", "loss": 0.25, "lambda_max": 10.0 + key[2],
                "seconds": {"lanczos": 1.0}}
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in curve + [analysis]) + "\n")
    if key not in ACC:
      continue
    summary = {"test": {"accuracy": ACC[key], "auc": 0.9, "loss": 0.75}, "total_bytes_up": 3e6,
               "wall_time_s": 30.0, "engine": {"client_chunk_size": 1},
               "clients": {"worst": ACC[key] - 0.1, "mean": ACC[key], "accuracy": [0.1, 0.2]}}
    (d / "summary.json").write_text(json.dumps(summary))


def test_mean_ci_matches_student_t():
  mean, ci, n = stats.mean_ci([0.9, 0.86, 0.88])
  assert n == 3 and mean == pytest.approx(0.88)
  assert ci == pytest.approx(4.303 * np.std([0.9, 0.86, 0.88], ddof=1) / math.sqrt(3))
  assert math.isnan(stats.mean_ci([0.5])[1]) and stats.mean_ci([None, 0.5])[2] == 1
  assert stats.mean_ci([])[2] == 0
  assert stats.t_quantile(1) == 12.706 and stats.t_quantile(100) == 1.96


def test_rows_intervals_and_missing_runs(tmp_path):
  study = make_study()
  write_runs(tmp_path, study)
  runs = results.collect(study, str(tmp_path))
  assert len(runs) == 12 and sum(r.complete for r in runs) == 11
  rows = tables.aggregate(runs, ["data", "setting"], ["test.accuracy", "clients.worst"],
                             grid.axis_order(study))
  assert [(r["data"], r["setting"]) for r in rows] == [
      ("d1", "central"), ("d1", "fed"), ("d2", "central"), ("d2", "fed")]
  for r in rows:
    accs = [ACC[(r["data"], r["setting"], s)] for s in range(3) if (r["data"], r["setting"], s)
            in ACC]
    mean, ci, n = r["test.accuracy"]
    assert n == len(accs) == r["n_complete"] and r["n_runs"] == 3
    assert mean == pytest.approx(np.mean(accs))
    t = {2: 12.706, 3: 4.303}[n]
    assert ci == pytest.approx(t * np.std(accs, ddof=1) / math.sqrt(n))
    assert r["clients.worst"][0] == pytest.approx(np.mean(accs) - 0.1)
  # analysis records and the generalization gap
  r0 = runs[0]
  assert r0.metrics["analysis.lambda_max"] == 10.0 and "analysis.seconds.lanczos" not in r0.metrics
  assert r0.metrics["gap.loss"] == pytest.approx(0.75 - 0.25)
  md = tables.to_markdown(rows, ["data", "setting"], ["test.accuracy"])
  lines = md.splitlines()
  assert len(lines) == 2 + 4 and lines[2].startswith("| d1 | central | 0.880 ± ")
  assert lines[-1].endswith("| 2/3 |")  # n shows the incomplete run
  table = list(csv.DictReader(io.StringIO(tables.to_csv(rows, ["data", "setting"],
                                                           ["test.accuracy"]))))
  assert len(table) == 4 and float(table[1]["test.accuracy.mean"]) == pytest.approx(0.78)
  assert table[3]["test.accuracy.n"] == "2" and table[3]["n_runs"] == "3"


def test_targets_are_relative_to_matching_reference_runs(tmp_path):
  study = make_study(target=Target(reference={"setting": "central"}, fraction=0.95))
  write_runs(tmp_path, study)
  by_name = {r.name: r for r in results.collect(study, str(tmp_path))}
  # d1 target = 0.95 * 0.88 = 0.836: seed 0 (0.83 at round 2, 0.80 final) never reaches it.
  fed0 = by_name["data-d1+setting-fed+seed-0"].metrics
  assert fed0["target.accuracy"] == pytest.approx(0.836)
  assert fed0["target.reached"] == 0 and fed0["target.round"] is None
  fed2 = by_name["data-d1+setting-fed+seed-2"].metrics
  assert fed2["target.round"] == 3 and fed2["target.elapsed_s"] == 30 and fed2["target.mb_up"] == 3
  # d2 target = 0.95 * 0.62 = 0.589: reached at round 2 (0.83) by everyone.
  d2 = by_name["data-d2+setting-fed+seed-1"].metrics
  assert d2["target.accuracy"] == pytest.approx(0.589) and d2["target.round"] == 2
  rows = tables.aggregate(list(by_name.values()), ["data", "setting"], ["target.round"])
  assert rows[1]["target.reached"] == 1 and rows[1]["target.round"][0] == 3


def test_relative_accuracy_is_paired_by_seed(tmp_path):
  study = make_study(relative=Relative(axis="setting", reference="central"))
  write_runs(tmp_path, study)
  by_name = {r.name: r for r in results.collect(study, str(tmp_path))}
  m = by_name["data-d1+setting-fed+seed-1"].metrics
  assert m["relative.accuracy"] == pytest.approx(0.70 / 0.86)
  assert m["relative.drop"] == pytest.approx(0.16)


def test_site_wins_compare_each_site_with_the_same_seed_reference(tmp_path):
  study = make_study(site_wins=(SiteWins("setting", "central"),
                                SiteWins("setting", "central", field="sites_finetuned")))
  write_runs(tmp_path, study)
  per_site = {"central": [0.6, 0.7, None, 0.5], "fed": [0.8, 0.7, 0.9, 0.4]}
  for run in grid.expand(study):
    path = tmp_path / run.name / "summary.json"
    if not path.exists():
      continue
    summary = json.loads(path.read_text())
    values = per_site[run.axes["setting"]]
    summary["sites"] = {"balanced_accuracy": {"mean": 0.6, "per_site": values}}
    summary["sites_finetuned"] = {"balanced_accuracy": {"per_site": [v and v + 0.2
                                                                     for v in values]}}
    path.write_text(json.dumps(summary))
  by_name = {r.name: r for r in results.collect(study, str(tmp_path))}
  m = by_name["data-d1+setting-fed+seed-1"].metrics
  # site 2 is undefined in the reference: 3 sites compared, fed wins 1, ties 1, loses 1
  assert (m["sites_vs_central.wins"], m["sites_vs_central.losses"],
          m["sites_vs_central.compared"]) == (1, 1, 3)
  assert m["sites_vs_central.gain"] == pytest.approx((0.2 + 0.0 - 0.1) / 3)
  assert m["sites_finetuned_vs_central.wins"] == 3  # 1.0 > 0.6, 0.9 > 0.7, 0.6 > 0.5
  assert m["sites_finetuned_vs_central.gain"] == pytest.approx((0.4 + 0.2 + 0.1) / 3)
  central = by_name["data-d1+setting-central+seed-1"].metrics
  assert central["sites_vs_central.wins"] == 0 and central["sites_vs_central.gain"] == 0
  # a site never sampled in either run is left out of the comparison
  path = tmp_path / "data-d1+setting-central+seed-1" / "summary.json"
  summary = json.loads(path.read_text())
  summary["sites"]["never_sampled"] = {"sites": [0]}
  path.write_text(json.dumps(summary))
  m = {r.name: r for r in results.collect(study, str(tmp_path))}["data-d1+setting-fed+seed-1"]
  assert (m.metrics["sites_vs_central.wins"], m.metrics["sites_vs_central.compared"]) == (0, 2)
  # no partner (d2 fed seed 2 never finished): nothing filled
  assert "sites_vs_central.wins" not in by_name["data-d2+setting-fed+seed-2"].metrics


def test_make_report_writes_markdown_csv_and_figures(tmp_path):
  pytest.importorskip("matplotlib")
  study = make_study(
      target=Target(reference={"setting": "central"}),
      figures=(CurveFigure(x="round", color="setting", panel="data"),
               BarFigure(x="setting", color="data", metrics=("test.accuracy",)),
               HeatmapFigure(rows="data", cols="setting", metric="test.accuracy")))
  write_runs(tmp_path / "sweep", study)
  out = tmp_path / "docs" / "toy.md"
  result = document.make_report(study, str(tmp_path / "sweep"), "toy.py:cpu", str(out))
  text = out.read_text()
  assert "preset `cpu`" in text and "fedjax-med-report --study=toy.py:cpu" in text
  assert "fedjax-med-sweep --study=toy.py:cpu" in text  # no sweep.json: the usual command
  assert "| d2 | fed |" in text and "data-d2+setting-fed+seed-2" in text  # listed as incomplete
  assert "More text." in text and "  python launch/sweep.py --study=x" not in text
  assert (tmp_path / "docs" / "toy.csv").exists()
  assert len(result["figures"]) == 3
  for _, name in result["figures"]:
    png = tmp_path / "docs" / "toy" / name
    assert png.read_bytes()[:4] == b"\x89PNG" and f"toy/{name}" in text


def test_report_cli_exits_2_without_sweep_dir(tmp_path):
  import subprocess
  import sys
  from pathlib import Path

  repo = Path(__file__).resolve().parents[2]
  res = subprocess.run([sys.executable, str(repo / "analysis" / "study_report.py"),
                        "--study=configs/studies/communication.py:cpu",
                        f"--workdir={tmp_path / 'none'}", f"--output={tmp_path / 'x.md'}"],
                       capture_output=True, text=True, cwd=repo, timeout=300)
  assert res.returncode == 2 and "does not exist" in res.stderr
  assert not (tmp_path / "x.md").exists()


def test_incomplete_runs_show_their_error(tmp_path):
  (tmp_path / "logs").mkdir()
  (tmp_path / "logs" / "a.log").write_text(
      "$ python launch/main.py\nerror: non-finite training loss (nan) in round 3; stopped. "
      "The last good checkpoint (round 2) is kept in x.\n")
  (tmp_path / "logs" / "b.log").write_text("$ python launch/main.py\nround 1/5\n")
  assert results.run_error(str(tmp_path), "a") == (
      "error: non-finite training loss (nan) in round 3; stopped")
  assert "interrupted" in results.run_error(str(tmp_path), "b")
  assert results.run_error(str(tmp_path), "c") == "not run (yet)"


def test_landscape_table_and_plots_of_post_steps(tmp_path):
  out = tmp_path / "sweep" / "landscape" / "ab"
  out.mkdir(parents=True)
  # On the line A -> B (t in [0, 1]) the loss 2.5 at t=0.5 exceeds the chord (1 + 2) / 2 by 1.
  (out / "landscape.json").write_text(json.dumps({
      "line_1": [2.0, 1.0, 3.0],
      "interpolation": {"t": [-0.5, 0.0, 0.5, 1.0, 1.5], "loss": [3.0, 1.0, 2.5, 2.0, 4.0]}}))
  (out / "interpolation.png").write_bytes(b"\x89PNG")
  post = (Post("ab", ("analysis/landscape.py",), "{sweep}/landscape/ab/landscape.json"),
          Post("never", ("analysis/landscape.py",), "{sweep}/landscape/never/landscape.json"))
  study = dataclasses.replace(make_study(), post=post)
  (tmp_path / "figs").mkdir()
  written, md = figures.landscapes(study, str(tmp_path / "sweep"), str(tmp_path / "figs"), "cpu")
  assert written == [("ab: interpolation", "cpu_ab_interpolation.png")]
  assert (tmp_path / "figs" / "cpu_ab_interpolation.png").exists()
  header, _, row = md.splitlines()
  assert header == ("| step | loss at A | loss at ±span (dir 1, max) | loss at B | barrier on A→B |")
  assert row == "| ab | 1.0000 | 3.0000 | 2.0000 | 1.0000 |"


def test_matched_sharpness_is_read_at_the_loss_every_run_of_the_group_reached(tmp_path):
  """Group level = the highest best loss; each run's first record at or below it."""
  from fedjax_med.studies import results
  from fedjax_med.studies.specs import Matched

  def run(name, data, losses, complete=True):
    records = [{"round": i + 1, "split": "analysis", "loss": x, "lambda_max": 10.0 * x}
               for i, x in enumerate(losses)]
    return results.RunResult(name, {"data": data, "seed": "0"}, {}, [], complete, records)

  runs = [run("fast", "d1", [0.9, 0.4, 0.2, 0.1]),
          run("slow", "d1", [1.0, 0.8, 0.5, 0.3]),  # best 0.3: the d1 level
          run("other", "d2", [0.7, 0.6]),  # its own group: level 0.6
          run("unfinished", "d1", [2.0], complete=False)]  # neither sets nor gets a level
  results.add_matched(runs, Matched(within=("data",)))
  fast, slow, other, unfinished = (r.metrics for r in runs)
  assert fast["matched.level"] == 0.3 and fast["matched.round"] == 3  # first <= 0.3 is 0.2
  assert fast["matched.lambda_max"] == pytest.approx(2.0)
  assert slow["matched.round"] == 4 and slow["matched.loss"] == 0.3
  assert other["matched.level"] == 0.6 and other["matched.round"] == 2
  assert unfinished == {}
  with pytest.raises(ValueError, match="report.matched.within"):
    from fedjax_med.studies import grid
    from fedjax_med.studies.specs import ReportSpec, Study
    grid.check(Study(name="s", preset="cpu", base="b.py", grids=({"data": {"d1": {}}},),
                        seeds=(0,), report=ReportSpec(matched=Matched(within=("nope",)))))
