"""The console scripts on a user's mistake: ONE line on stderr naming the key or file and the fix,
exit code 2, before any heavy work, and no empty run folder left behind (issue 15, "One-line errors").

A few cases run the real entry points in a subprocess (real exit codes and stderr; each pays ~10 s
of imports); the rest call the same ``main()`` in-process with ``sys.argv`` set, which goes through
Hydra and our handler identically and ends in the same ``SystemExit``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_shards_as_converted


def _run(module: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def _one_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def _in_process(main, prog: str, args: list[str], monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``main()`` with ``sys.argv`` set, its SystemExit and stderr as a CompletedProcess."""
    from m2bert import cli

    monkeypatch.setattr(sys, "argv", [prog, *args])
    monkeypatch.setattr(cli, "_task_started", False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return subprocess.CompletedProcess([prog, *args], exit_info.value.code, out.out, out.err)


def test_pretrain_value_error_in_a_subprocess(tmp_path):
    runs = tmp_path / "runs"
    proc = _run("m2bert.pretrain", ["optimizer.betas=[0.9]", f"run_root={runs}", "run_name=r"])
    assert "optimizer.betas=[0.9] must be two numbers in [0, 1)" in _one_line(proc, "m2bert-pretrain")
    assert not runs.exists()  # Hydra's run folder of a failed start is removed again


@pytest.mark.parametrize("override, expect", [
    ("data.local={tmp}/no-such-shards", r"no-such-shards/train does not exist.*m2bert-convert-c4 --out-root"),
    ("data.local=???", r"data.local is not set \(\?\?\?\): set data.local=.*m2bert-convert-c4"),
    ("global_train_batch_size=0", r"global_train_batch_size=0 must be a positive integer"),
    ("impl.device_train_microbatch_size=-1", r"impl.device_train_microbatch_size=-1 must be a positive integer"),
    ("max_duration=abc", r"max_duration='abc' is not a positive Composer duration.*e.g. max_duration=1000ba"),
    ("optimizer.betas=[0.9,1.2]", r"optimizer.betas=\[0.9, 1.2\] must be two numbers in \[0, 1\)"),
    ("eval_subset_num_batches=0", r"eval_subset_num_batches=0: use -1 .* or a number of batches >= 1"),
    ("+optimizer.lrr=1e-3", r"optimizer.lrr \(did you mean optimizer.lr\?\): no such pretraining setting"),
    ("+max_durations=10ba", r"max_durations \(did you mean max_duration\?\): no such pretraining setting"),
    # issue 21: what gave tracebacks (or ran forever) is one line too, the limit named
    ("max_duration=1.5ep", r"max_duration='1.5ep' is not a whole number of ep: .*e.g. max_duration=1ep"),
    ("max_duration=0.5dur", r"max_duration='0.5dur': a run's length is counted in ep, ba, sp or tok"),
    ("data.max_seq_len=0", r"error: data.max_seq_len=0 must be a positive integer$"),  # not a ZeroDivisionError
    ("max_duration=1e30ba", r"max_duration='1e30ba' is out of range: at most 9223372036854775807 \(2\^63 - 1\) ba"),
    ("global_train_batch_size=1e20", r"global_train_batch_size=1e\+20 is out of range: at most 2147483647"),
    ("global_train_batch_size=100000000000000000000",
     r"global_train_batch_size=100000000000000000000 is out of range: at most 2147483647 \(2\^31 - 1\)"),
    # issue 23: what Composer's console logger refuses (it raised in the Trainer, with a traceback)
    ("console_log_interval=2dur", r"error: console_log_interval='2dur': console_log_interval is counted in ep or ba "
                                  r"only, e.g. console_log_interval=100ba$"),
])
def test_pretrain_config_errors_are_one_line(tmp_path, override, expect, monkeypatch, capsys):
    import re

    from m2bert.pretrain import main

    runs = tmp_path / "runs"
    proc = _in_process(main, "m2bert-pretrain", [override.format(tmp=tmp_path), f"run_root={runs}", "run_name=r"],
                       monkeypatch, capsys)
    assert re.search(expect, _one_line(proc, "m2bert-pretrain"))
    assert not runs.exists()  # Hydra's run folder of a failed start is removed again


@pytest.mark.parametrize("module, prog, override, expect", [
    ("m2bert.pretrain", "m2bert-pretrain", "impl.kernels=fast", "impl.kernels='fast'; choose one of auto, triton, torch"),
    ("m2bert.pretrain", "m2bert-pretrain", "impl.long_conv_impl=fourier",
     "impl.long_conv_impl='fourier'; choose one of fft, monarch, direct"),
    ("m2bert.pretrain", "m2bert-pretrain", "optimizer.name=sgd", "optimizer.name='sgd'; choose one of decoupled_adamw, adamw"),
    ("m2bert.pretrain", "m2bert-pretrain", "scheduler.name=cosine", "scheduler.name='cosine'; choose one of "
     "linear_decay_with_warmup, constant_with_warmup"),
    ("m2bert.pretrain", "m2bert-pretrain", "parallel.name=tp", "parallel.name='tp'; choose one of ddp, fsdp"),
    ("m2bert.pretrain", "m2bert-pretrain", "model.family=gpt", "model.family='gpt'; choose one of m2, bert"),
    ("m2bert.pretrain", "m2bert-pretrain", "impl.kernels=torch,fast", "impl.kernels='fast'; choose one of"),  # a sweep
    ("m2bert.glue.driver", "m2bert-glue", "impl.kernels=fast", "impl.kernels='fast'; choose one of auto, triton, torch"),
    ("m2bert.glue.driver", "m2bert-glue", "glue.cola.pooling=max", "glue.cola.pooling='max'; choose one of cls, mean"),
    ("m2bert.glue.driver", "m2bert-glue", "glue.rte.start_from=qnli", "glue.rte.start_from='qnli'; choose one of "
     "pretrained, mnli"),
    ("m2bert.glue.driver", "m2bert-glue", "glue.rte.optimizer=sgd", "glue.rte.optimizer='sgd'; choose one of"),
    ("m2bert.glue.driver", "m2bert-glue", "start.kind=onnx", "start.kind='onnx'; choose one of hf, composer, original"),
    ("m2bert.glue.driver", "m2bert-glue", "save_final=best", "save_final='best'; choose one of chain ("),
    ("m2bert.glue.driver", "m2bert-glue", "execution=parallel", "execution='parallel'; choose one of auto, serial, queue"),
    ("m2bert.glue.driver", "m2bert-glue", "glue.scheduler.name=cosine", "glue.scheduler.name='cosine'; choose one of"),
])
def test_a_bad_choice_is_one_line_naming_key_and_choices(tmp_path, module, prog, override, expect, monkeypatch, capsys):
    import importlib

    runs = tmp_path / "runs"
    proc = _in_process(importlib.import_module(module).main, prog, [override, f"run_root={runs}", "run_name=r"],
                       monkeypatch, capsys)
    assert _one_line(proc, prog).startswith(f"{prog}: error: {expect}")
    assert not runs.exists()


@pytest.mark.parametrize("key", ["kernels", "long_conv_impl"])
def test_speed_switches_are_refused_in_model_overrides(tmp_path, key, monkeypatch, capsys):
    from m2bert.pretrain import main

    runs = tmp_path / "runs"
    proc = _in_process(main, "m2bert-pretrain", [f"+model.overrides.{key}=torch", f"run_root={runs}", "run_name=r"],
                       monkeypatch, capsys)
    line = _one_line(proc, "m2bert-pretrain")
    assert f"model.overrides.{key} is a switch of the run, not of the model: use impl.{key}=torch instead" in line
    assert not runs.exists()


def test_pretrain_truncated_shard_is_one_line(sample_mds, tmp_path, monkeypatch, capsys):
    from m2bert.pretrain import main

    data = copy_shards_as_converted(sample_mds["mds"], tmp_path / "mds")
    zst = next((data / "train").glob("*.mds.zstd"))
    zst.write_bytes(zst.read_bytes()[:100])
    runs = tmp_path / "runs"
    # a short run, so that a regression fails the test instead of training for the default 70,000 batches
    proc = _in_process(main, "m2bert-pretrain", ["model=m2_bert_tiny", "data=sample", f"data.local={data}",
                                                 f"data.tokenizer={sample_mds['tokenizer']}", f"run_root={runs}",
                                                 "max_duration=2ba", "global_train_batch_size=8",
                                                 "impl.device_train_microbatch_size=8", "eval_subset_num_batches=1"],
                       monkeypatch, capsys)
    line = _one_line(proc, "m2bert-pretrain")
    assert f"{zst}: 100 bytes on disk" in line and "m2bert-convert-c4" in line
    assert not runs.exists()


def test_pretrain_train_split_smaller_than_a_batch_is_one_line(sample_mds, tmp_path, monkeypatch, capsys):
    """A train split with fewer rows than global_train_batch_size trained no batch, and Composer looped over empty
    epochs forever without a word; now one line at start-up, naming the rows and the fix."""
    import json

    from m2bert.pretrain import main
    from tests.conftest import tiny_pretrain_overrides

    index = json.loads((Path(sample_mds["mds"]) / "train" / "index.json").read_text())
    rows = sum(shard["samples"] for shard in index["shards"])
    runs = tmp_path / "runs"
    args = tiny_pretrain_overrides(sample_mds, runs, "r", settings={"global_train_batch_size": rows + 1})
    line = _one_line(_in_process(main, "m2bert-pretrain", args, monkeypatch, capsys), "m2bert-pretrain")
    assert line.endswith(f"the train split holds {rows} rows, fewer than one batch (global_train_batch_size="
                         f"{rows + 1}), so no batch would be trained: set global_train_batch_size<={rows}, or convert "
                         f"more text"), line
    assert not runs.exists()


def test_pretrain_offline_hub_tokenizer_is_one_line(sample_mds, tmp_path, monkeypatch, capsys):
    """data.tokenizer=bert-base-uncased (data=c4's default) without the hub: one line naming data.tokenizer, before
    the run folder is claimed (it was an 86-line traceback, and the Hydra folder it left refused the rerun)."""
    import transformers

    from m2bert.pretrain import main
    from tests.conftest import tiny_pretrain_overrides

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    runs = tmp_path / "runs"
    args = tiny_pretrain_overrides(sample_mds, runs, "r") + ["data.tokenizer=bert-base-uncased", "max_duration=2ba"]
    line = _one_line(_in_process(main, "m2bert-pretrain", args, monkeypatch, capsys), "m2bert-pretrain")
    assert line.startswith("m2bert-pretrain: error: data.tokenizer: could not load tokenizer 'bert-base-uncased'") \
        and "m2bert-train-tokenizer" in line, line
    assert not runs.exists()


def test_hydra_composition_error_exits_2(tmp_path):
    """A key the schema lacks: one line naming it and the real key (Hydra would print several, suggesting `+`)."""
    proc = _run("m2bert.pretrain", ["optimizer.learning_rate=1e-3", f"run_root={tmp_path / 'runs'}"])
    line = _one_line(proc, "m2bert-pretrain")
    assert "optimizer.learning_rate: no such key; did you mean optimizer.lr?" in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module, prog, override, expect", [
    # an unknown group option: the closest one and the list (issue 23, "Every mistake is one line")
    ("m2bert.pretrain", "m2bert-pretrain", "model=m2-bert-tiny",
     "model=m2-bert-tiny: no such model option; did you mean model=m2_bert_tiny? the options: bert_base, "),
    ("m2bert.pretrain", "m2bert-pretrain", "optimizer.lr=abc", "optimizer.lr='abc' must be a number"),
    ("m2bert.pretrain", "m2bert-pretrain", "lr=1e-4", "lr: no such key; did you mean optimizer.lr?"),
    ("m2bert.glue.driver", "m2bert-glue", "tasks=rte", "tasks=rte must be a list: write tasks=[rte]"),
    ("m2bert.glue.driver", "m2bert-glue", "glue.rte.learning_rate=1e-5",
     "glue.rte.learning_rate: no such key; did you mean glue.rte.lr?"),
    ("m2bert.glue.driver", "m2bert-glue", "save_final=true",
     "save_final='true'; choose one of chain (export the chain source's first seed, which RTE/MRPC/STS-B start "
     "from), all (export every job's fine-tuned model), none ("),
])
def test_hydra_mistakes_are_one_line_with_the_fix(tmp_path, module, prog, override, expect, monkeypatch, capsys):
    import importlib

    runs = tmp_path / "runs"
    extra = ["start.path=/no/model"] if prog == "m2bert-glue" else []
    proc = _in_process(importlib.import_module(module).main, prog, [override, *extra, f"run_root={runs}",
                                                                      "run_name=r"], monkeypatch, capsys)
    line = _one_line(proc, prog)
    assert line.startswith(f"{prog}: error: {expect}"), line
    assert not runs.exists()


