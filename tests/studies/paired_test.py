"""Paired comparisons, the Holm correction, per-seed CSV and dotted metric paths.

References: Holm's procedure as its definition (sequential rejection) and as a
double loop over sorted p-values; p-values from ``scipy.stats`` called directly on
differences paired by hand.
"""

import csv
import io
import json
import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from fedjax_med.studies import document, grid, paired, results, stats, tables
from fedjax_med.studies.specs import Paired, Relative, ReportSpec, Study, Target

# ----------------------------------------------------------------------------- Holm


def holm_by_definition(p, alpha):
  """Holm (1979): reject p_(1), p_(2), ... while p_(k) <= alpha / (m - k + 1); stop at the
  first that is not. Returns the set of rejected indices."""
  m = len(p)
  rejected = set()
  for k, i in enumerate(sorted(range(m), key=lambda i: p[i])):
    if p[i] > alpha / (m - k):
      break
    rejected.add(i)
  return rejected


def holm_double_loop(p):
  """Adjusted p_i = max over p_j <= p_i (in sorted order) of min(1, (m - rank_j) p_j)."""
  m = len(p)
  ranked = sorted(range(m), key=lambda i: p[i])
  out = [0.0] * m
  for k, i in enumerate(ranked):
    out[i] = max(min(1.0, (m - j) * p[ranked[j]]) for j in range(k + 1))
  return out


def test_holm_hand_example():
  # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> max(0.06, 0.04)
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  # 0.3 x 3 > 1 is capped at 1; the later ones inherit the running maximum
  assert stats.holm([0.3, 0.5, 0.9]) == pytest.approx([0.9, 1.0, 1.0])
  assert stats.holm([0.02]) == [0.02] and stats.holm([]) == []


@pytest.mark.parametrize("seed", range(20))
def test_holm_matches_references_on_random_pvalues(seed):
  rng = np.random.default_rng(seed)
  m = int(rng.integers(1, 15))
  p = rng.uniform(0, 1, m) ** rng.uniform(1, 6)  # skewed towards 0, so some are rejected
  if seed % 4 == 0:
    p[: m // 2] = p[0]  # ties
  adj = stats.holm(p)
  assert adj == pytest.approx(holm_double_loop(list(p)), abs=1e-15)
  for alpha in (0.001, 0.01, 0.05, 0.1, 0.5):
    assert {i for i, a in enumerate(adj) if a <= alpha} == holm_by_definition(list(p), alpha)
  adj = np.asarray(adj)
  assert np.all(adj >= p) and np.all(adj <= 1)
  order = np.argsort(p, kind="stable")
  assert np.all(np.diff(adj[order]) >= 0)  # monotone in the raw p-values


def test_holm_rejects_bad_pvalues():
  with pytest.raises(ValueError, match="finite"):
    stats.holm([0.1, math.nan])
  with pytest.raises(ValueError):
    stats.holm([1.5])


# ----------------------------------------------------------------------------- paired_test


@pytest.mark.parametrize("d", [[0.1, -0.05, 0.2], [0.03, 0.01, 0.02, -0.01, 0.05, 0.04],
                               [0.1, 0.0, 0.2, 0.3], [0.1, 0.1, -0.2, 0.3, 0.25]])
def test_paired_test_matches_scipy(d):
  t = stats.paired_test(d)
  assert t.n == len(d) and t.mean == pytest.approx(np.mean(d))
  assert t.ci == pytest.approx(stats.t_quantile(len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d)))
  assert t.t_p == pytest.approx(sp_stats.ttest_1samp(d, 0).pvalue)
  assert t.wilcoxon_p == pytest.approx(sp_stats.wilcoxon(d, zero_method="wilcox").pvalue)
  assert t.wilcoxon_method == "exact" and t.note == ""


def test_wilcoxon_is_exact_for_three_pairs():
  # n = 3, all positive: 1 of the 2^3 equally likely sign patterns is as extreme on each side.
  assert stats.paired_test([0.1, 0.2, 0.3]).wilcoxon_p == pytest.approx(2 / 8)


@pytest.mark.parametrize("d,note", [([], "no pairs"), ([0.1], "fewer than 2 pairs"),
                                    ([0.0, 0.0, 0.0], "all differences zero"),
                                    ([2.0, 2.0, 2.0], "constant difference")])
def test_paired_test_says_why_there_is_no_t_test(d, note):
  t = stats.paired_test(d)
  assert t.t_p is None and t.note == note


# ----------------------------------------------------------------------------- synthetic sweep

SEEDS = (0, 1, 2, 3, 4)
# test.accuracy = 0.80 + effect + noise; "big" is far outside the seed noise, "null" is not.
EFFECT = {"ref": 0.0, "big": 0.10, "null": 0.0}


