import os
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.metrics
from PIL import Image

from fractalpre import util
from fractalpre.training import metric_writer
from fractalpre.training import config_files
from superres import cli
from superres.curation import metrics
from superres.sr import data, evaluate, upscale
from superres.sr import trainer as sr_trainer
from superres.sr.models import NAMES, get_model
from superres.sr.models.upsample import pixel_shuffle, pixel_unshuffle


# ----------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("quality,border", [(30, 4), (75, 2), (95, 0)])
def test_psnr_and_ssim_match_scikit_image_on_the_y_channel(quality, border):
  hr = skimage.data.astronaut()
  sr = metrics.decode(metrics.encode_jpeg(hr, quality))
  crop = (slice(border, -border or None),) * 2
  y_hr, y_sr = skimage.color.rgb2ycbcr(hr)[..., 0][crop], skimage.color.rgb2ycbcr(sr)[..., 0][crop]
  assert evaluate.psnr(sr, hr, border) == pytest.approx(
      skimage.metrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-9)
  assert evaluate.ssim(sr, hr, border) == pytest.approx(skimage.metrics.structural_similarity(
      y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False), abs=1e-9)


def test_psnr_of_identical_images_is_infinite_and_shapes_must_match():
  image = skimage.data.coffee()
  assert evaluate.psnr(image, image) == float("inf")
  assert evaluate.ssim(image, image) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="shapes differ"):
    evaluate.psnr(image[:-1], image)


# ----------------------------------------------------------------------------------------- models
def test_pixel_shuffle_follows_the_channel_order_and_inverts():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5, 4 * 9)).astype(np.float32))
  y = pixel_shuffle(x, 3)
  assert y.shape == (2, 9, 15, 4)
  # Output pixel (3 h + i, 3 w + j) of channel k is input channel k * 9 + i * 3 + j at (h, w).
  for k, i, j, h, w in [(0, 0, 0, 0, 0), (3, 2, 1, 2, 4), (1, 1, 2, 1, 3)]:
    assert y[1, 3 * h + i, 3 * w + j, k] == x[1, h, w, k * 9 + i * 3 + j]
  np.testing.assert_array_equal(pixel_unshuffle(y, 3), x)
  with pytest.raises(ValueError, match="not divisible by scale"):
    pixel_unshuffle(y[:, :8], 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_models_upscale_by_their_scale(name, scale):
  model = get_model(name, scale, features=8, blocks=1, **({"groups": 1} if name.startswith("rcan") else {}))
  x = jnp.zeros((2, 6, 7, 3))
  params = model.init(jax.random.key(0), x)
  assert model.apply(params, x).shape == (2, 6 * scale, 7 * scale, 3)


def test_edsr_baseline_has_the_published_parameter_count():
  params = get_model("edsr_baseline", 2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert sum(p.size for p in jax.tree.leaves(params)) == pytest.approx(1.37e6, rel=0.01)  # EDSR paper: 1.37M


# ----------------------------------------------------------------------------------------- data
def test_pairs_are_bicubic_downsamples_of_flipped_hr_crops_and_deterministic():
  pairs = data.PatchPair(data.Degradation(3), lr_patch=8)
  hr = skimage.data.chelsea()[100:160, 200:260]
  lr, target = pairs(hr, np.random.default_rng(5))
  assert lr.shape == (8, 8, 3) and target.shape == (24, 24, 3)
  patch = np.rint(target * 255).astype(np.uint8)
  np.testing.assert_array_equal(np.rint(lr * 255).astype(np.uint8), data.downsample(patch, 3))
  assert _occurs_as_a_dihedral_view(patch, hr)
  assert not _occurs_as_a_dihedral_view(patch, skimage.data.coffee()[:60, :60])
  np.testing.assert_array_equal(lr, pairs(hr, np.random.default_rng(5))[0])


def _occurs_as_a_dihedral_view(patch, image) -> bool:
  """Whether a flip / transpose of `patch` is a crop of `image` (brute force)."""
  for v in (patch, patch[:, ::-1], patch[::-1], patch[::-1, ::-1]):
    for u in (v, v.transpose(1, 0, 2)):
      windows = np.lib.stride_tricks.sliding_window_view(image, u.shape)
      if (windows == u).all(axis=(-1, -2, -3)).any():
        return True
  return False


def test_degradations_change_the_lr_and_bad_ranges_are_refused():
  hr = skimage.data.astronaut()[:96, :96]
  clean = data.Degradation(2)(hr, np.random.default_rng(0))
  for kw in (dict(blur=(1.0, 2.0)), dict(noise=(5.0, 5.0)), dict(jpeg=(10, 20))):
    degraded = data.Degradation(2, **kw)(hr, np.random.default_rng(0))
    assert degraded.shape == clean.shape and np.abs(degraded.astype(int) - clean).mean() > 0.5
  with pytest.raises(ValueError, match=r"degradation noise must be a range 0 <= low <= high, got \(3.0, 1.0\)"):
    data.Degradation(2, noise=(3.0, 1.0))
  with pytest.raises(ValueError, match="jpeg qualities must be in"):
    data.Degradation(2, jpeg=(50, 101))


def test_folder_and_manifest_sources(tmp_path):
  for name in ("a", "b"):
    Image.fromarray(skimage.data.coffee()[:40, :50]).save(tmp_path / f"{name}.png")
  (tmp_path / "notes.txt").write_text("not an image")
  folder = data.get_source(ml_collections.ConfigDict(dict(kind="folder", path=str(tmp_path))))
  assert len(folder) == 2 and folder[1].shape == (40, 50, 3)
  manifest = tmp_path / "m.json"
  manifest.write_text(json.dumps([{"path": str(tmp_path / "a.png"), "keep": True},
                                  {"path": str(tmp_path / "b.png"), "keep": False}]))
  kept = data.get_source(ml_collections.ConfigDict(dict(kind="manifest", path=str(manifest))))
  assert kept.paths == [tmp_path / "a.png"]
  with pytest.raises(ValueError, match="data kind must be one of"):
    data.get_source(ml_collections.ConfigDict(dict(kind="imagenet")))


# ----------------------------------------------------------------------------------------- tiling
def _random_upscaler(overlap, tile=24, scale=2):
  model = get_model("edsr_baseline", scale, features=8, blocks=2)
  params = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))["params"]
  # Larger weights than the init so that the receptive field matters at the cuts.
  params = jax.tree.map(lambda p: p * 3.0, params)
  return upscale.Upscaler(model, params, scale, tile=tile, overlap=overlap, batch=3)


