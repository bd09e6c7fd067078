"""ELIC training: the loss falls, checkpoints reload exactly, resume continues, export loads."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from core.models import REGISTRY, build_model, load_model
from training.data import CropSampler, list_images
from training.train_elic import main as train_main
from training.train_elic import PRECISIONS, fit_quantiles, rd_loss, read_state


def test_loss_falls_on_real_crops(neon_rgb):
    torch.manual_seed(0)
    spec = REGISTRY["elic-tiny"]
    net = build_model(spec)
    lambdas = torch.tensor(spec.lambdas)
    x = CropSampler([neon_rgb], crop=64, seed=0).batch(4)
    levels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss, _, _ = rd_loss(net, x, levels, lambdas)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_crop_sampler_reads_geotiffs_and_normalises_uint16(tmp_path, neon_rgb):
    import rasterio

    with rasterio.open(neon_rgb) as s:
        data = s.read().astype(np.uint16) * 4 + 1000
        profile = s.profile
    profile.update(dtype="uint16")
    p16 = tmp_path / "img16.tif"
    with rasterio.open(p16, "w", **profile) as d:
        d.write(data)
    paths = list_images([tmp_path])
    assert paths == [p16]
    batch = CropSampler(paths, crop=64, seed=1).batch(3)
    assert batch.shape == (3, 3, 64, 64)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    assert float(batch.max()) > 0.5  # stretched by min..max, not divided by 65535


def test_mosaic_crops_join_four_images_at_random_cuts_and_plain_crops_stay_one_image(tmp_path):
    from PIL import Image

    values = (20, 90, 160, 230)  # one flat grey per image, so each pixel names its source
    for v in values:
        Image.fromarray(np.full((80, 96, 3), v, np.uint8)).save(tmp_path / f"flat{v}.png")
    paths = list_images([tmp_path])

    plain = CropSampler(paths, crop=64, seed=3).batch(6)
    assert all(len(torch.unique(c)) == 1 for c in plain)

    mosaic = CropSampler(paths, crop=64, seed=3, mosaic=1.0).batch(6)
    cuts = set()
    for c in mosaic:
        grey = (c[0] * 255).round().int()
        quadrants = {int(grey[0, 0]), int(grey[0, -1]), int(grey[-1, 0]), int(grey[-1, -1])}
        assert quadrants <= set(values) and len(quadrants) == 4  # four different images
        cy = int((grey[:, 0] != grey[0, 0]).int().argmax())
        cx = int((grey[0] != grey[0, 0]).int().argmax())
        assert 8 <= cy <= 56 and 8 <= cx <= 56
        assert len(torch.unique(grey[:cy, :cx])) == 1 and len(torch.unique(grey[cy:, cx:])) == 1
        cuts.add((cy, cx))
    assert len(cuts) > 1  # the cuts move
    with pytest.raises(ValueError, match="mosaic must be a fraction"):
        CropSampler(paths, crop=64, mosaic=1.5)


def test_a_checkpoint_from_a_per_tensor_adam_resumes_fused_with_its_moments():
    from training.train_elic import adam, load_optimiser

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    old = torch.optim.Adam(params, lr=1e-3)  # how earlier campaign sessions wrote their checkpoints
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        old.step()
    new = adam([torch.nn.Parameter(p.detach().clone()) for p in params], lr=5e-4)
    load_optimiser(new, copy.deepcopy(old.state_dict()))  # as from a file: no tensor shared with ``old``
    assert new.param_groups[0]["fused"] is True and new.param_groups[0]["lr"] == 1e-3
    for a, b in zip(old.state.values(), new.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    for p_old, p_new in zip(params, new.param_groups[0]["params"]):  # the next step agrees
        p_old.grad = p_new.grad = torch.full_like(p_old, 0.5)
    old.step()
    new.step()
    for p_old, p_new in zip(params, new.param_groups[0]["params"]):
        torch.testing.assert_close(p_old, p_new, rtol=0, atol=1e-6)


def test_a_fresh_run_is_reproduced_by_its_seed_and_changed_by_another(tmp_path, neon_rgb):
    """--seed fixes a fresh run's initial weights as well as its crops: the same seed gives the
    same weights after two steps, whatever the process's random state before; another seed does not."""
    finals = []
    for i, seed in enumerate(["0", "0", "1"]):
        torch.manual_seed(100 + i)  # what ran before in the process must not matter
        out = tmp_path / f"run{i}"
        assert train_main(["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2",
                           "--crop", "64", "--steps", "2", "--threads", "1", "--seed", seed]) == 0
        finals.append(torch.load(out / "last.pt", weights_only=True)["model"])
    same = [torch.equal(finals[0][k], finals[1][k]) for k in finals[0]]
    other = [torch.equal(finals[0][k], finals[2][k]) for k in finals[0] if finals[0][k].is_floating_point()]
    assert all(same)
    assert not all(other)


