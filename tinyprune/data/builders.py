"""Builders behind :func:`tinyprune.data.build_dataset`, one per data-set name.

Why: a single registry maps a spec (``"digits"``, ``"synthetic-rppg"``, ``"pure:/path"``,
``"ubfc:/path"``, ``"cifar10:/path"``) to the code that builds its :class:`DataBundle`; unknown
names raise :class:`UnknownNameError` with the closest match instead of an if/elif chain.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from tinyprune.data import cifar, digits, pure, ubfc
from tinyprune.data.bundle import ArrayDataset, ClipDataset, DataBundle
from tinyprune.data.labels import label_hr
from tinyprune.data.preprocess import PreprocessConfig, face_crop_video, preprocess_video
from tinyprune.data.synthetic import SyntheticConfig, generate
from tinyprune.errors import ConfigError
from tinyprune.registry import Registry

log = logging.getLogger(__name__)
Builder = Callable[..., DataBundle]
DATASETS: Registry[Builder] = Registry("dataset")


def _no_path(name: str, path: str | None) -> None:
    if path is not None:
        msg = f"data set {name!r} takes no path, got {name}:{path}"
        raise ConfigError(msg)


def _need_path(name: str, path: str | None) -> str:
    if not path:
        msg = f"data set {name!r} needs a folder: write '{name}:/path/to/{name}'"
        raise ConfigError(msg)
    return path


@DATASETS.register("digits", help="scikit-learn handwritten digits (8x8, optionally 16/28)")
def build_digits(
    path: str | None = None, size: int = 8, test_fraction: float = 0.2, seed: int = 0
) -> DataBundle:
    """Digits bundle; ``val`` and ``test`` are the same held-out split."""
    _no_path("digits", path)
    (xtr, ytr), (xte, yte) = digits.load_digits(size, test_fraction, seed)
    test = ArrayDataset(xte, yte)
    return DataBundle(
        "digits",
        "classification",
        ArrayDataset(xtr, ytr),
        test,
        test,
        (1, size, size),
        10,
        info={"size": size, "seed": seed, "n_train": len(xtr), "n_test": len(xte)},
    )


@DATASETS.register("cifar10", help="CIFAR-10 from a local cifar-10-batches-py folder")
def build_cifar10(
    path: str | None = None, val_fraction: float = 0.0, seed: int = 0, limit: int | None = None
) -> DataBundle:
    """CIFAR-10 bundle; ``val`` is a seeded slice of the training batches (or the test set)."""
    (xtr, ytr), (xte, yte) = cifar.load_cifar10(_need_path("cifar10", path))
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    xtr, xte = cifar.to_tensor_layout(xtr), cifar.to_tensor_layout(xte)
    test = ArrayDataset(xte, yte)
    val = test
    if val_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(xtr))
        k = int(round(val_fraction * len(xtr)))
        val = ArrayDataset(xtr[order[:k]], ytr[order[:k]])
        xtr, ytr = xtr[order[k:]], ytr[order[k:]]
    return DataBundle(
        f"cifar10:{path}",
        "classification",
        ArrayDataset(xtr, ytr),
        val,
        test,
        (3, 32, 32),
        10,
        info={"n_train": len(xtr), "n_test": len(xte)},
    )


class VideoSource(NamedTuple):
    """One real-format video: lazy frames, the label per frame, frame rate, device HR, name."""

    frames: Iterator[np.ndarray]
    bvp: np.ndarray
    fs: float
    device_hr: float
    name: str


def _clips_from_videos(videos: Iterable[VideoSource], cfg: PreprocessConfig) -> ClipDataset:
    """Face-crop, normalise and chunk each video; every clip gets its video's label HR.

    The label HR is taken from the whole label waveform of the frames used
    (:func:`tinyprune.data.labels.label_hr`), not from the clip's own few frames.
    """
    xs, ys, hrs, dev, vids, names, fs_all = [], [], [], [], [], [], []
    for k, src in enumerate(videos):
        faces = face_crop_video(src.frames, cfg)
        n = min(len(faces), len(src.bvp))
        if len(faces) != len(src.bvp):
            log.warning(
                "video %s: %d frames but %d labels; using the first %d",
                src.name,
                len(faces),
                len(src.bvp),
                n,
            )
        x, y = preprocess_video(faces[:n], np.asarray(src.bvp[:n]), cfg)
        video_hr = label_hr(np.asarray(src.bvp[:n]), src.fs)
        xs.append(x)
        ys.append(y)
        hrs += [video_hr] * len(y)
        dev += [src.device_hr] * len(y)
        vids += [k] * len(y)
        names.append(src.name)
        fs_all.append(src.fs)
    fs = float(np.mean(fs_all)) if fs_all else 30.0
    return _stack_clips(xs, ys, hrs, vids, fs, cfg, dev, tuple(names))


def _stack_clips(
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    hrs: list[float],
    vids: list[int],
    fs: float,
    cfg: PreprocessConfig,
    device_hr: list[float] | None = None,
    names: tuple[str, ...] | None = None,
) -> ClipDataset:
    c = 3 * len(cfg.data_types)
    x = np.concatenate(xs) if xs else np.zeros((0, c, cfg.chunk, cfg.size, cfg.size), np.float32)
    y = np.concatenate(ys) if ys else np.zeros((0, cfg.chunk), np.float32)
    dev = None if device_hr is None else np.asarray(device_hr, np.float64)
    return ClipDataset(x, y, np.asarray(hrs), np.asarray(vids), fs, dev, names)


def _split(names: list[Any], train_fraction: float) -> tuple[list[Any], list[Any]]:
    if not 0.0 < train_fraction < 1.0 or len(names) < 2:
        msg = (
            f"need train_fraction in (0, 1) and at least 2 videos/subjects to split; got "
            f"{train_fraction!r} and {len(names)}"
        )
        raise ConfigError(msg)
    k = min(max(1, int(round(train_fraction * len(names)))), len(names) - 1)
    return names[:k], names[k:]


def preprocessing_info(cfg: PreprocessConfig, fs: float, detect: bool) -> dict[str, Any]:
    """What a runtime must do to a video to give these clips (``info["preprocessing"]``).

    Keys are those of :class:`tinyprune.runtime.contract.PreprocessingContract` (the layout is
    the model's, added by the caller). ``detect`` is False only when the clips are centre crops
    of the frame; crop-mode synthetic clips are face-centred with the training crop rule.
    """
    return {
        "task": "rppg",
        "frames": cfg.chunk,
        "height": cfg.size,
        "width": cfg.size,
        "channels": 3 * len(cfg.data_types),
        "data_types": list(cfg.data_types),
        "fs": float(fs),
        "label_type": cfg.label_type,
        "enlarge": cfg.enlarge,
        "detect": detect,
    }


def _rppg_bundle(
    name: str,
    train: ClipDataset,
    test: ClipDataset,
    cfg: PreprocessConfig,
    extras: dict[str, ArrayDataset] | None = None,
    info: dict[str, object] | None = None,
) -> DataBundle:
    shape = (3 * len(cfg.data_types), cfg.chunk, cfg.size, cfg.size)
    if len(train) == 0:
        msg = f"{name}: no training clip of {cfg.chunk} frames; use shorter chunks or more video"
        raise ConfigError(msg)
    info = {**(info or {}), "preprocessing": preprocessing_info(cfg, train.fs, cfg.detect)}
    return DataBundle(name, "rppg", train, test, test, shape, None, train.fs, extras or {}, info)


@DATASETS.register("pure", help="PURE folder (ss-tt/ss-tt/*.png + ss-tt.json)")
def build_pure(
    path: str | None = None,
    train_fraction: float = 0.8,
    label_resample: str = "index",
    max_frames: int | None = None,
    **pre: Any,
) -> DataBundle:
    """PURE bundle: subjects sorted, the first ``train_fraction`` of subjects train (toolbox)."""
    root = _need_path("pure", path)
    cfg = PreprocessConfig(**pre)
    seqs = [pure.read_sequence(root, n) for n in pure.list_sequences(root)]
    subjects = sorted({s.subject for s in seqs})
    tr, te = _split(subjects, train_fraction)

    def videos(keep: list[int]) -> Iterator[VideoSource]:
        for s in seqs:
            if s.subject in keep:
                bvp = s.bvp(label_resample)[:max_frames]
                frames = s.frames(max_frames=max_frames)
                yield VideoSource(frames, bvp, s.fs, s.device_hr(max_frames), s.name)

    return _rppg_bundle(
        f"pure:{path}",
        _clips_from_videos(videos(tr), cfg),
        _clips_from_videos(videos(te), cfg),
        cfg,
        info={"train_subjects": tr, "test_subjects": te},
    )


@DATASETS.register("ubfc", help="UBFC-rPPG folder (subject<N>/vid.avi + ground_truth.txt)")
def build_ubfc(
    path: str | None = None,
    train_fraction: float = 30 / 42,
    max_frames: int | None = None,
    **pre: Any,
) -> DataBundle:
    """UBFC-rPPG bundle: subjects ascending, the first ``train_fraction`` train."""
    root = _need_path("ubfc", path)
    cfg = PreprocessConfig(**pre)
    subjects = [ubfc.read_subject(root, n) for n in ubfc.list_subjects(root)]
    tr, te = _split(subjects, train_fraction)

    def videos(keep: list[ubfc.UbfcSubject]) -> Iterator[VideoSource]:
        for s in keep:
            frames = s.frames(max_frames=max_frames)
            yield VideoSource(frames, s.ppg[:max_frames], s.fs, s.device_hr(max_frames), s.name)

    return _rppg_bundle(
        f"ubfc:{path}",
        _clips_from_videos(videos(tr), cfg),
        _clips_from_videos(videos(te), cfg),
        cfg,
        info={"train_subjects": [s.subject for s in tr], "test_subjects": [s.subject for s in te]},
    )


CAMERA_MODES = ("random", "fixed", "off")


def camera_settings(seed: int, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the sensor model of ``base["camera"]`` for the video of ``seed``.

    ``random``: the ``camera`` preset with this video's own shot noise (0.5-3 DN at mid-grey),
    read noise (0.3-2 DN) and, for half the videos, gamma 2.2 encoding, drawn from a stream of
    ``seed`` that the renderer does not use; ``fixed``: the preset's defaults; ``off``:
    noise-free 8-bit frames.
    """
    kw = {k: v for k, v in base.items() if k != "camera"}
    mode = base.get("camera", "off")
    if mode == "off":
        return kw
    kw["nuisances"] = (*kw["nuisances"], "camera")
    if mode == "random":
        rng = np.random.default_rng([seed, 0xCA3])
        kw |= {
            "shot_noise_dn": float(rng.uniform(0.5, 3.0)),
            "read_noise_dn": float(rng.uniform(0.3, 2.0)),
            "gamma": bool(rng.random() < 0.5),
        }
    return kw


def _synthetic_split(
    seeds: list[int],
    faces: list[str],
    hrs: list[float | None],
    base: dict[str, Any],
    cfg: PreprocessConfig,
    pulse: str = "synthetic",
) -> ClipDataset:
    """Render one crop-mode video per seed, normalise per video, chunk; HR = mean HR per clip."""
    xs, ys, clip_hr, vids = [], [], [], []
    for k, (seed, face, hr) in enumerate(zip(seeds, faces, hrs, strict=True)):
        kw = camera_settings(seed, base)
        video = generate(SyntheticConfig(seed=seed, face=face, hr_bpm=hr, pulse=pulse, **kw))
        x, y = preprocess_video(video.frames, video.bvp, cfg)
        hr_chunks = video.hr[: len(y) * cfg.chunk].reshape(len(y), cfg.chunk)
        xs.append(x)
        ys.append(y)
        clip_hr += [float(np.mean(h)) for h in hr_chunks]
        vids += [k] * len(y)
    return _stack_clips(xs, ys, clip_hr, vids, float(base["fs"]), cfg)


@dataclass(frozen=True)
class SyntheticRPPGOptions:
    """The options of the ``synthetic-rppg`` data set (``--data-kw name=value``).

    Attributes:
        n_train: Training videos (subjects), >= 1.
        n_val: Validation videos, >= 1.
        n_test: Test videos, >= 1.
        clips_per_video: Clips of ``chunk`` frames per video, >= 1.
        size: Side of the face-centred square crop, in pixels.
        chunk: Frames per clip.
        fs: Frame rate in Hz.
        nuisances: Nuisances of the renderer (``"static"``, motion, lighting, ...).
        amplitude: Pulse amplitude on the skin.
        seed: Seeds the subjects of every split.
        data_types: Input channels' preprocessing (``DiffNormalized``, ``Standardized``, ...).
        label_type: The label's preprocessing.
        real_ppg: Also build ``extras["real_ppg"]`` (videos driven by real PPG recordings).
        camera: Sensor noise of every video (:func:`camera_settings`): ``random`` (each video
            its own noise level and gamma; the default: a net trained on noise-free frames
            reads noisy real video poorly), ``fixed`` or ``off`` (noise-free, the default
            before; the README's criteria/wgj/zoo rPPG tables were measured with it).
    """

    n_train: int = 8
    n_val: int = 2
    n_test: int = 2
    clips_per_video: int = 2
    size: int = 36
    chunk: int = 64
    fs: float = 30.0
    nuisances: tuple[str, ...] = ("static",)
    amplitude: float = 0.003
    seed: int = 0
    data_types: tuple[str, ...] = ("DiffNormalized",)
    label_type: str = "DiffNormalized"
    real_ppg: bool = True
    camera: str = "random"


@DATASETS.register("synthetic-rppg", help="seeded synthetic face videos with exact BVP/HR")
def build_synthetic_rppg(path: str | None = None, **options: Any) -> DataBundle:
    """Synthetic rPPG bundle of face-centred ``size x size`` clips (crop mode, no detection).

    ``options`` are the fields of :class:`SyntheticRPPGOptions`. Train, validation and test
    subjects never share a seed; validation/test faces are lfw faces 50-99 (training uses the
    astronaut and lfw 0-49) and test HRs are spread over 55-130 bpm. ``extras["real_ppg"]``
    holds astronaut videos driven by heartpy's three real PPG recordings.
    """
    _no_path("synthetic-rppg", path)
    o = SyntheticRPPGOptions(**options)
    n_train, n_val, n_test, chunk, size = o.n_train, o.n_val, o.n_test, o.chunk, o.size
    clips_per_video, fs, nuisances = o.clips_per_video, o.fs, o.nuisances
    if min(n_train, n_val, n_test, clips_per_video) < 1:
        msg = "n_train, n_val, n_test and clips_per_video must all be >= 1"
        raise ConfigError(msg)
    if o.camera not in CAMERA_MODES:
        msg = f"camera={o.camera!r} is not one of: {', '.join(CAMERA_MODES)}"
        raise ConfigError(msg)
    cfg = PreprocessConfig(
        size=size, chunk=chunk, data_types=o.data_types, label_type=o.label_type, detect=False
    )
    base = {
        "duration_s": clips_per_video * chunk / fs,
        "fs": fs,
        "crop": size,
        "nuisances": tuple(nuisances),
        "amplitude": o.amplitude,
        "camera": o.camera,
    }
    root = o.seed * 100_003

    def faces(n: int, train: bool) -> list[str]:
        return [
            ("astronaut" if i % 4 == 0 else f"lfw:{i % 50}") if train else f"lfw:{50 + i % 50}"
            for i in range(n)
        ]

    train = _synthetic_split(
        [root + i for i in range(n_train)], faces(n_train, True), [None] * n_train, base, cfg
    )
    val = _synthetic_split(
        [root + 10_000 + i for i in range(n_val)], faces(n_val, False), [None] * n_val, base, cfg
    )
    test = _synthetic_split(
        [root + 20_000 + i for i in range(n_test)],
        faces(n_test, False),
        list(np.linspace(55, 130, n_test)),
        base,
        cfg,
    )
    extras: dict[str, ArrayDataset] = {}
    if o.real_ppg:
        extras["real_ppg"] = _real_ppg_split(base, cfg, root)
    shape = (3 * len(cfg.data_types), chunk, size, size)
    info = {
        "seed": o.seed,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "clips_per_video": clips_per_video,
        "nuisances": list(nuisances),
        "camera": o.camera,
        # crop mode renders the face box (crop / 1.5) centred: the 1.5x training crop rule
        "preprocessing": preprocessing_info(cfg, fs, detect=True),
    }
    return DataBundle("synthetic-rppg", "rppg", train, val, test, shape, None, fs, extras, info)


def _real_ppg_split(base: dict[str, Any], cfg: PreprocessConfig, root: int) -> ClipDataset:
    parts = [
        _synthetic_split(
            [root + 30_000 + k], ["astronaut"], [None], base, cfg, pulse=f"heartpy:{k}"
        )
        for k in range(3)
    ]
    vids = np.concatenate([p.video + k for k, p in enumerate(parts)])
    return ClipDataset(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.hr_bpm for p in parts]),
        vids,
        float(base["fs"]),
    )


#: Builders that take their options as ``**options`` of a dataclass name it here.
_OPTION_TYPES: dict[Builder, type] = {build_synthetic_rppg: SyntheticRPPGOptions}


def builder_options(builder: Builder) -> list[str] | None:
    """The option names ``builder`` takes after its path (None: it takes any keyword)."""
    if builder in _OPTION_TYPES:
        return [f.name for f in dataclasses.fields(_OPTION_TYPES[builder])]
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n in params if n != next(iter(params))]
