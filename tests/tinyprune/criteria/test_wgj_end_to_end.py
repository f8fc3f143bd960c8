"""Methods.md §2.10 T8: end-to-end sanity check of wgj on static synthetic rPPG data.

Protocol (``bench/sparse_eval.py run_t8``, also ``bench/wgj_bench.py --t8``):
``physnet_2p1d`` (PhysNet's (2+1)-D variant) at width 8 on 16x16 x 32-frame clips, 8 training and
8 test videos of 16 clips each on the ``static`` preset, seed 0, Adam lr 3e-3 cosine, 12 epochs.

* dense: trained 12 epochs;
* wgj@0.1: the same initialisation trained 12 epochs dense-to-sparse to density 0.1 (cubic
  schedule to 0.6 E, drop/regrow every 10 steps until 0.75 E, 1 weight per output channel floor);
* one-shot magnitude@0.1: the trained dense net, smallest-|W| weights zeroed globally to density
  0.1 over the same prunable layers with the same floors (the engine's global magnitude ranking),
  BatchNorm statistics re-estimated, fine-tuned under that fixed mask for round(0.25 E) = 3 epochs
  (as long as wgj trains after its last mask update), statistics re-estimated again.

HR MAE is read per test video from its 16 concatenated clips (512 frames, 3.5 bpm periodogram
bins). With 8 clips per video (7 bpm bins) the MAE is quantised so coarsely that dense, wgj and
the fine-tuned magnitude baseline all tie at the one-bin floor (1.57 bpm), which cannot test
"beats"; 16 clips is the smallest length where the comparison is meaningful. Takes ~1 min
alone on one thread (~1.5 min on a loaded machine).

Measured (``bench/wgj_bench.py --t8 --seeds 0 1 2``), HR MAE bpm (waveform r):
seed 0: dense 0.81 (0.847), wgj 0.81 (0.827), magnitude 6.89 (0.756; 16.86 before fine-tuning);
seed 1: dense 1.06 (0.906), wgj 1.06 (0.877), magnitude 1.06 (0.843; 17.99 before);
seed 2: dense 0.76 (0.898), wgj 0.76 (0.874), magnitude 0.76 (0.835; 27.04 before).
So "beats magnitude" in HR MAE holds strictly on seed 0 (the seed tested) and is a tie on seeds
1 and 2, where wgj only has the better waveform correlation: a sanity check, not a robust margin.
"""

from __future__ import annotations

import pytest
import torch
from sparse_eval import T8Setup, run_t8


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_t8_wgj_end_to_end_on_static_synthetic_data() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = run_t8(T8Setup())
    finally:
        torch.set_num_threads(threads)
    figures = (
        f"dense {r.dense_mae:.2f} bpm (r {r.dense_r:.3f}), wgj {r.wgj_mae:.2f} bpm "
        f"(r {r.wgj_r:.3f}), one-shot magnitude {r.magnitude_mae:.2f} bpm "
        f"(r {r.magnitude_r:.3f}; {r.magnitude_no_ft_mae:.2f} before fine-tuning)"
    )
    assert r.wgj_density == pytest.approx(0.1, abs=1e-3), figures
    assert r.magnitude_density == pytest.approx(0.1, abs=1e-3), figures
    assert r.dense_mae < 2.0, figures
    assert r.wgj_mae <= r.dense_mae + 1.0, figures
    assert r.wgj_mae < r.magnitude_mae, figures


def test_one_shot_magnitude_is_global_with_floors_and_static_under_training() -> None:
    from sparse_eval import magnitude_config, one_shot_magnitude_

    from tinyprune.models import create_model
    from tinyprune.pruning.masks import find_prunable, layer_floor, out_channel_dim
    from tinyprune.training.hooks import TrainContext

    torch.manual_seed(0)
    model = create_model("test_physnet_2p1d")
    dense = {t.name: t.param.detach().clone() for t in find_prunable(model)}
    hook = one_shot_magnitude_(model, 0.1, min_per_channel=1)
    masks = hook.masks
    assert masks is not None and set(masks.names) == set(dense)
    assert masks.total_active() == round(0.1 * masks.numel())
    kept_min, dropped_max, floors = [], [], 0
    for t in find_prunable(model):
        m = masks.masks[t.name]
        assert torch.equal(t.param.detach()[~m], torch.zeros(int((~m).sum())))
        out_dim = out_channel_dim(t.module)
        floors += layer_floor(m.shape, out_dim, 0.01, 1)
        per_out = m.movedim(out_dim, 0).flatten(1).sum(1)
        assert bool((per_out >= 1).all()), t.name  # per-output-channel floor
        w = dense[t.name].abs()
        dropped_max.append(float(w[~m].max()) if bool((~m).any()) else 0.0)
        kept_min.append(w[m])
    # global ranking: apart from floor-protected entries, every kept |w| beats every dropped |w|
    kept = torch.cat([k.flatten() for k in kept_min])
    below = int((kept < max(dropped_max)).sum())
    assert below <= floors < kept.numel()
    # under training the mask stays fixed (no drop, no regrowth, no further trimming)
    fresh = magnitude_config(0.1, min_per_channel=1).make_hook()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = TrainContext(model=model, optimizer=opt, steps_per_epoch=2, total_steps=4)
    fresh.on_train_begin(ctx)
    before = {n: m.clone() for n, m in fresh.masks.masks.items()}  # type: ignore[union-attr]
    for step in range(1, 5):
        opt.zero_grad()
        model(torch.randn(2, *model.input_shape)).pow(2).mean().backward()
        opt.step()
        ctx.step = step
        fresh.after_step(ctx)
    after = fresh.masks.masks  # type: ignore[union-attr]
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert fresh.records == []
