"""The meta-training config: which space, which data, the generator size and the recipe."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check
from ..data import DataConfig


@dataclass(frozen=True)
class SpaceConfig:
    """A space by name with its options; ``in_channels``, ``num_classes`` and ``input_size``
    default to the dataset's."""

    name: str = "mobilenet_v2"  # a registered space (`metaprune space list`)
    options: dict = field(default_factory=dict)  # space options (`metaprune space show NAME`), e.g. width_mult, small_input, ratios


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 32  # generator hidden width (MetaPruning: 32)
    # what each generator reads: its layer's [in, out] ratios, or its block's whole vector (MetaPruning)
    generator_input: Literal["layer", "block"] = "layer"

    def validate(self, prefix: str = "") -> None:
        check(self.hidden >= 1, prefix + "hidden", self.hidden, "an integer >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Meta-training recipe: SGD with momentum, label smoothing, cosine or linear decay."""

    epochs: int = 64  # passes over the training split (MetaPruning: 64 for MobileNets, 32 for ResNet-50)
    max_steps: int | None = None  # stop early (after this many steps) if set
    batch_size: int = 128  # the global batch (a multiple of --workers on Ray Train)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # MetaPruning: SGD with momentum
    lr: float = 0.25  # peak learning rate (MetaPruning's); > 0
    momentum: float = 0.9  # SGD momentum, in [0, 1)
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 4e-5  # L2 penalty, >= 0
    # weight decay of the generators (every layer's WeightGenerator: its FC1 and the FC2 weight and bias
    # that emit the layer's weight, i.e. nearly every parameter); null: train.weight_decay. The shared
    # biases (classifier, squeeze-excitation convs) keep train.weight_decay. 0: the supernet recipe of
    # the CVPR 2021 channel-ranking competition (issue 26 part 4)
    generator_weight_decay: float | None = None
    label_smoothing: float = 0.1  # in [0, 1)
    schedule: Literal["cosine", "linear"] = "cosine"  # decay of the learning rate to 0 after the warm-up
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    grad_clip: float | None = None  # clip the gradient norm to this value if set
    spike_factor: float = 1.5  # warn when the smoothed loss rises to this many times its running minimum
    # one uniform random channel vector per step; the sandwich rule (max, min and one random vector);
    # or fair (FairNAS's strict fairness, one vector per step): each unit walks a shuffle of its choices,
    # one per step, reshuffled every len(choices) steps (seeded by seed and step: a resume continues it),
    # so within every cycle each choice of each unit is trained equally often
    sampling: Literal["uniform", "sandwich", "fair"] = "uniform"
    # in-place distillation (slimmable networks, BigNAS, Once-for-All), with train.sampling sandwich:
    # the max vector learns from the labels, the other vectors of the step from its detached soft
    # predictions (soft cross-entropy, no label smoothing); none: every vector from the labels
    distill: Literal["none", "inplace"] = "none"
    augment: bool = True  # pad-and-crop (and flip, where the dataset allows) training images
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # autocast; auto: bf16 on CUDA, fp32 on the CPU (bf16 was slower there)
    # NHWC inputs; auto: on (CPU and CUDA). On the CPU, together with the PruningNet's small 1x1 convs
    # as matrix products: a batch-8 step at 224 0.352-0.363 s instead of 0.421-0.448 s; alone, within
    # 1% or faster on the smoke configs (BENCHMARKS.md, issue 17)
    channels_last: Literal["auto", "on", "off"] = "auto"
    # how the PruningNet runs a vector (issue 29): sliced (weights cropped, new shapes every step) or
    # masked (every layer at max width with channel masks, the same shapes every step); auto: masked on
    # CUDA, sliced on the CPU, where masked costs more (BENCHMARKS.md, issue 29) and for ShuffleNetV2
    execution: Literal["auto", "sliced", "masked"] = "auto"
    # masked steps on CUDA recorded once and replayed: graphs (torch.cuda.make_graphed_callables, forward
    # and backward), compile (torch.compile reduce-overhead) or off; auto: off until scripts/gpu_check.sh
    # has measured the captured step on a GPU (BENCHMARKS.md, issue 29): graphs and compile are opt-in
    capture: Literal["auto", "off", "graphs", "compile"] = "auto"
    threads: int | None = None  # torch threads; null: torch's default, capped by METAPRUNE_MAX_THREADS
    checkpoint_every_steps: int = 50  # write RUN/checkpoints/last.pt (atomically) this often
    log_every_steps: int = 10  # one RUN/metrics.jsonl line this often

    def validate(self, prefix: str = "") -> None:
        check(self.epochs >= 1, prefix + "epochs", self.epochs, "an integer >= 1")
        check(self.max_steps is None or self.max_steps >= 1, prefix + "max_steps", self.max_steps,
              "an integer >= 1 or null")
        check(self.batch_size >= 1, prefix + "batch_size", self.batch_size, "an integer >= 1")
        check(self.lr > 0, prefix + "lr", self.lr, "a number > 0")
        check(0 <= self.momentum < 1, prefix + "momentum", self.momentum, "a number in [0, 1)")
        check(self.weight_decay >= 0, prefix + "weight_decay", self.weight_decay, "a number >= 0")
        check(self.generator_weight_decay is None or self.generator_weight_decay >= 0,
              prefix + "generator_weight_decay", self.generator_weight_decay, "a number >= 0 or null")
        check(self.distill == "none" or self.sampling == "sandwich", prefix + "distill", self.distill,
              f"none with train.sampling {self.sampling} (inplace distils from the max vector, which only "
              "sandwich sampling trains every step)")
        check(0 <= self.label_smoothing < 1, prefix + "label_smoothing", self.label_smoothing,
              "a number in [0, 1)")
        check(self.grad_clip is None or self.grad_clip > 0, prefix + "grad_clip", self.grad_clip,
              "a number > 0 or null")
        check(self.spike_factor > 1, prefix + "spike_factor", self.spike_factor, "a number > 1")
        check(self.warmup_steps >= 0, prefix + "warmup_steps", self.warmup_steps, "an integer >= 0")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              prefix + "device", self.device, "auto, cpu, cuda or cuda:N")
        check(self.threads is None or self.threads >= 1, prefix + "threads", self.threads, "an integer >= 1")
        check(self.checkpoint_every_steps >= 1, prefix + "checkpoint_every_steps",
              self.checkpoint_every_steps, "an integer >= 1")
        check(self.log_every_steps >= 1, prefix + "log_every_steps", self.log_every_steps, "an integer >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """How a candidate is scored: BN re-estimated on ``bn_batches`` training batches, then top-1
    on (up to ``max_images`` of) the search split."""

    bn_batches: int = 10  # training batches that re-estimate BatchNorm statistics per candidate
    batch_size: int = 128  # batch size of those BN batches and of scoring
    max_images: int | None = None  # score on at most this many search-split images; null: all

    def validate(self, prefix: str = "") -> None:
        check(self.bn_batches >= 1, prefix + "bn_batches", self.bn_batches, "an integer >= 1")
        check(self.batch_size >= 1, prefix + "batch_size", self.batch_size, "an integer >= 1")
        check(self.max_images is None or self.max_images >= 1, prefix + "max_images", self.max_images,
              "an integer >= 1 or null")


@dataclass(frozen=True)
class MetaTrainConfig:
    seed: int = 0  # seeds the data split, the PruningNet's initialisation and the sampled vectors
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
