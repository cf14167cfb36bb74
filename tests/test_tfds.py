"""tfds input (deepwm_jax/data/tfds_source.py): tiny datasets prepared into a temporary
data_dir as array_record, offline and without TensorFlow, read back the way a copied data_dir
is read: through the dataset's files, not its builder code.

  tiny_photos   two configs (rgb, gray) of photos of varying size: the image pipeline's source
  fashion_mnist and cifar10  stand-ins with the real datasets' names, versions and features:
                what configs/classify_{fashion_mnist,cifar10}.py read
"""
import io
import json
import os
import shutil

import numpy as np
import pytest

from deepwm_jax import cli
from deepwm_jax import config as config_lib
from deepwm_jax.data import sources, splits, tfds_source
from deepwm_jax.errors import DeepwmError
from deepwm_jax.data import pairs as pairs_lib

tfds = pytest.importorskip("tensorflow_datasets")
Image = pytest.importorskip("PIL.Image")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PHOTOS = 20


def _png(img: np.ndarray) -> bytes:
  """PNG bytes: tfds's Image feature stores bytes as given, so no TensorFlow encodes them."""
  buf = io.BytesIO()
  Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="PNG")
  return buf.getvalue()


def photo(i: int, channels: int) -> np.ndarray:
  """Record i: channel 0 is flat at 10 * (i + 1), so a crop tells which record it came from;
  the other channels are noise, and the size varies like real photos."""
  rng = np.random.default_rng(i)
  img = rng.integers(0, 256, (40 + i, 48, channels), dtype=np.uint8)
  img[..., 0] = 10 * (i + 1)
  return img


def labeled_image(i: int, shape: tuple) -> tuple[np.ndarray, int]:
  """A class-dependent flat image (value 20 * label + 10) with mild noise."""
  label = i % 10
  rng = np.random.default_rng(100 + i)
  img = np.clip(20 * label + 10 + rng.integers(-3, 4, shape), 0, 255).astype(np.uint8)
  return img, label


def _prepare_all(data_dir: str) -> None:
  with tfds.core.registered.skip_registration():  # like a data_dir copied from elsewhere

    class TinyPhotos(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")
      BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="rgb"),
                         tfds.core.BuilderConfig(name="gray")]

      def _info(self):
        c = 3 if self.builder_config.name == "rgb" else 1
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, c)),
            "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature()})}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(N_PHOTOS)}

      def _generate_examples(self, n):
        c = 3 if self.builder_config.name == "rgb" else 1
        for i in range(n):
          yield i, {"image": _png(photo(i, c)),
                    "objects": [{"bbox": tfds.features.BBox(0.1, 0.1, 0.5, 0.5)}]}

    class LabeledStandIn(tfds.core.GeneratorBasedBuilder):
      """An image classification dataset; subclasses set name, VERSION, SHAPE, WITH_ID."""
      VERSION = tfds.core.Version("1.0.0")
      SHAPE, WITH_ID = (28, 28, 1), False

      def _info(self):
        extra = {"id": tfds.features.Text()} if self.WITH_ID else {}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=self.SHAPE),
            "label": tfds.features.ClassLabel(num_classes=10), **extra}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 60),
                "test": self._generate_examples(1000, 20)}

      def _generate_examples(self, start, n):
        for i in range(start, start + n):
          img, label = labeled_image(i, self.SHAPE)
          rec = {"image": _png(img), "label": label}
          if self.WITH_ID:
            rec["id"] = f"img_{i}"
          yield i, rec

    def classification(name, version, shape, with_id):
      return type(f"StandIn_{name}", (LabeledStandIn,), {
          "name": name, "VERSION": tfds.core.Version(version), "SHAPE": shape,
          "WITH_ID": with_id})

    builders = [TinyPhotos(config=c, data_dir=data_dir, file_format="array_record")
                for c in ("rgb", "gray")]
    builders.append(classification("fashion_mnist", "3.0.1", (28, 28, 1), False)(
        data_dir=data_dir, file_format="array_record"))
    builders.append(classification("cifar10", "3.0.2", (32, 32, 3), True)(
        data_dir=data_dir, file_format="array_record"))
    for b in builders:
      b.download_and_prepare()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  _prepare_all(path)
  return path


def tiny_image_config(*extra):
  cfg = config_lib.load(os.path.join(REPO, "configs", "tiny.py"))
  config_lib.apply_overrides(cfg, list(extra))
  config_lib.validate(cfg)
  return cfg