def test_a_checkpoint_file_as_an_hf_start_names_the_kind(tmp_path, monkeypatch, capsys):
    """start.path=.../latest-rank0.pt with the default start.kind=hf: the line says it is a checkpoint and how to
    start from one (it said "Hugging Face directory ... does not exist")."""
    from m2bert.glue.driver import main
    from tests.test_bad_input import _sample_folder

    data = _sample_folder(tmp_path / "glue", ["0", "1"], ["0", "1"])
    ckpt = tmp_path / "checkpoints" / "latest-rank0.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not read")
    runs = tmp_path / "runs"
    proc = _in_process(main, "m2bert-glue", ["glue=m2_bert_tiny", f"start.path={ckpt}", f"data.source={data}",
                                             "tasks=[sample-ss]", "device=cpu", f"run_root={runs}", "run_name=r"],
                       monkeypatch, capsys)
    line = _one_line(proc, "m2bert-glue")
    assert f"start.path={ckpt} is a checkpoint file" in line and "add start.kind=composer" in line, line
    assert not runs.exists()


def test_convert_c4_offline_tokenizer_is_one_line(tmp_path, monkeypatch, capsys):
    """--tokenizer bert-base-uncased without the hub: one line (it was a traceback of ~180 lines)."""
    import transformers

    from m2bert.data import convert_c4

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    src = tmp_path / "c4.jsonl"
    src.write_text('{"text": "a document"}\n')
    code = convert_c4.main(["--source", str(src), "--out-root", str(tmp_path / "out"), "--splits", "train",
                            "--tokenizer", "bert-base-uncased", "--concat-tokens", "128", "--no-progress"])
    proc = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    line = _one_line(proc, "m2bert-convert-c4")
    assert "could not load tokenizer 'bert-base-uncased'" in line and "m2bert-train-tokenizer" in line, line