def make_study(**report):
  return Study(name="syn", preset="cpu", base="configs/quickstart.py",
               grids=({"data": {"d1": {}, "d2": {}}, "alg": {"ref": {}, "big": {}, "null": {}}},),
               seeds=SEEDS, report=ReportSpec(table=("data", "alg"), **report))


def values():
  """(data, alg, seed) -> test accuracy (fixed generator, so every run of the test agrees)."""
  rng = np.random.default_rng(0)
  return {(d, a, s): 0.80 + EFFECT[a] + float(rng.normal(0, 0.01))
          for d in ("d1", "d2") for a in EFFECT for s in SEEDS}


SKIP = {("d2", "null", 4)}  # never finished: its reference run (d2, ref, 4) is unpaired
NO_NESTED = {("d1", "big", 1)}  # its summary lacks the nested fields


def write_sweep(sweep_dir, study):
  acc = values()
  for run in grid.expand(study):
    key = (run.axes["data"], run.axes["alg"], int(run.axes["seed"]))
    d = sweep_dir / run.name
    d.mkdir(parents=True)
    if key in SKIP:
      continue
    summary = {"test": {"accuracy": acc[key], "auc": 0.9}, "wall_time_s": 10.0,
               "sites": {"worst": {"balanced_accuracy": acc[key] - 0.2}}}
    if key not in NO_NESTED:
      summary["selected"] = {"best_val": {"test": {"balanced_accuracy": acc[key] - 0.1}}}
      summary["heterogeneity"] = {"label_tv_mean": 0.25, "note": "text", "per_site": [1, 2]}
    (d / "summary.json").write_text(json.dumps(summary))


NESTED = "selected.best_val.test.balanced_accuracy"
METRICS = ("test.accuracy", NESTED, "sites.worst.balanced_accuracy", "heterogeneity.label_tv_mean")


def test_nested_summary_fields_are_metrics(tmp_path):
  study = make_study()
  write_sweep(tmp_path, study)
  by_name = {r.name: r for r in results.collect(study, str(tmp_path))}
  m = by_name["data-d1+alg-ref+seed-0"].metrics
  acc = values()[("d1", "ref", 0)]
  assert m[NESTED] == pytest.approx(acc - 0.1)
  assert m["sites.worst.balanced_accuracy"] == pytest.approx(acc - 0.2)
  assert m["heterogeneity.label_tv_mean"] == 0.25
  assert "heterogeneity.note" not in m and "heterogeneity.per_site" not in m
  assert NESTED not in by_name["data-d1+alg-big+seed-1"].metrics
  rows = tables.aggregate(list(by_name.values()), ["data", "alg"], METRICS, grid.axis_order(study))
  big = rows[1]
  assert (big["data"], big["alg"]) == ("d1", "big") and big[NESTED][2] == 4
  md = tables.to_markdown(rows, ["data", "alg"], METRICS)
  assert "test bal. acc (best val)" in md and "sites.worst bal. acc" in md
  assert " (n=4) |" in md.splitlines()[3]  # the d1/big row: 4 of its 5 runs have the field
  assert tables.missing(list(by_name.values()), METRICS) == {
      NESTED: (1, 29), "heterogeneity.label_tv_mean": (1, 29)}
  assert tables.label("test.balanced_accuracy") == "test bal. acc"
  assert tables.fmt((math.nan, math.nan, 0)) == "—"


def test_paired_differences_and_pvalues_match_scipy(tmp_path):
  study = make_study()
  write_sweep(tmp_path, study)
  runs = results.collect(study, str(tmp_path))
  spec = Paired(reference={"alg": "ref"})
  comps = paired.compare(runs, ["data", "alg"], spec, ["test.accuracy", NESTED],
                         grid.axis_order(study))
  assert [(c.group["data"], c.group["alg"], c.metric) for c in comps] == [
      (d, a, m) for d in ("d1", "d2") for a in ("big", "null") for m in ("test.accuracy", NESTED)]
  acc = values()
  for c in comps:
    d, a = c.group["data"], c.group["alg"]
    assert c.reference == {"data": d, "alg": "ref"}
    seeds = [s for s in SEEDS if (d, a, s) not in SKIP and (d, "ref", s) not in SKIP]
    if c.metric == NESTED:
      seeds = [s for s in seeds if (d, a, s) not in NO_NESTED]
    x = np.array([acc[(d, a, s)] for s in seeds])
    y = np.array([acc[(d, "ref", s)] for s in seeds])
    assert c.test.n == len(seeds) and c.test.mean == pytest.approx(np.mean(x - y))
    assert c.test.t_p == pytest.approx(sp_stats.ttest_rel(x, y).pvalue)
    assert c.test.wilcoxon_p == pytest.approx(
        sp_stats.wilcoxon(x, y, zero_method="wilcox", method="exact").pvalue)
  # one family: Holm over every tested comparison of the table
  assert [c.holm_p for c in comps] == pytest.approx(stats.holm([c.test.t_p for c in comps]))
  verdicts = {(c.group["data"], c.group["alg"], c.metric): c.significant for c in comps}
  assert all(verdicts[(d, "big", m)] for d in ("d1", "d2") for m in ("test.accuracy", NESTED))
  assert not any(verdicts[(d, "null", m)] for d in ("d1", "d2") for m in ("test.accuracy", NESTED))
  md = paired.to_markdown(comps, ["data", "alg"], spec.alpha)
  for line, c in zip(md.splitlines()[2:], comps, strict=True):
    assert line.endswith(("| significant at 0.05 after Holm |" if c.significant else
                          "| not significant |") + f" {paired._pairs(c)} |")
  text = paired.summary(comps, spec.alpha)
  assert text.startswith("Significant at 0.05 after Holm's correction (4 of 8 tested")
  assert "alg=null" not in text and "alg=big" in text