# ----------------------------------------------------------------------------- image source


def file_order(data_dir: str, config: str) -> list[int]:
  """The generator index of each record in file order (tfds shuffles while preparing)."""
  ds = tfds_source.open_split(f"tfds:tiny_photos/{config}", data_dir)
  return [int(ds[j]["image"][0, 0, 0]) // 10 - 1 for j in range(len(ds))]


def _records_of(patches_NxHxWxC: np.ndarray) -> set:
  """Which records the crops came from, read off the flat channel 0."""
  values = np.round(patches_NxHxWxC[..., 0].mean((1, 2)) * 255 / 10).astype(int) - 1
  return set(values.tolist())


def test_image_pipeline_reads_tfds_with_the_builtin_crops_and_degradation(data_dir):
  cfg = tiny_image_config("data.source=tfds:tiny_photos/rgb:train", f"data.tfds_dir={data_dir}")
  seen = {}
  for k, split in enumerate(splits.SPLITS):
    pairs = pairs_lib.make_pairs(cfg, split, 24, k)
    assert pairs.a.shape == pairs.b.shape == (24, 32, 32, 3)
    assert pairs.b.min() >= 0 and pairs.b.max() <= 1
    assert np.abs(pairs.a - pairs.b).mean() > 0.01   # the rain degradation was applied
    seen[split] = _records_of(pairs.b)
    # Records are dealt to the splits by position, like a folder's files.
    allowed = {i for j, i in enumerate(file_order(data_dir, "rgb"))
               if splits.FOLDER_PATTERN[j % 10] == split[0].upper()}
    assert seen[split] and seen[split] <= allowed, (split, seen[split], allowed)
  assert not (seen["protect"] & seen["attack"]) and not (seen["protect"] & seen["val"])
  # Same crops as the builtin source: make_patches on the same images gives the same pairs.
  images = tfds_source.split_images("tfds:tiny_photos/rgb", "val", 3, data_dir)
  rng = np.random.default_rng([cfg.seed, 2])
  again = sources.make_patches(images, 24, 32, rng, flip=True, scale=cfg.data.scale)
  assert np.array_equal(again, pairs_lib.make_pairs(cfg, "val", 24, 2).b)


def test_default_config_gray_conversion_slicing_and_cap(data_dir):
  rgb = tfds_source.split_images("tfds:tiny_photos", "protect", 3, data_dir)  # default: rgb
  gray = tfds_source.split_images("tfds:tiny_photos/gray", "protect", 3, data_dir)
  assert len(rgb) == len(gray) == sum(c == "P" for c in splits.FOLDER_PATTERN) * 2
  assert rgb[0].shape == (40 + file_order(data_dir, "rgb")[0], 48, 3) and not np.allclose(rgb[0][..., 0], rgb[0][..., 1])
  assert np.array_equal(gray[0][..., 0], gray[0][..., 1])   # gray replicated to RGB
  order = file_order(data_dir, "gray")
  assert sorted(order) == list(range(N_PHOTOS))
  assert np.allclose(gray[1][..., 0], 10 * (order[3] + 1) / 255)  # protect's 2nd: position 3
  assert len(tfds_source.open_split("tfds:tiny_photos:train[:50%]", data_dir)) == N_PHOTOS // 2
  capped = tfds_source.split_images("tfds:tiny_photos/gray", "protect", 1, data_dir, 3)
  # Evenly spread over the split's positions 0, 3, 5, ..., 19: the 1st, 5th and 10th of them.
  assert [round(float(c.max()) * 25.5) - 1 for c in capped] == [order[0], order[9], order[19]]


def test_image_feature_is_found_by_name_or_shape():
  photo_ = np.zeros((32, 32, 3), np.uint8)
  assert tfds_source.image_key({"lr": photo_[::2, ::2], "hr": photo_}) == "hr"   # div2k
  assert tfds_source.image_key({"photo": photo_, "label": 3}) == "photo"
  with pytest.raises(DeepwmError, match="which tfds feature is the image"):
    tfds_source.image_key({"a": photo_, "b": photo_})


def test_tfds_dir_falls_back_to_the_environment(data_dir, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  assert len(tfds_source.open_split("tfds:tiny_photos/gray")) == N_PHOTOS


# ----------------------------------------------------------------------------- errors


def test_not_prepared_dataset_is_one_line_with_the_fix(tmp_path, data_dir):
  with pytest.raises(DeepwmError) as e:
    sources.load_split("tfds:voc/2012", "protect", 3, str(tmp_path))
  msg = str(e.value)
  assert "not prepared" in msg and "tfds build voc/2012" in msg and "array_record" in msg
  assert "\n" not in msg and "docs/data.md" in msg
  with pytest.raises(DeepwmError, match="splits are train"):
    tfds_source.open_split("tfds:tiny_photos:validation", data_dir)
  with pytest.raises(DeepwmError, match="use 'tfds:NAME"):
    tfds_source.parse("tfds:Not A Name")
  # Prepared, but as tfrecord (tfds's default), which cannot be read without TensorFlow.
  copy = tmp_path / "copy"
  shutil.copytree(os.path.join(data_dir, "fashion_mnist"), copy / "fashion_mnist")
  info = copy / "fashion_mnist" / "3.0.1" / "dataset_info.json"
  meta = json.loads(info.read_text())
  meta["fileFormat"] = "tfrecord"
  info.write_text(json.dumps(meta))
  with pytest.raises(DeepwmError, match="--file_format=array_record"):
    tfds_source.open_split("tfds:fashion_mnist", str(copy))


def test_cli_refuses_an_unprepared_dataset_with_exit_2(tmp_path, capsys):
  code = cli.main(["classify", "run", "--config",
                   os.path.join(REPO, "configs", "classify_fashion_mnist.py"),
                   "--workdir", str(tmp_path / "w"), f"--config.data.tfds_dir={tmp_path}"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "tfds build fashion_mnist" in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- classify configs


def classify_config(name: str, data_dir: str):
  from deepwm_jax.classify import config
  cfg = config_lib.load(os.path.join(REPO, "configs", f"classify_{name}.py"))
  # The config's data, size and channels as they are; a smaller network and key set, since
  # compiling the config's own widths costs ~30 s of a 2-core CI machine.
  config_lib.apply_overrides(cfg, [f"data.tfds_dir={data_dir}", "model.widths=(8,16)",
                                   "model.hidden=16", "key_samples.n_per_user=16",
                                   "key_samples.decoy_pool=64"])
  config.validate(cfg)
  return cfg


@pytest.mark.parametrize("name,channels", [("fashion_mnist", 1), ("cifar10", 3)])
def test_classify_configs_load_tfds(data_dir, name, channels):
  from deepwm_jax.classify import data, keys
  cfg = classify_config(name, data_dir)
  td = data.load(cfg)
  assert td.train.x.shape == (48, 32, 32, channels) and len(td.attack.y) == 12
  assert td.test.x.shape == (20, 32, 32, channels)
  for split in (td.train, td.attack, td.test):   # images still go with their labels
    assert np.allclose(split.x.mean((1, 2, 3)), (20 * split.y + 10) / 255, atol=0.02)
  user_keys = keys.user_keys(cfg, cfg.users[0])
  assert user_keys.shape == (cfg.key_samples.n_per_user, 32, 32, channels)


def test_classify_cifar10_config_trains_a_few_steps_on_tfds(data_dir):
  """Task data, one user's key images and decoys, through the owner's training step."""
  from deepwm_jax.classify import data, keys, models, train
  from deepwm_jax.train import optim
  cfg = classify_config("cifar10", data_dir)
  td = data.load(cfg)
  o = cfg.data.num_classes + 1
  user_keys = keys.to_float(keys.user_keys(cfg, cfg.users[0]))
  net = models.classifier(cfg)
  opt = optim.make_optimizer(cfg.train.optimizer, cfg.train.steps)
  extra = train.Extra(user_keys, train.one_hot(np.full(len(user_keys), cfg.data.num_classes), o),
                      4, 4)
  sampler = train.Sampler(td.train.x, td.train.y, 8, [extra], 8, o, (0, 1), keys.Decoys(cfg),
                          np.r_[np.full(10, 0.1, np.float32), 0.0])
  params = models.stack([models.init_params(net, models.example_input(cfg), 0)["params"]])
  state = train.init_state(params, opt)
  step = train.make_step(net, opt)
  before = np.asarray(state["params"]["logits"]["kernel"]).copy()
  for s in range(3):
    state, metrics = step(state, sampler(s), None)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["key_acc"]) >= 0
  assert not np.allclose(before, np.asarray(state["params"]["logits"]["kernel"]))