def test_checkpoint_reloads_to_identical_outputs_and_resumes(tmp_path, neon_rgb):
    out = tmp_path / "run"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2", "--crop", "64",
              "--ckpt-every", "2", "--log-every", "1", "--threads", "1"]
    assert train_main(common + ["--steps", "4", "--val", str(neon_rgb), "--val-every", "4", "--val-size", "128"]) == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 4

    spec = REGISTRY["elic-tiny"]
    a, b = build_model(spec).eval(), build_model(spec).eval()
    a.load_state_dict(ck["model"])
    b.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(a(x, torch.tensor([1.0]))["x_hat"].numpy(), b(x, torch.tensor([1.0]))["x_hat"].numpy())

    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert any("val" in r and set(r["val"]) == {"q1", "q2"} for r in log)

    assert train_main(common + ["--steps", "6", "--resume", "--precision", "bf16"]) == 0  # an fp32 checkpoint resumed in bf16
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 6

    weights = tmp_path / "tiny.safetensors"
    assert train_main(["--model", "elic-tiny", "--out", str(out), "--export", str(weights)]) == 0
    loaded = load_model(str(weights))
    assert loaded.spec.name == "elic-tiny" and loaded.net.log_gain.shape == (2, spec.M)


def test_a_slim_channel_context_round_trips_and_codes_bit_exactly(tmp_path, neon_rgb):
    """A model whose channel contexts are narrower (``ModelSpec.context``) saves its widths,
    loads them back, and codes a tile through the integer entropy path: the decoder gets
    the encoder's symbols (the symbols CRC would say otherwise)."""
    from dataclasses import replace

    from core.codec.tile_coder import TileCoder
    from core.models import save_weights

    spec = replace(REGISTRY["elic-tiny"], name="tiny-slim", context=(16, 8), weights_file=None, sha256=None)
    torch.manual_seed(0)
    net = build_model(spec).eval()
    ctx = net.latent_codec.latent_codec["y"].channel_context["y1"]
    assert [m.out_channels for m in ctx if isinstance(m, torch.nn.Conv2d)][:2] == [16, 8]
    net.update(force=True)
    path = tmp_path / "slim.safetensors"
    save_weights(net, spec, path)
    loaded = load_model(str(path))
    assert loaded.spec.context == (16, 8)
    coder = TileCoder(loaded)
    tile = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    data, crc = coder.encode_tile(tile, 1.0, seed=3)
    out = coder.decode_tile(data, 1.0, expected_crc=crc, seed=3)
    assert out.shape == tile.shape and np.abs(out - tile).mean() < 0.5