def test_convert_c4_from_the_hub_offline_is_one_line(tmp_path, monkeypatch, capsys):
    """No --source, no hub (HF_HUB_OFFLINE=1 here): the hub is asked before the progress bar starts (its line came
    mixed into the error), and the one line names --source, the offline way."""
    from m2bert.data import convert_c4

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    code = convert_c4.main(["--out-root", str(tmp_path / "out"), "--splits", "train"])
    proc = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    line = _one_line(proc, "m2bert-convert-c4")
    assert "could not stream allenai/c4 from the Hugging Face hub" in line and "--source DIR" in line, line
    assert not (tmp_path / "out").exists()


def test_traceback_only_with_hydra_full_error(tmp_path, monkeypatch):
    from m2bert.pretrain import main
    from m2bert.options import ConfigError

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["m2bert-pretrain", "global_train_batch_size=0", f"run_root={tmp_path / 'runs'}"])
    with pytest.raises(ConfigError, match="global_train_batch_size=0"):  # the exception itself, traceback and all
        main()


def test_glue_missing_start_path_is_one_line(tmp_path, monkeypatch, capsys):
    from m2bert.glue.driver import main

    runs = tmp_path / "runs"
    proc = _in_process(main, "m2bert-glue", [f"run_root={runs}"], monkeypatch, capsys)
    assert "start.path is not set (???): set start.path=" in _one_line(proc, "m2bert-glue")
    assert not runs.exists()