def test_unpaired_and_missing_values_are_counted(tmp_path):
  study = make_study()
  write_sweep(tmp_path, study)
  runs = results.collect(study, str(tmp_path))
  comps = {(c.group["data"], c.group["alg"], c.metric): c for c in paired.compare(
      runs, ["data", "alg"], Paired(reference={"alg": "ref"}), ["test.accuracy", NESTED])}
  # (d2, null, 4) never finished: 4 pairs, and the reference run of seed 4 is unpaired
  c = comps[("d2", "null", "test.accuracy")]
  assert (c.test.n, c.unpaired, c.missing) == (4, 1, 0)
  assert paired._pairs(c) == "4 (1 unpaired)"
  # (d1, big, 1) lacks the nested field: 5 pairs, one of them without the metric
  c = comps[("d1", "big", NESTED)]
  assert (c.test.n, c.unpaired, c.missing) == (4, 0, 1)
  assert comps[("d1", "big", "test.accuracy")].test.n == 5


def test_no_test_is_never_called_significant(tmp_path):
  study = make_study()
  write_sweep(tmp_path, study)
  runs = results.collect(study, str(tmp_path))
  comps = paired.compare(runs, ["data", "alg"], Paired(reference={"alg": "ref"}),
                         ["wall_time_s", "missing.field"])
  assert {c.test.note for c in comps} == {"all differences zero", "no pairs"}
  assert not any(c.significant for c in comps) and all(c.holm_p is None for c in comps)
  assert paired.verdict(comps[0], 0.05) == "not significant (no test: all differences zero)"
  assert paired.summary(comps, 0.05).startswith("No comparison could be tested")


def test_summary_claims_nothing_when_nothing_is_significant(tmp_path):
  study = make_study()
  write_sweep(tmp_path, study)
  runs = results.collect(study, str(tmp_path))
  comps = paired.compare(runs, ["data", "alg"], Paired(reference={"alg": "ref"},
                                                       where={"alg": "null"}), ["test.accuracy"])
  assert [c.group["alg"] for c in comps] == ["null", "null"]
  assert not any(c.significant for c in comps)
  assert paired.summary(comps, 0.05).startswith("None of the 2 tested differences")


def test_paired_spec_defaults_to_the_named_reference():
  assert ReportSpec().paired_specs() == ()
  spec = ReportSpec(table=("data", "alg"), target=Target(reference={"alg": "ref"}))
  assert spec.paired_specs() == (Paired(reference={"alg": "ref"}),)
  spec = ReportSpec(table=("data", "alg"), relative=Relative(axis="alg", reference="ref"))
  assert spec.paired_specs() == (Paired(reference={"alg": "ref"}),)
  # a derived reference on an axis the table does not show: no comparisons
  assert ReportSpec(table=("data",), target=Target(reference={"alg": "ref"})).paired_specs() == ()
  with pytest.raises(ValueError, match="must be table axes"):
    ReportSpec(table=("data",), paired=Paired(reference={"alg": "ref"}))
  with pytest.raises(TypeError, match="must be a Paired"):
    ReportSpec(paired={"alg": "ref"})
  with pytest.raises(ValueError, match="alpha"):
    Paired(reference={"alg": "ref"}, alpha=5)
  with pytest.raises(ValueError, match="has no label 'nope'"):
    grid.check(make_study(paired=Paired(reference={"alg": "nope"})))