def test_slim_context_training_lowers_the_rate_of_a_fresh_context(tmp_path, neon_rgb):
    """training.slim_context: the base model's weights with new, narrower channel contexts;
    only those train (on cached latents) and the estimated rate falls."""
    from training.slim_context import main as slim_main

    out = tmp_path / "slim"
    assert slim_main(["--base", "elic-lite", "--context", "16", "16", "--data", str(neon_rgb), "--out", str(out),
                      "--crop", "128", "--crops", "8", "--batch", "4", "--steps", "60", "--lr", "3e-3",
                      "--export", str(out / "w.safetensors")]) == 0
    rate = json.loads((out / "cache_rate.json").read_text())
    assert rate["after"] < rate["before"]
    slim, base = load_model(str(out / "w.safetensors")), load_model("elic-lite")
    assert slim.spec.context == (16, 16)
    frozen = [k for k, v in slim.net.state_dict().items() if ".channel_context." not in k and v.is_floating_point()
              and "quantized_cdf" not in k]
    base_state = base.net.state_dict()
    assert all(torch.equal(slim.net.state_dict()[k], base_state[k]) for k in frozen)


def test_the_lr_schedule_spans_the_run_or_this_session():
    """--max-minutes counts the whole run's training time; --run-minutes starts a new window (a new
    learning-rate cycle) where this session resumes, whatever the earlier sessions took."""
    from training.train_elic import out_of_time, progress, time_window

    assert time_window(3600.0, None, None) is None and progress(30, 120, 3600.0, None) == 0.25
    whole = time_window(3600.0, 120, None)  # resumed after 60 of 120 minutes
    assert progress(0, 10**6, 3600.0, whole) == 0.5 and not out_of_time(7199.0, whole) and out_of_time(7200.0, whole)
    cycle = time_window(3600.0, None, 30)  # a fresh 30-minute cycle from here
    assert progress(0, 10**6, 3600.0, cycle) == 0.0 and progress(0, 10**6, 3600.0 + 1350, cycle) == 0.75
    assert out_of_time(3600.0 + 1800, cycle) and not out_of_time(3600.0 + 1799, cycle)
    with pytest.raises(SystemExit, match="not both"):
        time_window(0.0, 60, 30)
    with pytest.raises(SystemExit, match="already 120 minutes: give --run-minutes"):  # would train no step
        time_window(7200.0, 14, None)


def test_a_resumed_run_with_run_minutes_trains_a_new_window(tmp_path, neon_rgb):
    out = tmp_path / "run"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2", "--crop", "64",
              "--ckpt-every", "1", "--log-every", "1", "--threads", "1", "--lr", "1e-3", "--decay-at", "0.5"]
    assert train_main(common + ["--steps", "3"]) == 0
    first = torch.load(out / "last.pt", weights_only=True)["elapsed"]
    # the whole run's budget is already spent: --max-minutes says so and trains nothing more
    with pytest.raises(SystemExit, match="counts the whole run's training time"):
        train_main(common + ["--steps", "100", "--resume", "--max-minutes", str(first / 60 / 2)])
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    # a new window of its own: it trains, starting at the full learning rate
    assert train_main(common + ["--steps", "5", "--resume", "--run-minutes", "10"]) == 0
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"lr"' in l]
    assert [r["step"] for r in log][-2:] == [4, 5] and log[-1]["lr"] == 1e-3


def test_a_quantile_refit_never_ends_worse_than_it_started():
    """Adam can overshoot about a steep density (the export's refit once ended at aux loss 6.9
    from 2.8): the refit keeps the best quantiles it saw."""
    torch.manual_seed(0)
    net = build_model(REGISTRY["elic-tiny"])
    fit_quantiles(net, steps=3000, lr=1.0)  # near their optimum: large steps now make them worse
    with torch.no_grad():
        start = net.aux_loss().item()
    before, after = fit_quantiles(net, steps=3, lr=5.0)  # three steps far too large
    with torch.no_grad():
        assert before == pytest.approx(start) and after <= before
        assert net.aux_loss().item() == pytest.approx(after)  # the quantiles kept are the ones reported


