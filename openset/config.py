"""The one typed, frozen configuration that drives training and is stored in every artefact.

A config is read from JSON (:meth:`Config.from_json`), validated by pydantic, and written
back verbatim into ``model.json`` so that a shipped model records exactly how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message is one readable line."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    dataset: Literal["mnist", "fashion_mnist"] = "mnist"
    known_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    # Change the known training images (not val/test) as the ``augment`` section says.
    augment: bool = True

    @field_validator("known_classes")
    @classmethod
    def _distinct_digits(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 2 or len(set(value)) != len(value) or not all(0 <= c <= 9 for c in value):
            raise ValueError("known_classes must be at least two distinct labels in 0..9")
        return tuple(sorted(value))


class AugmentConfig(_Frozen):
    """How the known training digits are changed when ``data.augment`` is on (``openset.augment``)."""

    rotate: float = Field(20.0, ge=0.0, le=90.0)  # degrees, either way
    shear: float = Field(0.3, ge=0.0, le=1.0)  # horizontal shear factor, either way
    scale: tuple[float, float] = (0.75, 1.1)  # range of the scale of each axis
    shift: float = Field(2.0, ge=0.0)  # MNIST pixels, either way
    elastic: float = Field(2.0, ge=0.0)  # amplitude of a smooth random warp, MNIST pixels (0 = off)
    elastic_p: float = Field(0.5, ge=0.0, le=1.0)  # share of the batch warped
    pen: float = Field(1.0, ge=0.0, le=2.0)  # strokes up to this many MNIST pixels thicker, or 0.5 thinner (0 = off)
    pen_p: float = Field(0.5, ge=0.0, le=1.0)
    blur: float = Field(1.5, ge=0.0, le=3.0)  # Gaussian blur up to this sigma in MNIST pixels (0 = off)
    blur_p: float = Field(0.3, ge=0.0, le=1.0)
    # Put every changed digit back into MNIST's layout (20x20 ink box, centre of mass), as the service does.
    renormalise: bool = True

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < value[0] <= value[1]:
            raise ValueError("scale must be [low, high] with 0 < low <= high")
        return value


class Normalization(_Frozen):
    """Applied inside the model (and so inside the ONNX graph) to inputs in [0, 1]."""

    mean: float = 0.1307
    std: float = Field(0.3081, gt=0.0)


class ModelConfig(_Frozen):
    # "mlp": fully connected layers on the pixels; "cnn": convolutional stages whose features then go through the
    # same ``hidden`` layers.
    arch: Literal["mlp", "cnn"] = "mlp"
    # Widths of the hidden layers; () is multinomial logistic regression on the pixels (mlp).
    hidden: tuple[int, ...] = (512, 256)
    # cnn only: channels of the stages. "plain": two 3x3 convolutions and a 2x2 max-pool per stage, the last map
    # flattened; "residual": one residual block per stage (seed 002), every stage after the first halving the
    # resolution, then global average pooling. ``norm``: the convolutions' normalisation (models.NORMS; "known": batch
    # norm with the known digits' statistics alone, every batch norm of the model so).
    channels: tuple[PositiveInt, ...] = Field((32, 64), min_length=1)
    block: Literal["residual", "plain"] = "residual"
    norm: Literal["batch", "known", "group"] = "batch"
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu"] = "relu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    batch_norm: bool = True
    # "single": one sigmoid unit; "per_class": one-vs-rest sigmoids (DOC, Shu et al. 2017) whose
    # maximum is the known-class logit, so each class is bounded by the others too.
    known_head: Literal["single", "per_class"] = "per_class"
    # An ensemble of this many networks, trained side by side from different initial weights; one graph.
    members: int = Field(1, ge=1, le=8)
    # Test-time augmentation: outputs averaged over the input moved by this many pixels each way (0 = off).
    tta: int = Field(0, ge=0, le=3)
    normalization: Normalization = Normalization()


NegativeKind = Literal["recombine", "erase", "mixup", "noise", "flip", "mirror", "characters"]


class NegativesConfig(_Frozen):
    """Where the sigmoid known-class head gets its negatives.

    ``none``: the head is not trained; ``synthetic``: made from known training digits (``kinds``;
    ``characters``: letters and symbols of stroke fonts, ``openset.characters``); ``auxiliary:<dataset>``: outlier
    exposure with another dataset's training split; ``supervised``: training images of the *unknown* digits — the
    seed's variant, labelled as such in every report and never the default.
    """

    source: str = "synthetic"
    kinds: tuple[NegativeKind, ...] = ("recombine", "erase", "mixup", "noise")
    # Negatives per known image in a batch, and the weight of the known-head loss.
    ratio: float = Field(1.0, gt=0.0, le=4.0)
    head_weight: float = Field(1.0, ge=0.0)
    # Outlier exposure: pull the softmax of negatives towards uniform (0 = off).
    uniform_weight: float = Field(0.5, ge=0.0)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        kind, _, dataset = value.partition(":")
        if kind in ("none", "synthetic", "supervised") and not dataset:
            return value
        if kind == "auxiliary" and dataset in ("mnist", "fashion_mnist"):
            return value
        raise ValueError(
            "source must be none, synthetic, supervised or auxiliary:<mnist|fashion_mnist>"
        )

    @property
    def labelled_supervised(self) -> bool:
        return self.source == "supervised"


class ContrastiveConfig(_Frozen):
    """A supervised contrastive term (Khosla et al. 2020) on the L2-normalised embedding of two changed views
    of every known digit: same digit class together, others apart — the geometry the kNN score reads."""

    weight: float = Field(0.0, ge=0.0)  # 0 = off (one view per digit)
    temperature: float = Field(0.1, gt=0.0)


class OutlierSynthesisConfig(_Frozen):
    """Virtual outliers in feature space (VOS, Du et al. 2022; ``openset.outliers``): after ``start_epoch`` epochs,
    every batch adds the ``keep`` least likely of ``draws`` points drawn from each class's Gaussian (fitted to the
    newest ``queue`` known embeddings of the class), which the known head learns to refuse."""

    weight: float = Field(0.0, ge=0.0)  # 0 = off
    start_epoch: int = Field(2, ge=1)  # the first epoch with virtual outliers
    queue: int = Field(1000, ge=2)
    draws: int = Field(2000, ge=1)
    keep: int = Field(8, ge=1)


class OptimConfig(_Frozen):
    name: Literal["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"] = "adamw"
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)  # L2
    l1: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)


class ScoreConfig(_Frozen):
    """The open-set scores, the recipe of the shipped (combined) score and its calibration."""

    centroid_metric: Literal["euclidean", "cosine"] = "cosine"
    knn_k: int = Field(3, ge=1)
    # Training embeddings kept as the kNN reference bank (also inside the ONNX graph if used); 2,048 and k = 3
    # since issue 13 (E16 in docs/experiments.md): a bank that stays in the caches between requests.
    knn_bank: int = Field(2048, ge=1)
    prototypes_per_class: int = Field(16, ge=1)
    # Weight of the sigmoid head in the combined score; the centroid term gets 1 - this.
    combined_head_weight: float = Field(0.1, ge=0.0, le=1.0)
    # The combined score's distance term: class centroids (``combined_per_class`` k-means
    # centroids per class, 1 = the class means) or the kNN distance.
    combined_distance: Literal["centroid", "knn"] = "knn"
    combined_per_class: int = Field(1, ge=1)
    target_tpr: float = Field(0.95, gt=0.0, lt=1.0)
    # The known validation digits the threshold accepts target_tpr of: as they are, or also once changed by the
    # training augmentation (so that a person's pen, paper or hand does not push known digits under it).
    calibration: Literal["clean", "clean+augmented"] = "clean"


class EvaluationConfig(_Frozen):
    """How the finished model is measured (``openset train`` / ``export``): never a choice of the model itself."""

    # Test digits of each class per change and severity in the shift benchmark (0: no benchmark).
    shift_per_class: int = Field(100, ge=0)


class ExportConfig(_Frozen):
    """How the ONNX graph stores its weights (``openset.export.quantize``): float32 as trained, or ``nbits8``: the
    large matrix products' weights in 8 bits, quantized in blocks (a quarter of the bytes read per call), each
    image's activations quantized on their own. The threshold and every shipped figure are the stored graph's own."""

    weights: Literal["float32", "nbits8"] = "nbits8"


class Config(_Frozen):
    name: str = "mnist-0to4"
    seed: int = 0
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    negatives: NegativesConfig = NegativesConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    outliers: OutlierSynthesisConfig = OutlierSynthesisConfig()
    optim: OptimConfig = OptimConfig()
    scores: ScoreConfig = ScoreConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _outliers_need_one_network(self) -> Config:
        if self.outliers.weight and self.model.members > 1:
            raise ValueError("outliers (virtual outliers) train one network: set model.members to 1")
        return self

    @model_validator(mode="after")
    def _auxiliary_is_another_dataset(self) -> Config:
        # Outlier exposure with the training dataset itself would feed it the unknown classes.
        if self.negatives.source == f"auxiliary:{self.data.dataset}":
            raise ValueError("negatives.source auxiliary:<dataset> must name a dataset other than data.dataset")
        return self

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        """A config file; one with ``"extends": "<file>"`` (beside it) is that file with its own fields on top, section
        by section (``configs/mnist-0to4-quick.json``: the default in one epoch)."""
        path = Path(path)
        try:
            return cls.model_validate(_resolved(path))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        except ValidationError as err:
            raise ConfigError(f"{path}: {problems(err.errors())}") from None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def override(self, **sections: dict) -> Config:
        """A copy with some fields replaced, e.g. ``cfg.override(optim={"epochs": 1})``."""
        merged = self.to_dict()
        for section, values in sections.items():
            if isinstance(values, dict):
                merged[section] = {**merged[section], **values}
            else:
                merged[section] = values
        try:
            return Config.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(f"invalid override: {problems(err.errors())}") from None


def dotted_sections(values: dict[str, Any]) -> dict[str, Any]:
    """``{"section.field": value}`` as :meth:`Config.override` keyword arguments, ``{"section": {"field": value}}``;
    a key without a dot is a top-level field (``seed``, ``name``)."""
    sections: dict[str, Any] = {}
    for key, value in values.items():
        section, _, field = key.partition(".")
        if field:
            sections.setdefault(section, {})[field] = value
        else:
            sections[section] = value
    return sections


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``section.field=json`` pairs (the commands' ``--set``) into :meth:`Config.override` keyword arguments; a value
    that is not JSON is a string."""
    def value(raw: str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw

    return dotted_sections({key: value(raw) for key, _, raw in (pair.partition("=") for pair in pairs)})


def problems(errors: list[dict], limit: int = 5) -> str:
    """pydantic's error list (``ValidationError.errors()``) as one line: ``where: what; where: what``; a request
    body's ``body`` step is left out of the place."""
    def where(item: dict) -> str:
        return ".".join(str(p) for p in item.get("loc", ()) if p != "body")

    return "; ".join(f"{where(e)}: {e.get('msg')}" if where(e) else str(e.get("msg")) for e in errors[:limit])


def _resolved(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The JSON of a config file, its ``extends`` chain merged in (the file's own fields win, section by section)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: extends itself")
    fields = json.loads(path.read_text())
    base = fields.pop("extends", None) if isinstance(fields, dict) else None
    if base is None:
        return fields
    merged = _resolved(path.parent / base, (*seen, path.resolve()))
    for key, value in fields.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged
