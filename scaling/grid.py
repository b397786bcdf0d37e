"""Grid specs: which DiT models a scaling study trains, on what data, with which recipe, evaluated how.

A grid spec is a tree of frozen dataclasses, each validated in `__post_init__` (read from YAML
by `scaling.gridfile`); `plan(spec)` expands it into one `RunSpec` per model x patch size x block,
the unit that executors train and evaluate. The paper's grid (Sec. 4): DiT-S/B/L/XL x p in {2, 4, 8},
adaLN-Zero, ImageNet 256 through the SD VAE, batch 256, 400K steps, FID-50K every 50K steps.

    name: my-grid
    models: {sizes: [S, B], patch_sizes: [4, 8], blocks: [adaln-zero]}
    data: {dataset: mnist32, codec: identity, resolution: 32, channels: 1, num_classes: 10}
    train: {batch_size: 64, lr: 1.0e-3, steps: 2000}    # any dit.config.TrainConfig option
    eval: {every: 1000, features: mnist, num_samples: 500, sampler: ddim, sampling_steps: [25]}
    executor: {kind: local, gpus_per_run: 0, cpu_workers: 1}
    seeds: [0, 1, 2]        # optional: each run once per training seed, one run directory each
    budgets: [1e9, 3e9]     # optional, instead of train.steps: training compute budgets in Gflops
    sweep: {lr: [5.0e-4, 1.0e-3, 2.0e-3], parametrization: [sp, mup]}  # optional: recipe values, each combination a run

`seeds` repeat every run with `train.seed` set to each (the run keeps its name, its directory gets
'-seed<N>'; without `seeds` a run trains with `train.seed` in a directory named after it alone).
`sweep` lists values of training-recipe fields (SWEEPABLE: lr, batch_size, warmup_steps, weight_decay,
parametrization); every run trains once per combination of them, with every seed and to every budget.
Like the seed, a swept value keeps the run's name (the model) and goes into its directory, key and
label ('DiT-B/4-lr0.001-mup-seed1') and into the results table's row key. A μP run without
`train.base_width` takes the grid's narrowest model's width as its base width.
`budgets` make an isoFLOP grid: each model trains until Gflops x batch x steps x 3 reaches each
budget, steps = ceil(budget / (Gflops x batch x 3)), in one run to the largest budget's step, and is
evaluated at each budget's step instead of every `eval.every` steps (so a budget costs no extra
training; the learning-rate schedule spans the run to the largest budget, which only a constant
schedule leaves the same as a run to a smaller budget would see).

A bad value fails with a `SpecError` naming its key, so the file reader can point at the line.
"""
import dataclasses
import math
import re
from itertools import pairwise, product

from dit.blocks import BLOCKS
from dit.config import DEFAULT_VAE, TrainConfig
from dit.ema import check_sigma_rel
from dit.latents import CODECS, SD_VAE_CONFIG
from dit.models import CUSTOM_SIZE, MODEL_SIZES, PAPER_PATCH_SIZES, DiTConfig, dit_config, parse_model_name
from dit.posthoc_ema import MIN_SNAPSHOTS
from dit.samplers import SAMPLERS
from eval.features import EXTRACTORS
from eval.metric_groups import DEFAULT_METRICS, METRIC_GROUPS
from study import layout
from study.blocks import DEFAULT_BLOCK
from study.registry import Registry

# The SD VAE's geometry without loading it: 8x downsampling (one per down block after the first), 4 channels.
SD_VAE_DOWNSAMPLE = 2 ** (len(SD_VAE_CONFIG["block_out_channels"]) - 1)
SD_VAE_CHANNELS = SD_VAE_CONFIG["latent_channels"]