def test_a_campaign_continued_from_exported_weights_keeps_its_step_and_curve(tmp_path, neon_rgb):
    import benchmarks.campaign_report as report

    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--batch", "2", "--crop", "64", "--ckpt-every", "1",
              "--log-every", "1", "--threads", "1", "--val", str(neon_rgb), "--val-every", "2", "--val-size", "128"]
    assert train_main(common + ["--out", str(first), "--steps", "2"]) == 0
    weights = tmp_path / "tiny.safetensors"
    assert train_main(["--model", "elic-tiny", "--out", str(first), "--export", str(weights)]) == 0
    # a new machine: no run folder, only the exported weights and where they stood
    assert train_main(common + ["--out", str(second), "--steps", "4", "--init", str(weights),
                                "--init-step", "2", "--init-hours", "1.5"]) == 0
    log = [json.loads(l) for l in (second / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "lr" in r] == [3, 4]
    assert all(r["elapsed_s"] >= 1.5 * 3600 for r in log)

    reference = {"val": log[-1]["val"]}
    earlier = report.learning_curve(first / "log.jsonl", reference)
    later = report.learning_curve(second / "log.jsonl", reference)
    assert [r["step"] for r in earlier] == [2] and [r["step"] for r in later] == [4]
    assert later[0]["hours"] >= 1.5
    merged = report.continue_curve(earlier + [dict(earlier[0], step=4, hours=0.0)], later)
    assert [(r["step"], r["hours"]) for r in merged] == [(2, earlier[0]["hours"]), (4, later[0]["hours"])]


def test_bf16_training_runs_the_transforms_in_bf16_and_the_entropy_model_in_float32(neon_rgb):
    """``--precision bf16``: the transforms' convolutions compute in bf16 under autocast, the
    entropy model and the outputs stay float32, and a step still lowers the loss."""
    torch.manual_seed(0)
    spec = REGISTRY["elic-tiny"]
    net = build_model(spec).to(memory_format=torch.channels_last)
    seen = {}
    for name, module in (("g_a", net.g_a), ("g_s", net.g_s), ("h_a", net.latent_codec.latent_codec["hyper"].h_a)):
        conv = next(m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
        conv.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o.dtype) and None)
    x = CropSampler([neon_rgb], crop=64, seed=0).batch(4).contiguous(memory_format=torch.channels_last)
    levels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    out = net(x, levels, PRECISIONS["bf16"])
    assert seen == {"g_a": torch.bfloat16, "g_s": torch.bfloat16, "h_a": torch.float32}
    assert out["x_hat"].dtype == torch.float32
    with torch.no_grad():
        reference = net(x, levels)["x_hat"]
    assert 0 < float((out["x_hat"] - reference).abs().max()) < 0.05  # bf16 rounding, not another network

    lambdas = torch.tensor(spec.lambdas)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss, _, _ = rd_loss(net, x, levels, lambdas, PRECISIONS["bf16"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_slim_context_grafted_into_a_campaign_trains_on_with_the_campaigns_state(tmp_path, neon_rgb, monkeypatch):
    """training.graft_context: the campaign's weights and Adam moments, the slim run's channel
    contexts (fresh moments), the registry's architecture; then ``--resume`` trains on."""
    from dataclasses import replace

    from training.graft_context import main as graft_main
    from training.train_elic import split_parameters

    out = tmp_path / "run"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2", "--crop", "64",
              "--ckpt-every", "1", "--threads", "1"]
    assert train_main(common + ["--steps", "2"]) == 0
    before = torch.load(out / "last.pt", weights_only=True)
    slim_spec = replace(REGISTRY["elic-tiny"], context=(8, 8))
    torch.manual_seed(1)
    slim = build_model(slim_spec).state_dict()
    torch.save({"model": slim}, tmp_path / "slim.pt")
    args = ["--model", "elic-tiny", "--campaign", str(out), "--slim", str(tmp_path / "slim.pt")]

    # the registry still has the wide context: refused, nothing touched
    assert graft_main(args) == 2
    assert not (out / "last_before_graft.pt").exists()

    monkeypatch.setitem(REGISTRY, "elic-tiny", slim_spec)
    assert graft_main(args) == 0
    assert (out / "last_before_graft.pt").exists()
    grafted = torch.load(out / "last.pt", weights_only=True)
    names = [n for n, _ in split_parameters(build_model(slim_spec))[0]]
    for key, value in grafted["model"].items():
        expected = slim[key] if ".channel_context." in key else before["model"][key]
        assert torch.equal(value, expected), key
    kept = {i for i, n in enumerate(names) if ".channel_context." not in n}
    assert set(grafted["opt"]["state"]) == kept and len(kept) < len(names)
    assert all(torch.equal(grafted["opt"]["state"][i]["exp_avg"], before["opt"]["state"][i]["exp_avg"]) for i in kept)
    assert grafted["step"] == 2

    assert train_main(common + ["--steps", "3", "--resume"]) == 0
    after = torch.load(out / "last.pt", weights_only=True)
    assert after["step"] == 3 and set(after["opt"]["state"]) == set(range(len(names)))
    assert not torch.equal(after["model"]["latent_codec.y.channel_context.y1.0.weight"],
                           slim["latent_codec.y.channel_context.y1.0.weight"])


def test_a_moving_average_of_the_weights_is_validated_checkpointed_resumed_and_exported(tmp_path, neon_rgb):
    torch.manual_seed(0)  # a fresh run's weights come from the global generator: the same curves in any test order
    out = tmp_path / "run"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2", "--crop", "64",
              "--ckpt-every", "1", "--log-every", "1", "--threads", "1", "--lr", "1e-3", "--ema", "0.5",
              "--val", str(neon_rgb), "--val-every", "3", "--val-size", "128"]
    assert train_main(common + ["--steps", "3"]) == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    live, avg = ck["model"], ck["ema"]
    moved = [k for k in avg if not torch.equal(avg[k], live[k])]
    assert moved and all(avg[k].dtype == torch.float32 for k in avg)
    record = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"val"' in l][-1]
    assert set(record["val_ema"]) == set(record["val"]) == {"q1", "q2"}
    assert record["val_ema"] != record["val"]  # the average's weights were validated, then the live ones restored
    import benchmarks.campaign_report as report

    row = report.learning_curve(out / "log.jsonl", {"val": record["val_ema"]})[-1]  # the average as reference
    assert row["ema_bd_rate_vs_reference"] == pytest.approx(0.0, abs=1e-6)
    assert not row["bd_rate_vs_reference"] == pytest.approx(0.0, abs=1e-6)  # the live weights' own column

    # resumed: the average goes on from the checkpoint's, not from the live weights
    assert train_main(common + ["--steps", "4", "--resume"]) == 0
    ck4 = torch.load(out / "last.pt", weights_only=True)
    k = next(k for k in moved if not k.endswith("quantiles"))  # the export refits the quantiles
    torch.testing.assert_close(ck4["ema"][k], 0.5 * avg[k] + 0.5 * ck4["model"][k])

    # exported: the average by default, the live weights when asked
    for flag, state in (([], ck4["ema"]), (["--export-live"], ck4["model"])):
        weights = tmp_path / f"tiny{len(flag)}.safetensors"
        assert train_main(["--model", "elic-tiny", "--out", str(out), "--export", str(weights), *flag]) == 0
        exported = read_state(str(weights))
        torch.testing.assert_close(exported[k], state[k].half().float())


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_trains_in_bf16_only_where_the_cpu_computes_it_natively(tmp_path, neon_rgb, monkeypatch,
                                                                                capsys, native):
    """The default ``--precision auto`` asks the decoder's own check (``runtime.cpu_bf16``):
    bf16 transforms where the CPU has native bf16, fp32 where bf16 would be emulated (x0.11 the
    steps per second on an AVX2 CPU), and says which."""
    import core.models.runtime as runtime
    import training.train_elic as te

    monkeypatch.setattr(runtime, "cpu_bf16", lambda: native)
    dtypes, real_loss = [], te.rd_loss

    def recording_loss(net, x, levels, lambdas, transform_dtype=None):
        dtypes.append(transform_dtype)
        return real_loss(net, x, levels, lambdas, transform_dtype)

    monkeypatch.setattr(te, "rd_loss", recording_loss)
    assert train_main(["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(tmp_path / "run"),
                       "--batch", "2", "--crop", "64", "--steps", "2", "--threads", "1"]) == 0
    expected = "bf16" if native else "fp32"
    assert dtypes == [PRECISIONS[expected]] * 2
    assert f"transforms compute in {expected} (--precision auto)" in capsys.readouterr().err


