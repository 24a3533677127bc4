"""M2-BERT exported as a sentence-transformers model: the layout, loading without remote code, and embeddings that
do not depend on the batch (padding invariance) and equal our own model's pooling."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM, M2BertForSequenceClassification, M2BertModel
from tests.conftest import shared_path

# Twelve texts of very mixed length (3 to ~200 tokens; the tiny model truncates at 128), so ST's length-sorted
# batches mix short and long texts and pad the short ones a lot.
TEXTS = [
    "a lobster.",
    "The European lobster is a species of clawed lobster from the eastern Atlantic Ocean.",
    " ".join(["It may grow to a length of 60 cm and a mass of 6 kilograms."] * 12),
    "Mating occurs in the summer.",
    " ".join(["Homarus gammarus is a highly esteemed food, widely caught using lobster pots."] * 4),
    "blue",
    "In life the lobsters are blue, only becoming lobster red on cooking, " * 3,
    "The first pair of legs is armed with a large, asymmetrical pair of claws.",
    " ".join(["The larger one is the crusher, and has rounded nodules used for crushing prey."] * 7),
    "Eggs are carried by the females for up to a year before hatching into planktonic larvae.",
    "Lobsters shed their hard exoskeleton in order to grow.",
    " ".join(["This may occur several times a year for young lobsters, but decreases with age."] * 2),
]


@pytest.fixture(scope="module")
def tokenizer():
    from m2bert.data.tokenizer import load_tokenizer

    return load_tokenizer(shared_path("data", "bert-base-uncased", "vocab.txt"))


def _tiny_hf(root: Path, tokenizer, pooling: str, cls=M2BertForMaskedLM) -> Path:
    torch.manual_seed(0)
    model = cls(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=30528, pooling=pooling))
    out = root / f"hf-{pooling}-{cls.__name__}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _reference(hf_dir: Path, tokenizer, texts: list[str], pooling: str, normalize: bool) -> torch.Tensor:
    """Our own encoder, one text at a time, pooled by hand: what the ST pipeline must reproduce."""
    model = M2BertModel.from_pretrained(hf_dir).eval()
    rows = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=model.config.max_position_embeddings, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        row = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
        rows.append(torch.nn.functional.normalize(row, dim=-1) if normalize else row)
    return torch.stack(rows)


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False)])
def test_export_loads_without_remote_code_and_is_batch_independent(tmp_path, tokenizer, pooling, normalize) -> None:
    from sentence_transformers import SentenceTransformer

    from m2bert.embeddings.sentence_transformers import export_sentence_transformer

    hf = _tiny_hf(tmp_path, tokenizer, pooling)
    out = export_sentence_transformer(hf, tmp_path / "st", normalize=normalize)

    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"] + (["2_Normalize"] if normalize else [])
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode"] == pooling
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "m2_bert" and "auto_map" not in config
    assert not list(out.rglob("*.py"))                        # no code travels with the export
    card = (out / "README.md").read_text()                     # our card: how to load it, with and without m2bert
    assert "import m2bert" in card and "m2bert-make-portable" in card and f"{pooling} pooling" in card
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 128
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]

    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=False, local_files_only=True)
    assert type(st[0].auto_model) is M2BertModel and st.max_seq_length == 128
    batched = st.encode(TEXTS, batch_size=4, convert_to_tensor=True)        # length-sorted, padded per batch
    single = torch.cat([st.encode([t], batch_size=1, convert_to_tensor=True) for t in TEXTS])
    lengths = [len(tokenizer(t, truncation=True, max_length=128)["input_ids"]) for t in TEXTS]
    assert min(lengths) <= 4 and max(lengths) == 128          # the batches really pad
    assert (batched - single).abs().max().item() < 1e-5
    assert (batched - _reference(hf, tokenizer, TEXTS, pooling, normalize)).abs().max().item() < 1e-5
    if normalize:
        assert torch.allclose(batched.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)


def test_load_from_hf_dir_glue_final_and_model_object(tmp_path, tokenizer) -> None:
    from m2bert.embeddings.sentence_transformers import export_sentence_transformer, load_sentence_transformer

    final = _tiny_hf(tmp_path, tokenizer, "mean", cls=M2BertForSequenceClassification)   # as a GLUE final/
    st = load_sentence_transformer(final, device="cpu")
    assert [type(m).__name__ for m in st] == ["Transformer", "Pooling"]              # no normalize by default
    expected = _reference(final, tokenizer, TEXTS, "mean", normalize=False)
    assert (st.encode(TEXTS, batch_size=5, convert_to_tensor=True) - expected).abs().max().item() < 1e-5

    model = M2BertForMaskedLM.from_pretrained(_tiny_hf(tmp_path, tokenizer, "mean"))
    out = export_sentence_transformer(model, tmp_path / "st", tokenizer=tokenizer, max_seq_length=64)
    again = load_sentence_transformer(out, device="cpu")
    assert again.max_seq_length == 64
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 64
    short = [t for t in TEXTS if len(tokenizer(t)["input_ids"]) <= 64]
    assert (again.encode(short, convert_to_tensor=True) - _reference(
        tmp_path / "hf-mean-M2BertForMaskedLM", tokenizer, short, "mean", False)).abs().max().item() < 1e-5


def test_bad_sources_are_one_line(tmp_path, tokenizer) -> None:
    from m2bert.embeddings.sentence_transformers import export_sentence_transformer, load_sentence_transformer

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sentence_transformer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        export_sentence_transformer(tmp_path / "empty", tmp_path / "st")
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        export_sentence_transformer(_tiny_hf(tmp_path, tokenizer, "cls"), tmp_path / "st", max_seq_length=4096)
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("module_type, module_path, match", ids=["local-module", "router", "path-outside"], argvalues=[
    ("evil_mod.Evil", "", r"module 0 has type 'evil_mod.Evil', not one of sentence-transformers' modules"),
    ("sentence_transformers.models.Router", "", r"module 0 has type 'sentence_transformers.models.Router', not one"),
    ("sentence_transformers.models.Pooling", "../elsewhere", r"module 0 \(sentence_transformers.models.Pooling\) has "
                                                             r"path '../elsewhere', outside"),
])
def test_folder_naming_other_code_is_refused_without_running_it(tmp_path, monkeypatch, module_type, module_path,
                                                                 match) -> None:
    """A folder whose modules.json named "evil_mod.Evil" beside an evil_mod.py had it imported and run, despite
    trust_remote_code=False. Only sentence-transformers' own modules load (not Router, which imports the classes
    its own config names), from inside the folder; the refusal names the file and the module."""
    from m2bert.embeddings.sentence_transformers import load_sentence_transformer

    folder, marker = tmp_path / "st", tmp_path / "evil_ran"
    folder.mkdir()
    (folder / "evil_mod.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                        "class Evil:\n    pass\n")
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": module_path,
                                                      "type": module_type}]))
    monkeypatch.chdir(folder)  # the folder is on sys.path too: a plain import would find evil_mod there
    with pytest.raises(ValueError, match=rf"^{folder / 'modules.json'}: {match}"):
        load_sentence_transformer(folder, device="cpu")
    assert not marker.exists()


def test_tokenizer_code_in_a_folder_is_never_run(tmp_path, monkeypatch) -> None:
    """The retrieval CLI's start (and every other load of a folder's tokenizer) goes through load_tokenizer: a
    tokenizer_config.json auto_map used to make transformers ask "run the custom code? [y/N]" and run it on 'y'."""
    from transformers import BertTokenizerFast

    from m2bert.data.tokenizer import load_tokenizer

    folder, marker = tmp_path / "tok", tmp_path / "evil_ran"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    (folder / "evil_tok.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                        "class EvilTokenizer:\n    pass\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil_tok.EvilTokenizer", None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # a yes waiting on stdin
    with pytest.raises(ValueError, match=rf"could not load a tokenizer from directory {folder}"):
        load_tokenizer(folder)
    assert not marker.exists()