def test_glue_bad_row_in_a_later_task_is_one_line(tiny_hf, tmp_path):
    from tests.test_bad_input import _sample_folder

    root = _sample_folder(tmp_path / "glue", ["0", "1"], ["1", "nan"])
    runs = tmp_path / "runs"
    proc = _run("m2bert.glue.driver", ["glue=m2_bert_tiny", f"start.path={tiny_hf}", f"data.source={root}",
                                       "tasks=[sample-ss,sample-pair]", f"run_root={runs}", "device=cpu"])
    line = _one_line(proc, "m2bert-glue")
    assert f"{root}/SAMPLE-PAIR/dev.tsv line 3: bad label 'nan'" in line
    assert not runs.exists()


def test_glue_from_the_hub_offline_is_one_line(tmp_path, monkeypatch):
    """data.source=hf without the hub (offline, nothing cached): a ConfigError (one line from the CLI, as every
    ConfigError) naming data.source and the offline way; the first job raised a 74-line ConnectionError traceback."""
    from m2bert.data.glue_tasks import load_glue_task
    from m2bert.options import ConfigError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "cache"))  # nothing cached
    with pytest.raises(ConfigError, match=r"^data.source=hf: could not load nyu-mll/glue \(rte, train\) from the "
                                          r"Hugging Face hub .*; without network, pass data.source=<a folder of GLUE's "
                                          r"TSVs: <TASK>/train.tsv, dev.tsv>$"):
        load_glue_task("rte", "hf", "train")


