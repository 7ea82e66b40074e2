"""benchmarks/overhead.py's bookkeeping without ComfyUI: a stand-in worker process fails one row, the others are
still measured, written and printed, and the run exits non-zero naming the failed row."""

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

FAKE_WORKER = textwrap.dedent('''
    import json, sys
    job = json.loads(sys.argv[1])
    if job.get("algorithm") == "paths":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ValueError: paths needs more steps", file=sys.stderr)
        sys.exit(1)
    info = {"device": "cpu", "dtype": "float32", "threads": 2, "peak_rss_mb": 100.0}
    if job["mode"] == "stock":
        result = {"seconds": 2.0, "sampling_s": 1.5, "model_s": 1.5, "decode_s": 0.5, "verify_s": 0.0, "nfe": 10,
                  "nfe_planned": 10, "rows": job["rows"]}
    else:
        nfe = 20 if job["algorithm"] == "random" else 30
        result = {"seconds": 4.0, "model_s": 3.0, "decode_s": 0.5, "verify_s": 0.25, "nfe": nfe,
                  "nfe_planned": 20, "rows": 2}
    print("RESULT " + json.dumps(info | result))
''')


@pytest.fixture()
def overhead(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("overhead_rows_under_test", BENCH / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    worker = tmp_path / "worker.py"
    worker.write_text(FAKE_WORKER)
    monkeypatch.setattr(module, "WORKER", worker)
    return module


def test_a_failing_row_is_reported_and_the_other_rows_survive(overhead, tmp_path, capsys):
    comfyui = tmp_path / "comfyui"
    comfyui.mkdir()
    (comfyui / "main.py").write_text("")
    out = tmp_path / "rows.json"
    with pytest.raises(SystemExit) as exit_:
        overhead.main(["--smoke", "--comfyui", str(comfyui), "--json", str(out), "--no-memory",
                       "--algorithms", "random", "paths", "zero_order", "--decode", "full VAE"])
    label = overhead.SMOKE.configs[0].name
    assert str(exit_.value).startswith(f"2 of 4 rows failed: {label}:paths (full VAE), {label}:zero_order (full VAE)")
    rows = {r["algorithm"].split(":")[1]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"random", "paths", "zero_order", "stock"}
    assert rows["random"]["nfe"] == 20 and rows["random"]["model_share"] == 0.75
    assert rows["random"]["ratio_to_stock"] == round(4.0 / (1.5 / 10 * 20 + 0.5), 3)
    for name in ("paths", "zero_order"):
        assert all(rows[name][k] is None for k in overhead.KEYS[2:]), name
    printed = capsys.readouterr().out
    assert "FAILED: ValueError: paths needs more steps" in printed
    assert "FAILED: spent 30 NFEs, planned 20" in printed  # a search off its plan is a failure, not a row
