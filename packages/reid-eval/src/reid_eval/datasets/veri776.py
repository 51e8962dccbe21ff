"""VeRi-776 (Liu et al., ECCV 2016 / ICME 2016), the vehicle re-ID benchmark."""

from __future__ import annotations

from .market1501 import Market1501

__all__ = ["VeRi776"]

_LAYOUT = """  ROOT/image_train/0001_c001_00016450_0.jpg ...   (training images)
  ROOT/image_test/0002_c002_00030600_0.jpg ...    (gallery)
  ROOT/image_query/0002_c002_00030600_0.jpg ...   (queries)
  ROOT may also contain the folder VeRi/ holding these three."""


class VeRi776(Market1501):
    """VeRi-776 (vehicles).

    Layout (``root`` may be the dataset folder or its parent holding ``VeRi/``)::

        image_train/  0001_c001_00016450_0.jpg   <vehicle id>_c<camera>_<frame>_<index>.jpg
        image_test/   gallery
        image_query/  queries

    Official statistics: 776 vehicles (576 train, 200 test) from 20 cameras; 37,778 training
    images; 1,678 queries; 11,579 gallery images.

    Cameras ``c001..c020`` become ``camid`` 0..19. Any pid -1 image is dropped like Market's junk.
    The usual protocol (same vehicle and same camera removed from a query's gallery) applies.
    """

    name = "veri776"
    display_name = "VeRi-776"
    subfolders = ("VeRi", "veri", "VeRi-776", "veri776")
    splits = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
    regex = r"^(-1|\d+)_c(\d+)_"
    pattern = "'<vehicle id>_c<camera>_<frame>_<index>.jpg' (e.g. '0001_c001_00016450_0.jpg')"
    layout = _LAYOUT
