"""Train a small TS-CAN on synthetic rPPG clips and export it to int8 (torch + TF side).

Used by the runtime tests (the ``int8_net`` fixture) and runnable alone:
``python tests/tinyprune/runtime/runtime_netbuild.py OUT [epochs=30 ...]``. About 5 CPU-minutes.
"""

from __future__ import annotations

from pathlib import Path

DATA_TYPES = ("DiffNormalized", "Standardized")


def contract(frames: int, size: int) -> dict:
    """The preprocessing contract this training used (report.json['preprocessing'])."""
    return {
        "task": "rppg",
        "frames": frames,
        "height": size,
        "width": size,
        "channels": 6,
        "data_types": list(DATA_TYPES),
        "layout": "stacked",
        "fs": 30.0,
        "label_type": "DiffNormalized",
        "enlarge": 1.5,
        "detect": True,
    }


def build_net(
    out: Path,
    *,
    frames: int = 10,
    size: int = 18,
    width: int = 8,
    epochs: int = 30,
    n_train: int = 16,
    seed: int = 0,
) -> Path:
    """Train tscan(frames, size) briefly on synthetic-rppg; export int8 for rpi4 into ``out``."""
    import torch

    from firmware_export import ExportOptions, export
    from tinyprune.data import build_dataset
    from tinyprune.models import create_model

    torch.manual_seed(seed)
    bundle = build_dataset(
        "synthetic-rppg",
        n_train=n_train,
        n_val=1,
        n_test=1,
        clips_per_video=24,
        size=size,
        chunk=frames,
        data_types=DATA_TYPES,
        seed=seed,
        real_ppg=False,
    )
    x = torch.from_numpy(bundle.train.x.reshape(len(bundle.train.x), 6, frames * size, size))
    y = torch.from_numpy(bundle.train.y)
    model = create_model("tscan", frames=frames, img_size=size, width=width, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    calib = x[:64].numpy()
    export(
        model,
        calib,
        target="rpi4",
        out_dir=out,
        options=ExportOptions(
            calib_cap=64, verify_samples=8, min_cosine=0.5, preprocessing=contract(frames, size)
        ),
    )
    return out


if __name__ == "__main__":
    import sys
    import time

    t = time.time()
    build_net(Path(sys.argv[1]), **{k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])})
    print("built in", time.time() - t)
