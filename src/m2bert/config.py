"""M2-BERT configuration.

Field names follow the original M2-BERT implementation (HazyResearch/m2) wherever the
original has the field, so original configs and users' habits carry over.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

from m2bert.auto import register_if_pending
from m2bert.options import Kernels, LongConvImpl, Pooling, choices

LONG_CONV_IMPLS = choices(LongConvImpl)
KERNEL_CHOICES = choices(Kernels)
POOLINGS = choices(Pooling)
# Switches of a run, not of the model: they change speed (or how much forward checks its inputs), never the
# results, so a saved config.json leaves them out; a run sets them (impl.kernels, impl.long_conv_impl). An
# older config.json that holds them still loads.
RUN_FIELDS = ("kernels", "long_conv_impl", "check_inputs")

# Sanity limits of the sizes a model allocates by: a config.json with hidden_size=1e9 or vocab_size=1e10 would
# otherwise ask for terabytes before failing, and max_position_embeddings=0 fails deep inside forward. Far above
# any released BERT or M2-BERT (32k positions, 30k-250k vocabularies, width <= 1792).
SIZE_LIMITS: dict[str, int] = {
    "vocab_size": 1 << 21, "hidden_size": 1 << 15, "intermediate_size": 1 << 17, "num_hidden_layers": 256,
    "num_attention_heads": 1 << 10, "max_position_embeddings": 1 << 20, "long_conv_l_max": 1 << 20,
    "type_vocab_size": 1 << 10, "hyena_filter_order": 1 << 12, "monarch_mlp_nblocks": 1 << 10,
}


def max_input_length(config: PretrainedConfig) -> int:
    """The longest input a model takes: its position table's length, and for M2 its filters' too, whichever is
    shorter (the tokenizer saved with it truncates there)."""
    return min(getattr(config, "long_conv_l_max", config.max_position_embeddings), config.max_position_embeddings)


def check_sizes(fields: Mapping[str, Any]) -> None:
    """ValueError naming the first size field (of ``SIZE_LIMITS``) that is not a positive integer within its limit."""
    for name, limit in SIZE_LIMITS.items():
        value = fields.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{name}={value!r} must be a positive integer <= {limit:,}")


# The four released sizes (state-dict manifest of the original) plus tiny ones for tests.
_BASE = dict(
    num_hidden_layers=12,
    vocab_size=30528,
    max_position_embeddings=128,
    long_conv_l_max=128,
    hyena_filter_order=128,
    hyena_emb_dim=5,
    residual_long_conv=True,
    bidirectional=True,
    use_glu_mlp=True,
    use_monarch_mlp=True,
    monarch_mlp_nblocks=4,
)
PRESETS: dict[str, dict[str, Any]] = {
    "m2-bert-base-80m": dict(_BASE, hidden_size=768, intermediate_size=3072, hyena_training_additions=True),
    "m2-bert-base-110m": dict(_BASE, hidden_size=960, intermediate_size=3840),
    "m2-bert-large-260m": dict(_BASE, hidden_size=1536, intermediate_size=6144),
    "m2-bert-large-341m": dict(_BASE, hidden_size=1792, intermediate_size=7168),
    # Tiny presets: same code paths, shapes small enough for CPU tests and the demo.
    "m2-bert-tiny": dict(
        _BASE, hidden_size=64, intermediate_size=256, num_hidden_layers=2, hyena_filter_order=32,
        vocab_size=1024, max_position_embeddings=128, long_conv_l_max=128,
    ),
    "m2-bert-mini": dict(
        _BASE, hidden_size=128, intermediate_size=512, num_hidden_layers=4, hyena_filter_order=32,
        hyena_training_additions=True,
    ),
    # The CPU quality study's size (bench/quality_study.py): the 80M recipe at width 256, depth 4.
    "m2-bert-small": dict(
        _BASE, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, hyena_filter_order=64,
        hyena_training_additions=True,
    ),
}

# What makes a size a size: a config with these of a preset is that preset, whatever its vocabulary or length.
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "hyena_filter_order", "monarch_mlp_nblocks")


def preset_of(config: Any) -> str:
    """The size a model config is, by its shape: ``m2-bert-tiny``; otherwise ``custom M2 (d=64, L=3)``; a BERT
    baseline is ``BERT (d=768, L=12)``. Reports name the model that was run, not the recipe's size."""
    shape = f"d={getattr(config, 'hidden_size', '?')}, L={getattr(config, 'num_hidden_layers', '?')}"
    if getattr(config, "model_type", None) != M2BertConfig.model_type:
        return f"{str(getattr(config, 'model_type', 'unknown')).upper()} ({shape})"
    for name, fields in PRESETS.items():
        if all(getattr(config, key, None) == fields[key] for key in SHAPE_KEYS):
            return name
    return f"custom M2 ({shape})"