class SpecError(ValueError):
    """A bad value in a spec; `key` names the field, so the YAML reader can point at its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _require(condition: bool, key: str, message: str):
    if not condition:
        raise SpecError(key, message)


def _choice(value, registry: Registry, key: str):
    try:
        registry.check(value)
    except ValueError as exc:
        raise SpecError(key, str(exc)) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One model listed by name: a paper size ('DiT-B/4') or 'DiT-custom/<p>' with its depth, width and heads.

    Without `block` it runs with each of the grid's blocks.
    """

    name: str
    block: str | None = None
    depth: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None

    def __post_init__(self):
        try:
            size, _ = parse_model_name(self.name)
        except ValueError as exc:
            raise SpecError("name", str(exc)) from None
        if self.block is not None:
            _choice(self.block, BLOCKS, "block")
        arch = (self.depth, self.hidden_size, self.num_heads)
        if size == CUSTOM_SIZE:
            _require(None not in arch, "name", f"{self.name} needs depth, hidden_size and num_heads")
        else:
            _require(arch == (None, None, None), "depth", f"{self.name} has the fixed size {MODEL_SIZES[size]}; "
                     f"for another depth, width or heads use DiT-custom/<p>")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelGrid:
    """The models of a grid: sizes x patch sizes x blocks, plus models listed one by one (`include`)."""

    sizes: tuple[str, ...] = ()
    patch_sizes: tuple[int, ...] = PAPER_PATCH_SIZES
    blocks: tuple[str, ...] = (DEFAULT_BLOCK,)
    include: tuple[ModelEntry, ...] = ()

    def __post_init__(self):
        for size in self.sizes:
            _choice(size, MODEL_SIZES, "sizes")
        for patch in self.patch_sizes:
            _require(patch >= 1, "patch_sizes", f"patch size {patch} must be at least 1")
        _require(len(self.blocks) > 0, "blocks", "list at least one block")
        for block in self.blocks:
            _choice(block, BLOCKS, "blocks")
        _require(bool(self.sizes) or bool(self.include), "sizes", "list model sizes or models under include")
        _require(not self.sizes or bool(self.patch_sizes), "patch_sizes", "list the patch sizes of the model sizes")

    def entries(self) -> list[ModelEntry]:
        """Every model x block of the grid, in order: sizes, then patch sizes, then blocks, then include."""
        grid = [
            ModelEntry(name=f"DiT-{s}/{p}", block=b) for s in self.sizes for p in self.patch_sizes for b in self.blocks
        ]
        listed = [
            dataclasses.replace(e, block=b) for e in self.include for b in ((e.block,) if e.block else self.blocks)
        ]
        return grid + listed


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSpec:
    """The training images and how the model sees them.

    `dataset` is 'mnist32', an ImageNet-style folder (class/xxx.JPEG) or a latent cache from
    `scaling encode`. `codec` maps images of `resolution` px and `channels` channels to the
    model's input: 'identity' (pixels) or 'sd-vae' (8x smaller, 4 channels; Sec. 3.1).
    """

    dataset: str
    codec: str = "sd-vae"
    resolution: int = 256
    channels: int = 3
    num_classes: int = 1000
    vae: str = DEFAULT_VAE

    def __post_init__(self):
        _require(bool(self.dataset), "dataset", "name the data set: mnist32, an image folder or a latent cache")
        _choice(self.codec, CODECS, "codec")
        _require(self.resolution >= 1, "resolution", f"resolution {self.resolution} must be positive")
        _require(self.channels >= 1, "channels", f"channels {self.channels} must be positive")
        _require(self.num_classes >= 1, "num_classes", f"num_classes {self.num_classes} must be positive")
        if self.codec == "sd-vae":
            _require(
                self.channels == 3,
                "channels",
                f"the SD VAE encodes 3-channel images, not {self.channels}; use codec identity",
            )
            _require(
                self.resolution % SD_VAE_DOWNSAMPLE == 0,
                "resolution",
                f"resolution {self.resolution} does not divide by the SD VAE's downsampling factor {SD_VAE_DOWNSAMPLE}",
            )

    @property
    def input_size(self) -> int:
        """Side of the model's input grid: the latent side through the VAE, the image side in pixels."""
        return self.resolution // SD_VAE_DOWNSAMPLE if self.codec == "sd-vae" else self.resolution

    @property
    def in_channels(self) -> int:
        return SD_VAE_CHANNELS if self.codec == "sd-vae" else self.channels


