"""GLUE driver pieces, fast: metrics against hand-computed values, aggregation (mean/median over seeds,
the original's GLUE average), pooling, the starting-checkpoint kinds, and errors found before training."""
from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.errors import ConfigCompositionException

from m2bert import M2BertConfig, M2BertForMaskedLM
from m2bert.data.glue_tasks import metric_fns
from m2bert.glue.driver import run
from m2bert.glue.results import (
    PAPER_COLUMNS,
    aggregate,
    fmt,
    grouped_bars,
    job_score,
    load_published,
    markdown_table,
    sweep_report,
)
from m2bert.glue.schema import register
from m2bert.glue.start import load_classifier, resolve_start
from m2bert.options import ConfigError
from tests.conftest import compose_glue, shared_path

register()


# ---------------------------------------------------------------- metrics (acceptance 2)


def test_binary_metrics_hand_computed():
    f = metric_fns()
    p, r = [1, 1, 0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0, 1, 0]  # tp 3, fp 1, fn 1, tn 3
    assert f["accuracy"](p, r) == pytest.approx(6 / 8)
    assert f["f1"](p, r) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert f["matthews_correlation"](p, r) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))
    p, r = [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]  # tp 2, fp 2, fn 0, tn 1
    assert f["accuracy"](p, r) == pytest.approx(0.6)
    assert f["f1"](p, r) == pytest.approx(4 / 6)
    assert f["matthews_correlation"](p, r) == pytest.approx(2 / math.sqrt(4 * 2 * 3 * 1))
    assert f["matthews_correlation"]([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction: 0, as sklearn
    assert f["accuracy"]([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx(0.75)  # 3 classes (MNLI)


def test_correlations_hand_computed():
    f = metric_fns()
    assert f["pearson"]([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(5 * 26))
    # ties get average ranks: x ranks (0, 1.5, 1.5, 3), y ranks (0, 2, 1, 3)
    assert f["spearmanr"]([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    x = [0.5, 1.0, 2.0, 3.0, 4.0]
    assert f["spearmanr"](x, [v ** 3 for v in x]) == pytest.approx(1.0)
    assert f["pearson"](x, [v ** 3 for v in x]) < 0.99


def _job(task: str, seed: int, metrics: dict) -> dict:
    return {"task": task, "seed": seed, "metrics": metrics, "time_s": 1.0}


def test_aggregation_follows_the_original():
    """Task score = mean over seeds of the paper's metric set; GLUE = mean of task scores (8 tasks)."""
    jobs = [
        _job("mnli", 19, {"validation_matched": {"accuracy": 0.80}, "validation_mismatched": {"accuracy": 0.82}}),
        _job("rte", 19, {"validation": {"accuracy": 0.60}}),
        _job("rte", 8364, {"validation": {"accuracy": 0.80}}),
        _job("rte", 717, {"validation": {"accuracy": 0.64}}),
        _job("mrpc", 19, {"validation": {"f1": 0.90, "accuracy": 0.80}}),
        _job("stsb", 19, {"validation": {"pearson": 0.88, "spearmanr": 0.86}}),
        _job("sample-pair", 19, {"validation": {"f1": 0.1, "accuracy": 0.2}}),  # not a GLUE task
    ]
    assert job_score("mnli", jobs[0]["metrics"]) == pytest.approx(81.0)
    agg = aggregate(jobs)
    rte = agg["tasks"]["rte"]
    assert rte["score"]["mean"] == pytest.approx(68.0) and rte["score"]["median"] == pytest.approx(64.0)
    assert rte["score"]["std"] == pytest.approx(torch.tensor([60.0, 80.0, 64.0]).std().item())
    assert agg["tasks"]["mnli"]["metrics"]["validation_mismatched/accuracy"]["mean"] == pytest.approx(82.0)
    assert agg["tasks"]["mrpc"]["score"]["mean"] == pytest.approx(90.0)  # F1 only, as the paper
    assert agg["tasks"]["stsb"]["score"]["mean"] == pytest.approx(86.0)  # Spearman only
    assert not agg["tasks"]["mrpc"]["metrics"]["accuracy"]["in_score"]
    assert agg["tasks"]["mrpc"]["metrics"]["f1"]["in_score"]
    assert agg["glue_average_tasks"] == ["mnli", "rte", "stsb", "mrpc"]
    assert agg["glue_average"] == pytest.approx((81 + 68 + 86 + 90) / 4)
    published = {"mnli_m": 78.4, "mnli_mm": 78.6, "mnli": 78.5, "rte": 68.5, "average": 79.9}
    table = markdown_table(agg, published, "ours", "m2-bert-base-80m")
    assert "| ours | 80.0 / 82.0 | 68.0 |" in table
    assert "| m2-bert-base-80m (published) | 78.4 / 78.6 | 68.5 |" in table


def _published_jobs(row: dict) -> list[dict]:
    """One job per paper task whose metrics are the published task values (other metrics set far off, so a
    score that used them would show). QQP's two metrics both carry its value."""
    v = {k: row[k] / 100 for k in ("mnli", "rte", "qnli", "qqp", "sst2", "stsb", "cola", "mrpc")}
    return [
        _job("mnli", 19, {"validation_matched": {"accuracy": v["mnli"]}, "validation_mismatched": {"accuracy": v["mnli"]}}),
        _job("rte", 19, {"validation": {"accuracy": v["rte"]}}),
        _job("qnli", 19, {"validation": {"accuracy": v["qnli"]}}),
        _job("qqp", 19, {"validation": {"accuracy": v["qqp"], "f1": v["qqp"]}}),
        _job("sst2", 19, {"validation": {"accuracy": v["sst2"]}}),
        _job("stsb", 19, {"validation": {"pearson": 0.10, "spearmanr": v["stsb"]}}),
        _job("cola", 19, {"validation": {"matthews_correlation": v["cola"]}}),
        _job("mrpc", 19, {"validation": {"f1": v["mrpc"], "accuracy": 0.10}}),
    ]


@pytest.mark.parametrize("size,average", [("m2-bert-base-80m", "79.9"), ("m2-bert-base-110m", "80.9")])
def test_published_task_values_give_the_published_average(size, average):
    row = load_published(None, size)  # the package's copy
    agg = aggregate(_published_jobs(row))
    assert fmt(agg["glue_average"]) == average == fmt(row["average"])
    for task, key, _ in PAPER_COLUMNS:
        assert fmt(agg["tasks"][task]["score"]["mean"]) == fmt(row[key]), task
    ours = markdown_table(agg, row, "published values", size).splitlines()[2]
    assert ours.endswith(f"| {average} |")


def test_rounding_is_half_up_like_the_paper():
    assert fmt(80.85) == "80.9" and fmt(79.925) == "79.9" and fmt(80.05) == "80.1" and fmt(None) == "–"
    assert fmt(-0.25, 1) == "-0.3" and fmt(12.345, 2) == "12.35"


def test_packaged_published_numbers_match_shared_reference():
    """The package carries the published rows; ../shared's reference file (when present) agrees."""
    reference = json.loads(shared_path("reference", "published.json").read_text())["glue_dev"]
    for size, row in reference.items():
        assert load_published(None, size) == row, size


def test_chart_bars_are_labelled_centred_and_zoomed():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    grouped_bars(ax, ["RTE", "SST-2", "avg"], [("ours", [68.0, 91.5, 79.7], [1.0, 0.0, 0.0]),
                                               ("published", [68.5, None, 79.9], None)])
    bars = [p for p in ax.patches]
    assert len(bars) == 5
    centres = sorted(round(b.get_x() + b.get_width() / 2, 3) for b in bars)
    assert centres == [-0.2, 0.2, 1.0, 1.8, 2.2]  # pairs centred on their task; a lone bar on its task
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["68.0", "91.5", "79.7", "68.5", "79.9"])
    low, high = ax.get_ylim()
    assert 60 < low < 68 and high > 91.5  # the axis starts near the lowest bar
    plt.close(fig)


def test_sweep_report_marks_best(tmp_path):
    for i, (lr, accs) in enumerate([("1e-5", [0.6, 0.62]), ("3e-5", [0.7, 0.66])]):
        d = tmp_path / str(i)
        d.mkdir()
        jobs = [_job("rte", s, {"validation": {"accuracy": a}}) for s, a in zip([19, 8364], accs)]
        (d / "results.json").write_text(json.dumps({**aggregate(jobs), "overrides": ["tasks=[rte]", f"glue.rte.lr={lr}"]}))
    report = sweep_report(str(tmp_path))
    rows = report["rows"]
    assert [r["setting"] for r in rows] == ["glue.rte.lr=3e-5", "glue.rte.lr=1e-5"]
    assert rows[0]["best"] and not rows[1]["best"]
    assert rows[0]["mean"] == pytest.approx(68.0) and rows[0]["std"] == pytest.approx(torch.tensor([70.0, 66.0]).std().item())
    assert "68.00 ± 2.83" in (tmp_path / "sweep_report.md").read_text()


# ---------------------------------------------------------------- pooling (acceptance 4)


def test_pooling_is_per_model_and_mean_ignores_padding(tiny_hf):
    start = resolve_start("hf", str(tiny_hf))
    torch.manual_seed(0)
    cls_model = load_classifier(start, 2, "cls").eval()
    torch.manual_seed(0)
    mean_model = load_classifier(start, 2, "mean").eval()
    assert (cls_model.config.pooling, mean_model.config.pooling) == ("cls", "mean")
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = (padded != 0).long()
    with torch.no_grad():
        a, b = cls_model(ids).logits, mean_model(ids).logits
        assert not torch.allclose(a, b)  # same weights and seed, different pooling
        assert torch.allclose(mean_model(padded, attention_mask=mask).logits, b, atol=1e-5)
        assert torch.allclose(cls_model(padded, attention_mask=mask).logits, a, atol=1e-5)


def test_classifier_keeps_encoder_and_drops_classifier(tiny_hf, tmp_path):
    start = resolve_start("hf", str(tiny_hf))
    model = load_classifier(start, 3, "cls")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, start.state["bert.embeddings.word_embeddings.weight"])
    model.save_pretrained(tmp_path / "mnli")  # a fine-tuned 3-way classifier as a chain start
    chained = load_classifier(resolve_start("hf", str(tmp_path / "mnli"), tokenizer=str(tiny_hf)), 1, "cls")
    assert torch.equal(chained.head.pooler.weight, model.head.pooler.weight)  # pooler kept
    assert chained.head.classifier.weight.shape == (1, 64)  # classifier fresh (regression)


def test_original_checkpoint_start():
    io = torch.load(shared_path("golden", "m2_tiny_golden.io.pt"), weights_only=True)
    ckpt = str(shared_path("golden", "m2_tiny_golden.pt"))
    start = resolve_start("original", ckpt, config=str(shared_path("golden", "m2_tiny_golden.io.pt")), tokenizer="x")
    assert start.config.padding_invariant is False and start.config.vocab_size == 1024
    model = load_classifier(start, 2, "cls").eval()
    mlm = M2BertForMaskedLM.from_original_checkpoint(ckpt, M2BertConfig.from_original(io["config"])).eval()
    with torch.no_grad():
        ours = model.bert(io["input_ids"], io["attention_mask"], io["token_type_ids"])[0]
    assert (ours - io["last_hidden_state"]).abs().max().item() <= 1e-4
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight)


# ---------------------------------------------------------------- bad input, caught before training


def _base(tiny_hf, tmp_path) -> list[str]:
    return ["glue=m2_bert_tiny", f"start.path={tiny_hf}", f"data.source={shared_path('data', 'glue')}",
            f"run_root={tmp_path}", "max_duration=1ba", "train_subset=8"]


@pytest.mark.parametrize("extra, match", [
    (["tasks=[cola,mnlii]"], "mnlii"),
    (["tasks=[cola]", "data.source=/no/such/glue"], "/no/such/glue"),
    (["tasks=[qnli]"], "QNLI/train.tsv"),  # only QNLI's dev set is in ../shared
    (["tasks=[mnli]"], "MNLI/train.tsv"),
    (["tasks=[rte]", "chain.source_task=cola", "start.tokenizer=/no/such/tok"], "/no/such/tok"),
    (["tasks=[cola]", "start.kind=composer"], "composer"),
])
def test_bad_input_fails_before_training(tiny_hf, tmp_path, extra, match):
    cfg = compose_glue(_base(tiny_hf, tmp_path) + extra)
    with pytest.raises((ConfigError, FileNotFoundError), match=match):
        run(cfg)
    assert not (tmp_path / "glue").exists()  # nothing trained or written


def test_unreadable_checkpoints_are_named(tiny_hf, tmp_path):
    bad = tmp_path / "bad_hf"
    bad.mkdir()
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (bad / f).write_bytes((tiny_hf / f).read_bytes())
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="model.safetensors"):
        run(compose_glue(_base(tiny_hf, tmp_path) + ["tasks=[cola]", f"start.path={bad}"]))
    junk = tmp_path / "ckpt.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="ckpt.pt"):
        run(compose_glue(_base(tiny_hf, tmp_path) + ["tasks=[cola]", "start.kind=composer", f"start.path={junk}",
                                                   f"start.config={tiny_hf}"]))
    with pytest.raises(ConfigError, match="vocab_size is 1024"):  # BERT's vocab does not fit the original tiny model
        run(compose_glue(_base(tiny_hf, tmp_path) + [
            "tasks=[cola]", "start.kind=original", f"start.path={shared_path('golden', 'm2_tiny_golden.pt')}",
            f"start.config={shared_path('golden', 'm2_tiny_golden.io.pt')}", f"start.tokenizer={tiny_hf}"]))


def test_unknown_setting_key_fails_at_composition(tiny_hf, tmp_path):
    with pytest.raises(ConfigCompositionException) as e:
        compose_glue(_base(tiny_hf, tmp_path) + ["glue.rte.lrr=1e-5"])
    assert "lrr" in str(e.value) + str(e.value.__cause__)
    with pytest.raises(ConfigCompositionException):
        compose_glue(_base(tiny_hf, tmp_path) + ["glue=m2_bert_huge"])


def test_recipes_hold_the_papers_settings():
    """The 80M recipe as the issue states it; 110M's four differences."""
    g = compose_glue(["start.path=x"]).glue
    assert g.model_size == "m2-bert-base-80m"
    assert (g.mnli.lr, g.mnli.weight_decay, g.mnli.optimizer, g.mnli.epochs, g.mnli.batch_size) == (5e-5, 5e-6, "decoupled_adamw", 3, 48)
    assert (g.qnli.pooling, g.qnli.epochs, g.qnli.weight_decay) == ("mean", 10, 1e-6)
    assert (g.qqp.lr, g.qqp.optimizer, g.qqp.epochs) == (3e-5, "adamw", 10)
    assert list(g.rte.seeds) == [19, 8364, 717, 10536, 90166] and g.rte.epochs == 6 and g.rte.start_from == "mnli"
    assert list(g.sst2.seeds) == [19, 8364, 717] and g.sst2.lr == 3e-5
    assert (g.stsb.lr, g.stsb.batch_size, g.stsb.start_from) == (7e-5, 32, "mnli")
    assert (g.mrpc.lr, g.mrpc.start_from) == (5e-5, "mnli")
    assert list(g.cola.seeds) == [19, 8364, 717, 10536] and g.cola.optimizer == "decoupled_adamw"
    assert (g.scheduler.t_warmup, g.scheduler.alpha_f) == ("0.06dur", 0.0)
    g110 = compose_glue(["start.path=x", "glue=m2_bert_base_110m"]).glue
    assert (g110.rte.lr, g110.rte.weight_decay, g110.stsb.lr, g110.stsb.weight_decay) == (1e-5, 1e-6, 8e-5, 3e-6)
    assert (g110.mrpc.lr, g110.mrpc.weight_decay, g110.cola.lr, g110.qnli.pooling) == (8e-5, 8e-5, 8e-5, "mean")
    for size in ("m2_bert_large_260m", "m2_bert_large_341m"):
        g = compose_glue(["start.path=x", f"glue={size}"]).glue
        assert g.model_size.startswith("m2-bert-large") and g.rte.start_from == "mnli"


@pytest.mark.parametrize("override, line", [
    ("+glue.rte.lrr=1e-5", "glue.rte.lrr (did you mean glue.rte.lr?): no such GLUE setting"),
    ("+chain.source=cola", "chain.source (did you mean chain.source_task?): no such GLUE setting"),
    ("+eval_subsett=8", "eval_subsett (did you mean eval_subset?): no such GLUE setting"),
])
def test_misspelt_added_key_is_one_line(tmp_path, monkeypatch, capsys, override, line):
    """Hydra's ``+key=value`` adds even a key the schema lacks; the driver refuses it before any work."""
    from m2bert.glue.driver import main
    from tests.test_cli_errors import _in_process, _one_line

    runs = tmp_path / "runs"
    proc = _in_process(main, "m2bert-glue", [override, "start.path=/no/such/model", f"run_root={runs}"],
                       monkeypatch, capsys)
    assert _one_line(proc, "m2bert-glue") == f"m2bert-glue: error: {line}; the settings and their values: " \
                                              "m2bert-glue --cfg job"
    assert not runs.exists()


def test_job_spec_round_trips_typed(tmp_path):
    """A queue worker reads the spec back as the schema's dataclasses; a wrongly typed value fails there."""
    from omegaconf.errors import ValidationError

    from m2bert.glue.driver import job_specs, load_config, plan
    from m2bert.glue.execute import load_spec, save_spec
    from m2bert.glue.schema import GlueConfig, StartConfig, TaskSettings

    config = load_config(compose_glue(["glue=m2_bert_tiny", "start.path=/x", "tasks=[rte]", "glue.rte.lr=2e-5",
                                       "glue.scheduler.name=constant_with_warmup"]))
    p = plan(config)
    assert p.round1 == ["mnli"] and p.round2 == ["rte"] and p.settings["mnli"].seeds == [19]  # dependency: 1 seed
    (spec, *_) = job_specs(config, p, str(tmp_path), ["rte"], StartConfig(kind="hf", path="/m", tokenizer="/t"), 2)
    save_spec(spec, str(tmp_path / "spec.json"))
    back = load_spec(str(tmp_path / "spec.json"))
    assert back == spec
    assert isinstance(back.config, GlueConfig) and isinstance(back.settings, TaskSettings) and back.settings.lr == 2e-5
    assert back.config.glue.scheduler.name == "constant_with_warmup"
    from composer.optim import ConstantWithWarmupScheduler

    from m2bert.train.builders import build_scheduler

    assert isinstance(build_scheduler(back.config.glue.scheduler), ConstantWithWarmupScheduler)  # what the job builds
    data = json.loads((tmp_path / "spec.json").read_text())
    data["settings"]["lr"] = "fast"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValidationError, match="lr"):
        load_spec(str(tmp_path / "bad.json"))
