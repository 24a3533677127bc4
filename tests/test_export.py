"""Exports: the tokenizer saved with a model truncates at the model's length, and the opt-in portable form (the
model's code + auto_map) loads with plain transformers and with sentence-transformers in a process where m2bert
cannot be imported, with the in-package model's outputs; the default export holds no code."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

LONG_TEXT = " ".join(["The European lobster is a species of clawed lobster from the eastern Atlantic Ocean."] * 40)
TEXTS = ["a lobster.", "Mating occurs in the summer.", LONG_TEXT,
         "In life the lobsters are blue, only becoming lobster red on cooking."]

# Run with ``python -I`` from an empty folder: m2bert is blocked ahead of every finder (the editable install's
# included), and the script checks that ``import m2bert`` really fails before it loads anything.
FRESH = r'''
import importlib.abc, json, sys


class NoM2bert(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "m2bert":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoM2bert())
try:
    import m2bert  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("m2bert is importable in the fresh process")

import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoModelForMaskedLM

hf, st_dir, out = sys.argv[1:4]
ids = torch.tensor(json.loads(sys.argv[4]))
texts = json.loads(sys.argv[5])
mask = torch.ones_like(ids)
mask[1, 5:] = 0
mlm = AutoModelForMaskedLM.from_pretrained(hf, trust_remote_code=True).eval()
encoder = AutoModel.from_pretrained(hf, trust_remote_code=True).eval()
st = SentenceTransformer(st_dir, trust_remote_code=True, local_files_only=True, device="cpu")
with torch.no_grad():
    result = {"logits": mlm(input_ids=ids, attention_mask=mask).logits,
              "hidden": encoder(input_ids=ids, attention_mask=mask).last_hidden_state,
              "embeddings": st.encode(texts, batch_size=2, convert_to_tensor=True)}
save_file({k: v.contiguous() for k, v in result.items()}, out)
print(json.dumps({"m2bert_loaded": any(m.split(".")[0] == "m2bert" for m in sys.modules),
                  "classes": [type(m).__module__ for m in (mlm, encoder, st[0].auto_model)]}))
'''


def _tokenizer_length(folder: Path) -> int:
    return json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"]


def test_hf_export_tokenizer_truncates_at_the_models_length(tiny_hf, tmp_path) -> None:
    from transformers import AutoTokenizer

    from m2bert import M2BertForMaskedLM
    from m2bert.data.tokenizer import load_tokenizer
    from m2bert.train.builders import atomic_save_pretrained

    model = M2BertForMaskedLM.from_pretrained(tiny_hf).eval()
    out = Path(atomic_save_pretrained(model, load_tokenizer(tiny_hf), str(tmp_path / "hf")))   # as pretrain and GLUE
    assert _tokenizer_length(out) == 128 == model.config.max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(out)
    enc = tokenizer(TEXTS, truncation=True, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] == 128                    # the long text stops at the model's length
    with torch.no_grad():
        assert model(**enc).logits.shape[:2] == (4, 128)
    # the default export holds no code and names none
    assert not list(out.rglob("*.py")) and "auto_map" not in json.loads((out / "config.json").read_text())


def test_portable_export_loads_without_m2bert(tiny_hf, tmp_path) -> None:
    from safetensors.torch import load_file

    from m2bert import M2BertForMaskedLM, M2BertModel
    from m2bert.embeddings.sentence_transformers import export_sentence_transformer, load_sentence_transformer
    from m2bert.portable import AUTO_MAP, CARD_HERE, save_portable
    from m2bert.train.model_card import WITHOUT_M2BERT

    hf = save_portable(tiny_hf, tmp_path / "hf")
    st_dir = export_sentence_transformer(tiny_hf, tmp_path / "st", portable=True)
    for folder in (hf, st_dir):
        assert json.loads((folder / "config.json").read_text())["auto_map"] == AUTO_MAP
        assert (folder / "modeling_m2bert.py").is_file()
        assert "trust_remote_code=True" in (folder / "README.md").read_text()
    card = (st_dir / "README.md").read_text()         # the ST card: both ways to load it
    assert 'SentenceTransformer("path/or/hub-id", trust_remote_code=True)' in card
    assert "import m2bert" in card and 'SentenceTransformer("path/to/this/folder")' in card
    assert CARD_HERE in card and WITHOUT_M2BERT not in card   # it says this copy loads without m2bert
    assert _tokenizer_length(hf) == 128              # tiny_hf's tokenizer says 1e30: the copy gets the model's length
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 40))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-I", "-c", FRESH, str(hf), str(st_dir), str(tmp_path / "out.safetensors"),
                           json.dumps(ids.tolist()), json.dumps(TEXTS)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["m2bert_loaded"]
    assert all(m.startswith("transformers_modules.") for m in report["classes"]), report   # the shipped code ran
    fresh = load_file(str(tmp_path / "out.safetensors"))

    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        logits = M2BertForMaskedLM.from_pretrained(tiny_hf).eval()(input_ids=ids, attention_mask=mask).logits
        hidden = M2BertModel.from_pretrained(tiny_hf).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(fresh["logits"], logits) and torch.equal(fresh["hidden"], hidden)
    # our loader runs no code from the portable ST folder: the installed class loads it, and its embeddings are the
    # fresh process's
    st = load_sentence_transformer(st_dir, device="cpu")
    assert type(st[0].auto_model) is M2BertModel
    assert torch.equal(fresh["embeddings"], st.encode(TEXTS, batch_size=2, convert_to_tensor=True))
    # and a save of ours points at no code (the folder it writes holds none)
    M2BertModel.from_pretrained(hf).save_pretrained(tmp_path / "resaved")
    assert "auto_map" not in json.loads((tmp_path / "resaved" / "config.json").read_text())


def test_portable_code_refuses_what_it_cannot_ship(monkeypatch) -> None:
    from m2bert import portable

    files = portable.portable_files()
    assert "from_original_checkpoint" not in files["modeling_m2bert.py"]       # it needs m2bert's checkpoint loader
    assert not [n for n, text in files.items() if re.search(r"^\s*(from|import) m2bert", text, re.MULTILINE)]
    monkeypatch.setitem(portable.MODULES, "m2bert.model.original", "original")   # imports m2bert.train at the top
    with pytest.raises(RuntimeError, match="original line .* imports m2bert.train.checkpoint_safety"):
        portable.portable_files()


def test_make_portable_cli_bad_input_is_one_line(tmp_path, capsys) -> None:
    from m2bert.portable import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "config.json is missing" in err
    assert not (tmp_path / "out").exists()
