"""`make demo` end to end with a tiny budget: sample → tokenizer → shards → pretraining → GLUE driver → report."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "m2bert.demo", "--out", str(out), "--batches", "4",
                           "--glue-subset", "48"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = proc.stdout[proc.stdout.index("== m2bert demo =="):]
    assert "4 batches of 32×128 tokens" in report
    assert "SAMPLE-SS" in report.upper() and "SAMPLE-PAIR" in report.upper()
    export = report.split("Hugging Face export: ")[1].split()[0]
    assert (Path(export) / "model.safetensors").exists() and (Path(export) / "config.json").exists()
    assert (out / "mds" / "train" / "index.json").exists() and (out / "mds" / "val" / "index.json").exists()
    first, last = (float(x) for x in report.split("first → last eval loss: ")[1].split()[0:3:2])
    assert last < first  # even 4 batches move the MLM loss off its start (~9.0)
    assert (out / "runs" / "demo-glue" / "results.json").exists()
