"""``meanfield reproduce`` on a tiny configuration: files, CSV, computed report, resume without rework."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from meanfield.runs import reproduce as experiments
from meanfield.cli import main
from meanfield.errors import InvalidArgument
from meanfield.runs.reproduce import load_config, slope
from meanfield.runs.reproduce.cache import CacheFile as Store
from meanfield.runs.reproduce.results import growth
from cli_runner import run

TINY = """\
# a tiny run: two widths, two placements, two seeds; both stages that need only theory and sampler
[reproduce]
activations = ["relu"]
depth = 3
outputs = 2
placements = ["none", "batch-center:last"]
widths = [16, 32]
samples = 4
seeds = 3
ratio_activations = ["relu"]
ratio_placements = ["none", "batch:last"]
ratio_widths = [32, 64]
width_per_sample = 4
ratio_seeds = 2
stages = ["width", "ratio"]
"""




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run through the command line (module-scoped: the tests below read its output)."""
    folder = tmp_path_factory.mktemp("reproduce")
    config = folder / "tiny.toml"
    config.write_text(TINY)
    out = folder / "results"
    status = main(["reproduce", "--quick", "--config", str(config), "--out", str(out), "--processes", "1",
                   "--no-progress"])
    return status, config, out


def test_writes_figures_csv_and_report(tiny):
    status, _, out = tiny
    assert status == 0
    for name in ("cache.jsonl", "points.csv", "summary.csv", "report.md", "width_relu.png", "width_relu.pdf",
                 "ratio.png", "ratio.pdf"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "width_relu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ratio.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (out / ".lock").exists()


def test_csv_holds_every_point(tiny):
    _, _, out = tiny
    rows = list(csv.DictReader(open(out / "points.csv")))
    sampled = [r for r in rows if r["kind"] == "sample"]
    theory = [r for r in rows if r["kind"] == "theory"]
    # width stage: 1 activation x 2 placements x 2 widths x 3 seeds; ratio stage: 2 x 2 x 2 seeds
    assert len(sampled) == 2 * 2 * 3 + 2 * 2 * 2
    assert len(theory) == 2 * 2 + 2 * 2
    for r in sampled + theory:
        for key in ("m", "s", "lambda_max"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0
    ratio = [r for r in rows if r["stage"] == "ratio"]
    assert {(int(r["width"]), int(r["samples"])) for r in ratio} == {(32, 8), (64, 16)}


def test_summary_means_are_the_means_of_the_points(tiny):
    _, _, out = tiny
    points = list(csv.DictReader(open(out / "points.csv")))
    for row in csv.DictReader(open(out / "summary.csv")):
        mine = [float(p["lambda_max"]) for p in points if p["kind"] == "sample" and
                all(p[k] == row[k] for k in ("stage", "activation", "placement", "width", "samples"))]
        assert int(row["seeds"]) == len(mine)
        assert float(row["lambda_max_mean"]) == pytest.approx(sum(mine) / len(mine), rel=1e-12)


def test_report_reading_is_computed_from_the_numbers(tiny):
    _, _, out = tiny
    report = (out / "report.md").read_text()
    assert "## 1. relu: sharpness against width" in report
    summary = [r for r in csv.DictReader(open(out / "summary.csv"))
               if r["stage"] == "width" and r["placement"] == "none"]
    summary.sort(key=lambda r: int(r["width"]))
    exponent = slope([int(r["width"]) for r in summary], [float(r["lambda_max_mean"]) for r in summary],
                     [float(r["lambda_max_sem"]) for r in summary])
    assert f"{exponent:.2f}" in report
    largest = float(summary[-1]["lambda_max_mean"])
    assert f"{largest:.4g}" in report
    assert "![width_relu.png](width_relu.png)" in report


def test_rerun_does_no_recomputation(tiny, capsys):
    _, config, out = tiny
    before = (out / "cache.jsonl").read_bytes()
    status, stdout, _ = run(capsys, "reproduce", "--quick", "--config", str(config), "--out", str(out),
                            "--processes", "1", "--no-progress")
    assert status == 0
    assert re.search(r"\b0 points computed, 28 reused", stdout), stdout
    assert (out / "cache.jsonl").read_bytes() == before


def test_interrupted_run_computes_only_what_is_missing(tiny, tmp_path):
    _, config, out = tiny
    lines = (out / "cache.jsonl").read_text().splitlines()
    partial = tmp_path / "partial"
    partial.mkdir()
    # keep 20 finished points and a torn line, as if killed while writing the 21st
    (partial / "cache.jsonl").write_text("\n".join(lines[:20]) + "\n" + lines[20][: len(lines[20]) // 2])
    result = experiments.reproduce(load_config(config, quick=True), out=partial, processes=1, progress=False)
    assert (result.computed, result.reused) == (len(lines) - 20, 20)
    rows = [json.loads(line) for line in (partial / "cache.jsonl").read_text().splitlines() if line.strip()[-1:] == "}"]
    assert len({r["key"] for r in rows}) == len(lines)
    # the recomputed points are the same numbers (fixed seeds)
    first = {json.loads(line)["key"]: json.loads(line)["values"] for line in lines}
    for r in rows:
        for key in ("m", "s", "lambda_max"):
            assert r["values"][key] == pytest.approx(first[r["key"]][key], rel=1e-9)


def test_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("widht = [16]\n")
    status, _, err = run(capsys, "reproduce", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert status == 2
    assert "widht" in err and "did you mean 'widths'" in err and "Traceback" not in err
    with pytest.raises(InvalidArgument, match="seeds"):
        load_config(None, seeds=0)
    with pytest.raises(InvalidArgument, match="placements"):
        load_config(None, placements=["batch:9"])


RMT_KEYS = """\
rmt_activations = ["relu"]
rmt_placements = ["batch-center:last"]
rmt_widths = [32]
rmt_ratios = [0.05, 0.125, 1.0, 40.0]
rmt_seeds = 2
rmt_reference_widths = [16, 32]
"""


@pytest.fixture(scope="module")
def tiny_rmt(tiny, tmp_path_factory):
    """The random-matrix stage beside the width stage, on a copy of the tiny run's cache.

    Cells at M = 32: T/M = 0.05 gives T = 2 (below the T >= 4 the model needs: skipped), 0.125 gives T = 4
    (the width stage's T: its seeds 0 and 1 are reused), 1 gives T = 32, 40 gives C T = 2560 > 2048 (skipped).
    """
    _, _, out = tiny
    folder = tmp_path_factory.mktemp("reproduce-rmt")
    config = folder / "rmt.toml"
    config.write_text(TINY.replace('stages = ["width", "ratio"]', 'stages = ["width", "rmt"]') + RMT_KEYS)
    (folder / "results").mkdir()
    (folder / "results" / "cache.jsonl").write_bytes((out / "cache.jsonl").read_bytes())
    result = experiments.reproduce(load_config(config, quick=True), out=folder / "results", processes=1,
                                   progress=False)
    return result, folder / "results"


def _rmt_section(report: str) -> str:
    return report.split("λ_max from the random-matrix model", 1)[1].split("\n## ", 1)[0]


def test_rmt_stage_writes_figures_and_shares_sampled_points(tiny_rmt):
    result, out = tiny_rmt
    for name in ("rmt_relu.png", "rmt_relu.pdf", "rmt.csv"):
        assert (out / name).stat().st_size > 0, name
        assert name in result.files
    assert (out / "rmt_relu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "rmt_relu.pdf").read_bytes()[:5] == b"%PDF-"
    # new: one theory task for the network and 2 seeds at T = 32; the 2 seeds at T = 4 are two of the width
    # stage's 12 sampled draws (same cache key), so nothing else is computed: 4 theory + 12 sampled reused
    assert (result.computed, result.reused) == (3, 16)
    assert "![rmt_relu.png](rmt_relu.png)" in (out / "report.md").read_text()


def test_rmt_table_has_one_row_per_cell_with_the_sampled_means(tiny_rmt):
    _, out = tiny_rmt
    section = _rmt_section((out / "report.md").read_text())
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| relu")]
    assert [(int(r[1]), int(r[2])) for r in rows] == [(32, 4), (32, 32)]
    points = list(csv.DictReader(open(out / "points.csv")))
    for r in rows:
        mine = [float(p["lambda_max"]) for p in points if p["stage"] == "rmt" and p["kind"] == "sample"
                and (int(p["width"]), int(p["samples"])) == (int(r[1]), int(r[2]))]
        assert sorted(int(p["seed"]) for p in points if p["stage"] == "rmt" and p["kind"] == "sample"
                      and int(p["samples"]) == int(r[2])) == [0, 1]
        assert r[4].startswith(f"{sum(mine) / len(mine):.4g} ± ")
    # the skipped cells are named, with the reason
    assert "M = 32, T/M = 40 (C·T = 2560 > 2048)" in section
    assert "M = 32, T/M = 0.05 (T = 2 < 4" in section


def test_rmt_reading_is_computed_from_the_table(tiny_rmt):
    _, out = tiny_rmt
    section = _rmt_section((out / "report.md").read_text())
    cells = list(csv.DictReader(open(out / "rmt.csv")))
    assert len(cells) == 2
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| relu")]
    for name, key, column in (("leading order", "err_lead", 6), ("finite-width mean field", "err_meanfield", 8),
                              ("the random-matrix model", "err_rmt", 10)):
        errors = [float(c[key]) for c in cells]
        # the table's errors are the CSV's, and its within-5% marks follow from them
        assert [r[column] for r in rows] == [f"{e:+.1%}" for e in errors]
        index = ("err_lead", "err_meanfield", "err_rmt").index(key)
        assert [r[11].rstrip(" |").split(" / ")[index] for r in rows] == ["yes" if abs(e) <= 0.05 else "no"
                                                                           for e in errors]
        within = sum(abs(e) <= 0.05 for e in errors)
        median = sorted(abs(e) for e in errors)
        assert f"{name} {within} of 2 (median |error| {(median[0] + median[1]) / 2:.1%})" in section
    worst = max(cells, key=lambda c: abs(float(c["err_rmt"])))
    assert (f"Worst cell for the random-matrix model: relu, batch norm (mean only), last layer at "
            f"M = {worst['width']}, T = {worst['samples']} ({float(worst['err_rmt']):+.1%}") in section
    # the stage's default is the derived model: no reference networks, whatever rmt_reference_widths says
    assert "samples no network" in section and "reference widths" not in section


def test_rmt_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("rmt_ratios = [0.5, 0]\n")
    status, _, err = run(capsys, "reproduce", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert status == 2
    assert "rmt_ratios" in err and "Traceback" not in err
    for key, value in (("rmt_widths", [4]), ("rmt_placements", ["batch:9"]), ("rmt_activations", ["relux"]),
                       ("rmt_seeds", 2000), ("rmt_reference_widths", [64]), ("rmt_reference_widths", [64, 64])):
        with pytest.raises(InvalidArgument) as caught:
            load_config(None, **{key: value})
        assert key in str(caught.value) or caught.value.argument == key, (key, str(caught.value))
    assert load_config(None, quick=True).rmt_widths == (64,) and "rmt" in load_config(None).stages


def test_store_ignores_a_torn_line_and_repairs_it(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a", "labels": {}, "values": {"m": 1.0}, "seconds": 0}\n{"key": "b", "val')
    store = Store(path)
    assert set(store.rows) == {"a"}
    store.add("c", {"m": 2.0}, {}, 0.0)
    assert set(Store(path).rows) == {"a", "c"}


def test_growth_words_follow_the_fitted_exponent():
    assert slope([1, 2, 4], [3, 3, 3]) == pytest.approx(0)
    assert "bounded" in growth(0.3)
    assert "sub-linearly" in growth(0.4) and "sub-linearly" in growth(0.66)
    assert "grows like M" in growth(0.7)


def test_readme_documents_the_defaults():
    import tomllib

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    assert tomllib.loads(block) == load_config(None).to_dict()


def _readme_block() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return readme.split("### Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]


def _load_text(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize("where", ["top level", "[reproduce]"])
def test_every_config_form_the_readme_documents_loads(tmp_path, where):
    """The README's block (every key), at the top level and in a [reproduce] table; sigma_w2 and sigma_b2
    as one number and as a table per activation (the scalar form once ended in RecursionError)."""
    import tomllib

    block = _readme_block()
    table = "[reproduce]\n" if where == "[reproduce]" else ""
    documented = tomllib.loads(block)
    assert set(documented) == set(load_config(None).to_dict())  # the block names every key
    assert _load_text(tmp_path, table + block).to_dict() == documented
    scalar = re.sub(r"(?m)^sigma_w2 = .*$", "sigma_w2 = 2.0", re.sub(r"(?m)^sigma_b2 = .*$", "sigma_b2 = 0", block))
    config = _load_text(tmp_path, table + scalar)
    assert config.sigma_w2 == 2.0 and config.sigma_b2 == 0.0
    assert config.sigma("sigma_w2", "tanh") == 2.0 and config.sigma("sigma_b2", "relu") == 0.0
    for text in ("sigma_w2 = 2.0", "sigma_w2 = 2", "sigma_b2 = 0.25", "sigma_w2 = { relu = 2.0, tanh = 1.5 }",
                 "sigma_b2 = { relu = 0.1, tanh = 0.5 }"):
        key, value = text.split(" = ", 1)
        expected = tomllib.loads(text)[key]
        config = _load_text(tmp_path, table + text)
        got = config.to_dict()[key]
        assert got == (expected if isinstance(expected, dict) else float(expected)), text
    # each key alone, in the documented form, overrides only itself
    defaults = load_config(None).to_dict()
    for key, value in documented.items():
        line = next(line for line in block.splitlines() if line.startswith(f"{key} "))
        assert _load_text(tmp_path, table + line).to_dict() == {**defaults, key: value}, key


@pytest.mark.parametrize("text, key", [
    ("widths = [64]\n[reproduce]\nwidths = [32]", "widths"),
    ("sigma_w2 = 2\n[reproduce]\nsigma_w2 = 1", "sigma_w2"),
    ("sigma_w2 = {relu = 2, tahn = 1}", "sigma_w2.tahn"),
    ("[reproduce]\nsigma_b2 = {relu = 0.1, tanh = 0.5, gelu_x = 1}", "sigma_b2.gelu_x"),
    ("sigma_w2 = {}", "sigma_w2"),
    ("sigma_w2 = {relu = -1, tanh = 1}", "sigma_w2.relu"),
    ("sigma_w2 = {relu = 'two', tanh = 1}", "sigma_w2.relu"),
    ("reproduce = 3", "reproduce"),
    ("[reproduce]\nwidht = [3]", "widht"),
    ("[sweep]\nwidths = [3]", "sweep"),
])
def test_config_conflicts_and_unknown_keys_anywhere_name_the_key(tmp_path, text, key):
    with pytest.raises(InvalidArgument) as caught:
        _load_text(tmp_path, text)
    assert caught.value.argument == key, str(caught.value)


def test_a_binary_or_non_toml_config_is_a_usage_error_naming_config(tmp_path, capsys):
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    for path in (binary, tmp_path, tmp_path / "missing.toml", Path(__file__)):
        with pytest.raises(InvalidArgument) as caught:
            load_config(path)
        assert caught.value.argument == "config"
        with pytest.raises(SystemExit) as exited:
            main(["reproduce", "--config", str(path), "--out", str(tmp_path / "o")])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "argument --config" in err and "internal error" not in err and "Traceback" not in err


def test_a_cache_line_with_a_non_number_is_skipped_with_a_warning_naming_the_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    good = '{"key": "a", "labels": {}, "values": {"m": 1.0, "lambda_max_kind": "bound"}, "seconds": 0}'
    path.write_text(good + "\n" + good.replace('"a"', '"b"').replace("1.0", '"abc"') + "\nnot json\n"
                    + good.replace('"a"', '"c"').replace("1.0", "NaN") + "\n")
    with pytest.warns(UserWarning, match=r"cache.jsonl: 3 unusable line\(s\).*line 2: 'm' is 'abc'"):
        store = Store(path)
    assert set(store.rows) == {"a"} and [n for n, _ in store.skipped] == [2, 3, 4]


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InvalidArgument) as caught:
        experiments.reproduce(load_config(None), out=target, processes=1, progress=False)
    assert caught.value.argument == "out" and target.read_text() == "x"
    with pytest.raises(SystemExit) as exited:
        main(["reproduce", "--out", str(target), "--quick"])
    assert exited.value.code == 2 and "argument --out" in capsys.readouterr().err


# -- the results store: resume, import of an older run's cache, --fresh -----------------------------------


def _values(out: Path) -> dict:
    """key -> values of every point of a run's results store."""
    import sqlite3

    with sqlite3.connect(out / "results.sqlite") as db:
        return {key: json.loads(text) for key, text in db.execute("SELECT key, result_json FROM results")}


def _copy_store(src: Path, dst: Path) -> None:
    dst.mkdir()
    for name in ("results.sqlite", "results.sqlite-wal"):
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())


def test_every_point_is_a_row_of_the_results_store(tiny):
    _, _, out = tiny
    lines = [json.loads(line) for line in (out / "cache.jsonl").read_text().splitlines()]
    stored = _values(out)
    assert stored == {line["key"]: line["values"] for line in lines}
    from meanfield.runs.store import load

    records = load(out / "results.sqlite").records
    theory = [r for r in records if r["task"] == "reproduce.theory_point"]
    sampled = [r for r in records if r["task"] == "reproduce.sample_point"]
    assert len(theory) == 8 and len(sampled) == 20
    assert {r["activation"] for r in records} == {"relu"} and all(r["seed"] is None for r in theory)
    assert {(r["width"], r["samples"]) for r in sampled} == {(16, 4), (32, 4), (32, 8), (64, 16)}


def test_resumes_from_the_store_and_rewrites_a_lost_cache(tiny, tmp_path):
    import sqlite3

    _, config, out = tiny
    resumed = tmp_path / "resumed"
    _copy_store(out, resumed)
    # as if interrupted: five points never stored, and the cache.jsonl lost
    with sqlite3.connect(resumed / "results.sqlite") as db:
        gone = [k for (k,) in db.execute("SELECT key FROM results WHERE task = 'reproduce.sample_point' "
                                         "ORDER BY key LIMIT 5")]
        db.executemany("DELETE FROM results WHERE key = ?", [(k,) for k in gone])
    result = experiments.reproduce(load_config(config, quick=True), out=resumed, processes=1, progress=False)
    assert (result.computed, result.reused) == (5, 23)
    first, now = _values(out), _values(resumed)
    assert set(now) == set(first)
    for key in gone:  # fixed seeds: the same numbers
        for stat in ("m", "s", "lambda_max"):
            assert now[key][stat] == pytest.approx(first[key][stat], rel=1e-9)
    lines = [json.loads(line) for line in (resumed / "cache.jsonl").read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == sorted(_values(out))  # the cache is the store's export
    again = experiments.reproduce(load_config(config, quick=True), out=resumed, processes=1, progress=False)
    assert (again.computed, again.reused) == (0, 28)


def test_imports_the_cache_of_an_older_run(tiny, tmp_path):
    _, config, out = tiny
    older = tmp_path / "older"
    older.mkdir()
    (older / "cache.jsonl").write_bytes((out / "cache.jsonl").read_bytes())  # no results.sqlite yet
    result = experiments.reproduce(load_config(config, quick=True), out=older, processes=1, progress=False)
    assert (result.computed, result.reused) == (0, 28)
    assert "results.sqlite" in result.files and _values(older) == _values(out)
    assert (older / "cache.jsonl").read_bytes() == (out / "cache.jsonl").read_bytes()
    assert (older / "points.csv").read_text().count("\n") == (out / "points.csv").read_text().count("\n")


def test_fresh_starts_over(tiny, tmp_path):
    _, config, out = tiny
    again = tmp_path / "again"
    _copy_store(out, again)
    (again / "cache.jsonl").write_bytes((out / "cache.jsonl").read_bytes())
    result = experiments.reproduce(load_config(config, quick=True, stages=("width",)), out=again, processes=1,
                                   progress=False, fresh=True)
    assert (result.computed, result.reused) == (16, 0)
    assert len(_values(again)) == 16 and len((again / "cache.jsonl").read_text().splitlines()) == 16
