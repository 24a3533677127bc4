"""What a new user sees: each CLI's own --help (groups, most used keys, defaults with units, no reST),
one-line refusals of the other CLI's groups, messages naming console scripts, and data=sample finding
what the demo wrote."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hydra_help(module: str, monkeypatch, capsys) -> str:
    """``<cli> --help`` through the console script's ``main``, in this process (imports are paid once)."""
    monkeypatch.setattr(sys, "argv", ["prog", "--help"])
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main()
    assert exc.value.code == 0
    return capsys.readouterr().out


def _groups(text: str) -> dict[str, str]:
    section = text.split("== Configuration groups", 1)[1].split("==", 2)[1]
    return {line.split(":", 1)[0]: line.split(":", 1)[1] for line in section.splitlines() if ":" in line}


def test_pretrain_help_is_its_own(monkeypatch, capsys):
    text = _hydra_help("m2bert.pretrain", monkeypatch, capsys)
    assert text.startswith("m2bert-pretrain: MLM pretraining")
    assert "powered by Hydra" not in text.lower()
    groups = _groups(text)
    assert set(groups) == {"model", "data", "optimizer", "filters", "scheduler", "parallel", "logger", "impl", "recipe"}
    assert "m2_bert_tiny" in groups["model"] and "sample" in groups["data"] and "demo" in groups["recipe"]
    assert "data.local=DIR" in text and "[286720000sp]" in text and "impl.long_conv_impl" in text


def test_glue_help_is_its_own(monkeypatch, capsys):
    text = _hydra_help("m2bert.glue.driver", monkeypatch, capsys)
    assert text.startswith("m2bert-glue: fine-tune")
    assert "powered by Hydra" not in text.lower()
    groups = _groups(text)
    assert set(groups) == {"glue", "logger"}
    assert "m2_bert_tiny" in groups["glue"]
    assert "start.path=PATH" in text and "start.kind=hf|composer|original" in text


@pytest.mark.parametrize(("module", "arg", "hint"), [
    ("m2bert.glue.driver", "model=m2_bert_tiny", "glue=<size>"),
    ("m2bert.glue.driver", "+optimizer=adamw", "glue.<task>.optimizer"),
    ("m2bert.pretrain", "glue=m2_bert_tiny", "m2bert-glue"),
])
def test_other_cli_groups_are_refused_in_one_line(monkeypatch, capsys, module, arg, hint):
    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", ["prog", "run_name=x", arg])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and arg in err and hint in err


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argparse_help(name: str, monkeypatch, capsys) -> str:
    if name == "convert_c4":
        from m2bert.data.convert_c4 import main
    elif name == "tokenizer":
        from m2bert.data.tokenizer import main
    elif name == "sample":
        from m2bert.data.sample import main
    elif name == "demo":
        from m2bert.demo import main
    else:
        main = _bench(name).main
    monkeypatch.setattr(sys, "argv", ["prog", "--help"])
    with pytest.raises(SystemExit) as exc:
        main(["--help"]) if name != "train_throughput" else main()
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("name", "expected"), [
    ("convert_c4", ["(default: zstd)", "row length in tokens"]),
    ("tokenizer", ["vocabulary size in tokens", "(default: 30522)"]),
    ("sample", ["(default: "]),
    ("demo", ["(default: 800)", "batches of 32 sequences", "(default: demo_out)"]),
    ("throughput", ["sequence lengths in tokens (default: [128, 512, 2048, 8192])"]),
    ("kernels", ["(default: bf16)", "sequences per batch (default: 32)"]),
    ("loader_throughput", ["tokens per sequence (default: 128)"]),
    ("train_throughput", ["tokens per sequence (default: 128)"]),
    ("profile_train", ["operators listed per model (default: 12)"]),
])
def test_argparse_help_shows_defaults_without_rest_markup(monkeypatch, capsys, name, expected):
    text = _argparse_help(name, monkeypatch, capsys)
    for piece in expected:
        assert piece in " ".join(text.split()), piece
    assert "``" not in text and ":func:`" not in text


def test_messages_name_console_scripts_not_data_prep():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "src" / "m2bert").rglob("*.py")
                 if p.is_file() and "data_prep/" in p.read_text() and "kernels" not in p.parts]
    offenders = [p for p in offenders if p != "src/m2bert/data/convert_c4.py"]  # mentions both, in a docstring
    assert not offenders
    from m2bert.data.mlm import locate_index

    with pytest.raises(FileNotFoundError, match="m2bert-convert-c4"):
        locate_index("/nonexistent/mds", None, "train")


def test_data_sample_finds_what_the_demo_writes(sample_mds, tmp_path, monkeypatch):
    """After `make demo` (outputs in demo_out/), `m2bert-pretrain data=sample` finds shards and tokenizer."""
    from m2bert.demo import build_data
    from m2bert.pretrain import check_data
    from tests.conftest import compose_pretrain

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("M2BERT_SAMPLE_DIR", raising=False)
    out = tmp_path / "demo_out"
    out.mkdir()
    # The demo's outputs, already complete (build_data skips finished steps and returns their paths).
    for name, target in (("sample", sample_mds["raw"]), ("tokenizer", sample_mds["tokenizer"]), ("mds", sample_mds["mds"])):
        os.symlink(target, out / name)
    paths = build_data(Path("demo_out"), vocab_size=2048)
    cfg = compose_pretrain(["data=sample"])
    assert Path(cfg.data.local).resolve() == paths["mds"].resolve()
    assert Path(cfg.data.tokenizer).resolve() == paths["tokenizer"].resolve()
    check_data(cfg.data)


def _console_scripts() -> list[str]:
    """Modules of pyproject's [project.scripts] built on argparse (``cli_help``), plus ``python -m m2bert.demo``."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    modules = [target.split(":")[0] for target in scripts.values()]
    argparse_based = [m for m in modules
                      if "cli_help.ArgumentParser(" in (ROOT / "src" / f"{m.replace('.', '/')}.py").read_text()]
    return sorted(argparse_based) + ["m2bert.demo"]


@pytest.mark.parametrize("module", _console_scripts())
def test_every_option_has_help_and_shows_its_default_once(monkeypatch, module):
    """Each option has help; each default is said once ("(default: raw text)", not "... (default: None)")."""
    from m2bert import cli_help

    parsers, original = [], cli_help.ArgumentParser

    def recording(doc, **kwargs):
        parsers.append(original(doc, **kwargs))
        return parsers[-1]

    monkeypatch.setattr(cli_help, "ArgumentParser", recording)
    monkeypatch.setattr(sys, "argv", ["prog", "--help"])
    with pytest.raises(SystemExit):
        importlib.import_module(module).main()
    assert len(parsers) == 1
    assert cli_help.help_problems(parsers[0]) == []
    text = parsers[0].format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