# Keys of the original config that we interpret; everything else in an original config dict is
# generic transformers bookkeeping (or attention-only settings) and is ignored.
_ORIGINAL_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "max_position_embeddings", "type_vocab_size", "initializer_range",
    "layer_norm_eps", "pad_token_id", "classifier_dropout", "long_conv_l_max",
    "long_conv_kernel_learning_rate", "hyena_lr_pos_emb", "hyena_w", "hyena_w_mod", "hyena_wd",
    "hyena_emb_dim", "hyena_filter_dropout", "hyena_filter_order", "bidirectional",
    "residual_long_conv", "use_glu_mlp", "use_monarch_mlp", "monarch_mlp_nblocks",
    "use_positional_encodings", "hyena_training_additions", "num_labels", "id2label", "label2id",
)


class M2BertConfig(PretrainedConfig):
    """Configuration of an M2-BERT model (Monarch Mixer sequence + dimension mixers)."""

    model_type = "m2_bert"

    def __init__(
        self,
        vocab_size: int = 30528,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        max_position_embeddings: int = 128,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        classifier_dropout: float | None = None,
        # Sequence mixer (gated bidirectional long convolution with implicit Hyena filters).
        long_conv_l_max: int = 128,
        long_conv_kernel_learning_rate: float = 1e-3,
        hyena_lr_pos_emb: float = 1e-5,
        hyena_w: float = 10.0,
        hyena_w_mod: float = 1.0,
        hyena_wd: float = 0.1,
        hyena_emb_dim: int = 5,
        hyena_filter_dropout: float = 0.0,
        hyena_filter_order: int = 128,
        bidirectional: bool = True,
        residual_long_conv: bool = True,
        hyena_training_additions: bool = False,
        # Dimension mixer (GLU MLP with block-diagonal Monarch matrices).
        use_glu_mlp: bool = True,
        use_monarch_mlp: bool = True,
        monarch_mlp_nblocks: int = 4,
        use_positional_encodings: bool = True,
        # Our additions.
        # Init-only scales of the implicit filters (their MLPs' output layers): 1 = the original's init; 0 starts
        # a long convolution at zero, to grow only where training finds it useful (README, "The filters' recipe").
        long_conv_init_scale: float = 1.0,
        residual_long_conv_init_scale: float = 1.0,
        pooling: str = "cls",
        padding_invariant: bool = True,
        # Sentence embeddings (the original's gather_sentence_embeddings / use_normalized_embeddings / use_cls_token).
        sentence_embedding: bool = False,
        normalize_embeddings: bool = False,
        embedding_pooler: bool = False,
        long_conv_impl: str = "fft",
        kernels: str = "auto",
        check_inputs: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.long_conv_l_max = long_conv_l_max
        self.long_conv_kernel_learning_rate = long_conv_kernel_learning_rate
        self.hyena_lr_pos_emb = hyena_lr_pos_emb
        self.hyena_w = hyena_w
        self.hyena_w_mod = hyena_w_mod
        self.hyena_wd = hyena_wd
        self.hyena_emb_dim = hyena_emb_dim
        self.hyena_filter_dropout = hyena_filter_dropout
        self.hyena_filter_order = hyena_filter_order
        self.bidirectional = bidirectional
        self.residual_long_conv = residual_long_conv
        self.hyena_training_additions = hyena_training_additions
        self.use_glu_mlp = use_glu_mlp
        self.use_monarch_mlp = use_monarch_mlp
        self.monarch_mlp_nblocks = monarch_mlp_nblocks
        self.use_positional_encodings = use_positional_encodings
        self.long_conv_init_scale = long_conv_init_scale
        self.residual_long_conv_init_scale = residual_long_conv_init_scale
        # str(): a config's choice (an m2bert.options member) is stored as its plain string.
        self.pooling = str(pooling)
        self.padding_invariant = padding_invariant
        # M2BertModel's forward also returns `sentence_embedding`: `pooling` over the last hidden states, through
        # a dense + tanh pooler when `embedding_pooler` (the original's BertPooler, used when use_cls_token is
        # False), L2-normalised when `normalize_embeddings`. Model semantics: they go into config.json.
        self.sentence_embedding = sentence_embedding
        self.normalize_embeddings = normalize_embeddings
        self.embedding_pooler = embedding_pooler
        self.long_conv_impl = str(long_conv_impl)
        self.kernels = str(kernels)
        # Value checks of ids/masks in forward (m2bert.model.inputs): None = on CPU tensors only (no device
        # sync), True = always (debugging; syncs on GPU), False = never. Shape checks always run.
        self.check_inputs = check_inputs
        self.validate()

    def validate(self) -> None:
        """Fail at construction, naming the field, rather than deep inside forward (or allocating terabytes)."""
        check_sizes(vars(self))
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; choose one of {POOLINGS}")
        if self.long_conv_impl not in LONG_CONV_IMPLS:
            raise ValueError(f"long_conv_impl={self.long_conv_impl!r}; choose one of {LONG_CONV_IMPLS}")
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels={self.kernels!r}; choose one of {KERNEL_CHOICES}")
        if self.hyena_emb_dim < 3 or self.hyena_emb_dim % 2 == 0:
            raise ValueError(f"hyena_emb_dim={self.hyena_emb_dim} must be odd and >= 3 (time, cos and sin bands)")
        if self.use_positional_encodings and self.long_conv_l_max > self.max_position_embeddings:
            # Longer filters than position embeddings would silently fail at run time.
            raise ValueError(
                f"long_conv_l_max={self.long_conv_l_max} exceeds max_position_embeddings="
                f"{self.max_position_embeddings}; set both to the longest input length"
            )
        if self.use_monarch_mlp:
            for name in ("hidden_size", "intermediate_size"):
                if getattr(self, name) % self.monarch_mlp_nblocks:
                    raise ValueError(
                        f"{name}={getattr(self, name)} is not divisible by monarch_mlp_nblocks={self.monarch_mlp_nblocks}"
                    )

    def to_dict(self) -> dict[str, Any]:
        """The model's semantics, as ``save_pretrained`` writes them: without the run's switches (RUN_FIELDS), and
        without the ``auto_map`` a config read from a portable export carries (``m2bert.portable``): a save of ours
        holds no code for it to point at. (transformers' remote-code copy of this class keeps it: it writes the code.)"""
        d = super().to_dict()
        for key in RUN_FIELDS:
            d.pop(key, None)
        if getattr(self, "_auto_class", None) is None:
            d.pop("auto_map", None)
        return d

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "M2BertConfig":
        """A released size (or a tiny test size) with optional overrides.

        A length preset is one override away: ``max_length=2048`` sets both the position
        table and the filter length (``max_position_embeddings`` and ``long_conv_l_max``).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = copy.deepcopy(PRESETS[name])
        max_length = overrides.pop("max_length", None)
        if max_length is not None:
            fields.update(max_position_embeddings=int(max_length), long_conv_l_max=int(max_length))
        unknown = set(overrides) - set(_init_fields())
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)} for preset {name!r}")
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_original(cls, d: dict[str, Any], **overrides: Any) -> "M2BertConfig":
        """Build a config from the original implementation's config dict.

        The result reproduces the original exactly (``padding_invariant=False``).
        """
        if not d.get("monarch_mixer_sequence_mixing", True):
            raise ValueError("original config uses attention (monarch_mixer_sequence_mixing=False); "
                             "only M2 sequence mixing is supported")
        if d.get("attention_pooling", False):
            raise ValueError("original config uses attention_pooling=True, which M2-BERT does not support")
        if d.get("sequence_token_planting", False):
            raise ValueError("original config uses sequence_token_planting=True (a [CLS] every 128 tokens), which "
                             "M2-BERT does not support")
        fields = {k: d[k] for k in _ORIGINAL_KEYS if k in d}
        if fields.get("long_conv_kernel_learning_rate") is None:
            fields.pop("long_conv_kernel_learning_rate", None)
        if "id2label" in fields:
            fields["id2label"] = {int(k): v for k, v in fields["id2label"].items()}
        fields.update(_original_embedding_fields(d))
        fields["padding_invariant"] = False
        fields.update(overrides)
        return cls(**fields)


def _original_embedding_fields(d: dict[str, Any]) -> dict[str, Any]:
    """Pooling and sentence-embedding fields of an original config, as its BertForSequenceClassification reads
    them with ``gather_sentence_embeddings``: ``use_cls_token`` (default True) returns the raw [CLS] hidden state;
    otherwise it returns the BertPooler's output, dense + tanh over [CLS], or over the mean of the tokens whose
    ``attention_mask`` is 1 when ``pool_all`` (a mean over real tokens, not over all positions: the same as our
    ``mean``). Without ``gather_sentence_embeddings``, ``pool_all`` chooses the classifier's pooling, as before."""
    use_cls_token = bool(d.get("use_cls_token", True))
    gather = bool(d.get("gather_sentence_embeddings", False))
    mean = bool(d.get("pool_all", False)) and not (gather and use_cls_token)
    return {
        "pooling": "mean" if mean else "cls",
        "sentence_embedding": gather,
        "normalize_embeddings": bool(d.get("use_normalized_embeddings", False)),
        "embedding_pooler": not use_cls_token,
    }


def _init_fields() -> list[str]:
    import inspect

    params = inspect.signature(M2BertConfig.__init__).parameters
    return [p for p in params if p not in ("self", "kwargs")] + ["num_labels", "id2label", "label2id"]


# transformers loaded while this module was importing (m2bert.auto): the Auto* registration happens now.
register_if_pending()