def test_tiled_upscale_equals_untiled_and_has_the_right_size():
  lr = skimage.data.chelsea()[100:137, 200:253]  # 37 x 53: not a multiple of the tile
  whole = _random_upscaler(overlap=0, tile=64)(lr)  # one tile covers the image
  assert whole.shape == (74, 106, 3)
  tiled = _random_upscaler(overlap=8)(lr)  # receptive field radius of this model: about 7 LR pixels
  assert np.abs(tiled.astype(int) - whole).max() <= 1
  seams = _random_upscaler(overlap=0)(lr)  # no margin: the cuts show
  assert np.abs(seams.astype(int) - whole).max() > 1


def test_upscaler_refuses_bad_settings():
  with pytest.raises(ValueError, match="overlap in"):
    _random_upscaler(overlap=12, tile=24)
  with pytest.raises(ValueError, match="expected an RGB uint8 image"):
    _random_upscaler(overlap=4)(np.zeros((10, 10), np.uint8))


# ----------------------------------------------------------------------------------------- training
def tiny_sr_config(**overrides):
  c = config_files.load_config("configs/sr_edsr.py:runlocal,steps=2,batch=8,patch=12")
  c.model.update(features=8, blocks=1)
  c.data.names = "coins,brick"
  c.data.workers = 1
  c.eval.names = "coffee"
  c.eval.tile = 64
  c.optim.warmup_steps = 1
  c.log_every = 1
  c.tensorboard = False
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sr") / "run"
  final = sr_trainer.train_and_evaluate(tiny_sr_config(), workdir, progress=False)
  return workdir, final


def test_two_sr_steps_on_eight_devices_log_and_evaluate_what_the_checkpoint_gives(trained):
  assert jax.device_count() == 8
  workdir, final = trained
  records = metric_writer.read(workdir)
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in records)
  assert json.loads((workdir / "config.json").read_text())["scale"] == 2
  # The evaluation logged at the end equals evaluating the saved checkpoint from its workdir.
  upscaler = upscale.load(workdir, tile=64)
  again = evaluate.evaluate_images(upscaler, [skimage.data.coffee()], 2)
  assert again["psnr"] == pytest.approx(final["eval_psnr"], abs=1e-6)
  assert again["bicubic_psnr"] == pytest.approx(final["eval_bicubic_psnr"], abs=1e-9)


def test_sr_training_resumes_where_it_stopped(trained, tmp_path, capsys):
  workdir, _ = trained
  resumed = tmp_path / "resumed"
  import shutil
  shutil.copytree(workdir, resumed)
  sr_trainer.train_and_evaluate(tiny_sr_config(total_steps=3, eval_every=0), resumed, progress=False)
  assert "resumed from step 2" in capsys.readouterr().err
  assert [r["step"] for r in metric_writer.read(resumed)] == [1, 2, 3]