# TrainConfig options that a grid sets per run from its `models` and `data` sections.
RUN_OPTIONS = ("model", "block", "depth", "hidden_size", "num_heads", "data", "resolution", "codec", "vae")


class _RecipeMapping:
    """TrainRecipe's behaviour: a mapping of TrainConfig keyword arguments (`TrainConfig(**recipe, model=...)`),
    checked by TrainConfig's own rules when the grid is read."""

    def keys(self):
        """The option names, for `**recipe`."""
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key):
        """The value of option `key`, for `**recipe`."""
        return getattr(self, key)

    def __post_init__(self):
        try:
            TrainConfig(**self)  # TrainConfig's own checks, so a bad recipe fails when the grid is read
        except ValueError as exc:
            named = [k for k in self.keys() if re.search(rf"\b{k}\b", str(exc))]
            raise SpecError(named[0] if named else "", str(exc)) from None


# The training recipe of every run of a grid: TrainConfig's options (same names, types and defaults, the paper's
# recipe; see dit/config.py) less RUN_OPTIONS, which a grid sets per run. A μP run's base_width left None takes
# the grid's narrowest model's width.
TrainRecipe = dataclasses.make_dataclass(
    "TrainRecipe",
    [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(TrainConfig)
     if f.name not in RUN_OPTIONS],
    bases=(_RecipeMapping,), frozen=True, kw_only=True,
)
TrainRecipe.__module__ = __name__  # executors pickle specs by reference to scaling.grid.TrainRecipe
TrainRecipe.__doc__ = _RecipeMapping.__doc__


DEFAULT_STEPS = TrainRecipe().steps  # a grid with budgets leaves train.steps at this default

# The recipe fields a grid can sweep, in the order a run's directory names them, with their label there.
SWEEPABLE = {"parametrization": "", "lr": "lr", "batch_size": "bs", "warmup_steps": "warmup", "weight_decay": "wd"}
# The swept fields that are tuned (one value is kept per model); parametrization is compared, not tuned.
TUNED = ("lr", "batch_size", "warmup_steps", "weight_decay")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """Values of training-recipe fields to sweep; a field left out (None) keeps the recipe's one value."""

    parametrization: tuple[str, ...] | None = None
    lr: tuple[float, ...] | None = None
    batch_size: tuple[int, ...] | None = None
    warmup_steps: tuple[int, ...] | None = None
    weight_decay: tuple[float, ...] | None = None

    def __post_init__(self):
        for key in self.axes():
            values = getattr(self, key)
            _require(bool(values), key, f"the list is empty; list at least one value, or leave {key} out")
            _require(len(set(values)) == len(values), key,
                     f"{list(values)} repeats a value; list each once")
            for value in values:
                try:
                    TrainRecipe(**{key: value})
                except SpecError as exc:
                    raise SpecError(key, str(exc)) from None

    def axes(self) -> tuple[str, ...]:
        """The swept fields, in SWEEPABLE's order."""
        return tuple(k for k in SWEEPABLE if getattr(self, k) is not None)

    def combinations(self) -> list[tuple[tuple[str, object], ...]]:
        """Every combination of the swept values as ((field, value), ...); [()] when nothing is swept."""
        axes = self.axes()
        return [tuple(zip(axes, values, strict=True)) for values in product(*(getattr(self, k) for k in axes))]


