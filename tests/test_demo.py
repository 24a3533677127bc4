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
    assert f"M2BERT_SAMPLE_DIR={out.resolve()} m2bert-pretrain recipe=demo max_duration=4ba" in report  # the rerun
    assert "SAMPLE-SS" in report.upper() and "SAMPLE-PAIR" in report.upper()
    export = report.split("Hugging Face export: ")[1].split()[0]
    assert (Path(export) / "model.safetensors").exists() and (Path(export) / "config.json").exists()
    assert (out / "mds" / "train" / "index.json").exists() and (out / "mds" / "val" / "index.json").exists()
    first, last = (float(x) for x in report.split("first → last eval loss: ")[1].split()[0:3:2])
    assert last < first  # even 4 batches move the MLM loss off its start (~9.0)
    assert (out / "runs" / "demo-glue" / "results.json").exists()


def test_demo_pretraining_is_the_demo_recipe(tmp_path, monkeypatch):
    """issue 23: the demo's pretraining is `m2bert-pretrain recipe=demo` (yamls/recipe/demo.yaml), composed to the
    tiny settings; the demo runs exactly that config (plus its run folder and shard paths) and prints the command."""
    from m2bert import demo, pretrain
    from tests.conftest import compose_pretrain

    cfg = compose_pretrain(["recipe=demo"])
    assert (cfg.model.preset, cfg.data.name, cfg.global_train_batch_size, cfg.impl.device_train_microbatch_size,
            cfg.max_duration, cfg.optimizer.lr, cfg.optimizer.filter_decay.name) == \
        ("m2-bert-tiny", "sample", 32, 32, "800ba", 2e-3, "weak")
    assert compose_pretrain(["recipe=demo", "model=bert_tiny", "filters=original"]).model.preset == "bert-tiny"
    seen = []
    monkeypatch.setattr(pretrain, "run", lambda c: seen.append(c) or {})
    paths = {"mds": tmp_path / "mds", "tokenizer": tmp_path / "tok"}
    overrides = demo.pretrain_overrides(None, [])
    demo.pretrain(paths, tmp_path, overrides)
    ran = seen[0]
    housekeeping = {"run_root", "run_name", "overwrite"}
    assert {k: v for k, v in ran.items() if k not in housekeeping | {"data"}} == \
        {k: v for k, v in cfg.items() if k not in housekeeping | {"data"}}
    assert (ran.data.local, ran.data.tokenizer) == (str(tmp_path / "mds"), str(tmp_path / "tok"))
    monkeypatch.chdir(tmp_path)
    assert demo.rerun_command((tmp_path / "demo_out").resolve(), overrides) == "m2bert-pretrain recipe=demo"
    assert demo.rerun_command(Path("/a b"), demo.pretrain_overrides(4, ["optimizer.lr=1e-3"])) == \
        "M2BERT_SAMPLE_DIR='/a b' m2bert-pretrain recipe=demo max_duration=4ba optimizer.lr=1e-3"