def test_upscale_cli_writes_scaled_pngs_and_refuses_bad_input(trained, tmp_path, capsys):
  workdir, _ = trained
  Image.fromarray(skimage.data.coffee()[:30, :41]).save(tmp_path / "in.jpg")
  assert cli.main(["upscale", str(tmp_path / "in.jpg"), str(tmp_path / "out.png"), "--checkpoint", str(workdir),
                   "--tile", "16", "--overlap", "4", "--quiet"]) == 0
  assert np.asarray(Image.open(tmp_path / "out.png")).shape == (60, 82, 3)
  assert cli.main(["upscale", str(tmp_path / "in.jpg"), str(tmp_path / "o.png"), "--checkpoint",
                   str(tmp_path)]) == 2
  assert "is not a superres.train workdir" in capsys.readouterr().err
  assert cli.main(["upscale", str(tmp_path / "missing.png"), str(tmp_path / "o.png"), "--checkpoint",
                   str(workdir)]) == 2
  assert not (tmp_path / "o.png").exists()


def test_upscale_folder_never_merges_two_inputs_and_a_rerun_holds_exactly_its_result(trained, tmp_path, capsys):
  workdir, _ = trained
  src, out = tmp_path / "in", tmp_path / "out"
  (src / "sub").mkdir(parents=True)
  Image.fromarray(skimage.data.coffee()[:20, :24]).save(src / "a.jpg")
  Image.fromarray(skimage.data.astronaut()[:20, :24]).save(src / "a.jpg.png")  # a.jpg's output name
  run = ["upscale", str(src), str(out), "--checkpoint", str(workdir), "--tile", "16", "--overlap", "4", "--quiet"]
  capsys.readouterr()
  assert cli.main(run) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"superres upscale: error: {src.resolve() / 'a.jpg'} and {src.resolve() / 'a.jpg.png'} would both be "
                 f"written to {out / 'a.jpg.png'}; rename one of them"]
  (src / "a.jpg.png").rename(src / "sub" / "b.png")
  assert cli.main(run) == 0
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.jpg.png", "sub/b.png"]
  assert np.asarray(Image.open(out / "sub" / "b.png")).shape == (40, 48, 3)
  # another tiling into the same folder: refused, then replaced
  assert cli.main(run[:-4] + ["24", "--overlap", "4", "--quiet"]) == 2
  assert "holds the result of another superres upscale (tile: 16 -> 24); add --replace" in capsys.readouterr().err
  # an input removed and one rewritten since: the rerun holds exactly the new result
  (src / "sub" / "b.png").unlink()
  Image.fromarray(skimage.data.astronaut()[:10, :12]).save(src / "a.jpg")
  assert cli.main(run) == 0
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.jpg.png"]
  assert np.asarray(Image.open(out / "a.jpg.png")).shape == (20, 24, 3)
  assert not (out / "sub").exists()
  # an output folder inside the input folder would feed the next run
  assert cli.main(["upscale", str(src), str(src / "up"), "--checkpoint", str(workdir), "--quiet"]) == 2
  assert "is inside the input folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sr_edsr", "sr_rcan_lite"])
@pytest.mark.parametrize("arg", [None, "runlocal", "scale=3,kind=folder,path=/data/hr"])
def test_sr_configs_load_with_held_out_evaluation_photos(name, arg):
  c = config_files.load_config(f"configs/{name}.py" + (f":{arg}" if arg else ""))
  assert c.model.name in NAMES and c.scale in (2, 3, 4) and c.lr_patch > 0
  assert not set(c.data.names.split(",")) & set(c.eval.names.split(","))
  data.degradation_from_config(c.data, c.scale)  # a valid degradation
  if arg and arg.startswith("scale=3"):
    assert c.scale == 3 and c.data.kind == "folder"


def test_tfds_source_reads_a_curated_tfds_dataset(tmp_path):
  images = [skimage.data.coffee()[:40, :50], np.repeat(skimage.data.camera()[:30, :20, None], 3, axis=-1)]
  rows = []
  for i, image in enumerate(images):
    Image.fromarray(image).save(tmp_path / f"{i}.png")
    rows.append({"path": str(tmp_path / f"{i}.png"), "root": str(tmp_path), "keep": True})
  with util.OutputFolder(tmp_path / "curated", "superres curate", {}) as folder:
    cli._write_tfds(rows, folder)  # what `superres curate --format tfds` writes
  held = json.loads((tmp_path / "curated" / util.output_folder.MANIFEST).read_text())["files"]
  assert sorted(held) == sorted(p.name for p in (tmp_path / "curated").iterdir()
                                if p.name != util.output_folder.MANIFEST)
  source = data.get_source(ml_collections.ConfigDict(dict(kind="tfds", name=str(tmp_path / "curated"),
                                                          split="train")))
  assert len(source) == 2
  for i, image in enumerate(images):
    np.testing.assert_array_equal(source[i], image)


def test_the_sr_command_line_reports_a_missing_data_folder_in_one_line(tmp_path):
  import subprocess
  import sys
  missing = tmp_path / "no_such_folder"
  result = subprocess.run([sys.executable, "-m", "superres.train", "--config",
                           f"configs/sr_edsr.py:runlocal,kind=folder,path={missing}", "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, env={**os.environ, "FRACTALPRE_TCMALLOC": "0"})
  assert result.returncode == 2
  assert result.stderr.strip() == f"superres.train: error: HR folder {str(missing)!r} does not exist"