def sweep_suffix(sweep: tuple[tuple[str, object], ...]) -> str:
    """'-mup-lr0.001-bs64' for swept values: each field's label and value ('' when nothing is swept)."""
    return "".join(f"-{SWEEPABLE[k]}{v:g}" if SWEEPABLE[k] else f"-{v}" for k, v in sweep)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """Evaluation points: every `every` steps and at the last step, `num_samples` samples per
    sampling-step count x guidance scale, scored with `features` (inception or mnist) on `metrics`
    (eval.metric_groups: fid, sfid, is, pr, kid, fd-dinov2).
    The paper's: FID-50K every 50K steps, 250 DDPM steps, no guidance (cfg scale 1)."""

    every: int = 50_000  # not used by a grid with budgets: it evaluates at each budget's step
    features: str = "inception"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    num_samples: int = 50_000
    sampler: str = "ddpm"
    sampling_steps: tuple[int, ...] = (250,)
    cfg_scales: tuple[float, ...] = (1.0,)
    reference: str | None = None  # reference statistics (.npz, ADM layout); None: computed from the data
    batch_size: int = 64  # images per sampling batch (and per resumable shard)
    keep_samples: bool = False  # keep each point's samples .npz (50K images at 256 px are ~10 GB)
    final_sampling_steps: tuple[int, ...] = ()  # more step counts at the last point only, unguided (Fig. 10)
    validation_items: int = 256  # held-out items of the validation loss (dit.validate); 0: none
    validation_buckets: int = 4  # timestep buckets per item: val_loss_t0 (least noisy) ...
    # post-hoc EMA lengths (EDM2's sigma_rel) reconstructed at the last point and scored on the validation loss
    ema_sigma_rels: tuple[float, ...] = ()
    ema_sample_sigma_rels: tuple[float, ...] = ()  # of those, the ones also sampled and scored in every setting

    def __post_init__(self):
        _require(self.batch_size >= 1, "batch_size", f"batch_size {self.batch_size} must be at least 1")
        _require(self.every >= 1, "every", f"every {self.every} must be at least 1 step")
        _choice(self.features, EXTRACTORS, "features")
        _require(bool(self.metrics), "metrics", f"list metrics out of {', '.join(METRIC_GROUPS.names())}")
        for name in self.metrics:
            _choice(name, METRIC_GROUPS, "metrics")
        _require(self.num_samples >= 1, "num_samples", f"num_samples {self.num_samples} must be at least 1")
        _choice(self.sampler, SAMPLERS, "sampler")
        _require(
            bool(self.sampling_steps) and min(self.sampling_steps) >= 1,
            "sampling_steps",
            "list sampling step counts of at least 1",
        )
        _require(
            bool(self.cfg_scales) and min(self.cfg_scales) >= 1.0,
            "cfg_scales",
            "list guidance scales of at least 1 (1 = no guidance)",
        )
        _require(min(self.final_sampling_steps, default=1) >= 1, "final_sampling_steps",
                 "list sampling step counts of at least 1")
        _require(self.validation_items >= 0, "validation_items",
                 f"validation_items {self.validation_items} must be 0 (none) or more")
        _require(self.validation_buckets >= 1, "validation_buckets",
                 f"validation_buckets {self.validation_buckets} must be at least 1")
        for key in ("ema_sigma_rels", "ema_sample_sigma_rels"):
            for sigma_rel in getattr(self, key):
                try:
                    check_sigma_rel(sigma_rel)
                except ValueError as exc:
                    raise SpecError(key, f"{key}: {exc}") from None
        extra = sorted(set(self.ema_sample_sigma_rels) - set(self.ema_sigma_rels))
        _require(not extra, "ema_sample_sigma_rels", f"ema_sample_sigma_rels {extra} are not in ema_sigma_rels; "
                 "list each sampled length in ema_sigma_rels too")

    def points(self, steps: int) -> tuple[int, ...]:
        """Training steps evaluated in a run of `steps` steps: multiples of `every`, and the last."""
        return tuple(sorted(set(range(self.every, steps + 1, self.every)) | {steps}))