def test_report_writes_per_seed_and_paired_csv(tmp_path):
  study = make_study(metrics=("test.accuracy", NESTED), paired=Paired(reference={"alg": "ref"}))
  write_sweep(tmp_path / "sweep", study)
  out = tmp_path / "docs" / "syn.md"
  result = document.make_report(study, str(tmp_path / "sweep"), "syn.py:cpu", str(out),
                                plots_ok=False)
  text = out.read_text()
  assert "### Paired differences against the reference" in text and "syn_runs.csv" in text
  assert paired.to_markdown(result["comparisons"], ["data", "alg"], 0.05) in text
  assert f"`{NESTED}`: missing in 1 of 29 complete runs" in text
  rows = list(csv.DictReader(io.StringIO((tmp_path / "docs" / "syn_runs.csv").read_text())))
  assert len(rows) == 30 and list(rows[0]) == ["run", "data", "alg", "seed", "complete",
                                               "test.accuracy", NESTED]
  acc = values()
  for r in rows:
    key = (r["data"], r["alg"], int(r["seed"]))
    assert r["run"] == f"data-{key[0]}+alg-{key[1]}+seed-{key[2]}"
    assert r["complete"] == ("0" if key in SKIP else "1")
    assert r["test.accuracy"] == ("" if key in SKIP else repr(acc[key]))
    assert (r[NESTED] == "") == (key in SKIP | NO_NESTED)
  table = list(csv.DictReader(io.StringIO((tmp_path / "docs" / "syn_paired.csv").read_text())))
  assert len(table) == len(result["comparisons"]) == 8
  first, c = table[0], result["comparisons"][0]
  assert (first["data"], first["alg"], first["reference.alg"], first["metric"]) == (
      "d1", "big", "ref", "test.accuracy")
  assert float(first["t_p"]) == c.test.t_p and float(first["holm_p"]) == c.holm_p
  assert first["significant"] == "1" and first["wilcoxon_method"] == "exact"


def test_baseline_sentence_claims_only_significant_differences(tmp_path):
  from fedjax_med.studies.specs import Baseline

  acc = values()
  ref = [acc[("d1", "ref", s)] for s in SEEDS]
  # ACC published far below ours (significant); AUC equal to ours in every run (no test)
  study = make_study(baseline=Baseline(where={"data": "d1", "alg": "ref"}, accuracy=0.5,
                                       auc=0.9, source="Paper"))
  write_sweep(tmp_path / "sweep", study)
  runs = results.collect(study, str(tmp_path / "sweep"))
  (line,) = [x for x in document._baseline(study, runs, ["data", "alg"]) if x.startswith("Paper")]
  p = sp_stats.ttest_1samp(ref, 0.5).pvalue  # alone in its family: Holm leaves it as is
  assert f"ACC {np.mean(ref) - 0.5:+.3f}" in line and f"Holm p {paired.fmt_p(p)}: significant" in line
  assert "AUC +0.000 (no test: all differences zero; no difference is claimed)" in line
  study = make_study(baseline=Baseline(where={"data": "d1", "alg": "ref"},
                                       accuracy=float(np.mean(ref)) + 0.001, auc=0.9, source="Paper"))
  (line,) = [x for x in document._baseline(study, runs, ["data", "alg"]) if x.startswith("Paper")]
  assert "ACC -0.001 (Holm p" in line and "not significant; no difference is claimed" in line


def test_families_of_comparisons_each_get_their_own_holm(tmp_path):
  """Two references (e.g. the alpha axis against IID, the algorithms against FedAvg):
  one section each, Holm within each family, both in the paired CSV."""
  fams = (Paired(reference={"alg": "ref"}, where={"data": "d1"}),
          Paired(reference={"data": "d1"}, where={"alg": "big"}))
  study = make_study(metrics=("test.accuracy",), paired=fams)
  write_sweep(tmp_path / "sweep", study)
  out = tmp_path / "syn.md"
  result = document.make_report(study, str(tmp_path / "sweep"), "syn.py:cpu", str(out),
                                plots_ok=False)
  text = out.read_text()
  assert "### Paired differences against alg=ref (rows with data=d1)" in text
  assert "### Paired differences against data=d1 (rows with alg=big)" in text
  runs = results.collect(study, str(tmp_path / "sweep"))
  for fam in fams:
    alone = paired.compare(runs, ["data", "alg"], fam, ["test.accuracy"],
                           grid.axis_order(study))
    ours = [c for c in result["comparisons"] if c.reference == alone[0].reference]
    assert [c.holm_p for c in ours] == [c.holm_p for c in alone]  # Holm within the family
  assert len(result["comparisons"]) == 3  # d1: big, null vs ref; d2/big vs d1/big
  with pytest.raises(TypeError, match="must be a Paired"):
    ReportSpec(paired=(fams[0], {"alg": "ref"}))