def test_precision_auto_follows_the_decoders_switch(monkeypatch):
    """``CODERSIC_PRECISION=f32`` keeps decoding in f32, and training too, whatever the CPU."""
    from training.train_elic import native_precision

    monkeypatch.setenv("CODERSIC_PRECISION", "f32")
    assert native_precision(torch.device("cpu")) == "fp32"


def test_compile_runs_the_training_step_through_torch_compile(tmp_path, neon_rgb, monkeypatch):
    """--compile hands the step's forward and loss to torch.compile, and training goes on as
    without it. Inductor's code generation takes minutes on CI, so the compiled graph runs on
    dynamo's eager backend here: this checks the wiring and the traced step, not inductor."""
    import training.train_elic as te

    compiled, real_compile = [], torch.compile

    def eager_backend_compile(fn, **kwargs):
        compiled.append((fn, kwargs))
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(te.torch, "compile", eager_backend_compile)
    losses = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"run{len(flag)}"
        torch.manual_seed(0)
        assert train_main(["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2",
                           "--crop", "64", "--steps", "3", "--log-every", "1", "--threads", "1", "--exact-qat",
                           "--precision", "bf16"] + flag) == 0
        losses[bool(flag)] = [json.loads(l)["loss"] for l in (out / "log.jsonl").read_text().splitlines()]
    assert [fn for fn, _ in compiled] == [te.rd_loss] and compiled[0][1] == {"dynamic": False}
    assert len(losses[True]) == 3 and np.allclose(losses[True], losses[False], rtol=1e-4)