_RESOURCE_KEYS = ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "time", "signal_lead")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmResources:
    """What one run's job asks SLURM for: `nodes` x `tasks_per_node` tasks (one per GPU by default; on a
    CPU-only cluster, `gpus_per_node: 0`, one task of `cpus_per_task` CPUs, its torch threads), for `time`
    minutes. SLURM warns the job `signal_lead` seconds before that limit (None: enough for a checkpoint of the
    run's size, `scaling.slurm.signal_lead`); the job checkpoints and resumes in a new allocation."""

    nodes: int = 1
    gpus_per_node: int = 8
    tasks_per_node: int | None = None  # None: one task per GPU (one on a CPU-only cluster)
    cpus_per_task: int = 1
    time: int = 4320  # minutes per job (submitit's timeout_min); a longer run resumes in a new job
    signal_lead: int | None = None  # seconds before the time limit of the warning signal (USR2)

    def __post_init__(self):
        for key in ("nodes", "cpus_per_task", "time"):
            _require(getattr(self, key) >= 1, key, f"{key} {getattr(self, key)} must be at least 1")
        _require(self.gpus_per_node >= 0, "gpus_per_node",
                 f"gpus_per_node {self.gpus_per_node} must be 0 (a CPU-only cluster) or more")
        _require(self.tasks_per_node is None or self.tasks_per_node >= 1, "tasks_per_node",
                 f"tasks_per_node {self.tasks_per_node} must be at least 1")
        _require(self.signal_lead is None or 0 < self.signal_lead < self.time * 60, "signal_lead",
                 f"signal_lead {self.signal_lead} s must be positive and shorter than time ({self.time} min)")

    @property
    def tasks(self) -> int:
        """Tasks per node: as given, else one per GPU (one on CPU)."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmOverride:
    """Resources for some models of a grid (the big ones want more GPUs or time): `models` lists sizes ('XL')
    or model names ('DiT-XL/2'); every other key replaces the grid's `executor.slurm` value for them."""

    models: tuple[str, ...]
    nodes: int | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    time: int | None = None
    signal_lead: int | None = None

    def __post_init__(self):
        _require(bool(self.models), "models", "list the sizes (XL) or model names (DiT-XL/2) these resources are for")
        for name in self.models:
            if name not in (*MODEL_SIZES.names(), CUSTOM_SIZE):
                try:
                    parse_model_name(name)
                except ValueError as exc:
                    sizes = ", ".join((*MODEL_SIZES.names(), CUSTOM_SIZE))
                    raise SpecError("models", f"{name!r} is neither a size ({sizes}) "
                                    f"nor a model name: {exc}") from None

    def applies_to(self, model: str) -> bool:
        """Whether this entry names the model or its size."""
        return model in self.models or parse_model_name(model)[0] in self.models

    def changes(self) -> dict:
        """The resources this entry sets (the keys it gives)."""
        return {key: getattr(self, key) for key in _RESOURCE_KEYS if getattr(self, key) is not None}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmSpec(SlurmResources):
    """SLURM resources of the runs (submitit's AutoExecutor), with `overrides` for some models: a run spans
    nodes x gpus_per_node GPUs. The first override that names a run's size or model applies to it."""

    partition: str | None = None
    account: str | None = None
    array_parallelism: int = 16  # runs of one resource group in flight at once
    timeouts: int = 20  # allocations a run may use up to its time limit, each resuming from its checkpoint
    overrides: tuple[SlurmOverride, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        for key in ("array_parallelism", "timeouts"):
            _require(getattr(self, key) >= 1, key, f"{key} {getattr(self, key)} must be at least 1")
        for entry in self.overrides:
            try:
                SlurmResources(**{**self.base().__dict__, **entry.changes()})
            except SpecError as exc:
                raise SpecError("overrides", f"models {', '.join(entry.models)}: {exc}") from None

    def base(self) -> SlurmResources:
        """The grid's resources, before any override."""
        return SlurmResources(**{key: getattr(self, key) for key in _RESOURCE_KEYS})

    def resources(self, model: str) -> SlurmResources:
        """The resources of a run of `model`: the grid's, changed by the first override that names it."""
        entry = next((e for e in self.overrides if e.applies_to(model)), None)
        return dataclasses.replace(self.base(), **entry.changes()) if entry else self.base()


# The executors' names: scaling.executors registers one executor under each (it runs RunSpecs, so it imports
# this module, and a spec is checked against the names alone).
EXECUTOR_KINDS = Registry("executor", ("local", "slurm"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorSpec:
    """Where runs go: 'local' (on CPU one after another, or `cpu_workers` at once with the cores
    shared out; on GPUs one per free set of `gpus_per_run` GPUs, torchrun when a run asks for
    several) or 'slurm' (one job per run, `slurm` resources)."""

    kind: str = "local"
    gpus_per_run: int = 0  # local executor; 0 = CPU
    cpu_workers: int = 1  # local executor on CPU: runs at once, each a process with cores // cpu_workers threads
    slurm: SlurmSpec | None = None

    def __post_init__(self):
        _choice(self.kind, EXECUTOR_KINDS, "kind")
        _require(self.gpus_per_run >= 0, "gpus_per_run", f"gpus_per_run {self.gpus_per_run} must be 0 (CPU) or more")
        _require(self.cpu_workers >= 1, "cpu_workers", f"cpu_workers {self.cpu_workers} must be 1 or more")
        _require(
            self.kind != "slurm" or self.slurm is not None,
            "kind",
            "executor kind slurm needs an executor.slurm section (partition, account, nodes, gpus_per_node, "
            "cpus_per_task, time, array_parallelism, overrides)",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GridSpec:
    """A scaling study: models x data x recipe x evaluation x executor. `plan(spec)` lists its runs."""

    name: str
    description: str = ""
    models: ModelGrid
    data: DataSpec
    train: TrainRecipe = dataclasses.field(default_factory=TrainRecipe)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    executor: ExecutorSpec = dataclasses.field(default_factory=ExecutorSpec)
    seeds: tuple[int, ...] = ()  # training seeds, each run once per seed; () = train.seed alone
    budgets: tuple[float, ...] = ()  # training compute budgets (Gflops), instead of train.steps
    sweep: SweepSpec = dataclasses.field(default_factory=SweepSpec)  # recipe values, each combination a run

    def __post_init__(self):
        _require(bool(self.name.strip()), "name", "give the grid a name")
        _require(len(set(self.seeds)) == len(self.seeds), "seeds",
                 f"seeds {list(self.seeds)} repeat a seed; list distinct integers")
        _require(min(self.seeds, default=0) >= 0, "seeds", f"seeds {list(self.seeds)} must be integers of at least 0")
        _require(min(self.budgets, default=1) > 0, "budgets", f"budgets {list(self.budgets)} must be positive (Gflops)")
        _require(len(set(self.budgets)) == len(self.budgets), "budgets",
                 f"budgets {list(self.budgets)} repeat a budget; list distinct ones")
        _require(not self.budgets or self.train.steps == DEFAULT_STEPS, "budgets",
                 "give train.steps or budgets, not both: a grid with budgets trains each model to its budgets' steps")
        _require(not self.eval.ema_sigma_rels or bool(self.train.ema_sigma_rels), "ema_sigma_rels",
                 "eval.ema_sigma_rels reconstructs from the power-function profiles: keep train.ema_sigma_rels set "
                 "(the default 0.05, 0.10)")
        runs = plan(self)  # every model must fit the data, budgets must reach a step, and run names must be unique
        few = [run for run in runs if self.eval.ema_sigma_rels and run.snapshot_count() < MIN_SNAPSHOTS]
        if few:
            raise SpecError("ema_sigma_rels", f"{few[0].label} keeps fewer than {MIN_SNAPSHOTS} EMA snapshots to "
                            f"reconstruct from; lower train.ema_snapshot_every below its {few[0].train.steps} steps")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One run of a grid: a model, its block, and everything it trains and evaluates with."""

    name: str  # the model plus what differs, e.g. DiT-B/4-cross-attn
    model: str  # DiT-B/4, or DiT-custom/4 with depth, hidden_size and num_heads
    block: str
    depth: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    grid: str
    data: DataSpec
    train: TrainRecipe
    eval: EvalSpec
    executor: ExecutorSpec
    seed: int | None = None  # the grid's seed of this run when it names `seeds` (also train.seed)
    budgets: tuple[tuple[float, int], ...] = ()  # (budget Gflops, the step that reaches it), isoFLOP grids
    sweep: tuple[tuple[str, object], ...] = ()  # (field, value) of each swept recipe field (also in train)

    @property
    def stem(self) -> str:
        """The run's name and its swept values, e.g. DiT-B/4-mup-lr0.001 (its name alone without a sweep)."""
        return self.name + sweep_suffix(self.sweep)

    @property
    def dir_name(self) -> str:
        """The run's directory under GRID_DIR/runs: its stem with '/' replaced by '-', and '-seed<N>'
        when the grid names seeds (study.layout.run_dir_name)."""
        return layout.run_dir_name(self.stem, self.seed)

    @property
    def key(self) -> str:
        """The run's unique name in its grid (what `scaling run-one` takes): its stem, or its directory
        name in a grid that names seeds."""
        return self.stem if self.seed is None else self.dir_name

    @property
    def label(self) -> str:
        """The run in messages: its stem, and its seed when the grid names seeds."""
        return self.stem if self.seed is None else f"{self.stem} seed {self.seed}"

    @property
    def size(self) -> str:
        return parse_model_name(self.model)[0]

    @property
    def patch_size(self) -> int:
        return parse_model_name(self.model)[1]

    def dit_config(self) -> DiTConfig:
        """The model's architecture on this run's data (for params and Gflops)."""
        return dit_config(
            self.model, block=self.block, depth=self.depth, hidden_size=self.hidden_size, num_heads=self.num_heads,
            input_size=self.data.input_size, in_channels=self.data.in_channels, num_classes=self.data.num_classes,
            learn_sigma=self.train.learn_sigma, class_dropout_prob=self.train.class_dropout_prob,
            attention=self.train.attention,
        )

    def train_config(self) -> TrainConfig:
        """The TrainConfig this run trains with."""
        return TrainConfig(
            **self.train, model=self.model, block=self.block, depth=self.depth, hidden_size=self.hidden_size,
            num_heads=self.num_heads, data=self.data.dataset, resolution=self.data.resolution,
            codec=self.data.codec, vae=self.data.vae,
        )

    def eval_points(self) -> tuple[int, ...]:
        """The evaluated steps: each budget's step in an isoFLOP grid, else every `eval.every` and the last."""
        if self.budgets:
            return tuple(step for _, step in self.budgets)
        return self.eval.points(self.train.steps)

    def snapshot_count(self) -> int:
        """How many snapshots of the power-function EMA profiles the run keeps (every ema_snapshot_every steps and
        at its last); 0 without profiles."""
        if not self.train.ema_sigma_rels:
            return 0
        every, steps = self.train.ema_snapshot_every, self.train.steps
        return steps // every + (steps % every != 0)

    def budget_at(self, step: int) -> float | None:
        """The training compute budget (Gflops) that `step` was trained for, or None."""
        return next((budget for budget, at in self.budgets if at == step), None)


def run_name(entry: ModelEntry) -> str:
    """The model, then what differs from the paper's default: its block, a custom size's shape."""
    name = entry.name
    if entry.depth is not None:
        name += f"-d{entry.depth}-w{entry.hidden_size}-h{entry.num_heads}"
    if entry.block != DEFAULT_BLOCK:
        name += f"-{entry.block}"
    return name


def _model_run(spec: GridSpec, entry: ModelEntry) -> RunSpec:
    run = RunSpec(
        name=run_name(entry),
        model=entry.name,
        block=entry.block,
        depth=entry.depth,
        hidden_size=entry.hidden_size,
        num_heads=entry.num_heads,
        grid=spec.name,
        data=spec.data,
        train=spec.train,
        eval=spec.eval,
        executor=spec.executor,
    )
    try:
        run.dit_config()
    except ValueError as exc:
        d = spec.data
        raise SpecError("models", f"{entry.name} does not fit the data: {d.dataset} at {d.resolution} px through "
                        f"{d.codec} is a {d.input_size}x{d.input_size}x{d.in_channels} input, and {exc}") from None
    return run


def step_gflops(run: RunSpec) -> float:
    """Training compute of one step of a run: Gflops x batch x 3 (forward and backward)."""
    from scaling.flops import gflops

    return gflops(run.dit_config()) * run.train.batch_size * 3


def start_order(runs: list[RunSpec]) -> list[int]:
    """The indices of `runs` in the order an executor with parallel slots starts them, so that the runs that
    end last are short: training compute (Gflops x batch x steps x 3) to two significant figures, largest
    first (the runs of a budget grid tie), then the most steps (every step costs a fixed overhead, the
    larger part of a tiny model's step), then the grid's order."""

    def key(i: int):
        return -float(f"{step_gflops(runs[i]) * runs[i].train.steps:.2g}"), -runs[i].train.steps

    return sorted(range(len(runs)), key=key)


def budget_steps(budgets, per_step: float) -> tuple[tuple[float, int], ...]:
    """(budget, the first step whose compute reaches it) for each budget, smallest first."""
    return tuple((b, max(1, math.ceil(b / per_step * (1 - 1e-12)))) for b in sorted(budgets))  # 1e-12: rounding


def _with_budgets(spec: GridSpec, runs: list[RunSpec]) -> list[RunSpec]:
    """Each run trained to its largest budget's step and evaluated at every budget's."""
    if not spec.budgets:
        return runs
    per_step = [step_gflops(run) for run in runs]
    smallest = min(range(len(runs)), key=per_step.__getitem__)
    low, run = min(spec.budgets), runs[smallest]
    _require(low >= per_step[smallest], "budgets",
             f"budget {low:.3g} Gflops is less than one training step of the smallest model {run.label} "
             f"({per_step[smallest]:.3g} Gflops = Gflops x batch {run.train.batch_size} x 3); raise it")
    planned = []
    for run, per in zip(runs, per_step, strict=True):
        steps = budget_steps(spec.budgets, per)
        same = [b for (_, prev), (b, s) in pairwise(steps) if s == prev]
        _require(not same, "budgets", f"budget {same[0] if same else 0:.3g} Gflops trains {run.name} for the same "
                 f"steps as a smaller budget; space the budgets further apart")
        train = dataclasses.replace(run.train, steps=steps[-1][1])
        planned.append(dataclasses.replace(run, train=train, budgets=steps))
    return planned


def _with_seeds(spec: GridSpec, runs: list[RunSpec]) -> list[RunSpec]:
    """Each run once per seed of the grid, a model's seeds in a row (without `seeds`: the runs as they are)."""
    return [dataclasses.replace(run, seed=seed, train=dataclasses.replace(run.train, seed=seed))
            for run in runs for seed in spec.seeds] or runs


def _with_sweep(spec: GridSpec, runs: list[RunSpec]) -> list[RunSpec]:
    """Each run once per combination of the swept values, a model's combinations in a row."""
    return [dataclasses.replace(run, sweep=combo, train=dataclasses.replace(run.train, **dict(combo)))
            for run in runs for combo in spec.sweep.combinations()]


def _with_base_width(runs: list[RunSpec]) -> list[RunSpec]:
    """μP runs without a base width get the narrowest model's width; a base width wider than a model fails."""
    widths = [run.dit_config().hidden_size for run in runs]
    narrowest = min(widths)
    planned = []
    for run, width in zip(runs, widths, strict=True):
        if run.train.parametrization == "mup":
            base = run.train.base_width or narrowest
            _require(base <= width, "train", f"train.base_width {base} is wider than {run.label} (width {width}); "
                     f"give at most the narrowest model's width ({narrowest}), or leave it out for that")
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, base_width=base))
        planned.append(run)
    return planned


def plan(spec: GridSpec) -> list[RunSpec]:
    """The runs of a grid, one per model x patch size x block (x swept values x seed), in the grid's order."""
    runs = [_model_run(spec, entry) for entry in spec.models.entries()]
    names = [run.name for run in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    _require(not twice, "models", f"run {twice[0] if twice else ''} is listed twice; list each model x block once")
    return _with_seeds(spec, _with_budgets(spec, _with_base_width(_with_sweep(spec, runs))))