@pytest.mark.parametrize("content, expect", [
    (None, "corpus file {f} does not exist"),
    ("", "{f} holds no text"),
    ('{"body": "x"}\n', "{f} line 1: expected a JSON object with a 'text' field"),
    ("not json\n", "{f} line 1: expected a JSON object"),
])
def test_tokenizer_trainer_names_the_file(tmp_path, content, expect, capsys):
    from m2bert.data.tokenizer import main

    f = tmp_path / "corpus.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main([str(f), "--out", str(tmp_path / "tok"), "--vocab-size", "300"])
    proc = subprocess.CompletedProcess([], exit_info.value.code, "", capsys.readouterr().err)
    assert expect.format(f=f) in _one_line(proc, "m2bert-train-tokenizer")
    assert not Path(tmp_path / "tok").exists()


def test_tokenizer_trainer_in_a_subprocess(tmp_path):
    f = tmp_path / "corpus.jsonl"
    f.write_text('{"text": "fine"}\n[1, 2]\n')
    proc = _run("m2bert.data.tokenizer", [str(f), "--out", str(tmp_path / "tok"), "--vocab-size", "300"])
    assert f"{f} line 2: expected a JSON object with a 'text' field" in _one_line(proc, "m2bert-train-tokenizer")


@pytest.mark.parametrize("override, expect", [
    ("max_duration=1.5ep", "max_duration='1.5ep' is not a whole number of ep"),
    ("max_duration=0.5dur", "max_duration='0.5dur': a run's length is counted in ep, ba, sp or tok"),
    ("glue.sample_ss.max_duration=2.5ba", "glue.sample_ss.max_duration='2.5ba' is not a whole number of ba"),
    ("train_subset=-3", "train_subset=-3 must be a positive integer"),
    ("data.max_seq_len=0", "data.max_seq_len=0 must be a positive integer"),
    ("max_duration=1e30ba", "max_duration='1e30ba' is out of range: at most 9223372036854775807"),
    ("glue.sample_ss.batch_size=1e20", "glue.sample_ss.batch_size=1e+20 is out of range: at most 2147483647"),
    ("glue.sample_ss.batch_size=100000000000000000000",
     "glue.sample_ss.batch_size=100000000000000000000 is out of range"),
    ("data.source={header_only}", "{header_only}/SAMPLE-SS/dev.tsv holds no rows (only a header): sample-ss validation "
                                  "needs at least one"),
    ("resume=true overwrite=true", "resume=true and overwrite=true: continue the earlier run or replace it, not both"),
    ("console_log_interval=1h", "console_log_interval='1h': console_log_interval is counted in ep or ba only (not "
                                "wall-clock time), e.g. console_log_interval=100ba"),
])
def test_glue_value_errors_are_one_line(tmp_path, override, expect, monkeypatch, capsys):
    """Checked before the start model is read (start.path does not even exist here): one line, no run folder."""
    from m2bert.glue.driver import main
    from tests.test_bad_input import _sample_folder

    header_only = _sample_folder(tmp_path / "glue", [], ["0"])  # SAMPLE-SS/dev.tsv: the header alone
    runs = tmp_path / "runs"
    args = ["glue=m2_bert_tiny", f"start.path={tmp_path / 'no-model'}", f"data.source={tmp_path / 'glue'}",
            "tasks=[sample-ss]", "max_duration=2ba", f"run_root={runs}", "run_name=r",
            *override.format(header_only=header_only).split()]
    line = _one_line(_in_process(main, "m2bert-glue", args, monkeypatch, capsys), "m2bert-glue")
    assert expect.format(header_only=header_only) in line, line
    assert not runs.exists()