def test_new_group_only_trains_the_groups_rows_and_the_quantiles_then_everything(tmp_path, neon_rgb):
    """--new-group-only until --rounded-rate-until: only the rows that write, read and code the
    group move (and the entropy bottleneck's quantiles, trained by the auxiliary loss); from
    that step on, every weight trains again."""
    from training.new_group_lr import new_group_slices

    spec = REGISTRY["elic-tiny"]
    torch.manual_seed(0)
    fresh = build_model(spec)  # a fresh run's weights for --seed 0
    with torch.no_grad():
        fresh(torch.rand(1, 3, 64, 64), torch.tensor([0.0]))  # the spatial contexts zero their masked weights in place
    start = {k: v.clone() for k, v in fresh.state_dict().items()}
    out = tmp_path / "run"
    common = ["--model", "elic-tiny", "--data", str(neon_rgb), "--out", str(out), "--batch", "2", "--crop", "64",
              "--threads", "1", "--rounded-rate-groups", "2", "--rounded-rate-until", "2", "--new-group-only",
              "--new-group-lr-scale", "2"]
    assert train_main(common + ["--steps", "2"]) == 0
    after = torch.load(out / "last.pt", weights_only=True)["model"]
    rows = {name: r for name, _, r in new_group_slices(build_model(spec), spec.groups, 2)}
    moved = {k for k in start if start[k].is_floating_point() and not torch.equal(start[k], after[k])}
    for name in moved - set(rows):
        assert name.endswith("quantiles"), name
    for name, r in rows.items():
        if not torch.equal(start[name][r], after[name][r]):
            rest = torch.ones(start[name].shape[0], dtype=torch.bool)
            rest[r] = False
            assert torch.equal(start[name][rest], after[name][rest]), name
    assert {"g_a.13.weight", "g_s.1.weight"} <= moved and any(n.endswith("quantiles") for n in moved)

    assert train_main(common + ["--steps", "3", "--resume"]) == 0
    later = torch.load(out / "last.pt", weights_only=True)["model"]
    assert not torch.equal(after["g_a.0.weight"], later["g_a.0.weight"])  # the old weights train again
