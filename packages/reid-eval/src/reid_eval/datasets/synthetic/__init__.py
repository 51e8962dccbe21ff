"""Deterministic synthetic person re-ID dataset, written in the Market-1501 layout.

No real re-ID dataset can be downloaded everywhere, so the project draws one. It is the default
dataset of the demo and the fixture of the end-to-end tests, and it is built to be a real re-ID
problem rather than noise:

* **People made of parts.** Every identity is a body of parts: head (skin tone, hair colour and
  style), optional hat (cap, beanie), upper clothing (colour, sleeves, texture: plain, horizontal
  or vertical stripes, checks, chest logo, two-tone, open jacket), lower clothing (trousers,
  shorts or skirt), shoes, optional bag (backpack, shoulder bag or hand bag, on the left or the
  right) and a build (height, width).
* **Families of look-alikes.** Identities are drawn in families of ``family_size``: a family
  shares skin, build and the colours of upper and lower clothing, and each member differs from
  the family's first member in one part only (hair, hat, upper texture, lower garment, shoes or
  bag). Global colour statistics cannot tell family members apart; local part evidence can, which
  is what part-based label refinement is for. ``synthetic.json`` records every identity's family,
  its varied part and its attributes.
* **Cameras that disagree.** Each camera has its own colour cast, brightness, contrast and
  saturation, lighting gradient, background (wall and floor, tiles, street, park or shop fronts,
  with clutter), viewpoint (person scale and position, how often people are seen from the front,
  the back or the side), noise level and blur rate. Back views hide the face, the chest logo and
  the jacket opening and show the backpack; side views narrow the body.
* **Per-image nuisance.** Walking direction (horizontal flip), pose jitter (arm swing, stride,
  lean), bounding-box misalignment (shift, scale, sometimes cutting off head or feet), sensor
  noise, blur and, with ``occlusion_prob``, an occluder over a part of the body: a pole, a vehicle
  over the legs, a sign board, or another pedestrian in front.
* **Gallery clutter.** Distractors (pid 0) are people that are no identity: fresh attribute draws,
  look-alikes that copy a test identity and change one part, and partial bodies. Junk images
  (pid -1) are bad detections: mostly background, tiny far-away people, or zoomed fragments.

Splits follow Market-1501: ``bounding_box_train/`` holds the training identities, ``query/``
holds exactly one image per (test identity, camera it appears in), and ``bounding_box_test/``
holds the remaining test images plus distractors and junk. Every test identity has gallery images
in at least two cameras, so every query has a true match from another camera. Train and test
identities (and whole families) are disjoint.

The default :class:`SyntheticConfig` is the target of the project's synthetic proxy for
unsupervised re-ID (docs/benchmarks.md, "The synthetic proxy"): 100 + 100 identities, 30 % of
them in look-alike pairs, 3-5 images per camera in 2-4 of 6 cameras, occlusion 0.1, sensor
noise 1, blur 0.1, 200 distractors and 40 junk images. It writes about 1,190 training images,
300 queries and 1,120 gallery images of 64 x 128 pixels in about 15 s on one CPU core; time
grows linearly with the number of images. The earlier defaults were a harder setting: every
identity in a family of 4, 2-4 images per camera, occlusion 0.3, noise 3 and blur 0.25, i.e.
``SyntheticConfig(family_size=4, family_frac=1.0, images_per_camera=(2, 4),
occlusion_prob=0.3, noise_std=3.0, blur_prob=0.25)``. There a mean-colour-of-stripes baseline
reaches only about 10 % rank-1, and its top match is from the right family about half of the
time.

Generation is deterministic: the same ``seed`` and configuration give byte-identical files for a
given Pillow/libjpeg. Random streams are derived with :class:`numpy.random.SeedSequence` from
``(seed, role, split, identity, camera, image)``, so training images do not change when only the
test side of the configuration (``num_test_ids``, distractors, junk) changes.

Example::

    from reid_eval.datasets.synthetic import SyntheticConfig, make_synthetic_dataset
    root = make_synthetic_dataset("data/synthetic", seed=0)
    small = make_synthetic_dataset("/tmp/tiny", config=SyntheticConfig(num_train_ids=8,
                                   num_test_ids=8, num_cameras=3), overwrite=True)

The code, one module per stage: :mod:`.config` (``SyntheticConfig``, file layout, random
streams), :mod:`.attributes` (palettes, attribute draws, families, mutations), :mod:`.cameras`
(camera models, backgrounds), :mod:`.render` (drawing a person), :mod:`.scene` (occluders, scene
composition, finishing, JPEG) and :mod:`.generate` (identities, file names,
``make_synthetic_dataset``, metadata and its readers).
"""

from __future__ import annotations

from .config import GENERATOR_VERSION, METADATA_FILE, SPLIT_FOLDERS, SyntheticConfig
from .generate import _Namer as _Namer  # re-exported: tests/eval/test_synthetic.py uses it
from .generate import make_synthetic_dataset, synthetic_families, synthetic_mismatch

__all__ = [
    "GENERATOR_VERSION",
    "METADATA_FILE",
    "SPLIT_FOLDERS",
    "SyntheticConfig",
    "make_synthetic_dataset",
    "synthetic_families",
    "synthetic_mismatch",
]