@pytest.mark.parametrize("module, prog, extra", [
    ("m2bert.pretrain", "m2bert-pretrain", []),
    ("m2bert.glue.driver", "m2bert-glue", ["glue=m2_bert_tiny", "start.path=/no/model"]),
])
@pytest.mark.parametrize("name", ["../escaped", "..", "a/b"])
def test_run_name_stays_inside_run_root(tmp_path, module, prog, extra, name, monkeypatch, capsys):
    """A run name is one plain folder name: refused before Hydra makes its folder, so nothing lands outside run_root."""
    import importlib

    runs = tmp_path / "root" / "runs"
    proc = _in_process(importlib.import_module(module).main, prog, [*extra, f"run_root={runs}", f"run_name={name}"],
                       monkeypatch, capsys)
    assert f"run_name='{name}' is not a plain name" in _one_line(proc, prog)
    assert list(tmp_path.iterdir()) == []  # neither inside run_root nor beside it


@pytest.mark.parametrize("args", [["recipe=demo"], ["data=sample"]])
def test_sample_data_elsewhere_names_m2bert_sample_dir(tmp_path, args, monkeypatch, capsys):
    """issue 23: `m2bert-pretrain recipe=demo` outside the folder that holds demo_out/ (data.local is the relative
    ${oc.env:M2BERT_SAMPLE_DIR,demo_out}/mds) names the variable and the fix, not just a relative path."""
    from m2bert.pretrain import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("M2BERT_SAMPLE_DIR", raising=False)
    proc = _in_process(main, "m2bert-pretrain", [*args, "run_name=r"], monkeypatch, capsys)
    line = _one_line(proc, "m2bert-pretrain")
    assert f"{tmp_path / 'demo_out' / 'mds'} does not exist (M2BERT_SAMPLE_DIR is unset" in line
    assert "set M2BERT_SAMPLE_DIR=<the folder make demo wrote" in line
    monkeypatch.setenv("M2BERT_SAMPLE_DIR", str(tmp_path / "elsewhere"))
    line = _one_line(_in_process(main, "m2bert-pretrain", [*args, "run_name=r"], monkeypatch, capsys), "m2bert-pretrain")
    assert f"(M2BERT_SAMPLE_DIR={tmp_path / 'elsewhere'})" in line
    assert not (tmp_path / "runs").exists()
